"""One OUTDIR shared by runs and people: runs at the same time keep each other's rows, a live run's staged pairs
survive another run's start, a results.csv that is not ours is never replaced, and what a run publishes gets
the permissions the user's umask gives ordinary files and folders."""
from __future__ import annotations

import errno
import json
import os
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from ADRegNetLib.cohort import BatchError, read_pairs_csv, register_cohort
from ADRegNetLib.cohort.report import write_summary
from ADRegNetLib.cohort.results import failed_row, read_results_csv, write_results_csv
from ADRegNetLib.cohort.worker import PARTIAL_DIR, PairOptions, run_pair
from cohort_helpers import REPO_ROOT, child_env


def _complete_cohort(folder: Path, out: Path, ids: list[str]) -> Path:
    """A PAIRS.csv whose pairs are already complete in ``out`` (metrics.json present): a run registers nothing."""
    lines = ["id,fixed,moving"]
    for pair_id in ids:
        (out / pair_id).mkdir(parents=True)
        (out / pair_id / "metrics.json").write_text(json.dumps({"quality": "fast", "timings_s": {"total": 1.0}}))
        lines.append(f"{pair_id},f.nii.gz,m.nii.gz")
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "pairs.csv"
    path.write_text("\n".join(lines) + "\n")
    return path


def test_two_runs_into_one_outdir_at_once_keep_each_others_rows(tmp_path, monkeypatch):
    """Before: each run wrote results.csv from what it had read when it started, so the last to write won: here run A
    is held just before it replaces results.csv while run B runs start to end, and B's rows were lost."""
    out = tmp_path / "out"
    csv_a = _complete_cohort(tmp_path / "a", out, ["a1", "a2"])
    csv_b = _complete_cohort(tmp_path / "b", out, ["b1", "b2"])
    a_holds, b_done = threading.Event(), threading.Event()
    real_replace = os.replace

    def replace(src, dst, *args, **kwargs):
        if Path(dst).name == "results.csv" and threading.current_thread().name == "A" and not a_holds.is_set():
            a_holds.set()
            b_done.wait(timeout=1.5)  # with the lock, B waits for A instead: A goes on after 1.5 s
        return real_replace(src, dst, *args, **kwargs)

    monkeypatch.setattr(os, "replace", replace)
    errors = []

    def run(csv_path: Path, done: threading.Event | None = None) -> None:
        try:
            register_cohort(csv_path, out, progress=False)
        except Exception as exc:  # noqa: BLE001 - reported by the assertion below
            errors.append(exc)
        finally:
            if done is not None:
                done.set()

    a = threading.Thread(target=run, args=(csv_a,), name="A")
    a.start()
    assert a_holds.wait(timeout=60)
    b = threading.Thread(target=run, args=(csv_b, b_done), name="B")
    b.start()
    a.join(timeout=120)
    b.join(timeout=120)
    assert not errors and not a.is_alive() and not b.is_alive()
    assert set(read_results_csv(out / "results.csv")) == {"a1", "a2", "b1", "b2"}
    assert "4 pairs: 4 ok, 0 failed" in (out / "summary.md").read_text()  # the summary matches results.csv
    assert sorted(p.name for p in out.iterdir()) == ["a1", "a2", "b1", "b2", "results.csv", "summary.md",
                                                     "summary.png"]  # no lock or temporary file left


_MERGER = """
import sys, time
from pathlib import Path
from ADRegNetLib.cohort.results import failed_row, merge_results_csv
path, name, go = Path(sys.argv[1]), sys.argv[2], Path(sys.argv[3])
(go.parent / ("ready-" + name)).touch()
while not go.exists():
    time.sleep(0.01)
rows = {}
for k in range(15):
    rows[f"{name}{k}"] = failed_row(f"{name}{k}", "x")
    merge_results_csv(path, rows, list(rows))
"""


def test_processes_merging_rows_at_once_lose_none(tmp_path):
    """Two processes each merge 15 rows, one at a time, into one results.csv at the same time: every row is kept."""
    path, go = tmp_path / "results.csv", tmp_path / "go"
    children = [subprocess.Popen([sys.executable, "-c", _MERGER, str(path), name, str(go)], cwd=REPO_ROOT,
                                 env=child_env(), stderr=subprocess.PIPE, text=True) for name in ("p", "q")]
    deadline = time.monotonic() + 60
    while not all((tmp_path / f"ready-{n}").exists() for n in "pq") and time.monotonic() < deadline:
        time.sleep(0.02)
    go.touch()  # both start merging together
    for child in children:
        _, err = child.communicate(timeout=120)
        assert child.returncode == 0, err
    assert set(read_results_csv(path)) == {f"{n}{k}" for n in "pq" for k in range(15)}


def test_a_live_runs_staged_pairs_survive_another_runs_start(tmp_path):
    """Before: every run emptied OUTDIR/.partial when it started, deleting the pairs another run was writing there
    (they then failed); now only a dead run's folder is removed."""
    from ADRegNetLib.cohort.staging import staging

    out = tmp_path / "out"
    csv_path = _complete_cohort(tmp_path / "b", out, ["b1"])
    with staging(out) as staging_folder:
        (staging_folder / "a1.xyz").mkdir()
        (staging_folder / "a1.xyz" / "warped.nii.gz").write_bytes(b"being written")
        register_cohort(csv_path, out, progress=False)
        assert (staging_folder / "a1.xyz" / "warped.nii.gz").is_file()
    assert staging_folder.is_dir()  # a pair still being written when its run ended stays ...
    register_cohort(csv_path, out, progress=False)
    assert not (out / PARTIAL_DIR).exists()  # ... until a later run finds its run gone


@pytest.mark.parametrize("content", [b"subject,age\ns01,54\n", b"\x89PNG not text\xff", None])
def test_a_results_csv_that_is_not_ours_is_never_replaced(tmp_path, content):
    """Before: a results.csv of the user's in OUTDIR (no id column, or not text) was replaced by the batch's table
    (and a folder of that name gave a traceback)."""
    out = tmp_path / "out"
    csv_path = _complete_cohort(tmp_path / "b", out, ["b1"])
    theirs = out / "results.csv"
    if content is None:
        theirs.mkdir()
    else:
        theirs.write_bytes(content)
    with pytest.raises(BatchError, match=r"results.csv is not a results table of adregnet batch.*nothing was run and "
                                         "nothing is replaced: choose another output folder"):
        register_cohort(csv_path, out, progress=False)
    assert theirs.is_dir() if content is None else theirs.read_bytes() == content
    assert not (out / "summary.md").exists()


def test_a_held_lock_makes_others_wait_then_says_who_holds_it(tmp_path):
    from ADRegNetLib.cohort.files import FileLock, LockTimeout

    path = tmp_path / ".results.lock"
    first = FileLock(path)
    assert first.acquire(timeout_s=0)
    with pytest.raises(LockTimeout, match=r"results.csv stayed locked by another adregnet batch for 0 s \(a process "
                                          r"still running holds .*\.results\.lock\); let it finish or stop it"):
        with FileLock(path, what="results.csv", timeout_s=0.1):
            pass
    first.release()
    assert not path.exists()  # nothing left behind
    with FileLock(path, timeout_s=0):
        assert path.exists()


def test_lock_without_os_locks_falls_back_to_an_exclusive_file(tmp_path, monkeypatch):
    """On a file system without OS locks (flock: ENOSYS), the lock is a file made with O_EXCL; one left by a dead
    process of this host is taken over, one that stays is named in the error."""
    from ADRegNetLib.cohort import files

    def no_locks(fd):
        raise OSError(errno.ENOSYS, "Function not implemented")

    monkeypatch.setattr(files, "_os_lock", no_locks)
    path = tmp_path / ".results.lock"
    first, second = files.FileLock(path), files.FileLock(path, what="results.csv", timeout_s=0.2)
    assert first.acquire(timeout_s=0)
    assert not second.acquire(timeout_s=0)
    with pytest.raises(files.LockTimeout, match=r"results.csv stayed locked by another adregnet batch for 0 s \(held "
                                                r"by host and process .* \d+, per .*delete .*\.results\.lock\.held"):
        second.__enter__()
    first.release()
    assert second.acquire(timeout_s=0)
    second.release()
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    import socket

    first.marker_path.write_text(f"{socket.gethostname()} {int(dead.stdout)}\n")  # a killed run's lock
    assert second.acquire(timeout_s=0)
    second.release()
    assert not first.marker_path.exists()


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX permission bits")
def test_published_results_get_the_permissions_the_umask_gives(cohort_factory, tmp_path):
    """Before: the pair's folder came from tempfile.mkdtemp (0700) and results.csv and the summary from mkstemp
    (0600), so on shared storage the user's group could not read a cohort's results. (Mode bits, not access: holds
    when run as root too.)"""
    pairs = read_pairs_csv(cohort_factory(n_good=1))
    out = tmp_path / "out"
    old = os.umask(0o002)  # a group-shared project folder
    try:
        row = run_pair(pairs[0], str(out), PairOptions(quality="fast", device="cpu", threads=1))
        write_results_csv(out / "results.csv", [row, failed_row("other", "x")])
        write_summary(out, [row])
    finally:
        os.umask(old)
    assert row["status"] == "ok", row["error"]

    def mode(path: Path) -> str:
        return oct(stat.S_IMODE(path.stat().st_mode))

    assert mode(out / "pair0") == oct(0o775)
    published = sorted((out / "pair0").iterdir()) + [out / n for n in ("results.csv", "summary.md", "summary.png")]
    assert {p.name: mode(p) for p in published} == {p.name: oct(0o664) for p in published}


def test_a_run_folder_of_another_machine_is_kept_until_it_is_old(tmp_path):
    """Where locks hold per machine only (NFS nolock / local_lock, Lustre localflock) another machine's live run
    looks dead from here: its folder is judged by its age instead, and removed once unchanged for a day."""
    import os
    import time

    from ADRegNetLib.cohort.staging import OTHER_HOST_GRACE_S, clean_partial, staging

    out = tmp_path / "out"
    with staging(out) as mine:  # this machine's own lock names it
        lock = mine.with_name(mine.name + ".lock")
        assert lock.read_text().split()[1] == str(os.getpid())
    partial = out / PARTIAL_DIR
    theirs = partial / "run-0123456789ab"
    (theirs / "p1.x").mkdir(parents=True)
    (partial / "run-0123456789ab.lock").write_text("another-machine 4242\n")
    clean_partial(out)
    assert (theirs / "p1.x").is_dir()  # recent: kept
    old = time.time() - OTHER_HOST_GRACE_S - 60
    os.utime(theirs, (old, old))
    clean_partial(out)
    assert not theirs.exists()
