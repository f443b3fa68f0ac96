# Every target bootstraps .venv from nothing; Python 3.11+ is the only prerequisite.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: all venv test lint demo bench clean docs

all: test

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit("edge-agent needs Python 3.11+") if sys.version_info < (3, 11) else None'
	@echo "==> setting up $(VENV): installing the pinned dependencies from PyPI (about a minute the first time)"
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@$(BIN)/python -m pip install --quiet --upgrade pip
	@$(BIN)/python -m pip install --quiet -e '.[test,lint,uvloop]'
	@touch $(STAMP)
	@echo "==> $(VENV) ready"

venv: $(STAMP)

# -n auto: one worker per core; worksteal moves queued tests off a worker busy with the 75 s demo.
test: $(STAMP)
	@echo "==> running the test suite on every core (the demo test alone takes about 80 s)"
	$(BIN)/python -m pytest -q -n auto --dist worksteal

# docs/cli.md from the argparse definitions, docs/logs.md from the log calls; tests/cli/test_reference.py
# and tests/cli/test_log_events.py fail when they are stale.
docs: $(STAMP)
	$(BIN)/python -m agent.commands.reference
	$(BIN)/python -m agent.commands.log_events

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check agent drivers simulators
	$(BIN)/mypy

demo: $(STAMP)
	$(BIN)/python -m agent demo --seconds $${DEMO_SECONDS:-0}

bench: $(STAMP)
	$(BIN)/python bench/derive.py
	$(BIN)/python bench/outbox.py
	$(BIN)/python bench/poll.py
	$(BIN)/python bench/e2e.py
	$(BIN)/python bench/reconnect.py
	$(BIN)/python bench/alarms.py --minutes 4
	$(BIN)/python bench/panel.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache build *.egg-info
