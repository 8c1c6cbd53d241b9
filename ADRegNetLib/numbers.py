r"""Numbers written as text (landmark files, image headers, command-line settings), read strictly.

Python's ``float`` and ``int`` accept more than a plain decimal number: ``float("1_0")`` is 10 (the
underscore is a digit separator in Python source, not in any landmark or header format), ``"nan"``,
``"inf"`` and ``"infinity"`` are numbers to it, ``"1e400"`` becomes infinity, and digits of other
scripts (``"١٢"``) are read too. A coordinate file that says ``1_0`` was meant as 1.0 or 1,0, not 10:
reading it as 10 moves a landmark silently. Here only ASCII decimal numbers are accepted, optionally
signed, with one optional '.' and an optional exponent (``12``, ``-3.5``, ``.5``, ``4.``, ``1e-3``),
and they must be finite in float64; anything else is refused with the reason and what to write instead.

This module needs only ``re`` and ``math``, so every command reads numbers with it, the training command too
(it runs on the GPU host, which has no SimpleITK: hence here and not in :mod:`ADRegNetLib.io`, whose
``__init__`` imports SimpleITK; ``ADRegNetLib.io.numbers`` re-exports it for the readers there).
"""
from __future__ import annotations

import math
import argparse
import re
from typing import Callable, Optional

__all__ = ["NUMBER_FIX", "TORCH_MAX_SEED", "argument_type", "number_problem", "parse_number", "parse_whole_number",
           "whole_number_problem"]

_NUMBER = re.compile(r"[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?", re.ASCII)
_WHOLE = re.compile(r"[+-]?\d+", re.ASCII)
_NOT_FINITE = re.compile(r"[+-]?(?:nan|inf|infinity)", re.IGNORECASE)

_DECIMAL_FIX = "write it as a plain decimal number with '.' as the decimal point (e.g. {})"
_WHOLE_FIX = "write it as a plain whole number (e.g. {})"

#: the largest seed torch's generators take (``manual_seed``: a signed 64-bit number above 0)
TORCH_MAX_SEED = 2 ** 63 - 1
#: what to write instead, for messages
NUMBER_FIX = _DECIMAL_FIX.format("10, -3.5 or 1.2e-3")


def number_problem(text: str) -> Optional[str]:
    """Why ``text`` is not a plain finite decimal number, or None when it is one.

    Args:
        text: the text as found (surrounding spaces are ignored).

    Returns:
        None, or a phrase that follows the quoted value in a message ("is not a finite number").
    """
    token = str(text).strip()
    if not token:
        return "is empty"
    if "_" in token:
        return "holds '_', which Python would read as a digit separator (1_0 as 10)"
    if _NOT_FINITE.fullmatch(token):
        return "is not a finite number"
    if not _NUMBER.fullmatch(token):
        if "," in token and _NUMBER.fullmatch(token.replace(",", ".", 1)):
            return "uses ',' as the decimal point"
        if not token.isascii():
            return "holds characters other than the ASCII digits, '.', '+', '-' and 'e'"
        return "is not a number"
    if not math.isfinite(float(token)):
        return "is beyond the range of a 64-bit floating-point number (about 1.8e308)"
    return None


def parse_number(text: str) -> float:
    """``text`` as a float when it is a plain finite decimal number (see the module docstring).

    Raises:
        ValueError: the message is the quoted value and why it is refused.
    """
    return float(_checked(text, number_problem(text)))


def whole_number_problem(text: str) -> Optional[str]:
    """Why ``text`` is not a plain whole decimal number (``12``, ``-3``), or None when it is one."""
    problem = number_problem(text)
    if problem is not None:
        return problem
    return None if _WHOLE.fullmatch(str(text).strip()) else "is not a whole number"


def parse_whole_number(text: str) -> int:
    """``text`` as an int when it is a plain whole decimal number (no '_', no '.', no exponent).

    Raises:
        ValueError: the message is the quoted value and why it is refused.
    """
    return int(_checked(text, whole_number_problem(text)))


def _checked(text: str, problem: Optional[str]) -> str:
    """``text`` stripped, or a ValueError naming the quoted value and ``problem``."""
    if problem is not None:
        raise ValueError(f"{str(text).strip()!r} {problem}")
    return str(text).strip()


def argument_type(whole: bool = False, example: Optional[str] = None,
                  positive: bool = False, non_negative: bool = False,
                  maximum: Optional[float] = None) -> Callable[[str], float | int]:
    """An argparse ``type`` that reads a setting strictly (``--steps 1_0`` was 10 to Python's ``int``).

    Args:
        whole: a whole number (an ``int``) rather than any decimal number (a ``float``).
        example: the example in the fix ("2000"); None: "10, -3.5 or 1.2e-3" (:data:`NUMBER_FIX`), or "2"
            for a whole number.
        positive: refuse values not above 0 (a whole number: not at least 1).
        non_negative: refuse values below 0 (a seed of numpy's generators).
        maximum: refuse values above it (a seed of torch's generators: at most 2**63 - 1).

    Returns:
        a function of the option's text; it raises ``argparse.ArgumentTypeError`` with the quoted value,
        the problem and the fix ("'1_0' holds '_', ...; write it as a plain whole number (e.g. 2)").
    """
    fix = (_WHOLE_FIX.format(example or "2") if whole else
           _DECIMAL_FIX.format(example or "10, -3.5 or 1.2e-3"))

    def read(text: str) -> float | int:
        problem = whole_number_problem(text) if whole else number_problem(text)
        if problem is None:
            value = int(text) if whole else float(text)
            if positive and whole and value < 1:
                problem = "is not at least 1"
            elif positive and not whole and value <= 0:
                problem = "is not above 0"
            elif non_negative and value < 0:
                problem = "is below 0"
            elif maximum is not None and value > maximum:
                problem = f"is above {maximum:g}" if not whole else f"is above {int(maximum)}"
        if problem is not None:
            raise argparse.ArgumentTypeError(f"{str(text).strip()!r} {problem}; {fix}")
        return value

    read.__name__ = "whole number" if whole else "number"  # argparse names the type in some messages
    return read
