# Targets people and CI run. The first `make run` or `make test` creates
# .venv and installs the project with its dev tools; later runs reuse it.

PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-stamp

.PHONY: install run test lint bench bench-quick clean

install: $(STAMP)

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "actorchat needs Python >= 3.11")'
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check --upgrade pip
	$(PY) -m pip install -q --disable-pip-version-check -e '.[dev]'
	@touch $(STAMP)

run: install
	$(VENV)/bin/actorchat serve $(ARGS)

test: install
	$(PY) -m pytest $(ARGS)

lint: install
	$(VENV)/bin/ruff check actorchat tests bench
	$(VENV)/bin/ruff format --check actorchat tests bench
	$(VENV)/bin/mypy

bench: install
	$(PY) bench/scale.py --n 10000 100000
	$(PY) bench/broadcast.py --n 10000 100000

bench-quick: install
	$(PY) bench/scale.py --n 10000
	$(PY) bench/broadcast.py --n 10000

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .mypy_cache .ruff_cache
