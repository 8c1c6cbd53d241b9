r"""The bounds the engine holds its inputs to: overlap, masks, field of view, padding, memory, and the
user's settings.

Split from :mod:`.settings` (which re-exports every name, so ``settings.MAX_SEED`` and the like still
work); the presets, qualities and the numbers of the method itself stay there.
"""
from __future__ import annotations

__all__ = ["MIN_MOVING_OVERLAP", "MASK_MIN_SHARE_ON_IMAGE", "MAX_MASK_VALUES", "MAX_SIGNED_LABEL_VALUES",
           "MIN_MASK_WORKING_VOXELS", "MIN_PHYSICAL_OVERLAP", "FIELD_OF_VIEW_MARGIN_VOXELS",
           "FIELD_OF_VIEW_MIN_TISSUE", "PADDING_MIN_CUT_SHARE", "BYTES_PER_WORKING_VOXEL",
           "BYTES_PER_FIXED_VOXEL", "MAX_REGULARIZATION", "MIN_REGULARIZATION", "MAX_SEED",
           "SMALL_PHYSICAL_OVERLAP", "WORKING_REGION_MARGIN_MM", "WORKING_REGION_MIN_PLANES"]

# ---- overlap and masks
#: share of working-grid voxels the pre-aligned moving image must cover
MIN_MOVING_OVERLAP = 0.01
#: a mask with less than this share of its marked volume on its image is warned about (a header flipped
#: between RAS and LPS with the same origin left 1.6 % of a fixed mask on the sample CT, hostile-input
#: sweep of the eighteenth session); a mask from a larger scan of the same patient may legitimately reach
#: beyond a cropped image, so the bar is low
MASK_MIN_SHARE_ON_IMAGE = 0.25
#: A mask or label map with more distinct values than this is an intensity image given by mistake
#: (label maps hold tens to about a thousand labels, e.g. a 1000-parcel atlas; an MR volume thousands
#: of grey values). With negative values (CT in HU, signed data) more than MAX_SIGNED_LABEL_VALUES.
#: Checked by the CLI (``cli.register_cmd.check_label_values``), the engine (``masks.map_mask``, ``masks.scan_like``) and the
#: Slicer module's masks.
MAX_MASK_VALUES = 5000
MAX_SIGNED_LABEL_VALUES = 64
#: fewest working-grid voxels a region of interest (the masks) must leave to compare: the coarsest level
#: (a quarter of the working resolution) must keep some of it (a one-voxel mask failed inside the losses
#: with "the mask is empty on this grid")
MIN_MASK_WORKING_VOXELS = 512
#: physical bounding-box overlap below which fixed and moving are taken as not overlapping
MIN_PHYSICAL_OVERLAP = 0.5


# ---- field of view, padding and memory
#: working voxels left out of the similarity next to where the moving image ends inside the fixed one
#: (engine/stages.py ``moving_field_of_view``; MIND patches and the 5-voxel NCC windows reach 2-3 voxels)
FIELD_OF_VIEW_MARGIN_VOXELS = 3
#: share of the fixed image's tissue that must lie there before the similarity is left out at all
FIELD_OF_VIEW_MIN_TISSUE = 0.01
#: whole planes of one constant value at an image's border are padding (no data, ``spatial/padding.py``) when
#: the plane next to them differs from that value over at least this share of its area (anatomy cut by them); a
#: skull-stripped brain's zero planes above the head (tissue over a few % of the next plane) stay
#: background. Measured (thirteenth session, fast, brain benchmark seed 0): moving image set to its
#: minimum over half its width: before, affine scale 0.5 and 42 mm TRE (8.3 mm with ``PREALIGN_MAX_SCALE``);
#: now over the 102 landmarks of the half with data 0.38 mm, as with the grid itself cut there; half its
#: depth 0.32 mm (138 landmarks); the fixed image so over half its width 0.37 mm, 30 % of its depth
#: 0.28 mm. The lung case's moving CT set to 0 HU (a resampler's default value) over its lowest 30 %:
#: fast 1.186 -> 0.573 mm over the 227 landmarks with data. No benchmark image, no demo image has such
#: planes.
PADDING_MIN_CUT_SHARE = 0.1
#: the working grid leaves out whole planes of one constant value at the fixed image's border (padding, or an
#: empty background stored as one exact value) but keeps this much of them next to the data (``stages.
#: working_region``): motion from beyond the data's edge is still seen; and at least this many planes per axis
WORKING_REGION_MARGIN_MM = 16.0
WORKING_REGION_MIN_PLANES = 16
#: bytes per working-grid voxel during instance optimisation (images, pyramid, gradients), measured; 32 of
#: them since the seventeenth session for the refinement's refined moving image (8 float32 per voxel)
BYTES_PER_WORKING_VOXEL = 252
#: bytes per fixed-grid voxel while building the full-resolution outputs (slab-wise Jacobian)
BYTES_PER_FIXED_VOXEL = 40

# ---- bounds of the user's settings (checked by ``stages.check_settings``; the CLI imports them)
#: largest regularization accepted: the field's Gaussian sigma grows with it (1.5 working voxels at 1),
#: and at 100 it is already far wider than any scan (the field is then a translation); 1e7 ran for hours
#: and 1e30 asked for petabytes
MAX_REGULARIZATION = 100.0
#: smallest regularization accepted: at 0.01 the field's smoothing (sigma 1.5 x 0.01 working voxels) is
#: already none and the updates' (5 x 0.1 voxel) nearly none; smaller values changed nothing more, and
#: from about 1e-300 on the smoothing's kernel overflowed (hostile-input sweep, eighteenth session)
MIN_REGULARIZATION = 0.01
#: largest seed accepted: the pre-alignment's sampler (SimpleITK) takes seed + 1 as an unsigned 32-bit
#: number and reads 0 as "seed from the clock" (``sitk_fit.registration_method``), so -1 would give a different
#: result on every run and 2**32 - 1 overflows
MAX_SEED = 2 ** 32 - 2
#: fixed and moving boxes sharing less than this share of the smaller one (``spatial.overlap.physical_overlap``),
#: but not nothing, are warned about: scans of one anatomy placed by their headers overlap far more, and a
#: flipped axis direction with the same origin leaves one voxel layer per flipped axis (1/24-1/200 of a scan)
SMALL_PHYSICAL_OVERLAP = 0.1
