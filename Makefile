# outspool: the two commands a newcomer needs are `make demo` and `make test`.
PY      ?= python3
VENV    := .venv
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.installed
DEMO_STAMP := $(VENV)/.demo-installed
BENCH_STAMP := $(VENV)/.bench-installed

.PHONY: demo test lint typecheck bench bench-quick clean

$(STAMP): pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[postgres,web]' --group test
	touch $(STAMP)

# The demo needs only the package and its web extra, not the test tools.
$(DEMO_STAMP): pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[web]'
	touch $(DEMO_STAMP)

## demo: install, run a sample program that prints to both streams with a progress bar, show what was stored
demo: $(DEMO_STAMP)
	$(BIN)/python examples/demo.py

## test: the whole suite (lint, types, then pytest on real SQLite files, real PostgreSQL and real subprocesses)
test: $(STAMP)
	$(BIN)/ruff check src tests bench examples
	$(BIN)/ruff format --check src tests bench examples
	$(BIN)/mypy src tests
	$(BIN)/pytest

lint: $(STAMP)
	$(BIN)/ruff check src tests bench examples
	$(BIN)/ruff format --check src tests bench examples

typecheck: $(STAMP)
	$(BIN)/mypy src tests

$(BENCH_STAMP): $(STAMP) pyproject.toml
	$(BIN)/pip install -q --group bench
	touch $(BENCH_STAMP)

## bench: the full benchmark suite (under 30 minutes on 2 idle cores); writes bench/results/
bench: $(BENCH_STAMP)
	$(BIN)/python -m bench --full

## bench-quick: the same scenarios at small sizes (a few minutes)
bench-quick: $(BENCH_STAMP)
	$(BIN)/python -m bench --quick

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache build src/*.egg-info
