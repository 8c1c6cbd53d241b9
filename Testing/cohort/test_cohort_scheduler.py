"""``adregnet batch --scheduler``: a ``dask scheduler`` and ``dask worker`` started as separate processes;
a worker killed mid-run loses no completed pair and the rerun completes the rest."""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time

import pytest

pytest.importorskip("distributed")

from cohort_helpers import dask_command, free_port, start_process, wait_for  # noqa: E402

from ADRegNetLib.cohort import run as cohort_run  # noqa: E402
from ADRegNetLib.cohort.cli import batch_main, build_parser  # noqa: E402
from ADRegNetLib.cohort.results import is_complete, read_results_csv  # noqa: E402


def _stop(process: subprocess.Popen, sig: int = signal.SIGTERM) -> None:
    """Stops a process started by ``start_process`` and its children (its own process group)."""
    if process.poll() is None:
        try:
            os.killpg(process.pid, sig)
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=10)
        except ProcessLookupError:
            pass


def _port_open(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


@pytest.fixture(scope="module")
def scheduler(tmp_path_factory):
    """A ``dask scheduler`` process on a free port; yields its address."""
    port = free_port()
    log = tmp_path_factory.mktemp("scheduler") / "scheduler.log"
    process = start_process(dask_command("scheduler") + ["--host", "127.0.0.1", "--port", str(port), "--no-dashboard"],
                            log)
    try:
        wait_for(lambda: _port_open(port) or process.poll() is not None, 60, "the dask scheduler")
        assert process.poll() is None, log.read_text()
        yield f"tcp://127.0.0.1:{port}"
    finally:
        _stop(process)


@pytest.fixture
def start_worker(scheduler, tmp_path):
    """``start_worker(nthreads)``: a ``dask worker`` process with 3 GB of MEMORY; stopped after the test."""
    processes = []

    def start(nthreads: int = 1) -> subprocess.Popen:
        log = tmp_path / f"worker{len(processes)}.log"
        args = [scheduler, "--nthreads", str(nthreads), "--memory-limit", "4GB", "--resources", "MEMORY=3",
                "--no-dashboard"]
        process = start_process(dask_command("worker") + args, log)
        processes.append(process)
        return process

    yield start
    for process in processes:
        _stop(process)


def _batch(argv) -> int:
    return batch_main(build_parser().parse_args([str(a) for a in argv]))


def test_batch_on_an_existing_scheduler(scheduler, start_worker, cohort_factory, tmp_path, monkeypatch):
    start_worker(nthreads=2)
    monkeypatch.setattr(cohort_run, "_local_client", lambda *a, **k: pytest.fail("started a local cluster"))
    out = tmp_path / "out"
    argv = [cohort_factory(n_good=4), "-o", out, "--scheduler", scheduler, "--quality", "fast", "--threads", "1", "-q"]
    assert _batch(argv) == 0
    rows = read_results_csv(out / "results.csv")
    assert [rows[i]["status"] for i in rows] == ["ok"] * 4
    assert len({r["worker"] for r in rows.values()}) == 1  # the one external worker did them all
    assert all(0 < r["memory_estimate_gb"] < 1 for r in rows.values())  # reserved from the worker's MEMORY=3
    assert all(is_complete(out / i) for i in rows)


def test_killed_worker_loses_no_pair_and_rerun_completes(scheduler, start_worker, cohort_factory, tmp_path, capsys):
    pairs_csv = cohort_factory(n_good=4)
    out = tmp_path / "out"
    worker = start_worker(nthreads=1)
    command = [sys.executable, "-m", "ADRegNetLib.cohort", str(pairs_csv), "-o", str(out), "--scheduler", scheduler,
               "--quality", "fast", "--device", "cpu", "--threads", "1", "-q"]
    batch = start_process(command, tmp_path / "batch.log")
    try:
        def pair_done() -> bool:
            assert batch.poll() is None, (tmp_path / "batch.log").read_text()
            return any(is_complete(out / f"pair{i}") for i in range(4))

        wait_for(pair_done, 120, "the first pair", poll_s=0.05)
        os.killpg(worker.pid, signal.SIGKILL)  # the worker and its nanny, while the next pair runs
        worker.wait(timeout=10)
        done = {f"pair{i}" for i in range(4) if is_complete(out / f"pair{i}")}
        assert 1 <= len(done) < 4
        # whatever is in OUTDIR is complete: the interrupted pair left no half-written folder
        assert {p.name for p in out.iterdir() if p.is_dir() and not p.name.startswith(".")} == done
        time.sleep(0.5)
        os.killpg(batch.pid, signal.SIGINT)  # the user stops the run whose workers are gone
        assert batch.wait(timeout=90) == 130, (tmp_path / "batch.log").read_text()
    finally:
        _stop(batch, signal.SIGKILL)
    recorded = read_results_csv(out / "results.csv")
    assert set(recorded) <= done and all(r["status"] == "ok" for r in recorded.values())
    stamps = {i: (out / i / "metrics.json").stat().st_mtime_ns for i in done}

    start_worker(nthreads=1)
    capsys.readouterr()
    assert _batch(command[3:]) == 0
    assert f"skipping {len(done)} complete pair(s)" in capsys.readouterr().err
    rows = read_results_csv(out / "results.csv")
    assert list(rows) == [f"pair{i}" for i in range(4)] and all(r["status"] == "ok" for r in rows.values())
    assert {i: (out / i / "metrics.json").stat().st_mtime_ns for i in done} == stamps  # not registered again
    assert not (out / ".partial").exists()
