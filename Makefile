# Two commands a newcomer needs: `make run` and `make test`. Both set up .venv first.
SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(CURDIR)/$(VENV)/bin
STAMP := $(VENV)/.installed
# Stages call the `hsixai` console script, so the venv must come first on PATH.
export PATH := $(BIN):$(PATH)
export DVC_NO_ANALYTICS := 1

.PHONY: setup run adapt test test-fast lint bench ui push pull clean-venv

setup: $(STAMP)

# Re-installs only when the dependency pins change; `make setup` twice is a no-op.
# pip installs torch (the CPU wheel pip is pointed at) and uv, both pinned; uv then installs everything else,
# about 2x faster than pip on a fresh machine with an empty cache (docs/development.md, "Setup").
# uv keeps the torch already there: constraints.txt's torch==2.13.0 is satisfied by 2.13.0+cpu.
$(STAMP): pyproject.toml constraints.txt
	@$(PYTHON) -c 'import sys; assert sys.version_info[:2] == (3, 11), f"Python 3.11 is required, found {sys.version.split()[0]} at {sys.executable}"'
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet -c constraints.txt torch uv
	$(BIN)/uv pip install --quiet --python $(BIN)/python -c constraints.txt -e '.[dev]'
	$(BIN)/python -c 'import torch; assert torch.__version__.startswith("2.13.0"), torch.__version__'
	touch $(STAMP)

# The main job: every (model, patch size) of params.yaml's `sweep` as a DVC experiment, then the ranking.
run: setup
	hsixai sweep

# Domain adaptation (docs/adaptation.md): source-only, AdaBN, fine-tuning and the adversarial arms on both embedded
# pairs, 5 seeds. OpenMP threads that spin while they wait made a pretraining step 6-8x slower on the shared 2-core
# machine (docs/adaptation.md, "Budget"): they sleep here unless OMP_WAIT_POLICY says otherwise.
# The labels sweep: dvc repro adapt_labels.
adapt: export OMP_WAIT_POLICY ?= PASSIVE
adapt: setup
	dvc repro adapt_evaluate

# Lint and format check first (seconds; config in pyproject.toml): `ruff format .` fixes the formatting.
test: setup lint
	$(BIN)/python -m pytest -q

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

# The edit loop: the unit tests only (a few minutes); `make test` runs the pipeline tests too.
test-fast: setup
	$(BIN)/python -m pytest -q tests/unit

# The MLflow UI on this machine only, over the project's absolute SQLite backend. Plain `=`, not `?=`:
# only the command line (`make ui HOST=0.0.0.0`) opens it to the network, never a stray HOST variable.
HOST = 127.0.0.1
PORT = 5000
# MLflow 3.17's UI opens an experiment on its GenAI trace overview: the address printed first opens the runs table
# (or switch the UI's sidebar from "GenAI" to "Model training" once; the browser keeps it). docs/pipeline.md, "MLflow".
ui: setup
	@env -u MLFLOW_TRACKING_URI $(BIN)/python -c 'import sys; from hsixai.tracking import runs_page_url; \
	print("the runs:", runs_page_url(sys.argv[1]))' http://$(HOST):$(PORT)
	mlflow ui --backend-store-uri sqlite:///$(CURDIR)/mlflow.db --host $(HOST) --port $(PORT)

# Raw data (`dvc add`-ed .dvc files) and every stage output of dvc.lock, to or from a DVC remote: the project's
# directory remote `local` unless `make push DVC_REMOTE=name`.
DVC_REMOTE = local
push: setup
	dvc push -r $(DVC_REMOTE)

pull: setup
	dvc pull -r $(DVC_REMOTE)

# Every bench/bench_*.py -> bench/results.{json,md} and docs/bench_*.png; `make bench BENCH_ARGS="--device cuda"`
# on a GPU machine writes bench/results_cuda.* instead (see bench/run.py --help).
bench: setup
	$(BIN)/python bench/run.py $(BENCH_ARGS)

clean-venv:
	rm -rf $(VENV)
