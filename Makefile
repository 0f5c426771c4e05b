# Two entry points that work on a fresh machine (see README.md):
#   make run    set up .venv, then run the main job
#   make test   set up .venv, then lint, type-check and run the tests
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# Installed first and explicitly, so pip takes these wheels instead of resolving the newest
# release (several GB of CUDA packages) from the registry. Override for another platform.
TORCH ?= torch==2.14.1 torchvision==0.29.1
# ExecuTorch without its declared dependencies (heavy ones for other backends: coremltools,
# scikit-learn, hydra, tokenizers...); what its XNNPACK path imports is the `deploy` extra.
EXECUTORCH ?= executorch==1.5.1
# Development machines have a real CIFAR-10 copy beside the checkout; use it when present.
# Elsewhere dwsearch looks in its cache directory and downloads the official archive there.
SHARED_CIFAR10 := $(abspath ../shared/datasets/cifar10-jpeg)
ifneq ($(wildcard $(SHARED_CIFAR10)/train),)
export DWSEARCH_DATA_DIR ?= $(SHARED_CIFAR10)
endif
# One pytest process per core, each test file in one of them (its module fixtures made once;
# the real-process worker tests of a file run side by side as before). PYTEST_ARGS= runs serially.
PYTEST_ARGS ?= -n auto --dist loadfile
# The main job runs studies/quick.yaml (a few minutes on a 2-core CPU, real CIFAR-10) and
# writes its report into reports/quick/. STUDY=studies/baseline.yaml runs another; STUDY_ARGS adds options.
STUDY ?= studies/quick.yaml
STUDY_ARGS ?=

.PHONY: setup system-deps run bench test lint typecheck clean

# Real components the tests use: PostgreSQL (many workers on one study) and Chromium (the HTML
# report in a headless browser), from Debian's packages. Skipped where already installed;
# needs root (CI runs as root); otherwise it says what to install, and the tests that need
# them skip (under CI, where CI is set, they fail instead).
DEBIAN_PACKAGES := postgresql chromium
system-deps:
	@missing=""; \
	command -v pg_ctlcluster >/dev/null 2>&1 && ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || missing="$$missing postgresql"; \
	command -v chromium >/dev/null 2>&1 || missing="$$missing chromium"; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ]; then \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing; \
	  else \
	    echo "system-deps: not root; install for the full test suite (Debian):$$missing"; \
	  fi; \
	fi

$(VENV)/.installed: pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet $(TORCH)
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	$(BIN)/python -m pip install --quiet --no-deps $(EXECUTORCH)
	touch $@

setup: $(VENV)/.installed

lint: setup
	$(BIN)/ruff check dwsearch tests

typecheck: setup
	$(BIN)/mypy

test: system-deps lint typecheck
	$(BIN)/python -m pytest $(PYTEST_ARGS)

run: setup
	$(BIN)/dwsearch run-study $(STUDY) $(STUDY_ARGS)
	$(BIN)/dwsearch report $(STUDY)

bench: setup
	$(BIN)/dwsearch bench

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
