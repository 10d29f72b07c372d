"""`python -m suite` is `hummuss-suite`."""

import sys

from suite.cli import main

sys.exit(main())
