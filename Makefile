# Two commands do all the set-up: `make run` and `make test`. Each creates .venv on
# demand, installs the project (pinned in pyproject.toml) and the Debian packages the
# tests and benchmarks need, then runs.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: run test test-slow lint bench bench-quick deps clean

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@$(PY) -m pip install -q --upgrade pip >/dev/null
	@$(PY) -m pip install -q -e '.[dev]'
	@touch $(STAMP)

deps:
	@bash scripts/install-system-deps.sh

## make run: six echo backends behind the proxy on http://127.0.0.1:8080 (Ctrl-C stops all)
run: $(STAMP)
	$(VENV)/bin/ferryman demo

## make test: lint, type-check, then every test (slow load tests run in a bounded form)
test: $(STAMP) deps lint
	$(PY) -m pytest -q
	$(MAKE) --no-print-directory test-slow

## the slow, marked load tests, bounded by FERRYMAN_SLOW_SCALE (CI: small)
test-slow: $(STAMP)
	FERRYMAN_SLOW_SCALE=$${FERRYMAN_SLOW_SCALE:-0.25} $(PY) -m pytest -q -m slow

lint: $(STAMP)
	$(VENV)/bin/ruff check src tests
	$(VENV)/bin/ruff format --check src tests
	$(VENV)/bin/mypy

## make bench: Ferryman beside nginx (and the relay baseline) in one interleaved run
bench: $(STAMP) deps
	bash bench/run.sh

bench-quick: $(STAMP) deps
	QUICK=1 bash bench/run.sh

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
