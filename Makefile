# contrastkit — set-up and checks. `make demo` and `make test` are all a new machine needs.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
FMNIST := /usr/share/datasets/fashion-mnist
DEMO_ARGS ?=

.PHONY: demo test lint docs unit install install-test fashion-mnist chromium bench clean

# DEMO_ARGS: extra arguments for the demo run (the docs tests shorten it with them)
demo: install fashion-mnist
	$(BIN)/contrastkit train $(DEMO_ARGS)

test: install-test fashion-mnist chromium lint docs unit

lint:
	$(BIN)/ruff check src tests benchmarks tools
	$(BIN)/mypy
	$(BIN)/python tools/check_imports.py

# the API reference from the docstrings (pdoc): build/reference/index.html; a warning fails it
docs: install-test
	$(BIN)/python tools/build_reference.py build/reference

# two workers, one test file each at a time (the longest first: tests/conftest.py): most tests wait
# on subprocesses or run one thread
unit:
	$(BIN)/python -m pytest -q -n 2 --dist loadfile --no-loadscope-reorder --durations=25

install: $(BIN)/.installed
install-test: $(BIN)/.installed-test

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

$(BIN)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install -q -e .
	touch $@

$(BIN)/.installed-test: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install -q -e ".[test,text,faiss,export,timm,serve,trackers,rl,sweep]"
	touch $(BIN)/.installed $@

# Fashion-MNIST from Debian, where apt is available (optional: tests that need it skip without it).
fashion-mnist:
	@if [ ! -d $(FMNIST) ] && command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ]; then \
		echo "installing dataset-fashion-mnist (Debian)"; \
		(apt-get install -y -qq dataset-fashion-mnist >/dev/null 2>&1 || \
		 (apt-get update -qq >/dev/null 2>&1 && apt-get install -y -qq dataset-fashion-mnist >/dev/null 2>&1)) || \
		echo "could not install dataset-fashion-mnist; Fashion-MNIST tests will be skipped"; \
	fi

# headless Chromium + its driver from Debian, for the browser tests of `contrastkit serve`
# (optional: those tests skip without it)
chromium:
	@if ! command -v chromedriver >/dev/null 2>&1 && command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ]; then \
		echo "installing chromium and chromium-driver (Debian)"; \
		(apt-get install -y -qq chromium chromium-driver >/dev/null 2>&1 || \
		 (apt-get update -qq >/dev/null 2>&1 && apt-get install -y -qq chromium chromium-driver >/dev/null 2>&1)) || \
		echo "could not install chromium; the browser tests will be skipped"; \
	fi

bench: install
	$(BIN)/python -m pip install -q -e ".[bench]"

clean:
	rm -rf $(VENV) build dist src/*.egg-info .mypy_cache .ruff_cache .pytest_cache
