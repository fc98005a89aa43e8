# primia — every target sets itself up: `make demo` and `make test` work on a fresh clone.
#
# GPU users: name a CUDA build of torch and its wheel index, e.g.
#   make setup TORCH_VERSION=2.13.0+cu128 TORCH_PIP_ARGS="--index-url <PyTorch's CUDA wheel index>"

PYTHON ?= python3
VENV ?= .venv
TORCH_VERSION ?= 2.13.0
TORCH_PIP_ARGS ?=
CRYPTEN_VERSION ?= 0.4.1

BIN := $(VENV)/bin
PY := $(BIN)/python
PIP := $(PY) -m pip --disable-pip-version-check
STAMP := $(VENV)/.primia-setup

.PHONY: setup demo test unit lint bench proto layers clean help browser

help:
	@echo "make demo   - a federation of 3 synthetic hospitals with DP-SGD, end to end"
	@echo "make test   - lint, type check and the whole test suite (what CI runs)"
	@echo "make bench  - the benchmarks in benchmarks/, one script per figure"
	@echo "make browser - install Chromium for the dashboard's browser test, when possible"
	@echo "make lint   - ruff, mypy and the layering contract (.importlinter)"
	@echo "make proto  - regenerate the gRPC stubs from protos/"
	@echo "make layers - redraw the layers picture in docs/architecture.md from the code"
	@echo "make setup  - (re)create $(VENV); the other targets run it when needed"

# The venv is rebuilt when the dependency list or this file changes.
$(STAMP): pyproject.toml Makefile
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip setuptools wheel
	@# torch first and pinned, so that nothing later resolves a (CUDA) build from the registry.
	$(PIP) install -q "torch==$(TORCH_VERSION)" $(TORCH_PIP_ARGS)
	$(PIP) install -q -e ".[dev,inference,tracking,dashboard,tune]" "torch==$(TORCH_VERSION)"
	$(PIP) install -q --no-deps "crypten==$(CRYPTEN_VERSION)"
	@touch $(STAMP)

# `make setup` always reinstalls, so a new TORCH_VERSION takes effect on an existing venv.
setup:
	@rm -f $(STAMP)
	@$(MAKE) --no-print-directory $(STAMP)

demo: $(STAMP)
	$(BIN)/primia demo

lint: $(STAMP)
	$(BIN)/ruff check primia tests benchmarks tools
	$(BIN)/ruff format --check primia tests benchmarks tools
	$(BIN)/mypy
	$(BIN)/lint-imports

unit: $(STAMP)
	$(BIN)/pytest tests/unit -q

# The dashboard's browser test drives Debian's Chromium; installed when missing and apt
# can (root), else the test skips saying why. Never fails the build.
browser:
	@test -x /usr/bin/chromium || { test "$$(id -u)" = 0 && apt-get install -y -q chromium chromium-driver >/dev/null 2>&1; } || echo "no chromium: the browser test will skip"

test: lint browser
	$(BIN)/pytest -q

proto: $(STAMP)
	$(PY) tools/protogen.py

layers: $(STAMP)
	$(PY) tools/layers.py

bench: $(STAMP)
	@for script in benchmarks/bench_*.py; do \
		echo "== $$script"; $(PY) $$script || exit 1; \
	done

clean:
	rm -rf $(VENV) runs .pytest_cache .mypy_cache .ruff_cache
