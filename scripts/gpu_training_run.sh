#!/usr/bin/env bash
# One prepared GPU training run for issue #13, for the device machine (torch + numpy, no SimpleITK).
#
# It resumes the committed cascade checkpoint (same network, so the shipped CPU budget holds) with
# larger batches and crops (configs/train_gpu.json) for MINUTES minutes (default 8), validating on the
# same 12 held-out pairs as the CPU run, and leaves under $OUT/gpu: checkpoint_last.pt, the training
# and validation logs, adregnet_gpu.pt (written when held-out TRE improved) and environment.txt.
#
# From this machine (the device tool; runs/prepared is ignored by git, so it is carried):
#   run(command="OUT=$OUT bash scripts/gpu_training_run.sh", carry=["runs/prepared"], timeout_s=600)
# Smoke test on a CPU: DEVICE=cpu MINUTES=0.2 OUT=/tmp/gpu_smoke bash scripts/gpu_training_run.sh
set -euo pipefail
: "${OUT:?set OUT to the folder the results go to}"
PY=${PY:-python3}
DEVICE=${DEVICE:-cuda}
MINUTES=${MINUTES:-8}
mkdir -p "$OUT/gpu"
cp runs/cascade/checkpoint_last.pt "$OUT/gpu/checkpoint_last.pt"
{
  date -u
  "$PY" -c "import torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available(),
torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'cpu')"
  nproc
} > "$OUT/gpu/environment.txt" 2>&1
"$PY" -m ADRegNetLib.train.cli --config configs/train_gpu.json --out-dir "$OUT/gpu" \
  --export "$OUT/gpu/adregnet_gpu.pt" --train-device "$DEVICE" --time-limit-min "$MINUTES" 2>&1 | tail -n 40
