# `make dev` runs the collector locally (moto, no AWS, no Docker); `make test` runs every check.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: dev dev-fresh sql test test-long lint format typecheck bench lock clean

$(STAMP): requirements/dev.lock layers/collector/requirements.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check -r requirements/dev.lock
	$(BIN)/pip install --quiet --disable-pip-version-check --no-deps -e .
	touch $@

dev: $(STAMP)
	$(BIN)/python -m collector.tools.devserver

# SQL over the data of `make dev` (collector-query): the tables and views Athena has.
sql: $(STAMP)
	$(BIN)/collector-query --interactive

# The same, with the data directory (.collector-data, or COLLECTOR_DATA_DIR) emptied first.
dev-fresh: $(STAMP)
	$(BIN)/python -m collector.tools.devserver --fresh

test: $(STAMP) lint browser-deps
	# One worker per core, a test file per worker (module-scoped servers are made once); the
	# benchmarks run afterwards on a quiet machine, alone.
	$(BIN)/python -m pytest -n auto --dist loadfile -m "not slow and not bench"
	$(BIN)/python -m pytest -m bench -q

# tests/test_browser.py: analytics.js from npm (tests/browser/package-lock.json) bundled by
# esbuild, run in Debian's Chromium (Playwright's own browser downloads are never used). Each
# step runs once: the files it makes are the targets.
BROWSER_DIR := tests/browser
BROWSER_BUNDLE := $(BROWSER_DIR)/dist/analytics.js
BROWSER_MODULES := $(BROWSER_DIR)/node_modules/.installed
CHROMIUM := /usr/bin/chromium
SUDO := $(if $(filter 0,$(shell id -u)),,sudo)
APT_INSTALL := $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq

.PHONY: browser-deps
browser-deps: $(CHROMIUM) $(BROWSER_BUNDLE)

$(CHROMIUM):
	$(SUDO) apt-get update -qq
	$(APT_INSTALL) chromium

$(BROWSER_MODULES): $(BROWSER_DIR)/package.json $(BROWSER_DIR)/package-lock.json
	command -v npm >/dev/null || { $(SUDO) apt-get update -qq && $(APT_INSTALL) npm; }
	cd $(BROWSER_DIR) && npm ci --no-audit --no-fund --loglevel=error
	touch $@

$(BROWSER_BUNDLE): $(BROWSER_DIR)/entry.js $(BROWSER_MODULES)
	cd $(BROWSER_DIR) && npm run --silent build

test-long: $(STAMP)
	$(BIN)/python -m pytest -m slow

# The benchmarks record their figures in BENCH_RESULTS; the table printed from them (each
# target met or MISSED) ends with one line,
# `ratio_to_floor=<x.xx> us_per_message=<y.y> import_ratio=<z.zz>`.
BENCH_RESULTS := $(VENV)/bench-results.json
bench: $(STAMP)
	rm -f $(BENCH_RESULTS)
	BENCH_RESULTS=$(BENCH_RESULTS) $(BIN)/python -m pytest -m bench -s -q
	@$(BIN)/python -m tests.bench_report $(BENCH_RESULTS)

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

# Deploying to AWS (docs/deploy.md). sam CLI lives in its own venv: it pins its own versions of
# boto3, pydantic and click, which clash with requirements/dev.lock. `make package` builds with
# the Makefiles under layers/ and functions/ (arm64 wheels for the Lambda's Python), no Docker.
SAM_VENV := .venv-sam
SAM := SAM_CLI_TELEMETRY=0 $(SAM_VENV)/bin/sam
SAM_STAMP := $(SAM_VENV)/.installed
SAM_BUILD_DIR ?= .aws-sam/build

.PHONY: package deploy

$(SAM_STAMP): requirements/sam.txt
	$(PYTHON) -m venv $(SAM_VENV)
	$(SAM_VENV)/bin/pip install --quiet --disable-pip-version-check -r requirements/sam.txt
	touch $@

# The layer's pip runs with the sam venv's Python, which surely has pip; any 3.11+ will do.
package: $(SAM_STAMP)
	PYTHON="$(CURDIR)/$(SAM_VENV)/bin/python" $(SAM) build --template-file template.yaml \
		--build-dir "$(SAM_BUILD_DIR)"

# Settings come from samconfig.toml (named explicitly: sam would look for it beside the built
# template); --guided asks for each one and can save the answers back there.
deploy: $(SAM_STAMP)
	@test -f "$(SAM_BUILD_DIR)/template.yaml" || { echo "Run 'make package' first."; exit 1; }
	$(SAM) deploy --guided --template-file "$(SAM_BUILD_DIR)/template.yaml" \
		--config-file "$(CURDIR)/samconfig.toml"
