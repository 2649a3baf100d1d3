#!/usr/bin/env bash
# The whole test suite, from a fresh clone: installs thunder and its test
# dependencies into .venv, then runs pytest. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."

python3 -m venv .venv
.venv/bin/python -m pip install --quiet --upgrade pip
.venv/bin/python -m pip install --quiet -e '.[dev]'

.venv/bin/python -m pytest -q "$@"
