"""Paths to the converter fixtures: small copies of the public recorded runs."""

from __future__ import annotations

from pathlib import Path

import pytest

FIXTURES = Path(__file__).parents[1] / "fixtures"


@pytest.fixture
def mini_swe_dir() -> Path:
    """Four mini-swe-agent SWE-bench runs (deepseek-chat), in their original folder layout."""
    return FIXTURES / "mini-swe-agent"


@pytest.fixture
def openhands_file() -> Path:
    """Five OpenHands OpenAgentSafety runs (gpt-4o); one never started."""
    return FIXTURES / "openhands" / "output.sample.jsonl"


@pytest.fixture
def tau_file() -> Path:
    """Three tau-bench airline runs (gpt-4o)."""
    return FIXTURES / "tau-bench" / "gpt-4o-airline.sample.json"


@pytest.fixture
def swe_profile_dir() -> Path:
    """Five SWE-agent timing profiles (GLM-4.5-FP8 on 8x H200): two of the 1-worker batch, three of
    the 32-worker batch, each batch folder with its run_batch.config.yaml."""
    return FIXTURES / "swe-agent-profile"
