import sys

from vgt.cli import run

sys.exit(run())
