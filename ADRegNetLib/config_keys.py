"""Building a settings dataclass from a dict (a JSON file) that may hold keys it does not know."""
from __future__ import annotations

from dataclasses import fields
from typing import Any, TypeVar

__all__ = ["from_known_keys"]

T = TypeVar("T")


def from_known_keys(cls: type[T], d: dict[str, Any], what: str) -> T:
    """``cls(**d)``, or a ValueError naming the unknown keys of the ``what`` config and the known ones."""
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(d) - known)
    if unknown:
        raise ValueError(f"unknown {what} config keys {unknown}; known keys: {sorted(known)}")
    return cls(**d)
