# Two commands: `make run` and `make test`. Both create .venv (Python 3.11) and install on first use;
# `make test` also installs Debian's chromium (apt-get) for the browser test when it is missing.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
CHROMIUM := /usr/bin/chromium

.PHONY: install browser test run clean

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q -e '.[dev]'
	touch $(STAMP)

# The browser test (tests/integration/test_browser.py) drives $(CHROMIUM) through Playwright; Playwright's
# own browser download is never used. Nothing happens when chromium is already installed.
browser:
	@if [ ! -x $(CHROMIUM) ]; then \
	  if ! command -v apt-get >/dev/null; then \
	    echo "make: $(CHROMIUM) is missing and apt-get is not available: install chromium yourself (the browser test skips without it, and fails under CI=true)"; \
	  else \
	    echo "make: $(CHROMIUM) is missing; installing Debian's chromium for the browser test (apt-get)"; \
	    if [ "$$(id -u)" -eq 0 ]; then sudo=; else sudo=sudo; fi; \
	    $$sudo apt-get update -qq && \
	    $$sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium fonts-liberation && \
	    $(CHROMIUM) --version; \
	  fi; \
	fi

test: install browser
	$(BIN)/ruff check .
	$(BIN)/python -m pytest

run: install
	$(BIN)/python -m services.dev

clean:
	rm -rf $(VENV) var
