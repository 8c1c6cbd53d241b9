r"""The numbers of the refinement stage (its images, steps and continuation) and of the contrast check after
the optimisation, each with what it measured; re-exported by :mod:`.settings`, where the engine reads them."""
from __future__ import annotations

__all__ = ["REFINE_GAIN_SIGMA_MM", "REFINE_GAIN_FLOOR", "REFINE_INTENSITY_KNOTS",
           "REFINE_INTENSITY_MAX_VOXEL_RATIO", "RESOLUTION_MATCH_MIN_SIGMA_VOXELS", "REFINE_TWO_CONTRASTS",
           "REFINE_STEPS_FACTOR", "LOCAL_REFINE_MIN_GAIN", "LOCAL_REFINE_MIN_FINE_SHARE",
           "LOCAL_REFINE_MIN_FINE_SHARE_TWO_CONTRASTS", "LOCAL_REFINE_MIN_FINE_MM_TWO_CONTRASTS",
           "LOCAL_REFINE_STEPS_FACTOR", "LOCAL_REFINE_FINE_SIGMA_MM",
           "LOCAL_REFINE_FACTORS", "TWO_CONTRAST_EDGE_SHARE",
           "EDGE_CHECK_SIGMA_VOXELS", "EDGE_CHECK_WINDOW", "START_MAP_MIN_CORRELATION",
           "START_MAP_SMOOTH_VOXELS", "NGF_EDGE_NOISE_SHARE",
           "OPTIMISATION_MIN_NMI_GAIN", "LOCAL_REGION_FLUID_MM", "LOCAL_REGION_ELASTIC_MM", "LOCAL_REGION_STEPS",
           "LOCAL_CHANGE_STILL_SHARE", "LOCAL_CHANGE_MATCH", "LOCAL_CHANGE_DIFFER", "LOCAL_CHANGE_MIN_ML",
           "LOCAL_CHANGE_MAX_SHARE", "LOCAL_CHANGE_MAX_PARTS", "LOCAL_CHANGE_MARGIN_MM", "LOCAL_CHANGE_STEPS",
           "LOCAL_CHANGE_MIN_GAIN", "LOCAL_CHANGE_SQUARED_RATIO", "LOCAL_CHANGE_SQUARED_FLOOR",
           "LOCAL_CHANGE_CT_MAX_PART_ML", "LOCAL_CHANGE_CT_STILL_SHARE", "LOCAL_CHANGE_FIELD_SHARE",
           "LOCAL_CHANGE_REACH_MM", "LOCAL_CHANGE_BEYOND_SHARE"]

#: local NCC refinement of one non-CT contrast (MRI): both images divided by their own local mean
#: intensity (``spatial.filters.local_gain_normalised``: Gaussian of this sigma in mm, floor
#: ``REFINE_GAIN_FLOOR`` of the 99th percentile) before the refinement compares them. Local NCC is
#: invariant to a constant gain within its 5-voxel windows, not to a gain that changes across them:
#: a bias field shifts where edges match. Measured (eleventh session, balanced, benchmark cases whose
#: two images each carry their own bias field of amplitude 0.2 and gamma; one run): brain seeds 0-4
#: 0.264 / 0.249 / 0.270 / 0.375 / 0.342 -> 0.223 / 0.213 / 0.235 / 0.294 / 0.290 mm (mean 0.300 ->
#: 0.251), oblique 0.322 -> 0.282. Brain seeds 0 and 1 with the moving image given a further gamma
#: (0.5, 1, 2) and bias field (amplitude 0, 0.5): mean of the twelve 0.361 -> 0.294 mm, bias 0.5
#: 0.401 / 0.366 -> 0.282 / 0.250, but gamma 0.5 alone 0.309 / 0.284 -> 0.376 / 0.314 (worse). Sigma
#: 4 / 6 / 8 / 10 mm and floors 0.05-1.0 tried on those cases (docs/benchmarks/wave11-2026-12-01.md;
#: scripts/intensity_stress.py). Not for CT (calibrated HU, no multiplicative bias: the lung case
#: 0.263 -> 0.30) nor for two contrasts (edge directions, already gain-free: T1 against T2 0.341 ->
#: 0.43 had it been applied there). Later the same session the refinement's interpolation-noise term
#: got the moving image's gain (``refine_field(moving_gain=)``, now ``noise_source=`` / ``noise_scale=``:
#: the noise measured before the normalisation, its variance scaled per voxel), which took back most
#: of what a gamma below 1 lost: brain seeds 0 / 1 stress mean 0.294 -> 0.288 mm, gamma 0.5 0.376 / 0.314
#: -> 0.322 / 0.289 (0.309 / 0.284 without any normalisation), gamma 2 0.305 / 0.242 -> 0.295 / 0.270;
#: benchmark brain seeds 0-4 0.222 / 0.216 / 0.235 / 0.300 / 0.281 (mean 0.251 as before), oblique
#: 0.282 -> 0.295; no-motion check fast 0.066 -> 0.048 mm, balanced 0.034 -> 0.031.
REFINE_GAIN_SIGMA_MM = 6.0
#: see ``REFINE_GAIN_SIGMA_MM``
REFINE_GAIN_FLOOR = 0.3
#: quantile levels of the intensity map the local-NCC refinement of one non-CT contrast applies after
#: the gain normalisation (``engine.modality.midway_intensities``): both images are put half-way between
#: their intensity curves, measured where both show tissue once the MIND optimisation aligned them, so a
#: gamma between two scans no longer reads as a mismatch in windows over three tissues. Measured in
#: ``docs/benchmarks/wave12-2026-12-01.md``.
REFINE_INTENSITY_KNOTS = 32
#: that map is left out when one image's voxels are more than this many times the other's (as seen on
#: the working grid, ``spatial.resolution.voxel_volume_ratio``): a blurrier image has a narrower intensity
#: distribution, and matching quantiles would stretch its contrast instead of undoing a curve. Measured
#: (twelfth session, brain seeds 0-2, the moving image resampled to 2 x 2 x 6 mm slices, ratio 3; one
#: run, fast / balanced without -> with the map): 0.544 / 0.534 -> 0.584 / 0.596, 0.524 / 0.585 ->
#: 0.535 / 0.559, 0.590 / 0.572 -> 0.598 / 0.596; at 2 x 2 x 4 mm (ratio 2.03) 0.372 / 0.365 -> 0.375 /
#: 0.371, 0.335 / 0.328 -> 0.336 / 0.338, 0.392 / 0.381 -> 0.396 / 0.388; both images at 6 mm or only
#: the fixed one: within +-0.008. The oblique case (1.5 x 1.5 x 3 mm fixed, 2 mm moving: ratio 1.5 on
#: the 2 mm working grid) keeps the map, which helps it. Since the resolution matching below, the map
#: on the 6 mm pairs measured within -0.011 / +0.010 mm of leaving it out: the rule stays.
REFINE_INTENSITY_MAX_VOXEL_RATIO = 2.0
#: the same map before the optimisation (``engine.refinement_stage.start_intensities``) only where the two working
#: images, smoothed by a Gaussian of ``START_MAP_SMOOTH_VOXELS``, correlate at least this much over the voxels both
#: show tissue at the start alignment: a monotone curve between the scans keeps them correlated, a bias field or
#: tissues in another order do not, and there the quantiles of the whole image mislead (smoothed, because the
#: start's misalignment decorrelates fine detail: unsmoothed, a sigmoid under 3 mm of motion read 0.68 against a
#: bias of amplitude 0.3 at 0.67). Measured (twenty-fifth session, brain seed 0 unless named; correlation,
#: balanced TRE mm without -> with the map): moving image through a sigmoid (steepness 3 and 6) / histogram-
#: equalised / gamma 0.5 / gamma 2 0.91 (6) / 0.94 / 0.95 / 0.86, 0.283 -> 0.194, 0.652 -> 0.227, 0.530 -> 0.288,
#: 0.248 -> 0.190, 0.278 -> 0.282; benchmark brain seeds 0 / 2 0.89 / 0.89, 0.183 / 0.202 -> 0.174 / 0.199; the
#: oblique case 0.85, 0.233 -> 0.210. Left out: benchmark brain seed 1 0.80 (0.181 -> 0.185 with it), bias
#: amplitude 0.3 / 0.5 0.79 / 0.68 (0.208 / 0.241 -> 0.227 / 0.267 with it), bias 1 with gamma 0.5 0.49 (0.790 ->
#: 0.843), synthseg (a contrast per tissue) 0.51 (0.916 -> 0.962)
START_MAP_MIN_CORRELATION = 0.82
#: see ``START_MAP_MIN_CORRELATION`` (working voxels)
START_MAP_SMOOTH_VOXELS = 2.0
#: two images of different resolution (thick slices against thin ones): the sharper one is blurred on
#: the working grid to the other's resolution before the network and the optimisation
#: (``spatial.resolution.matching_blur``: Gaussian point-spread functions of FWHM = spacing), where
#: that blur is at least this many working voxels along an axis. Measured (twelfth session, brain
#: seeds 0-1, slices made by the benchmark images smoothed along z by a Gaussian of the slice
#: thickness' FWHM and resampled to it; fast / balanced, TRE mm, without -> with the blur): moving at
#: 2 x 2 x 6 mm 0.544 / 0.534 -> 0.419 / 0.414 and 0.524 / 0.585 -> 0.395 / 0.368 (seed 2 0.590 / 0.572
#: -> 0.429 / 0.430); fixed at 6 mm 0.634 -> 0.426 and 0.534 -> 0.385 balanced; 4 mm (blur 0.73
#: voxel) moving 0.365 -> 0.319, 0.328 -> 0.278, fixed 0.359 -> 0.305, 0.322 -> 0.277; slices taken
#: without any smoothing, 6 mm: moving 0.472 -> 0.427, 0.478 -> 0.395, fixed 0.466 -> 0.399, 0.432 ->
#: 0.348. Small blurs did not pay: 3 mm slices without smoothing (blur 0.47 voxel) fast 0.254 / 0.229
#: -> 0.266 / 0.236, balanced 0.239 / 0.218 -> 0.234 / 0.213; the oblique case (1.5 x 1.5 x 3 mm
#: against 2 mm, 0.47 voxel) balanced 0.291 -> 0.305, fast 0.329 -> 0.332: below this threshold
#: nothing is blurred. Both images equally thick: nothing to match. The threshold applies to the
#: blur's widest standard deviation (an oblique blur's along its own direction, thirteenth session).
RESOLUTION_MATCH_MIN_SIGMA_VOXELS = 0.5
#: similarity of the refinement for two contrasts (one contrast: the preset's ``refine_similarity``):
#: brain-t1t2 case 0.40 mm with NGF (30 steps), 0.46 mm with 3-voxel local NCC (20 steps)
REFINE_TWO_CONTRASTS = "ngf"
#: the edge parameter of normalised gradient fields for one contrast (the lung CT preset) is this share of the
#: gradient magnitude white noise gives on the working grid (``noise_std`` of the noisier working image times
#: ``sqrt(sum 1 / (2 h^2))``, central differences), and never below ``RefineSettings.ngf_eps`` (0.0025 per mm): an
#: edge weaker than the noise counts as noise. Measured (twenty-eighth session, balanced, TRE mm, one run each;
#: ``scripts/ngf_edge_check.py``), 0.0025 -> this rule (the edge parameter it chose): benchmark lung seeds 0 / 1 /
#: 2 0.228 / 0.224 / 0.255 -> 0.214 / 0.208 / 0.238 (0.0053 / 0.0048 / 0.0057), lung-sliding 0.413 -> 0.409,
#: lung-large 0.373 -> 0.360; the lung case with noise of 100 HU on the moving / fixed image or 50 HU on the moving
#: 0.492 / 0.425 / 0.328 -> 0.421 / 0.413 / 0.302 (0.0148 / 0.0111 / 0.0089); the demo pair 0.245 -> 0.240 (fast
#: 0.250 -> 0.243), with 100 HU on the moving image 0.495 -> 0.443 (fast 0.494 -> 0.429); fast on lung seeds 0 / 1,
#: lung-sliding, lung-large 0.339 / 0.332 / 0.567 / 0.609 -> 0.339 / 0.324 / 0.553 / 0.625. The whole gradient noise
#: (share 1) lost on lung-sliding (0.467) and a fixed 0.01 there too (0.461); a fixed 0.005 did as well as this
#: rule on the clean cases (0.216 / 0.208 / 0.240 / 0.413 / 0.354) but kept less of the noisy ones (100 HU 0.467).
#: Two contrasts keep 0.0025: 0.005 cost the brain T1 against T2 case 0.314 -> 0.340 (twenty-seventh session).
NGF_EDGE_NOISE_SHARE = 0.5
#: refinement steps relative to the quality's (brain-t1t2, NGF: 10 steps 0.44 mm, 30 steps 0.40)
REFINE_STEPS_FACTOR = {"one contrast": 1, "two contrasts": 3}
#: the local NCC refinement of one contrast goes on with less smoothing (``refine.refine_locally``,
#: ``QualitySettings.local_steps`` steps per factor) when its own loss fell by more than this: the MIND
#: levels left motion finer than their smoothing. Measured (thirteenth session, balanced, refinement
#: gain): brain benchmark cases seeds 0-9 0.006-0.013, smooth 6 mm motion (control values 60 mm
#: apart) 0.006-0.009, oblique 0.006, brain with 3 % / 6 % noise 0.007, with a further gamma and bias
#: field (``scripts/intensity_stress.py`` changes up to gamma 0.5 / 3 with bias 1.0 / 1.5, where the
#: engine keeps local NCC) 0.007-0.023; control values 20 mm apart (brain-local) 0.036-0.055, 15 mm
#: 0.040-0.043, 8 mm motion 0.037-0.041.
#: Between, control values 20-30 mm apart with 2-4 mm motion, 0.016-0.019: the continuation helped
#: seven of eight of those (0.38-0.46 -> 0.33-0.40 mm; one 0.432 -> 0.466) and hurt 8 mm motion of
#: gain 0.022 (0.395 -> 0.458): the gate stays clear of them and of the intensity changes
#: (``docs/benchmarks/wave13-2026-12-01.md``).
LOCAL_REFINE_MIN_GAIN = 0.03
#: ... or when this share of the refinement's update (mean length, where the fixed image shows tissue)
#: is finer than ``LOCAL_REFINE_FINE_SIGMA_MM`` (``refine.fine_share``). Measured (fourteenth session,
#: balanced, one run; share: TRE without -> with the continuation forced on): brain benchmark seeds 0-9
#: 0.53-0.58 (all 0.04-0.12 mm worse forced on), oblique 0.55, brain under gamma 2 / 3 and a bias field
#: 0.56, control values 60 mm apart 0.57 (+0.09); 3-4 mm motion 30 mm apart 0.58-0.60 (-0.03, +0.00,
#: +0.03), 1 mm motion 20 / 25 mm apart 0.68 / 0.63 (+0.04, +0.06); motion of 0.5-2 mm 12-20 mm
#: apart 0.65-0.77 and gaining: 1 mm / 15 mm seeds 1-4 0.652 / 0.716 / 0.735 / 0.724 (0.524 -> 0.369,
#: 0.474 -> 0.395, 0.459 -> 0.334, 0.462 -> 0.372), 2 mm / 15 mm seeds 2 / 4 0.728 / 0.765 (0.937 ->
#: 0.478, 0.887 -> 0.560), 2 mm / 20 mm 0.728 (0.434 -> 0.349), 0.5 mm / 12 mm 0.726 (0.382 -> 0.308),
#: 2 mm local seeds 1 / 2 0.731 / 0.702 (0.382 -> 0.329, 0.411 -> 0.385). 0.70 was chosen on all of
#: these (no case held out); the margin to the highest share that lost (0.678) is narrow
LOCAL_REFINE_MIN_FINE_SHARE = 0.70
#: two contrasts (normalised gradient fields) go on with less smoothing only by the fine share, from this one: their
#: loss's gain does not tell local motion from smooth (synthseg 0.02-0.03 either way). Measured (thirty-fourth
#: session, balanced, one run; share: TRE without -> with the continuation forced on), the benchmark's smooth motion
#: (control values 40 mm apart) of synthseg / T1 against T2 / T1 against FLAIR seeds 1 / 2 / 3 / 7 / 8: 0.48-0.58, all
#: 15 worse forced on (0.280 -> 0.334 to 0.345 -> 0.453 mm); more local motion (``scripts/deformation_families.py``):
#: T1/T2 3 mm over 15 mm, 4 / 20 (seeds 1, 2) 0.617 / 0.645 / 0.621 (1.578 -> 0.872, 1.127 -> 0.711, 1.015 ->
#: 0.588), T1/FLAIR 4 / 15, 4 / 20 0.674 / 0.678 (2.461 -> 1.719, 1.078 -> 0.805); gaining below the threshold, left
#: out: T1/T2 6 / 30 0.549 (0.728 -> 0.511), 2 / 20 0.532 (0.573 -> 0.450), T1/FLAIR 6 / 30 0.584 (0.876 -> 0.750),
#: synthseg 4 / 20, 3 / 15 0.514 / 0.566 (2.116 -> 1.941, 2.323 -> 2.320); losing: T1/FLAIR 4 / 40 0.580 (0.410 ->
#: 0.492), T1/T2 8 / 40 0.509 (0.504 -> 0.507). The margin to the highest share that lost (0.580) is narrow. (These
#: with 12 steps per factor; the engine takes ``LOCAL_REFINE_STEPS_FACTOR`` times the quality's, below:
#: ``docs/benchmarks/wave34-2026-12-04.md``.)
LOCAL_REFINE_MIN_FINE_SHARE_TWO_CONTRASTS = 0.60
#: ... and only when that finer part of the update is also this long on average (mm): noise raises the share, not the
#: length. Measured (thirty-fourth session, balanced): the nine gated local cases 0.735-1.205 mm; the benchmark's T1/T2
#: and T1/FLAIR with 0 / 3 / 6 / 10 % noise on the moving image 0.40-0.52 (T1/FLAIR seed 1 at 10 %: share 0.614,
#: 0.487 mm, TRE 0.569 without the continuation, 0.913 with it); synthseg 0.63-0.80 (shares 0.49-0.55)
LOCAL_REFINE_MIN_FINE_MM_TWO_CONTRASTS = 0.6
#: the continuation's steps per stage relative to ``QualitySettings.local_steps``: the edge directions of two contrasts
#: take more, as their refinement does (``REFINE_STEPS_FACTOR``). Measured (thirty-fourth session, balanced, the five
#: gated two-contrast cases above and four held out): 12 steps per stage 1.719 / 0.872 / 0.711 / 0.805 / 0.588 and
#: 0.614 / 0.995 / 1.157 / 1.006 mm, 36 steps 1.525 / 0.688 / 0.666 / 0.837 / 0.541 and 0.580 / 0.921 / 0.967 / 1.003,
#: 72 steps 1.502 / 0.672 / 0.650 / 0.871 / 0.551 and 0.586 / 0.915 / 0.932 / 1.039 (2-3 s more)
LOCAL_REFINE_STEPS_FACTOR = {"one contrast": 1.0, "two contrasts": 1.5}
#: the scale of that share: the MIND levels' update smoothing (5 working voxels of 2 mm)
LOCAL_REFINE_FINE_SIGMA_MM = 10.0
#: regularization factors of the continuation's stages (relative to the refinement's smoothing).
#: balanced, brain-local seeds 0 / 1 (0.797 / 0.830 mm without): one stage 0.7 0.547 / 0.622, 0.5
#: 0.500 / 0.553, 0.35 0.599 / 0.596, 0.25 0.656 / 0.670; 0.7 then 0.5 (12 steps each) 0.482 / 0.532;
#: 0.5 then 0.25 0.687 / 0.659
LOCAL_REFINE_FACTORS = (0.7, 0.5)
#: after the MIND optimisation, two non-CT images whose local covariance is negative in more than
#: this share (of its absolute sum, where both show tissue) have tissues in another brightness order
#: and are refined as two contrasts (engine/modality.py ``inverted_edge_share``). Measured (fast,
#: ninth session): one contrast <= 0.003 (brain cases with MRI intensity changes, 8 mm motion,
#: thick slices, 20 % noise); tissue contrasts drawn per label (synthseg cases) 0.012-0.09
TWO_CONTRAST_EDGE_SHARE = 0.006
#: blur (working voxels) and window of that check: the blur keeps noise from inverting covariances
EDGE_CHECK_SIGMA_VOXELS = 2.0
EDGE_CHECK_WINDOW = 5
#: the MIND optimisation's field is left out when the normalised mutual information of the working images (every
#: other voxel where either shows tissue, inside the mask) falls from the optimisation's start by more than this
#: share of its excess over 1 (``refinement_stage.checked_optimisation``): the refinement starts from that start.
#: MIND-SSC normalises each patch by its own variance, so where one image is flat but noisy and the other
#: textured (lungs in an MR or a soft-tissue window against a CT) it compares noise with structure and drifts.
#: Measured (twenty-ninth session, balanced, ``scripts/optimisation_check.py``; the gain, TRE mm): the demo's moving
#: CT through a soft-tissue window (-160..240 HU, lungs flat, 1 % noise) against its fixed CT -0.113 (fast -0.096),
#: left out: 11.742 -> 1.876 (fast 8.66 -> 1.868); an MR-like rendering (lungs dark, not flat) +0.003, kept, 0.716;
#: synthseg seeds 0 / 1 / 2 -0.008 / +0.184 / +0.071, kept (a threshold at 0 would have left seed 0's out: 0.916 ->
#: 1.012); brain T1 vs T2 seeds 0-2 +0.61..+1.57; one contrast (brain, lung, oblique seed 0) +0.08..+0.23
OPTIMISATION_MIN_NMI_GAIN = -0.03
#: a region the user marks where the anatomy changed locally (``register(local_region=...)``): after the refinement
#: and its continuation, local NCC (or the refinement's similarity) goes on there alone with this fluid and elastic
#: smoothing (Gaussian sigmas, mm; the refinement's own are 10 and 1.4 mm on a 2-mm grid) for this many steps.
#: Measured (thirty-first session, ``scripts/local_change_check.py``, the brain T1 with a radial change of A = 8 mm
#: over s = 12 mm, balanced; TRE within 24 mm of the change): a 24-mm sphere about it 1.326 -> 0.253 mm (an exact
#: copy) and 1.370 -> 0.297 (2 % noise), Greedy 0.346 / 0.380; a 16-mm sphere 0.467, 36 mm 0.280, a 24-mm sphere
#: 8 mm off 0.319 (2 % noise). Marked where nothing changed locally (the benchmark brain case, a 24-mm sphere):
#: 0.174 -> 0.202 mm over the whole brain (0.288 -> 0.358 inside it)
LOCAL_REGION_FLUID_MM = 4.0
#: see ``LOCAL_REGION_FLUID_MM``
LOCAL_REGION_ELASTIC_MM = 0.7
#: see ``LOCAL_REGION_FLUID_MM``
LOCAL_REGION_STEPS = 40
#: one local change found without a mark (``engine.local_change``): a pair is still when at least this share of its
#: textured tissue matches before any deformation (``1 - lncc^2`` below ``LOCAL_CHANGE_MATCH``). Measured (thirty-second
#: session): the brain T1 with one radial change and 0-5 % noise 0.54-0.68; the benchmark cases 0.005 (brain) to 0.21
#: (lung)
LOCAL_CHANGE_STILL_SHARE = 0.4
#: see ``LOCAL_CHANGE_STILL_SHARE``
LOCAL_CHANGE_MATCH = 0.1
#: a still pair's tissue that does not match: ``1 - lncc^2`` above this
LOCAL_CHANGE_DIFFER = 0.2
#: the smallest part taken for a change, ml (noise on a still brain at 2 %: parts of up to 2.2 ml; a change of 4 mm
#: over 12 mm: 10 ml)
LOCAL_CHANGE_MIN_ML = 4.0
#: at most this share of the textured tissue may differ, in at most this many parts, for the change to count as local
LOCAL_CHANGE_MAX_SHARE = 0.1
#: see ``LOCAL_CHANGE_MAX_SHARE``
LOCAL_CHANGE_MAX_PARTS = 3
#: the parts found are grown by this much to make the region the refinement goes on in, mm, and the region takes in
#: the places around them where the field moves with the change (``LOCAL_CHANGE_FIELD_SHARE``)
LOCAL_CHANGE_MARGIN_MM = 8.0
#: the region found also takes in the connected places within ``LOCAL_CHANGE_REACH_MM`` of the parts whose displacement
#: (less the median vector beyond) is above this share of its largest in the region
#: (``local_change.with_field_extent``).
#: Measured (thirty-third session, balanced, TRE mm, brain T1 with one radial change of A over s mm, exact copy / 2 %
#: noise), the margin alone 8 mm / 12 mm / this: A 8 over 12 0.236 / 0.192 / 0.168 and 0.282 / 0.223 / 0.206; A 4
#: over 12 0.178 / 0.123 / 0.112 and 0.209 / 0.172 / 0.158; A -4 over 12 0.309 / 0.220 / 0.146 and 0.290 / 0.229 /
#: 0.188; A 3 over 8 0.170 / 0.191 / 0.158 and 0.212 / 0.195 / 0.189; A 6 over 20 0.144 / 0.122 / 0.124 and 0.175 /
#: 0.172 / 0.166 (a fixed margin suits one width only: 16 or 20 mm lost on A 8 / 3 over 12 / 8, copies 0.263-0.409);
#: the lung CT growths 0.263 / 0.259 -> 0.258 / 0.218 (12 mm: 0.276 / 0.230); a share of 0.35: within 0.01 of 0.25
LOCAL_CHANGE_FIELD_SHARE = 0.25
#: see ``LOCAL_CHANGE_FIELD_SHARE``
LOCAL_CHANGE_REACH_MM = 40.0
#: the region is widened only where the field beyond ``LOCAL_CHANGE_REACH_MM`` is still: its median displacement (less
#: its median vector) below this share of the change's largest. Measured (thirty-third session): the changes above
#: 0.004-0.018, a darker blob 0.035, rigid turns 0.04-0.07 (not kept either way), brains deformed by 1 mm everywhere
#: 0.53 / 0.99 (widened there, TRE 0.220 -> 0.337 mm)
LOCAL_CHANGE_BEYOND_SHARE = 0.1
#: the refinement in a region found so goes on for at most this many steps (the user's region: ``LOCAL_REGION_STEPS``).
#: Measured (thirty-second session, six changes of 4-8 mm over 12-20 mm, 2 % noise or none, balanced): TRE 0.268 mm
#: on average with 20 steps (1.8 s), 0.274 with 40 (3.5-4.5 s)
LOCAL_CHANGE_STEPS = 20
#: the refinement in a region found so is kept only when the parts' dissimilarity (``local_change.change_followed``)
#: fell by at least this share of itself. Measured (thirty-second session, balanced): the six changes of
#: ``scripts/local_change_check.py`` 11-44 % (the smallest, A 4 mm on an exact copy: TRE 0.401 -> 0.178 mm kept; at 12 %
#: it was left); two of them seen through a rigid turn (followed already: TRE 0.188 -> 0.256 and 0.144 -> 0.196 mm when
#: refined) -0.5 / -3.6 %, left; a brain deformed by 1 mm everywhere 7 / 7 %, kept (0.221 -> 0.220, 0.250 -> 0.256);
#: A 6 mm over 20 mm 6.9 %, kept (0.215 -> 0.175); a darker blob, no motion, 21 % (kept: it looks like motion)
LOCAL_CHANGE_MIN_GAIN = 0.05
#: in a still pair where the local correlation finds no part, tissue differs where its squared intensity difference
#: (smoothed by 2 voxels) is above this many times its median over the textured tissue, and above this many times the
#: square of ``LOCAL_CHANGE_SQUARED_FLOOR`` times the tissue's median intensity. Measured (thirty-second session,
#: balanced): A 3 mm over 8 mm 0.616 -> 0.212 (2 % noise) and 0.521 -> 0.170 mm (copy); A 2 over 8 found, not kept; no
#: part on the no-change, rigid, bias, blob and 0.5-mm pairs
LOCAL_CHANGE_SQUARED_RATIO = 4.0
#: see ``LOCAL_CHANGE_SQUARED_RATIO``
LOCAL_CHANGE_SQUARED_FLOOR = 0.02
#: CT: a part that does not match larger than this (ml) is motion, not a local change. Measured (thirty-second session,
#: balanced): the breathing benchmark pairs' largest parts 164 (lung) and 474 ml (lung-large), the demo pair's 217;
#: nodule-like growths inside a lung (A 6 / 4 mm over 10 mm) 41 / 18 ml, 0.846 / 0.701 -> 0.263 / 0.259 mm
LOCAL_CHANGE_CT_MAX_PART_ML = 80.0
#: CT: the share of the textured tissue that must match (squared difference) for a pair to be still. Measured
#: (thirty-second session): the breathing benchmark pairs 0.73-0.87 and the demo pair 0.75 (stopped here, before the
#: parts are labelled: 0.2 s on the demo), the nodule-like growths and a still copy 0.99-1.00
LOCAL_CHANGE_CT_STILL_SHARE = 0.95
