# Two entry points for a fresh machine: `make demo` and `make test`. Both install into .venv first.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: install demo test docs lint example clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

install: $(BIN)/python
	VENV=$(VENV) bash scripts/install.sh

demo: install
	$(BIN)/vprbench quickstart

test: install
	$(BIN)/ruff check vprbench tests benchmarks scripts
	$(BIN)/python -m pytest -q
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict --quiet

# The documentation site (MkDocs, Material theme) into build/site; strict: a broken link, a missing
# page or a page left out of the navigation fails.
docs: install
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict

# The example report in results/examples/quickstart: the quickstart ablation, then its tables and figures.
example: install
	$(BIN)/vprbench ablate recipes/quickstart.yaml
	$(BIN)/vprbench report --recipe quickstart --out results/examples/quickstart --queries 0,200,400

lint: install
	$(BIN)/ruff check vprbench tests benchmarks scripts
	$(BIN)/ruff format --check vprbench tests benchmarks scripts

clean:
	rm -rf $(VENV) build *.egg-info
