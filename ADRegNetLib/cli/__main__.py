r"""``python -m ADRegNetLib.cli ...``: the same as the ``adregnet`` command."""
import sys

from .main import main

sys.exit(main())
