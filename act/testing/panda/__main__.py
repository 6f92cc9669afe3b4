"""``python -m act.testing.panda``: run the PanDA TEST DOUBLE (see :func:`main`)."""

import sys

from act.testing.panda.cli import main

sys.exit(main())
