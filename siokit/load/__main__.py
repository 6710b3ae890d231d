"""``python -m siokit.load ARGS``."""

import sys

from .cli import main

sys.exit(main(prog="python -m siokit.load"))
