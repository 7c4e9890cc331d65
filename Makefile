VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
# The exact versions we develop and test on; pyproject.toml only states ranges.
CONSTRAINTS ?= constraints.txt
INSTALL := $(PIP) install -q -c $(CONSTRAINTS)
PYTEST_ARGS ?=

.PHONY: demo test test-isa lint install install-test clean

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

# What depends on the CPU's instruction set (INT8 kernels, the demo's trained numbers) again on
# CPUs without VNNI, emulated: AVX2 only (Haswell to Coffee Lake, Zen 1-3) and AVX-512 without
# VNNI (Skylake). oneDNN and ATen honour these caps, so every run proves the no-VNNI branch.
ISA_TESTS ?= tests/quant tests/cli/test_demo.py
test-isa: install-test
	ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2 $(PY) -m pytest -q $(ISA_TESTS)
	ONEDNN_MAX_CPU_ISA=AVX512_CORE $(PY) -m pytest -q $(ISA_TESTS)

# Gates on the code itself: ruff's rules and mypy --strict (configured in pyproject.toml).
lint: install-test
	$(VENV)/bin/ruff check convdoctor tests
	$(VENV)/bin/ruff format --check convdoctor tests
	$(VENV)/bin/mypy --strict convdoctor

clean:
	rm -rf $(VENV) build *.egg-info
