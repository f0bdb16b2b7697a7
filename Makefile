# make run   - set up .venv (CPU torch) and run the main job on params/quick.yaml
# make test  - set up .venv and run every test tier: unit, e2e (pipelines, notebooks, Ray), data and model
#              (real-data tests run when ../shared/data exists); a plain `pytest` runs the unit tier only
PYTHON ?= python3
VENV   ?= .venv
BIN     = $(VENV)/bin
PARAMS ?= params/quick.yaml
export XLT_DATA_DIR ?= $(abspath ../shared/data)

$(VENV)/.installed: pyproject.toml requirements.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -r requirements.txt
	$(BIN)/pip install -q -e ".[dev]"
	touch $@

setup: $(VENV)/.installed

run: $(VENV)/.installed
	$(BIN)/xlt run $(PARAMS)

test: $(VENV)/.installed
	$(BIN)/python -m pytest -q -m ""

study: $(VENV)/.installed
	$(BIN)/xlt run params/study.yaml

.PHONY: setup run test study
