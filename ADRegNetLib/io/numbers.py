"""The strict number reader, re-exported for the readers in :mod:`ADRegNetLib.io` (it lives in
:mod:`ADRegNetLib.numbers`, which imports no SimpleITK, so the training command can use it too)."""
from __future__ import annotations

from ..numbers import NUMBER_FIX, number_problem, parse_number, parse_whole_number, whole_number_problem

__all__ = ["NUMBER_FIX", "number_problem", "parse_number", "parse_whole_number", "whole_number_problem"]
