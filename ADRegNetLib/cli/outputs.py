r"""Writing a registration's outputs: one format for the CLI, batch runs and the Slicer worker.

Outputs are written into a temporary folder beside the destination and moved into place only when
everything was written, so a failed or cancelled run leaves nothing half-written; no output path may
resolve (after symlinks) to an input file, with or without ``--overwrite``.
"""
from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Iterable, Optional, Sequence

import numpy as np

from ..engine.api import RegistrationResult
from ..spatial.image import Image

__all__ = ["OUTPUT_FILES", "INVERSE_FILES", "ALL_OUTPUT_FILES", "OutputError", "check_outputs", "write_problem", "file_write_problem", "staged_output", "write_outputs",
           "json_default"]

#: files ``adregnet register`` writes (contract, DESIGN.md)
OUTPUT_FILES = ("displacement.nii.gz", "transform.h5", "warped.nii.gz", "jacobian.nii.gz", "metrics.json", "report.png")
#: the inverse (moving -> fixed, on the moving grid), written when the result has it
INVERSE_FILES = ("displacement_inverse.nii.gz", "transform_inverse.h5")
#: every name a run may write: with --overwrite, those a new run does not write are removed, so a
#: folder never mixes files of two runs (an old inverse beside a new forward field)
ALL_OUTPUT_FILES = OUTPUT_FILES + INVERSE_FILES + ("warped_labels.nii.gz",)


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


def check_outputs(outdir: Path, names: Sequence[str], inputs: Iterable[Optional[str | Path]],
                  overwrite: bool) -> list[str]:
    """Refuse an output folder that would destroy an input or, without ``overwrite``, earlier outputs.

    Args:
        outdir: the output folder (need not exist).
        names: the files this run writes.
        inputs: the run's input paths (None entries ignored).
        overwrite: the user allowed replacing earlier outputs.

    Returns:
        Outputs of an earlier run (:data:`ALL_OUTPUT_FILES`) that this run does not write; with
        ``overwrite`` they must be removed when the new files are moved in (``staged_output(remove=...)``).

    Raises:
        OutputError: an output name resolves to an input file (always refused), outputs already
            exist and ``overwrite`` is False, an output name is taken by a folder, or the path is not
            a usable folder (a file, a broken symbolic link, not writable).
    """
    outdir = Path(outdir)
    if outdir.is_symlink() and not outdir.exists():
        raise OutputError(f"output path {outdir} is a symbolic link to {os.readlink(outdir)}, which does not exist; "
                          "create that folder or choose another -o")
    if outdir.exists() and not outdir.is_dir():
        raise OutputError(f"output path {outdir} exists and is not a folder; choose another -o")
    input_paths = [Path(p) for p in inputs if p]
    for name in names:
        target = outdir / name
        for src in input_paths:
            if _same_file(target, src):
                raise OutputError(f"the output {target} would overwrite the input {src}; "
                                  "choose another -o folder (inputs are never overwritten, even with --overwrite)")
    known = list(names) + [n for n in ALL_OUTPUT_FILES if n not in names]
    for name in known:
        target = outdir / name
        if target.exists() and not target.is_file():
            raise OutputError(f"{target} is a folder, not an output file of an earlier run; move it away or choose "
                              "another -o folder (it is never replaced, even with --overwrite)")
    present = [n for n in known if (outdir / n).exists() or (outdir / n).is_symlink()]
    existing = [n for n in present if n in names]
    stale = [n for n in present if n not in names]
    if existing and not overwrite:
        raise OutputError(f"{outdir} already holds {', '.join(existing)}; choose another -o folder or add --overwrite")
    if stale and not overwrite:
        raise OutputError(f"{outdir} holds {', '.join(stale)} of an earlier run, which this run does not write: they "
                          "would not belong to the new result; choose another -o folder or add --overwrite (they are "
                          "then removed)")
    for name in stale:
        for src in input_paths:
            if _same_file(outdir / name, src):
                raise OutputError(f"{outdir / name} (an output of an earlier run, which --overwrite would remove) is "
                                  f"the input {src}; choose another -o folder (inputs are never removed)")
    # the outputs are staged beside OUTDIR (``staged_output``) and moved into it: both places must take them
    staging = outdir.parent
    while not staging.exists():
        staging = staging.parent
    for folder in [staging] + ([outdir] if outdir.exists() else []):
        if not folder.is_dir():
            raise OutputError(f"cannot write to the output folder {outdir} (Not a directory); choose a writable -o folder")
        problem = write_problem(folder)
        if problem:
            where = "" if folder == outdir else f", whose results are first made in {folder}"
            raise OutputError(f"cannot write to the output folder {outdir}{where} ({problem}); choose a writable -o "
                              "folder")
    return stale


def file_write_problem(output: Path) -> Optional[str]:
    """The message when the (existing) folder of the output file ``output`` takes no new file, or None
    (``adregnet warp`` and ``evaluate -o``)."""
    problem = write_problem(Path(output).resolve().parent, "file")
    return None if problem is None else f"cannot write {output} ({problem}); choose -o in a writable folder"


def write_problem(folder: Path, kind: str = "folder") -> Optional[str]:
    """Why no ``kind`` ("folder" or "file") can be created in the existing ``folder``, or None: tried by making
    and removing an empty one there before any work (``os.access`` says yes to root on a read-only mount such as
    /proc, and the registration then ran to its end before the write failed). A folder where things can be
    made but not removed (append-only) passes; the empty probe then stays."""
    if not os.access(folder, os.W_OK):
        return "no write permission"
    try:
        if kind == "file":
            handle, probe = tempfile.mkstemp(prefix=".adregnet-write-check-", dir=folder)
            os.close(handle)
        else:
            probe = tempfile.mkdtemp(prefix=".adregnet-write-check-", dir=folder)
    except OSError as exc:
        return exc.strerror or type(exc).__name__
    with contextlib.suppress(OSError):
        (os.remove if kind == "file" else os.rmdir)(probe)
    return None


class staged_output:
    """Context manager: a temporary folder beside ``outdir`` whose files move into ``outdir`` on success.

    Usage::

        with staged_output(outdir) as tmp:
            ...write files into tmp...
        # now in outdir; on an exception nothing was moved and tmp is gone

    Args:
        outdir: the destination folder (created if missing, with the user's umask).
        remove: names of earlier outputs in ``outdir`` to delete once the new files are in place
            (see :func:`check_outputs`).
    """

    def __init__(self, outdir: Path, remove: Sequence[str] = ()) -> None:
        self.outdir = Path(outdir)
        self.remove = tuple(remove)
        self.tmp: Optional[Path] = None

    def __enter__(self) -> Path:
        base = self.outdir.parent if self.outdir.parent.exists() else Path.cwd()
        if not self.outdir.parent.exists():
            self.outdir.parent.mkdir(parents=True, exist_ok=True)
            base = self.outdir.parent
        self.tmp = Path(tempfile.mkdtemp(prefix=f".{self.outdir.name}.partial-", dir=base))
        # mkdtemp makes it 0700; it becomes OUTDIR, which should get the permissions mkdir gives (the
        # user's umask, read from a folder made the ordinary way: os.umask would change it process-wide)
        probe = self.tmp / ".mode"
        probe.mkdir()
        os.chmod(self.tmp, probe.stat().st_mode & 0o7777)
        probe.rmdir()
        return self.tmp

    def __exit__(self, exc_type, exc, tb) -> bool:
        assert self.tmp is not None
        try:
            if exc_type is None:
                if not self.outdir.exists() and not self.outdir.is_symlink():
                    os.replace(self.tmp, self.outdir)
                    return False
                items = sorted(self.tmp.iterdir())
                # every destination is checked before the first move: the folder never ends up half replaced
                blocked = [self.outdir / i.name for i in items if (self.outdir / i.name).is_dir()]
                if blocked:
                    raise OutputError(f"{blocked[0]} is a folder, so the outputs cannot be moved into {self.outdir}; "
                                      "nothing was changed there: move it away or choose another -o folder")
                for item in items:
                    os.replace(item, self.outdir / item.name)
                for name in self.remove:
                    (self.outdir / name).unlink(missing_ok=True)
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
