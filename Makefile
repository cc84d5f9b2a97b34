# Two commands do all the set-up: `make run` and `make test`. Each creates .venv on
# demand, installs the project (pinned in pyproject.toml) and the Debian packages the
# tests and benchmarks need, then runs.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: run test test-pure test-slow lint accel bench bench-quick bench-syscalls bench-instructions profile bench-cache bench-static bench-tls bench-h2 bench-cluster bench-forward deps clean

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@$(PY) -m pip install -q --upgrade pip >/dev/null
	@$(PY) -m pip install -q -e '.[dev]'
	@touch $(STAMP)

deps:
	@bash scripts/install-system-deps.sh

## the mypyc build of the hot path and the Cython build of the HTTP/2 libraries
## (skipped when up to date; FERRYMAN_NO_ACCEL=1 skips it)
accel: $(STAMP)
	@bash scripts/build-accel.sh

## make run: six echo backends behind the proxy on http://127.0.0.1:8080 (Ctrl-C stops all)
run: $(STAMP) accel
	$(VENV)/bin/ferryman demo

## make test: lint, type-check, then every test (slow load tests run in a bounded form)
test: $(STAMP) deps accel lint
	$(PY) -m pytest -q
	$(MAKE) --no-print-directory test-pure
	$(MAKE) --no-print-directory test-slow

## the same tests against the pure-Python sources (the fallback must behave identically)
test-pure: $(STAMP)
	FERRYMAN_PURE=1 $(PY) -m pytest -q -m "not slow and not once"

## the slow, marked load tests, bounded by FERRYMAN_SLOW_SCALE (CI: small)
test-slow: $(STAMP)
	FERRYMAN_SLOW_SCALE=$${FERRYMAN_SLOW_SCALE:-0.25} $(PY) -m pytest -q -m slow

lint: $(STAMP)
	$(VENV)/bin/ruff check src tests
	$(VENV)/bin/ruff format --check src tests
	$(VENV)/bin/mypy

## make bench: the whole suite (bench/all.sh) beside nginx, HAProxy, the bare relay and
## proxy.py, interleaved; one table of ratios in OUT/table.md (ROUNDS=3 DURATION=10: ~27 min)
bench: $(STAMP) deps accel
	bash bench/all.sh

## make bench-quick: the same in 1 round x 3 s (~4 min): a smoke run, not a measurement
bench-quick: $(STAMP) deps accel
	QUICK=1 bash bench/all.sh

## make bench-syscalls: syscalls, TCP segments and CPU per request: Ferryman, nginx, HAProxy, the relay
bench-syscalls: $(STAMP) deps accel
	bash bench/syscalls.sh

## make bench-instructions: instructions per request (valgrind callgrind), by function: a
## deterministic A/B of the hot path (SRC=other-checkout for the other side)
bench-instructions: $(STAMP) deps accel
	bash bench/instructions.sh

## make profile: cProfile (and py-spy if installed) of one worker on the small-response path
profile: $(STAMP) accel
	bash bench/profile.sh

## make bench-tls: TLS handshakes/s and HTTPS keep-alive req/s, Ferryman beside nginx
bench-tls: $(STAMP) deps accel
	bash bench/tls.sh

## make bench-h2: HTTP/2 req/s (h2load, 4 connections x 100 streams), Ferryman beside nginx
bench-h2: $(STAMP) deps accel
	bash bench/h2.sh

## make bench-cache: cache hits, Ferryman's proxy cache beside nginx's proxy_cache
bench-cache: $(STAMP) deps accel
	bash bench/cache.sh

## make bench-static: a 4 MiB static file, Ferryman beside nginx (sendfile off and on)
bench-static: $(STAMP) deps accel
	bash bench/static.sh

## make bench-cluster: latency added per request by a shared limit zone and a shared cache
bench-cluster: $(STAMP) deps accel
	bash bench/cluster.sh

## make bench-forward: forward proxy beside tinyproxy and Squid: plain-HTTP req/s, CONNECT MB/s
bench-forward: $(STAMP) deps accel
	bash bench/forward.sh

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache src/build build/libs
	find src -name '*.so' -delete
