"""`python -m suite` is `hummuss-suite` (suite/entry.py: with glibc's malloc on huge pages)."""

import sys

from suite.entry import main

sys.exit(main())
