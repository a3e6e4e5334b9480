# Two commands do all set-up: `make study` and `make test` create .venv, install, and run.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.install-stamp
# DVC stage commands say `python`: the venv's, as if activated.
export PATH := $(CURDIR)/$(BIN):$(PATH)
export DVC_NO_ANALYTICS := 1
export MLFLOW_DISABLE_TELEMETRY := true
export DO_NOT_TRACK := 1

.DEFAULT_GOAL := help
.PHONY: help install lock study test test-fast lint format bench numerics ui server server-stop slurm slurm-stop clean

help:  ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

# The locked pip first (the installer is part of the environment), then exactly the locked files, then the
# project itself without re-resolving, built by the locked setuptools; `pip check` fails if the lock no
# longer covers pyproject.toml. Re-install only when the lock or the project's metadata changes.
$(STAMP): requirements.lock pyproject.toml | $(BIN)/python
	sed -n '/^pip==/,/# via/p' requirements.lock | $(BIN)/python -m pip install --quiet --require-hashes --no-deps -r /dev/stdin
	$(BIN)/python -m pip install --quiet --require-hashes --no-deps -r requirements.lock
	$(BIN)/python -m pip install --quiet --no-deps --no-build-isolation -e .
	$(BIN)/python -m pip check
	touch $(STAMP)

install: $(STAMP)  ## create .venv and install the locked environment (idempotent)

# pip-tools comes from the lock (dev extra); before the first install, any recent release does.
$(BIN)/pip-compile: | $(BIN)/python
	$(BIN)/python -m pip install --quiet --upgrade pip 'pip-tools>=7.6'

# Keeps every pin that still satisfies pyproject.toml; LOCK_ARGS=--upgrade moves all to the newest releases,
# LOCK_ARGS='-P mlflow' one package. pip-compile resolves for the platform it runs on, hence the check.
lock: | $(BIN)/pip-compile  ## re-pin requirements.lock (versions + sha256) from pyproject.toml
	@$(BIN)/python -c 'import platform as p, sys; sys.exit(None if (sys.platform, p.machine(), sys.version_info[:2]) \
		== ("linux", "x86_64", (3, 11)) else f"make lock: the lock is for CPython 3.11 on Linux x86_64, not {p.platform()}")'
	CUSTOM_COMPILE_COMMAND='make lock' $(BIN)/pip-compile --quiet --generate-hashes --allow-unsafe \
		--strip-extras --extra dev --build-deps-for editable --no-emit-index-url --no-emit-find-links \
		$(LOCK_ARGS) --output-file requirements.lock pyproject.toml
	sed -i -e '1i # The locked environment: every package `make install` puts in .venv, exact version and the sha256' \
		-e '1i # of every file pip may take for it. Resolved for CPython 3.11 on Linux x86_64 (torch with its CUDA' \
		-e '1i # build and nvidia-* libraries); another platform needs a lock of its own. Input: pyproject.toml' \
		-e '1i # (dependencies, the dev extra, the build backend). Do not edit by hand: run `make lock`.' requirements.lock

# params.yaml and dvc.yaml are checked first: DVC's own error for a YAML slip in either is 8 lines long.
study: install  ## download MNIST, train the default sweep, write reports/ (dvc repro)
	@$(BIN)/python -m initstudy.check
	$(BIN)/dvc repro

# One worker more than cores: the end-to-end tests wait part of the time (SLURM, signals, servers). The tests of
# one xdist_group share a worker: those that start SLURM and PostgreSQL, each module's shared study (docs/testing.md).
TEST_WORKERS ?= $(shell echo $$(( $$(nproc) + 1 )))
test: install  ## the whole test suite, end-to-end pipeline included (what CI runs), on every core
	$(BIN)/python -m pytest -n $(TEST_WORKERS) --dist loadgroup

test-fast: install  ## every module's unit tests, without the end-to-end tests marked slow, on every core
	$(BIN)/python -m pytest -m "not slow" -n auto

lint: install  ## ruff lint and format check, and the package's layers (import-linter, pyproject.toml)
	$(BIN)/ruff check src tests benchmarks scripts
	$(BIN)/ruff format --check src tests benchmarks scripts
	$(BIN)/lint-imports

format: install  ## apply ruff's fixes and formatting
	$(BIN)/ruff check --fix src tests benchmarks scripts
	$(BIN)/ruff format src tests benchmarks scripts

bench: install  ## training-speed benchmark, stacked sweep vs basic, start-up -> reports/benchmarks.json
	$(BIN)/python benchmarks/bench_train.py
	$(BIN)/python benchmarks/bench_stacked.py

numerics: install  ## which machine-dependent settings change the numbers -> reports/numerics_matrix.json
	$(BIN)/python benchmarks/numerics_matrix.py

# Two servers, two ports (override: make ui UI_PORT=5002); a taken port stops either with one line, exit 1.
UI_PORT ?= 5000
SERVER_PORT ?= 5001

ui: install  ## MLflow UI on http://127.0.0.1:$(UI_PORT) over the project's store
	@scripts/port-free.sh $(UI_PORT) "make ui" "choose another with make ui UI_PORT=<port>"
	$(BIN)/mlflow ui --backend-store-uri sqlite:///$(CURDIR)/mlflow.db --host 127.0.0.1 --port $(UI_PORT)

server: install  ## MLflow server on PostgreSQL, http://127.0.0.1:$(SERVER_PORT); data in .mlflow-server/ (kept)
	MLFLOW=$(CURDIR)/$(BIN)/mlflow MLFLOW_PORT=$(SERVER_PORT) scripts/mlflow-server.sh start

server-stop:  ## stop `make server` (the database and artifacts stay in .mlflow-server/)
	scripts/mlflow-server.sh stop

slurm: install  ## a one-node SLURM cluster on this machine (root; state in .local-slurm/)
	scripts/local-slurm.sh start

slurm-stop:  ## stop `make slurm`
	scripts/local-slurm.sh stop

clean: install  ## delete the project's run folders (files it wrote only; not reports/, data/, .venv or the MLflow store)
	$(BIN)/python -m initstudy.runs.clean
