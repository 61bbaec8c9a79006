# Entry points. The README's two set-up commands are `make run` and `make test`.
SHELL := /bin/bash
PY := .venv/bin/python
SCALE ?= small
MODELS_CURVE ?=
DBT_RUNNER ?=
EXECUTOR ?= local

.PHONY: venv run up down status lint fix test dbt-manifest bench-el bench clean-local

venv:                 ## create/refresh .venv (Airflow, tests) and .venv-dbt (dbt)
	@scripts/bootstrap.sh

dbt-manifest: venv    ## build the dbt manifest Cosmos renders from (no warehouse needed)
	@$(PY) -m include.orchestration.manifest

run: venv dbt-manifest  ## the whole pipeline on the embedded local stack, Airflow UI on :8080 (EXECUTOR=celery: the deployment's shape)
	@$(PY) -m dev.stack up --scale $(SCALE) --airflow --trigger --executor $(EXECUTOR)

up: venv              ## embedded Postgres, Stripe stub, Slack receiver and data; no Airflow
	@$(PY) -m dev.stack up --scale $(SCALE)

down:                 ## stop everything the local stack started (data is kept)
	@$(PY) -m dev.stack down

status:
	@$(PY) -m dev.stack status

lint: venv            ## ruff (lint + format check) and sqlfluff (dbt templater); CI fails on either
	@$(PY) -m dev.lint

fix: venv             ## apply ruff's and sqlfluff's fixes
	@$(PY) -m dev.lint --fix

test: venv dbt-manifest lint ## lint, then the test suite (starts what it needs itself)
	@$(PY) -m pytest

bench-el: venv        ## extract-load benchmark (not part of the tests)
	@$(PY) -m dev.bench_el --scales medium large

bench: venv dbt-manifest ## whole-pipeline benchmark (not part of the tests); MODELS_CURVE=1,4,16 adds the model-count curve, DBT_RUNNER=1 the in-process dbt comparison, TESTS_IN_MODEL_TASK=1 runs it with each model's tests in its task
	@$(if $(TESTS_IN_MODEL_TASK),ECOMMERCE_TESTS_IN_MODEL_TASK=true) $(PY) -m dev.bench --scale $(SCALE) --models-curve "$(MODELS_CURVE)" $(if $(DBT_RUNNER),--dbt-runner)

clean-local: down     ## delete the local stack's data (.local/)
	rm -rf .local
