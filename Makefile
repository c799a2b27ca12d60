# Confide: every target sets up what it needs on first run.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# Cosmian Enclave's clients, for interoperability tests only (their pins conflict with ours).
INTEROP := .venv-interop
INTEROP_STAMP := $(INTEROP)/.installed

.PHONY: all demo test lint typecheck unit bench clean

all: test

# setup.py and the C source: `pip install -e .` compiles the relay's loop (ADR 0028).
$(STAMP): requirements/dev.txt pyproject.toml setup.py src/confide/operator/_relaycore.c
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -r requirements/dev.txt
	$(BIN)/python -m pip install --quiet --no-deps -e .
	# The wheels of the committed example locks, in pip's cache (the e2e test of
	# Cosmian's data-science image fetches them again from there).
	$(BIN)/python scripts/prefetch_wheels.py $(VENV)/wheel-cache examples/*/requirements.lock
	touch $(STAMP)

$(INTEROP_STAMP): requirements/interop.txt
	test -x $(INTEROP)/bin/python || $(PYTHON) -m venv $(INTEROP)
	$(INTEROP)/bin/python -m pip install --quiet --upgrade pip
	$(INTEROP)/bin/python -m pip install --quiet -r requirements/interop.txt
	touch $(INTEROP_STAMP)

demo: $(STAMP)
	$(BIN)/python scripts/demo.py $(if $(TEE),--tee $(TEE))

lint: $(STAMP)
	$(BIN)/ruff format --check src tests bench scripts
	$(BIN)/ruff check src tests bench scripts

typecheck: $(STAMP)
	$(BIN)/mypy

# The operator's storage and API tests also run on PostgreSQL: scripts/postgres.sh starts a
# throwaway server (installing Debian's postgresql if needed), exports CONFIDE_TEST_POSTGRES_URL
# to pytest, and stops it afterwards.
unit: $(STAMP) $(INTEROP_STAMP)
	scripts/chromium.sh
	scripts/postgres.sh run -- $(BIN)/pytest -q

test: lint typecheck unit

# The router benchmark compares with HAProxy: scripts/haproxy.sh installs Debian's haproxy if
# it is missing (as root; else it says what to install and make stops).
bench: $(STAMP)
	scripts/haproxy.sh
	$(BIN)/python bench/bench_verify.py
	$(BIN)/python bench/bench_package.py
	$(BIN)/python bench/bench_runtime.py
	$(BIN)/python bench/bench_router.py
	$(BIN)/python bench/bench_operator_deploy.py
	$(BIN)/python bench/bench_requirements.py

clean:
	rm -rf $(VENV) $(INTEROP) .mypy_cache .pytest_cache .ruff_cache
