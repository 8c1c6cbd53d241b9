"""``adregnet batch`` on a 2-worker local Dask cluster: 4 pairs (one corrupt), resume, retry, memory."""
from __future__ import annotations

import datetime
import json

import pytest

pytest.importorskip("distributed")

from ADRegNetLib.cli.outputs import INVERSE_FILES, OUTPUT_FILES  # noqa: E402
from ADRegNetLib.cohort import read_pairs_csv, register_cohort  # noqa: E402
from ADRegNetLib.cohort import run as cohort_run  # noqa: E402
from ADRegNetLib.cohort.cli import build_parser, batch_main  # noqa: E402
from ADRegNetLib.cohort.results import read_results_csv  # noqa: E402


def _batch(argv) -> int:
    return batch_main(build_parser().parse_args([str(a) for a in argv]))


def _intervals(rows):
    parse = datetime.datetime.fromisoformat
    return [(parse(r["started"]), parse(r["finished"]), r["worker"]) for r in rows]


def test_local_cluster_four_pairs_one_corrupt_then_resume(cohort_factory, tmp_path, monkeypatch, capsys):
    pairs_csv = cohort_factory(n_good=3, corrupt=True)
    out = tmp_path / "out"
    # Memory-aware scheduling: every worker has 2 task slots but declares MEMORY = 3.6 GB (4 GB limit
    # less the baseline); each pair reserves 2 GB here, so a worker never runs two pairs at once.
    monkeypatch.setattr(cohort_run, "estimate_pair_memory_gb", lambda pair, quality: 2.0)
    argv = [pairs_csv, "-o", out, "--workers", "2", "--threads-per-worker", "2", "--memory-per-worker", "4",
            "--quality", "fast", "--device", "cpu", "-q"]
    assert _batch(argv) == 1  # a pair failed
    rows = read_results_csv(out / "results.csv")
    assert list(rows) == ["pair0", "pair1", "pair2", "bad"]
    assert [rows[i]["status"] for i in rows] == ["ok", "ok", "ok", "failed"]
    assert "corrupt.nii.gz" in rows["bad"]["error"] and "cannot be read as an image" in rows["bad"]["error"]
    assert not (out / "bad").exists() and not (out / ".partial").exists()
    for pair_id in ("pair0", "pair1", "pair2"):
        files = {p.name for p in (out / pair_id).iterdir()}
        expected = set(OUTPUT_FILES) | set(INVERSE_FILES) | ({"warped_labels.nii.gz"} if pair_id == "pair0" else set())
        assert files == expected
        assert rows[pair_id]["memory_estimate_gb"] == 2.0 and rows[pair_id]["time_s"] > 0
    assert rows["pair0"]["tre_after_mm"] < rows["pair0"]["tre_before_mm"]
    assert rows["pair0"]["dice_after"] > 0.5 and rows["pair1"]["dice_after"] is None
    assert len({rows[i]["worker"] for i in rows}) == 2  # both workers took pairs
    by_worker: dict = {}
    for start, end, worker in _intervals(rows.values()):
        by_worker.setdefault(worker, []).append((start, end))
    for spans in by_worker.values():
        spans.sort()
        assert all(a_end <= b_start for (_, a_end), (b_start, _) in zip(spans, spans[1:])), spans
    assert (out / "summary.png").stat().st_size > 10_000
    assert "4 pairs: 3 ok, 1 failed" in (out / "summary.md").read_text()

    # The same command again: everything is skipped (no cluster is even started).
    stamps = {i: (out / i / "metrics.json").stat().st_mtime_ns for i in ("pair0", "pair1", "pair2")}
    capsys.readouterr()
    monkeypatch.setattr(cohort_run, "_local_client",
                        lambda *a, **k: pytest.fail("a cluster started with nothing to do"))
    assert _batch(argv[:-1]) == 1
    err = capsys.readouterr().err
    assert "skipping 3 complete pair(s) and 1 that failed before" in err
    assert {i: (out / i / "metrics.json").stat().st_mtime_ns for i in stamps} == stamps
    assert read_results_csv(out / "results.csv") == rows
    # a lost results.csv is rebuilt from the pair folders (Dice included); here without the bad pair
    (out / "results.csv").unlink()
    register_cohort(read_pairs_csv(pairs_csv)[:3], out, quality="fast", progress=False)
    rebuilt = read_results_csv(out / "results.csv")
    assert list(rebuilt) == ["pair0", "pair1", "pair2"]
    assert rebuilt["pair0"]["tre_after_mm"] == pytest.approx(rows["pair0"]["tre_after_mm"], rel=1e-5)
    assert rebuilt["pair0"]["dice_after"] == pytest.approx(rows["pair0"]["dice_after"], rel=1e-5)
    assert json.loads((out / "pair0" / "metrics.json").read_text())["quality"] == "fast"


def test_retry_failed_runs_only_the_failed_pair(cohort_factory, tmp_path):
    """Also the Python API with a client of the caller's (an in-process cluster, no MEMORY resource)."""
    import distributed

    from ADRegNetLib.cohort.results import failed_row, write_results_csv

    pairs_csv = cohort_factory(n_good=2)
    out = tmp_path / "out"
    out.mkdir()
    # an earlier run: pair0 complete, pair1 failed (e.g. a file that was fixed since)
    (out / "pair0").mkdir()
    (out / "pair0" / "metrics.json").write_text(json.dumps({"quality": "fast", "timings_s": {"total": 1.0}}))
    write_results_csv(out / "results.csv", [failed_row("pair1", "was broken")])
    notes: list[str] = []
    with distributed.Client(processes=False, n_workers=1, threads_per_worker=1, dashboard_address=None) as client:
        rows = register_cohort(pairs_csv, out, quality="fast", threads=1, client=client, progress=False,
                               say=notes.append)
        assert [r["status"] for r in rows] == ["ok", "failed"] and rows[1]["error"] == "was broken"
        rows = register_cohort(pairs_csv, out, quality="fast", device="cpu", threads=1, client=client, progress=False,
                               retry_failed=True, say=notes.append)
        assert client.status == "running"  # the caller's client is left open
    assert [r["status"] for r in rows] == ["ok", "ok"]
    assert rows[0]["time_s"] == 1.0  # pair0 was not registered again
    assert (out / "pair1" / "metrics.json").is_file() and rows[1]["tre_after_mm"] is None
    assert any("no worker declares a MEMORY resource" in n for n in notes)
