"""`python -m suite.sweep STUDY --trials N ...` (as `hummuss-suite sweep`), and
`python -m suite.sweep --worker I ...`, how a sweep starts its worker processes; the
parsers live with the others in suite/cli/."""

import sys

from suite.cli.sweep import main

sys.exit(main())
