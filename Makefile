VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
# The exact versions we develop and test on; pyproject.toml only states ranges.
CONSTRAINTS ?= constraints.txt
INSTALL := $(PIP) install -q -c $(CONSTRAINTS)
PYTEST_ARGS ?=

.PHONY: demo test lint install install-test clean

$(PY):
	python3 -m venv $(VENV)
	$(PIP) install -q --upgrade pip

# The demo shows static INT8, which needs torchao: the `quant` extra.
install: $(PY)
	$(INSTALL) -e '.[quant]'

install-test: $(PY)
	$(INSTALL) -e '.[test]'

demo: install
	$(VENV)/bin/convdoctor demo

test: install-test
	$(PY) -m pytest $(PYTEST_ARGS)

# Gates on the code itself: ruff's rules and mypy --strict (configured in pyproject.toml).
lint: install-test
	$(VENV)/bin/ruff check convdoctor tests
	$(VENV)/bin/ruff format --check convdoctor tests
	$(VENV)/bin/mypy --strict convdoctor

clean:
	rm -rf $(VENV) build *.egg-info
