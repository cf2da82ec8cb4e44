# Two commands (see README): `make view` and `make test`. Both install into ./.venv first.
PYTHON ?= python3
VENV   ?= .venv
BIN     = $(VENV)/bin

.PHONY: install view test browser

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --upgrade pip
	$(BIN)/pip install -e '.[dev]'
	touch $@

# Debian's Chromium for the real-browser tests (they skip, saying why, if it cannot be had).
browser:
	@command -v chromium >/dev/null 2>&1 || { [ "$$(id -u)" = 0 ] && apt-get update -qq && apt-get install -y -qq chromium >/dev/null; } || echo "chromium not installed: browser tests will be skipped"

view: install
	$(BIN)/fsm-view $(ARGS)

test: install browser
	$(BIN)/python -m pytest -q $(ARGS)
