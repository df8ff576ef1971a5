# nanobanana-magic: `make demo` and `make test` are all a fresh machine needs.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-dev

.PHONY: demo test lint test-oldest bench lab install clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e ".[dev]"
	touch $@

install: $(STAMP)

demo: $(STAMP)  ## start the emulator, run notebooks/*.ipynb headless, write build/*.ipynb and *.html
	$(PY) scripts/run_notebooks.py notebooks/*.ipynb

test: lint  ## the design checks, then the whole test suite (unit, emulator, IPython, real kernels, browser)
	$(PY) -m pytest $(PYTEST_ARGS)

lint: $(STAMP)  ## layer contracts (import-linter), ruff check and format, mypy on the package
	$(VENV)/bin/lint-imports
	$(VENV)/bin/ruff check nanobanana_magic tests scripts benchmarks
	$(VENV)/bin/ruff format --check nanobanana_magic tests scripts benchmarks
	$(VENV)/bin/mypy

test-oldest:  ## unit, IPython and kernel tests on the oldest versions pyproject.toml allows (.venv-oldest)
	PYTHON=$(PYTHON) bash scripts/oldest_deps.sh $(PYTEST_ARGS)

bench: $(STAMP)  ## benchmarks against the emulator; writes benchmarks/RESULTS.md
	$(PY) -m compileall -q nanobanana_magic  # as pip install does: time imports, not compiles
	$(PY) benchmarks/run.py

lab: $(STAMP)  ## JupyterLab on notebooks/, talking to a local emulator
	$(PY) scripts/lab.py

clean:
	rm -rf build .pytest_cache nanobanana_outputs
