# The two commands for a fresh machine: `make demo` and `make test`.
# Both set up what they need first (Debian packages, the virtualenv), idempotently.

VENV := .venv
PY := $(VENV)/bin/python

.PHONY: setup demo test lint check bench clean

setup:
	@bash scripts/setup.sh

demo: setup
	$(PY) -m secir_bot sandbox

test: setup
	$(PY) -m pytest

lint: setup
	$(VENV)/bin/ruff check secir_bot tests scripts
	$(VENV)/bin/ruff format --check secir_bot tests scripts
	$(VENV)/bin/mypy

# Everything CI runs: the linters, then the whole suite.
check: lint test

# Figures, not assertions: gpg calls and time per post as the list grows.
bench: setup
	$(PY) scripts/bench_fanout.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache demo-state
