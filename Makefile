# The two commands a new user runs: `make run` and `make test` (see README.md).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# Tests run in a network namespace with only loopback when the kernel allows it: nothing
# leaves the machine, and it proves cadence works offline.
ISOLATE := $(shell unshare -rn true 2>/dev/null && command -v ip >/dev/null && echo yes)

.PHONY: run test lint types pytest system-deps clean

run: $(VENV)/.stamp-run
	$(BIN)/cadence serve $(SERVE_ARGS)

test: system-deps $(VENV)/.stamp-test lint types pytest

$(BIN)/python:
	@$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 11), "cadence needs Python 3.11 or newer"'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

# The embedded path only: no torch.
$(VENV)/.stamp-run: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e .
	@touch $@

# Everything, including the torch/transformers extra and the test tools.
$(VENV)/.stamp-test: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[gpu,dev]'
	@touch $@ $(VENV)/.stamp-run

system-deps:
	@bash scripts/system-deps.sh

lint: $(VENV)/.stamp-test
	$(BIN)/ruff check src tests demos

types: $(VENV)/.stamp-test
	$(BIN)/mypy

pytest: $(VENV)/.stamp-test
ifeq ($(ISOLATE),yes)
	unshare -rn sh -c 'ip link set lo up && exec $(BIN)/python -m pytest $(PYTEST_ARGS)'
else
	$(BIN)/python -m pytest $(PYTEST_ARGS)
endif

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache bench-results test-artifacts
