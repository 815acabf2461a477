# Two entry points that work on a fresh machine: `make demo` and `make test`.
# OMP_NUM_THREADS=1: tiny models on 2 shared cores run ~10x faster single-threaded
# (OpenMP threads of parallel test workers otherwise contend for the same cores).
# Both build .venv on first use: the CPU torch wheel first (pinned, so pip does not
# pull the CUDA build), then radlens with its test extras.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.radlens-installed

.PHONY: demo test venv clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install torch==2.13.0
	$(BIN)/pip install -e ".[test]"
	touch $(STAMP)

venv: $(STAMP)

demo: $(STAMP)
	$(BIN)/radlens demo

# Lint (ruff) and the layering contract (import-linter, pyproject.toml) first: both take seconds.
test: $(STAMP)
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/lint-imports
	OMP_NUM_THREADS=1 $(BIN)/python -m pytest -n 2 -q

clean:
	rm -rf $(VENV) demo-out
