r"""The one prepared GPU session of issue #13, in one process (torch + numpy; the GPU host has no SimpleITK).

Steps, each reported in ``OUT/session.json`` (and printed):

1. ``environment``: torch, CUDA, the device's name.
2. ``smoke``: a few training steps on the device from a copy of the committed cascade checkpoint with
   every sampler path on (new-subject crops, label-synthesised images, second passes), a checkpoint
   written and read back, and a 2-pair validation. It fails fast (exit code 2, traceback printed)
   when the device path is broken, before the long run starts.
3. ``baseline``: the resumed checkpoint's 12-pair held-out validation on the device (the CPU run's
   figure for the same weights is in ``runs/cascade/val_log.jsonl``: the two should agree).
4. ``train``: ``configs/train_gpu.json`` resumed from the cascade checkpoint for ``--minutes``;
   files in ``OUT`` (``checkpoint_last.pt``, ``train_log.csv``, ``val_log.jsonl``, and
   ``adregnet_gpu.pt`` with its log copies when the held-out TRE beat the CPU run's best).
5. ``timing``: the network's forward pass and ``--quality instant``'s passes (two of the network at
   full resolution, then the residual network's) on a 96 x 112 x 96 working grid, on the device:
   median of 20 after 5 warm-ups, synchronised.

Run on the device machine (see ``scripts/gpu_training_run.sh``)::

    python3 scripts/gpu_session.py --out "$OUT" --minutes 7.5

A CPU rehearsal: ``python scripts/gpu_session.py --out /tmp/gpu --device cpu --minutes 0.2 --smoke-only``.
"""
from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import time
import traceback
from dataclasses import replace
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from ADRegNetLib.model.checkpoint import load_model  # noqa: E402
from ADRegNetLib.model.inference import predict_in_passes  # noqa: E402
from ADRegNetLib.train.config import TrainConfig  # noqa: E402
from ADRegNetLib.train.evaluate import evaluate_model, heldout_pairs  # noqa: E402
from ADRegNetLib.train.trainer import Trainer  # noqa: E402

CASCADE = ROOT / "runs" / "cascade" / "checkpoint_last.pt"
WEIGHTS = ROOT / "Resources" / "weights"


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def smoke(cfg: TrainConfig, device: str, folder: Path) -> dict:
    """A few steps through every sampler and trainer path on ``device``; raises on any failure."""
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(CASCADE, folder / "checkpoint_last.pt")
    start = torch.load(folder / "checkpoint_last.pt", map_location="cpu", weights_only=True)["step"]
    small = replace(cfg, out_dir=str(folder), steps=int(start) + 6, time_limit_min=None, batch_size=2,
                    crop_sizes=[[64, 64, 64], [48, 48, 48]], subject_augmentation=1.0,
                    second_pass_probability=0.5, export_path=None, export_every_min=0.0, val_pairs=2,
                    checkpoint_every=3)
    t0 = time.perf_counter()
    trainer = Trainer(small, device=device)
    trainer.train()
    again = Trainer(small, device=device)  # the checkpoint written on the device reads back
    if again.step != trainer.step:
        raise RuntimeError(f"checkpoint read back at step {again.step}, written at {trainer.step}")
    result = trainer.validate()
    return {"steps": trainer.step - int(start), "seconds": round(time.perf_counter() - t0, 1),
            "val_tre_mm": result["tre_mm"]}


def timing(device: torch.device, weights: Path, residual: torch.nn.Module) -> dict:
    """Seconds of a forward pass and of instant's passes on a 96 x 112 x 96 grid (median of 20)."""
    model = load_model(weights, device=device).eval()
    gen = torch.Generator().manual_seed(0)
    fixed = torch.rand((1, 1, 96, 112, 96), generator=gen).to(device)
    moving = torch.rand((1, 1, 96, 112, 96), generator=gen).to(device)
    runs = {"forward": lambda: model(fixed, moving),
            "instant_passes": lambda: predict_in_passes(model, fixed, moving, passes=2, refine_downsample=1.0,
                                                        residual=(residual, 1.0))}
    out = {}
    with torch.no_grad():
        for name, fn in runs.items():
            times = []
            for i in range(25):
                _sync(device)
                t0 = time.perf_counter()
                fn()
                _sync(device)
                if i >= 5:
                    times.append(time.perf_counter() - t0)
            out[name + "_s"] = round(statistics.median(times), 4)
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True, help="folder of the results")
    parser.add_argument("--minutes", type=float, default=7.5, help="minutes of the long run")
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--config", default=str(ROOT / "configs" / "train_gpu.json"))
    parser.add_argument("--smoke-only", action="store_true", help="stop after the smoke steps (a rehearsal)")
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    device = torch.device(args.device)
    report: dict = {"environment": {
        "torch": torch.__version__, "cuda": torch.cuda.is_available(),
        "device": torch.cuda.get_device_name(0) if device.type == "cuda" else "cpu",
        "started_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}}

    def save() -> None:
        (out / "session.json").write_text(json.dumps(report, indent=1))
        print(json.dumps(report), flush=True)

    cfg = TrainConfig.from_json(args.config)
    try:
        report["smoke"] = smoke(cfg, args.device, Path("/tmp/adregnet_gpu_smoke"))
    except Exception:
        report["smoke"] = {"error": traceback.format_exc()[-3000:]}
        save()
        return 2
    save()
    if args.smoke_only:
        return 0
    shutil.copyfile(CASCADE, out / "checkpoint_last.pt")
    cfg = replace(cfg, out_dir=str(out), time_limit_min=args.minutes, export_path=str(out / "adregnet_gpu.pt"))
    trainer = Trainer(cfg, device=args.device)
    base = trainer.validate()
    report["baseline"] = {"step": trainer.step, "tre_mm": base["tre_mm"], "identity_tre_mm": base["identity_tre_mm"],
                          "best_tre_mm_so_far": trainer.best_tre}
    save()
    t0 = time.perf_counter()
    try:
        trainer.train()
    except Exception:
        report["train_error"] = traceback.format_exc()[-3000:]
        trainer.save_checkpoint()
    report["train"] = {"first_step": report["baseline"]["step"], "last_step": trainer.step,
                       "wall_s": round(time.perf_counter() - t0, 1), "best_tre_mm": trainer.best_tre}
    save()
    # instant on the held-out pairs with the shipped weights, the device's passes (full resolution)
    pairs = heldout_pairs(cfg.prepared_dir, cfg.val_pairs, cfg.val_seed, cfg.crop_zyx)
    shipped = load_model(WEIGHTS / "adregnet_default.pt", device=device).eval()
    residual = load_model(WEIGHTS / "adregnet_residual.pt", device=device).eval()
    held = evaluate_model(shipped, pairs, device=device, passes=2, refine_downsample=1.0, residual=(residual, 1.0))
    report["instant_heldout_shipped"] = {k: held[k] for k in ("tre_mm", "identity_tre_mm", "folds_pct", "dice")}
    best = out / "adregnet_gpu.pt"
    report["timing"] = timing(device, best if best.is_file() else WEIGHTS / "adregnet_default.pt", residual)
    report["timing"]["weights"] = best.name if best.is_file() else "adregnet_default.pt"
    save()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
