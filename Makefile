# Two entry points do all the set-up: `make repro` (the pipeline) and `make test` (the suite).
# Both create .venv and install the pinned runtime lock on first use, and again when it changes;
# `make test` adds the test tools' lock (requirements-dev.lock) on top.
# `make repro VENV=$HOME/venvs/kd` shares one environment between clones: the install is mostly
# torch's CUDA wheels (results/install_footprint).
PYTHON ?= python3
VENV ?= .venv
BIN := $(abspath $(VENV))/bin
export PATH := $(BIN):$(PATH)

VEGA := .cache/vega

.PHONY: setup setup-dev repro repro-full test lint browser

setup: $(VENV)/.installed
setup-dev: $(VENV)/.installed-dev

$(VENV)/.installed: requirements.lock pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check -r requirements.lock
	$(BIN)/pip install --quiet --disable-pip-version-check --no-deps --no-build-isolation -e .
	touch $@

$(VENV)/.installed-dev: requirements-dev.lock $(VENV)/.installed
	$(BIN)/pip install --quiet --disable-pip-version-check -r requirements-dev.lock
	touch $@

repro: setup
	dvc repro

# params.yaml is a first look, sized to finish in 5 minutes on 2 AVX2 cores (16 px, short
# budgets). Real data wants the full budgets of kd_pipeline/budgets.py, the ones every record before
# the first look used: `make repro-full` runs them as one DVC experiment, and
# `make repro-full SET="-S data.name=medmnist -S data.subset=pneumoniamnist"` on other data.
repro-full: setup
	dvc exp run $$(python -m kd_pipeline.budgets full) $(SET)

# The browser test renders `dvc plots show` in headless Chromium with vega from npm (offline).
# Both are installed here when possible; without them that one test skips (fails under CI=true).
browser: $(VEGA)/.installed
	@command -v chromium >/dev/null 2>&1 || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1 && \
	  { apt-get install -y -qq chromium >/dev/null 2>&1 || { apt-get update -qq && apt-get install -y -qq chromium >/dev/null; }; }; } \
	  || echo "chromium not installed: the browser test will skip"

$(VEGA)/.installed:
	-npm install --silent --no-audit --no-fund --prefix $(VEGA) vega@5.33.1 vega-lite@5.23.0 vega-embed@6.29.0 \
	  && touch $@

test: setup-dev browser
	ruff check .
	pytest

lint: setup-dev
	ruff check .
