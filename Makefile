# `make dev` runs the collector locally (moto, no AWS, no Docker); `make test` runs every check.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: dev test test-long lint format typecheck bench lock clean

$(STAMP): requirements/dev.lock layers/collector/requirements.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check -r requirements/dev.lock
	$(BIN)/pip install --quiet --disable-pip-version-check --no-deps -e .
	touch $@

dev: $(STAMP)
	$(BIN)/python -m collector.tools.devserver

test: $(STAMP) lint
	$(BIN)/python -m pytest -m "not slow and not bench"
	$(BIN)/python -m pytest -m bench -p no:randomly -q

test-long: $(STAMP)
	$(BIN)/python -m pytest -m slow

bench: $(STAMP)
	$(BIN)/python -m pytest -m bench -s -q

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/cfn-lint template.yaml
	$(BIN)/mypy

format: $(STAMP)
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

# Re-resolve requirements/dev.in into the pinned lock file.
lock:
	rm -rf /tmp/collector-lock && $(PYTHON) -m venv /tmp/collector-lock
	/tmp/collector-lock/bin/pip install --quiet -r requirements/dev.in
	( echo '# Resolved from requirements/dev.in by `make lock`; `make test` and `make dev` install exactly this.'; \
	  /tmp/collector-lock/bin/pip freeze --exclude-editable ) > requirements/dev.lock

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .hypothesis
