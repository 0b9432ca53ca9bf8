# The two commands of README.md. Each does its own set-up: it makes .venv if missing and installs into it.
SHELL := /bin/bash
VENV  ?= .venv
BIN   := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test install check-sync

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || python3 -m venv $(VENV)
	@$(BIN)/python -c 'import sys; assert sys.version_info[:2] == (3, 11), f"Python 3.11 is needed, found {sys.version}"'
	$(BIN)/pip install -q torch==2.14.1 torchvision==0.29.1
	$(BIN)/pip install -q -e '.[dev]'
	@touch $@

install: $(STAMP)

# Main job: every lesson on the embedded data, small size, into results/ (results/report.md).
run: $(STAMP)
	$(BIN)/lesson7 all --out results

# All tests: notebooks and library in sync and clean, every notebook under nbdev-test, then pytest.
# One nbdev-test process per notebook: a single nbdev-test runs all notebooks in one process, each on a thread of its
# own, and every thread that has run torch's OpenMP code keeps its worker threads; once libgomp manages more threads
# than there are CPUs it cuts its spin-waits short, and every later parallel op pays for it (measured: 02_unet took
# 388 s after 01 in one process, 231 s alone).
test: $(STAMP) check-sync
	@fail=; for nb in nbs/[0-9]*.ipynb; do $(BIN)/nbdev-test --timing $$nb || fail="$$fail $$nb"; done; \
	if [ -n "$$fail" ]; then echo "nbdev-test failed:$$fail"; exit 1; fi
	$(BIN)/pytest -q tests

check-sync: $(STAMP)
	@state() { git status --porcelain; git diff; }; before="$$(state)"; \
	$(BIN)/nbdev-export && $(BIN)/nbdev-clean; \
	if [ "$$before" != "$$(state)" ]; then \
	  echo "nbdev-export/nbdev-clean changed files: the notebooks and lessons_lib/ are out of sync, or a notebook is not clean."; \
	  echo "Commit what they changed (lessons_lib/*.py is generated from nbs/):"; git status --short; exit 1; fi
	@echo "notebooks and library are in sync"
