"""`python -m ssmc`: the command line (see ssmc.cli)."""
import sys

from ssmc.cli import main

sys.exit(main())
