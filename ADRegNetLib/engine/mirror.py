r"""A moving image mirrored left-right against the fixed one (a header that lost a flip), told from short
SimpleITK fits after the pre-alignment (:mod:`.prealign`); reported by ``register()``, never undone."""
from __future__ import annotations

import numpy as np
import SimpleITK as sitk

from ..io.image import from_sitk, to_sitk
from ..spatial.affine import AffineMap
from ..spatial.image import Image
from .modality import centre_of_mass
from .sitk_fit import clearly_better, local_mismatches, one_thread, registration_method, relative_gain, shrunk

__all__ = ["mirror_check", "MIRROR_MIN_CUT", "MIRROR_MIN_GAIN", "MIRROR_ITERATIONS", "MIRRORED_WARNING"]

#: share of the usual fit's mismatch 1 - NCC^2 a mirrored fit must remove to be reported (one contrast), and its
#: relative gain of mutual information (two contrasts; :func:`mirror_check`). Measured (thirtieth session, the moving
#: image's array flipped along x, short fits at 12 mm): the demo CT pair mirrored 0.982, as stored -158; the benchmark
#: lung case 0.910 / -18.4; the brain case mirrored 0.385 (the pre-alignment turned the mirrored head 180 degrees
#: instead: a head is nearly symmetric), as stored -3.1; six inter-subject T1 pairs as stored -0.33..+0.13, mirrored
#: -0.21..+0.21; two contrasts: T1 vs T2 and synthseg mirrored -0.004 / 0.021, as stored -0.23 / -0.04, inter-subject
#: pairs of random contrasts as stored -0.08..+0.07, mirrored -0.08..+0.08. So only strongly asymmetric anatomy (a
#: chest) is told: a head's mirror is not reported
MIRROR_MIN_CUT = 0.5
MIRROR_MIN_GAIN = 0.2
#: iterations of each of :func:`mirror_check`'s three short fits (at 8 mm and 40 iterations the demo's check took
#: 0.09-0.12 s, at 12 mm and 30 0.05-0.08, the same decisions)
MIRROR_ITERATIONS = 30
#: the warning of a mirror :func:`mirror_check` found (formatted with its result)
MIRRORED_WARNING = ("the moving image fits the fixed one clearly better mirrored left-right (a short fit gains "
                    "{gain:.0%}, and the local structure similarity agrees): its header may have lost a flip "
                    "(a converter, radiological against neurological order). The registration used the images as "
                    "given; check both images' orientation in a viewer before using the result")


def mirror_check(fixed: Image, moving: Image, affine: AffineMap, same_modality: bool, seed: int,
                 spacing_mm: float = 12.0) -> dict:
    """Whether ``moving`` fits ``fixed`` clearly better mirrored left-right: a header that lost a flip (a
    converter's or a radiological/neurological mix-up) leaves an image no rotation can align, which the
    pre-alignment may then turn and the deformable stage bends onto the fixed one. Short affine fits at
    ``spacing_mm`` from ``affine`` and from two mirrored starts (``affine``, and the centres of mass brought
    together, each followed by the mirror along LPS x across the moving image's centre of mass); the mirror is
    reported when its better fit removes ``MIRROR_MIN_CUT`` of the usual fit's mismatch (one contrast, 1 - NCC^2) or
    gains ``MIRROR_MIN_GAIN`` of mutual information (two), and the local structure similarity (MIND-SSC) agrees:
    a chest's mirror is told, a head's (nearly symmetric) is not. Only reported: the registration keeps the images
    as given.

    Returns:
        {"metric_usual", "metric_mirrored", "gain", "local_usual", "local_mirrored", "mirrored": bool}.
    """
    f = shrunk(to_sitk(fixed, np.float32), spacing_mm)
    m = shrunk(to_sitk(moving, np.float32), spacing_mm)
    centre, mass = fixed.geometry.center(), centre_of_mass(from_sitk(m))
    mirror = np.diag([-1.0, 1.0, 1.0])
    across = mass - mirror @ mass  # y -> mirror @ y + across: the mirror across the moving centre of mass
    starts = [affine, AffineMap(mirror @ affine.matrix, mirror @ affine.offset + across),
              AffineMap(mirror, mirror @ (mass - centre_of_mass(from_sitk(f))) + across)]
    fitted = []
    for start in starts:
        reg = registration_method(same_modality, seed, MIRROR_ITERATIONS, [1], [0.0])
        transform = sitk.AffineTransform(3)
        transform.SetCenter(centre.tolist())
        transform.SetMatrix(start.matrix.reshape(-1).tolist())
        transform.SetTranslation((start.offset + start.matrix @ centre - centre).tolist())
        reg.SetInitialTransform(transform, inPlace=False)
        try:
            with one_thread(not same_modality):
                result = reg.Execute(f, m)
        except RuntimeError:  # too few samples in the overlap
            return {"mirrored": False, "error": "too few samples in the overlap"}
        fitted.append((float(reg.GetMetricValue()), result))
    (usual, usual_tx), (mirrored, mirrored_tx) = fitted[0], min(fitted[1:], key=lambda fit: fit[0])
    gain = relative_gain(mirrored, usual, same_modality)
    info = {"metric_usual": round(usual, 6), "metric_mirrored": round(mirrored, 6), "gain": round(float(gain), 4)}
    if not clearly_better(mirrored, usual, same_modality, MIRROR_MIN_CUT, MIRROR_MIN_GAIN):
        return dict(info, mirrored=False)
    local_usual, local_mirrored = local_mismatches(f, m, [usual_tx, mirrored_tx], None)
    info.update(local_usual=round(local_usual, 6), local_mirrored=round(local_mirrored, 6))
    return dict(info, mirrored=bool(local_mirrored < local_usual))
