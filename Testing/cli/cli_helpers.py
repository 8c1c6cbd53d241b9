"""Shared checks of the command-line tests: one clean error line, and no output files left behind."""
from __future__ import annotations

import re
from pathlib import Path

from ADRegNetLib.cli.main import OUTPUT_FILES, main


def expect_cli_error(argv, capsys, pattern: str, command: str = "register") -> str:
    """Run ``main(argv)`` in process and check it fails as the CLI promises: exit code 2, nothing on stdout,
    no traceback, ONE stderr line ``adregnet <command>: error: ...`` matching ``pattern``. Returns that line."""
    rc = main(argv)
    captured = capsys.readouterr()
    err = captured.err.strip()
    assert rc == 2, (rc, err)
    assert "Traceback" not in captured.err and captured.out == ""
    lines = err.splitlines()
    assert len(lines) == 1, err  # one line, not a log dump
    assert lines[0].startswith(f"adregnet {command}: error: "), err
    assert re.search(pattern, lines[0]), f"{pattern!r} not in {lines[0]!r}"
    return lines[0]


def assert_no_outputs(out: Path) -> None:
    """The output folder (if it was made at all) holds none of the register command's output files."""
    if out.exists():
        assert not any((out / n).exists() for n in OUTPUT_FILES), sorted(p.name for p in out.iterdir())
