"""What stops a batch before it could replace or hide something (review of the nineteenth session): a result of
another pair under the same id, a file in the way of the staging folder, and errors too long for the csv reader."""
from __future__ import annotations

from pathlib import Path


def test_a_long_error_stays_readable_in_results_csv(tmp_path):
    """Before: an error quoting a 50,000-number landmark file (250 kB) went whole into results.csv, beyond the
    csv reader's cell limit, and the batch then refused its own OUTDIR as 'not a results table'."""
    from ADRegNetLib.cohort.results import MAX_ERROR_CHARS, failed_row, merge_results_csv, read_results_csv

    path = tmp_path / "results.csv"
    long_error = "landmarks: " + " ".join(["1.5"] * 60000)
    merge_results_csv(path, {"p1": failed_row("p1", long_error)}, order=["p1"])
    rows = read_results_csv(path)
    assert len(rows["p1"]["error"]) <= MAX_ERROR_CHARS and rows["p1"]["error"].startswith("landmarks: 1.5")
    assert "characters in all)" in rows["p1"]["error"]
    # a results.csv of an earlier version with such a cell is still read
    path.write_text("id,status,error\np1,failed," + "x" * 200_000 + "\n")
    assert len(read_results_csv(path)["p1"]["error"]) == 200_000


def test_a_complete_result_of_another_pair_under_the_same_id_is_refused(tmp_path, capsys):
    """Before: a second PAIRS.csv into the same OUTDIR whose id the first had used for other images was
    skipped as complete ('1 ok', exit 0), its row showing the other pair's figures."""
    import json

    from ADRegNetLib.cli.main import main
    from ADRegNetLib.cohort.run import other_pairs_result
    from ADRegNetLib.cohort.pairs import Pair

    sample = Path(__file__).resolve().parents[2] / "Resources" / "SampleData"
    fixed, moving = str(sample / "lung_fixed.nii.gz"), str(sample / "lung_moving.nii.gz")
    result = tmp_path / "out" / "p1"
    result.mkdir(parents=True)
    (result / "metrics.json").write_text(json.dumps({"inputs": {"fixed": fixed, "moving": moving}}))
    (tmp_path / "pairs.csv").write_text(f"id,fixed,moving\np1,{moving},{fixed}\n")  # the other direction
    assert main(["batch", str(tmp_path / "pairs.csv"), "-o", str(tmp_path / "out"), "-q"]) == 2
    err = capsys.readouterr().err
    assert f"holds the result of fixed {fixed}, not of this pair's fixed {moving}" in err, err
    assert "nothing was run and nothing is replaced" in err
    assert sorted(p.name for p in result.iterdir()) == ["metrics.json"]
    # the same pair, or its files moved with the study folder to another disk, is the pair's own
    assert other_pairs_result(Pair(id="p1", fixed=fixed, moving=moving), result) is None
    moved = tmp_path / "elsewhere"
    assert other_pairs_result(Pair(id="p1", fixed=str(moved / "lung_fixed.nii.gz"),
                                   moving=str(moved / "lung_moving.nii.gz")), result) is None


def test_a_file_named_like_the_staging_folder_is_refused(tmp_path, capsys):
    """Before: a file OUTDIR/.partial gave a FileExistsError traceback."""
    from ADRegNetLib.cli.main import main

    sample = Path(__file__).resolve().parents[2] / "Resources" / "SampleData"
    (tmp_path / "pairs.csv").write_text(f"id,fixed,moving\np1,{sample / 'lung_fixed.nii.gz'},{sample / 'lung_moving.nii.gz'}\n")
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / ".partial").write_text("mine")
    assert main(["batch", str(tmp_path / "pairs.csv"), "-o", str(tmp_path / "out"), "-q"]) == 2
    err = capsys.readouterr().err
    assert ".partial is in the way (it is not a folder" in err and "Traceback" not in err
    assert (tmp_path / "out" / ".partial").read_text() == "mine"
