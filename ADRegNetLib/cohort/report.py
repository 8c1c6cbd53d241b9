r"""The cohort summary: TRE/Dice/folds/time distributions (summary.png) and the pairs to look at (summary.md)."""
from __future__ import annotations

import math
from pathlib import Path
from typing import Optional, Sequence

from .files import atomic_write

__all__ = ["write_summary", "summary_markdown", "PLOTTED"]

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
    lines = ["# Cohort registration summary", "", f"{len(rows)} pairs: {len(ok)} ok, {len(failed)} failed.", "",
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
    fig.savefig(path, format="png")


def write_summary(out_dir: str | Path, rows: Sequence[dict]) -> tuple[Path, Path]:
    """Writes ``summary.png`` and ``summary.md`` into ``out_dir`` (each replaced atomically, with the
    permissions the user's umask gives new files).

    Returns:
        (png path, markdown path).
    """
    out = Path(out_dir)
    png, md = out / "summary.png", out / "summary.md"
    atomic_write(png, lambda p: _write_png(p, rows))
    atomic_write(md, lambda p: p.write_text(summary_markdown(rows) + "\n", encoding="utf-8"))
    return png, md
