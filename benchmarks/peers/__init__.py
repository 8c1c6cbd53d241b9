r"""Other registration tools, run on the benchmark's files, with fields in the library's convention.

Every adapter has the signature::

    run_<peer>(fixed_path, moving_path, out_dir, threads=2, **settings) -> PeerResult

and returns the displacement ``disp_mm`` (3, Z, Y, X) float32 on the FIXED grid, LPS mm, (x, y, z)
components, mapping a fixed point x to the moving point x + u(x) (ITK's resampling convention;
see DESIGN.md). Each tool's own transform files are converted once, in its adapter, and the
direction is checked on a pure translation (:func:`check_peer`, ``python -m benchmarks --check-peers``).

Peers:

* ``sitk``: SimpleITK (always there): histogram matching + multi-resolution diffeomorphic demons
  on the fixed grid.
* ``sitk-bspline``: SimpleITK affine (Mattes MI) then a cubic B-spline (Mattes MI, L-BFGS, three
  levels, control points every ~20 mm), composed into one field. On the brain case its affine
  stage made TRE worse (3.8 -> 4.1 mm) and L-BFGS stopped after a few iterations per level, so it
  is not the default SimpleITK peer.
* ``ants``: ANTsPy ``ants.registration(type_of_transform="SyN")`` (antspyx).
* ``elastix``: itk-elastix affine + B-spline (AdvancedMattesMutualInformation).
* ``greedy``: PICSL Greedy (picsl-greedy): affine then deformable, NCC; ``greedy-rigid``: a rigid fit
  first and the affine from it (between subjects).
* ``convexadam``: ConvexAdam (convexAdam, MIND-SSC features), on the moving image resampled
  onto the fixed grid.

The optional ones are used only when importable: :func:`available_peers` says which, and why not.
"""
from __future__ import annotations

import importlib
from functools import partial
from typing import Callable, Optional

from .check import check_peer, make_translation_pair
from .common import PeerResult
from .external import run_ants, run_convexadam, run_elastix, run_greedy
from .sitk_peers import run_sitk, run_sitk_bspline

__all__ = ["PEERS", "PeerResult", "available_peers", "check_peer", "run_peer", "make_translation_pair",
           "run_sitk", "run_sitk_bspline", "run_ants", "run_elastix", "run_greedy", "run_convexadam"]

#: name -> (adapter, module that must be importable or None, pip package to install).
PEERS: dict[str, tuple[Callable[..., PeerResult], Optional[str], Optional[str]]] = {
    "sitk": (run_sitk, None, None),
    "sitk-bspline": (run_sitk_bspline, None, None),
    "ants": (run_ants, "ants", "antspyx"),
    "elastix": (run_elastix, "itk", "itk-elastix"),
    "greedy": (run_greedy, "picsl_greedy", "picsl-greedy"),
    "greedy-rigid": (partial(run_greedy, rigid_first=True), "picsl_greedy", "picsl-greedy"),
    "convexadam": (run_convexadam, "convexAdam", "convexAdam"),
}


def available_peers() -> dict[str, Optional[str]]:
    """Map each peer to None when usable, else the reason (what to install)."""
    out: dict[str, Optional[str]] = {}
    for name, (_, module, package) in PEERS.items():
        if module is None:
            out[name] = None
            continue
        try:
            mod = importlib.import_module(module)
            if name == "elastix" and not hasattr(mod, "elastix_registration_method"):
                raise ImportError("itk is installed without itk-elastix")
            out[name] = None
        except Exception as exc:  # noqa: BLE001 - any import failure means "not usable"
            out[name] = (f"not importable ({type(exc).__name__}: {exc}); install it as "
                         f"benchmarks/requirements-peers.txt says ({package})")
    return out


def run_peer(name: str, fixed_path, moving_path, out_dir, threads: int = 2, **settings) -> PeerResult:
    """Run the peer called ``name`` (see :data:`PEERS`).

    Raises:
        ValueError: unknown peer name.
    """
    if name not in PEERS:
        raise ValueError(f"unknown peer {name!r}; expected one of {', '.join(PEERS)}")
    return PEERS[name][0](fixed_path, moving_path, out_dir, threads, **settings)
