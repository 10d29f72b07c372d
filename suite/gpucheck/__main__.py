"""`python -m suite.gpucheck`: the GPU check where `hummuss-suite` cannot load (a GPU
machine's own image, with torch but without MLflow or Optuna); the same options as
`hummuss-suite gpu-check` (suite/cli/gpucheck.py)."""

import sys

from suite.cli.gpucheck import main

sys.exit(main())
