import sys

from vgt.cli import main

sys.exit(main())
