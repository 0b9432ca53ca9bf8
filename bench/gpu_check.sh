#!/usr/bin/env bash
# The prepared GPU check (bench/gpu_check.py: what it measures and prints), from any folder, in the project's .venv.
# On a machine without CUDA it stops at once with one line; `--smoke` runs every part on the CPU at tiny sizes instead.
cd "$(dirname "$0")/.." || exit 2
PY=.venv/bin/python; [ -x "$PY" ] || PY=python3
exec "$PY" bench/gpu_check.py "$@"
