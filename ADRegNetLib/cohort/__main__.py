r"""``python -m ADRegNetLib.cohort PAIRS.csv -o OUTDIR``: the same as ``adregnet batch``."""
from __future__ import annotations

import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
