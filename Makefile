# One entry point per habit: make run, make test, make check, make bench.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
MPY_DIR := tests/firmware/micropython
WEB_DIR := web

.PHONY: run test test-fast check lint format bench web clean services deps broker

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e ".[dev]"
	@touch $(STAMP)

deps: $(STAMP)

# The dashboard is built when web/ exists and its sources are newer than the build.
WEB_SRC := $(shell test -d $(WEB_DIR)/src && find $(WEB_DIR)/src $(WEB_DIR)/package.json $(WEB_DIR)/index.html -type f 2>/dev/null)
$(WEB_DIR)/dist/index.html: $(WEB_SRC)
	@if [ -f $(WEB_DIR)/package.json ]; then \
		cd $(WEB_DIR) && npm ci --no-audit --no-fund --loglevel=error && npm run build; \
	fi

web: $(STAMP)
	@if [ -f $(WEB_DIR)/package.json ]; then $(MAKE) --no-print-directory $(WEB_DIR)/dist/index.html; fi

# MicroPython (WebAssembly) for the firmware tests.
$(MPY_DIR)/node_modules/.package-lock.json: $(wildcard $(MPY_DIR)/package-lock.json)
	@if [ -f $(MPY_DIR)/package.json ]; then cd $(MPY_DIR) && npm ci --no-audit --no-fund --loglevel=error; fi

# Debian packages the test suite drives: mosquitto (own instances), chromium (browser tests), docker-compose (validates compose.yaml),
# mosquitto-clients and curl (the `iotp serve` banner's commands, run as printed), nginx
# (deploy/nginx/default.conf in front of a real stack).
services:
	@missing=""; \
	command -v mosquitto >/dev/null || [ -x /usr/sbin/mosquitto ] || missing="$$missing mosquitto"; \
	command -v mosquitto_pub >/dev/null || missing="$$missing mosquitto-clients"; \
	command -v curl >/dev/null || missing="$$missing curl"; \
	[ -x /usr/bin/chromium ] || missing="$$missing chromium"; \
	command -v docker-compose >/dev/null || missing="$$missing docker-compose"; \
	command -v nginx >/dev/null || [ -x /usr/sbin/nginx ] || missing="$$missing nginx"; \
	if [ -n "$$missing" ]; then \
		echo "installing:$$missing"; \
		(apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null) \
		|| echo "warning: could not install$$missing"; \
	fi

# `make run`'s broker: Debian's Mosquitto, which `iotp serve` configures and supervises
# (without it, serve falls back to the embedded amqtt broker and says so).
broker:
	@command -v mosquitto >/dev/null || [ -x /usr/sbin/mosquitto ] || { \
		echo "installing: mosquitto"; \
		(apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq mosquitto >/dev/null) \
		|| echo "warning: could not install mosquitto: iotp serve falls back to amqtt"; }

run: $(STAMP) web broker
	$(BIN)/iotp serve --demo 5

test: $(STAMP) web services $(MPY_DIR)/node_modules/.package-lock.json
	$(BIN)/pytest $(PYTEST_ARGS)

test-fast: $(STAMP)
	$(BIN)/pytest tests/unit -q

check: $(STAMP)
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench
	$(BIN)/mypy
	$(BIN)/lint-imports

format: $(STAMP)
	$(BIN)/ruff format src tests bench
	$(BIN)/ruff check --fix src tests bench

bench: $(STAMP)
	$(BIN)/python bench/ingest.py
	$(BIN)/python bench/latency.py

clean:
	rm -rf $(VENV) data $(WEB_DIR)/node_modules $(WEB_DIR)/dist $(MPY_DIR)/node_modules
