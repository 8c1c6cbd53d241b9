r"""IXI-style brain MR folder loader.

Layout (documented here, no other is guessed):

    ROOT/
      IXI002-Guys-0828-T1.nii.gz       intensity image: ``<subject>-<modality>.<ext>``
      IXI002-Guys-0828-seg.nii.gz      optional label map: ``<subject>-<label_suffix>.<ext>``
      ...
      (label maps may also sit in ROOT/seg/ or ROOT/labels/ with the same names)

``<subject>`` is everything before the last ``-<modality>`` (``IXI002-Guys-0828`` above), as
in the IXI distribution's file names. Extensions: ``.nii.gz``, ``.nii``, ``.nrrd``, ``.mha``.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Union

from .image import Image, ImageError
from .images import read_image, read_label_map

__all__ = ["IXISubject", "list_ixi_subjects", "load_ixi_subject"]

PathLike = Union[str, Path]
_EXTS = (".nii.gz", ".nii", ".nrrd", ".mha")


@dataclass(frozen=True)
class IXISubject:
    """One subject: its id, the image file and the label map file (None when absent)."""

    subject_id: str
    image_path: Path
    label_path: Optional[Path] = None


def _split(name: str) -> Optional[tuple[str, str]]:
    for ext in _EXTS:
        if name.lower().endswith(ext):
            return name[: -len(ext)], ext
    return None


def list_ixi_subjects(root: PathLike, modality: str = "T1", label_suffix: str = "seg",
                      require_labels: bool = False) -> list[IXISubject]:
    """List the subjects of an IXI-style folder, sorted by id.

    Args:
        root: the folder (see the module docstring for the layout).
        modality: image suffix ("T1", "T2", "PD").
        label_suffix: label map suffix ("seg").
        require_labels: skip subjects without a label map.

    Raises:
        ImageError: the folder does not exist or holds no ``*-<modality>`` image.
    """
    root = Path(root)
    if not root.is_dir():
        raise ImageError(f"{root}: no such folder (expected an IXI-style folder of <subject>-{modality}.nii.gz files)")
    label_dirs = [root] + [root / d for d in ("seg", "labels") if (root / d).is_dir()]
    subjects = []
    for path in sorted(root.iterdir()):
        split = _split(path.name)
        if not path.is_file() or split is None:
            continue
        stem, _ = split
        tail = f"-{modality}"
        if not stem.endswith(tail):
            continue
        subject_id = stem[: -len(tail)]
        label_path = None
        for folder in label_dirs:
            for ext in _EXTS:
                candidate = folder / f"{subject_id}-{label_suffix}{ext}"
                if candidate.is_file():
                    label_path = candidate
                    break
            if label_path is not None:
                break
        if require_labels and label_path is None:
            continue
        subjects.append(IXISubject(subject_id, path, label_path))
    if not subjects:
        raise ImageError(
            f"{root}: holds no '<subject>-{modality}.nii.gz' image"
            + (" with a matching label map" if require_labels else "")
        )
    return subjects


def load_ixi_subject(subject: IXISubject) -> tuple[Image, Optional[Image]]:
    """Read a subject's image (float32) and label map (int64, or None).

    Raises:
        ImageError: unreadable files, or a label map whose grid differs from the image's.
    """
    image = read_image(subject.image_path, name=f"{subject.subject_id} image")
    labels = None
    if subject.label_path is not None:
        labels = read_label_map(subject.label_path, name=f"{subject.subject_id} labels")
        if not labels.geometry.allclose(image.geometry, atol=1e-3):
            raise ImageError(
                f"{subject.label_path}: label map grid (size {list(labels.geometry.size)}, spacing "
                f"{labels.geometry.spacing.round(4).tolist()}) differs from the image grid (size "
                f"{list(image.geometry.size)}, spacing {image.geometry.spacing.round(4).tolist()}); resample it first"
            )
    return image, labels
