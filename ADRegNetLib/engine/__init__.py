"""The registration engine: one ``register()`` for every front end."""
from __future__ import annotations

import sys
import types

from .api import PRESETS, QUALITIES, RegistrationCancelled, RegistrationError, RegistrationResult

__all__ = ["PRESETS", "QUALITIES", "RegistrationCancelled", "RegistrationError", "RegistrationResult", "register"]


def register(*args, **kwargs):  # noqa: D103 - documented in engine.register
    from .register import register as _register

    return _register(*args, **kwargs)


class _EnginePackage(types.ModuleType):
    """Keeps ``ADRegNetLib.engine.register`` the function.

    Importing the submodule ``engine/register.py`` (which the function above does lazily, to keep
    ``import ADRegNetLib.engine`` free of torch) makes Python set the package attribute
    ``register`` to that module; ``from ADRegNetLib.engine import register`` then returned a
    module, and a second registration in the same process failed with "'module' object is not
    callable". The submodule stays reachable through ``sys.modules`` and ``from
    ADRegNetLib.engine.register import ...``.
    """

    def __setattr__(self, name: str, value) -> None:
        if name == "register" and isinstance(value, types.ModuleType):
            return
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _EnginePackage
