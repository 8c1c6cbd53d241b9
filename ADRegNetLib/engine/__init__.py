"""The registration engine: one ``register()`` for every front end (see ``pipeline.py``)."""
from __future__ import annotations

from .api import RegistrationCancelled, RegistrationError, RegistrationResult
from .settings import PRESETS, QUALITIES

__all__ = ["PRESETS", "QUALITIES", "RegistrationCancelled", "RegistrationError", "RegistrationResult", "register"]


def register(*args, **kwargs):  # noqa: D103 - documented in engine.pipeline.register
    from .cpu_threads import registration_threads
    from .pipeline import register as _register

    with registration_threads():  # stages may run with fewer threads; the caller's count comes back
        return _register(*args, **kwargs)


register.__doc__ = ("Register moving onto fixed; see :func:`ADRegNetLib.engine.pipeline.register`. The torch "
                    "thread count is the caller's again when it returns or raises.")
