"""``adregnet benchmark``: cases from real anatomy with known deformations, peer methods, tables.

* :mod:`.cases`  builds the cases (fixed/moving images, true field, landmarks, labels) on disk.
* :mod:`.peers`  runs other registration tools on the same files and returns their fields in the
  library's convention (fixed x -> moving x + u(x), LPS mm, on the fixed grid).
* :mod:`.runner` runs every method in a child process, measures, prints and writes tables.
* :mod:`.report` formats the tables (Markdown, CSV, DIR-Lab style).
"""
from __future__ import annotations
