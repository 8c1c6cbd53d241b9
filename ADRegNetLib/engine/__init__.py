"""The registration engine: one ``register()`` for every front end (see ``pipeline.py``)."""
from __future__ import annotations

from .api import RegistrationCancelled, RegistrationError, RegistrationResult
from .settings import PRESETS, QUALITIES

__all__ = ["PRESETS", "QUALITIES", "RegistrationCancelled", "RegistrationError", "RegistrationResult", "register"]


def register(*args, **kwargs):  # noqa: D103 - documented in engine.pipeline.register
    import torch

    from .pipeline import register as _register

    threads = torch.get_num_threads()  # the registration may run stages with fewer (engine.cpu_threads)
    try:
        return _register(*args, **kwargs)
    finally:
        if torch.get_num_threads() != threads:
            torch.set_num_threads(threads)


register.__doc__ = ("Register moving onto fixed; see :func:`ADRegNetLib.engine.pipeline.register`. The torch "
                    "thread count is the caller's again when it returns or raises.")
