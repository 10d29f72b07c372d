# Every target creates .venv on first use: torch first, pinned (on a machine with
# nothing installed a bare `torch` requirement pulls a multi-GB CUDA build), then
# this package with its dev and cluster extras.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
TORCH  ?= torch==2.13.0
STAMP  := $(VENV)/.installed

.PHONY: install reproduce test bench gpu-check lint clean

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet "$(TORCH)"
	$(BIN)/python -m pip install --quiet -e ".[dev,cluster]"
	touch $(STAMP)

reproduce: $(STAMP)
	$(BIN)/hummuss-suite reproduce

# two workers, each test file whole on one of them (pytest-xdist) and on its share of the cores
# (tests/conftest.py): 555 s on 2 cores at 108388d, 725 s before with both workers on both cores;
# one worker alone took 19 to 24 minutes. On a CPU that is not an Intel one the tests run with
# MKL's Intel code path, as `hummuss-suite` does (hummuss/mkl_vendor.py)
test: $(STAMP)
	$(BIN)/python -m hummuss.mkl_vendor -- $(BIN)/python -m pytest -q -n 2 --dist loadfile

bench: $(STAMP)
	$(BIN)/hummuss-suite bench

# the tests marked gpu, a bf16 paper-scale epoch per model family, training-step and
# streaming benchmarks on the GPU (under 8 minutes); without CUDA it says so and exits 0
gpu-check: $(STAMP)
	$(BIN)/hummuss-suite gpu-check --out results/gpu-check

lint: $(STAMP)
	$(BIN)/ruff check hummuss suite studies tests

clean:
	rm -rf $(VENV) .pytest_cache .benchmarks
