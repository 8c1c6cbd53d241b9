r"""``adregnet benchmark``: AD-RegNet and peer methods side by side on the same cases, one run.

Every method runs in its own child process (``python -m ADRegNetLib.benchmark.runner --run-one``),
which isolates thread settings (``--threads``, default 2) and lets the parent read that child's
peak resident memory (its VmHWM, see below). The child writes its field
(``disp.nii.gz``: ITK displacement on the fixed grid, LPS mm, fixed x -> moving x + u(x)) and its
timing; the parent measures every field with the same code (:func:`.cases.evaluate_field`):

* TRE mean / p95 (mm): fixed landmarks mapped through the field with trilinear interpolation,
  compared with the true moving landmarks at their continuous positions (no voxel snapping);
* Dice: mean over the case's labels, moving labels warped by nearest neighbour vs fixed labels;
* folds (%): fixed voxels with det J <= 0; std log J over the whole fixed grid;
* time (s): the registration call as timed inside the child (reading files excluded);
  ``wall_s`` in the CSV is the whole child process (imports, file I/O);
* peak RSS (MB): the child's resident-memory high-water mark (``VmHWM`` of /proc/self/status, read
  by the child at its end; ``os.wait4``'s ``ru_maxrss`` is not used because Linux folds the forking
  parent's peak into it at exec).

Methods: ``identity`` (no registration: the initial error), ``truth`` (the true field: the
ceiling the metrics allow, e.g. Dice < 1 from nearest-neighbour label resampling),
``adregnet-net-<q>`` (network only, ``instance_optimization=False``), ``adregnet-<q>`` (network +
instance optimization) for q in fast/balanced/best, and the peers of :mod:`.peers`.

The lead wires :func:`add_benchmark_arguments` / :func:`benchmark_main` into ``adregnet benchmark``.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Callable, Optional, Sequence

import numpy as np

from . import report
from .cases import (CASE_NAMES, DEFAULT_CASES, Case, build_cases, default_data_dir, evaluate_field,
                    interpolate_field, read_field, write_field, write_image, write_points_csv)

__all__ = ["add_benchmark_arguments", "benchmark_main", "run_method", "available_methods", "ADREGNET_METHODS",
           "BASELINES"]

QUALITIES = ("fast", "balanced", "best")
ADREGNET_METHODS = tuple([f"adregnet-net-{q}" for q in QUALITIES] + [f"adregnet-{q}" for q in QUALITIES])
BASELINES = ("identity", "truth")
DEFAULT_METHODS = ("identity", "truth", "adregnet-net-balanced", "adregnet-fast", "adregnet-balanced",
                   "adregnet-best", "sitk", "sitk-bspline", "ants", "elastix", "greedy", "convexadam")
#: Lighter peer settings for the tiny "quick" case (tests).
QUICK_SETTINGS = {"sitk": {"levels": 2, "iterations": (30, 15)},
                  "sitk-bspline": {"levels": 2, "affine_iterations": 60, "bspline_iterations": 30}}
_THREAD_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS",
                "NUMEXPR_NUM_THREADS")
_REPO_ROOT = Path(__file__).resolve().parents[2]


# --------------------------------------------------------------------------- arguments
def add_benchmark_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Add the ``adregnet benchmark`` options to ``parser`` (returns it)."""
    parser.add_argument("-o", "--output", required=True, type=Path,
                        help="folder for the cases, each method's field and results.md / results.csv")
    parser.add_argument("--cases", default=",".join(DEFAULT_CASES),
                        help=f"comma-separated cases among {', '.join(CASE_NAMES)}, or none (e.g. with --dirlab) "
                             "(default: %(default)s)")
    parser.add_argument("--methods", default=",".join(DEFAULT_METHODS),
                        help="comma-separated methods: identity, truth, " + ", ".join(ADREGNET_METHODS)
                        + ", sitk, sitk-bspline, ants, elastix, greedy, convexadam (default: all; unavailable peers are skipped "
                          "with a note)")
    parser.add_argument("--quick", action="store_true",
                        help="one small case (the T1 at 4 mm) and light peer settings: a smoke test")
    parser.add_argument("--dirlab", type=Path, default=None, metavar="DIR",
                        help="also run the ten DIR-Lab 4DCT cases found in DIR (CaseNPack folders), T00 -> T50")
    parser.add_argument("--dirlab-hu-offset", type=float, default=0.0,
                        help="add this to DIR-Lab voxels (-1024 for copies stored as HU + 1024)")
    parser.add_argument("--threads", type=int, default=2, help="threads per method (default: %(default)s)")
    parser.add_argument("--data-dir", type=Path, default=None,
                        help="the shared real data folder (default: <repo>/../shared/data)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the case generator (default: %(default)s)")
    parser.add_argument("--rebuild", action="store_true", help="rebuild the cases even when cached on disk")
    parser.add_argument("--reuse", action="store_true",
                        help="measure finished runs found in OUTPUT/runs (same case files) instead of running "
                             "those methods again")
    parser.add_argument("--timeout", type=float, default=3600.0,
                        help="seconds allowed per method and case (default: %(default)s)")
    parser.add_argument("--check-peers", action="store_true",
                        help="only check each peer's direction convention on a pure translation and print "
                             "the recovered shift against the truth")
    return parser


# --------------------------------------------------------------------------- availability
def _register_available() -> Optional[str]:
    """None when ``ADRegNetLib.engine.register`` can be imported, else why not."""
    if not (_REPO_ROOT / "ADRegNetLib" / "engine" / "register.py").is_file():
        return "ADRegNetLib/engine/register.py does not exist yet"
    try:
        from ..engine.register import register  # noqa: F401,PLC0415
    except Exception as exc:  # noqa: BLE001
        return f"register() cannot be imported ({type(exc).__name__}: {exc})"
    return None


def available_methods(methods: Sequence[str]) -> tuple[list[str], dict[str, str]]:
    """Split requested methods into (usable, {skipped: reason}).

    Raises:
        ValueError: an unknown method name.
    """
    from .peers import PEERS, available_peers  # noqa: PLC0415

    known = set(BASELINES) | set(ADREGNET_METHODS) | set(PEERS)
    unknown = [m for m in methods if m not in known]
    if unknown:
        raise ValueError(f"unknown method(s) {', '.join(unknown)}; expected some of {', '.join(sorted(known))}")
    peer_state = available_peers()
    reg_state = _register_available() if any(m in ADREGNET_METHODS for m in methods) else None
    usable, skipped = [], {}
    for m in methods:
        if m in ADREGNET_METHODS and reg_state:
            skipped[m] = reg_state
        elif m in PEERS and peer_state.get(m):
            skipped[m] = peer_state[m]
        else:
            usable.append(m)
    return usable, skipped


# --------------------------------------------------------------------------- the child process
def _child_env(threads: int) -> dict:
    env = dict(os.environ)
    for var in _THREAD_VARS:
        env[var] = str(threads)
    env["PYTHONPATH"] = str(_REPO_ROOT) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    return env


def _jsonable(obj):
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, (np.floating, np.integer)):
        return obj.item()
    if isinstance(obj, (str, int, float, bool)) or obj is None:
        return obj
    if isinstance(obj, np.ndarray) and obj.size <= 16:
        return obj.tolist()
    return repr(obj)[:200]


def _run_adregnet(case: Case, method: str, threads: int) -> tuple[np.ndarray, float, dict]:
    import SimpleITK as sitk  # noqa: PLC0415
    import torch  # noqa: PLC0415

    from ..engine.register import register  # noqa: PLC0415
    from ..io.image import from_sitk  # noqa: PLC0415

    torch.set_num_threads(max(threads, 1))
    quality = method.rsplit("-", 1)[1]
    network_only = method.startswith("adregnet-net-")
    fixed = from_sitk(sitk.ReadImage(str(case.fixed_path)), "fixed")
    moving = from_sitk(sitk.ReadImage(str(case.moving_path)), "moving")
    t0 = time.perf_counter()
    result = register(fixed, moving, preset=case.preset, quality=quality, device="cpu", seed=0,
                      instance_optimization=not network_only)
    seconds = time.perf_counter() - t0
    disp = np.asarray(result.disp_mm, dtype=np.float32)
    notes = {"tool": "AD-RegNet", "settings": f"preset={case.preset} quality={quality} "
             f"instance_optimization={not network_only}", "engine_metrics": _jsonable(result.metrics)}
    return disp, seconds, notes


def _rss_mb(field: str = "VmRSS") -> float:
    """This process's resident memory (``VmRSS``) or its peak (``VmHWM``) in MB, from /proc; NaN without /proc."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return float(line.split()[1]) / 1024.0
    except OSError:
        pass
    return float("nan")


def _run_one(case_dir: Path, method: str, work_dir: Path, threads: int) -> int:
    """Child: run one method on one case, write ``disp.nii.gz`` and ``run.json`` into ``work_dir``."""
    from .peers import PEERS, run_peer  # noqa: PLC0415

    case = Case.load(case_dir)
    work_dir.mkdir(parents=True, exist_ok=True)
    rss_before = _rss_mb()
    if method in ADREGNET_METHODS:
        disp, seconds, notes = _run_adregnet(case, method, threads)
    elif method in PEERS:
        settings = QUICK_SETTINGS.get(method, {}) if case.name == "quick" else {}
        res = run_peer(method, case.fixed_path, case.moving_path, work_dir / "tool", threads, **settings)
        disp, seconds, notes = res.disp_mm, res.seconds, res.notes
    else:
        raise ValueError(f"method {method!r} cannot run in a child process")
    write_field(work_dir / "disp.nii.gz", disp, case.fixed_geometry())
    (work_dir / "run.json").write_text(json.dumps({"method": method, "case": case.name, "seconds": seconds,
                                                   "rss_before_mb": rss_before, "peak_hwm_mb": _rss_mb("VmHWM"),
                                                   "notes": _jsonable(notes)}, indent=1))
    return 0


def _wait_child(proc: subprocess.Popen, timeout: float) -> tuple[int, float, bool]:
    """Wait for ``proc`` with ``os.wait4``: (exit code, peak RSS in MB, timed out)."""
    deadline = time.monotonic() + timeout
    timed_out = False
    while True:
        pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
        if pid == proc.pid:
            break
        if time.monotonic() > deadline and not timed_out:
            timed_out = True
            proc.send_signal(signal.SIGKILL)
        time.sleep(0.2)
    code = os.waitstatus_to_exitcode(status)
    proc.returncode = code  # so Popen does not wait for it again
    return code, usage.ru_maxrss / 1024.0, timed_out


def run_method(case: Case, method: str, work_root: Path, threads: int = 2, timeout: float = 3600.0,
               log: Callable[[str], None] = print, reuse: bool = False) -> dict:
    """Run one method on one case and measure it (see the module docstring).

    Returns:
        One result row: ``case``, ``method``, the measures of :func:`.cases.evaluate_field`,
        ``seconds``, ``wall_s``, ``peak_rss_mb``, ``status`` ("ok", "failed: ...", "timeout") and
        ``tool``/``settings`` notes. With ``reuse``, a finished run of the same method on the same
        case files (its field, timing and peak memory in ``work_root/<case>/<method>``) is measured
        again instead of being run again (``cached`` = True in the row).
    """
    row: dict = {"case": case.name, "method": method}
    if method in BASELINES:
        disp = case.true_disp() if method == "truth" else np.zeros_like(case.true_disp())
        row.update(evaluate_field(case, disp))
        row.update({"seconds": 0.0, "status": "ok", "tool": "reference"})
        return row
    work = Path(work_root) / case.name / method
    work.mkdir(parents=True, exist_ok=True)
    if reuse and _cached(work, case):
        return _measure(case, work, row, cached=True)
    for stale in ("disp.nii.gz", "run.json"):
        (work / stale).unlink(missing_ok=True)
    cmd = [sys.executable, "-m", "ADRegNetLib.benchmark.runner", "--run-one", "--case", str(case.directory),
           "--method", method, "--work", str(work), "--threads", str(threads)]
    t0 = time.perf_counter()
    with open(work / "log.txt", "w") as log_fh:
        proc = subprocess.Popen(cmd, stdout=log_fh, stderr=subprocess.STDOUT, env=_child_env(threads),
                                cwd=str(_REPO_ROOT))
        code, peak_mb, timed_out = _wait_child(proc, timeout)
    row["wall_s"] = time.perf_counter() - t0
    row["peak_rss_mb"] = peak_mb
    if timed_out:
        row["status"] = f"timeout after {timeout:.0f} s"
        return row
    if code != 0 or not (work / "disp.nii.gz").is_file():
        tail = (work / "log.txt").read_text(errors="replace").strip().splitlines()[-1:] or ["(no output)"]
        row["status"] = f"failed (exit {code}): {tail[0][:160]}"
        return row
    info = json.loads((work / "run.json").read_text())
    # The child's own high-water mark since exec (VmHWM). wait4's ru_maxrss is kept only as a fallback:
    # Linux folds the forking parent's peak into it at exec, so it reports the parent's size.
    peak = info.get("peak_hwm_mb")
    info.update({"wall_s": row["wall_s"], "peak_rss_mb": peak if peak is not None and np.isfinite(peak) else peak_mb})
    (work / "run.json").write_text(json.dumps(info, indent=1))
    return _measure(case, work, row)


def _cached(work: Path, case: Case) -> bool:
    """A finished run of this method on this very case (newer than the case's files) is on disk."""
    run_json, disp = work / "run.json", work / "disp.nii.gz"
    if not (run_json.is_file() and disp.is_file()):
        return False
    info = json.loads(run_json.read_text())
    return ("peak_rss_mb" in info or "peak_hwm_mb" in info) and run_json.stat().st_mtime > (case.directory / "case.json").stat().st_mtime


def _measure(case: Case, work: Path, row: dict, cached: bool = False) -> dict:
    info = json.loads((work / "run.json").read_text())
    disp, geom = read_field(work / "disp.nii.gz")
    if not geom.allclose(case.fixed_geometry(), atol=1e-3):
        row["status"] = "failed: the field is not on the fixed grid"
        return row
    row.update(evaluate_field(case, disp))
    row["seconds"] = info["seconds"]
    row["wall_s"] = info.get("wall_s", row.get("wall_s"))
    row["peak_rss_mb"] = info.get("peak_rss_mb", info.get("peak_hwm_mb", row.get("peak_rss_mb")))
    row["harness_rss_mb"] = info.get("rss_before_mb")  # the child's memory before the method started
    row["status"] = "ok"
    row["cached"] = cached
    row["tool"] = info["notes"].get("tool", "")
    row["settings"] = info["notes"].get("settings", "")
    return row


# --------------------------------------------------------------------------- DIR-Lab
def _prepare_dirlab(root: Path, out_dir: Path, hu_offset: float, log: Callable[[str], None]) -> list[Case]:
    """Write each DIR-Lab case found under ``root`` as a benchmark case folder (T00 fixed, T50 moving)."""
    from ..io.dirlab import load_dirlab_case  # noqa: PLC0415 - lazily: only with --dirlab
    from ..io.image import ImageError  # noqa: PLC0415

    cases = []
    for n in range(1, 11):
        try:
            dl = load_dirlab_case(root, n, hu_offset=hu_offset)
        except (ImageError, ValueError, FileNotFoundError) as exc:
            log(f"[benchmark] DIR-Lab case {n}: skipped ({exc})")
            continue
        name = f"dirlab{n:02d}"
        folder = out_dir / name
        folder.mkdir(parents=True, exist_ok=True)
        fixed, moving = dl.images["T00"], dl.images["T50"]
        write_image(folder / "fixed.nii.gz", fixed.array.astype(np.float32), fixed.geometry)
        write_image(folder / "moving.nii.gz", moving.array.astype(np.float32), moving.geometry)
        write_points_csv(folder / "fixed_landmarks.csv", dl.landmarks["T00"])
        write_points_csv(folder / "moving_landmarks.csv", dl.landmarks["T50"])
        (folder / "case.json").write_text(json.dumps({"name": name, "preset": "lung-ct", "label_ids": [],
                                                      "dirlab_case": n, "description": f"DIR-Lab case {n}"}))
        cases.append(Case.load(folder))
    return cases


def _run_dirlab(args, methods: list[str], log: Callable[[str], None]) -> list[dict]:
    """Run ``methods`` on every DIR-Lab case under ``args.dirlab``; one row per (case, method)."""
    cases = _prepare_dirlab(args.dirlab, args.output / "dirlab", args.dirlab_hu_offset, log)
    rows = []
    for case in cases:
        f_lm, m_lm = case.fixed_landmarks(), case.moving_landmarks()
        before = np.linalg.norm(f_lm - m_lm, axis=1)
        for method in methods:
            if method == "truth":  # no true field for real 4DCT pairs
                continue
            if method == "identity":
                row = {"method": method, "status": "ok", "after_mean": float(before.mean()),
                       "after_std": float(before.std()), "seconds": 0.0}
            else:
                row = _run_dirlab_method(case, method, args, f_lm, m_lm)
            row.update({"case": case.info["dirlab_case"], "before_mean": float(before.mean()),
                        "before_std": float(before.std())})
            rows.append(row)
            log(f"[benchmark] DIR-Lab {case.info['dirlab_case']} {method}: {row.get('status')} "
                f"TRE {row.get('after_mean', float('nan')):.2f} mm")
    return rows


def _run_dirlab_method(case: Case, method: str, args, f_lm: np.ndarray, m_lm: np.ndarray) -> dict:
    work = args.output / "runs" / case.name / method
    work.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "ADRegNetLib.benchmark.runner", "--run-one", "--case", str(case.directory),
           "--method", method, "--work", str(work), "--threads", str(args.threads)]
    with open(work / "log.txt", "w") as fh:
        proc = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, env=_child_env(args.threads),
                                cwd=str(_REPO_ROOT))
        code, peak_mb, timed_out = _wait_child(proc, args.timeout)
    row = {"method": method, "peak_rss_mb": peak_mb}
    if timed_out or code != 0:
        row["status"] = "timeout" if timed_out else f"failed (exit {code})"
        return row
    disp, geom = read_field(work / "disp.nii.gz")
    err = np.linalg.norm(f_lm + interpolate_field(disp, geom, f_lm) - m_lm, axis=1)
    info = json.loads((work / "run.json").read_text())
    row.update({"status": "ok", "after_mean": float(err.mean()), "after_std": float(err.std()),
                "seconds": info["seconds"]})
    return row


# --------------------------------------------------------------------------- main
def _check_peers(args, log: Callable[[str], None]) -> int:
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


def benchmark_main(args: argparse.Namespace, log: Callable[[str], None] = print) -> int:
    """Run the benchmark described by ``args`` (from :func:`add_benchmark_arguments`). Returns an exit code."""
    if args.check_peers:
        return _check_peers(args, log)
    names = ["quick"] if args.quick else [c.strip() for c in args.cases.split(",") if c.strip() not in ("", "none")]
    bad = [c for c in names if c not in CASE_NAMES]
    if bad:
        raise ValueError(f"unknown case(s) {', '.join(bad)}; expected some of {', '.join(CASE_NAMES)}")
    requested = [m.strip() for m in args.methods.split(",") if m.strip()]
    methods, skipped = available_methods(requested)
    for m, why in skipped.items():
        log(f"[benchmark] method {m} skipped: {why}")
    out = Path(args.output)
    out.mkdir(parents=True, exist_ok=True)
    data_dir = args.data_dir or default_data_dir()

    rows: list[dict] = []
    case_info: dict[str, str] = {}
    cases = build_cases(names, out / "cases", data_dir, args.seed, force=args.rebuild, log=log)
    preamble = _preamble(args, methods, skipped)
    for case in cases:
        i = case.info
        case_info[case.name] = (f"{i['description']}; fixed {i['fixed_size_xyz']} voxels at {i['fixed_spacing_mm']} mm; "
                                f"{i['landmarks']} landmarks, initial TRE {i['initial_tre_mean_mm']:.2f} mm; "
                                f"Dice over {len(case.label_ids)} labels")
        for method in methods:
            log(f"[benchmark] {case.name}: running {method} ...")
            try:
                row = run_method(case, method, out / "runs", args.threads, args.timeout, log, reuse=args.reuse)
            except Exception as exc:  # noqa: BLE001 - one failing method must not lose the others
                row = {"case": case.name, "method": method, "status": f"failed: {type(exc).__name__}: {exc}"}
                traceback.print_exc()
            rows.append(row)
            log(f"[benchmark] {case.name} {method}: {row.get('status')} TRE {row.get('tre_mean', float('nan')):.2f} mm, "
                f"Dice {row.get('dice', float('nan')):.3f}, {row.get('seconds', float('nan')):.1f} s")
            report.write_csv(out / "results.csv", rows)
            report.write_markdown(out / "results.md", rows, case_info, preamble)
    if rows:
        log("")
        log(report.format_table(rows, case_info))
    if args.dirlab is not None:
        dl_rows = _run_dirlab(args, methods, log)
        if dl_rows:
            table = report.format_dirlab_table(dl_rows, continuous=True)
            log(table)
            (out / "dirlab.md").write_text("```\n" + table + "\n```\n")
            report.write_csv(out / "dirlab.csv", dl_rows)
    log(f"[benchmark] results in {out / 'results.md'} and {out / 'results.csv'}")
    failed = [r for r in rows if r.get("status") != "ok"]
    return 1 if failed else 0


def _preamble(args, methods: list[str], skipped: dict[str, str]) -> list[str]:
    lines = ["# AD-RegNet benchmark", "",
             f"Run {time.strftime('%Y-%m-%d %H:%M')} on {platform.machine()} ({os.cpu_count()} CPUs visible), "
             f"{args.threads} threads per method, each method in its own child process; Python {platform.python_version()}.",
             "",
             "TRE: fixed landmarks mapped through each field by trilinear interpolation and compared, at their "
             "continuous positions (not snapped to voxels), with the true moving landmarks x + u(x). Dice: moving "
             "labels warped by nearest neighbour vs fixed labels, mean over the labels present. folds: % of fixed "
             "voxels with det J <= 0; std log J over the fixed grid. time: the registration call inside the child; "
             "peak RSS: the child's VmHWM (harness_rss_mb in the CSV: its memory before the method started). `identity` is the initial error, `truth` the true field (the ceiling "
             "of each metric).", ""]
    if skipped:
        lines.append("Skipped methods: " + "; ".join(f"{m} ({why})" for m, why in skipped.items()))
        lines.append("")
    return lines


def _child_main(argv: Sequence[str]) -> int:
    p = argparse.ArgumentParser(prog="python -m ADRegNetLib.benchmark.runner --run-one")
    p.add_argument("--run-one", action="store_true", required=True)
    p.add_argument("--case", type=Path, required=True)
    p.add_argument("--method", required=True)
    p.add_argument("--work", type=Path, required=True)
    p.add_argument("--threads", type=int, default=2)
    a = p.parse_args(argv)
    return _run_one(a.case, a.method, a.work, a.threads)


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Entry point of ``python -m ADRegNetLib.benchmark.runner`` (the benchmark, or one child run)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if "--run-one" in argv:
        return _child_main(argv)
    parser = add_benchmark_arguments(argparse.ArgumentParser(prog="adregnet benchmark",
                                                             description=__doc__.split("\n\n")[0]))
    return benchmark_main(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
