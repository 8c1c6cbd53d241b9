r"""Every number and every name the engine uses, in one place (the bounds of its inputs in :mod:`.limits`, the
pre-alignment's numbers in :mod:`.prealign_settings` and the refinement's in :mod:`.refine_settings`, re-exported
here).

Front ends (CLI, Slicer module, benchmark) import the preset and quality names from here.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from .limits import (MIN_MOVING_OVERLAP, MASK_MIN_SHARE_ON_IMAGE, MAX_MASK_VALUES, MAX_SIGNED_LABEL_VALUES,
                     MIN_MASK_WORKING_VOXELS, MIN_PHYSICAL_OVERLAP, FIELD_OF_VIEW_MARGIN_VOXELS,
                     FIELD_OF_VIEW_MIN_TISSUE, PADDING_MIN_CUT_SHARE, BYTES_PER_WORKING_VOXEL,
                     BYTES_PER_FIXED_VOXEL, MAX_REGULARIZATION, MIN_REGULARIZATION, MAX_SEED,
                     SMALL_PHYSICAL_OVERLAP, WORKING_REGION_MARGIN_MM, WORKING_REGION_MIN_PLANES)  # noqa: F401 - re-exported
from .refine_settings import (REFINE_GAIN_SIGMA_MM, REFINE_GAIN_FLOOR, REFINE_INTENSITY_KNOTS,
                             REFINE_INTENSITY_MAX_VOXEL_RATIO, RESOLUTION_MATCH_MIN_SIGMA_VOXELS,
                             REFINE_TWO_CONTRASTS, REFINE_STEPS_FACTOR, LOCAL_REFINE_MIN_GAIN,
                             LOCAL_REFINE_MIN_FINE_SHARE, LOCAL_REFINE_FINE_SIGMA_MM, LOCAL_REFINE_FACTORS,
                             TWO_CONTRAST_EDGE_SHARE, EDGE_CHECK_SIGMA_VOXELS,
                             EDGE_CHECK_WINDOW)  # noqa: F401 - re-exported
from .prealign_settings import (PREALIGN_MIN_RELATIVE_GAIN, PREALIGN_MIN_LOCAL_GAIN, PREALIGN_MAX_SCALE,
                                PREALIGN_ROTATION_MIN_GAIN, PREALIGN_MI_ITERATIONS_FACTOR, PREALIGN_ROTATION_MIN_CUT,
                                PREALIGN_CENTRES_APART_MM, SPREAD_TURNS, SPREAD_TURNS_FITTED,
                                TURNS_JUDGED_LOCALLY)  # noqa: F401 - re-exported

__all__ = ["PRESETS", "QUALITIES", "SLIDING_CHOICES", "COARSE_KEEP_MM", "LUNG_COARSE_KEEP_MM", "COARSE_MIN_LOSS_GAIN", "COARSE_MORE_STEPS", "LARGE_MOTION_MORE_STEPS", "PresetSettings", "QualitySettings", "PRESET_SETTINGS", "QUALITY_SETTINGS",
           "CT_AIR_PERCENTILE_HU", "CT_CALIBRATION_MAX_RESIDUAL", "CT_LOWEST_HU", "CT_MAX_SHARE_BELOW_AIR", "PADDING_BELOW_MIN_SHARE", "PADDING_BELOW_MIN_GAP", "GENERIC_CT_WINDOW", "NETWORK_CT_WINDOW", "NETWORK_MIN_RELATIVE_GAIN", "PREALIGN_MIN_RELATIVE_GAIN",
           "PREALIGN_MIN_LOCAL_GAIN", "PREALIGN_MAX_SCALE", "PREALIGN_ROTATION_MIN_GAIN", "PREALIGN_MI_ITERATIONS_FACTOR",
           "PREALIGN_ROTATION_MIN_CUT", "PREALIGN_CENTRES_APART_MM", "SPREAD_TURNS", "SPREAD_TURNS_FITTED",
           "TURNS_JUDGED_LOCALLY",
           "MIN_MOVING_OVERLAP", "MASK_MIN_SHARE_ON_IMAGE", "MAX_MASK_VALUES", "MAX_SIGNED_LABEL_VALUES", "MIN_MASK_WORKING_VOXELS", "MIN_PHYSICAL_OVERLAP", "INTERSUBJECT_HINT_SCALE", "SAME_CONTRAST_MIN_CORRELATION",
           "SAME_CONTRAST_SPACING_MM", "TISSUE_THRESHOLD", "CUT_FACE_INTENSITY", "CUT_FACE_TISSUE_SHARE", "QUIET_AXIS_SHARE", "QUIET_AXIS_LOSS_MARGIN", "REFINE_INTENSITY_KNOTS",
           "REFINE_INTENSITY_MAX_VOXEL_RATIO", "RESOLUTION_MATCH_MIN_SIGMA_VOXELS", "REFINE_TWO_CONTRASTS",
           "REFINE_STEPS_FACTOR", "LOCAL_REFINE_MIN_GAIN", "LOCAL_REFINE_FACTORS", "LOCAL_REFINE_MIN_FINE_SHARE",
           "LOCAL_REFINE_FINE_SIGMA_MM",
           "TWO_CONTRAST_EDGE_SHARE", "EDGE_CHECK_SIGMA_VOXELS", "EDGE_CHECK_WINDOW",
           "BYTES_PER_WORKING_VOXEL", "BYTES_PER_FIXED_VOXEL", "FIELD_OF_VIEW_MARGIN_VOXELS",
           "FIELD_OF_VIEW_MIN_TISSUE", "PADDING_MIN_CUT_SHARE",
           "MAX_REGULARIZATION", "MIN_REGULARIZATION", "MAX_SEED", "SMALL_PHYSICAL_OVERLAP"]

#: preset names ("auto" decides from the images and says why)
PRESETS = ("auto", "lung-ct", "brain-mri", "generic")
#: quality names, fastest first ("instant": the network's prediction alone)
QUALITIES = ("instant", "fast", "balanced", "best")
#: the lungs' sliding along the chest wall, the user's choices: "auto" (the preset's: on for the lung preset with a
#: CT fixed image), "on", "off" (``engine.sliding``; here so that the command line's options import no torch)
SLIDING_CHOICES = ("auto", "on", "off")

#: an image is CT when its 1st intensity percentile, its lowest value left out (a padding is no evidence of air),
#: is below this (air is -1000 HU). With the lowest value counted, an MR image resampled with -1024 outside its
#: field of view (a CT's default) read as CT: the CT window flattened it (thirtieth session: 3.42 mm balanced on the
#: brain benchmark case, 0.17 unpadded; now 0.19, its padding left out of its percentiles, ``PADDING_BELOW_MIN_GAP``)
CT_AIR_PERCENTILE_HU = -500.0
#: ... and when no more than ``CT_MAX_SHARE_BELOW_AIR`` of its voxels, other than those of its lowest value (the
#: padding outside a CT's circular field of view: -1024, -2048, -3024 or -32768), lie below this: Hounsfield
#: units end at air. The CT scans here have none there (their lowest values -1024 to -1137 HU); an MR image
#: stored as full-range int16 (background -32768, tissue up to 32767) had its 1st percentile below -500 and was
#: given the CT window, which flattened it (hostile-input sweep, eighteenth session)
CT_LOWEST_HU = -1500.0
#: see ``CT_LOWEST_HU`` (a resampled padding's edge leaves a thin shell of values between it and air)
CT_MAX_SHARE_BELOW_AIR = 0.05
#: a non-CT image's lowest value is a padding, left out of its normalisation's percentiles
#: (``normalization.padding_below``), when it is negative, holds at least ``PADDING_BELOW_MIN_SHARE`` of the voxels
#: and lies below all others by at least ``PADDING_BELOW_MIN_GAP`` times their range (1st to 99th percentile): an MR
#: image resampled with -1024 outside its field of view (a CT's default) otherwise sets its 1st percentile there and
#: its tissue fills the top half of [0, 1]. Measured (thirtieth session): the benchmark's MR images 0.003-0.005, the
#: synthesised ones 0.05-0.27, the lung CT 0.05; the brain T1 padded with -1024 / -3024 outside a circle 1.43 / 4.22
PADDING_BELOW_MIN_SHARE = 0.01
PADDING_BELOW_MIN_GAP = 0.5
#: a non-CT image paired with a CT is read as CT stored in other units (``hounsfield.hounsfield_calibration``: an
#: offset such as +1024 in unsigned integers, or a scale) when a straight line maps its intensity percentiles
#: (2 to 98) onto the CT's with a root-mean-square residual below this share of the CT's percentile range.
#: Measured (twenty-first session): the benchmark lung pair, breathing and each image's own intensity changes,
#: 0.037; the demo pair 0.010; two different CT scans 0.10; brain T1 MRI against either CT 0.24-0.27
CT_CALIBRATION_MAX_RESIDUAL = 0.06
#: HU window of CT outside the lung preset (air to dense soft tissue)
GENERIC_CT_WINDOW = (-1000.0, 400.0)
#: HU window the network was trained with (train/prep.py): its CT inputs are re-expressed in it
NETWORK_CT_WINDOW = (-1000.0, 400.0)
#: relative local-NCC improvement the network's prediction must bring to be kept as the start
NETWORK_MIN_RELATIVE_GAIN = 0.02
#: below this intensity correlation where both images show tissue, two non-CT images count as
#: different contrasts (T1 vs T2) and the pre-alignment uses mutual information (engine/modality.py)
SAME_CONTRAST_MIN_CORRELATION = 0.3
#: grid spacing of that contrast check, mm
SAME_CONTRAST_SPACING_MM = 4.0
#: normalised intensity above which a voxel shows tissue (not background)
TISSUE_THRESHOLD = 0.05
#: a face of the working grid on which more than ``CUT_FACE_TISSUE_SHARE`` of the fixed image's voxels lie above
#: ``CUT_FACE_INTENSITY`` (normalised) cuts the anatomy (a field of view that ends inside it): the updates and the
#: field are then smoothed there without replicating the face's voxels (``filters.smoothing_edges``). Measured
#: (twenty-second session), the largest share over the six faces: the benchmark's brain, oblique and T1 vs T2 fixed
#: images 0, synthseg seeds 0-2 0-0.03 (their backgrounds reach 0.05-0.15: above ``TISSUE_THRESHOLD`` on 32-49 % of
#: a face), the lung case 0.93, the benchmark brain cut to the middle 60 % along each axis 0.80
CUT_FACE_INTENSITY = 0.2
CUT_FACE_TISSUE_SHARE = 0.2
#: an axis along which the working images' neighbours differ by less than this share (mean squared
#: difference, relative to the largest axis') is quiet: the network's motion along it is kept only when the
#: similarity needs it (``prediction.quiet_axes``, ``prediction.network_stage``). Measured (twentieth session, on
#: the working grids): a 2-D image repeated over slices 0, with independent noise per slice 0.0065; the
#: demo CT's 5 mm slices 0.25, a brain on 1.2 x 1.2 x 5 mm slices 0.57-0.74, the benchmark brain 0.87
QUIET_AXIS_SHARE = 0.05
#: ... needs it: leaving it out raises the local NCC loss by more than this share
QUIET_AXIS_LOSS_MARGIN = 1e-3


@dataclass(frozen=True)
class PresetSettings:
    """Per-anatomy choices.

    Attributes:
        modality: intensity normalisation ("ct" HU window, "mr" robust percentiles, "generic").
        ct_window: HU window mapped to [0, 1] for CT.
        similarity: a name of the similarity registry (``losses.SIMILARITIES``); "mind" (MIND-SSC
            + SSD, robust to intensity changes and modalities) for every preset.
        refine_similarity: the refinement's similarity for images of one contrast: "lncc" (local
            NCC) or "ngf" (normalised gradient fields). Measured, balanced: brain case lncc 0.27 mm,
            ngf 0.29; lung case lncc 0.36, ngf 0.30 (demo lung pair, landmarks held out: 0.36 and
            0.37), same time.
        coarse_levels: instance-optimisation levels run before the quality's own (downsampling of
            the working grid, most steps), for anatomy that moves further than one half-resolution
            level reaches: breathing moves the lung base by 10-30 mm. Like every level, one stops
            early when its loss stops improving.
        coarse_start: levels run before those, kept only where they find motion whose 95th
            percentile reaches ``coarse_keep_mm`` (``OptimizerSettings.coarse_start``).
        coarse_keep_mm: that threshold, mm (``COARSE_KEEP_MM``; ``LUNG_COARSE_KEEP_MM`` for the lung).
        prealign_local_check: an optimised affine must also improve the local structure similarity
            (``PREALIGN_MIN_LOCAL_GAIN``) to be kept. Off for the lung: breathing has a real global
            component, and under large breathing motion MIND-SSC got worse through the right affine
            (balanced, lung family of 20 mm mean motion, seed 1: MIND-SSC 0.0749 -> 0.0869, affine
            refused, TRE 20.48 -> 7.21 mm; kept: 1.56 mm).
    """

    modality: str
    ct_window: tuple[float, float] = GENERIC_CT_WINDOW
    similarity: str = "mind"
    refine_similarity: str = "lncc"
    coarse_levels: tuple[tuple[float, int], ...] = ()
    coarse_start: tuple[tuple[float, int], ...] = ()
    coarse_keep_mm: float = 16.0  # COARSE_KEEP_MM (defined below; a test checks they agree)
    prealign_local_check: bool = True


#: the coarse start's result is kept when the 95th percentile of its displacement (where the fixed
#: image shows tissue) reaches this, mm. Measured (fourteenth session, balanced, brain cases of the
#: deformation families, ``scripts/deformation_families.py``; the quarter-resolution start (4, 12)
#: kept always -> never; motion it found in brackets): the benchmark brain seeds 0-4 (7.6-8.0 mm)
#: 0.225 / 0.214 / 0.231 / 0.323 / 0.272 against 0.210 / 0.188 / 0.213 / 0.298 / 0.275 without;
#: 6-8 mm motion (11.5-12.0) 0.007-0.021 worse; 10 mm / 30 mm control spacing (14.4) 1.709 / 1.606;
#: 10 mm / 50 mm seeds 2 / 1 (14.9 / 16.2) 0.582 / 0.609 and 0.572 / 0.553; 12 mm / 50 mm seeds
#: 3 / 2 / 1 (16.5 / 16.8 / 19.1) 0.712 / 1.135, 0.907 / 2.071, 1.060 / 1.685; 16 mm / 60 mm seeds
#: 1-3 (18.3 / 22.4 / 20.3) 2.981 / 7.411, 0.957 / 6.328, 3.288 / 8.374 (Greedy on seed 1: 4.000).
#: ``docs/benchmarks/wave14-2026-12-01.md``
COARSE_KEEP_MM = 16.0
#: the lung's threshold: breathing moves further than a brain deforms. The lung preset ran its quarter level
#: always (``coarse_levels``, eleventh session) until the nineteenth session, when a whole-body thorax CT (a 5 mm
#: random field, the sweep of ``docs/benchmarks/sweep19-2026-12-02.md``) showed it inventing 14-27 mm of motion at
#: the image's lower border, which took landmarks in the body wall 15.7 mm off (balanced, no network: TRE 1.282,
#: max 15.7 mm; as a start judged like the brain's: 1.029, max 6.4). Balanced, the lung cases, TRE always ->
#: judged start: benchmark lung seeds 0 / 1 / 2 0.224 / 0.219 / 0.269 -> 0.225 / 0.219 / 0.267, lung-large
#: seeds 0 / 1 0.404 / 0.380 -> 0.403 / 0.375, families lung:15:0 seeds 0 / 1 / 2 0.688 / 0.699 / 0.763 ->
#: 0.678 / 0.696 / 0.762, lung:20:0 seed 1 1.367 -> 1.498 (with the brain's 16 mm there: 2.133; its motion p95
#: 15.4 mm); fast (benchmark run, seed 0) lung 0.381 -> 0.386, lung-large 0.767 -> 0.734. Time, paired in one
#: process (3 runs each): lung balanced 12.1 -> 11.9 s, the demo pair 2.76 -> 2.74 s; lung-large, where the start
#: is judged (its motion 12.95 mm), 13.1 -> 13.8 s. Twentieth session: the judged level had not gone on by
#: ``LARGE_MOTION_MORE_STEPS`` as every other level does (optimizer); now it does. Families fast / balanced,
#: seeds 0 / 1 / 2: lung:15:0 1.228 / 1.306 / 1.318, 0.678 / 0.696 / 0.762 -> 1.220 / 1.200 / 1.255, 0.702 /
#: 0.632 / 0.762; lung:20:0 3.012 / 2.217 / 2.620, 1.841 / 1.498 / 1.416 -> 2.721 / 2.139 / 2.413, 1.697 / 1.369 /
#: 1.268; brain:12:50 seed 1 1.399 / 0.958 -> 1.169 / 0.868; benchmark lung, lung-large, brain:10:30,
#: brain:8:25 and the whole-body thorax unchanged
LUNG_COARSE_KEEP_MM = 12.0
#: and then kept only when the first regular level, run from it and from the initial field, ends with
#: a local NCC loss (squared, 5-voxel windows, images divided by their 6 mm local mean;
#: ``refinement_stage.coarse_start_judge``) lower by this share from it. Measured (balanced; judge gain): where
#: the start helped, 0.018-0.075 (brain 12 mm / 50 mm seeds 2 / 3, 16 mm / 60 mm seeds 1 / 3); the 10 mm
#: / 50 mm seed 1 case where it cost 0.02 mm, 0.003; benchmark brain pairs under a gamma and a bias
#: field of amplitude 1-1.5, where MIND-SSC at a quarter resolution invented 19-27 mm of motion and
#: lowered its own loss by 4-25 % with it (kept, 0.410 -> 0.635 mm, 1.670 -> 2.849, 2.049 -> 3.459),
#: -0.021 to -0.048. The MIND loss alone did not separate these (first tried: 4 % on it)
COARSE_MIN_LOSS_GAIN = 0.01
#: where the coarse start found such motion it goes on for this many steps more before the comparison
COARSE_MORE_STEPS = 12
#: a regular MIND level coarser than the working grid that used all its steps while the motion it found
#: reaches ``COARSE_KEEP_MM`` goes on for this many steps more (``OptimizerSettings.large_motion_more_steps``)
LARGE_MOTION_MORE_STEPS = 8

PRESET_SETTINGS: dict[str, PresetSettings] = {
    # coarse_levels (eleventh session): a quarter-resolution MIND level before the quality's own.
    # Balanced, benchmark `lung-large` cases (10 mm mean breathing-like motion) seeds 0-3: 0.749 / 0.433 /
    # 0.729 / 0.658 -> 0.425 / 0.436 / 0.499 / 0.457 mm (mean 0.642 -> 0.454), the standard `lung`
    # cases (5 mm) seeds 0-3: 0.263 / 0.263 / 0.300 / 0.314 -> 0.267 / 0.264 / 0.304 / 0.323; fast
    # lung-large seeds 0-1 1.056 / 0.886 -> 0.999 / 0.832, lung seeds 0 and 3 0.447 / 0.464 -> 0.453 /
    # 0.479; optimisation time about the same (the half-resolution level then stops earlier). The brain
    # keeps its two levels: there the same level cost 0.002-0.030 mm on all five benchmark seeds
    # and 0.066 on synthseg (brain-local, control values 20 mm apart: 0.857 -> 0.800).
    # prealign_local_check off (eighteenth session): balanced, the lung deformation families
    # (scripts/deformation_families.py lung:M:0), TRE mm with the check -> without: 15 mm mean motion seeds
    # 0 / 1 / 2 1.754 / 1.439 / 2.673 -> 0.688 / 0.699 / 0.763, 20 mm seed 1 7.210 -> 1.562 (the affine
    # had been refused on all four); lung-large seeds 0 / 2 0.397 -> 0.404, 0.465 -> 0.402; the benchmark's
    # lung cases kept their affine either way (0.224, 0.219)
    # coarse_start instead of coarse_levels (nineteenth session): ``LUNG_COARSE_KEEP_MM``
    "lung-ct": PresetSettings(modality="ct", ct_window=(-1000.0, 200.0), refine_similarity="ngf",
                              coarse_start=((4, 12),), coarse_keep_mm=LUNG_COARSE_KEEP_MM, prealign_local_check=False),
    # coarse_start (fourteenth session): the quarter-resolution level the brain does without, run
    # first and kept only for motion beyond the half-resolution level's reach (``COARSE_KEEP_MM``).
    # The lung's own quarter level stays; an eighth-resolution start there was mixed (lung 15 mm
    # 1.367 -> 0.992, lung-large seeds 0 / 1 0.410 -> 0.393, 0.414 -> 0.460, at the same motion)
    "brain-mri": PresetSettings(modality="mr", coarse_start=((4, 12),)),
    "generic": PresetSettings(modality="generic", coarse_start=((4, 12),)),
}


@dataclass(frozen=True)
class QualitySettings:
    """Speed/accuracy trade-off.

    Attributes:
        working_spacing_mm: target voxel size of the working grid (never finer than the fixed image).
        max_working_voxels: cap on the working grid (larger inputs get a coarser spacing, and say so).
        levels: instance-optimisation levels as (downsampling of the working grid, most steps),
            coarse first; a level stops early when its loss stops improving. Empty: no instance
            optimisation (the network's prediction alone).
        step_voxels: longest update per step, voxels of the level grid.
        sigma_update: Gaussian sigma smoothing each update (fluid regularisation), working-grid voxels.
        sigma_field: Gaussian sigma smoothing the field after each step (elastic), working-grid voxels.
        mind_var_floor: MIND-SSC variance floor relative to the image-wide mean (flat regions).
        landmark_fraction: share of each landmark pair's residual removed per step near it.
        prealign: "affine", "rigid" or "none".
        prealign_iterations: optimiser iterations per pre-alignment level.
        refine_steps: most steps of the refinement after the optimisation (engine/refine.py: local
            NCC on intensities; for two contrasts normalised gradient fields, ``REFINE_STEPS_FACTOR``
            times as many; 0: none). It stops earlier once its steps fall below their minimum.
        local_steps: most steps of each stage of the refinement's continuation with less smoothing
            (``LOCAL_REFINE_MIN_GAIN``, ``refine.refine_locally``; 0: never).
        prealign_spacing_mm: voxel size of the finer pre-alignment level (the coarser is twice it):
            an affine needs no fine detail, and the deformable stage corrects what is left.
        network_passes: most network passes, each on the moving image warped by the prediction so
            far (a pass is kept only when it lowers the local NCC loss; ``prediction.network_stage``).
            Qualities that optimise afterwards keep 1 pass (a second costs 0.3-0.5 s of network and
            0.1 s per similarity check, and the optimisation ends at the same TRE either way).
        network_refine_downsample: the network's input downsampling in the passes after the first
            (None: the weights' own, as the first pass; 1: the working grid itself, coarse to fine;
            ``model.inference.predict_in_passes``). ``instant`` used 1.25 until the tenth session
            (now 1.5, to leave time for the residual pass, below), the finest whose two
            forward passes stay within 1 s on a CPU (oneDNN channels-last convolutions,
            ``model.blocks.Conv3d``): brain benchmark cases, 5 seeds, step-28,347 weights, 0.81 mm
            in 0.59-0.69 s of forward passes (1.5: 0.91 mm in 0.41-0.50 s); lung 0.91 mm (1.5:
            1.09). At full resolution the second pass alone takes about 1.0 s on the brain grid.
        network_refine_downsample_gpu: the same on a CUDA device (None: as on the CPU). ``instant``
            uses 1 there: the full-resolution second pass removes 54 % of the held-out TRE against
            52 % at 1.25 (model card); its cost on a GPU was not measured here (no GPU lent), a
            forward pass of this 0.5 M-parameter network on a 10^6-voxel grid is of the order of
            tens of milliseconds on current GPUs.
        network_smooth_voxels: Gaussian sigma (working-grid voxels) smoothing the network's field
            before its similarity check (0: as predicted). ``instant`` uses 1: the field is
            upsampled from the network's coarser grids and carries their small blocky errors.
            Measured (tenth session, step-32,148 weights, ``instant`` as shipped otherwise; benchmark
            cases): brain seeds 0-4 0.804 / 0.809 / 0.761 / 0.745 / 0.791 mm -> 0.788 / 0.800 / 0.745 /
            0.736 / 0.781, lung seeds 0-2 0.869 / 0.876 / 0.942 -> 0.863 / 0.879 / 0.936, synthseg
            2.039 -> 2.028, oblique 0.935 -> 0.938; on the balanced working grid sigma 0.75 gave
            0.793 / 0.802 / 0.750 on brain seeds 0-2 (1: 0.788 / 0.800 / 0.745), 2 was worse than 1 on those
            three, 1.5 on the five others tried.
            Eight of ten cases better by 0.006-0.016 mm, two worse by 0.003. The optimising qualities
            start from the field as predicted (their optimisation replaces those details).
        residual_pass: after the network's passes, one more by the residual-motion weights
            (``adregnet_residual.pt`` beside the default weights, ``configs/train_residual.json``:
            the same architecture at the input's own resolution, trained on 0.2-2 mm motion), kept
            only when it lowers the local NCC loss; skipped when that file is absent or other
            weights are given. ``instant`` on a CPU: second pass at / 1.5, residual pass at / 1.25
            (benchmark cases, step-32,148 + residual step-7,200 weights, 2 threads, field smoothed by
            1 voxel as before): brain seeds 0-4 0.788 / 0.800 / 0.745 / 0.736 / 0.781 mm -> 0.671 /
            0.655 / 0.628 / 0.658 / 0.696 (mean 0.770 -> 0.662), synthseg 2.028 -> 1.995, oblique
            0.938 -> 0.820, but lung seeds 0-2 0.863 / 0.879 / 0.936 -> 0.915 / 0.898 / 0.970 (worse);
            forward passes 0.88-0.97 s on the brain (0.60-0.70 s before). Residual weights of step
            10,788 (eleventh session, same configuration): brain 0.631 / 0.619 / 0.601 / 0.633 / 0.668
            (mean 0.630), lung 0.869 / 0.862 / 0.918, synthseg 1.981, oblique 0.782; forward passes
            0.84 s on the brain seed-0 grid (the network stage with its similarity checks and the
            smoothing 1.08-1.12 s). The residual pass after a
            second pass at / 1.25 (brain mean 0.643, lung 0.835) takes 1.08-1.21 s, over the 1 s
            budget; both at / 1.5 brain 0.735, lung 1.025; on a CUDA device the second and residual
            passes run at full resolution (on the CPU, second pass at / 1.25 and residual at / 1:
            brain 0.593, lung 0.748 mm, in 1.6-1.7 s; GPU time not measured).
        residual_downsample: that pass's input downsampling on a CPU (1: the working grid).
        residual_downsample_gpu: the same on a CUDA device (None: as on the CPU).
    """

    working_spacing_mm: float
    max_working_voxels: int
    levels: tuple[tuple[float, int], ...]
    step_voxels: float = 1.0
    sigma_update: float = 5.0
    sigma_field: float = 1.5
    mind_var_floor: float = 0.03
    landmark_fraction: float = 1.0
    prealign: str = "affine"
    prealign_iterations: int = 60
    prealign_spacing_mm: float = 4.0
    refine_steps: int = 0
    local_steps: int = 0
    network_passes: int = 1
    network_refine_downsample: Optional[float] = None
    network_refine_downsample_gpu: Optional[float] = None
    network_smooth_voxels: float = 0.0
    residual_pass: bool = False
    residual_downsample: float = 1.0
    residual_downsample_gpu: Optional[float] = None

    def refine_downsample_on(self, device) -> Optional[float]:
        """The network's downsampling after the first pass on ``device`` (a torch device or its name)."""
        return _on_device(device, self.network_refine_downsample, self.network_refine_downsample_gpu)

    def residual_downsample_on(self, device) -> float:
        """The residual pass's input downsampling on ``device`` (a torch device or its name)."""
        return _on_device(device, self.residual_downsample, self.residual_downsample_gpu)


def _on_device(device, cpu_value, gpu_value):
    """``gpu_value`` on a CUDA device when it is set, else ``cpu_value``."""
    return gpu_value if str(device).startswith("cuda") and gpu_value is not None else cpu_value


# Measured on the brain and lung benchmark cases (scripts/speed_eval.py, 2 cores): see README "Performance"
# and docs/PERFORMANCE.md.
QUALITY_SETTINGS: dict[str, QualitySettings] = {
    # tenth session: with the residual pass the second pass runs at / 1.5 on a CPU (was 1.25) so that the
    # three forward passes stay within 1 s; see ``residual_pass`` for what that measured
    "instant": QualitySettings(working_spacing_mm=2.0, max_working_voxels=96 ** 3, levels=(), network_passes=2,
                               network_refine_downsample=1.5, network_refine_downsample_gpu=1.0,
                               network_smooth_voxels=1.0, residual_pass=True, residual_downsample=1.25,
                               residual_downsample_gpu=1.0),
    # refine_steps 4 -> 6 (ninth session; same tuning and held-out cases as balanced's: mean relative TRE
    # 0.1254 -> 0.1168 and 0.2064 -> 0.1920 held out, 18 of 19 cases better; about 0.3 s more optimisation)
    # refine_steps 6 -> 10 (twelfth session, after the gain normalisation and the midway intensity map made
    # the refinement's optimum closer to the truth; one run each): brain seeds 0-4 0.262 / 0.241 / 0.277 /
    # 0.338 / 0.312 -> 0.224 / 0.215 / 0.247 / 0.320 / 0.271 mm (mean 0.286 -> 0.255), lung 0.453 -> 0.418,
    # lung-large 0.999 -> 0.872, oblique 0.348 -> 0.329, brain-local seeds 0-1 0.994 / 1.118 -> 0.965 /
    # 1.083, synthseg 0.912 -> 0.892; 8 steps: brain mean 0.265. About 0.5 s more refinement
    # local_steps 6 (thirteenth session, ``LOCAL_REFINE_MIN_GAIN``): brain-local seeds 0 / 1 0.965 / 1.083 ->
    # 0.560 / 0.612 mm (12 steps per stage: 0.512 / 0.558, 1.5 s more), brain 3 mm / 15 mm 1.555 / 1.546 ->
    # 0.946 / 0.969, 8 mm / 25 mm 2.383 / 2.373 -> 1.493 / 1.401; about 1.5 s more where it runs
    # local_steps 6 -> 12 (thirty-fourth session, one run; docs/benchmarks/wave34-2026-12-04.md): brain 4 / 20, 3 / 15,
    # 8 / 25 (seed 1), brain-local seeds 7 / 8 0.546 / 0.850 / 1.093 / 0.584 / 0.567 -> 0.439 / 0.716 / 0.911 / 0.460 /
    # 0.488 mm; held out, brain 4 / 20 seed 2, 3 / 20 seed 3, 1 / 15 seed 2 (not gated), 6 / 30 seed 2 0.612 / 0.445 /
    # 0.487 / 0.422 -> 0.557 / 0.382 / 0.487 / 0.412; 1-2 s more where it runs
    "fast": QualitySettings(working_spacing_mm=2.0, max_working_voxels=96 ** 3, levels=((2, 10), (1, 2)),
                            refine_steps=10, local_steps=12),
    # refine_steps 10 -> 14 (ninth session; 16 tuning cases, then 19 held-out ones: benchmark brain seeds 2-4,
    # lung seeds 2-3, the seed-1 deformation families, brain-local, lung-large, brain 1 mm: mean relative TRE
    # 0.1038 -> 0.0996 on the benchmark-like ones, 0.1702 -> 0.1677 on the others, worse by 0.003 mm at most;
    # about 0.4-0.8 s more optimisation)
    # refine_steps 14 -> 20 (twelfth session, same reason and cases): brain seeds 0-4 0.218 / 0.211 / 0.228 /
    # 0.308 / 0.275 -> 0.210 / 0.188 / 0.213 / 0.298 / 0.275 mm (mean 0.248 -> 0.237), lung 0.267 -> 0.263,
    # brain-local seeds 0-1 0.793 / 0.867 -> 0.797 / 0.830, brain-t1t2 (NGF, 3x the steps) 0.341 -> 0.334,
    # oblique, synthseg and brain-flair unchanged (0.291, 0.898, 0.410: the refinement stops there on its
    # own); 24 or 28 steps: no further gain (the step falls below its floor first). About 0.4-0.8 s more
    # refinement where the steps run. ``best`` keeps 16: 24 gave 0.193 / 0.183 / 0.212 -> 0.189 / 0.183 /
    # 0.212 on brain seeds 0-2 (it mostly stops before 16)
    # local_steps 12 (thirteenth session): brain-local seeds 0 / 1 0.797 / 0.830 -> 0.482 / 0.532 mm, brain 3 mm /
    # 15 mm 1.494 / 1.393 -> 0.798 / 0.776, 8 mm / 25 mm 2.181 / 1.651 -> 1.087 / 1.008; about 2.8 s more where
    # it runs (docs/PERFORMANCE.md, "Motion finer than the smoothing"); ``best`` the same (brain-local seed 0 0.877 -> 0.444)
    # local_steps 12 -> 24 (thirty-fourth session, one run): the same five cases as fast's 0.408 / 0.672 / 0.805 / 0.466
    # / 0.493 -> 0.404 / 0.588 / 0.718 / 0.412 / 0.479 mm (36: 0.408 / 0.574 / 0.709 / 0.421 / 0.485); held out, as
    # fast's, 0.538 / 0.381 / 0.375 / 0.403 -> 0.541 / 0.381 / 0.373 / 0.409 (no gain there); about 2-2.5 s more where
    # it runs. ``best`` the same: brain 3 / 15, brain-local seed 7 0.723 / 0.434 -> 0.593 / 0.423. Two contrasts take
    # ``LOCAL_REFINE_STEPS_FACTOR`` times these
    "balanced": QualitySettings(working_spacing_mm=2.0, max_working_voxels=128 ** 3, levels=((2, 12), (1, 2)),
                                refine_steps=20, local_steps=24),
    "best": QualitySettings(working_spacing_mm=1.5, max_working_voxels=160 ** 3, levels=((2, 20), (1, 8)),
                            prealign_iterations=120, prealign_spacing_mm=2.0, refine_steps=16,
                            local_steps=24),
}


#: a brain pre-alignment that scales the moving head by at least this share along an axis (singular values
#: of its matrix) suggests two different people: a skull keeps its size between one patient's scans, heads
#: differ by 5-15 %. The run then says that a regularization of 0.25 suits registration between people
#: (``stages.intersubject_hint``). Measured (fifteenth session, ``python -m benchmarks.intersubject``, six
#: pairs of SynthSeg subjects): 3.2-5.8 % on five pairs, the sixth kept no affine; the benchmark's brain
#: cases (one anatomy deformed) keep none. Inter-subject Dice at regularization 1 / 0.25: 0.735 / 0.766
INTERSUBJECT_HINT_SCALE = 0.03
