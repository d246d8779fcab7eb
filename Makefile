# stockpipe: every target sets up what it needs first (idempotent, quiet when done).
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.stockpipe-installed
UV_VERSION := 0.13.8
#: requirements.txt is this export of uv.lock (every extra); tests/unit/test_packaging.py
#: checks that it still is
UV_EXPORT := export --frozen --format requirements-txt --no-hashes --all-extras --no-emit-project --no-header --no-annotate
PYTEST_ARGS ?=

.DEFAULT_GOAL := help
.PHONY: help browser postgres setup lock up down status smoke demo test test-unit lint format bench lab airflow engine-start engine-stop engine-packages test-deploy clean

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

$(STAMP): requirements.txt pyproject.toml
	@command -v $(PYTHON) >/dev/null || { echo "error: $(PYTHON) not found; install Python 3.11+" >&2; exit 1; }
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' || { echo "error: Python 3.11+ is needed ($(PYTHON) is older)" >&2; exit 1; }
	@echo "setup: creating $(VENV) and installing the pinned requirements (cached after the first time) ..."
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@$(BIN)/python -m pip install -q --disable-pip-version-check uv==$(UV_VERSION)
	@# --compile-bytecode: Python never writes .pyc where PYTHONDONTWRITEBYTECODE is set,
	@# so every process would compile pandas, pyspark, botocore... again (6 s per start)
	@$(BIN)/uv pip install --python $(BIN)/python -q --compile-bytecode -r requirements.txt -e .
	@$(BIN)/python -m ipykernel install --sys-prefix --name stockpipe --display-name "Python (stockpipe)" >/dev/null
	@touch $(STAMP)
	@echo "setup: Python environment ready"

setup: $(STAMP) ## create .venv, fetch Kafka + Spark jars and build MinIO (cached per user)
	@$(BIN)/stockpipe setup
	@command -v chromium >/dev/null || $(MAKE) -s browser
	@ls /usr/lib/postgresql/*/bin/postgres >/dev/null 2>&1 || command -v postgres >/dev/null || $(MAKE) -s postgres

lock: ## resolve uv.lock from pyproject.toml, export requirements.txt (LOCK_ARGS=--upgrade)
	@test -x $(BIN)/uv || { test -x $(BIN)/python || $(PYTHON) -m venv $(VENV); \
	  $(BIN)/python -m pip install -q --disable-pip-version-check uv==$(UV_VERSION); }
	@$(BIN)/uv lock -q $(LOCK_ARGS)
	@{ echo "# Exact pins of every dependency (with every extra), exported from uv.lock: do not"; \
	  echo "# edit. Change the ranges in pyproject.toml, then run \`make lock\`."; \
	  $(BIN)/uv $(UV_EXPORT) -q; } > requirements.txt

browser: ## install Debian's headless Chromium for the report browser test (needs root)
	@if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  echo "setup: installing chromium (Debian package) for the report browser test ..."; \
	  apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null \
	  && echo "setup: chromium ready"; \
	else echo "note: chromium is not installed (sudo apt-get install chromium); the browser test will be skipped"; fi

postgres: ## install Debian's PostgreSQL server, the local warehouse (needs root)
	@if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  echo "setup: installing postgresql (Debian package) for the local warehouse ..."; \
	  apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null \
	  && echo "setup: postgresql ready"; \
	else echo "error: PostgreSQL is not installed (sudo apt-get install postgresql): the warehouse needs it" >&2; exit 1; fi

up: setup ## start Kafka, MinIO, PostgreSQL and the Spark Connect server on 127.0.0.1 (no-op when up)
	@$(BIN)/stockpipe up

down: ## stop the local stack
	@test -x $(BIN)/stockpipe && $(BIN)/stockpipe down || true

status: setup ## show each service, its port, pid and health
	@$(BIN)/stockpipe status

smoke: up ## produce a few records, Spark reads them, a Delta table in MinIO, read back
	@$(BIN)/stockpipe smoke

demo: up ## the main job: run the pipeline on the shipped sample data
	@$(BIN)/stockpipe demo

test: setup ## run every test (unit and integration; tests start their own stack)
	@$(BIN)/python -m pytest $(PYTEST_ARGS)

test-unit: setup ## run the fast unit tests only
	@$(BIN)/python -m pytest tests/unit $(PYTEST_ARGS)

lint: setup ## ruff lint and format check, import contracts (the runtime never imports the stack)
	@$(BIN)/ruff check . && $(BIN)/ruff format --check . && $(BIN)/lint-imports --no-logo

format: setup ## ruff format and autofix
	@$(BIN)/ruff format . && $(BIN)/ruff check --fix .

bench: up ## run the benchmarks (figures printed and written to bench/results/)
	@for b in bench/bench_*.py; do $(BIN)/python $$b || exit 1; done

lab: up ## JupyterLab on the notebooks with the project kernel (127.0.0.1)
	@$(BIN)/stockpipe lab

airflow: up ## Airflow 3 on 127.0.0.1 with the project's DAGs (admin password printed once)
	@$(BIN)/stockpipe airflow

engine-start: setup ## a Docker engine for docker/ (the machine's, or a private dockerd as root) + Compose
	@{ command -v dockerd && command -v busybox && command -v debootstrap; } >/dev/null || $(MAKE) -s engine-packages
	@$(BIN)/stockpipe engine start

engine-stop: ## stop the private dockerd
	@$(BIN)/stockpipe engine stop

engine-packages: ## install Debian's docker.io, busybox-static and debootstrap (needs root)
	@if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  echo "setup: installing Debian's docker.io, busybox-static and debootstrap (the Compose deployment's engine and base image) ..."; \
	  DEBIAN_FRONTEND=noninteractive apt-get install -y -q docker.io busybox-static debootstrap >/dev/null \
	  || { apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q docker.io busybox-static debootstrap >/dev/null; }; \
	else echo "error: dockerd not found; install Docker (as root: apt-get install docker.io)" >&2; exit 1; fi

test-deploy: engine-start ## the deployment tests (tests/deploy: a real engine)
	@$(BIN)/python -m pytest tests/deploy $(PYTEST_ARGS)
	@echo "deployment figures (seconds):" && cat .state/deploy/figures.json

clean: down ## remove the local stack's state (data!) and the venv; the download cache stays
	rm -rf .state $(VENV)
