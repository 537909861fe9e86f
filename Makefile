# Single source for set-up, demo, tests, lint and benchmarks (CI calls `make test` and `make lint`).
SHELL := /bin/bash
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
PIP := $(BIN)/pip
QIPO := $(BIN)/qipo
STAMP := $(VENV)/.installed
HOST ?= 127.0.0.1
PORT ?= 8000
DEMO ?= build/demo

.PHONY: setup demo test test-all lint fmt clean

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(PIP) install -q --upgrade pip

# torch first, pinned to the CPU wheel: the `train` extra's range is satisfied by it, so pip never
# resolves a multi-GB CUDA build.
$(STAMP): pyproject.toml | $(BIN)/python
	$(PIP) install -q torch==2.13.0
	$(PIP) install -q -e '.[cpu,train,dev]'
	touch $(STAMP)

setup: $(STAMP)

demo: $(STAMP)
	bash scripts/demo.sh

test: $(STAMP)
	bash scripts/redis-up.sh
	$(BIN)/pytest -m "not slow" -q

test-all: $(STAMP)
	bash scripts/redis-up.sh
	$(BIN)/pytest -q

lint: $(STAMP)
	$(BIN)/ruff check service training tests
	$(BIN)/ruff format --check service training tests
	$(BIN)/mypy service training

fmt: $(STAMP)
	$(BIN)/ruff format service training tests
	$(BIN)/ruff check --fix service training tests

clean:
	rm -rf build .qipo-cache .pytest_cache .mypy_cache .ruff_cache

# --- issue 4: training benchmarks -------------------------------------------------------------------
# d3rlpy 2.8.1 pins gymnasium==1.0.0 (and imports the old `gym`): install it without its pins, plus the
# deps it actually imports, so our gymnasium and torch stay as they are.
D3RLPY_STAMP := $(VENV)/.d3rlpy
$(D3RLPY_STAMP): | $(STAMP)
	$(PIP) install -q --no-deps d3rlpy==2.8.1 gym==0.26.2
	$(PIP) install -q click colorama dataclasses-json structlog scikit-learn cloudpickle gym_notices
	touch $(D3RLPY_STAMP)

.PHONY: bench-train bench-rl
bench-train: $(STAMP) $(D3RLPY_STAMP)
	$(BIN)/python scripts/bench_train.py --out docs/bench

bench-rl: $(STAMP)
	$(BIN)/python scripts/bench_rl.py --out docs/bench
