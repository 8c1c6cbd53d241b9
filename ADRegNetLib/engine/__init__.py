"""The registration engine: one ``register()`` for every front end (see ``pipeline.py``)."""
from __future__ import annotations

from .api import RegistrationCancelled, RegistrationError, RegistrationResult
from .settings import PRESETS, QUALITIES

__all__ = ["PRESETS", "QUALITIES", "RegistrationCancelled", "RegistrationError", "RegistrationResult", "register"]


def register(fixed, moving, **kwargs):  # noqa: D103 - documented in engine.pipeline.register
    from .cpu_threads import registration_threads
    from .pipeline import register as _register
    from .planar import in_plane

    with registration_threads():  # stages may run with fewer threads; the caller's count comes back
        return in_plane(_register, fixed, moving, **kwargs)


register.__doc__ = ("Register moving onto fixed; see :func:`ADRegNetLib.engine.pipeline.register`. Two single "
                    "slices (2-D images) are registered in their plane (:mod:`ADRegNetLib.engine.planar`). The "
                    "torch thread count is the caller's again when it returns or raises.")
