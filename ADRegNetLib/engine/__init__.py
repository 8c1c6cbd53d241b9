"""The registration engine: one ``register()`` for every front end."""
from __future__ import annotations

from .api import PRESETS, QUALITIES, RegistrationCancelled, RegistrationError, RegistrationResult

__all__ = ["PRESETS", "QUALITIES", "RegistrationCancelled", "RegistrationError", "RegistrationResult", "register"]


def register(*args, **kwargs):  # noqa: D103 - documented in engine.register
    from .register import register as _register

    return _register(*args, **kwargs)
