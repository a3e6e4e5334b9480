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
.PHONY: help install study test test-fast lint format bench numerics ui clean

help:  ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

# Re-install only when the project's metadata changes: a second `make` is quick.
$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)  ## create .venv and install the project (idempotent)

study: install  ## download MNIST, train the default sweep, write reports/ (dvc repro)
	$(BIN)/dvc repro

test: install  ## the whole test suite, end-to-end pipeline included (what CI runs)
	$(BIN)/python -m pytest

test-fast: install  ## the suite without the slow end-to-end tests
	$(BIN)/python -m pytest -m "not slow"

lint: install  ## ruff lint and format check
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks

format: install  ## apply ruff's fixes and formatting
	$(BIN)/ruff check --fix src tests benchmarks
	$(BIN)/ruff format src tests benchmarks

bench: install  ## training-speed benchmark -> reports/benchmarks.json
	$(BIN)/python benchmarks/bench_train.py

numerics: install  ## which machine-dependent settings change the numbers -> reports/numerics_matrix.json
	$(BIN)/python benchmarks/numerics_matrix.py

ui: install  ## MLflow UI on http://127.0.0.1:5000 over the project's store
	$(BIN)/mlflow ui --backend-store-uri sqlite:///$(CURDIR)/mlflow.db --host 127.0.0.1 --port 5000

clean:  ## remove run folders, reports' figures and the MLflow store (not data/ or .venv)
	rm -rf runs mlflow.db mlflow.db-* mlartifacts
