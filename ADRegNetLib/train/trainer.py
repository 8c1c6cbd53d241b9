r"""Training loop of AD-RegNet on synthetic pairs with known fields (torch + numpy only).

Loss per batch, computed on the **network grid** (the resolution the network predicts at; the
input is ``input_downsample`` times finer)::

    L = lambda_sup * EPE(u_pred, u_true) + lambda_vel * sum_levels EPE(v_level, v_true)
        + lambda_sim * LNCC(fixed, moving o phi) + lambda_reg * diffusion(v)

EPE is the mean end-point error in mm (foreground voxels weight 1, background ``background_weight``),
``v_level`` the multi-resolution velocity of each level (deep supervision of the coarse-to-fine
heads), LNCC the local NCC of the downsampled images. Adam, constant lr, gradient norm clipped
at ``grad_clip``.

Second passes (``second_pass_probability``): ``--quality instant`` runs the network again on the
moving image warped by its first prediction (``model.inference.predict_in_passes``). A network
trained only on raw pairs sees there a small residual motion it never met in training. With this
probability a batch is trained as such a second pass: the network's own first prediction
(detached, no gradient) warps the moving image, and ``u_pred`` in the loss is the new field
composed with that first one (``x + r(x) + first(x + r(x))``), so the loss is the error of the two
passes together against the true field. The second pass runs with the network's input downsampled
by ``refine_downsample`` (None: as the first; 1: at the crop's own resolution, coarse to fine, as
``model.inference.predict_in_passes`` can). The velocity term is left out for these batches (the
residual's velocity is not known). Validation then uses ``val_passes`` passes the same way.

``channels_last`` (default on, one process on a CPU; a CUDA run keeps the default layout and lets
cuDNN pick its convolutions per crop shape): the model's weights in the ``channels_last_3d`` memory
layout, which the CPU convolutions run faster in. Measured, forward + backward of the
default network on a batch of 2, 1 thread: 64³ crops 0.42-0.49 -> 0.35 s, 80³ 0.86-0.89 -> 0.72-0.74 s,
a 64³ second pass at the crop's own resolution 3.9-4.0 -> 2.8-3.0 s; the values computed are the same.
Under ``torchrun`` the weights stay contiguous (DistributedDataParallel's gradient buckets expect it).

Runs on one process, or on several through ``torchrun`` (DistributedDataParallel: NCCL on GPUs,
gloo on CPUs; every rank samples its own pairs, gradients are averaged; rank 0 logs, validates and
saves). Files in ``out_dir``: ``checkpoint_last.pt`` (resumable: model, optimizer, step, generator
state), ``train_log.csv`` (losses and the time of each part of a step), ``val_log.jsonl``.
Every ``export_every_min`` minutes rank 0 validates on the held-out pairs and, when the held-out
TRE improved, writes the shippable weights to ``export_path`` and copies the logs beside them
(``training_log.csv``, ``validation_log.jsonl``).
"""
from __future__ import annotations

import csv
import json
import os
import shutil
import time
from dataclasses import asdict, replace
from pathlib import Path
from typing import Optional

import torch
import torch.distributed as dist
import torch.nn.functional as F

from ..losses import functional as LF
from ..model.checkpoint import save_model
from ..model.network import ADRegNet, ADRegNetConfig
from ..spatial.transforms import compose_flows, resize_flow
from ..spatial.warp import warp_norm
from .config import TrainConfig
from .sampler import PairBatch, PairSampler, load_prepared
from .synthetic import mm_to_norm

__all__ = ["TrainConfig", "Trainer", "batch_loss", "second_pass_inputs"]


def _epe(a_norm: torch.Tensor, b_norm: torch.Tensor, mm_per_norm: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    diff = (a_norm - b_norm) * mm_per_norm.view(1, 3, 1, 1, 1)
    epe = torch.sqrt((diff ** 2).sum(1, keepdim=True) + 1e-6)
    return (epe * weight).sum() / weight.sum()


@torch.no_grad()
def second_pass_inputs(model: torch.nn.Module, pairs: PairBatch) -> tuple[PairBatch, torch.Tensor]:
    """The batch as a second pass sees it: the moving image (and labels) warped by ``model``'s prediction.

    Returns:
        (the batch with ``moving``/``moving_labels`` replaced, the first pass's normalised flow
        (B, 3, Z, Y, X) on the input grid, detached).
    """
    first = model(pairs.fixed, pairs.moving)["flow_norm"].detach()
    labels = warp_norm(pairs.moving_labels.float(), first, mode="nearest").round().to(pairs.moving_labels.dtype)
    return replace(pairs, moving=warp_norm(pairs.moving, first), moving_labels=labels), first


def batch_loss(model: torch.nn.Module, pairs: PairBatch, cfg: TrainConfig,
               first_flow: Optional[torch.Tensor] = None) -> tuple[torch.Tensor, dict[str, float]]:
    """The training loss of a batch and its terms (floats; ``epe_mm`` is the foreground error in mm).

    ``first_flow``: for a second-pass batch (:func:`second_pass_inputs`), the first pass's
    normalised flow on the input grid; the loss is then on the two passes composed.
    """
    finer = first_flow is not None and cfg.refine_downsample is not None
    out = model(pairs.fixed, pairs.moving, **({"input_downsample": cfg.refine_downsample} if finer else {}))
    flow_net = out["flow_norm_network"]
    net_shape = tuple(flow_net.shape[2:])
    if first_flow is not None:  # the new field first, then the first pass's (as predict_in_passes composes)
        flow_net = compose_flows(flow_net, resize_flow(first_flow, net_shape))
    z, y, x = pairs.fixed.shape[2:]
    mm_per_norm = torch.tensor([(x - 1) / 2, (y - 1) / 2, (z - 1) / 2], device=flow_net.device) * pairs.spacing_mm
    true_net = resize_flow(mm_to_norm(pairs.disp_mm, pairs.spacing_mm), net_shape)
    fg = F.interpolate((pairs.fixed_labels > 0).float(), size=net_shape, mode="nearest")
    weight = fg + cfg.background_weight * (1 - fg)
    l_sup = _epe(flow_net, true_net, mm_per_norm, weight)
    with torch.no_grad():
        fg_epe = _epe(flow_net, true_net, mm_per_norm, fg + 1e-6)
        fg_init = _epe(torch.zeros_like(true_net), true_net, mm_per_norm, fg + 1e-6)
    loss = cfg.lambda_sup * l_sup
    terms = {"sup": l_sup.item()}
    if cfg.lambda_vel > 0 and out["levels"] and first_flow is None:
        v_true = mm_to_norm(pairs.velocity_mm, pairs.spacing_mm)
        l_vel = sum(_epe(v, resize_flow(v_true, tuple(v.shape[2:])), mm_per_norm,
                         F.interpolate(weight, size=tuple(v.shape[2:]), mode="nearest")) for v in out["levels"])
        l_vel = l_vel / len(out["levels"])
        loss = loss + cfg.lambda_vel * l_vel
        terms["vel"] = l_vel.item()
    if cfg.lambda_sim > 0:
        fixed_n = F.interpolate(pairs.fixed, size=net_shape, mode="trilinear", align_corners=True)
        moving_n = F.interpolate(pairs.moving, size=net_shape, mode="trilinear", align_corners=True)
        theta = torch.eye(3, 4, device=flow_net.device).unsqueeze(0).expand(flow_net.shape[0], 3, 4)
        grid = F.affine_grid(theta, (flow_net.shape[0], 1, *net_shape), align_corners=True)
        warped = F.grid_sample(moving_n, grid + flow_net.permute(0, 2, 3, 4, 1), align_corners=True)
        l_sim = LF.local_ncc(fixed_n, warped, cfg.ncc_window)
        loss = loss + cfg.lambda_sim * l_sim
        terms["sim"] = l_sim.item()
    if cfg.lambda_reg > 0:
        v = out["levels"][-1] * mm_per_norm.view(1, 3, 1, 1, 1)
        l_reg = LF.diffusion(v, 1.0)
        loss = loss + cfg.lambda_reg * l_reg
        terms["reg"] = l_reg.item()
    terms.update(loss=loss.item(), epe_mm=fg_epe.item(), identity_mm=fg_init.item())
    return loss, terms


def _pick_crop(crop_sizes: Optional[list], generator: torch.Generator) -> Optional[list]:
    """One of ``crop_sizes`` at random (None: the sampler's own crop)."""
    if not crop_sizes:
        return None
    return crop_sizes[int(torch.randint(len(crop_sizes), (1,), generator=generator, device=generator.device))]


class _SampleStream(torch.utils.data.IterableDataset):
    """Endless batches from a sampler (for a DataLoader worker process on the CPU)."""

    def __init__(self, sampler: PairSampler, batch: int, seed: int, crop_sizes: Optional[list] = None) -> None:
        super().__init__()
        self.sampler, self.batch, self.seed, self.crop_sizes = sampler, batch, seed, crop_sizes

    def __iter__(self):
        torch.set_num_threads(1)
        gen = torch.Generator().manual_seed(self.seed)
        while True:
            yield self.sampler.sample(self.batch, gen, _pick_crop(self.crop_sizes, gen))


class Trainer:
    """Owns the model, optimizer, data and logs of one training run (see the module docstring)."""

    def __init__(self, cfg: TrainConfig, device: str | torch.device = "cpu") -> None:
        self.cfg = cfg
        self.distributed = int(os.environ.get("WORLD_SIZE", "1")) > 1
        self.rank = int(os.environ.get("RANK", "0"))
        if self.distributed and not dist.is_initialized():
            dist.init_process_group("nccl" if torch.device(device).type == "cuda" else "gloo")
        if torch.device(device).type == "cuda" and self.distributed:
            device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
            torch.cuda.set_device(device)
        self.device = torch.device(device)
        self.out_dir = Path(cfg.out_dir)
        self.out_dir.mkdir(parents=True, exist_ok=True)
        torch.set_num_threads(cfg.num_threads)
        torch.manual_seed(cfg.seed)
        self.model = ADRegNet(ADRegNetConfig.from_dict(dict(cfg.model))).to(self.device)
        #: with ``init_matching_only``: which tensors came from ``init_weights`` (``load_matching``)
        self.init_report: Optional[dict] = None
        if cfg.init_weights:
            from ..model.checkpoint import load_checkpoint, load_matching

            state = load_checkpoint(cfg.init_weights)["state_dict"]
            if cfg.init_matching_only:  # another architecture (an ablation): the shared tensors only
                self.init_report = load_matching(self.model, state)
            else:
                self.model.load_state_dict(state)
        if self.device.type == "cuda":
            torch.backends.cudnn.benchmark = True  # a few crop shapes, each tuned once
        if cfg.channels_last and not self.distributed and self.device.type == "cpu":
            self.model = self.model.to(memory_format=torch.channels_last_3d)
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=cfg.lr)
        self.step, self.elapsed_s, self.best_tre = 0, 0.0, float("inf")
        self.generator = torch.Generator(self.device.type if self.device.type != "cuda" else self.device)
        self.generator.manual_seed(cfg.seed + 1000 * self.rank)
        self.sampler = PairSampler(load_prepared(cfg.prepared_dir, "train", device=self.device), cfg.crop_zyx,
                                   tuple(cfg.mean_disp_mm), tuple(cfg.smoothness_mm),
                                   subject_augmentation=cfg.subject_augmentation)
        self.checkpoint_path = self.out_dir / "checkpoint_last.pt"
        if cfg.resume and self.checkpoint_path.is_file():
            self.load_checkpoint(self.checkpoint_path)
        self.net = self.model
        if self.distributed:
            from torch.nn.parallel import DistributedDataParallel

            self.net = DistributedDataParallel(self.model, device_ids=[self.device.index] if self.device.type == "cuda" else None)
        self._val = None

    # ------------------------------------------------------------------------------ checkpoints
    def save_checkpoint(self, path: Optional[Path] = None) -> Path:
        path = Path(path or self.checkpoint_path)
        payload = {"model": self.model.state_dict(), "model_config": self.model.config.to_dict(),
                   "optimizer": self.optimizer.state_dict(), "step": self.step, "elapsed_s": self.elapsed_s,
                   "best_tre": self.best_tre, "val_key": self._val_key(), "generator": self.generator.get_state(),
                   "torch_rng": torch.get_rng_state(), "train_config": asdict(self.cfg)}
        tmp = path.with_name(path.name + ".tmp")
        torch.save(payload, tmp)
        tmp.replace(path)
        return path

    def _val_key(self) -> str:
        from .sampler import SYNTH_PROBABILITY

        c = self.cfg
        key = [c.prepared_dir, c.val_pairs, c.val_seed, list(c.crop_zyx), SYNTH_PROBABILITY,
               self.sampler.multimodal_probability]
        return json.dumps(key + ([c.val_passes, c.refine_downsample] if c.val_passes != 1 else []))

    def load_checkpoint(self, path: Path) -> None:
        payload = torch.load(path, map_location=self.device, weights_only=True)
        if ADRegNetConfig.from_dict(dict(payload["model_config"])) != self.model.config:
            raise ValueError(f"{path} was written with another model config; delete it or use another out_dir")
        self.model.load_state_dict(payload["model"])
        self.optimizer.load_state_dict(payload["optimizer"])
        for group in self.optimizer.param_groups:  # the config's lr wins (a resumed run may change it)
            group["lr"] = self.cfg.lr
        self.step = int(payload["step"])
        self.elapsed_s = float(payload.get("elapsed_s", 0.0))
        self.best_tre = float(payload.get("best_tre", float("inf")))
        if payload.get("val_key") != self._val_key():  # other held-out pairs: old best is not comparable
            self.best_tre = float("inf")
        state = payload["generator"].cpu()
        # A CPU generator's state (Mersenne Twister) does not fit a CUDA one (Philox): a run moved to
        # another device type draws its pairs from a fresh seed instead.
        if state.numel() != self.generator.get_state().numel():
            print(f"[adregnet train] {path.name}: generator state of another device type; pairs drawn "
                  f"from seed {self.cfg.seed + 1000 * self.rank + self.step}", flush=True)
            self.generator.manual_seed(self.cfg.seed + 1000 * self.rank + self.step)
        elif self.rank == 0 or not self.distributed:
            self.generator.set_state(state)
        torch.set_rng_state(payload["torch_rng"].cpu())

    # ------------------------------------------------------------------------------- validation
    def validate(self) -> dict:
        from .evaluate import evaluate_model, heldout_pairs

        if self._val is None:
            self._val = heldout_pairs(self.cfg.prepared_dir, self.cfg.val_pairs, self.cfg.val_seed, self.cfg.crop_zyx)
        self.model.eval()
        result = evaluate_model(self.model, self._val, device=self.device, passes=self.cfg.val_passes,
                                refine_downsample=self.cfg.refine_downsample)
        self.model.train()
        return result

    def _export(self, validation: dict) -> None:
        cfg = self.cfg
        if not cfg.export_path:
            return
        path = save_model(self.model, cfg.export_path, extra={
            "training_steps": self.step, "training_wall_s": round(self.elapsed_s, 1),
            "training_hardware": os.environ.get("ADREGNET_HARDWARE", f"{self.device.type}, torch threads={cfg.num_threads}"),
            "training_config": asdict(cfg), "heldout_validation": validation})
        for name, shipped in (("train_log.csv", "training_log.csv"), ("val_log.jsonl", "validation_log.jsonl")):
            if (self.out_dir / name).is_file():
                shutil.copyfile(self.out_dir / name, path.parent / shipped)

    def _validate_and_maybe_export(self) -> dict:
        result = {"step": self.step, "elapsed_s": round(self.elapsed_s, 1), **self.validate()}
        # Export only weights that beat both the best so far and the identity transform.
        result["improved"] = result["tre_mm"] < min(self.best_tre, result["identity_tre_mm"])
        with open(self.out_dir / "val_log.jsonl", "a") as f:
            f.write(json.dumps(result) + "\n")
        if result["improved"]:
            self.best_tre = result["tre_mm"]
            self._export(result)
        print(f"[adregnet train] step {self.step}: held-out TRE {result['tre_mm']:.3f} mm "
              f"(identity {result['identity_tre_mm']:.3f}), folds {result['folds_pct']:.4f}%", flush=True)
        return result

    # ------------------------------------------------------------------------------------ train
    def _batches(self):
        cfg = self.cfg
        if cfg.sampler_workers > 0 and self.device.type == "cpu":
            loader = torch.utils.data.DataLoader(
                _SampleStream(self.sampler, cfg.batch_size, cfg.seed + 1000 * self.rank + self.step, cfg.crop_sizes),
                batch_size=None, num_workers=cfg.sampler_workers, prefetch_factor=2, persistent_workers=False)
            yield from loader
        while True:
            yield self.sampler.sample(cfg.batch_size, self.generator, _pick_crop(cfg.crop_sizes, self.generator))

    def train(self) -> Path:
        """Run until ``steps`` or ``time_limit_min``; returns the path of the last checkpoint."""
        cfg = self.cfg
        main = self.rank == 0
        log_path = self.out_dir / "train_log.csv"
        log_pass = cfg.second_pass_probability > 0  # a "pass" column: 1 or 2 (second-pass batch)
        columns = ["step", "loss", "sup", "vel", "sim", "epe_mm", "identity_mm", "sample_s", "forward_s",
                   "backward_s", "step_s", "elapsed_s"] + (["pass"] if log_pass else [])
        log = writer = None
        if main:
            new_log = not log_path.is_file() or self.step == 0
            log = open(log_path, "w" if new_log else "a", newline="")
            writer = csv.writer(log)
            if new_log:
                writer.writerow(columns)
        self.model.train()
        start_elapsed, t_start = self.elapsed_s, time.perf_counter()
        last_export = time.perf_counter()
        batches = self._batches()
        try:
            while self.step < cfg.steps:
                # this run's minutes: a run resumed from a checkpoint trains for the limit again
                if cfg.time_limit_min is not None and self.elapsed_s - start_elapsed >= cfg.time_limit_min * 60:
                    break
                t0 = time.perf_counter()
                pairs = next(batches)
                t1 = time.perf_counter()
                first_flow = None  # the first pass's forward counts as forward time
                if cfg.second_pass_probability > 0 and float(
                        torch.rand((), generator=self.generator, device=self.device)) < cfg.second_pass_probability:
                    pairs, first_flow = second_pass_inputs(self.model, pairs)
                loss, terms = batch_loss(self.net, pairs, cfg, first_flow)
                t2 = time.perf_counter()
                self.optimizer.zero_grad(set_to_none=True)
                loss.backward()
                if cfg.grad_clip:
                    torch.nn.utils.clip_grad_norm_(self.model.parameters(), cfg.grad_clip)
                self.optimizer.step()
                t3 = time.perf_counter()
                self.step += 1
                self.elapsed_s = start_elapsed + t3 - t_start
                if main:
                    writer.writerow([self.step] + [f"{terms.get(k, float('nan')):.5g}" for k in columns[1:7]]
                                    + [f"{t1 - t0:.3f}", f"{t2 - t1:.3f}", f"{t3 - t2:.3f}", f"{t3 - t0:.3f}",
                                       f"{self.elapsed_s:.1f}"]
                                    + (["2" if first_flow is not None else "1"] if log_pass else []))
                    if self.step % 10 == 0:
                        log.flush()
                    if self.step % cfg.checkpoint_every == 0:
                        self.save_checkpoint()
                    if cfg.export_every_min and time.perf_counter() - last_export >= cfg.export_every_min * 60:
                        log.flush()
                        self._validate_and_maybe_export()
                        self.save_checkpoint()
                        last_export = time.perf_counter()
        finally:
            if log is not None:
                log.close()
        if main:
            self.save_checkpoint()
        if cfg.save_all_ranks:
            torch.save(self.model.state_dict(), self.out_dir / f"rank{self.rank}_weights.pt")
        if self.distributed:
            dist.barrier()
        return self.checkpoint_path
