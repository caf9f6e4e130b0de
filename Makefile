# Set-up and checks. `make demo` and `make test` work on a fresh machine: each creates
# .venv when missing and installs what it needs.

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin

.PHONY: demo test lint fmt generate system-packages

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

# Stamps re-run the install whenever pyproject.toml changes.
$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e .
	touch $@

$(VENV)/.installed-dev: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e '.[dev,hf]'
	touch $@ $(VENV)/.installed

demo: $(VENV)/.installed
	$(BIN)/observe demo

# Prometheus and promtool come from Debian; tests start their own Prometheus on a free port.
system-packages:
	@if ! command -v prometheus >/dev/null || ! command -v promtool >/dev/null; then \
		export DEBIAN_FRONTEND=noninteractive; \
		apt-get update -qq && apt-get install -y -qq --no-install-recommends prometheus; \
	fi

lint: $(VENV)/.installed-dev
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

fmt: $(VENV)/.installed-dev
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

# Dashboards, alert rules and docs come from code; commit what this writes.
generate: $(VENV)/.installed
	$(BIN)/python -m observe.generate

test: $(VENV)/.installed-dev system-packages lint
	$(BIN)/pytest
