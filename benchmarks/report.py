r"""Tables of benchmark results: plain text for the terminal, Markdown and CSV files, DIR-Lab style.

A result row is a dict with ``case``, ``method`` and the keys of :data:`COLUMNS` (missing or NaN
values print as "-"); the CSV keeps every key of every row.
"""
from __future__ import annotations

import csv
import math
from pathlib import Path
from typing import Iterable, Sequence

__all__ = ["COLUMNS", "format_table", "write_csv", "write_markdown", "format_dirlab_table"]

#: (key, header, format) of the columns, in order.
COLUMNS = (
    ("method", "method", "{}"),
    ("preset", "preset", "{}"),
    ("tre_mean", "TRE mean (mm)", "{:.2f}"),
    ("tre_p95", "TRE p95 (mm)", "{:.2f}"),
    ("dice", "Dice", "{:.3f}"),
    ("folds_pct", "folds (%)", "{:.3f}"),
    ("sdlogj", "std log J", "{:.3f}"),
    ("seconds", "time (s)", "{:.1f}"),
    ("peak_rss_mb", "peak RSS (MB)", "{:.0f}"),
    ("status", "status", "{}"),
)


def _cell(row: dict, key: str, fmt: str) -> str:
    value = row.get(key)
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    try:
        return fmt.format(value)
    except (ValueError, TypeError):
        return str(value)


def _rows_by_case(rows: Sequence[dict]) -> dict[str, list[dict]]:
    out: dict[str, list[dict]] = {}
    for r in rows:
        out.setdefault(r["case"], []).append(r)
    return out


def format_table(rows: Sequence[dict], case_info: dict | None = None) -> str:
    """Fixed-width text table, one block per case.

    Args:
        rows: result rows (``case``, ``method`` and the keys of :data:`COLUMNS`).
        case_info: optional {case: one-line description} printed above each block.
    """
    lines = []
    for case, case_rows in _rows_by_case(rows).items():
        header = [h for _, h, _ in COLUMNS]
        body = [[_cell(r, k, f) for k, _, f in COLUMNS] for r in case_rows]
        widths = [max(len(h), *(len(b[i]) for b in body)) for i, h in enumerate(header)]
        lines.append(f"== {case}" + (f": {case_info[case]}" if case_info and case in case_info else ""))
        lines.append("  ".join(h.ljust(w) for h, w in zip(header, widths)))
        lines.append("  ".join("-" * w for w in widths))
        lines.extend("  ".join(c.ljust(w) for c, w in zip(b, widths)) for b in body)
        lines.append("")
    return "\n".join(lines)


def write_markdown(path: str | Path, rows: Sequence[dict], case_info: dict | None = None,
                   preamble: Iterable[str] = ()) -> None:
    """Write ``results.md``: a preamble (how it was measured) and one Markdown table per case."""
    out = list(preamble)
    for case, case_rows in _rows_by_case(rows).items():
        out.append(f"### {case}")
        if case_info and case in case_info:
            out.append("")
            out.append(case_info[case])
        out.append("")
        out.append("| " + " | ".join(h for _, h, _ in COLUMNS) + " |")
        out.append("|" + "|".join("---" for _ in COLUMNS) + "|")
        for r in case_rows:
            out.append("| " + " | ".join(_cell(r, k, f) for k, _, f in COLUMNS) + " |")
        out.append("")
    Path(path).write_text("\n".join(out) + "\n")


def write_csv(path: str | Path, rows: Sequence[dict]) -> None:
    """Write every row with every key (union of keys, stable order) to ``results.csv``."""
    keys: list[str] = ["case"]
    for r in rows:
        for k in r:
            if k not in keys:
                keys.append(k)
    with open(path, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=keys)
        w.writeheader()
        for r in rows:
            w.writerow({k: r.get(k, "") for k in keys})


def format_dirlab_table(rows: Sequence[dict], continuous: bool = True) -> str:
    """DIR-Lab style table: per case, TRE mean (std) in mm before and after, as papers print it.

    Args:
        rows: one dict per (case, method) with ``case`` (1..10), ``method``, ``before_mean``,
            ``before_std``, ``after_mean``, ``after_std``.
        continuous: True when the mapped landmarks were compared at their continuous positions
            (no snapping to voxel centres); stated in the header line.
    """
    methods: list[str] = []
    for r in rows:
        if r["method"] not in methods:
            methods.append(r["method"])
    by_case: dict[int, dict[str, dict]] = {}
    for r in rows:
        by_case.setdefault(int(r["case"]), {})[r["method"]] = r
    mode = ("continuous (mapped landmarks not snapped to voxel centres)" if continuous
            else "snapped to the nearest voxel centre")
    header = ["case", "initial"] + methods
    lines = [f"DIR-Lab 4DCT, T00 -> T50, 300 landmarks, TRE mean (std) mm, {mode}",
             " | ".join(header)]
    befores, afters = [], {m: [] for m in methods}
    for case in sorted(by_case):
        per = by_case[case]
        any_row = next(iter(per.values()))
        befores.append(any_row["before_mean"])
        cells = [f"{case}", f"{any_row['before_mean']:.2f} ({any_row['before_std']:.2f})"]
        for m in methods:
            r = per.get(m)
            if r is None or r.get("after_mean") is None:
                cells.append("-")
            else:
                afters[m].append(r["after_mean"])
                cells.append(f"{r['after_mean']:.2f} ({r['after_std']:.2f})")
        lines.append(" | ".join(cells))
    mean_cells = ["mean", f"{sum(befores) / len(befores):.2f}" if befores else "-"]
    mean_cells += [f"{sum(v) / len(v):.2f}" if v else "-" for v in afters.values()]
    lines.append(" | ".join(mean_cells))
    return "\n".join(lines)
