r"""The AD-RegNet benchmark: outside the shipped engine, run from a source checkout (``python -m benchmarks``).

It needs the engine (``ADRegNetLib``) plus ``benchmarks/requirements.txt`` (scipy); the peer
methods are optional (``benchmarks/requirements-peers.txt``). Nothing in ``ADRegNetLib`` imports it.

* :mod:`.cases`         the case folders on disk (:class:`~.cases.Case`, :func:`~.cases.build_case`),
  made by :mod:`.build` from :mod:`.recipes`, :mod:`.sources` (real anatomy),
  :mod:`.deformations` (known SVFs), :mod:`.intensities`, :mod:`.landmarks`, :mod:`.sampling`.
* :mod:`.evaluate`      TRE, Dice, folds and std log J of a field against a case's truth.
* :mod:`.peers`         other registration tools run on the same files, fields in the library's
  convention (fixed x -> moving x + u(x), LPS mm, on the fixed grid).
* :mod:`.methods`       method names (baselines, AD-RegNet qualities, peers) and availability.
* :mod:`.runner`        each method in a child process (``python -m benchmarks --run-one``), measured.
* :mod:`.dirlab`        DIR-Lab 4DCT pairs (``--dirlab DIR``).
* :mod:`.report`        tables (text, Markdown, CSV, DIR-Lab style).
* :mod:`.cli`           the command line; :mod:`.large_input` the 512x512x300 time/memory check.
"""
from __future__ import annotations
