# Every target bootstraps .venv itself, so a fresh clone needs nothing but python3.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
LINTED := src tests examples benchmarks docs/conf.py docs/_ext

.PHONY: test lint types unit demo serve docs bench wrk test-deep test-all clean postgresql

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

# One stamp per extra (.venv/.dev, .venv/.demo, .venv/.docs, .venv/.bench):
# reinstalled when pyproject.toml changes. Process and Dask pools, metrics,
# tracing and the service are in every set.
$(VENV)/.%: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install -q -e '.[$*,process,dask,metrics,tracing,service,postgres]'
	touch $@

test: lint types unit

lint: $(VENV)/.dev
	$(BIN)/ruff check $(wildcard $(LINTED))
	$(BIN)/ruff format --check $(wildcard $(LINTED))

types: $(VENV)/.dev
	$(BIN)/mypy --strict src tests

# The PostgreSQL journal's tests start their own server from Debian's
# postgresql package (tests/_postgres_server.py): install it when no initdb
# is found. Quick and idempotent once installed.
postgresql:
	@ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || command -v initdb >/dev/null || \
	  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null; }


# The dashboard's browser tests (tests/test_ui.py) drive Debian's chromium
# through chromedriver: installed when missing (as root, or with sudo).
CHROMEDRIVER := /usr/bin/chromedriver
SUDO := $(if $(filter 0,$(shell id -u)),,sudo)

$(CHROMEDRIVER):
	$(SUDO) apt-get update
	$(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y chromium chromium-driver

unit: $(VENV)/.dev postgresql wrk | $(CHROMEDRIVER)
	$(BIN)/coverage erase
	$(BIN)/coverage run -m pytest
	$(BIN)/coverage combine -q
	$(BIN)/coverage report --fail-under=95

# The suite on every supported Python, one venv each; interpreters come from
# pyenv where installed, else from PATH.
PYTHONS ?= 3.10 3.11 3.12 3.13

test-all: postgresql
	@set -e; for v in $(PYTHONS); do \
	  py=$$(ls -d $$HOME/.pyenv/versions/$$v.*/bin/python$$v 2>/dev/null | tail -n 1); \
	  [ -n "$$py" ] || py=$$(command -v python$$v); \
	  echo "== Python $$v: $$py"; \
	  [ -x .venv-$$v/bin/python ] || $$py -m venv .venv-$$v; \
	  .venv-$$v/bin/python -m pip install -q --upgrade pip; \
	  .venv-$$v/bin/python -m pip install -q -e '.[dev,process,dask,metrics,tracing,service,postgres]'; \
	  .venv-$$v/bin/python -m pytest -q -p no:cacheprovider; \
	done

# Long runs: pytest's faulthandler dump after 120 s can crash pytest itself.
test-deep: $(VENV)/.dev postgresql
	HYPOTHESIS_PROFILE=deep $(BIN)/python -m pytest -o faulthandler_timeout=0 tests

demo: $(VENV)/.demo
	$(BIN)/python examples/rounds.py

# The example service on 127.0.0.1:8080 (examples/service_jobs.py), its
# journal in .serve-journal.sqlite3; only the service extra is installed.
$(VENV)/.serve: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install -q -e '.[service]'
	touch $@

serve: $(VENV)/.serve
	$(BIN)/python -m bulkhead serve examples.service_jobs:registry --journal .serve-journal.sqlite3

docs: $(VENV)/.docs
	$(BIN)/sphinx-build -W --keep-going -n -b html docs docs/_build/html

# service.py's instances part starts a durable PostgreSQL of its own.
bench: $(VENV)/.bench wrk postgresql
	$(BIN)/python benchmarks/run.py
	$(BIN)/python benchmarks/service.py

# The service benchmark's load generator, a C program from Debian's packages
# (as root, else through sudo); elsewhere install wrk by hand (brew install wrk).
# The unit suite runs the benchmark's instances part in its quick form.
SUDO := $(if $(filter 0,$(shell id -u)),,sudo)
wrk:
	@command -v wrk >/dev/null || { $(SUDO) apt-get update -qq && \
	  $(SUDO) apt-get install -y -qq wrk; } || \
	  { echo "make bench needs wrk: apt-get install wrk (or brew install wrk)"; exit 1; }

clean:
	rm -rf $(VENV) .venv-3.* .coverage .pytest_cache .mypy_cache .ruff_cache docs/_build
