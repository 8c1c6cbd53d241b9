r"""``python -m benchmarks``: AD-RegNet and peer methods side by side on the same cases, one run.

Run it from a source checkout (the repository root), with the engine and
``benchmarks/requirements.txt`` installed::

    python -m benchmarks -o benchmark-output [--cases brain,lung] [--methods identity,truth,adregnet-balanced]

It builds the cases (:mod:`.cases`) under ``OUTPUT/cases``, runs every method in its own child
process (:mod:`.runner`) under ``OUTPUT/runs`` and writes ``results.md`` and ``results.csv``
(:mod:`.report`) after each method, so a stopped run keeps what it measured.
"""
from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Callable, Optional, Sequence

import numpy as np

from ADRegNetLib.numbers import argument_type

from . import report
from .cases import CASE_NAMES, DEFAULT_CASES, build_cases, default_data_dir
from .methods import ADREGNET_METHODS, BASELINES, DEFAULT_METHODS, available_methods

__all__ = ["add_benchmark_arguments", "benchmark_main", "build_child_parser", "main"]


def add_benchmark_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Add the benchmark's options to ``parser`` (returns it); numbers are read strictly (``--threads 1_0`` was 10)."""
    from .peers import PEERS  # noqa: PLC0415

    parser.add_argument("-o", "--output", required=True, type=Path,
                        help="folder for the cases, each method's field and results.md / results.csv")
    parser.add_argument("--cases", default=",".join(DEFAULT_CASES),
                        help=f"comma-separated cases among {', '.join(CASE_NAMES)}, or none (e.g. with --dirlab) "
                             "(default: %(default)s)")
    parser.add_argument("--methods", default=",".join(DEFAULT_METHODS),
                        help="comma-separated methods: " + ", ".join(BASELINES + ADREGNET_METHODS + tuple(PEERS))
                        + " (adregnet-* methods also with -reg<R> appended: regularization R; default: %(default)s; "
                        "unavailable peers are skipped with a note)")
    parser.add_argument("--quick", action="store_true",
                        help="one small case (the T1 at 4 mm) and light peer settings: a smoke test")
    parser.add_argument("--dirlab", type=Path, default=None, metavar="DIR",
                        help="also run the ten DIR-Lab 4DCT cases found in DIR (CaseNPack folders), T00 -> T50")
    parser.add_argument("--dirlab-hu-offset", type=argument_type(example="-1024"), default=0.0,
                        help="add this to DIR-Lab voxels (-1024 for copies stored as HU + 1024)")
    parser.add_argument("--threads", type=argument_type(whole=True, example="2", positive=True), default=2,
                        help="threads per method (default: %(default)s)")
    parser.add_argument("--data-dir", type=Path, default=None,
                        help="the shared real data folder (default: <repo>/../shared/data)")
    parser.add_argument("--seed", type=argument_type(whole=True, example="0", non_negative=True), default=0,
                        help="seed of the case generator (default: %(default)s)")
    parser.add_argument("--rebuild", action="store_true", help="rebuild the cases even when cached on disk")
    parser.add_argument("--reuse", action="store_true",
                        help="measure finished runs found in OUTPUT/runs (same case files) instead of running "
                             "those methods again")
    parser.add_argument("--timeout", type=argument_type(example="3600", positive=True), default=3600.0,
                        help="seconds allowed per method and case (default: %(default)s)")
    parser.add_argument("--check-peers", action="store_true",
                        help="only check each peer's direction convention on a pure translation and print "
                             "the recovered shift against the truth")
    return parser


def _check_peers(args: argparse.Namespace, log: Callable[[str], None]) -> int:
    from .peers import PEERS, available_peers, check_peer  # noqa: PLC0415

    state = available_peers()
    failures = 0
    with tempfile.TemporaryDirectory(prefix="adregnet-peercheck-") as tmp:
        for name in PEERS:
            if state[name]:
                log(f"{name:11s} skipped: {state[name]}")
                continue
            try:
                r = check_peer(name, Path(tmp), threads=args.threads)
            except Exception as exc:  # noqa: BLE001 - report and go on to the next peer
                failures += 1
                log(f"{name:11s} FAILED: {type(exc).__name__}: {exc}")
                continue
            truth, rec = np.asarray(r["truth"]), np.asarray(r["recovered"])
            # The sign decides the convention (a flipped one recovers about -truth); the error
            # says how well the tool registers this blob phantom.
            ok = float(rec @ truth) > 0.5 * float(truth @ truth)
            failures += 0 if ok else 1
            log(f"{name:11s} truth {np.round(truth, 2).tolist()} recovered {np.round(rec, 2).tolist()} "
                f"|error| {r['error_mm']:.2f} mm: {'direction OK' if ok else 'direction WRONG'} "
                f"({r['seconds']:.1f} s)")
    return 1 if failures else 0


def _preamble(args: argparse.Namespace, skipped: dict[str, str]) -> list[str]:
    lines = ["# AD-RegNet benchmark", "",
             f"Run {time.strftime('%Y-%m-%d %H:%M')} on {platform.machine()} ({os.cpu_count()} CPUs visible), "
             f"{args.threads} threads per method, each method in its own child process; "
             f"Python {platform.python_version()}.",
             "",
             "TRE: fixed landmarks mapped through each field by trilinear interpolation and compared, at their "
             "continuous positions (not snapped to voxels), with the true moving landmarks x + u(x). Dice: moving "
             "labels warped by nearest neighbour vs fixed labels, mean over the labels present. folds: % of fixed "
             "voxels with det J <= 0; std log J over the fixed grid. time: the registration call inside the child; "
             "peak RSS: the child's VmHWM (harness_rss_mb in the CSV: its memory before the method started). "
             "preset: the preset AD-RegNet ran with (the choice of `auto`; its reason in the CSV). `identity` is "
             "the initial error, `truth` the true field (the ceiling of each metric).", ""]
    if skipped:
        lines.append("Skipped methods: " + "; ".join(f"{m} ({why})" for m, why in skipped.items()))
        lines.append("")
    return lines


def _case_line(case) -> str:
    i = case.info
    return (f"{i['description']}; fixed {i['fixed_size_xyz']} voxels at {i['fixed_spacing_mm']} mm; "
            f"{i['landmarks']} landmarks, initial TRE {i['initial_tre_mean_mm']:.2f} mm; "
            f"Dice over {len(case.label_ids)} labels")


def benchmark_main(args: argparse.Namespace, log: Callable[[str], None] = print) -> int:
    """Run the benchmark described by ``args`` (from :func:`add_benchmark_arguments`).

    Returns:
        0 when every method ran, 1 when one failed or timed out (its row says why).

    Raises:
        ValueError: an unknown case or method name.
    """
    from .dirlab import run_dirlab  # noqa: PLC0415
    from .runner import run_method  # noqa: PLC0415

    if args.check_peers:
        return _check_peers(args, log)
    names = ["quick"] if args.quick else [c.strip() for c in args.cases.split(",") if c.strip() not in ("", "none")]
    bad = [c for c in names if c not in CASE_NAMES]
    if bad:
        raise ValueError(f"unknown case(s) {', '.join(bad)}; expected some of {', '.join(CASE_NAMES)}")
    methods, skipped = available_methods([m.strip() for m in args.methods.split(",") if m.strip()])
    for m, why in skipped.items():
        log(f"[benchmark] method {m} skipped: {why}")
    out = Path(args.output)
    out.mkdir(parents=True, exist_ok=True)
    rows: list[dict] = []
    case_info: dict[str, str] = {}
    cases = build_cases(names, out / "cases", args.data_dir or default_data_dir(), args.seed, force=args.rebuild,
                        log=log)
    preamble = _preamble(args, skipped)
    for case in cases:
        case_info[case.name] = _case_line(case)
        for method in methods:
            log(f"[benchmark] {case.name}: running {method} ...")
            try:
                row = run_method(case, method, out / "runs", args.threads, args.timeout, log, reuse=args.reuse)
            except Exception as exc:  # noqa: BLE001 - one failing method must not lose the others
                row = {"case": case.name, "method": method, "status": f"failed: {type(exc).__name__}: {exc}"}
                traceback.print_exc()
            rows.append(row)
            log(f"[benchmark] {case.name} {method}: {row.get('status')} "
                f"TRE {row.get('tre_mean', float('nan')):.2f} mm, "
                f"Dice {row.get('dice', float('nan')):.3f}, {row.get('seconds', float('nan')):.1f} s"
                + (f", preset {row['preset']}" if row.get("preset") else ""))
            report.write_csv(out / "results.csv", rows)
            report.write_markdown(out / "results.md", rows, case_info, preamble)
    if rows:
        log("")
        log(report.format_table(rows, case_info))
    if args.dirlab is not None:
        dl_rows = run_dirlab(args, methods, log)
        if dl_rows:
            table = report.format_dirlab_table(dl_rows, continuous=True)
            log(table)
            (out / "dirlab.md").write_text("```\n" + table + "\n```\n")
            report.write_csv(out / "dirlab.csv", dl_rows)
    log(f"[benchmark] results in {out / 'results.md'} and {out / 'results.csv'}")
    return 1 if any(r.get("status") != "ok" for r in rows) else 0


def build_child_parser() -> argparse.ArgumentParser:
    """The options of one child run (``python -m benchmarks --run-one ...``, started by :mod:`.runner`)."""
    p = argparse.ArgumentParser(prog="python -m benchmarks --run-one")
    p.add_argument("--run-one", action="store_true", required=True)
    p.add_argument("--case", type=Path, required=True)
    p.add_argument("--method", required=True)
    p.add_argument("--work", type=Path, required=True)
    p.add_argument("--threads", type=argument_type(whole=True, example="2", positive=True), default=2)
    return p


def _child_main(argv: Sequence[str]) -> int:
    from .runner import run_one  # noqa: PLC0415

    a = build_child_parser().parse_args(argv)
    return run_one(a.case, a.method, a.work, a.threads)


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Entry point of ``python -m benchmarks`` (the benchmark, or one child run with ``--run-one``)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if "--run-one" in argv:
        return _child_main(argv)
    parser = add_benchmark_arguments(argparse.ArgumentParser(
        prog="python -m benchmarks", description="AD-RegNet and peer methods on cases with known deformations"))
    return benchmark_main(parser.parse_args(argv))
