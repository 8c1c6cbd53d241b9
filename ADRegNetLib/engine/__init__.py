"""The registration engine: one ``register()`` for every front end (see ``pipeline.py``)."""
from __future__ import annotations

from .api import RegistrationCancelled, RegistrationError, RegistrationResult
from .settings import PRESETS, QUALITIES

__all__ = ["PRESETS", "QUALITIES", "RegistrationCancelled", "RegistrationError", "RegistrationResult", "register"]


def register(*args, **kwargs):  # noqa: D103 - documented in engine.pipeline.register
    from .pipeline import register as _register

    return _register(*args, **kwargs)


register.__doc__ = "Register moving onto fixed; see :func:`ADRegNetLib.engine.pipeline.register`."
