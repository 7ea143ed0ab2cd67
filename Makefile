# The two commands for a fresh machine: `make demo` and `make test`.
# Both set up what they need first (Debian packages, the virtualenv), idempotently.

VENV := .venv
PY := $(VENV)/bin/python

.PHONY: setup demo test lint bench faults clean

setup:
	@bash scripts/setup.sh

demo: setup
	$(PY) -m secir_bot sandbox

# The linters first (ruff, mypy strict), then the whole suite against real servers.
test: setup lint
	$(PY) -m pytest

lint: setup
	$(VENV)/bin/ruff check secir_bot tests scripts
	$(VENV)/bin/ruff format --check secir_bot tests scripts
	$(VENV)/bin/mypy


# Figures, not assertions: gpg calls and time per post as the list grows.
bench: setup
	$(PY) scripts/bench_fanout.py

# The long fault suite (docs/reliability.md): SECIR_FAULT_TRIALS kills during two-way traffic.
faults: setup
	$(PY) -m pytest -m slow -s tests/integration/test_faults.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache demo-state
