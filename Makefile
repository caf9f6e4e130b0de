# Set-up and checks. `make demo` and `make test` work on a fresh machine: each creates
# .venv when missing and installs what it needs.

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
# Every install takes the CPU build of torch; pyproject.toml itself accepts a range.
CONSTRAINTS := constraints/cpu.txt
PIP_INSTALL := $(BIN)/python -m pip install --quiet -c $(CONSTRAINTS)

.PHONY: demo test lint fmt generate system-packages

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(PIP_INSTALL) --upgrade pip

# Stamps re-run the install whenever pyproject.toml or the constraints change.
$(VENV)/.installed: pyproject.toml $(CONSTRAINTS) | $(BIN)/python
	$(PIP_INSTALL) -e .
	touch $@

$(VENV)/.installed-dev: pyproject.toml $(CONSTRAINTS) | $(BIN)/python
	$(PIP_INSTALL) -e '.[dev,hf]'
	touch $@ $(VENV)/.installed

demo: $(VENV)/.installed
	$(BIN)/observe demo

# Prometheus and promtool come from Debian, and so does the headless Chromium that opens
# drift reports; tests start their own Prometheus on a free port, and make throwaway TLS
# certificates for /metrics with openssl.
SYSTEM_TOOLS := prometheus:prometheus promtool:prometheus chromium:chromium openssl:openssl
system-packages:
	@missing=$$(for pair in $(SYSTEM_TOOLS); do \
		command -v $${pair%%:*} >/dev/null || echo $${pair#*:}; done | sort -u); \
	if [ -n "$$missing" ]; then \
		export DEBIAN_FRONTEND=noninteractive; \
		apt-get update -qq && apt-get install -y -qq --no-install-recommends $$missing; \
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
