r"""``register_cohort``: every pair of a cohort on a Dask cluster, resumable, memory-aware.

The client (this process) plans the run (which pairs are already complete), submits one task per
remaining pair with its estimated memory as a Dask resource, and merges each finished pair's row into
OUTDIR/results.csv (under a lock: other runs may write into the same OUTDIR at the same time). The
workers do the registrations (``worker.run_pair``) and publish each pair's folder atomically, so
whatever stops the run (a killed worker, a killed client, a power cut), every OUTDIR/<id>/ that exists
is complete, and rerunning the same command registers only what is missing.

Each run stages its pairs in its own folder, OUTDIR/.partial/run-<token>/, marked live by a lock the
client holds for the whole run (``run-<token>.lock``): a run that starts removes only what dead runs
left there, never the pairs another live run is writing.

Dask is imported only here, when a cohort actually runs (``pip install "adregnet[batch]"``).
"""
from __future__ import annotations

import contextlib
import logging
import os
import sys
import uuid
import warnings
from pathlib import Path
from typing import Callable, Optional, Sequence

from ..cli.outputs import write_problem
from ..engine.settings import PRESETS, QUALITIES
from .files import LockTimeout
from .memory import WORKER_BASELINE_GB, estimate_pair_memory_gb
from .outdir import make_output_folder, remove_what_a_refused_run_made
from .pairs import Pair, check_pairs, read_pairs_csv
from .report import SummaryFileError, summary_problem, write_summary
from .staging import clean_partial, staging
from .results import (CohortRows, ResultsFileError, failed_row, is_complete, merge_results_csv, other_pairs_result,
                      read_metrics, read_results_csv, row_for_complete_pair)
from .worker import PARTIAL_DIR, PairOptions, not_a_result, pair_inputs, run_pair

__all__ = ["register_cohort", "BatchError", "CohortRows", "CohortWarning", "MEMORY_RESOURCE"]

#: the Dask worker resource (GB) that pairs reserve while they run
MEMORY_RESOURCE = "MEMORY"
_INSTALL_HINT = 'pip install "dask[distributed]" (or pip install "adregnet[batch]")'


class BatchError(RuntimeError):
    """The cohort cannot run at all (no Dask, no scheduler, no worker, OUTDIR in the way or its results.csv
    not AD-RegNet's)."""


class CohortWarning(UserWarning):
    """A note the caller must see although it asked for none (``progress=False``, no ``say``): the summary was not
    written."""


def _import_distributed():
    try:
        import distributed
    except ImportError as exc:
        raise BatchError("adregnet batch needs Dask's distributed scheduler, which is not installed: "
                         + _INSTALL_HINT) from exc
    return distributed


def _plan(pairs: Sequence[Pair], out: Path, previous: dict[str, dict], retry_failed: bool
          ) -> tuple[dict[str, dict], list[Pair], int, int]:
    """Rows of the pairs that need no work now, and the pairs to run.

    Returns:
        (rows by id, pairs to run, number skipped as complete, number of earlier failures kept).
    """
    rows: dict[str, dict] = {}
    todo: list[Pair] = []
    complete = failed = 0
    for pair in pairs:
        earlier = previous.get(pair.id)
        if is_complete(out / pair.id):
            metrics = read_metrics(out / pair.id)  # parsed once: the check below and the pair's row
            if metrics is None and (earlier is None or earlier.get("status") != "ok"):
                raise BatchError(f"{out / pair.id / 'metrics.json'} cannot be read as the metrics of adregnet "
                                 "register (not a JSON object); nothing was run and nothing is replaced: move that "
                                 "folder away (or delete it to register the pair again), or choose another output "
                                 "folder (-o)")
            other = other_pairs_result(pair, out / pair.id, metrics or {})
            if other:
                raise BatchError(f"{other}; nothing was run and nothing is replaced: give this pair another id, or "
                                 "choose another output folder (-o)")
            rows[pair.id] = row_for_complete_pair(pair, out / pair.id, earlier, metrics=metrics)
            complete += 1
        elif earlier is not None and earlier.get("status") == "failed" and not retry_failed:
            rows[pair.id] = earlier
            failed += 1
        else:
            todo.append(pair)
    return rows, todo, complete, failed


def _local_client(distributed, workers: int, threads_per_worker: Optional[int],
                  memory_per_worker_gb: Optional[float]):
    if threads_per_worker is None:
        threads_per_worker = max(1, (os.cpu_count() or 1) // max(workers, 1))
    if workers < 1 or threads_per_worker < 1:
        raise BatchError(f"--workers and --threads-per-worker must be at least 1, got {workers} and "
                         f"{threads_per_worker}")
    if memory_per_worker_gb is None:
        import psutil

        memory_per_worker_gb = psutil.virtual_memory().total / 1e9 / workers
    if memory_per_worker_gb <= WORKER_BASELINE_GB:
        raise BatchError(f"--memory-per-worker {memory_per_worker_gb:g} GB leaves nothing for registrations (a worker "
                         f"alone takes about {WORKER_BASELINE_GB} GB); give more memory or fewer workers")
    cluster = distributed.LocalCluster(
        n_workers=workers, threads_per_worker=threads_per_worker, processes=True,
        memory_limit=int(memory_per_worker_gb * 1e9),
        resources={MEMORY_RESOURCE: round(memory_per_worker_gb - WORKER_BASELINE_GB, 2)},
        dashboard_address=None, silence_logs=logging.ERROR)
    return distributed.Client(cluster), cluster


def _remote_client(distributed, address: str, wait_s: float):
    try:
        client = distributed.Client(address, timeout=f"{max(wait_s, 1):.0f}s")
    except (OSError, TimeoutError) as exc:
        raise BatchError(f"cannot reach the Dask scheduler at {address} ({exc}); start one with `dask scheduler` "
                         "and give its address (tcp://HOST:PORT)") from exc
    try:
        client.wait_for_workers(1, timeout=wait_s)
    except TimeoutError as exc:
        client.close()
        raise BatchError(f"no worker joined the scheduler at {address} within {wait_s:.0f} s; start workers with "
                         f"`dask worker {address} --resources {MEMORY_RESOURCE}=<GB>`") from exc
    return client


def _workers(client) -> dict:
    """Every connected worker's info by address (newer Dask lists only 5 unless asked for all)."""
    try:
        return client.scheduler_info(n_workers=-1)["workers"]
    except TypeError:  # Dask before 2025: no n_workers argument, all workers listed
        return client.scheduler_info()["workers"]


def _workers_memory_gb(client) -> list[float]:
    """The MEMORY resource of each connected worker (empty when none declares it)."""
    workers = _workers(client).values()
    return [float(w["resources"][MEMORY_RESOURCE]) for w in workers if MEMORY_RESOURCE in (w.get("resources") or {})]


def _threads_per_pair(client) -> int:
    """CPU threads for one pair: on each host, its cores shared by all task slots there (the fewest wins)."""
    workers = _workers(client)
    cores = client.run(os.cpu_count)
    slots: dict[str, int] = {}
    host_cores: dict[str, int] = {}
    for address, info in workers.items():
        host = info.get("host", address)
        slots[host] = slots.get(host, 0) + int(info.get("nthreads", 1))
        host_cores[host] = int(cores.get(address) or 1)
    return max(1, min(host_cores[h] // max(slots[h], 1) for h in slots)) if slots else 1


def _killed_message(exc: BaseException, estimate: Optional[float]) -> str:
    reserved = f" (it reserved {estimate:.2f} GB)" if estimate is not None else ""
    return (f"the worker running this pair died repeatedly, killed or out of memory{reserved}: {exc}; "
            "rerun with --retry-failed, with more memory per worker or fewer pairs per worker")


def register_cohort(pairs: Sequence[Pair] | str | Path, out_dir: str | Path, *, preset: str = "auto",
                    quality: str = "balanced", regularization: float = 1.0, device: str = "auto", threads: int = 0,
                    landmarks_check_only: bool = False, sliding: str = "auto", find_local_change: bool = True,
                    workers: int = 1, threads_per_worker: Optional[int] = None, memory_per_worker_gb: Optional[float] = None,
                    scheduler: Optional[str] = None, client=None, retry_failed: bool = False,
                    progress: bool = True, wait_for_workers_s: float = 60.0,
                    say: Optional[Callable[[str], None]] = None) -> CohortRows:
    """Registers every pair of a cohort into ``out_dir/<id>/``; returns the results table.

    Each pair writes exactly what ``adregnet register`` writes. ``out_dir/results.csv`` (one row per
    pair, see ``results.RESULT_COLUMNS``) is rewritten atomically as pairs finish (merged under a lock:
    runs into one folder at the same time keep each other's rows), and
    ``summary.png``/``summary.md`` are written at the end; both keep the rows of pairs that other PAIRS.csv
    files ran into the same folder (the return value and the counts are this run's pairs only). Pairs already complete (their folder holds
    metrics.json) are skipped; pairs that failed in an earlier run are skipped too unless
    ``retry_failed``. A failing pair never stops the others: its row has status "failed" and the error.

    Args:
        pairs: a PAIRS.csv path or a list of :class:`Pair`.
        out_dir: the output folder; on a cluster, a path every worker can write to (shared storage).
        preset, quality, regularization, device: as for ``adregnet register`` (same for every pair).
        landmarks_check_only: the pairs' landmarks only measure TRE (``--landmarks-check-only``): the
            cohort's TRE is then an independent check of the registrations.
        sliding: "auto", "on" or "off": the lungs sliding along the chest wall (``--sliding``).
        find_local_change: look for a local change in still pairs (False: ``--no-local-change``).
        threads: CPU threads per pair; 0 = each host's cores shared among its task slots.
        workers, threads_per_worker: the local cluster started when neither ``scheduler`` nor
            ``client`` is given: ``workers`` processes, each running up to ``threads_per_worker``
            pairs at once (fewer when their memory does not fit); default: the machine's cores
            divided among the workers, so each pair gets one thread (measured: 2 pairs at once on
            2 cores gave 2.2x the throughput of 1 pair on 2 threads, on a loaded machine).
        memory_per_worker_gb: memory limit of each local worker (default: the machine's memory
            divided among the workers); pairs reserve their estimate from it.
        scheduler: address of a running Dask scheduler (``tcp://HOST:PORT``).
        client: an existing ``distributed.Client`` (left open).
        retry_failed: run again the pairs that failed in an earlier run.
        progress: show a progress bar over pairs (stderr).
        wait_for_workers_s: how long to wait for a worker to join a remote scheduler.
        say: where one-line notes go (default: stderr when ``progress``, else nowhere; the note that the
            summary was not written is then a :class:`CohortWarning`).

    Returns:
        the rows of every pair (ok or failed), in the order of ``pairs``, as a list whose ``summary_written``
        says whether summary.png and summary.md were written (:class:`CohortRows`).

    Raises:
        PairsError: the pairs list is unusable (see ``pairs.read_pairs_csv``).
        BatchError: Dask is missing, the scheduler cannot be reached or has no worker, a pair's output
            folder, its metrics.json, OUTDIR/results.csv or OUTDIR/summary.md or summary.png is not
            AD-RegNet's (nothing runs, nothing is replaced), or another run kept results.csv locked for
            10 minutes. A refused run removes what it made and left empty (``outdir.py``): its results.csv
            without rows, and ``out_dir`` with its parents when it made them.
    """
    pairs = read_pairs_csv(pairs) if isinstance(pairs, (str, Path)) else check_pairs(pairs)
    if quality not in QUALITIES:
        raise ValueError(f"unknown quality {quality!r}; choose one of {', '.join(QUALITIES)}")
    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}; choose one of {', '.join(PRESETS)}")
    quiet = say is None and not progress  # then the note that the summary was not written is a warning
    say = say or ((lambda text: print(text, file=sys.stderr)) if progress else (lambda text: None))
    alert = (lambda text: warnings.warn(text, CohortWarning)) if quiet else say
    out = Path(out_dir).expanduser().resolve()
    results_path = out / "results.csv"
    try:
        previous = read_results_csv(results_path)
    except ResultsFileError as exc:  # the user's own results.csv: never replaced
        raise BatchError(f"{exc}; nothing was run and nothing is replaced: choose another output folder (-o) or "
                         "move that file") from None
    problem = summary_problem(out, beside_results=results_path.is_file())
    if problem:  # the user's summary.md / summary.png: never replaced either
        raise BatchError(f"{problem}; nothing was run and nothing is replaced: move or rename it, or choose another "
                         "output folder (-o)")
    results_made = not results_path.exists()
    try:
        made = make_output_folder(out)  # when it fails, it removes the parents it made
    except OSError as exc:
        raise BatchError(f"cannot make the output folder {out} ({exc.strerror or exc}); choose a writable -o "
                         "folder") from None
    try:
        return _register(pairs, out, previous, retry_failed, say=say, alert=alert, progress=progress,
                         options=dict(preset=preset, quality=quality, regularization=regularization, device=device,
                                      threads=threads, landmarks_check_only=bool(landmarks_check_only),
                                      sliding=sliding, find_local_change=bool(find_local_change)),
                         cluster=dict(workers=workers, threads_per_worker=threads_per_worker,
                                      memory_per_worker_gb=memory_per_worker_gb, scheduler=scheduler, client=client,
                                      wait_for_workers_s=wait_for_workers_s))
    except Exception:  # a refused run leaves nothing it made (an interrupted one keeps its results.csv)
        remove_what_a_refused_run_made(out, made, results_made)
        raise


def _register(pairs: Sequence[Pair], out: Path, previous: dict[str, dict], retry_failed: bool, *, say, alert,
              progress: bool, options: dict, cluster: dict) -> CohortRows:
    """:func:`register_cohort` once OUTDIR exists: plan, run what is missing, write the summary (``alert``: its
    note when it is not written)."""
    results_path = out / "results.csv"
    problem = write_problem(out)
    if problem:
        raise BatchError(f"cannot write to the output folder {out} ({problem}); choose a writable -o folder")
    partial = out / PARTIAL_DIR
    if (partial.exists() or partial.is_symlink()) and not partial.is_dir():
        raise BatchError(f"{partial} is in the way (it is not a folder; batch stages its pairs there): move it, or "
                         "choose another output folder (-o)")
    clean_partial(out)
    rows, todo, n_complete, n_failed = _plan(pairs, out, previous, retry_failed)
    in_the_way = [reason for reason in (not_a_result(out / p.id, pair_inputs(p)) for p in todo) if reason]
    if in_the_way:  # a data folder as OUTDIR: its subject folders are not results to replace
        raise BatchError(f"{len(in_the_way)} pair output folder(s) are in the way, first: {in_the_way[0]}; nothing was "
                         "run and nothing is replaced: choose another output folder (-o), e.g. a new one")
    order = [p.id for p in pairs]

    # every update reads results.csv again and merges this run's rows into it under a lock: rows of pairs from
    # other PAIRS.csv files (earlier runs, or runs into this OUTDIR at the same time) stay in results.csv and the
    # summary; this run returns and counts its own pairs only
    def update(then=None) -> list[dict]:
        try:
            return merge_results_csv(results_path, rows, order, then=then)
        except (ResultsFileError, LockTimeout) as exc:
            raise BatchError(f"cannot update {results_path}: {exc}") from None

    update()
    if n_complete or n_failed:
        say(f"skipping {n_complete} complete pair(s)" + (f" and {n_failed} that failed before (--retry-failed runs "
                                                          "them again)" if n_failed else ""))
    if todo:
        with staging(out) as staging_folder:
            _run(todo, out, staging_folder, rows, update, say=say, progress=progress, total=len(pairs),
                 options=options, cluster=cluster)
    final = CohortRows([rows[i] for i in order if i in rows])

    def summarize(table: list[dict]) -> None:
        try:
            write_summary(out, table)
            final.summary_written = True
        except SummaryFileError as exc:  # placed there while the pairs ran: kept, and the run's results stand
            alert(f"note: the summary was not written: {exc}; move or rename it, and rerun to write the summary")

    update(then=summarize)  # under the same lock: the summary matches results.csv
    with contextlib.suppress(OSError):
        (out / PARTIAL_DIR).rmdir()  # only when empty: a pair still being written elsewhere keeps it
    return final


def _run(todo: list[Pair], out: Path, staging: Path, rows: dict, update: Callable[[], list[dict]], *, say,
         progress: bool, total: int, options: dict, cluster: dict) -> None:
    """Runs ``todo`` on the cluster (pairs staged in ``staging``), updating ``rows`` and results.csv
    (``update``) as each pair finishes."""
    distributed = _import_distributed()
    from tqdm import tqdm

    own_client = own_cluster = None
    client = cluster["client"]
    if client is None:
        if cluster["scheduler"]:
            client = own_client = _remote_client(distributed, cluster["scheduler"], cluster["wait_for_workers_s"])
        else:
            client, own_cluster = _local_client(distributed, cluster["workers"], cluster["threads_per_worker"],
                                                cluster["memory_per_worker_gb"])
            own_client = client
    futures: dict = {}
    try:
        capacity = _workers_memory_gb(client)
        if not capacity:
            say(f"note: no worker declares a {MEMORY_RESOURCE} resource, so pairs are not scheduled by memory; "
                f"start workers with --resources {MEMORY_RESOURCE}=<GB>")
        threads = int(options.pop("threads")) or _threads_per_pair(client)
        pair_options = PairOptions(threads=threads, **options)
        say(f"registering {len(todo)} pair(s) on {len(_workers(client))} worker(s), "
            f"{threads} thread(s) per pair")
        estimates = {}
        for pair in todo:
            estimate = estimate_pair_memory_gb(pair, pair_options.quality)
            estimates[pair.id] = estimate
            if capacity and estimate > max(capacity):
                say(f"note: {pair.id} needs about {estimate:.1f} GB, more than any worker's {MEMORY_RESOURCE} "
                    f"({max(capacity):g} GB); it runs alone on the largest worker")
            resources = {MEMORY_RESOURCE: min(estimate, max(capacity))} if capacity else None
            future = client.submit(run_pair, pair, str(out), pair_options, estimate, str(staging), resources=resources,
                                   pure=False,
                                   key=f"adregnet-pair-{pair.id}-{uuid.uuid4().hex[:8]}")
            futures[future] = pair.id
        counts = {"ok": 0, "failed": 0}
        with tqdm(total=total, initial=total - len(todo), unit="pair", disable=not progress, file=sys.stderr,
                  dynamic_ncols=True) as bar:
            for future in distributed.as_completed(list(futures)):
                pair_id = futures[future]
                try:
                    row = future.result()
                except distributed.KilledWorker as exc:
                    row = failed_row(pair_id, _killed_message(exc, estimates[pair_id]),
                                     memory_estimate_gb=estimates[pair_id])
                except Exception as exc:  # noqa: BLE001 - e.g. a worker that cannot import the engine
                    row = failed_row(pair_id, f"{type(exc).__name__}: {exc}", memory_estimate_gb=estimates[pair_id])
                rows[pair_id] = row
                counts[row["status"]] = counts.get(row["status"], 0) + 1
                try:
                    update()
                except BatchError as exc:  # another run holds results.csv too long: the row goes in with the next
                    say(f"note: {exc}")
                bar.set_postfix(counts, refresh=False)
                bar.update(1)
                if row["status"] == "failed":
                    message = f"{pair_id}: failed: {row['error']}"
                    if progress:
                        bar.write(message, file=sys.stderr)
                    else:
                        say(message)
    finally:
        for future in futures:
            if not future.done():
                future.cancel()
        if own_client is not None:
            own_client.close()
        if own_cluster is not None:
            own_cluster.close()
