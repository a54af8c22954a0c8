# Two commands for a newcomer: `make dev` runs the whole system, `make test` runs every test.
# Everything is installed into .venv by `make setup`; nothing is needed on the host but
# Python 3.11+, make and git.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
PYTEST_ARGS ?=

.PHONY: setup dev demo test test-fast lint fmt bench clean reset

setup: $(STAMP)

# Reinstall only when a requirements or project file changed since the last install.
$(STAMP): requirements.txt requirements-dev.txt pyproject.toml functions/kit/pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -r requirements-dev.txt
	touch $(STAMP)

dev: setup
	$(BIN)/knfn dev --watch

# Knative's autoscale-go load on hello (50 clients, 30 s), then until it is back at zero;
# uses the running `make dev` (or starts one) and writes .knfn/demo/autoscale.png.
demo: setup
	$(BIN)/knfn demo

test: setup
	$(BIN)/python -m pytest $(PYTEST_ARGS)

# Unit and in-process tests only: seconds, no real processes beyond the backing servers.
test-fast: setup
	$(BIN)/python -m pytest -m "not slow" $(PYTEST_ARGS)

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

fmt: setup
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

bench: setup
	$(BIN)/python bench/run.py

# Stop anything knfn left running and delete its local state (.knfn/): data is lost.
reset: setup
	$(BIN)/knfn reset --yes

clean:
	-test -x $(BIN)/knfn && $(BIN)/knfn services down
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache build *.egg-info
	find . -name __pycache__ -type d -prune -exec rm -rf {} +

-include mk/cluster.mk
