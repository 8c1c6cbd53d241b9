r"""Writing a registration's outputs: one format for the CLI, batch runs and the Slicer worker.

Outputs are written into a temporary folder beside the destination and moved into place only when
everything was written, so a failed or cancelled run leaves nothing half-written; no output path may
resolve (after symlinks) to an input file, with or without ``--overwrite``.
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Iterable, Optional, Sequence

import numpy as np

from ..engine.api import RegistrationResult
from ..spatial.image import Image

__all__ = ["OUTPUT_FILES", "INVERSE_FILES", "OutputError", "check_outputs", "staged_output", "write_outputs",
           "json_default"]

#: files ``adregnet register`` writes (contract, DESIGN.md)
OUTPUT_FILES = ("displacement.nii.gz", "transform.h5", "warped.nii.gz", "jacobian.nii.gz", "metrics.json", "report.png")
#: the inverse (moving -> fixed, on the moving grid), written when the result has it
INVERSE_FILES = ("displacement_inverse.nii.gz", "transform_inverse.h5")


class OutputError(ValueError):
    """The output folder cannot be used; the message says why and what to do."""


def json_default(o):
    """JSON encoder for numpy values in metrics."""
    if isinstance(o, (np.floating, np.integer)):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    return str(o)


def _same_file(a: Path, b: Path) -> bool:
    try:
        if a.resolve() == b.resolve():
            return True
        return a.exists() and b.exists() and os.path.samefile(a, b)
    except OSError:
        return False


def check_outputs(outdir: Path, names: Sequence[str], inputs: Iterable[Optional[str | Path]], overwrite: bool) -> None:
    """Refuse an output folder that would destroy an input or, without ``overwrite``, earlier outputs.

    Raises:
        OutputError: an output name resolves to an input file (always refused), outputs already
            exist and ``overwrite`` is False, or the path is not a folder.
    """
    if outdir.exists() and not outdir.is_dir():
        raise OutputError(f"output path {outdir} exists and is not a folder; choose another -o")
    input_paths = [Path(p) for p in inputs if p]
    for name in names:
        target = outdir / name
        for src in input_paths:
            if _same_file(target, src):
                raise OutputError(f"the output {target} would overwrite the input {src}; "
                                  "choose another -o folder (inputs are never overwritten, even with --overwrite)")
    existing = [n for n in names if (outdir / n).exists()]
    if existing and not overwrite:
        raise OutputError(f"{outdir} already holds {', '.join(existing)}; choose another -o folder or add --overwrite")
    parent = outdir.parent if not outdir.exists() else outdir
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir():
        raise OutputError(f"cannot write to the output folder {outdir} (Not a directory); choose a writable -o folder")
    if not os.access(parent, os.W_OK):
        raise OutputError(f"cannot write to the output folder {outdir} (no write permission); choose a writable -o folder")


class staged_output:
    """Context manager: a temporary folder beside ``outdir`` whose files move into ``outdir`` on success.

    Usage::

        with staged_output(outdir) as tmp:
            ...write files into tmp...
        # now in outdir; on an exception nothing was moved and tmp is gone
    """

    def __init__(self, outdir: Path) -> None:
        self.outdir = Path(outdir)
        self.tmp: Optional[Path] = None

    def __enter__(self) -> Path:
        base = self.outdir.parent if self.outdir.parent.exists() else Path.cwd()
        if not self.outdir.parent.exists():
            self.outdir.parent.mkdir(parents=True, exist_ok=True)
            base = self.outdir.parent
        self.tmp = Path(tempfile.mkdtemp(prefix=f".{self.outdir.name}.partial-", dir=base))
        return self.tmp

    def __exit__(self, exc_type, exc, tb) -> bool:
        assert self.tmp is not None
        try:
            if exc_type is None:
                if not self.outdir.exists():
                    os.replace(self.tmp, self.outdir)
                    return False
                for item in sorted(self.tmp.iterdir()):
                    os.replace(item, self.outdir / item.name)
        finally:
            shutil.rmtree(self.tmp, ignore_errors=True)
        return False


def write_outputs(result: RegistrationResult, folder: Path, fixed: Image, *, inputs: Optional[dict] = None,
                  labels: Optional[Image] = None, report: bool = True) -> list[str]:
    """Write every output of a registration into ``folder`` (normally the staged temporary folder).

    Args:
        result: what :func:`register` returned.
        folder: destination folder (exists).
        fixed: the fixed image (for the report).
        inputs: input file names recorded in metrics.json.
        labels: optional moving label map, warped label-aware into ``warped_labels.nii.gz``.
        report: also draw report.png.

    Returns:
        The names written.
    """
    from ..io import write_displacement_field, write_image, write_transform

    folder = Path(folder)
    write_displacement_field(result.disp_mm, result.geometry, folder / "displacement.nii.gz")
    write_transform(result.disp_mm, result.geometry, folder / "transform.h5")
    write_image(result.warped, folder / "warped.nii.gz")
    write_image(result.jacobian, folder / "jacobian.nii.gz")
    names = ["displacement.nii.gz", "transform.h5", "warped.nii.gz", "jacobian.nii.gz"]
    if result.inverse_disp_mm is not None and result.moving_geometry is not None:
        write_displacement_field(result.inverse_disp_mm, result.moving_geometry, folder / "displacement_inverse.nii.gz")
        write_transform(result.inverse_disp_mm, result.moving_geometry, folder / "transform_inverse.h5")
        names += list(INVERSE_FILES)
    if labels is not None:
        mode = "labels" if _label_aware_available() else "nearest"
        warped_labels = result.transform.warp(labels, mode=mode, default=0)
        write_image(Image(warped_labels.array, result.geometry, "warped labels"), folder / "warped_labels.nii.gz")
        names.append("warped_labels.nii.gz")
    if report:
        from .report import write_report

        tb = ta = None
        if "tre_after" in result.metrics:
            tb = np.asarray(result.metrics["tre_before"]["per_landmark"])
            ta = np.asarray(result.metrics["tre_after"]["per_landmark"])
        before = result.before.array if result.before is not None else None
        write_report(folder / "report.png", fixed, before, result.warped, result.jacobian, result.metrics, tb, ta)
        names.append("report.png")
    metrics = dict(result.metrics, inputs=inputs or {})
    (folder / "metrics.json").write_text(json.dumps(metrics, indent=2, default=json_default))
    names.append("metrics.json")
    return names


def _label_aware_available() -> bool:
    try:
        from ..spatial import labels  # noqa: F401
    except ImportError:
        return False
    return True
