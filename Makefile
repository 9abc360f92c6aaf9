# The same commands locally and in CI. Everything installs into ./.venv.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test lint typecheck bench install clean tools

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

run: $(STAMP)
	$(BIN)/gateway dev

# Debian's prometheus package: promtool checks the deploy kit, and tests/test_prometheus.py
# runs a real Prometheus against a running gateway (the package's own daemon is not used).
tools:
	command -v prometheus >/dev/null && command -v promtool >/dev/null || (apt-get update && \
		DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends prometheus)

lint: $(STAMP) tools
	$(BIN)/ruff check gateway tests bench
	$(BIN)/mypy
	promtool check config deploy/prometheus/prometheus.yml
	promtool check rules deploy/prometheus/alerts.yml

typecheck: lint

test: lint
	$(BIN)/python -m pytest -q

bench: $(STAMP)
	command -v wrk || (apt-get update && apt-get install -y wrk)
	$(BIN)/python -m bench $(BENCH_ARGS)

clean:
	rm -rf $(VENV) data .pytest_cache .mypy_cache .ruff_cache
