# The two commands of the README, and the checks CI runs.
#   make run    set up act in .venv and run the demo on the embedded default: the PanDA test
#               server with 100 jobs, SQLite, actd and its daemons, a local CE, file:// storage
#               and a web area, all under ~/.local/state/act/demo (etc/act-demo.yaml;
#               DEMO_ARGS="--jobs 20 --failures 0.1" passes options to `actctl demo`)
#   make test   set up the test environment, make sure the databases and the PanDA test server
#               are up, run the tests
#   make check  ruff (lint and format), mypy, and the layer contract (lint-imports: each package
#               imports only the ones below it, no import cycles; pyproject.toml)
#   make bench  set up what the benchmarks need (test environment, databases, the real PanDA
#               server) and run them all: one report (benchmarks/README.md; about 15 minutes on
#               2 cores). BENCH_ARGS="--quick --only db,queries --markdown out.md" passes options.

VENV ?= .venv
PYTHON ?= python3
BIN := $(VENV)/bin

.PHONY: run test test-long check docs venv venv-test bench

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

$(VENV)/.act-run: $(BIN)/python setup.cfg pyproject.toml
	$(BIN)/python -m pip install -q -e .
	touch $@

$(VENV)/.act-test: $(BIN)/python setup.cfg pyproject.toml
	tests/harness/ensure-build-deps
	$(BIN)/python -m pip install -q -e '.[test]'
	touch $@ $(VENV)/.act-run

venv: $(VENV)/.act-run
venv-test: $(VENV)/.act-test

run: venv
	exec $(BIN)/actctl demo $(DEMO_ARGS)

test: venv-test
	tests/harness/ensure-databases
	tests/harness/ensure-arc-python
	tests/harness/ensure-promtool
	PYTHON=$(BIN)/python tests/harness/ensure-htcondor24 >/dev/null
	PYTHON=$(PYTHON) tests/harness/ensure-pilot3 >/dev/null
	tests/harness/ensure-panda
	tests/harness/arc-ce status >/dev/null || tests/harness/arc-ce start >/dev/null
	tests/harness/xrootd-server status >/dev/null || tests/harness/xrootd-server start >/dev/null
	$(BIN)/python -m pytest $(PYTEST_ARGS)

# the fault and capacity runs of several minutes each (marker long), alone; .ci/run leaves them out
test-long:
	$(MAKE) test PYTEST_ARGS="-m long $(PYTEST_ARGS)"

bench: venv-test
	tests/harness/ensure-databases
	ACT_PANDA_SCHEMA=$${ACT_PANDA_SCHEMA:-$$( [ -d /work/shared/panda-database ] && echo /work/shared/panda-database)} \
		tests/harness/ensure-panda
	PYTHONPATH=$(CURDIR) $(BIN)/python -m benchmarks $(BENCH_ARGS)

check: venv-test
	$(BIN)/ruff check act tests benchmarks
	$(BIN)/ruff format --check act tests benchmarks
	$(BIN)/mypy
	$(BIN)/lint-imports --no-cache --no-logo

docs: venv-test
	$(BIN)/python -m tests.support.readme
