"""Cohort building blocks without a cluster: PAIRS.csv, atlas lists, memory estimates, results.csv,
the summary, and one pair run in process (``run_pair``: the same code a Dask worker runs)."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from ADRegNetLib.cli.outputs import INVERSE_FILES, OUTPUT_FILES
from ADRegNetLib.cohort import Pair, PairsError, pairs_from_atlas, read_pairs_csv
from ADRegNetLib.cohort.memory import PAIR_OVERHEAD_GB, estimate_pair_memory_gb, header_geometry
from ADRegNetLib.cohort.report import write_summary
from ADRegNetLib.cohort.results import RESULT_COLUMNS, failed_row, read_results_csv, write_results_csv
from ADRegNetLib.cohort.worker import PARTIAL_DIR, PairOptions, _error_message, run_pair


def _csv(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "pairs.csv"
    path.write_text(text)
    return path


def test_pairs_csv_resolves_paths_relative_to_the_csv(tmp_path):
    path = _csv(tmp_path, "id,fixed,moving,fixed_landmarks,moving_landmarks,mask_fixed\n"
                          "a,f.nii.gz,/abs/m.nii.gz,,,\n"
                          "b,sub/f.nii.gz,m.nii.gz,f.csv,m.csv,mask.nii.gz\n\n")
    pairs = read_pairs_csv(path)
    assert [p.id for p in pairs] == ["a", "b"]
    assert pairs[0].fixed == str(tmp_path / "f.nii.gz") and pairs[0].moving == "/abs/m.nii.gz"
    assert pairs[0].fixed_landmarks is None and pairs[0].mask_fixed is None
    assert pairs[1].fixed_landmarks == str(tmp_path / "f.csv") and pairs[1].mask_fixed == str(tmp_path / "mask.nii.gz")
    assert pairs[1].register_arguments() == [str(tmp_path / "sub/f.nii.gz"), str(tmp_path / "m.nii.gz"),
                                             "--fixed-landmarks", str(tmp_path / "f.csv"),
                                             "--moving-landmarks", str(tmp_path / "m.csv"),
                                             "--mask-fixed", str(tmp_path / "mask.nii.gz")]


@pytest.mark.parametrize("text, message", [
    ("fixed,moving\nf,m\n", "lacks id"),
    ("id,fixed,moving,fixed_landmark\na,f,m,x\n", "unknown column"),
    ("id,fixed,moving\na,f,m\na,f2,m2\n", "repeats pair 1"),
    ("id,fixed,moving\n../up,f,m\n", "cannot be a folder name"),
    ("id,fixed,moving\nresults.csv,f,m\n", "clashes"),
    # before: accepted, and broken on Windows / macOS file systems or by the 255-byte name limit
    ("id,fixed,moving\nResults.csv,f,m\n", "clashes"),
    ("id,fixed,moving\nscan*1,f,m\n", "cannot be a folder name on every system"),
    ("id,fixed,moving\n\"a\tb\",f,m\n", "cannot be a folder name on every system"),
    ("id,fixed,moving\nA,f,m\na,f2,m2\n", r"id 'a' repeats pair 1 \('A', apart from upper and lower case\)"),
    ("id,fixed,moving\n" + "x" * 201 + ",f,m\n", "is 201 bytes long; folder names stop at 255"),
    ("id,fixed,moving\na,f,\n", "moving cell is empty"),
    ("id,fixed,moving,fixed_landmarks\na,f,m,f.csv\n", "both fixed_landmarks and moving_landmarks"),
    ("id,fixed,moving\n", "lists no pairs"),
    ("", "the header lacks id, fixed, moving"),
    ("id;fixed;moving\na;f.nii.gz;m.nii.gz\n", r"the header lacks id, fixed, moving.*\(its columns are separated by "
                                               r"semicolons, .*save it as comma-separated values\)"),
    # before: the extra cell was dropped without a word (here a path with a comma, split in two: the pair ran
    # with moving = "scans/a" and the rest of the path was lost)
    ("id,fixed,moving\na,f.nii.gz,scans/a,b.nii.gz\n",
     r"pairs.csv line 2: 4 cells, but the header names 3 columns: cell 4 \('b.nii.gz'\) belongs to no column.*"
     r"quote a cell that holds a comma"),
    ("id,fixed,moving,\na,f,m,notes\n", r"line 2: cell 4 \('notes'\) is under a column with no name"),
    # before: the last copy of a repeated column won without a word
    ("id,fixed,moving,Fixed\na,f1,m,f2\n", r"pairs.csv line 1: the column 'fixed' appears 2 times \(columns 2, 4\).*"
     "keep one column of each name"),
    # before: an unclosed quote swallowed the rest of the file into one cell, reported as "the moving cell is empty"
    ('id,fixed,moving\na,"f.nii.gz,m.nii.gz\nb,f2,m2\n',
     "pairs.csv line 2: a quote opened on this line is never closed; quote a cell that holds a comma"),
    ('id,fixed,moving\na,f,"m.nii.gz\n', "line 2: a quote opened on this line is never closed"),
    ('id,fixed,moving\na,"f,m\nb,f2,"m2\nc,f3,m3\n', "line 2: a quoted cell is followed by more text"),
    ('id,fixed,moving\na,"f,m\nb,f2,m2"\nc,f3,m3\n', r"line 2: a quoted cell runs on to line 3.*quote left open"),
    ('id,fixed,moving\na,"f.nii.gz"x,m\n', "line 2: a quoted cell is followed by more text before the next comma"),
])
def test_pairs_csv_errors_name_the_problem(tmp_path, text, message):
    with pytest.raises(PairsError, match=message):
        read_pairs_csv(_csv(tmp_path, text))


def test_pairs_csv_accepts_empty_cells_beyond_the_header(tmp_path):
    """Spreadsheets pad rows with empty cells (and name no column for them): nothing is lost, so nothing is refused."""
    path = _csv(tmp_path, 'id,fixed,moving,,\na,f.nii.gz,"m,1.nii.gz",,\nb,f.nii.gz,m.nii.gz,, \n'
                          'c,f.nii.gz,m.nii.gz\n')
    pairs = read_pairs_csv(path)
    assert [p.id for p in pairs] == ["a", "b", "c"] and pairs[0].moving == str(tmp_path / "m,1.nii.gz")


def test_pairs_csv_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="id,fixed,moving"):
        read_pairs_csv(tmp_path / "nope.csv")


def test_atlas_pairs_from_folder_and_glob(tmp_path):
    atlas = tmp_path / "atlas.nii.gz"
    atlas.write_bytes(b"x")
    scans = tmp_path / "scans"
    scans.mkdir()
    for name in ("s2.nii.gz", "s1.nrrd", "notes.txt"):
        (scans / name).write_bytes(b"x")
    pairs = pairs_from_atlas(atlas, scans)
    assert [p.id for p in pairs] == ["s1", "s2"]
    assert all(p.fixed == str(atlas.resolve()) for p in pairs)
    assert [p.id for p in pairs_from_atlas(atlas, str(scans / "*.nii.gz"))] == ["s2"]
    with pytest.raises(PairsError, match="no moving image matches"):
        pairs_from_atlas(atlas, str(tmp_path / "none" / "*.nii.gz"))
    with pytest.raises(FileNotFoundError, match="--atlas"):
        pairs_from_atlas(tmp_path / "missing.nii.gz", scans)


def test_memory_estimate_from_headers(cohort_factory, tmp_path):
    pairs = read_pairs_csv(cohort_factory(n_good=1, corrupt=True))
    geometry = header_geometry(pairs[0].fixed)
    assert geometry is not None and geometry.size == (24, 24, 24)
    small = estimate_pair_memory_gb(pairs[0], "fast")
    assert PAIR_OVERHEAD_GB < small < PAIR_OVERHEAD_GB + 0.05
    big = Pair("big", str(Path(__file__).parents[2] / "Resources/SampleData/lung_fixed.nii.gz"),
               str(Path(__file__).parents[2] / "Resources/SampleData/lung_moving.nii.gz"))
    assert estimate_pair_memory_gb(big, "fast") > small
    # unreadable header: the default, and the pair itself fails later with the reader's message
    assert header_geometry(pairs[1].moving) is None
    assert estimate_pair_memory_gb(Pair("x", pairs[1].moving, pairs[1].moving), "fast", default_gb=3.0) == 3.0
    with pytest.raises(ValueError, match="unknown quality"):
        estimate_pair_memory_gb(pairs[0], "superb")


def test_results_csv_round_trip_is_atomic(tmp_path):
    rows = [{"id": "a", "status": "ok", "error": "", "tre_after_mm": 0.5, "time_s": 2.0, "preset": "lung-ct"},
            failed_row("b", "bad\nimage,  with comma", wall_s=0.1)]
    path = tmp_path / "results.csv"
    write_results_csv(path, rows)
    back = read_results_csv(path)
    assert list(back) == ["a", "b"]
    assert back["a"]["tre_after_mm"] == 0.5 and back["a"]["dice_after"] is None and back["a"]["preset"] == "lung-ct"
    assert back["b"]["status"] == "failed" and back["b"]["error"] == "bad image, with comma"
    assert path.read_text().splitlines()[0] == ",".join(RESULT_COLUMNS)
    assert [p.name for p in tmp_path.iterdir()] == ["results.csv"]  # no temporary file left


def test_summary_lists_slowest_worst_and_failed(tmp_path):
    rows = [{"id": f"p{i}", "status": "ok", "tre_after_mm": float(i), "dice_after": 0.9 - i / 100,
             "folds_pct": 0.01 * i, "time_s": 10.0 + i} for i in range(8)]
    rows.append(failed_row("broken", "cannot be read as an image"))
    png, md = write_summary(tmp_path, rows)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000
    text = md.read_text()
    assert "9 pairs: 8 ok, 1 failed" in text
    slowest = text.split("## Slowest pairs")[1].split("##")[0]
    assert slowest.index("| p7 |") < slowest.index("| p6 |") and "| p0 |" not in slowest  # top 5, slowest first
    assert "| broken | cannot be read as an image |" in text
    assert "TRE: the landmarks" not in text  # no landmarks: nothing said of them


@pytest.mark.parametrize("guided, said", [(("yes", "yes"), "not an independent check"),
                                          (("no", "no"), "only measured (an independent check)"),
                                          (("yes", "no"), "guided some registrations")])
def test_summary_says_whether_the_tre_is_an_independent_check(tmp_path, guided, said):
    rows = [{"id": f"p{i}", "status": "ok", "tre_after_mm": 1.0, "landmarks_guided": g} for i, g in enumerate(guided)]
    _, md = write_summary(tmp_path, rows)
    assert said in md.read_text()


def test_error_message_is_the_cli_error_line():
    text = "warning: something\nadregnet register: error: moving.nii.gz: cannot be read\n"
    assert _error_message(text, 2) == "moving.nii.gz: cannot be read"
    assert _error_message("", 3) == "adregnet register exited with code 3 and printed nothing"


def test_run_pair_writes_what_register_writes_and_nothing_on_failure(cohort_factory, tmp_path):
    pairs = read_pairs_csv(cohort_factory(n_good=1, corrupt=True))
    out = tmp_path / "out"
    options = PairOptions(quality="fast", device="cpu", threads=1)
    row = run_pair(pairs[0], str(out), options, memory_estimate_gb=0.3)
    assert row["status"] == "ok", row["error"]
    written = {p.name for p in (out / "pair0").iterdir()}
    assert written == set(OUTPUT_FILES) | set(INVERSE_FILES) | {"warped_labels.nii.gz"}
    metrics = json.loads((out / "pair0" / "metrics.json").read_text())
    assert row["tre_after_mm"] == pytest.approx(metrics["tre_after"]["mean"])
    assert row["tre_after_mm"] < row["tre_before_mm"]
    assert row["landmarks_guided"] == "yes"  # the default: the pairs pulled the registration
    assert row["time_s"] == pytest.approx(metrics["timings_s"]["total"])
    assert row["folds_pct"] == pytest.approx(100 * metrics["jacobian"]["folding_fraction"])
    assert 0 < row["dice_before"] <= row["dice_after"] + 0.02 and row["dice_after"] > 0.5
    assert row["memory_estimate_gb"] == 0.3 and row["memory_peak_gb"] > 0.1
    assert row["preset"] == "lung-ct" and row["quality"] == "fast"

    bad = run_pair(pairs[1], str(out), options)
    assert bad["status"] == "failed" and "corrupt.nii.gz" in bad["error"] and "cannot be read" in bad["error"]
    assert not (out / "bad").exists()
    assert list((out / PARTIAL_DIR).iterdir()) == []  # the failed attempt's folder was removed


@pytest.mark.parametrize("make_args, message", [
    (lambda d: [d / "nope.csv", "-o", d / "out"], "does not exist"),
    (lambda d: [d / "scans", "-o", d / "out", "--atlas", d / "missing.nii.gz"], "atlas"),
    (lambda d: [d / "pairs.csv", "-o", d / "out", "--atlas-mask", d / "m.nii.gz"], "--atlas-mask goes with --atlas"),
    (lambda d: [d / "pairs.csv", "-o", d / "out", "--threads", "-1"], "--threads"),
])
def test_batch_cli_errors_exit_2_with_one_line(tmp_path, capsys, make_args, message):
    from ADRegNetLib.cohort.cli import main

    (tmp_path / "scans").mkdir()
    assert main([str(a) for a in make_args(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("adregnet batch: error: ") and message in err


def test_unreachable_scheduler_is_a_clear_error(cohort_factory, tmp_path, capsys):
    pytest.importorskip("distributed")
    from cohort_helpers import free_port

    from ADRegNetLib.cohort import BatchError, register_cohort

    with pytest.raises(BatchError, match="cannot reach the Dask scheduler"):
        register_cohort(cohort_factory(n_good=1), tmp_path / "out", scheduler=f"tcp://127.0.0.1:{free_port()}",
                        wait_for_workers_s=1, progress=False)


def test_pairs_in_threads_capture_their_own_output_and_share_hdf5_safely(tmp_path):
    """Two pairs in one worker run in two threads: each sees only its own CLI output, and ITK's
    transform-file (HDF5) I/O goes through one lock."""
    import sys
    import threading

    from ADRegNetLib.cohort.worker import _captured

    seen: dict[str, str] = {}
    barrier = threading.Barrier(2)

    def pair(name: str) -> None:
        with _captured() as chunks:
            barrier.wait()
            for _ in range(50):
                print(f"adregnet register: error: {name}", file=sys.stderr)
        seen[name] = "".join(chunks)

    threads = [threading.Thread(target=pair, args=(n,)) for n in ("a", "b")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert seen["a"].count("error: a") == 50 and "error: b" not in seen["a"]
    assert seen["b"].count("error: b") == 50 and "error: a" not in seen["b"]
    # every transform file of the io package goes through one lock: a write waits while it is held
    from ADRegNetLib.io.linear import read_linear_transform, write_linear_transform
    from ADRegNetLib.io.transform_files import TRANSFORM_FILE_LOCK
    from ADRegNetLib.spatial.affine import AffineMap

    path = tmp_path / "t.h5"
    affine = AffineMap(np.eye(3), np.array([1.0, 2.0, 3.0]))
    writer = threading.Thread(target=write_linear_transform, args=(affine, path))
    with TRANSFORM_FILE_LOCK:
        writer.start()
        writer.join(timeout=0.5)
        assert writer.is_alive() and not path.exists()  # blocked by the lock
    writer.join(timeout=30)
    np.testing.assert_allclose(read_linear_transform(path).offset, [1.0, 2.0, 3.0])


def test_landmarks_check_only_reaches_every_pairs_command():
    from ADRegNetLib.cohort.cli import build_parser

    assert "--landmarks-check-only" not in PairOptions().register_options()
    assert PairOptions(landmarks_check_only=True).register_options()[-1] == "--landmarks-check-only"
    assert "--sliding" not in PairOptions().register_options()  # auto: the register default
    assert PairOptions(sliding="off").register_options()[-2:] == ["--sliding", "off"]
    args = build_parser().parse_args(["PAIRS.csv", "-o", "OUT", "--landmarks-check-only"])
    assert args.landmarks_check_only is True


def test_no_local_change_reaches_every_pairs_command():
    from ADRegNetLib.cli.main import build_parser as register_parser
    from ADRegNetLib.cohort.cli import build_parser

    assert "--no-local-change" not in PairOptions().register_options()  # the register default: looked for
    options = PairOptions(find_local_change=False).register_options()
    assert options[-1] == "--no-local-change"
    assert register_parser().parse_args(["register", "F", "M", "-o", "O", *options]).no_local_change is True
    assert build_parser().parse_args(["PAIRS.csv", "-o", "OUT", "--no-local-change"]).no_local_change is True


def test_an_output_folder_that_is_not_a_result_is_never_replaced(tmp_path, capsys):
    """Before: a data folder given as -o had its subject folder (named like the pair's id) replaced by the
    results, deleting the scans in it, and the run exited 0; a file named like an id was deleted too."""
    from ADRegNetLib.cli.main import main
    from ADRegNetLib.cohort.worker import _publish, not_a_result

    data = tmp_path / "data"
    (data / "sub01").mkdir(parents=True)
    sample = Path(__file__).resolve().parents[2] / "Resources" / "SampleData"
    for name in ("lung_fixed.nii.gz", "lung_moving.nii.gz"):
        (data / "sub01" / name).write_bytes((sample / name).read_bytes())
    (data / "pairs.csv").write_text("id,fixed,moving\nsub01,sub01/lung_fixed.nii.gz,sub01/lung_moving.nii.gz\n")
    before = sorted(p.name for p in (data / "sub01").iterdir())
    assert main(["batch", str(data / "pairs.csv"), "-o", str(data), "--quality", "fast", "-q"]) == 2
    err = capsys.readouterr().err
    assert "1 pair output folder(s) are in the way, first: " in err and "holds the pair's input" in err
    assert "nothing was run and nothing is replaced" in err
    assert sorted(p.name for p in (data / "sub01").iterdir()) == before

    notes = tmp_path / "out" / "p1"
    notes.mkdir(parents=True)
    (notes / "my notes.txt").write_text("keep")
    assert "holds files that are not AD-RegNet results (my notes.txt)" in not_a_result(notes)
    (tmp_path / "out" / "p2").write_text("keep")
    assert "exists and is not a folder of AD-RegNet results" in not_a_result(tmp_path / "out" / "p2")
    finished = tmp_path / "out" / ".partial" / "p1.x"
    finished.mkdir(parents=True)
    (finished / "metrics.json").write_text("{}")
    with pytest.raises(FileExistsError, match="nothing is replaced"):
        _publish(finished, notes)
    assert (notes / "my notes.txt").read_text() == "keep"
    # files under AD-RegNet's output names but no metrics.json: a batch publishes a pair whole, so these are
    # another tool's or the user's (before: replaced without a word, review of the nineteenth session)
    theirs = tmp_path / "out" / "p3"
    theirs.mkdir()
    for name in ("warped.nii.gz", "transform.h5", "report.png"):
        (theirs / name).write_bytes(b"MINE")
    assert "holds report.png, transform.h5, warped.nii.gz but no metrics.json" in not_a_result(theirs)
    with pytest.raises(FileExistsError, match="nothing is replaced"):
        _publish(finished, theirs)
    assert (theirs / "warped.nii.gz").read_bytes() == b"MINE"
    empty = tmp_path / "out" / "p4"  # an empty folder (made by hand, or left by a tool) is filled
    empty.mkdir()
    assert not_a_result(empty) is None
    _publish(finished, empty)
    assert (empty / "metrics.json").is_file()


@pytest.mark.parametrize("argv_tail, message", [
    (["--device", "tpu"], "unknown device 'tpu'"),  # before: the cluster started and every pair failed on its own
    (["-o", "{csv}"], "a file is in the way; give a folder for the results"),  # before: a FileExistsError traceback
    (["-o", "{csv}/sub"], "a file is in the way"),  # before: NotADirectoryError traceback
])
def test_batch_settings_and_output_refused_before_any_pair(tmp_path, capsys, argv_tail, message):
    from ADRegNetLib.cli.main import main

    pairs = _csv(tmp_path, "id,fixed,moving\np1,f.nii.gz,m.nii.gz\n")
    tail = [a.format(csv=pairs) for a in argv_tail]
    argv = ["batch", str(pairs), *(["-o", str(tmp_path / "out")] if "-o" not in tail else []), *tail, "-q"]
    assert main(argv) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_pairs_csv_in_another_encoding_says_to_save_it_as_utf8(tmp_path):
    path = tmp_path / "pairs.csv"
    path.write_bytes("id,fixed,moving\npatiént,a.nii.gz,b.nii.gz\n".encode("latin-1"))
    with pytest.raises(PairsError, match=r"pairs.csv: cannot be read as UTF-8 text \(byte 20\).*save it as UTF-8"):
        read_pairs_csv(path)


def test_a_second_cohort_into_the_same_folder_keeps_the_first_ones_rows(tmp_path):
    """Before: each run rewrote results.csv and the summary with its own pairs only, so a second PAIRS.csv run
    into the same OUTDIR dropped the first's rows (its pair folders stayed)."""
    from ADRegNetLib.cohort import register_cohort

    out = tmp_path / "out"
    (out / "p1").mkdir(parents=True)
    (out / "p1" / "metrics.json").write_text(json.dumps({"quality": "fast", "timings_s": {"total": 1.0}}))
    write_results_csv(out / "results.csv", [failed_row("first_cohort_pair", "was broken")])
    pairs = _csv(tmp_path, "id,fixed,moving\np1,f.nii.gz,m.nii.gz\n")
    rows = register_cohort(pairs, out, progress=False)  # p1 is complete: nothing runs
    assert [r["id"] for r in rows] == ["p1"]  # what this run returns and counts: its own pairs
    kept = read_results_csv(out / "results.csv")
    assert set(kept) == {"p1", "first_cohort_pair"} and kept["first_cohort_pair"]["error"] == "was broken"
    assert "first_cohort_pair" in (out / "summary.md").read_text()
