# Two commands do all the set-up: `make demo` and `make test`. Each creates .venv when missing.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DEV_STAMP := $(VENV)/.installed-dev

.PHONY: demo test lint bench mutate clean

# The venv is made without pip, and the pip running here installs the newest pip into it: ensurepip would
# unpack and compile its bundled pip and setuptools first (7 s of a cold `make demo`'s 30 on a 2-core machine,
# before the upgrade). Without a pip here (or one older than 22.3, which lacks --python): ensurepip.
$(BIN)/python:
	$(PYTHON) -m venv --without-pip $(VENV)
	$(PYTHON) -m pip --python $(BIN)/python install --quiet --upgrade pip 2>/dev/null \
		|| { $(BIN)/python -m ensurepip --default-pip >/dev/null && $(BIN)/python -m pip install --quiet --upgrade pip; }

# `make demo` needs the runtime dependencies only; the test tooling (pytest, mypy, playwright, moto...) is
# installed by the targets that use it
# --no-compile: Python compiles each module the first time it is imported instead of pip compiling all of them
# now (botocore, cryptography...: 4 s of a cold `make demo`; the demo's first run is no slower). That needs
# Python to write what it compiles: where the environment says PYTHONDONTWRITEBYTECODE (CI images, Docker
# habits) every process would compile all it imports anew, 1.4 s of each `reelflow` command's 2 s here, so
# the commands make runs (demo, the tests and the processes they start) write their bytecode.
unexport PYTHONDONTWRITEBYTECODE
$(STAMP): $(BIN)/python pyproject.toml
	$(BIN)/python -m pip install --quiet --no-compile -e .
	touch $(STAMP)

$(DEV_STAMP): $(STAMP)
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(DEV_STAMP)

demo: $(STAMP)
	$(BIN)/reelflow demo

test: $(DEV_STAMP)
	@# the browser tests (tests/test_ui_browser.py) drive Debian's Chromium: install it when missing (as root)
	@if [ ! -x /usr/bin/chromium ] && command -v apt-get >/dev/null && [ "$$(id -u)" = 0 ]; then \
		echo "installing chromium for the browser tests"; \
		DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends chromium >/dev/null \
		|| { apt-get update >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends chromium >/dev/null; } \
		|| echo "could not install chromium: the browser tests will say so"; \
	fi
	$(BIN)/python -m pytest -q
	$(BIN)/ruff check src tests bench
	$(BIN)/mypy

lint: $(DEV_STAMP)
	$(BIN)/ruff check src tests bench
	$(BIN)/mypy

mutate: $(DEV_STAMP)
	@# one dangerous one-line change at a time, in a copy of the tree; every one must make a test fail
	$(BIN)/python bench/mutate.py -j 4

bench: $(DEV_STAMP)
	$(BIN)/python bench/overhead.py
	$(BIN)/python bench/inflight.py

clean:
	rm -rf $(VENV) .reelflow .pytest_cache .mypy_cache .ruff_cache
