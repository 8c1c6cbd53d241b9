r"""Prepared volumes (``.npz`` from :mod:`.prep`) and the batched torch pair sampler.

Torch and numpy only (no SimpleITK, no scipy): the same code runs on the CPU and on the GPU host.

A pair (see :mod:`.synthetic` for the conventions): a random crop of a prepared volume (centred on
a random foreground voxel, random flips) gives the *moving* image, either its real intensities or
an image synthesised from its labels (one image for both sides, or with ``multimodal_probability``
two independent contrasts); a random smooth SVF is integrated by scaling and squaring
into the true field u; the fixed image is the (independently re-synthesised or same) source warped
by u, ``fixed(x) = source(x + u(x))``, so u is exactly the field a registration must find. Both
images then get independent intensity changes.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from . import synthetic as S

__all__ = ["PreparedVolume", "PairBatch", "PairSampler", "load_prepared", "SYNTH_PROBABILITY"]

#: chance that a pair of a source with real intensities is synthesised from its labels instead.
SYNTH_PROBABILITY = {"brain_t1": 0.3, "lung_ct": 0.2}
#: subject augmentation (``PairSampler(subject_augmentation=...)``): largest rotation about each axis
#: (degrees), per-axis scale range, mean length (mm) range and control spacing (mm) of the deformation
SUBJECT_ROTATION_DEG = 12.0
SUBJECT_SCALE = (0.88, 1.12)
SUBJECT_DEFORMATION_MM = (1.0, 5.0)
SUBJECT_SMOOTHNESS_MM = 30.0


def _rotation_zyx(angles: torch.Tensor) -> torch.Tensor:
    """(3, 3) rotation of (z, y, x) index vectors by ``angles`` (radians) about the three axes."""
    c, s = torch.cos(angles), torch.sin(angles)
    one, zero = torch.ones_like(c[0]), torch.zeros_like(c[0])
    rz = torch.stack([torch.stack([one, zero, zero]), torch.stack([zero, c[0], -s[0]]), torch.stack([zero, s[0], c[0]])])
    ry = torch.stack([torch.stack([c[1], zero, s[1]]), torch.stack([zero, one, zero]), torch.stack([-s[1], zero, c[1]])])
    rx = torch.stack([torch.stack([c[2], -s[2], zero]), torch.stack([s[2], c[2], zero]), torch.stack([zero, zero, one])])
    return rz @ ry @ rx


@dataclass
class PreparedVolume:
    """One prepared subject on the training grid.

    Attributes:
        image: (1, 1, Z, Y, X) float32 in [0, 1], or None (label-only source).
        labels: (1, 1, Z, Y, X) int64 labels 0..K-1.
        n_labels: K.
        centres: (M, 3) int64 (z, y, x) foreground voxels (crop centres).
        spacing_mm: isotropic voxel size.
        kind, name, split: source kind, file stem, "train" or "heldout".
    """

    image: Optional[torch.Tensor]
    labels: torch.Tensor
    n_labels: int
    centres: torch.Tensor
    spacing_mm: float
    kind: str
    name: str
    split: str

    @classmethod
    def load(cls, path: str | Path, device: str | torch.device = "cpu", max_centres: int = 4096) -> "PreparedVolume":
        """Read one ``.npz`` written by :func:`.prep.save_volume`."""
        path = Path(path)
        with np.load(path) as d:
            image = d["image"]
            labels = d["labels"].astype(np.int64)
            geometry = json.loads(str(d["geometry"]))
            kind, split = str(d["kind"]), str(d["split"])
        spacing = np.asarray(geometry["spacing"], float)
        if not np.allclose(spacing, spacing[0], rtol=0.05):
            raise ValueError(f"{path}: training volumes need isotropic voxels, got spacing {spacing.tolist()}; "
                             "re-run python -m ADRegNetLib.train.prep")
        fg = np.argwhere(labels > 0)
        if len(fg) == 0:
            fg = np.argwhere(np.ones_like(labels, dtype=bool))
        pick = np.random.default_rng(0).choice(len(fg), size=min(max_centres, len(fg)), replace=False)
        return cls(
            image=torch.as_tensor(image, dtype=torch.float32, device=device)[None, None] if image.size else None,
            labels=torch.as_tensor(labels, device=device)[None, None],
            n_labels=int(labels.max()) + 1,
            centres=torch.as_tensor(fg[np.sort(pick)], dtype=torch.int64),
            spacing_mm=float(spacing.mean()), kind=kind, name=path.stem, split=split)


def load_prepared(folder: str | Path, split: str = "train", kinds: Optional[Sequence[str]] = None,
                  device: str | torch.device = "cpu") -> list[PreparedVolume]:
    """All prepared volumes of ``split`` ("train", "heldout" or "all") and ``kinds`` in ``folder``."""
    folder = Path(folder)
    files = sorted(folder.glob("*.npz"))
    if not files:
        raise FileNotFoundError(f"no prepared volumes (*.npz) in {folder}; run "
                                f"`python -m ADRegNetLib.train.prep --data <shared/data> -o {folder}` first")
    vols = [PreparedVolume.load(f, device) for f in files]
    vols = [v for v in vols if (split == "all" or v.split == split) and (kinds is None or v.kind in kinds)]
    if not vols:
        raise ValueError(f"no prepared volumes of split {split!r} and kinds {kinds} in {folder}")
    return vols


@dataclass
class PairBatch:
    """A batch of synthetic pairs with their answers (all on one device).

    Attributes:
        fixed, moving: (B, 1, Z, Y, X) float32 in [0, 1].
        disp_mm: (B, 3, Z, Y, X) true displacement, mm along the voxel axes, (x, y, z) components.
        velocity_mm: (B, 3, Z, Y, X) the stationary velocity whose exponential is ``disp_mm``.
        fixed_labels, moving_labels: (B, 1, Z, Y, X) int64.
        spacing_mm: isotropic voxel size.
        names: source volume of each pair.
    """

    fixed: torch.Tensor
    moving: torch.Tensor
    disp_mm: torch.Tensor
    velocity_mm: torch.Tensor
    fixed_labels: torch.Tensor
    moving_labels: torch.Tensor
    spacing_mm: float
    names: list

    def to(self, device: str | torch.device) -> "PairBatch":
        t = {k: getattr(self, k).to(device) for k in ("fixed", "moving", "disp_mm", "velocity_mm", "fixed_labels",
                                                      "moving_labels")}
        return PairBatch(**t, spacing_mm=self.spacing_mm, names=list(self.names))


def _crop(vol: torch.Tensor, start: Sequence[int], size: Sequence[int]) -> torch.Tensor:
    """(1, C, Z, Y, X) sub-volume starting at ``start`` (z, y, x), zero-padded outside."""
    shape = vol.shape[2:]
    lo = [max(0, s) for s in start]
    hi = [min(n, s + c) for n, s, c in zip(shape, start, size)]
    piece = vol[:, :, lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]]
    pad = []
    for axis in (2, 1, 0):
        pad += [lo[axis] - start[axis], start[axis] + size[axis] - hi[axis]]
    return F.pad(piece, pad) if any(pad) else piece


class PairSampler:
    """Random batches of synthetic pairs from prepared volumes (all in torch on ``device``).

    Args:
        volumes: the sources (equal weight per kind, then per volume).
        crop_zyx: crop size (Z, Y, X) voxels.
        mean_disp_mm: (low, high) range of the mean displacement length, mm.
        smoothness_mm: (low, high) range of the control point distance of the velocity, mm.
        flip: random flips of each crop along each axis.
        integration_steps: scaling-and-squaring steps of the true field.
        multimodal_probability: chance that a label-synthesised pair gets two independent contrasts
            (otherwise one synthesised image is the source of both, each with its own intensity change).
        subject_augmentation: chance that a crop is resampled from its volume through a random
            affine (rotation up to ``SUBJECT_ROTATION_DEG`` per axis, scale ``SUBJECT_SCALE``) and a
            random smooth deformation (``SUBJECT_DEFORMATION_MM``), so it shows an anatomy of
            another shape: a new subject for the network (the pair's own motion is drawn afterwards,
            as always). 0 (the default, and the held-out pairs): crops as they are.
    """

    def __init__(self, volumes: Sequence[PreparedVolume], crop_zyx: Sequence[int] = (64, 64, 64),
                 mean_disp_mm: tuple[float, float] = (0.5, 7.0), smoothness_mm: tuple[float, float] = (20.0, 60.0),
                 flip: bool = True, integration_steps: int = 7, multimodal_probability: float = 0.2,
                 subject_augmentation: float = 0.0) -> None:
        if not volumes:
            raise ValueError("PairSampler needs at least one prepared volume")
        spacings = [v.spacing_mm for v in volumes]
        if max(spacings) > 1.05 * min(spacings):
            raise ValueError(f"prepared volumes have different spacings {sorted(set(spacings))}; prepare them together")
        self.volumes = list(volumes)
        # Volumes prepared at one target spacing differ by < 1 % (whole voxel counts over their span).
        self.spacing_mm = float(np.mean(spacings))
        self.crop_zyx = tuple(int(c) for c in crop_zyx)
        self.mean_disp_mm = tuple(float(x) for x in mean_disp_mm)
        self.smoothness_mm = tuple(float(x) for x in smoothness_mm)
        self.flip = flip
        self.integration_steps = integration_steps
        self.multimodal_probability = float(multimodal_probability)
        self.subject_augmentation = float(subject_augmentation)
        self._float_labels: dict[str, torch.Tensor] = {}
        kinds = [v.kind for v in self.volumes]
        w = torch.tensor([1.0 / kinds.count(k) for k in kinds])
        self.weights = w / w.sum()

    def _one_crop(self, vol: PreparedVolume, gen: torch.Generator) -> tuple[Optional[torch.Tensor], torch.Tensor]:
        centre = vol.centres[int(torch.randint(len(vol.centres), (1,), generator=gen, device=gen.device))]
        if self.subject_augmentation > 0 and float(
                torch.rand((1,), generator=gen, device=gen.device)) < self.subject_augmentation:
            img, lab = self._new_subject_crop(vol, centre, gen)
        else:
            start = [int(c) - s // 2 for c, s in zip(centre.tolist(), self.crop_zyx)]
            lab = _crop(vol.labels, start, self.crop_zyx)
            img = _crop(vol.image, start, self.crop_zyx) if vol.image is not None else None
        if self.flip:
            axes = [2 + a for a in range(3) if float(torch.rand((1,), generator=gen, device=gen.device)) < 0.5]
            if axes:
                lab = lab.flip(axes)
                img = img.flip(axes) if img is not None else None
        return img, lab

    def _new_subject_crop(self, vol: PreparedVolume, centre: torch.Tensor,
                          gen: torch.Generator) -> tuple[Optional[torch.Tensor], torch.Tensor]:
        """A crop around ``centre`` resampled through a random affine and smooth deformation (see the class)."""
        dev = gen.device
        size = self.crop_zyx
        angles = (torch.rand(3, generator=gen, device=dev) * 2 - 1) * math.radians(SUBJECT_ROTATION_DEG)
        scale = SUBJECT_SCALE[0] + (SUBJECT_SCALE[1] - SUBJECT_SCALE[0]) * torch.rand(3, generator=gen, device=dev)
        matrix = _rotation_zyx(angles) @ torch.diag(scale)
        # crop voxel offsets from the centre voxel (z, y, x; as the plain crop places it), mapped into
        # the volume's voxel indices
        axes = [torch.arange(n, dtype=torch.float32, device=dev) - n // 2 for n in size]
        offsets = torch.stack(torch.meshgrid(*axes, indexing="ij"), dim=-1)
        low, high = SUBJECT_DEFORMATION_MM
        bend_mm = low + (high - low) * float(torch.rand((1,), generator=gen, device=dev))
        bend = S.random_svf(size, self.spacing_mm, bend_mm, SUBJECT_SMOOTHNESS_MM, 1, gen, resolution_divisor=2)
        bend_zyx = bend[0].flip(0).permute(1, 2, 3, 0).to(dev) / self.spacing_mm  # (x, y, z) mm -> (z, y, x) voxels
        index = centre.to(dev, torch.float32) + offsets @ matrix.T + bend_zyx
        shape = torch.tensor(vol.labels.shape[2:], dtype=torch.float32, device=dev)
        grid = (2 * index / (shape - 1) - 1).flip(-1)[None]  # grid_sample wants (x, y, z), normalised
        if vol.name not in self._float_labels:  # grid_sample needs floats; convert each volume once
            self._float_labels[vol.name] = vol.labels.float()
        lab = F.grid_sample(self._float_labels[vol.name], grid, mode="nearest", padding_mode="zeros",
                            align_corners=True).round().to(vol.labels.dtype)
        img = None
        if vol.image is not None:
            img = F.grid_sample(vol.image, grid, mode="bilinear", padding_mode="zeros", align_corners=True)
        return img, lab

    def sample(self, batch: int, generator: torch.Generator,
               crop_zyx: Optional[Sequence[int]] = None) -> PairBatch:
        """``batch`` random pairs on the generator's device (crop size: ``crop_zyx`` or the sampler's)."""
        if crop_zyx is not None and tuple(int(c) for c in crop_zyx) != self.crop_zyx:
            saved, self.crop_zyx = self.crop_zyx, tuple(int(c) for c in crop_zyx)
            try:
                return self.sample(batch, generator)
            finally:
                self.crop_zyx = saved
        dev = generator.device
        gen = generator
        idx = torch.multinomial(self.weights.to(dev), batch, replacement=True, generator=gen).tolist()
        fixed_src, moving, labels, names = [], [], [], []
        for i in idx:
            vol = self.volumes[i]
            img, lab = self._one_crop(vol, gen)
            lab = lab.to(dev)
            synth = img is None or float(torch.rand((1,), generator=gen, device=dev)) < SYNTH_PROBABILITY.get(vol.kind, 0.0)
            if synth:
                moving.append(S.synth_image_from_labels(lab, gen, n_labels=vol.n_labels))
                multimodal = float(torch.rand((1,), generator=gen, device=dev)) < self.multimodal_probability
                fixed_src.append(S.synth_image_from_labels(lab, gen, n_labels=vol.n_labels) if multimodal
                                 else moving[-1])
            else:
                moving.append(img.to(dev))
                fixed_src.append(img.to(dev))
            labels.append(lab)
            names.append(vol.name)
        moving_t, fixed_src_t, labels_t = torch.cat(moving), torch.cat(fixed_src), torch.cat(labels)
        mean = self.mean_disp_mm[0] + (self.mean_disp_mm[1] - self.mean_disp_mm[0]) * torch.rand((batch,), generator=gen, device=dev)
        smooth = self.smoothness_mm[0] + (self.smoothness_mm[1] - self.smoothness_mm[0]) * torch.rand((batch,), generator=gen, device=dev)
        half = tuple(max(4, s // 2) for s in self.crop_zyx)
        # The true field is made and integrated at half resolution and upsampled: it is smooth, and
        # the upsampled field is the one the fixed image is warped with, so it is exact by definition.
        v_half = S.random_svf(half, self.spacing_mm * 2.0, mean.cpu(), smooth.cpu(), batch, gen, resolution_divisor=1)
        d_half = S.integrate_svf(v_half, self.spacing_mm * 2.0, self.integration_steps)
        disp = F.interpolate(d_half, size=self.crop_zyx, mode="trilinear", align_corners=True)
        velocity = F.interpolate(v_half, size=self.crop_zyx, mode="trilinear", align_corners=True)
        fixed = S.warp(fixed_src_t, disp, self.spacing_mm)
        fixed_labels = S.warp(labels_t, disp, self.spacing_mm, mode="nearest")
        fixed = S.random_intensity_change(fixed, gen)
        moving_t = S.random_intensity_change(moving_t, gen)
        return PairBatch(fixed=fixed, moving=moving_t, disp_mm=disp, velocity_mm=velocity, fixed_labels=fixed_labels,
                         moving_labels=labels_t, spacing_mm=self.spacing_mm, names=names)
