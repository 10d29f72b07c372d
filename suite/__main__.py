"""`python -m suite` is `hummuss-suite` (suite/entry.py: with glibc's malloc on huge pages and MKL's Intel code path)."""

import sys

from suite.entry import main

sys.exit(main())
