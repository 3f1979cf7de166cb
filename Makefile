# The two commands a new user runs: `make run` and `make test` (see README.md).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# Tests run in a network namespace with only loopback when the kernel allows it: nothing
# leaves the machine, and it proves cadence works offline.
ISOLATE := $(shell unshare -rn true 2>/dev/null && command -v ip >/dev/null && echo yes)

# llama-cpp-python is an sdist. Left alone, pip compiles llama.cpp for the build machine
# (-march=native), and on one such machine (AVX-512 and AMX, a Firecracker guest) that build
# segfaulted in its first decode; which instruction set is to blame was not isolated. So it is built once for x86-64-v3 (AVX2, FMA, F16C), a build
# any x86 CPU of the last decade runs, and kept in ~/.cache across clones: pip's own wheel
# cache would hand back a native build, whatever CMAKE_ARGS say.
LLAMA_CPP_VERSION := $(shell sed -n 's/^ *"llama-cpp-python==\([^"]*\)",/\1/p' pyproject.toml)
ARCH := $(shell uname -m)
ifeq ($(ARCH),x86_64)
LLAMA_CMAKE_ARGS ?= -DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_BMI2=ON
endif
WHEELHOUSE ?= $(HOME)/.cache/cadence/wheels/$(ARCH)-portable
LLAMA_WHEEL := $(WHEELHOUSE)/llama_cpp_python-$(LLAMA_CPP_VERSION)-py3-none-linux_$(ARCH).whl

.PHONY: run test lint types pytest system-deps clean

run: $(VENV)/.stamp-run
	$(BIN)/cadence serve $(SERVE_ARGS)

test: system-deps $(VENV)/.stamp-test lint types pytest

$(BIN)/python:
	@$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 11), "cadence needs Python 3.11 or newer"'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(LLAMA_WHEEL): | $(BIN)/python
	@test -n "$(LLAMA_CPP_VERSION)" || (echo "no llama-cpp-python pin in pyproject.toml" >&2; exit 1)
	@echo "building llama-cpp-python $(LLAMA_CPP_VERSION) once (a few minutes)"
	CMAKE_ARGS="$(LLAMA_CMAKE_ARGS)" $(BIN)/python -m pip wheel --quiet --no-cache-dir \
		--no-deps --wheel-dir $(WHEELHOUSE) llama-cpp-python==$(LLAMA_CPP_VERSION)

# The portable build, also over a native one an older .venv holds.
$(VENV)/.stamp-llama: $(LLAMA_WHEEL) | $(BIN)/python
	$(BIN)/python -m pip install --quiet --no-deps --force-reinstall $(LLAMA_WHEEL)
	@touch $@

# The embedded path only: no torch.
$(VENV)/.stamp-run: pyproject.toml $(VENV)/.stamp-llama | $(BIN)/python
	$(BIN)/python -m pip install --quiet --find-links $(WHEELHOUSE) -e .
	@touch $@

# Everything, including the torch/transformers extra and the test tools.
$(VENV)/.stamp-test: pyproject.toml $(VENV)/.stamp-llama | $(BIN)/python
	$(BIN)/python -m pip install --quiet --find-links $(WHEELHOUSE) -e '.[gpu,dev]'
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
