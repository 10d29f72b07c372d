"""`python -m suite.worker --spec FILE --run-id ID`: execute one claimed run in this process
(every rank under torchrun); its parser lives with the others in suite/cli/."""

import sys

from suite.cli.children import worker_main

sys.exit(worker_main())
