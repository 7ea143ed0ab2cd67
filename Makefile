# The two commands for a fresh machine: `make demo` and `make test`.
# Both set up what they need first (Debian packages, the virtualenv), idempotently.

VENV := .venv
PY := $(VENV)/bin/python

.PHONY: setup demo test lint bench faults clean

setup:
	@bash scripts/setup.sh

demo: setup
	$(PY) -m secir_bot sandbox

# The linters first, then the whole suite against real servers, with the package's coverage
# printed and held to a floor that only rises (fail_under in pyproject.toml).
test: setup lint
	$(PY) -m pytest --cov --cov-report=term:skip-covered

# ruff; mypy strict on the package, then with relaxed settings on the tests (pyproject.toml).
lint: setup
	$(VENV)/bin/ruff check secir_bot tests scripts
	$(VENV)/bin/ruff format --check secir_bot tests scripts
	$(VENV)/bin/mypy
	$(VENV)/bin/mypy tests


# Figures, not assertions: the end-to-end benchmark on the real stack (docs/performance.md).
# The full run (N = 10, 100, 1000, a burst of 500) takes about 10 minutes; for a quick look:
#   make bench BENCH_ARGS="--sizes 5,20 --posts 3 --burst 20 --burst-at 20 --mailboxes-at 20"
bench: setup
	$(PY) scripts/bench.py $(BENCH_ARGS)

# The long fault suite (docs/reliability.md): SECIR_FAULT_TRIALS kills during two-way traffic.
faults: setup
	$(PY) -m pytest -m slow -s tests/integration/test_faults.py tests/integration/test_fault_corpus.py \
		tests/integration/test_killburst.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache demo-state
