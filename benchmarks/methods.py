r"""The methods a benchmark run can compare, and which of them can run here.

* ``identity`` (no registration: the initial error) and ``truth`` (the true field: the ceiling the
  metrics allow, e.g. Dice < 1 from nearest-neighbour label resampling);
* ``adregnet-instant``: ``register(..., quality="instant")``, the network prediction alone;
* ``adregnet-net-<q>``: quality q with ``instance_optimization=False`` (pre-alignment + network);
* ``adregnet-<q>``: the full engine at quality q;
* any of those with ``-reg<R>`` appended (``adregnet-balanced-reg0.25``): the same with the user's
  ``regularization=R`` (1 is the default; below 1 more local detail);
* the peers of :mod:`.peers`.

Quality and preset names come from the engine (one place for them).
"""
from __future__ import annotations

import re
from typing import Sequence

from ADRegNetLib.engine import QUALITIES

__all__ = ["BASELINES", "ADREGNET_METHODS", "DEFAULT_METHODS", "QUICK_SETTINGS", "register_settings",
           "is_adregnet_method", "available_methods"]

BASELINES = ("identity", "truth")
_OPTIMIZED = tuple(q for q in QUALITIES if q != "instant")
ADREGNET_METHODS = (("adregnet-instant",) + tuple(f"adregnet-net-{q}" for q in _OPTIMIZED)
                    + tuple(f"adregnet-{q}" for q in _OPTIMIZED))
DEFAULT_METHODS = ("identity", "truth", "adregnet-instant", "adregnet-net-balanced", "adregnet-fast",
                   "adregnet-balanced", "adregnet-best", "sitk", "sitk-bspline", "ants", "elastix", "greedy",
                   "convexadam")
#: Lighter peer settings for the tiny "quick" case (tests).
QUICK_SETTINGS = {"sitk": {"levels": 2, "iterations": (30, 15)},
                  "sitk-bspline": {"levels": 2, "affine_iterations": 60, "bspline_iterations": 30}}


_REGULARIZATION_SUFFIX = re.compile(r"^(?P<base>.+)-reg(?P<value>[0-9]*\.?[0-9]+)$")


def _split(method: str) -> tuple[str, float | None]:
    """(the method without a ``-reg<R>`` suffix, R or None)."""
    match = _REGULARIZATION_SUFFIX.match(method)
    if match and match["base"] in ADREGNET_METHODS and float(match["value"]) > 0:
        return match["base"], float(match["value"])
    return method, None


def is_adregnet_method(method: str) -> bool:
    """``method`` is an ``adregnet-*`` method, with or without a ``-reg<R>`` suffix."""
    return _split(method)[0] in ADREGNET_METHODS


def register_settings(method: str) -> dict:
    """Keyword arguments of ``register()`` that an ``adregnet-*`` method stands for.

    Raises:
        ValueError: not an AD-RegNet method.
    """
    base, regularization = _split(method)
    if base not in ADREGNET_METHODS:
        raise ValueError(f"{method!r} is not an AD-RegNet method; expected one of {', '.join(ADREGNET_METHODS)} "
                         "(optionally followed by -reg<R>, e.g. adregnet-balanced-reg0.5)")
    if base == "adregnet-instant":
        settings: dict = {"quality": "instant"}
    elif base.startswith("adregnet-net-"):
        settings = {"quality": base[len("adregnet-net-"):], "instance_optimization": False}
    else:
        settings = {"quality": base[len("adregnet-"):]}
    if regularization is not None:
        settings["regularization"] = regularization
    return settings


def _register_available() -> str | None:
    """None when ``register()`` and torch can be imported, else why not."""
    try:
        import torch  # noqa: F401,PLC0415

        from ADRegNetLib.engine import register  # noqa: F401,PLC0415
    except Exception as exc:  # noqa: BLE001
        return f"register() cannot be imported ({type(exc).__name__}: {exc})"
    return None


def available_methods(methods: Sequence[str]) -> tuple[list[str], dict[str, str]]:
    """Split requested methods into (usable, {skipped: reason}).

    Raises:
        ValueError: an unknown method name (the message lists the known ones).
    """
    from .peers import PEERS, available_peers  # noqa: PLC0415

    known = list(BASELINES) + list(ADREGNET_METHODS) + list(PEERS)
    unknown = [m for m in methods if m not in known and not is_adregnet_method(m)]
    if unknown:
        raise ValueError(f"unknown method(s) {', '.join(unknown)}; expected some of {', '.join(known)}")
    peer_state = available_peers()
    reg_state = _register_available() if any(is_adregnet_method(m) for m in methods) else None
    usable, skipped = [], {}
    for m in methods:
        if is_adregnet_method(m) and reg_state:
            skipped[m] = reg_state
        elif m in PEERS and peer_state.get(m):
            skipped[m] = peer_state[m]
        else:
            usable.append(m)
    return usable, skipped
