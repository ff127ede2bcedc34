# codeQ: `make run` serves, `make test` tests, `make bench` measures.
# Each installs what it needs first: Debian packages when missing (as root or
# through sudo), then the Python packages into .venv (an editable install, for
# development). `make test` also builds the sdist and, from it, the wheel,
# installs that wheel into a fresh .venv-test and tests the installed package
# on each store of STORES: every suite on redis-server, the store-facing ones
# on KVRocks (KVROCKS_TESTS; skipped, with the reason printed, when no kvrocks
# binary is found) and on Redis Clusters the tests start (CLUSTER_TESTS). `make test-cluster`
# runs the cluster leg alone.

PYTHON    ?= python3
VENV      ?= .venv
TEST_VENV ?= .venv-test
DIST      ?= dist
STORES    ?= redis kvrocks cluster
# The cluster leg: tests/cluster, then the store-facing suites that fit in
# CI's 15 minutes, tests/engine and tests/api (with tests/cluster about 100 s).
# Left to the single-store legs: the 2,000-task concurrency test (one queue,
# so one master; 75 s on a cluster), tests/push (65 s) and tests/auth (40 s),
# which pass on a cluster too: make test-cluster CLUSTER_TESTS="tests/cluster
# tests/engine tests/api tests/push tests/auth"
CLUSTER_TESTS ?= tests/cluster tests/engine tests/api \
	--deselect tests/api/test_concurrency.py::test_20_workers_claim_2000_tasks_exactly_once
# The KVRocks leg: every suite that reaches the store (the HTTP server's own,
# the SDK's, the packaging and README checks and the browser run on the redis
# leg only; about 60 s).
KVROCKS_TESTS ?= tests/core tests/engine tests/api tests/push tests/auth tests/ui/test_reads.py
PY        := $(VENV)/bin/python
SUDO      := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
ARGS      ?=

.PHONY: run test test-cluster lint wheel bench bench-ci screenshots deps system-deps clean

run: deps
	$(VENV)/bin/codeq serve $(ARGS)

test: lint wheel
	rm -rf $(TEST_VENV)
	$(PYTHON) -m venv $(TEST_VENV)
	$(TEST_VENV)/bin/python -m pip install -q --upgrade pip
	$(TEST_VENV)/bin/python -m pip install -q "$$(ls $(DIST)/codeq-*manylinux*.whl)[test]"
	@for store in $(STORES); do \
		case $$store in cluster) selection="$(CLUSTER_TESTS)";; \
			kvrocks) selection="$(KVROCKS_TESTS)";; *) selection=tests;; esac; \
		echo "== tests of the installed wheel on $$store: $$selection"; \
		started=$$(date +%s); \
		CODEQ_TEST_STORE=$$store CODEQ_TEST_INSTALLED=1 \
			$(TEST_VENV)/bin/pytest $$selection -q -rs $(ARGS) || exit 1; \
		echo "== the $$store leg took $$(( $$(date +%s) - started )) s"; \
	done

# The cluster leg alone, on the installed wheel like `make test`.
test-cluster:
	$(MAKE) test STORES=cluster

lint: deps
	$(VENV)/bin/ruff check codeq tests bench
	$(VENV)/bin/mypy

# The sdist, then the wheel built from it (what `python -m build` does),
# repaired by auditwheel to a manylinux tag.
wheel: deps
	rm -rf $(DIST)
	$(PY) -m build --outdir $(DIST) .
	PATH="$(CURDIR)/$(VENV)/bin:$$PATH" $(VENV)/bin/auditwheel repair --wheel-dir $(DIST) $(DIST)/codeq-*-linux_*.whl
	rm $(DIST)/codeq-*-linux_*.whl
	@ls -l $(DIST)

bench: deps
	$(PY) -m pytest bench -q --benchmark-only --benchmark-columns=min,median,mean,ops,rounds $(ARGS)
	$(PY) bench/load.py

# Faults while tasks flow (bench/chaos.py): codeq servers and the store
# SIGKILLed, workers SIGSTOPped past their lease; fails on a lost task, an
# execution under a lease granted while another was valid, or a 5xx but 503.
.PHONY: chaos
chaos: deps
	$(PY) bench/chaos.py --store single --seconds 60
	$(PY) bench/chaos.py --store cluster --seconds 60 --queue-shards 3

# The reduced run CI makes: the O(1) guard at depths 1,000 and 100,000, and a
# short HTTP full cycle; the pytest-benchmark JSON is printed into the log.
bench-ci: deps
	@mkdir -p .benchmarks
	$(PY) -m pytest bench -q --benchmark-only --benchmark-columns=min,median,ops,rounds \
		-k "o1_guard or http" --depths 1000,100000 --rounds 2000 --http-seconds 5 \
		--http-clients 32 --benchmark-json=.benchmarks/ci.json $(ARGS)
	@echo "== pytest-benchmark JSON (.benchmarks/ci.json)"
	@cat .benchmarks/ci.json

# The dashboard's screenshots in the README (docs/*.png): scripted tasks on a
# codeq serve of its own, in the headless Chromium the tests drive.
screenshots: deps
	$(PY) -m tests.ui.screenshots docs

deps: system-deps $(VENV)/.installed

# Debian/Ubuntu packages: the store, what building the extension needs,
# curl (the README's walk-through is run by a test), and Chromium with its
# driver (the dashboard's tests run in it).
system-deps:
	@missing=""; \
	command -v redis-server >/dev/null 2>&1 || missing="$$missing redis-server"; \
	command -v redis-cli >/dev/null 2>&1 || missing="$$missing redis-tools"; \
	command -v curl >/dev/null 2>&1 || missing="$$missing curl"; \
	command -v chromium >/dev/null 2>&1 || missing="$$missing chromium"; \
	command -v chromedriver >/dev/null 2>&1 || missing="$$missing chromium-driver"; \
	command -v cc >/dev/null 2>&1 || missing="$$missing build-essential"; \
	$(PYTHON) -c 'import ensurepip, venv' >/dev/null 2>&1 || missing="$$missing python3-venv"; \
	$(PYTHON) -c 'import os, sysconfig; assert os.path.exists(os.path.join(sysconfig.get_paths()["include"], "Python.h"))' >/dev/null 2>&1 || missing="$$missing python3-dev"; \
	if [ -n "$$missing" ]; then \
		echo "installing:$$missing"; \
		$(SUDO) apt-get update -q && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -q $$missing; \
	fi
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "codeQ needs Python 3.11 or newer")'

$(VENV)/.installed: pyproject.toml setup.py codeq/_core.pyx
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	$(PY) -c 'import codeq._core'
	touch $@

clean:
	rm -rf $(VENV) $(TEST_VENV) $(DIST) build *.egg-info codeq/_core.c codeq/_core*.so .benchmarks
