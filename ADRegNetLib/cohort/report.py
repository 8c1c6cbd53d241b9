r"""The cohort summary: TRE/Dice/folds/time distributions (summary.png) and the pairs to look at (summary.md).

Both are replaced at every run, so a file of those names that the batch did not write (the user's notes, a plot
of theirs) stops the batch before anything runs (:func:`summary_problem`), as a results.csv that is not the
batch's does: summary.md is the batch's when its first line is the heading it writes, summary.png when it
carries the PNG title the batch gives it, or, written by a version before that title, when it is a matplotlib
figure beside the batch's results.csv.
"""
from __future__ import annotations

import math
import struct
from pathlib import Path
from typing import Optional, Sequence

from .files import atomic_write

__all__ = ["write_summary", "summary_markdown", "summary_problem", "SummaryFileError", "PLOTTED", "SUMMARY_FILES"]

#: the files the summary is written to, in OUTDIR
SUMMARY_FILES = ("summary.png", "summary.md")
#: the first line of summary.md: how a run knows the file is a batch's summary
_HEADING = "# Cohort registration summary"
#: the PNG text chunk (key, value) in summary.png: how a run knows the file is a batch's summary
_PNG_TITLE = ("Title", "AD-RegNet cohort summary (adregnet batch)")
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


class SummaryFileError(ValueError):
    """OUTDIR holds a summary.md or summary.png that the batch did not write: it is never replaced."""

#: (column, axis label) of the four distributions in summary.png
PLOTTED = (("tre_after_mm", "TRE after (mm)"), ("dice_after", "Dice after"),
           ("folds_pct", "folded voxels (%)"), ("time_s", "registration time (s)"))
_WORST = 5


def _values(rows: Sequence[dict], column: str) -> list[float]:
    return [float(r[column]) for r in rows
            if r.get("status") == "ok" and r.get(column) is not None and math.isfinite(float(r[column]))]


def _median(values: list[float]) -> Optional[float]:
    if not values:
        return None
    s = sorted(values)
    mid = len(s) // 2
    return s[mid] if len(s) % 2 else 0.5 * (s[mid - 1] + s[mid])


def _num(value, digits: int = 2) -> str:
    return "-" if value is None else f"{float(value):.{digits}f}"


def _ranked(rows: Sequence[dict], column: str, largest: bool) -> list[dict]:
    scored = [r for r in rows if r.get("status") == "ok" and r.get(column) is not None]
    return sorted(scored, key=lambda r: float(r[column]), reverse=largest)[:_WORST]


def _table(title: str, rows: list[dict]) -> list[str]:
    if not rows:
        return []
    lines = [f"## {title}", "", "| id | TRE before (mm) | TRE after (mm) | Dice after | folds (%) | time (s) |",
             "|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['id']} | {_num(r.get('tre_before_mm'))} | {_num(r.get('tre_after_mm'))} | "
                     f"{_num(r.get('dice_after'), 3)} | {_num(r.get('folds_pct'), 3)} | {_num(r.get('time_s'), 1)} |")
    return lines + [""]


def summary_markdown(rows: Sequence[dict]) -> str:
    """The cohort in numbers: counts, medians, the slowest and worst pairs, the failures."""
    ok = [r for r in rows if r.get("status") == "ok"]
    failed = [r for r in rows if r.get("status") == "failed"]
    lines = [_HEADING, "", f"{len(rows)} pairs: {len(ok)} ok, {len(failed)} failed.", "",
             "| measure | median | min | max | pairs |", "|---|---|---|---|---|"]
    for column, label in PLOTTED + (("tre_before_mm", "TRE before (mm)"), ("dice_before", "Dice before"),
                                    ("memory_peak_gb", "worker peak memory (GB)")):
        values = _values(rows, column)
        if values:
            lines.append(f"| {label} | {_num(_median(values), 3)} | {_num(min(values), 3)} | "
                         f"{_num(max(values), 3)} | {len(values)} |")
    guided = {r.get("landmarks_guided") for r in ok if r.get("landmarks_guided")}
    if guided:
        lines.append("TRE: " + ("the landmarks guided the registrations, so their TRE after is not an independent "
                                "check (`--landmarks-check-only` measures only)" if guided == {"yes"} else
                                "the landmarks only measured (an independent check)" if guided == {"no"} else
                                "the landmarks guided some registrations and only measured others"))
    lines.append("")
    lines += _table("Slowest pairs", _ranked(rows, "time_s", True))
    lines += _table("Largest TRE after registration", _ranked(rows, "tre_after_mm", True))
    lines += _table("Lowest Dice after registration", _ranked(rows, "dice_after", False))
    lines += _table("Most folded voxels", [r for r in _ranked(rows, "folds_pct", True) if float(r["folds_pct"]) > 0])
    if failed:
        lines += ["## Failed pairs", "", "| id | error |", "|---|---|"]
        lines += [f"| {r['id']} | {str(r.get('error') or '').replace('|', '/')} |" for r in failed]
        lines.append("")
    return "\n".join(lines)


def _write_png(path: Path, rows: Sequence[dict]) -> None:
    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    fig = Figure(figsize=(10, 7.5), dpi=100)
    ok = sum(r.get("status") == "ok" for r in rows)
    fig.suptitle(f"AD-RegNet cohort: {len(rows)} pairs, {ok} ok, {len(rows) - ok} failed")
    for k, (column, label) in enumerate(PLOTTED):
        ax = fig.add_subplot(2, 2, k + 1)
        values = _values(rows, column)
        if values:
            ax.hist(values, bins=min(30, max(5, len(values) // 2)), color="tab:blue", alpha=0.8)
            med = _median(values)
            ax.axvline(med, color="tab:red", linestyle="--", label=f"median {med:.3g}")
            ax.legend(loc="upper right", fontsize=8)
            ax.set_ylabel("pairs")
            ax.yaxis.set_major_locator(MaxNLocator(integer=True))
        else:
            ax.text(0.5, 0.5, "not measured\n(no landmarks / labels, or no pair ok)", ha="center", va="center",
                    transform=ax.transAxes, color="gray")
            ax.set_yticks([])
        ax.set_xlabel(label)
    fig.tight_layout(rect=(0, 0, 1, 0.95))
    fig.savefig(path, format="png", metadata=dict([_PNG_TITLE]))


def _png_text(path: Path) -> dict[str, str]:
    """The text chunks (tEXt) of a PNG file before its image data ({} when it is no PNG)."""
    with path.open("rb") as handle:
        head = handle.read(1 << 16)  # matplotlib writes its text chunks right after the header
    if not head.startswith(_PNG_SIGNATURE):
        return {}
    texts, at = {}, len(_PNG_SIGNATURE)
    while at + 8 <= len(head):
        size, kind = struct.unpack(">I4s", head[at:at + 8])
        if kind in (b"IDAT", b"IEND"):
            break
        if kind == b"tEXt":
            key, _, value = head[at + 8:at + 8 + size].partition(b"\0")
            texts[key.decode("latin-1")] = value.decode("latin-1")
        at += 12 + size
    return texts


def _is_ours(path: Path, beside_results: bool) -> bool:
    """Whether the existing file ``path`` (summary.md or summary.png) is a summary the batch wrote."""
    if path.suffix == ".md":
        with path.open("rb") as handle:
            return handle.readline(4096).decode("utf-8", "replace").rstrip("\r\n") == _HEADING
    texts = _png_text(path)
    if texts.get(_PNG_TITLE[0]) == _PNG_TITLE[1]:
        return True
    # versions before the title: a matplotlib figure, beside a results.csv of the batch's
    return beside_results and texts.get("Software", "").startswith("Matplotlib")


def summary_problem(out_dir: str | Path, beside_results: bool) -> Optional[str]:
    """Why the summary must not be written into ``out_dir``, or None: a summary.md or summary.png there that the
    batch did not write (see the module docstring), or a folder, link or special file of that name.

    Args:
        out_dir: OUTDIR (need not exist).
        beside_results: OUTDIR/results.csv is a results table of the batch's (then a summary.png without the
            title is an earlier version's).
    """
    for name in SUMMARY_FILES:
        path = Path(out_dir) / name
        if not path.exists() and not path.is_symlink():
            continue
        if path.is_symlink() or not path.is_file():
            return f"{path} is not a summary written by adregnet batch (it is a folder, link or special file)"
        try:
            ours = _is_ours(path, beside_results)
        except OSError as exc:
            return f"{path} is not a summary written by adregnet batch (it cannot be read: {exc.strerror or exc})"
        if not ours:
            what = (f"its first line is not {_HEADING!r}" if path.suffix == ".md" else
                    "it is not the batch's figure: no title of the batch's, and no batch results.csv beside it")
            return f"{path} is not a summary written by adregnet batch ({what})"
    return None


def write_summary(out_dir: str | Path, rows: Sequence[dict]) -> tuple[Path, Path]:
    """Writes ``summary.png`` and ``summary.md`` into ``out_dir`` (each replaced atomically, with the
    permissions the user's umask gives new files).

    Returns:
        (png path, markdown path).

    Raises:
        SummaryFileError: ``out_dir`` holds a summary.md or summary.png that the batch did not write
            (:func:`summary_problem`); nothing is written.
    """
    out = Path(out_dir)
    problem = summary_problem(out, beside_results=(out / "results.csv").is_file())
    if problem:
        raise SummaryFileError(problem)
    png, md = out / "summary.png", out / "summary.md"
    atomic_write(png, lambda p: _write_png(p, rows))
    atomic_write(md, lambda p: p.write_text(summary_markdown(rows) + "\n", encoding="utf-8"))
    return png, md
