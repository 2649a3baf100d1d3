"""`thunder serve` starts the proxy from the command line, serves, and exports
its tables when stopped with SIGTERM."""

from __future__ import annotations

import asyncio
import csv
import signal
import socket
import sys

import aiohttp
from fake_backend import FakeBackend


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_serve_command_proxies_and_exports_on_sigterm(tmp_path):
    async def scenario():
        fake = FakeBackend()
        await fake.start()
        port = free_port()
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "thunder.cli", "serve", "--backends", fake.url, "--policy", "thunder-paper",
            "--port", str(port), "--option", "decay_base=1", "--export", str(tmp_path / "tables"),
            "--log-level", "WARNING", stderr=asyncio.subprocess.PIPE)
        try:
            async with aiohttp.ClientSession(f"http://127.0.0.1:{port}") as client:
                for _ in range(300):
                    try:
                        async with client.get("/health") as response:
                            if response.status == 200:
                                break
                    except aiohttp.ClientError:
                        await asyncio.sleep(0.05)
                body = {"model": "fake", "messages": [{"role": "user", "content": "hi there"}],
                        "program_id": "cli-1"}
                async with client.post("/v1/chat/completions", json=body) as response:
                    assert response.status == 200
                async with client.post("/programs/cli-1/release") as response:
                    assert response.status == 200
        finally:
            process.send_signal(signal.SIGTERM)
            _, stderr = await asyncio.wait_for(process.communicate(), 20)
            await fake.stop()
        assert process.returncode == 0, stderr.decode()

    asyncio.run(scenario())
    steps = list(csv.DictReader((tmp_path / "tables" / "steps.csv").open()))
    assert [row["program_id"] for row in steps] == ["cli-1"]
    programs = list(csv.DictReader((tmp_path / "tables" / "programs.csv").open()))
    assert programs[0]["program_id"] == "cli-1" and programs[0]["steps"] == "1"
    decisions = list(csv.DictReader((tmp_path / "tables" / "decisions.csv").open()))
    assert [row["action"] for row in decisions] == ["restore"]
