# lmbrain: the two entry points of the README.
#   make demo   install into .venv, then run the whole workflow on the embedded demo
#   make test   install into .venv, then run the test suite
PYTHON ?= python3
VENV   ?= .venv
CORES  ?= $(shell nproc 2>/dev/null || echo 2)
BIN     = $(VENV)/bin
# the tests run in one worker per CPU (at most 4; each test file stays in one worker, in its order);
# PYTEST_PARALLEL= runs them in one process
PYTEST_PARALLEL ?= -n auto --maxprocesses 4 --dist loadfile

.PHONY: demo test test-fast install lint clean

install: $(VENV)/.installed

# torch==2.13.0 first: a plain "torch" requirement would otherwise pull a multi-GB CUDA build.
# On a cluster, "pip install ." alone works and takes whatever torch suits the machine.
$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet torch==2.13.0
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $@

demo: install
	$(BIN)/snakemake --cores $(CORES) --keep-going

test: install
	$(BIN)/python -m pytest -q $(PYTEST_PARALLEL)

# the fast lane: unit tests without the end-to-end and training runs (marked slow)
test-fast: install
	$(BIN)/python -m pytest -q -m "not slow" $(PYTEST_PARALLEL)

lint: install
	$(BIN)/snakemake --lint

clean:
	rm -rf results logs .snakemake
