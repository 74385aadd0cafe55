# The two commands from the README: `make demo` and `make test`. Both create the venv at .venv first.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: venv demo test test-slow bench lint fmt clean addon

$(STAMP): requirements/base.txt requirements/constraints.txt
	$(PYTHON) -c 'import sys; assert sys.version_info[:2] == (3, 11), "Python 3.11 is required (bpy 5.0.1)"'
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements/base.txt -c requirements/constraints.txt
	touch $(STAMP)

venv: $(STAMP)

demo: venv
	$(PY) -m blender_m2d demo --out out/demo

test: venv
	$(PY) -m ruff check .
	$(PY) -m pytest

test-slow: venv
	$(PY) -m pytest -m "slow"

bench: venv
	$(PY) -m blender_m2d bench

lint: venv
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .

fmt: venv
	$(PY) -m ruff format .
	$(PY) -m ruff check --fix .

# Blender extension zips for this machine's platform (py311 + py313) into dist/ (docs/packaging.md).
addon: venv
	$(PY) build_addon.py --platform current

clean:
	rm -rf out .pytest_cache
