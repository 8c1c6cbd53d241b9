"""The training tools and the benchmark commands read numbers strictly, as ``adregnet`` and ``adregnet train`` do.

Before: they used Python's ``int``/``float`` as argparse types, so ``--pairs 1_0`` was 10 pairs, ``--threads 1_0``
10 threads, ``--timeout nan`` or ``--spacing inf`` were taken as given (``nan`` seconds never times out), and
``--pairs 1_0:9`` of the inter-subject benchmark was subject 10. Each is now refused at parse time with the quoted
value, the problem and the fix (:func:`ADRegNetLib.numbers.argument_type`); no test here trains or registers.
"""
from __future__ import annotations

import argparse
import importlib
from pathlib import Path

import pytest
from train_helpers import sitk_modules_loaded

REPO_ROOT = Path(__file__).resolve().parents[2]

# command -> (module, the arguments it requires besides the one under test)
COMMANDS = {
    "evaluate": ("ADRegNetLib.train.evaluate", ["--weights", "w.pt", "--out", "o.json"]),
    "case_check": ("ADRegNetLib.train.case_check", ["case"]),
    "prep": ("ADRegNetLib.train.prep", ["--data", "data", "-o", "prepared"]),
    "ablations": ("ADRegNetLib.train.ablations", []),
    "profile_step": ("ADRegNetLib.train.profile_step", []),
    "benchmark": ("benchmarks.cli", ["-o", "out"]),
    "benchmark_child": ("benchmarks.cli", ["--run-one", "--case", "case", "--method", "identity", "--work", "w"]),
    "intersubject": ("benchmarks.intersubject", ["-o", "out"]),
    "large_input": ("benchmarks.large_input", []),
}

# (command, option, whole, positive, a good value)
OPTIONS = [
    ("evaluate", "--pairs", True, True, "12"),
    ("evaluate", "--seed", True, False, "0"),
    ("evaluate", "--crop", True, True, "48"),
    ("evaluate", "--threads", True, True, "1"),
    ("evaluate", "--passes", True, True, "2"),
    ("evaluate", "--refine-downsample", False, True, "1.5"),
    ("evaluate", "--residual-downsample", False, True, "2"),
    ("case_check", "--threads", True, True, "1"),
    ("prep", "--spacing", False, True, "1.5"),
    ("prep", "--shapes", True, True, "4"),
    ("ablations", "--pairs", True, True, "12"),
    ("ablations", "--seed", True, False, "0"),
    ("ablations", "--train-seed", True, False, "0"),
    ("profile_step", "--threads", True, True, "1"),
    ("benchmark", "--dirlab-hu-offset", False, False, "-1024"),
    ("benchmark", "--threads", True, True, "1"),
    ("benchmark", "--seed", True, False, "0"),
    ("benchmark", "--timeout", False, True, "60.5"),
    ("benchmark_child", "--threads", True, True, "1"),
    ("intersubject", "--spacing", False, True, "1.5"),
    ("intersubject", "--threads", True, True, "1"),
    ("intersubject", "--seed", True, False, "0"),
    ("large_input", "--threads", True, True, "1"),
]


def _parser(command: str) -> argparse.ArgumentParser:
    module = importlib.import_module(COMMANDS[command][0])
    if command == "benchmark":
        return module.add_benchmark_arguments(argparse.ArgumentParser(prog="python -m benchmarks"))
    if command == "benchmark_child":
        return module.build_child_parser()
    return module.build_parser()


def _argv(command: str, option: str, value: str) -> list[str]:
    # '=': argparse takes '-1024' after a space for an option; --crop takes three values (Z Y X)
    given = ["--crop", value, "64", "64"] if option == "--crop" else [f"{option}={value}"]
    return COMMANDS[command][1] + given


def _refusal(capsys, command: str, option: str, value: str) -> str:
    """stderr of the command's ``main`` given ``option value`` (it must stop while parsing, exit status 2)."""
    main = importlib.import_module(COMMANDS[command][0]).main
    with pytest.raises(SystemExit) as exit_info:
        main(_argv(command, option, value))
    assert exit_info.value.code == 2
    return capsys.readouterr().err


@pytest.mark.parametrize("value, problem", [
    ("1_0", "'1_0' holds '_', which Python would read as a digit separator (1_0 as 10)"),
    ("nan", "'nan' is not a finite number"),
    ("inf", "'inf' is not a finite number"),
])
@pytest.mark.parametrize("command, option, whole, positive, good", OPTIONS)
def test_what_python_would_read_is_refused_with_the_value_and_the_fix(capsys, command, option, whole, positive,
                                                                     good, value, problem):
    err = _refusal(capsys, command, option, value)
    fix = "write it as a plain whole number (e.g. " if whole else "write it as a plain decimal number"
    assert f"argument {option}: {problem}; {fix}" in err, err


@pytest.mark.parametrize("command, option, whole, positive, good",
                         [case for case in OPTIONS if case[2]])
def test_whole_numbers_refuse_fractions(capsys, command, option, whole, positive, good):
    assert f"argument {option}: '2.5' is not a whole number" in _refusal(capsys, command, option, "2.5")


@pytest.mark.parametrize("command, option, whole, positive, good",
                         [case for case in OPTIONS if case[3]])
def test_counts_sizes_and_times_refuse_zero(capsys, command, option, whole, positive, good):
    problem = "is not at least 1" if whole else "is not above 0"
    assert f"argument {option}: '0' {problem}" in _refusal(capsys, command, option, "0")


@pytest.mark.parametrize("command, option, whole, positive, good", OPTIONS)
def test_plain_values_are_read(command, option, whole, positive, good):
    args = _parser(command).parse_args(_argv(command, option, good))
    value = getattr(args, option.lstrip("-").replace("-", "_"))
    value = value[0] if isinstance(value, list) else value  # --crop, --passes, --refine-downsample
    assert value == (int(good) if whole else float(good)) and type(value) is (int if whole else float)


@pytest.mark.parametrize("command", list(COMMANDS))
def test_the_defaults_are_unchanged(command):
    """Defaults are not parsed from text; omitting the options gives what the commands gave before."""
    args = _parser(command).parse_args(COMMANDS[command][1])
    expected = {
        "evaluate": dict(pairs=24, seed=1234, crop=[64, 64, 64], threads=2, passes=[1], refine_downsample=[None],
                         residual_downsample=1.0),
        "case_check": dict(threads=2),
        "prep": dict(spacing=2.0, shapes=6),
        "ablations": dict(steps=300, pairs=24, seed=None, train_seed=None),
        "profile_step": dict(steps=20, threads=None),
        "benchmark": dict(dirlab_hu_offset=0.0, threads=2, seed=0, timeout=3600.0),
        "benchmark_child": dict(threads=2),
        "intersubject": dict(spacing=2.0, threads=2, seed=0),
        "large_input": dict(threads=2),
    }[command]
    assert {key: getattr(args, key) for key in expected} == expected


def test_seeds_may_be_negative_whole_numbers():
    """A seed is any whole number to the training tools (as it was to ``int``); only its form is checked."""
    assert _parser("ablations").parse_args(["--seed=-3"]).seed == -3


@pytest.mark.parametrize("command", ["benchmark", "intersubject"])
def test_benchmark_seeds_are_refused_below_zero(command, capsys):
    """The benchmarks seed numpy's generators (SeedSequence), which raised a ValueError after the run began."""
    module, required = COMMANDS[command]
    with pytest.raises(SystemExit) as stop:
        importlib.import_module(module).main(required + ["--seed=-1"])
    assert stop.value.code == 2 and "'-1' is below 0" in capsys.readouterr().err


@pytest.mark.parametrize("text, message", [
    ("1_0:9", "pair '1_0:9': '1_0' holds '_', which Python would read as a digit separator (1_0 as 10)"),
    ("1:9,2:1_0", "pair '2:1_0': '1_0' holds '_'"),
    ("nan:9", "pair 'nan:9': 'nan' is not a finite number"),
    ("1.0:9", "pair '1.0:9': '1.0' is not a whole number"),
    ("\u0661:9", "pair '\u0661:9': '\u0661' holds characters other than the ASCII digits"),  # an Arabic-Indic 1
    ("1:9:3", "pair '1:9:3' is not two subjects joined by ':'"),
    ("1-9", "pair '1-9' is not two subjects joined by ':'"),
    ("1:11", "pair '1:11': the subjects are numbered 1 to 10"),
    ("0:9", "pair '0:9': the subjects are numbered 1 to 10"),
    (" , ", "' , ' names no pair"),
])
def test_intersubject_pairs_name_the_bad_item_and_the_fix(capsys, text, message):
    err = _refusal(capsys, "intersubject", "--pairs", text)
    assert f"argument --pairs: {message}" in err, err
    assert "write MOVING:FIXED subject numbers 1-10, comma-separated, e.g. 1:9,2:10" in err


def test_intersubject_pairs_are_read():
    args = _parser("intersubject").parse_args(["-o", "out", "--pairs", " 1:9, +2:10,"])
    assert args.pairs == [(1, 9), (2, 10)]


def test_the_training_tools_never_import_simpleitk():
    """The GPU host has no SimpleITK: building the training tools' parsers and refusing a value must not import it."""
    code = ("from ADRegNetLib.train import ablations, case_check, evaluate, prep, profile_step\n"
            "for module, argv in ((ablations, ['--pairs=1_0']), (case_check, ['c', '--threads=1_0']),\n"
            "                     (evaluate, ['--weights=w', '--out=o', '--pairs=1_0']),\n"
            "                     (prep, ['--data=d', '-o', 'p', '--shapes=1_0']), (profile_step, ['--threads=1_0'])):\n"
            "    try:\n"
            "        module.build_parser().parse_args(argv)\n"
            "    except SystemExit:\n"
            "        pass\n")
    assert sitk_modules_loaded(code, REPO_ROOT) == []


@pytest.mark.parametrize("command, option", [("evaluate", "--seed"), ("ablations", "--seed"), ("ablations", "--train-seed")])
def test_training_seeds_beyond_torchs_range_are_refused(command, option, capsys):
    """torch's manual_seed raised "Overflow when unpacking long long" after the run began."""
    parser = _parser(command)
    required = COMMANDS[command][1]
    with pytest.raises(SystemExit):
        parser.parse_args(required + [f"{option}=99999999999999999999999"])
    assert "is above 9223372036854775807" in capsys.readouterr().err
    assert getattr(parser.parse_args(required + [f"{option}=9223372036854775807"]), option[2:].replace("-", "_")) == 2 ** 63 - 1
