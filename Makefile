# Two commands: `make run` serves the shipped default model, `make test` runs the whole test suite.
# Both build .venv on first use; nothing has to be installed by hand beyond Python 3.11+.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
PORT ?= 8000
# Parallel test workers; each test file runs whole in one worker (its module fixtures are built once).
TEST_WORKERS ?= auto
export MODEL_DIR ?= model_artifacts/default
# The account `make admin` creates, or whose password it sets.
ADMIN_USER ?= admin

.PHONY: run test admin docs cluster cluster-test bench bench-input bench-admin install install-dev clean help

help:  ## List the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-12s %s\n", $$1, $$2}'

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

$(VENV)/.serve-installed: requirements.txt | $(BIN)/python
	$(BIN)/pip install --quiet -r requirements.txt
	touch $@

$(VENV)/.dev-installed: requirements.txt requirements-train.txt requirements-dev.txt | $(BIN)/python
	$(BIN)/pip install --quiet -r requirements-dev.txt
	touch $@ $(VENV)/.serve-installed

install: $(VENV)/.serve-installed  ## Install the serving dependencies (no TensorFlow)

install-dev: $(VENV)/.dev-installed  ## Install training and test dependencies too

run: install  ## Serve the default model at http://127.0.0.1:$(PORT)/
	$(BIN)/flask --app wsgi db upgrade
	PORT=$(PORT) $(BIN)/gunicorn --config gunicorn.conf.py wsgi:app

test: install-dev  ## Run the whole test suite, in parallel on every core
	$(BIN)/python -m pytest -n $(TEST_WORKERS) --dist loadfile

admin: install  ## Create the admin account ADMIN_USER (default admin) or set its password; asks, or reads ADMIN_PASSWORD
	$(BIN)/flask --app wsgi db upgrade
	$(BIN)/flask --app wsgi create-admin --or-set-password "$(ADMIN_USER)"

docs: install-dev  ## Serve the manual (docs/) at http://127.0.0.1:8001/ while editing it
	$(BIN)/mkdocs serve -a 127.0.0.1:8001

cluster: install  ## nginx :$(PORT) -> 2 gunicorn -> PostgreSQL + Redis, on 127.0.0.1 (Ctrl-C stops)
	scripts/cluster-packages.sh
	$(BIN)/python scripts/cluster.py up --port $(PORT)

cluster-test: install  ## Load via nginx, 32 slow clients, an instance killed; one line
	scripts/cluster-packages.sh
	$(BIN)/python scripts/cluster.py test

bench: install-dev  ## Serving benchmark: this app vs a model.predict-per-request baseline
	$(BIN)/python -m benchmarks.serve

bench-input: install-dev  ## Training input benchmark: tf.data vs ImageDataGenerator
	$(BIN)/python -m benchmarks.input_pipeline

bench-admin: install-dev  ## Admin review page on 100,000 predictions, with vs without the review indexes
	$(BIN)/python -m benchmarks.admin_review

clean:  ## Remove the virtualenv and caches
	rm -rf $(VENV) .pytest_cache
