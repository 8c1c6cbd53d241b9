#!/usr/bin/env bash
# The engine on a CUDA device against its CPU run, on the bundled lung pair (the device machine: torch there,
# SimpleITK carried as a wheel in .whl/, installed to /tmp/site). For each quality, `adregnet register` with
# --device cuda then --device cpu; prints the device used, TRE before -> after over the 51 landmark pairs (measured
# only), folds, total seconds and the warnings, from each metrics.json; everything also in $OUT/engine.jsonl.
# Then the tests that need a CUDA device (skipped on CPU-only machines: -k cuda).
#   run(command="OUT=$OUT bash scripts/gpu_engine_check.sh", carry=[".whl"], timeout_s=300)
# The wheel (about 53 MB) and the tracked tree must stay under the tool's 64 MiB: the first run (thirty-fifth
# session) moved runs/ (24 MB of tracked logs and checkpoints) out of the working tree for the call and back after it.
set -uo pipefail
: "${OUT:?set OUT to the folder the results go to}"
PY=${PY:-python3}
if ls .whl/*.whl >/dev/null 2>&1; then
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    && export PYTHONPATH=/tmp/site
fi
S=Resources/SampleData
for q in ${QUALITIES:-instant fast balanced}; do
  for dev in ${DEVICES:-cuda cpu}; do
    o=/tmp/engine_${q}_${dev}
    rm -rf "$o"
    "$PY" -m ADRegNetLib.cli register $S/lung_fixed.nii.gz $S/lung_moving.nii.gz -o "$o" --quality "$q" --device "$dev" \
      --fixed-landmarks $S/lung_fixed_landmarks.csv --moving-landmarks $S/lung_moving_landmarks.csv \
      --landmarks-check-only -q > "$o.log" 2>&1
    rc=$?
    "$PY" - "$o" "$q" "$dev" "$rc" <<'PYEOF' | tee -a "$OUT/engine.jsonl"
import json, sys
from pathlib import Path
o, q, dev, rc = sys.argv[1:]
row = {"quality": q, "asked": dev, "rc": int(rc)}
p = Path(o) / "metrics.json"
if p.is_file():
    m = json.loads(p.read_text())
    row.update(device=m.get("device"), tre_before=(m.get("tre_before") or {}).get("mean"),
               tre_after=(m.get("tre_after") or {}).get("mean"), network_used=m.get("network_used"),
               folds_pct=(m.get("jacobian") or {}).get("folding_fraction"), timings_s=m.get("timings_s"),
               warnings=m.get("warnings"))
else:
    row["log_tail"] = Path(o + ".log").read_text()[-2500:]
print(json.dumps(row))
PYEOF
  done
done
"$PY" -m pytest -q -p no:cacheprovider -k cuda Testing/lib/test_rigid.py Testing/lib/test_inverse.py \
  Testing/lib/test_spatial.py 2>&1 | tail -n 5 | tee "$OUT/cuda_tests.txt"
