r"""Training data that needs no download, resampled to a small training grid.

Sources (all under ``data_root``, default ``<repo>/../shared/data``):

* ``brain_t1``: the VoxelMorph test T1 (``brain-vxm-test-scan/test_scan.npz``, 1 mm, treated as an
  identity-direction LPS grid) with its FreeSurfer labels;
* ``synthseg``: whole-head label maps (``brain-synthseg-labelmaps/training_seg_XX.nii.gz``); images
  are synthesised from labels (SynthMorph style);
* ``lung_ct``: the POPI thorax CT (``lung-ct-thorax/thorax_ct.nii.gz``), HU window [-1000, 400];
  its lung mask serves as labels;
* ``shapes``: random smooth blob label maps (made on the fly), synthesised intensities;
* optional ``dirlab`` / ``ixi`` folders through ``ADRegNetLib.io.dirlab`` / ``io.ixi`` (imported lazily).

A :class:`Volume` is one resampled source; :class:`PairSampler` turns volumes into random cropped
:class:`~.synthetic.SyntheticPair` s. Reading ``.nii.gz`` files needs SimpleITK (imported lazily);
resampling uses torch only.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import torch

from ..spatial.image import Image
from ..spatial.geometry import Geometry
from ..spatial.warp import warp_image
from .synthetic import SyntheticPair, make_synthetic_pair, random_label_map, synth_image_from_labels

__all__ = ["Volume", "PairSampler", "default_data_root", "resample", "crop", "brain_t1_volume", "synthseg_volumes",
           "lung_ct_volume", "shapes_volume", "dirlab_volumes", "ixi_volumes", "load_sources"]

SYNTHSEG_TRAIN = tuple(range(1, 9))
SYNTHSEG_VAL = (9, 10)


def default_data_root() -> Path:
    """``<repo>/../shared/data`` (the CI layout: shared/ cloned beside the repository)."""
    return Path(__file__).resolve().parents[2] / ".." / "shared" / "data"


@dataclass
class Volume:
    """One training source on the training grid.

    Attributes:
        image: intensities in [0, 1] (or None for label-only sources).
        labels: int64 label map on the same grid, or None.
        name: source name (messages, logs).
        synth_probability: chance a pair is synthesised from labels instead of using ``image``.
    """

    image: Optional[Image]
    labels: Optional[Image]
    name: str
    synth_probability: float = 0.0

    @property
    def geometry(self) -> Geometry:
        return (self.image or self.labels).geometry


def resample(image: Image, spacing_mm: float, mode: str = "linear") -> Image:
    """Resample ``image`` to about ``spacing_mm`` voxels over the same span (torch, no SimpleITK)."""
    target = image.geometry.with_spacing(spacing_mm)
    src = torch.as_tensor(image.array.astype(np.float32))[None, None]
    out = warp_image(src, None, target, image.geometry, mode=mode, padding_mode="border")[0, 0].numpy()
    if mode == "nearest":
        out = np.rint(out).astype(np.int64)
    return Image(out, target, image.name)


def crop(image: Image, start_zyx: Sequence[int], size_zyx: Sequence[int]) -> Image:
    """A sub-volume (zero-padded where it leaves the image) with its own geometry."""
    start = np.asarray(start_zyx, dtype=int)
    size = np.asarray(size_zyx, dtype=int)
    out = np.zeros(tuple(size), dtype=image.array.dtype)
    src_lo = np.maximum(start, 0)
    src_hi = np.minimum(start + size, image.array.shape)
    dst_lo = src_lo - start
    dst_hi = dst_lo + np.maximum(src_hi - src_lo, 0)
    if np.all(src_hi > src_lo):
        out[dst_lo[0]:dst_hi[0], dst_lo[1]:dst_hi[1], dst_lo[2]:dst_hi[2]] = \
            image.array[src_lo[0]:src_hi[0], src_lo[1]:src_hi[1], src_lo[2]:src_hi[2]]
    g = image.geometry
    origin = g.index_to_physical(start[::-1][None].astype(float))[0]
    return Image(out, Geometry(tuple(int(s) for s in size[::-1]), g.spacing, origin, g.direction), image.name)


def _normalize(a: np.ndarray, lo: float, hi: float) -> np.ndarray:
    return np.clip((a.astype(np.float32) - lo) / (hi - lo), 0, 1)


def _read_nifti(path: Path, dtype) -> Image:
    import SimpleITK as sitk  # lazy: the training loop itself never needs it

    from ..io.image import from_sitk

    if not path.is_file():
        raise FileNotFoundError(f"training data file not found: {path}; set data_root to the folder holding shared/data")
    return from_sitk(sitk.ReadImage(str(path)), name=path.name, dtype=dtype)


def brain_t1_volume(data_root: Path, spacing_mm: float) -> Volume:
    """The VoxelMorph test T1 with its labels (1 mm identity grid), resampled."""
    path = Path(data_root) / "brain-vxm-test-scan" / "test_scan.npz"
    if not path.is_file():
        raise FileNotFoundError(f"brain T1 not found: {path}")
    d = np.load(path)
    g = Geometry(d["vol"].shape[::-1], spacing=(1.0, 1.0, 1.0))
    img = resample(Image(d["vol"].astype(np.float32), g, "brain_t1"), spacing_mm)
    lab = resample(Image(d["seg"].astype(np.int64), g, "brain_t1_labels"), spacing_mm, mode="nearest")
    return Volume(Image(_normalize(img.array, 0, float(img.array.max())), img.geometry, "brain_t1"), lab,
                  "brain_t1", synth_probability=0.3)


def synthseg_volumes(data_root: Path, spacing_mm: float, subjects: Sequence[int] = SYNTHSEG_TRAIN) -> list[Volume]:
    """Label maps of the given SynthSeg subjects (1..10), resampled (nearest)."""
    out = []
    for s in subjects:
        lab = _read_nifti(Path(data_root) / "brain-synthseg-labelmaps" / f"training_seg_{s:02d}.nii.gz", np.int64)
        out.append(Volume(None, resample(lab, spacing_mm, mode="nearest"), f"synthseg_{s:02d}", synth_probability=1.0))
    return out


def lung_ct_volume(data_root: Path, spacing_mm: float) -> Volume:
    """The thorax CT (HU window [-1000, 400] -> [0, 1]) with its lung mask as labels."""
    folder = Path(data_root) / "lung-ct-thorax"
    ct = _read_nifti(folder / "thorax_ct.nii.gz", np.float32)
    ct = Image(_normalize(ct.array, -1000.0, 400.0), ct.geometry, "lung_ct")
    lab = _read_nifti(folder / "lung_mask.nii.gz", np.int64)
    return Volume(resample(ct, spacing_mm), resample(lab, spacing_mm, mode="nearest"), "lung_ct")


def shapes_volume(shape_zyx: Sequence[int], spacing_mm: float, rng: np.random.Generator) -> Volume:
    """Random blob labels on a ``shape_zyx`` grid (intensities synthesised per pair)."""
    g = Geometry(tuple(int(s) for s in shape_zyx[::-1]), spacing=(spacing_mm,) * 3)
    return Volume(None, Image(random_label_map(tuple(shape_zyx), rng), g, "shapes"), "shapes", synth_probability=1.0)


def dirlab_volumes(root: Path, cases: Sequence[int], spacing_mm: float) -> list[Volume]:
    """DIR-Lab 4D-CT cases (T00 phase) through ``io.dirlab`` (imported lazily)."""
    from ..io.dirlab import load_dirlab_case

    out = []
    for c in cases:
        case = load_dirlab_case(root, c, phases=("T00",), require_landmarks=False)
        img = case.images["T00"]
        img = Image(_normalize(img.array, -1000.0, 400.0), img.geometry, f"dirlab_{c}")
        out.append(Volume(resample(img, spacing_mm), None, f"dirlab_{c}"))
    return out


def ixi_volumes(root: Path, spacing_mm: float, modality: str = "T1", limit: Optional[int] = None) -> list[Volume]:
    """IXI-style subjects through ``io.ixi`` (imported lazily); intensities scaled by the 99.5th percentile."""
    from ..io.ixi import list_ixi_subjects, load_ixi_subject

    out = []
    for subject in list_ixi_subjects(root, modality=modality)[:limit]:
        img, lab = load_ixi_subject(subject)
        hi = float(np.percentile(img.array, 99.5)) or 1.0
        img = resample(Image(_normalize(img.array, 0.0, hi), img.geometry, subject.subject_id), spacing_mm)
        lab = resample(lab, spacing_mm, mode="nearest") if lab is not None else None
        out.append(Volume(img, lab, f"ixi_{subject.subject_id}"))
    return out


def load_sources(names: Sequence[str], data_root: Path | None, spacing_mm: float, rng: np.random.Generator,
                 crop_zyx: Sequence[int], synthseg_subjects: Sequence[int] = SYNTHSEG_TRAIN,
                 dirlab_root: str | None = None, dirlab_cases: Sequence[int] = (),
                 ixi_root: str | None = None) -> list[Volume]:
    """Build the named sources; a missing data file is skipped with a printed note (not an error).

    Args:
        names: any of "brain_t1", "synthseg", "lung_ct", "shapes", "dirlab", "ixi".
        data_root: folder of the shared data (default :func:`default_data_root`).
        spacing_mm: training grid spacing.
        rng: generator (for "shapes").
        crop_zyx: training crop (size of the "shapes" volumes).
    """
    root = Path(data_root) if data_root else default_data_root()
    volumes: list[Volume] = []
    for name in names:
        try:
            if name == "brain_t1":
                volumes.append(brain_t1_volume(root, spacing_mm))
            elif name == "synthseg":
                volumes += synthseg_volumes(root, spacing_mm, synthseg_subjects)
            elif name == "lung_ct":
                volumes.append(lung_ct_volume(root, spacing_mm))
            elif name == "shapes":
                volumes.append(shapes_volume(crop_zyx, spacing_mm, rng))
            elif name == "dirlab" and dirlab_root:
                volumes += dirlab_volumes(Path(dirlab_root), dirlab_cases, spacing_mm)
            elif name == "ixi" and ixi_root:
                volumes += ixi_volumes(Path(ixi_root), spacing_mm)
            elif name not in ("dirlab", "ixi"):
                raise ValueError(f"unknown data source {name!r}; use brain_t1, synthseg, lung_ct, shapes, dirlab, ixi")
        except FileNotFoundError as exc:
            print(f"[adregnet train] skipping source {name}: {exc}")
    if not volumes:
        raise ValueError(f"no training data found for sources {list(names)} under {root}")
    return volumes


@dataclass
class PairSampler:
    """Random synthetic pairs from random crops of the volumes.

    Attributes:
        volumes: the sources.
        crop_zyx: crop size (Z, Y, X) voxels.
        max_disp_mm: (low, high) range of the random velocity size, mm.
        smoothness_mm: (low, high) range of the field smoothness, mm.
        n_landmarks: landmark pairs per pair.
        weights: sampling weight per volume (default: equal per source *kind*).
    """

    volumes: list[Volume]
    crop_zyx: tuple[int, int, int] = (64, 64, 64)
    max_disp_mm: tuple[float, float] = (3.0, 15.0)
    smoothness_mm: tuple[float, float] = (15.0, 40.0)
    n_landmarks: int = 128
    weights: Optional[list[float]] = None
    _p: np.ndarray = field(init=False, repr=False)

    def __post_init__(self) -> None:
        if self.weights is None:
            kinds = [v.name.split("_")[0] for v in self.volumes]
            counts = {k: kinds.count(k) for k in kinds}
            self.weights = [1.0 / counts[k] for k in kinds]
        p = np.asarray(self.weights, dtype=float)
        self._p = p / p.sum()

    def _crop_start(self, vol: Volume, rng: np.random.Generator) -> np.ndarray:
        shape = np.asarray(vol.geometry.shape)
        size = np.asarray(self.crop_zyx)
        ref = vol.labels.array > 0 if vol.labels is not None else vol.image.array > 0.1
        pts = np.argwhere(ref)
        centre = pts[rng.integers(len(pts))] if len(pts) else shape // 2
        start = centre - size // 2
        # Keep the crop inside the volume where the volume is large enough.
        hi = np.maximum(shape - size, 0)
        start = np.where(shape >= size, np.clip(start, 0, hi), (shape - size) // 2)
        return start

    def sample(self, rng: np.random.Generator) -> SyntheticPair:
        """One random pair (see :func:`~.synthetic.make_synthetic_pair`)."""
        vol = self.volumes[rng.choice(len(self.volumes), p=self._p)]
        start = self._crop_start(vol, rng)
        labels = crop(vol.labels, start, self.crop_zyx) if vol.labels is not None else None
        synth = vol.image is None or rng.random() < vol.synth_probability
        if synth:
            image = Image(synth_image_from_labels(labels.array, rng), labels.geometry, vol.name)
        else:
            image = crop(vol.image, start, self.crop_zyx)
        return make_synthetic_pair(
            image, rng, labels=labels,
            max_disp_mm=float(rng.uniform(*self.max_disp_mm)),
            smoothness_mm=float(rng.uniform(*self.smoothness_mm)),
            n_landmarks=self.n_landmarks,
            synthesize_from_labels=synth,
        )
