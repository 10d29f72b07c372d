"""`python -m suite.launch --spec FILE --run-id ID`: how the runner starts a run in a child
process (also under torchrun); its parser lives with the others in suite/cli/."""

import sys

from suite.cli.children import launch_main

sys.exit(launch_main())
