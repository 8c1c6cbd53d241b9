"""What a refused batch leaves behind, and files in OUTDIR that are not the batch's (review of the twentieth session):
a refused run removes the output folder it made (also the parents made on the way to an OUTDIR it cannot make), a
summary.md/summary.png of the user's is never replaced (and the closing line and the Python API say the summary was
not written), a complete pair's metrics.json is read once, and an unreadable one is refused with the file named."""
from __future__ import annotations

import json
import warnings
from pathlib import Path

import pytest

from ADRegNetLib.cohort import BatchError, CohortWarning, register_cohort
from ADRegNetLib.cohort import run as cohort_run
from ADRegNetLib.cohort.report import SummaryFileError, write_summary
from ADRegNetLib.cohort.results import failed_row, read_results_csv, row_for_complete_pair, write_results_csv

SAMPLE = Path(__file__).resolve().parents[2] / "Resources" / "SampleData"


def _pairs_csv(folder: Path) -> Path:
    """A PAIRS.csv of one real pair (the demo lung CT)."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "pairs.csv"
    path.write_text(f"id,fixed,moving\np1,{SAMPLE / 'lung_fixed.nii.gz'},{SAMPLE / 'lung_moving.nii.gz'}\n")
    return path


def _complete(out: Path, pair_id: str = "p1", metrics: dict | None = None) -> None:
    """``out/<pair_id>`` as an earlier run published it (metrics.json present): a run registers nothing."""
    (out / pair_id).mkdir(parents=True)
    metrics = {"quality": "fast", "timings_s": {"total": 1.0}} if metrics is None else metrics
    (out / pair_id / "metrics.json").write_text(json.dumps(metrics))


def _png(path: Path, **metadata) -> bytes:
    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib.figure import Figure

    fig = Figure(figsize=(2, 2), dpi=50)
    fig.add_subplot(1, 1, 1).plot([1, 2, 3])
    fig.savefig(path, format="png", **({"metadata": metadata} if metadata else {}))
    return path.read_bytes()


@pytest.mark.parametrize("option, message", [
    (["--workers", "0"], "--workers and --threads-per-worker must be at least 1"),
    (["--memory-per-worker", "0.1"], "leaves nothing for registrations"),
])
def test_a_refused_run_removes_the_output_folder_it_made(tmp_path, capsys, option, message):
    """Before: the run made OUTDIR (and its missing parents), wrote a results.csv without rows and .partial/, then
    stopped: the empty folder stayed behind for the user to find and remove."""
    pytest.importorskip("distributed")
    from ADRegNetLib.cli.main import main

    pairs = _pairs_csv(tmp_path / "data")
    out = tmp_path / "new" / "out"
    invalid = tmp_path / "invalid.csv"  # refused before the folder is made
    invalid.write_text("id,fixed\np1,a.nii.gz\n")
    assert main(["batch", str(invalid), "-o", str(out), *option, "-q"]) == 2
    assert "the header lacks moving" in capsys.readouterr().err and not (tmp_path / "new").exists()
    assert main(["batch", str(pairs), "-o", str(out), *option, "-q"]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "new").exists()  # OUTDIR and the parent it made are gone

    mine = tmp_path / "mine"  # a folder the user made is kept, as the user left it
    mine.mkdir()
    assert main(["batch", str(pairs), "-o", str(mine), *option, "-q"]) == 2
    assert mine.is_dir() and list(mine.iterdir()) == []
    (mine / "notes.txt").write_text("keep")
    assert main(["batch", str(pairs), "-o", str(mine / "out"), *option, "-q"]) == 2
    assert sorted(p.name for p in mine.iterdir()) == ["notes.txt"]

    earlier = tmp_path / "earlier"  # an earlier run's results.csv keeps its rows
    earlier.mkdir()
    write_results_csv(earlier / "results.csv", [failed_row("p0", "was broken")])
    assert main(["batch", str(pairs), "-o", str(earlier), *option, "-q"]) == 2
    assert sorted(p.name for p in earlier.iterdir()) == ["results.csv"]
    assert read_results_csv(earlier / "results.csv")["p0"]["error"] == "was broken"


@pytest.mark.parametrize("name, kind", [
    ("summary.md", "notes"), ("summary.png", "plot"), ("summary.png", "bytes"), ("summary.md", "folder"),
])
def test_a_summary_that_is_not_the_batchs_is_never_replaced(tmp_path, name, kind):
    """Before: the user's summary.md or summary.png in OUTDIR was replaced by the batch's summary without a word (a
    folder of that name gave a traceback after every pair had run)."""
    out = tmp_path / "out"
    _complete(out)
    theirs = out / name
    content = None
    if kind == "notes":
        content = b"# My study\n\nScanner changed in March.\n"
        theirs.write_bytes(content)
    elif kind == "plot":  # a matplotlib figure of the user's, in a folder without a batch's results.csv
        content = _png(theirs)
    elif kind == "bytes":
        content = b"\x89PNG\r\n\x1a\nnot ours"
        theirs.write_bytes(content)
    else:
        theirs.mkdir()
    with pytest.raises(BatchError, match=rf"{name} .*not a summary written by adregnet batch.*nothing was run and "
                                         "nothing is replaced: move or rename it, or choose another output folder"):
        register_cohort(_pairs_csv(tmp_path / "data"), out, progress=False)
    assert theirs.is_dir() if content is None else theirs.read_bytes() == content
    assert not (out / "results.csv").exists()


def test_the_batchs_own_summary_is_replaced(tmp_path):
    """A rerun replaces what a batch wrote: its summary.md (by its heading), its summary.png (by the title it
    carries), and a summary.png of an earlier version (a matplotlib figure beside the batch's results.csv)."""
    out = tmp_path / "out"
    _complete(out)
    pairs = _pairs_csv(tmp_path / "data")
    register_cohort(pairs, out, progress=False)
    register_cohort(pairs, out, progress=False)
    assert (out / "summary.md").read_text().startswith("# Cohort registration summary")
    _png(out / "summary.png")  # as versions before the title wrote it
    (out / "summary.md").write_text("# Cohort registration summary\n\nan earlier run's\n")
    register_cohort(pairs, out, progress=False)
    assert "1 pairs: 1 ok, 0 failed" in (out / "summary.md").read_text()
    assert b"AD-RegNet cohort summary" in (out / "summary.png").read_bytes()
    (out / "summary.md").write_text("my notes\n")  # placed there while a run was going: that run keeps it
    with pytest.raises(SummaryFileError, match="summary.md is not a summary written by adregnet batch"):
        write_summary(out, read_results_csv(out / "results.csv").values())
    assert (out / "summary.md").read_text() == "my notes\n"


def _user_summary_placed_mid_run(monkeypatch, out: Path) -> None:
    """The user's summary.md appears in ``out`` after the run's start checks (as while its pairs run)."""
    clean_partial = cohort_run.clean_partial

    def placing(folder):
        (out / "summary.md").write_text("my notes\n")
        return clean_partial(folder)

    monkeypatch.setattr(cohort_run, "clean_partial", placing)


def test_the_closing_line_says_whether_the_summary_was_written(tmp_path, capsys, monkeypatch):
    """Before: 'summary in OUT/summary.md and summary.png' also when the batch had kept the user's file and written
    no summary (the note above it said so)."""
    from ADRegNetLib.cli.main import main

    out = tmp_path / "out"
    _complete(out)
    pairs = _pairs_csv(tmp_path / "data")
    assert main(["batch", str(pairs), "-o", str(out), "-q"]) == 0
    assert capsys.readouterr().out.strip().endswith(f"results in {out}/results.csv, summary in {out}/summary.md and "
                                                    "summary.png")
    (out / "summary.md").unlink()
    (out / "summary.png").unlink()
    _user_summary_placed_mid_run(monkeypatch, out)
    assert main(["batch", str(pairs), "-o", str(out), "-q"]) == 0
    captured = capsys.readouterr()
    assert captured.out.strip() == (f"1 pairs: 1 ok, 0 failed; results in {out}/results.csv; no summary written (see "
                                    "the note above)"), captured.out
    assert (f"note: the summary was not written: {out / 'summary.md'} is not a summary written by adregnet batch"
            in captured.err), captured.err
    assert (out / "summary.md").read_text() == "my notes\n" and not (out / "summary.png").exists()


def test_the_python_api_says_whether_the_summary_was_written(tmp_path, monkeypatch):
    """Before: with progress=False (and no ``say``) nothing told the caller that the summary was not written."""
    out = tmp_path / "out"
    _complete(out)
    pairs = _pairs_csv(tmp_path / "data")
    with warnings.catch_warnings():
        warnings.simplefilter("error", CohortWarning)
        rows = register_cohort(pairs, out, progress=False)
    assert rows.summary_written and [r["id"] for r in rows] == ["p1"]
    (out / "summary.md").unlink()
    _user_summary_placed_mid_run(monkeypatch, out)
    with pytest.warns(CohortWarning, match=r"the summary was not written: .*summary\.md is not a summary written by "
                                           r"adregnet batch.*rerun to write the summary"):
        rows = register_cohort(pairs, out, progress=False)
    assert not rows.summary_written and rows[0]["status"] == "ok"
    (out / "summary.md").unlink()
    notes = []  # a caller's own ``say`` gets the note instead of a warning
    with warnings.catch_warnings():
        warnings.simplefilter("error", CohortWarning)
        rows = register_cohort(pairs, out, progress=False, say=notes.append)
    assert not rows.summary_written and any("the summary was not written" in n for n in notes), notes


def test_an_output_folder_that_cannot_be_made_leaves_no_parent_it_made(tmp_path):
    """Before: making OUTDIR failed after its missing parents were made (they are made first), and they stayed."""
    out = tmp_path / "new" / "deeper" / ("x" * 300)  # longer than any file system allows a name to be
    with pytest.raises(BatchError, match=r"cannot make the output folder .*; choose a writable -o folder"):
        register_cohort(_pairs_csv(tmp_path / "data"), out, progress=False)
    assert not (tmp_path / "new").exists()
    kept = tmp_path / "kept"  # a parent that was there before stays, with what it holds
    (kept / "sub").mkdir(parents=True)
    with pytest.raises(BatchError, match="cannot make the output folder"):
        register_cohort(_pairs_csv(tmp_path / "data"), kept / "new" / ("x" * 300), progress=False)
    assert [p.name for p in kept.iterdir()] == ["sub"]


def test_a_complete_pairs_row_from_an_unreadable_metrics_json_has_no_figures(tmp_path):
    """row_for_complete_pair reads metrics.json with read_metrics when not given it (before: json.loads, which
    raised on a file that is not JSON)."""
    from ADRegNetLib.cohort.pairs import Pair

    _complete(tmp_path, metrics={"quality": "fast", "timings_s": {"total": 2.5}})
    pair = Pair("p1", "fixed.nii.gz", "moving.nii.gz")
    assert row_for_complete_pair(pair, tmp_path / "p1")["time_s"] == 2.5
    (tmp_path / "p1" / "metrics.json").write_text("not json {")
    row = row_for_complete_pair(pair, tmp_path / "p1")
    assert row["status"] == "ok" and row["time_s"] is None and row["quality"] is None


def test_a_complete_pairs_metrics_json_is_read_once(tmp_path, monkeypatch):
    """Before: the batch parsed each complete pair's metrics.json twice at its start (once to check it is the
    pair's result, once for its row)."""
    out = tmp_path / "out"
    _complete(out, metrics={"quality": "fast", "timings_s": {"total": 2.5}, "note": "read-count-marker"})
    parsed = []
    loads = json.loads

    def counting_loads(text, *args, **kwargs):
        if "read-count-marker" in str(text):
            parsed.append(text)
        return loads(text, *args, **kwargs)

    monkeypatch.setattr(json, "loads", counting_loads)
    rows = register_cohort(_pairs_csv(tmp_path / "data"), out, progress=False)
    assert len(parsed) == 1
    assert rows[0]["status"] == "ok" and rows[0]["time_s"] == 2.5 and rows[0]["quality"] == "fast"


@pytest.mark.parametrize("content", ["not json {", "[1, 2]", "\xff\xfe"])
def test_an_unreadable_metrics_json_is_refused_with_the_file_named(tmp_path, capsys, content):
    """Before: 'error: Expecting value: line 1 column 1 (char 0)' (no file named), or a traceback for a JSON list."""
    from ADRegNetLib.cli.main import main

    out = tmp_path / "out"
    (out / "p1").mkdir(parents=True)
    metrics = out / "p1" / "metrics.json"
    metrics.write_bytes(content.encode("latin-1"))
    assert main(["batch", str(_pairs_csv(tmp_path / "data")), "-o", str(out), "-q"]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and err.startswith("adregnet batch: error: ")
    assert f"{metrics} cannot be read as the metrics of adregnet register" in err, err
    assert "nothing was run and nothing is replaced" in err and "move that folder away" in err
    assert metrics.read_bytes() == content.encode("latin-1")
