# README's commands: `make demo`, `make test` and `make test-fast`. Each bootstraps .venv once through `make install`.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: install demo test test-all test-fast bench-ingest bench-tokenize bench-train bench-vae bench-demo schema lint clean

install: $(STAMP)

# Re-installs only when pyproject.toml changes; the package is installed editable.
$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "need Python 3.11+, found " + sys.version.split()[0])'
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[dev,airflow]'
	@touch $@

demo: install
	$(BIN)/cloudtune demo

# everything (what CI runs): ~5 min on 2 cores, most of it the Airflow DAG runs and the real Airflow server
# under 10 minutes on 2 cores: everything but the Celery cluster tests (marker cluster: about 4 more minutes, PostgreSQL and Redis)
test: install
	$(BIN)/python -m pytest -q -m "not cluster"

# every test, as CI runs it (.ci/run); the slowest are listed at the end (what `make test` leaves out shows there)
test-all: install
	$(BIN)/python -m pytest -q --durations=12

# under a minute: leaves out the tests marked slow in tests/conftest.py (Airflow runs, the Airflow server, long training)
test-fast: install
	$(BIN)/python -m pytest -q -m "not slow"

bench-ingest: install
	$(BIN)/python bench/ingest.py --workers 2

bench-tokenize: install
	$(BIN)/python bench/tokenize_rvq.py

# needs bench-tokenize first (it trains on that tokenized catalog)
bench-train: install
	$(BIN)/python bench/train_embedder.py

# one epoch of the dream generator VAE over 60k generated 28x28 images (no MNIST files needed)
bench-vae: install
	$(BIN)/python bench/vae_epoch.py

# `make demo` end to end in a fresh home, with each DAG task's seconds
bench-demo: install
	$(BIN)/python bench/demo.py

# Regenerate sql/schema.sql after changing pipeline/store/tables.py (a test checks they agree).
schema: install
	$(BIN)/cloudtune db schema > sql/schema.sql

clean:
	rm -rf $(VENV) var .pytest_cache

# ruff, then the layer rule of docs/architecture.md (import-linter's contract in pyproject.toml; tests/test_layers.py runs it in CI too)
lint: install
	$(BIN)/python -m pip install --quiet ruff==0.17.6 && $(BIN)/ruff check pipeline tests bench dags plugins
	$(BIN)/lint-imports pyproject.toml
