r"""What each benchmark case is made of: its source anatomy, grid, deformation size and preset."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

__all__ = ["GENERATOR_VERSION", "DEFAULT_CASES", "CASE_NAMES", "VXM_DICE_LABELS", "Recipe", "RECIPES",
           "recipe_settings"]

#: Generator version: bump when the recipe changes so cached cases are rebuilt.
GENERATOR_VERSION = 3

#: Cases run by default.
DEFAULT_CASES = ("brain", "lung", "synthseg", "oblique", "brain-t1t2")
#: Every case name ``build_case`` understands.
CASE_NAMES = DEFAULT_CASES + ("brain-full", "brain-local", "lung-large", "lung-sliding", "brain-flair", "quick")

# The 30 FreeSurfer structures VoxelMorph scores Dice on (also in brain-vxm-test-scan/labels.npz).
VXM_DICE_LABELS = (2, 3, 4, 7, 8, 10, 11, 12, 13, 14, 15, 16, 17, 18, 24, 28, 31,
                   41, 42, 43, 46, 47, 49, 50, 51, 52, 53, 54, 60, 63)
#: FreeSurfer cerebral white matter (left, right): the reference intensity of the T2-like rendering.
WHITE_MATTER_LABELS = (2, 41)


@dataclass(frozen=True)
class Recipe:
    """How one case is made.

    Attributes:
        name: the case name.
        preset: the AD-RegNet preset it is run with ("auto" lets the engine choose and say why).
        description: one line for the tables.
        source: "brain" | "lung" | "synthseg" (see :mod:`.sources`).
        spacing: isotropic fixed spacing in mm, or None to keep the source's.
        target_mean_mm: mean |u| of the true field inside the foreground, mm.
        control_spacing_mm: distance between the random velocity's control values, mm.
        oblique: the fixed grid is rotated and anisotropic.
        landmarks: default number of landmarks.
        label_ids: labels scored by Dice (None: every foreground label present with >= 20 voxels).
        moving_contrast: None (same contrast, own intensity change) or "t2" (moving image rendered
            T2-like from the T1: a cross-modality pair).
        lung_boundary_sigma_mm: lung cases: how sharply the breathing motion stops at the lungs' boundary
            (``deformations.breathing_svf``; small: the lungs slide against the chest wall).
    """

    name: str
    preset: str
    description: str
    source: str
    spacing: Optional[float]
    target_mean_mm: float
    control_spacing_mm: float = 40.0
    oblique: bool = False
    landmarks: int = 300
    label_ids: Optional[tuple] = None
    moving_contrast: Optional[str] = None
    lung_boundary_sigma_mm: float = 15.0


RECIPES = {
    "brain": Recipe("brain", "brain-mri", "real T1 (vxm test scan) at 2 mm, random SVF, MRI intensity change",
                    "brain", 2.0, 4.0, 40.0, label_ids=VXM_DICE_LABELS),
    "brain-full": Recipe("brain-full", "brain-mri", "real T1 (vxm test scan) at 1 mm, random SVF, MRI intensity change",
                         "brain", 1.0, 4.0, 40.0, label_ids=VXM_DICE_LABELS),
    "oblique": Recipe("oblique", "brain-mri", "real T1: fixed on an oblique grid (15 deg about (1,1,1), "
                      "1.5x1.5x3 mm), moving on the axis-aligned 2 mm grid", "brain", 2.0, 4.0, 40.0,
                      oblique=True, label_ids=VXM_DICE_LABELS),
    "synthseg": Recipe("synthseg", "brain-mri", "real label map (SynthSeg subject 01) at 2 mm, images synthesized "
                       "from labels with different random contrasts", "synthseg", 2.0, 4.0, 40.0),
    "lung": Recipe("lung", "lung-ct", "real thorax CT (POPI phase 00) cropped to the lungs, breathing-like SVF "
                   "(mostly S-I, largest at the base), CT intensity change; Dice on the lung mask",
                   "lung", None, 5.0, label_ids=(1,)),
    "brain-t1t2": Recipe("brain-t1t2", "auto", "cross-modality: fixed the real T1 (vxm test scan) at 2 mm, moving "
                         "a T2-like rendering of it (inverted tissue contrast), random SVF, MRI intensity changes; "
                         "preset auto", "brain", 2.0, 4.0, 40.0, label_ids=VXM_DICE_LABELS, moving_contrast="t2"),
    # deformations unlike the default cases' (4-5 mm, control values 40 mm apart): more local, larger
    "brain-local": Recipe("brain-local", "brain-mri", "real T1 (vxm test scan) at 2 mm, a more local random SVF "
                          "(control values 20 mm apart), MRI intensity change", "brain", 2.0, 4.0, 20.0,
                          label_ids=VXM_DICE_LABELS),
    "lung-large": Recipe("lung-large", "lung-ct", "real thorax CT (POPI phase 00) cropped to the lungs, a breathing-like "
                         "SVF twice the lung case's (10 mm mean); Dice on the lung mask",
                         "lung", None, 10.0, label_ids=(1,)),
    "lung-sliding": Recipe("lung-sliding", "lung-ct", "real thorax CT (POPI phase 00) cropped to the lungs, the lung "
                           "case's breathing-like SVF stopping sharply at the lungs' boundary (the lungs slide against "
                           "a still chest wall, as in a 4-D CT); Dice on the lung mask",
                           "lung", None, 5.0, label_ids=(1,), lung_boundary_sigma_mm=1.5),
    # two contrasts whose tissues still correlate (grey/white order swapped, CSF dark in both)
    "brain-flair": Recipe("brain-flair", "auto", "cross-contrast: fixed the real T1 (vxm test scan) at 2 mm, moving "
                          "a FLAIR-like rendering of it (grey matter brighter than white, CSF dark), random SVF, MRI "
                          "intensity changes; preset auto", "brain", 2.0, 4.0, 40.0, label_ids=VXM_DICE_LABELS,
                          moving_contrast="flair"),
    "quick": Recipe("quick", "brain-mri", "small test case: real T1 at 4 mm, random SVF", "brain", 4.0, 3.0, 40.0,
                    landmarks=100, label_ids=VXM_DICE_LABELS),
}


def recipe_settings(recipe: Recipe, seed: int, landmarks: int) -> dict:
    """The settings stored in case.json: a cached case is reused only when they are equal."""
    settings = {"generator_version": GENERATOR_VERSION, "name": recipe.name, "seed": seed, "landmarks": landmarks,
                "spacing": recipe.spacing, "target_mean_mm": recipe.target_mean_mm,
                "control_spacing_mm": recipe.control_spacing_mm, "oblique": recipe.oblique}
    if recipe.moving_contrast is not None:  # only then: the older cases keep their exact settings
        settings["moving_contrast"] = recipe.moving_contrast
    return settings
