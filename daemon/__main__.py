"""`python -m daemon` is `channeld`."""

import sys

from daemon.cli import main

sys.exit(main())
