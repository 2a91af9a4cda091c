# Everything a newcomer needs: `make run` (service + demo data) and `make test`.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
WEB_PORT ?= 8000
MEMBERS ?= 2000

.DEFAULT_GOAL := help
.PHONY: help install install-dev browser services migrate demo run web worker beat test lint format bench soak chaos

help: ## List the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-12s %s\n", $$1, $$2}'

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

$(VENV)/.installed: requirements.txt | $(BIN)/python
	$(BIN)/pip install -q -r requirements.txt
	touch $@

$(VENV)/.installed-dev: requirements.txt requirements-dev.txt | $(BIN)/python
	$(BIN)/pip install -q -r requirements-dev.txt
	touch $@ $(VENV)/.installed

install: $(VENV)/.installed ## Create the virtualenv and install the runtime requirements

install-dev: $(VENV)/.installed-dev ## ... and the test/dev tools

services: install ## Check PostgreSQL and Redis are up (and create the database)
	@$(BIN)/python manage.py ensure_services --create-database

migrate: services ## Apply database migrations
	@$(BIN)/python manage.py migrate --noinput -v0

IMPORT_DEMO := members/imports/demo

demo: migrate ## Load demo sources, members and events (MEMBERS=2000), and import a legacy brand's history
	@$(BIN)/python manage.py demo --members $(MEMBERS) --url http://127.0.0.1:$(WEB_PORT) --process
	@# A legacy CRM's and POS's exports (GB18030, Chinese columns) through the import path (members.imports).
	@$(BIN)/python manage.py import members $(IMPORT_DEMO)/members.gb18030.csv --name oldpos --mapping $(IMPORT_DEMO)/members.mapping.yaml --no-progress
	@$(BIN)/python manage.py import orders $(IMPORT_DEMO)/orders.gb18030.csv --name oldpos --mapping $(IMPORT_DEMO)/orders.mapping.yaml --no-progress
	@$(BIN)/python manage.py import balances $(IMPORT_DEMO)/balances.csv --name oldpos --no-progress

# honcho stops every process when one exits and restarts none: the Procfile runs the worker
# and beat under bin/respawn, which starts them again.
run: demo ## Run web + worker + beat with demo data, in one terminal
	@WEB_PORT=$(WEB_PORT) $(BIN)/honcho start -f Procfile

web: migrate ## Run only the web server
	$(BIN)/python manage.py runserver 127.0.0.1:$(WEB_PORT)

# The Procfile's lines (local settings: the celery command defaults to production, config/celery.py).
worker: install ## Run only a Celery worker (as the Procfile does: restarted if it exits)
	$(BIN)/honcho start -f Procfile worker

beat: install ## Run only Celery beat (as the Procfile does: restarted if it exits)
	$(BIN)/honcho start -f Procfile beat

CHROMIUM ?= /usr/bin/chromium

# A CJK font too: the demo's customers have Chinese names, which the screenshots must show.
CJK_FONT ?= /usr/share/fonts/truetype/wqy/wqy-microhei.ttc

browser: ## Install Debian's Chromium (and a CJK font) for the console's browser test, if missing and possible
	@if [ ! -x $(CHROMIUM) ] || [ ! -e $(CJK_FONT) ]; then \
	  if command -v apt-get >/dev/null && [ "$$(id -u)" = 0 ]; then \
	    echo "Installing Debian's chromium and fonts-wqy-microhei for the browser test…"; \
	    apt-get install -y -q chromium fonts-wqy-microhei >/dev/null || (apt-get update -q >/dev/null && apt-get install -y -q chromium fonts-wqy-microhei >/dev/null); \
	  elif [ ! -x $(CHROMIUM) ]; then \
	    echo "No $(CHROMIUM): the browser test will be skipped (install Debian's chromium to run it)."; \
	  fi; \
	fi

test: install-dev browser ## Run the whole test suite against the real PostgreSQL and Redis
	@DJANGO_SETTINGS_MODULE=config.settings.test $(BIN)/python manage.py ensure_services --server-only
	$(BIN)/pytest -m "not slow"

# What CI and pre-commit check (README, "Checks"): style, types, and the import contracts in
# pyproject.toml. The type checker loads the test settings (django-stubs), which need no service.
lint: install-dev ## ruff (check + format), mypy, import contracts
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/lint-imports

format: install-dev ## Apply ruff's fixes and formatting
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

bench: install-dev ## Benchmarks: ingestion, identity resolution, member 360, loyalty, segments, heavy histories, imports (results: docs/benchmarks.md)
	$(BIN)/python bench/ingest.py
	$(BIN)/python bench/identity.py
	$(BIN)/python bench/members.py
	$(BIN)/python bench/points.py
	$(BIN)/python bench/segments.py
	$(BIN)/python bench/heavy.py
	$(BIN)/python bench/ingest_single.py
	$(BIN)/python bench/insights.py
	$(BIN)/python bench/funnels.py
	$(BIN)/python bench/imports.py

# Not in `bench`: it holds its load for 30 minutes. SOAK_ARGS="--duration 180 --rate 500" for a short run.
soak: install-dev ## Sustained load (30 min at 3,000 events/s, pipeline running): backlog age, rate drift, memory, lost
	$(BIN)/python bench/soak.py $(SOAK_ARGS)

# Faults with figures (docs/benchmarks.md, "Faults"): real processes and private Redis and
# PostgreSQL servers, never the shared ones. `make test` runs the short ones (not marked slow).
chaos: install-dev ## Fault tests (worker killed, Redis stopped, PostgreSQL restarted, identities at once, webhook receiver down, poison events); prints sent / stored / processed / lost / doubled
	@DJANGO_SETTINGS_MODULE=config.settings.test $(BIN)/python manage.py ensure_services --server-only
	$(BIN)/pytest tests/chaos -p no:randomly -n 0 -s -q
