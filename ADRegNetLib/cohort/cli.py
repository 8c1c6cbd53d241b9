r"""``adregnet batch``: the command-line front end of :func:`register_cohort`.

``adregnet batch PAIRS.csv -o OUTDIR`` or ``adregnet batch --atlas FIXED 'scans/*.nii.gz' -o OUTDIR``.
Exit codes: 0 every pair ok, 1 some pair failed (see OUTDIR/results.csv), 2 the cohort could not run
(bad PAIRS.csv, no Dask, no scheduler), 130 interrupted (results.csv holds the pairs finished so far).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Optional, Sequence

from ..cli.register_cmd import number_argument, output_path, whole_number_argument

__all__ = ["add_batch_arguments", "batch_main", "build_parser", "main"]


def add_batch_arguments(parser: argparse.ArgumentParser) -> None:
    """Adds the ``adregnet batch`` arguments to ``parser`` (the caller sets ``func``)."""
    from ..engine.settings import PRESETS, QUALITIES, SLIDING_CHOICES

    parser.add_argument("pairs", help="PAIRS.csv with the columns id,fixed,moving and optionally fixed_landmarks, "
                        "moving_landmarks, mask_fixed, labels, fixed_labels (paths relative to the CSV's folder); "
                        "with --atlas: a folder or a quoted glob of moving images")
    parser.add_argument("-o", "--output", required=True, type=output_path, help="output folder: OUTDIR/<id>/ per pair, results.csv, "
                        "summary.png, summary.md")
    parser.add_argument("--atlas", metavar="FIXED", help="register every moving image in PAIRS (a folder or glob) "
                        "to this fixed image")
    parser.add_argument("--atlas-mask", metavar="MASK", help="with --atlas: region of interest on the atlas")
    cluster = parser.add_argument_group("cluster")
    cluster.add_argument("--workers", type=whole_number_argument, default=1, help="local cluster: worker processes (default 1)")
    cluster.add_argument("--threads-per-worker", type=whole_number_argument, default=None,
                         help="local cluster: pairs one worker may run at once, memory permitting "
                         "(default: the machine's cores divided among the workers)")
    cluster.add_argument("--memory-per-worker", type=number_argument, metavar="GB",
                         help="local cluster: memory limit per worker (default: the machine's memory / workers)")
    cluster.add_argument("--scheduler", metavar="ADDRESS", help="use a running Dask scheduler (tcp://HOST:PORT) "
                         "instead of a local cluster; its workers need OUTDIR and the images on shared storage")
    cluster.add_argument("--threads", type=whole_number_argument, default=0,
                         help="CPU threads per pair (default: each host's cores shared among its task slots)")
    reg = parser.add_argument_group("registration (as adregnet register, for every pair)")
    reg.add_argument("--preset", default="auto", choices=PRESETS)
    reg.add_argument("--quality", default="balanced", choices=QUALITIES)
    reg.add_argument("--regularization", type=number_argument, default=1.0, help="> 1 smoother, < 1 more local detail")
    reg.add_argument("--device", default="auto", help="auto, cpu or cuda (on the workers)")
    reg.add_argument("--sliding", default="auto", choices=SLIDING_CHOICES,
                     help="let the lungs slide along the chest wall (as adregnet register)")
    reg.add_argument("--no-local-change", action="store_true",
                     help="do not look for a local change in still pairs (as adregnet register)")
    reg.add_argument("--landmarks-check-only", action="store_true",
                     help="the pairs' landmarks only measure TRE (an independent check); by default they also pull "
                          "each registration")
    parser.add_argument("--retry-failed", action="store_true", help="run again the pairs that failed in an earlier run "
                        "(pairs already complete are always skipped)")
    parser.add_argument("-q", "--quiet", action="store_true",
                        help="no progress bar (notes and errors are still printed)")


def batch_main(args: argparse.Namespace) -> int:
    """Runs ``adregnet batch`` with parsed arguments; returns the exit code (see the module docstring)."""
    from ..cli.register_cmd import CLIError, check_regularization, check_threads
    from ..engine.device import resolve_device
    from .pairs import PairsError, pairs_from_atlas
    from .run import BatchError, register_cohort

    def fail(message: str) -> int:
        print(f"adregnet batch: error: {message}", file=sys.stderr)
        return 2

    if args.atlas_mask and not args.atlas:
        return fail("--atlas-mask goes with --atlas; in a PAIRS.csv give the mask_fixed column instead")
    try:  # settings shared by every pair fail the cohort at once, as in ``adregnet batch`` (cli/main.py cmd_batch)
        check_regularization(args.regularization)
        check_threads(args.threads, zero="automatic")
        resolve_device(args.device)  # an unknown name; a missing GPU only warns, on each worker
    except (CLIError, ValueError) as exc:
        return fail(str(exc))
    out = Path(args.output)
    if out.exists() and not out.is_dir() or any(p.exists() and not p.is_dir() for p in out.parents):
        return fail(f"-o {args.output}: a file is in the way; give a folder for the results (it is made if missing)")
    try:
        pairs = pairs_from_atlas(args.atlas, args.pairs, args.atlas_mask) if args.atlas else args.pairs
        rows = register_cohort(pairs, args.output, preset=args.preset, quality=args.quality,
                               regularization=args.regularization, device=args.device, threads=args.threads,
                               landmarks_check_only=args.landmarks_check_only, sliding=args.sliding,
                               find_local_change=not args.no_local_change,
                               workers=args.workers, threads_per_worker=args.threads_per_worker,
                               memory_per_worker_gb=args.memory_per_worker, scheduler=args.scheduler,
                               retry_failed=args.retry_failed, progress=not args.quiet,
                               say=lambda text: print(text, file=sys.stderr))
    except (PairsError, BatchError, ValueError, FileNotFoundError) as exc:
        return fail(str(exc))
    except KeyboardInterrupt:
        print(f"adregnet batch: interrupted; {args.output}/results.csv holds the pairs finished so far, and rerunning "
              "the same command completes the rest", file=sys.stderr)
        return 130
    failed = [r for r in rows if r["status"] == "failed"]
    summary = (f", summary in {args.output}/summary.md and summary.png" if rows.summary_written else
               "; no summary written (see the note above)")
    print(f"{len(rows)} pairs: {len(rows) - len(failed)} ok, {len(failed)} failed; "
          f"results in {args.output}/results.csv{summary}")
    return 1 if failed else 0


def build_parser() -> argparse.ArgumentParser:
    """A stand-alone parser (``python -m ADRegNetLib.cohort``) with the ``adregnet batch`` arguments."""
    parser = argparse.ArgumentParser(prog="adregnet batch",
                                     description="register a cohort of pairs on a Dask cluster (local by default)")
    add_batch_arguments(parser)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    """``python -m ADRegNetLib.cohort ARGS``: the same as ``adregnet batch ARGS``."""
    return batch_main(build_parser().parse_args(argv))
