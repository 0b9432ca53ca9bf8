# The two commands of README.md (`make run`, `make test`), and the ones that keep the notebooks' stored outputs true.
# Each does its own set-up: it makes .venv if missing and installs into it.
SHELL := /bin/bash
VENV  ?= .venv
BIN   := $(VENV)/bin
STAMP := $(VENV)/.installed
NBS   := $(sort $(wildcard nbs/[0-9]*.ipynb))

.PHONY: run test test-full lessons docs install check-sync lab

# The exact versions of constraints.txt (pyproject.toml states only lower bounds); every extra, JupyterLab included.
$(STAMP): pyproject.toml constraints.txt
	@test -x $(BIN)/python || python3 -m venv $(VENV)
	@$(BIN)/python -c 'import sys; assert sys.version_info[:2] == (3, 11), f"Python 3.11 is needed, found {sys.version}"'
	$(BIN)/pip install -q torch==2.14.1 torchvision==0.29.1
	$(BIN)/pip install -q -c constraints.txt -e '.[dev,lab,experiments,distributed]'
	@touch $@

install: $(STAMP)

# nbdev-test on every notebook, each in a process of its own (see `test`), with extra flags $(1); lessons write into a
# temporary folder, never into nbs/.
nbdev_each = out=$$(mktemp -d); fail=; for nb in $(NBS); do LESSONS_OUT=$$out $(BIN)/nbdev-test --timing $(1) $$nb || fail="$$fail $$nb"; done; \
	rm -rf $$out; if [ -n "$$fail" ]; then echo "nbdev-test $(1) failed:$$fail"; exit 1; fi

# Main job: every lesson's notebook on the embedded data, small size, into results/ (results/report.md).
run: $(STAMP)
	$(BIN)/lesson7 all --out results

# All tests: notebooks, library and stored outputs in sync; every notebook's units (`nbdev-test`, the `#| slow` training
# cells left out); then pytest, which runs every lesson end to end at the tiny size through `lesson7`.
# One nbdev-test process per notebook: a single nbdev-test runs all notebooks in one process, each on a thread of its
# own, and every thread that has run torch's OpenMP code keeps its worker threads; once libgomp manages more threads
# than there are CPUs it cuts its spin-waits short, and every later parallel op pays for it (measured: 02_unet took
# 388 s after 01 in one process, 231 s alone).
test: $(STAMP) check-sync
	@$(call nbdev_each)
	$(BIN)/pytest -q --durations=25 tests

# Every notebook in full at the small size (the training cells included), writing nothing into nbs/.
test-full: $(STAMP)
	@$(call nbdev_each,--flags slow)

# Re-execute every notebook in place at the small size (one kernel each), storing its outputs and their fingerprint.
# Lessons write into results/ as `make run` does, so lesson 4 starts from lesson 3's generator.
lessons: $(STAMP)
	$(BIN)/nbdev-export
	$(BIN)/lessons-nb refresh $(NBS)
	$(BIN)/nbdev-clean

# Step through the lessons in JupyterLab (on a GPU box: set LESSONS_SIZE=full first, or in the notebook's settings cell).
lab: $(STAMP)
	$(BIN)/jupyter lab nbs/

# The docs site, offline, from the executed notebooks: a page per notebook and per module (open _site/index.html).
docs: $(STAMP)
	$(BIN)/python docs/build_docs.py _site

check-sync: $(STAMP)
	@state() { git status --porcelain; git diff; }; before="$$(state)"; \
	$(BIN)/nbdev-export && $(BIN)/nbdev-clean; \
	if [ "$$before" != "$$(state)" ]; then \
	  echo "nbdev-export/nbdev-clean changed files: the notebooks and lessons_lib/ are out of sync, or a notebook is not clean."; \
	  echo "Commit what they changed (lessons_lib/*.py is generated from nbs/):"; git status --short; exit 1; fi
	@echo "notebooks and library are in sync"
	@$(BIN)/lessons-nb check $(NBS)
