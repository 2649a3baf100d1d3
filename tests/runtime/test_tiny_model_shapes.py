"""scripts/build_tiny_model.py: the default shape is the 1 KiB-per-token model the
live tests assume, and larger shapes scale KV bytes per token as documented."""

from __future__ import annotations

import importlib.util

import pytest

from thunder.runtime.engines.launcher import REPO_ROOT

_spec = importlib.util.spec_from_file_location("build_tiny_model", REPO_ROOT / "scripts" / "build_tiny_model.py")
assert _spec is not None and _spec.loader is not None
build = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(build)


def kv_bytes(config: dict) -> int:
    """What vLLM allocates per token: K and V, every layer, every KV head, bf16."""
    return 2 * config["num_hidden_layers"] * config["num_key_value_heads"] * config["head_dim"] * 2


def test_default_shape_is_one_kib_per_token() -> None:
    config = build.model_config(4096, 8192)
    assert kv_bytes(config) == build.kv_bytes_per_token(build.LAYERS, build.HIDDEN) == 1024
    assert (config["num_hidden_layers"], config["hidden_size"], config["head_dim"]) == (2, 128, 32)


def test_wider_and_deeper_shapes() -> None:
    config = build.model_config(4096, 8192, layers=8, hidden=512, heads=8)
    assert config["head_dim"] == 64 and config["intermediate_size"] == 2048
    assert kv_bytes(config) == build.kv_bytes_per_token(8, 512) == 16 * 1024


@pytest.mark.parametrize("shape", [(0, 128, 4), (2, 130, 4), (2, 128, 16)])
def test_bad_shapes_are_refused_with_a_reason(shape: tuple[int, int, int]) -> None:
    with pytest.raises(SystemExit, match="bad shape"):
        build.model_config(4096, 8192, *shape)
