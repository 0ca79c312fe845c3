# btcflow: `make demo` runs the main job, `make test` the whole suite. Both bootstrap first.
SHELL := /bin/bash
# PYTHON builds the venv; another version beside the default one, e.g.
#   make test PYTHON=python3.12 VENV=.venv-3.12
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
WHEELS := .cache/wheels
ROWS ?= 300000
PYTEST_ARGS ?=

.PHONY: help setup demo demo-cluster test bench lint clean

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-13s %s\n", $$1, $$2}'

# pyspark is published only as a 456 MB source archive: .cache/wheels keeps the wheel pip built from it
# (out of pip's cache, in seconds), so that uv's project environments install it instead of building it
# again: UV_FIND_LINKS=$PWD/.cache/wheels mlflow run . --env-manager uv (tests/test_mlflow_project.py).
$(STAMP): pyproject.toml requirements.lock
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --disable-pip-version-check -r requirements.lock
	$(BIN)/python -m pip install -q --disable-pip-version-check --no-deps -e .
	@rm -rf $(WHEELS) && $(BIN)/python -m pip wheel -q --disable-pip-version-check --no-deps -w $(WHEELS) \
		$$(grep -i '^pyspark==' requirements.lock)
	@touch $@

setup: $(STAMP) ## idempotent bootstrap: .venv with pinned packages, Kafka and Hadoop jars resolved by Maven
	@$(BIN)/btcflow broker setup
	@$(BIN)/btcflow hdfs setup
	@ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || { if [ "$$(id -u)" = 0 ]; then \
		echo "installing PostgreSQL (btcflow tracking start runs its own cluster)"; \
		DEBIAN_FRONTEND=noninteractive apt-get install -y -q postgresql >/dev/null || { apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q postgresql >/dev/null; }; \
		else echo "PostgreSQL not installed: sudo apt-get install postgresql (for btcflow tracking start)"; fi; }

demo: setup ## the main job on embedded defaults (ROWS=7000000 for the seed's scale)
	$(BIN)/btcflow demo --rows $(ROWS)

demo-cluster: setup ## the main job on the whole stack: Kafka cluster, Spark cluster, MLflow on PostgreSQL
	$(BIN)/btcflow demo --stack --rows $(ROWS)

test: setup ## the whole suite, integration included (real Kafka, Spark, MLflow)
	$(BIN)/python -m pytest $(PYTEST_ARGS)

bench: setup ## the benchmarks, printing figures and ratios (bench/serve.py loads with wrk when it can)
	@command -v wrk >/dev/null || apt-get install -y -q wrk >/dev/null 2>&1 \
		|| echo "wrk not installed (apt-get install wrk): bench/serve.py uses its bounded httpx client instead"
	@for b in bench/*.py; do echo "== $$b"; $(BIN)/python $$b || exit 1; done

lint: setup ## ruff and mypy on our packages
	$(BIN)/ruff check core services btcflow pipeline training serving monitoring tests bench
	$(BIN)/mypy

clean: ## stop btcflow's services (broker, HDFS, stack) and remove generated data, runs and caches (keeps .venv)
	-@$(BIN)/btcflow broker stop 2>/dev/null
	-@$(BIN)/btcflow spark stop 2>/dev/null
	-@$(BIN)/btcflow hdfs stop 2>/dev/null
	-@$(BIN)/btcflow tracking stop 2>/dev/null
	-@$(BIN)/btcflow stack down 2>/dev/null
	rm -rf data/* mlruns/* .pytest_cache
	@touch data/.gitkeep mlruns/.gitkeep
