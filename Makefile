VENV ?= .venv
PYTHON := $(VENV)/bin/python
PYTEST_ARGS ?= -m "not expensive" -n 2

.PHONY: install demo demo-tabular test test-all lint format type doc benchmark clean

install: $(VENV)/.installed

$(VENV)/.installed: setup.cfg scripts/install.sh
	bash scripts/install.sh $(VENV)
	touch $@

# README command one: the main job (meta-train + meta-test on the built-in family; runs/safemeta/). --resume: a second
# `make demo` continues an interrupted run or reports the finished one instead of refusing the existing folder
demo: install
	$(PYTHON) -m sb3_safemeta --resume

# exact tabular chain of safe adaptation steps (Corollary 1), seconds
demo-tabular: install
	$(PYTHON) examples/tabular_anytime_safety.py

# README command two: the CI test suite (slow tests are marked `expensive`)
test: install
	$(PYTHON) -m pytest $(PYTEST_ARGS)

test-all: install
	$(PYTHON) -m pytest -n 2

lint: install
	$(VENV)/bin/ruff check .
	$(PYTHON) scripts/check_import_cycles.py

format: install
	$(VENV)/bin/ruff format .

type: install
	$(VENV)/bin/mypy sb3_safemeta

# speed ratios measured side by side (not timed tests); see docs/modules/*.md for recorded numbers
benchmark: install
	$(PYTHON) benchmarks/bench_safe_adapter.py
	$(PYTHON) benchmarks/bench_meta_iteration.py
	$(PYTHON) benchmarks/bench_envs.py

# Sphinx site from docs/ (Markdown through myst-parser); needs the [docs] extra
doc: install
	$(VENV)/bin/pip install --quiet -e ".[docs]"
	$(VENV)/bin/sphinx-build -W --keep-going -b html docs docs/_build/html

clean:
	rm -rf $(VENV) build dist *.egg-info .pytest_cache .ruff_cache .mypy_cache
