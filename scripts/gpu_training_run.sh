#!/usr/bin/env bash
# One prepared GPU session for issue #13, for the device machine (torch + numpy, no SimpleITK):
# scripts/gpu_session.py in one process: a smoke run of every training path on the device (exit 2 with the
# traceback when it fails, before the long run), the resumed cascade checkpoint's held-out validation on the
# device, MINUTES minutes of training (configs/train_gpu.json: larger batches and crops, same network and same
# 12 held-out pairs as the CPU run), the shipped weights' instant passes on those pairs, and GPU timings.
# Results in $OUT (at most 8 files come back): session.json, run.log, checkpoint_last.pt, train_log.csv,
# val_log.jsonl, and adregnet_gpu.pt with training_log.csv / validation_log.jsonl when the held-out TRE improved.
#
# From this machine (the device tool; runs/prepared is ignored by git, so it is carried):
#   run(command="OUT=$OUT bash scripts/gpu_training_run.sh", carry=["runs/prepared"], timeout_s=600)
# Rehearsal on a CPU (a smaller batch and crops in CONFIG):
#   DEVICE=cpu MINUTES=0.2 CONFIG=/tmp/small.json OUT=/tmp/gpu_smoke bash scripts/gpu_training_run.sh
set -euo pipefail
: "${OUT:?set OUT to the folder the results go to}"
PY=${PY:-python3}
export PYTHONUNBUFFERED=1
mkdir -p "$OUT"
"$PY" scripts/gpu_session.py --out "$OUT" --device "${DEVICE:-cuda}" --minutes "${MINUTES:-7.5}" \
  --config "${CONFIG:-configs/train_gpu.json}" 2>&1 | tee "$OUT/run.log"
