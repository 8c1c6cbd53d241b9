r"""The numbers of the pre-alignment (what it must gain to be kept, how far it may scale, the rotation search),
each with what it measured; re-exported by :mod:`.settings`, where the engine reads them."""
from __future__ import annotations

__all__ = ["PREALIGN_MIN_RELATIVE_GAIN", "PREALIGN_MIN_LOCAL_GAIN", "PREALIGN_MAX_SCALE", "PREALIGN_ROTATION_MIN_GAIN",
           "PREALIGN_MI_ITERATIONS_FACTOR", "PREALIGN_ROTATION_MIN_CUT", "PREALIGN_CENTRES_APART_MM",
           "SPREAD_TURNS", "SPREAD_TURNS_FITTED", "TURNS_JUDGED_LOCALLY"]

#: relative metric improvement the affine pre-alignment must bring to be kept (see prealign)
PREALIGN_MIN_RELATIVE_GAIN = 0.05
#: relative MIND-SSC improvement the kept pre-alignment must also bring (the deformable stage's own
#: local similarity; see prealign). Measured, affine alone: lung cases (breathing, a real global
#: component) 25-29 % and a shifted brain pair 26 %, all kept; affines fitted to purely local
#: deformation -16 % to +0.5 % (the +0.5 %: synthseg seed 2, 3.74 -> 4.20 mm alone), refused
PREALIGN_MIN_LOCAL_GAIN = 0.02
#: largest scaling along any axis (and smallest, its inverse) of an affine pre-alignment that is kept
#: (``prealign.prealign``). Kept affines on the benchmark cases scale by 0.97-1.00 (lung); adult heads
#: differ by about 10-15 %, breathing changes the lung's length by up to about 25 %. Under a strong
#: gamma and bias field (the oblique case, ``scripts/intensity_stress.py`` change 3:1.0) the
#: correlation chose 0.65-0.89 and both checks kept it: final TRE 21.7 mm, 0.57 mm without it
PREALIGN_MAX_SCALE = 1.4
#: two contrasts (mutual information): the pre-alignment turns its start by a rotation (+-45, +-90, 180
#: degrees about an axis, or one of the spread turns below) that fits this much better than the usual
#: start after a short rigid fit at 16 mm, and through which the local structure similarity (MIND-SSC) is
#: not worse (``prealign._rotation_search``; about 0.2 s; one contrast: ``PREALIGN_ROTATION_MIN_CUT``
#: since the seventeenth session, the figures below are of this rule for both); the whole
#: fit then runs from the turn and from the usual start, and the one whose result MIND-SSC prefers is
#: kept (fifteenth session: an inter-subject pair of two contrasts, heads 35 degrees apart, was refused
#: the right turn by the former 2 % MIND-SSC rule, Dice 0.53 -> 0.63; another was given a wrong one,
#: 0.18 -> 0.69; ``docs/benchmarks/wave15-2026-12-01.md``). Brain seed 0 with its moving image turned
#: about the superior axis (balanced, final TRE; fourteenth session, the fifteenth's rule 0.301 / 0.265): 45 degrees (and 23 mm shifted) 8.09 -> 0.310 mm (gain 0.14), 90 degrees 63.8 -> 0.260 (0.25); 30
#: degrees 0.300 unchanged (the optimiser reaches it; best rotation's gain 0.07), unturned 0.210 unchanged
#: (-0.05). A synthseg pair (a contrast per tissue) scored a 180-degree flip 0.69 better by correlation
#: at 16 mm; MIND-SSC refused it (0.104 -> 0.185)
#: Now 0 (twenty-fourth session): brain-t1t2 turned 30 degrees about (0.5, -0.3, 1) was refused the right turn
#: (gain 0.031, fast 5.55 mm; 0.318 now); unturned pairs' best turns (up to 0.016) lose the confirmation
PREALIGN_ROTATION_MIN_GAIN = 0.0
#: mutual information fits this many times the quality's pre-alignment iterations (its steps shrink on a noisy
#: metric: 60 per level undid 9.9 of a T2's 20-degree turn against its T1, fast 0.99 mm; 150: 19.2, 0.33)
PREALIGN_MI_ITERATIONS_FACTOR = 2.5
#: one contrast: a turn is taken when its short fit removes this share of the usual start's mismatch
#: 1 - NCC^2 (a bounded measure: the relative gain of -NCC^2 could not reach 10 % where the usual start
#: already correlated 0.913, brain seed 0 turned 180 degrees about P)
PREALIGN_ROTATION_MIN_CUT = 0.30
#: images that overlap in physical space start their pre-alignment from the identity, unless their centres of
#: mass lie more than this far apart (mm) and a short rigid fit from those brought together matches better
#: (``prealign._overlapping_start``). Scans of one patient in one frame lie 0-10 mm apart (the benchmark brain
#: cases 1-2 mm, the lung cases 3-6 mm, a moving image cut to 40 % of its slices about 40 mm: the fit decides)
PREALIGN_CENTRES_APART_MM = 20.0
#: turns spread over all orientations that the rotation search ranks without a fit
#: (``engine/rotations.py``), and how many of the best it fits
SPREAD_TURNS = 256
SPREAD_TURNS_FITTED = 4
#: of the turns that pass the rotation search's rule, this many of the best by the metric are compared by
#: the local structure similarity (MIND-SSC), which picks one
TURNS_JUDGED_LOCALLY = 4
