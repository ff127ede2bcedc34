# codeQ: `make run` serves, `make test` tests, `make bench` measures.
# Each installs what it needs first: Debian packages when missing (as root or
# through sudo), then the Python packages into .venv.

PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
SUDO   := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
ARGS   ?=

.PHONY: run test lint bench load deps system-deps clean

run: deps
	$(VENV)/bin/codeq serve $(ARGS)

test: deps lint
	$(PY) -m pytest tests -q $(ARGS)

lint: deps
	$(VENV)/bin/ruff check codeq tests bench
	$(VENV)/bin/mypy

bench: deps
	$(PY) -m pytest bench -q --benchmark-only --benchmark-columns=min,median,mean,ops,rounds $(ARGS)
	$(PY) bench/load.py

deps: system-deps $(VENV)/.installed

# Debian/Ubuntu packages: the store, what building the extension needs, and
# curl (the README's walk-through is run by a test).
system-deps:
	@missing=""; \
	command -v redis-server >/dev/null 2>&1 || missing="$$missing redis-server"; \
	command -v curl >/dev/null 2>&1 || missing="$$missing curl"; \
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
	$(PY) -m pip install -q -e '.[test]'
	$(PY) -c 'import codeq._core'
	touch $@

clean:
	rm -rf $(VENV) build *.egg-info codeq/_core.c codeq/_core*.so .benchmarks
