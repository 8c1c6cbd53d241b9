"""CPU threads that give way to other programs (ADRegNetLib.engine.cpu_threads): the rule, the reading of
the machine's runnable threads against real busy processes, and ``register()`` running stages with fewer
threads and handing its caller's count back however it ends."""
from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from ADRegNetLib.engine import RegistrationCancelled, cpu_threads, register
from ADRegNetLib.io import read_image

SAMPLE = Path(__file__).resolve().parents[2] / "Resources" / "SampleData"
LINUX_PROC = Path("/proc/loadavg").is_file() and Path("/proc/self/task").is_dir()


def test_the_rule_leaves_a_cpu_to_each_competing_thread_and_keeps_one():
    assert cpu_threads.threads_for_load(2, 2, 0) == 2
    assert cpu_threads.threads_for_load(2, 2, 1) == 1
    assert cpu_threads.threads_for_load(2, 2, 5) == 1
    assert cpu_threads.threads_for_load(8, 16, 9) == 7
    assert cpu_threads.threads_for_load(8, 16, 3) == 8  # never more than at the start
    assert cpu_threads.threads_for_load(4, 4, None) == 4  # unreadable: unchanged


@pytest.fixture
def busy():
    """Start a busy Python loop at a given nice value; yields its pid once it runs."""
    started = []

    def start(nice: int) -> int:
        proc = subprocess.Popen([sys.executable, "-c", f"import os\nos.nice({nice})\nwhile True: pass"])
        started.append(proc)
        time.sleep(0.3)
        return proc.pid

    yield start
    for proc in started:
        proc.kill()
        proc.wait()


@pytest.mark.skipif(not LINUX_PROC, reason="reads Linux /proc")
def test_a_busy_process_competes_and_a_nice_19_one_does_not(busy):
    own_stat = Path("/proc/self/stat").read_text()
    running, nice = cpu_threads._runnable(own_stat)
    assert running and nice == os.nice(0)  # the reader is running while it reads
    competing = busy(0)
    background = busy(19) if os.nice(0) < 14 else None
    low = cpu_threads._low_priority_pids()
    assert competing not in low
    if background is not None:
        assert background in low and cpu_threads._runnable_threads_of([background]) >= 1
    assert cpu_threads.other_runnable_threads() >= 1


@pytest.mark.skipif(not LINUX_PROC, reason="reads Linux /proc")
def test_a_background_job_started_during_a_registration_is_seen_once_the_list_is_old(busy):
    if os.nice(0) >= 14:
        pytest.skip("this process is niced already")
    background = busy(19)
    fresh = {"low_priority": [], "read_at": time.monotonic()}
    cpu_threads.other_runnable_threads(fresh)
    assert fresh["low_priority"] == []  # a list read just now is kept
    old = {"low_priority": [], "read_at": time.monotonic() - 2 * cpu_threads._LOW_PRIORITY_RESCAN_S}
    for _ in range(20):  # read again only when another process is runnable at that moment
        cpu_threads.other_runnable_threads(old)
        if old["low_priority"]:
            break
        time.sleep(0.05)
    assert background in old["low_priority"]


@pytest.mark.skipif(not LINUX_PROC or not Path("/proc/self/autogroup").is_file()
                    or Path("/proc/sys/kernel/sched_autogroup_enabled").read_text().strip() != "1",
                    reason="needs the scheduler's autogroups")
def test_with_autogroups_another_session_competes_unless_its_autogroup_is_niced():
    """A nice 19 job started in another session (its own autogroup, at the group's nice 0) shares the CPUs
    evenly with this one; once its autogroup is niced (``/proc/PID/autogroup``) it hardly competes."""
    procs = []
    try:
        for _ in range(2):
            procs.append(subprocess.Popen([sys.executable, "-c", "import os\nos.nice(19)\nwhile True: pass"],
                                          start_new_session=True))
        time.sleep(0.3)
        own = cpu_threads._autogroup("self")
        groups = [cpu_threads._autogroup(p.pid) for p in procs]
        if own is None or None in groups:
            pytest.skip("this system lists autogroups but does not let them be read")
        if any(g[0] == own[0] for g in groups):
            pytest.skip("this system does not give a new session its own autogroup")
        try:
            Path(f"/proc/{procs[1].pid}/autogroup").write_text("19")
        except OSError:
            pytest.skip("this system does not let the autogroup's nice be set")
        if own[1] + 5 >= 19:
            pytest.skip("this process's own autogroup is niced already")
        low = cpu_threads._low_priority_pids()
        assert procs[0].pid not in low and procs[1].pid in low
    finally:
        for proc in procs:
            proc.kill()
            proc.wait()


@pytest.mark.skipif(not LINUX_PROC, reason="reads Linux /proc")
def test_where_autogroups_cannot_be_read_the_nice_value_decides(busy, monkeypatch):
    """Some sandboxes list ``/proc/PID/autogroup`` but refuse to read it: the rule falls back to nice."""
    if os.nice(0) >= 14:
        pytest.skip("this process is niced already")
    real_read = cpu_threads._read

    def read(path):
        if path == "/proc/sys/kernel/sched_autogroup_enabled":
            return "1\n"
        if path.endswith("/autogroup"):
            raise PermissionError(13, "Permission denied", path)
        return real_read(path)

    monkeypatch.setattr(cpu_threads, "_read", read)
    assert cpu_threads._autogroup("self") is None
    competing, background = busy(0), busy(19)
    low = cpu_threads._low_priority_pids()
    assert background in low and competing not in low


def _tiny_pair():
    fixed = read_image(SAMPLE / "lung_fixed.nii.gz", name="fixed")
    crop = np.ascontiguousarray(fixed.array[16:40, 20:52, 10:40])
    from ADRegNetLib.spatial.geometry import Geometry
    from ADRegNetLib.spatial.image import Image

    g = fixed.geometry
    geometry = Geometry(crop.shape[::-1], g.spacing, g.index_to_physical(np.array([[10.0, 20.0, 16.0]]))[0], g.direction)
    return Image(crop, geometry, "fixed"), Image(np.roll(crop, 1, axis=2).copy(), geometry, "moving")


def test_register_runs_stages_with_fewer_threads_under_load_and_gives_the_count_back(monkeypatch):
    monkeypatch.delenv("ADREGNET_FIXED_THREADS", raising=False)
    if (os.cpu_count() or 1) < 2 or not hasattr(os, "sched_getaffinity") \
            or len(os.sched_getaffinity(0)) != os.cpu_count():
        pytest.skip("needs a process that may run on every CPU of a machine with two or more")
    fixed, moving = _tiny_pair()
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        seen = []
        monkeypatch.setattr(cpu_threads, "other_runnable_threads", lambda *cache: 50)  # a machine full of other work
        result = register(fixed, moving, quality="fast", use_network=False, device="cpu", compute_inverse=False,
                          progress=lambda f, t: seen.append(torch.get_num_threads()))
        assert torch.get_num_threads() == 2
        info = result.metrics["cpu_threads"]
        assert info["threads"] == 2 and info["rule"].startswith("fewer while")
        assert {"optimize", "refine", "outputs"} <= set(info["stages_with_fewer"])
        assert set(info["stages_with_fewer"].values()) == {1} and 1 in seen
        # cancelled half-way: the caller's count comes back too
        with pytest.raises(RegistrationCancelled):
            register(fixed, moving, quality="fast", use_network=False, device="cpu",
                     should_stop=lambda: torch.get_num_threads() == 1)
        assert torch.get_num_threads() == 2
        # idle machine: every stage with the caller's count
        monkeypatch.setattr(cpu_threads, "other_runnable_threads", lambda *cache: 0)
        idle = register(fixed, moving, quality="fast", use_network=False, device="cpu", compute_inverse=False)
        assert idle.metrics["cpu_threads"]["stages_with_fewer"] == {}
        # and the same field whatever the load decided (1 thread sums in another order: within float rounding)
        np.testing.assert_allclose(idle.disp_mm, result.disp_mm, atol=1e-3)
        monkeypatch.setenv("ADREGNET_FIXED_THREADS", "1")
        monkeypatch.setattr(cpu_threads, "other_runnable_threads", lambda *cache: 50)
        fixed_run = register(fixed, moving, quality="fast", use_network=False, device="cpu", compute_inverse=False)
        assert fixed_run.metrics["cpu_threads"] == {"threads": 2, "rule": "fixed: ADREGNET_FIXED_THREADS is set",
                                                    "stages_with_fewer": {}}
    finally:
        torch.set_num_threads(before)


def test_two_registrations_in_threads_of_one_process_each_give_the_count_back(monkeypatch):
    """OpenMP keeps the thread count per thread and a new thread starts with the count last set: a second
    registration started while the first runs with fewer threads starts from the count before either changed
    it, keeps it (the rule is off while another runs), and every thread gets it back."""
    from concurrent.futures import ThreadPoolExecutor

    monkeypatch.delenv("ADREGNET_FIXED_THREADS", raising=False)
    if (os.cpu_count() or 1) < 2:
        pytest.skip("needs two CPUs")
    fixed, moving = _tiny_pair()
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    monkeypatch.setattr(cpu_threads, "other_runnable_threads", lambda *cache: 50)
    try:
        def run(_):
            result = register(fixed, moving, quality="fast", use_network=False, device="cpu", compute_inverse=False)
            return result.metrics["cpu_threads"], torch.get_num_threads()

        with ThreadPoolExecutor(2) as pool:
            outcomes = list(pool.map(run, range(2)))
            assert [count for _, count in outcomes] == [2, 2]
            assert all(info["threads"] == 2 for info, _ in outcomes)
            assert pool.submit(torch.get_num_threads).result() == 2
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)


def test_the_cli_keeps_a_given_thread_count_only_for_its_own_run(monkeypatch, tmp_path):
    """``--threads N`` keeps the count whatever the load (``metrics.json`` says so) and leaves the environment
    as it found it, so a later run in the same process (a notebook, a batch worker) follows the load again."""
    import json

    import SimpleITK as sitk

    from ADRegNetLib.cli.main import main

    monkeypatch.delenv("ADREGNET_FIXED_THREADS", raising=False)
    fixed, moving = _tiny_pair()
    paths = []
    for image in (fixed, moving):
        itk = sitk.GetImageFromArray(image.array)
        itk.SetSpacing(tuple(image.geometry.spacing))
        itk.SetOrigin(tuple(image.geometry.origin))
        path = tmp_path / f"{image.name}.nii.gz"
        sitk.WriteImage(itk, str(path))
        paths.append(str(path))
    before = torch.get_num_threads()
    try:
        assert main(["register", *paths, "-o", str(tmp_path / "out"), "--quality", "fast", "--no-network",
                     "--no-inverse", "--threads", "1", "-q"]) == 0
    finally:
        torch.set_num_threads(before)
    rule = json.loads((tmp_path / "out" / "metrics.json").read_text())["cpu_threads"]["rule"]
    assert rule in ("fixed: ADREGNET_FIXED_THREADS is set", "fixed: one thread")
    assert "ADREGNET_FIXED_THREADS" not in os.environ
