# Two commands a newcomer needs: `make run` and `make test`. Both set up .venv first.
SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(CURDIR)/$(VENV)/bin
STAMP := $(VENV)/.installed
# Stages call the `hsixai` console script, so the venv must come first on PATH.
export PATH := $(BIN):$(PATH)
export DVC_NO_ANALYTICS := 1

.PHONY: setup run test bench ui clean-venv

setup: $(STAMP)

# Re-installs only when the dependency pins change; `make setup` twice is a no-op.
$(STAMP): pyproject.toml constraints.txt
	@$(PYTHON) -c 'import sys; assert sys.version_info[:2] == (3, 11), f"Python 3.11 is required, found {sys.version.split()[0]} at {sys.executable}"'
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[dev]'
	touch $(STAMP)

# The main job: every (model, patch size) of params.yaml's `sweep` as a DVC experiment, then the ranking.
run: setup
	hsixai sweep

test: setup
	$(BIN)/python -m pytest -q

# The MLflow UI on this machine only, over the project's absolute SQLite backend.
ui: setup
	mlflow ui --backend-store-uri sqlite:///$(CURDIR)/mlflow.db --host 127.0.0.1 --port 5000

bench: setup
	$(BIN)/python bench/run.py

clean-venv:
	rm -rf $(VENV)
