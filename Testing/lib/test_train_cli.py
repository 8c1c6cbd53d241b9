"""``adregnet train`` options are read strictly, without SimpleITK (the GPU host has none): ``--steps 1_0`` was 10 to
Python's ``int``, ``--lr nan`` and ``--time-limit-min inf`` were taken as given (review of the twentieth session)."""
from __future__ import annotations

import argparse
import importlib
from pathlib import Path

import pytest
from train_helpers import sitk_modules_loaded

from ADRegNetLib.train.cli import add_train_arguments

REPO_ROOT = Path(__file__).resolve().parents[2]


def _parse(argv: list[str]) -> argparse.Namespace:
    return add_train_arguments(argparse.ArgumentParser(prog="adregnet train")).parse_args(argv)


def test_good_values_are_read():
    args = _parse(["--steps", "2000", "--lr", "3e-5", "--time-limit-min", "2.5"])
    assert args.steps == 2000 and type(args.steps) is int
    assert args.lr == 3e-5 and args.time_limit_min == 2.5
    assert _parse(["--steps", " +12 ", "--lr", ".5", "--time-limit-min", "4."]).steps == 12
    assert _parse([]).steps is None and _parse([]).lr is None


@pytest.mark.parametrize("option, value, message", [
    ("--steps", "1_0", "'1_0' holds '_', which Python would read as a digit separator (1_0 as 10)"),
    ("--steps", "nan", "'nan' is not a finite number"),
    ("--steps", "inf", "'inf' is not a finite number"),
    ("--steps", "1.5", "'1.5' is not a whole number"),
    ("--steps", "1e3", "'1e3' is not a whole number"),
    ("--steps", "0", "'0' is not at least 1"),
    ("--steps", "-5", "'-5' is not at least 1"),
    ("--steps", "١٢", "holds characters other than the ASCII digits"),
    ("--lr", "1_0e-4", "holds '_'"),
    ("--lr", "nan", "'nan' is not a finite number"),
    ("--lr", "-inf", "'-inf' is not a finite number"),
    ("--lr", "1e400", "is beyond the range of a 64-bit floating-point number"),
    ("--lr", "0", "'0' is not above 0"),
    ("--lr", "-1e-4", "'-1e-4' is not above 0"),
    ("--lr", "1,5e-4", "uses ',' as the decimal point"),
    ("--time-limit-min", "inf", "'inf' is not a finite number"),
    ("--time-limit-min", "0", "'0' is not above 0"),
    ("--time-limit-min", "", "is empty"),
])
def test_bad_values_are_refused_with_the_problem_and_the_fix(capsys, option, value, message):
    with pytest.raises(SystemExit) as exit_info:
        _parse([f"{option}={value}"])  # '=': argparse takes '-1e-4' after a space for an option
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert f"argument {option}: " in err and message in err, err
    assert ("write it as a plain whole number" if option == "--steps" else "write it as a plain decimal number") in err


@pytest.mark.parametrize("module", ["ADRegNetLib.train.ablations", "ADRegNetLib.train.profile_step"])
@pytest.mark.parametrize("value, message", [
    ("1_0", "'1_0' holds '_', which Python would read as a digit separator (1_0 as 10)"),
    ("nan", "'nan' is not a finite number"),
    ("0", "'0' is not at least 1"),
])
def test_the_training_tools_read_steps_as_strictly(capsys, module, value, message):
    """``--steps 1_0`` was 10 to the ablation and profiling tools too (they used ``int``)."""
    main = importlib.import_module(module).main
    with pytest.raises(SystemExit) as exit_info:
        main([f"--steps={value}"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert f"argument --steps: {message}; write it as a plain whole number (e.g. " in err, err


def test_the_training_command_never_imports_simpleitk():
    """The GPU host has no SimpleITK: reading the train options (also refusing one) must not import it (the strict
    reader is ADRegNetLib.numbers, not ADRegNetLib.io.numbers, whose package imports SimpleITK)."""
    code = ("import argparse\n"
            "from ADRegNetLib.train.cli import add_train_arguments\n"
            "parser = add_train_arguments(argparse.ArgumentParser())\n"
            "assert parser.parse_args(['--steps', '20', '--lr', '1e-4']).steps == 20\n"
            "try:\n"
            "    parser.parse_args(['--steps', '1_0'])\n"
            "except SystemExit:\n"
            "    pass\n")
    assert sitk_modules_loaded(code, REPO_ROOT) == []
