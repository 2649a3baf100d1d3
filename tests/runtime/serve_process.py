"""`thunder serve` as a child process, for tests whose clients are synchronous.

The official ``openai`` client and agent frameworks block their thread, so
they cannot share an event loop with an in-process ``ProxyServer``; these
tests start the real command line instead, exactly as a user would:

    with thunder_serve([backend.url], "--policy", "thunder") as proxy:
        openai.OpenAI(base_url=proxy.url + "/v1", api_key="unused")

On leaving, SIGTERM stops it; its export (``--export``) and log are then
available in ``proxy.export_dir`` and ``proxy.log_path``.
"""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx


@dataclass(frozen=True, slots=True)
class ServeProcess:
    url: str  # base URL of the proxy, no trailing slash
    export_dir: Path
    log_path: Path


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextmanager
def thunder_serve(backends: list[str], *args: str, workdir: Path, ready_s: float = 30.0) -> Iterator[ServeProcess]:
    """Run ``thunder serve`` on a free port until the block ends; fail if it never gets healthy."""
    port = free_port()
    proxy = ServeProcess(f"http://127.0.0.1:{port}", workdir / "export", workdir / "serve.log")
    command = [sys.executable, "-m", "thunder.cli", "serve", "--backends", ",".join(backends), "--port", str(port),
               "--export", str(proxy.export_dir), "--log-level", "WARNING", *args]
    with proxy.log_path.open("wb") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
    try:
        _wait_healthy(proxy, process, ready_s)
        yield proxy
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    assert process.returncode == 0, f"thunder serve exited with {process.returncode}:\n{log_tail(proxy)}"


def _wait_healthy(proxy: ServeProcess, process: subprocess.Popen[bytes], ready_s: float) -> None:
    deadline = time.monotonic() + ready_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"thunder serve exited with {process.returncode}:\n{log_tail(proxy)}")
        try:
            if httpx.get(proxy.url + "/health", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise AssertionError(f"thunder serve not healthy within {ready_s} s:\n{log_tail(proxy)}")


def log_tail(proxy: ServeProcess) -> str:
    return proxy.log_path.read_text(errors="replace")[-4000:] if proxy.log_path.exists() else ""
