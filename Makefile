# Two entry points do all the set-up: `make repro` (the pipeline) and `make test` (the suite).
# Both create .venv and install the pinned lock on first use, and again when the lock changes.
PYTHON ?= python3
VENV := .venv
BIN := $(CURDIR)/$(VENV)/bin
export PATH := $(BIN):$(PATH)

.PHONY: setup repro test lint bench

setup: $(VENV)/.installed

$(VENV)/.installed: requirements.lock pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check -r requirements.lock
	$(BIN)/pip install --quiet --disable-pip-version-check --no-deps --no-build-isolation -e .
	touch $@

repro: setup
	dvc repro

test: setup
	ruff check .
	pytest

lint: setup
	ruff check .
