"""Several mini-swe-agent agents at once through ``thunder serve``, one program each.

Each agent works on a small local task in its own directory (shell commands
run there, no Docker) and talks to the model through LiteLLM. The program id
is plain model configuration: LiteLLM forwards ``extra_body`` (here for even
agents) or ``extra_headers`` (odd agents) to the proxy as they are. Even agents
also end their program with a three-line hook (``ReleasingAgent``); odd agents
have none and are reclaimed by the proxy's ``--idle-timeout-s``. At the end the
script prints each agent's program profile, read from the proxy's tables.

    thunder serve --backends http://127.0.0.1:8000 --policy thunder --idle-timeout-s 5 --port 8300
    python examples/mini_swe_agent_batch.py --proxy http://127.0.0.1:8300 --model MODEL --agents 4

Needs ``pip install mini-swe-agent`` (or thunder's ``agents`` extra). The
JSON summary goes to ``--out`` if given.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import os
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

# LiteLLM fetches a model price list from the network at import unless told not to.
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
os.environ.setdefault("MSWEA_SILENT_STARTUP", "1")

import httpx  # noqa: E402
import litellm  # noqa: E402
import yaml  # noqa: E402
from minisweagent import package_dir  # noqa: E402
from minisweagent.agents.default import DefaultAgent  # noqa: E402
from minisweagent.environments.local import LocalEnvironment  # noqa: E402
from minisweagent.models.litellm_textbased_model import LitellmTextbasedModel  # noqa: E402

litellm.suppress_debug_info = True  # no provider banner on each unpriced call

TASKS = (
    ("Create a file hello.txt that contains the word hello.", {}),
    ("numbers.txt holds one number per line. Write their sum into sum.txt.", {"numbers.txt": "3\n5\n8\n"}),
    ("greet.py prints 'helo'. Fix the typo so it prints 'hello'.", {"greet.py": "print('helo')\n"}),
    ("Rename notes.md to README.md.", {"notes.md": "# notes\n"}),
)


class ReleasingAgent(DefaultAgent):
    """A DefaultAgent that ends its program at the proxy when its run ends, however it ends."""

    def __init__(self, *args: Any, release_url: str, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.release_url = release_url

    def run(self, task: str = "", **kwargs: Any) -> dict:
        try:
            return super().run(task, **kwargs)
        finally:
            httpx.post(self.release_url, timeout=10)


def make_agent(index: int, proxy: str, model: str, step_limit: int, max_tokens: int, workdir: Path) -> DefaultAgent:
    config = yaml.safe_load((Path(package_dir) / "config" / "mini_textbased.yaml").read_text())
    program_id = f"mini-{index}"
    # The program id as model configuration: in a YAML config this is the same two lines
    # under model.model_kwargs.
    attach = ({"extra_body": {"program_id": program_id}} if index % 2 == 0
              else {"extra_headers": {"X-Program-Id": program_id}})
    model_config = config["model"] | {
        "model_name": f"hosted_vllm/{model}",
        "cost_tracking": "ignore_errors",  # a local model has no price
        "model_kwargs": config["model"].get("model_kwargs", {}) | {
            "api_base": f"{proxy}/v1", "api_key": "unused", "max_tokens": max_tokens, "temperature": 0.0,
            "num_retries": 0, **attach},
    }
    agent_config = config["agent"] | {"step_limit": step_limit, "max_consecutive_format_errors": 0}
    env = LocalEnvironment(cwd=str(workdir), timeout=10, **config.get("environment", {}))
    if index % 2 == 0:
        return ReleasingAgent(LitellmTextbasedModel(**model_config), env, release_url=f"{proxy}/programs/"
                              f"{program_id}/release", **agent_config)
    return DefaultAgent(LitellmTextbasedModel(**model_config), env, **agent_config)


def run_agent(index: int, args: argparse.Namespace, root: Path) -> dict[str, Any]:
    task, files = TASKS[index % len(TASKS)]
    workdir = root / f"task-{index}"
    workdir.mkdir()
    for name, text in files.items():
        (workdir / name).write_text(text)
    agent = make_agent(index, args.proxy, args.model, args.step_limit, args.max_tokens, workdir)
    started = time.monotonic()
    result = agent.run(task)
    return {"program_id": f"mini-{index}", "exit_status": result.get("exit_status", ""),
            "model_calls": agent.n_calls, "messages": len(agent.messages),
            "ends_by": "release hook" if isinstance(agent, ReleasingAgent) else "idle timeout",
            "wall_s": round(time.monotonic() - started, 2)}


def table(proxy: str, name: str) -> list[dict[str, str]]:
    response = httpx.get(f"{proxy}/programs/export.csv", params={"table": name}, timeout=10)
    response.raise_for_status()
    return list(csv.DictReader(io.StringIO(response.text)))


def wait_until_no_programs(proxy: str, prefix: str, timeout_s: float) -> list[str]:
    """Programs of ours still known to the proxy after ``timeout_s`` (empty: all ended)."""
    deadline = time.monotonic() + timeout_s
    while True:
        left = [p["program_id"] for p in httpx.get(f"{proxy}/programs", timeout=10).json()["programs"]
                if p["program_id"].startswith(prefix)]
        if not left or time.monotonic() > deadline:
            return left
        time.sleep(0.5)


def profiles(proxy: str) -> dict[str, dict[str, Any]]:
    """Per program: steps, tokens and times from the proxy's steps, programs and decisions tables."""
    out: dict[str, dict[str, Any]] = {}
    for row in table(proxy, "programs"):
        out[row["program_id"]] = {"steps": int(row["steps"]), "queue_s": round(float(row["queue_s"] or 0), 3),
                                  "pauses": int(row["pauses"]), "finished_s": row["finished_s"],
                                  "prompt_tokens": 0, "cached_tokens": 0, "output_tokens": 0, "llm_s": 0.0,
                                  "tool_s": 0.0, "ended_by": "release"}
    for row in table(proxy, "steps"):
        entry = out.get(row["program_id"])
        if entry is None:
            continue
        for key in ("prompt_tokens", "cached_tokens", "output_tokens"):
            entry[key] += int(row[key] or 0)
        entry["llm_s"] += float(row["done_s"]) - float(row["dispatched_s"])
        entry["tool_s"] += float(row["tool_s"] or 0)
    for row in table(proxy, "decisions"):
        if row["action"] == "reclaim" and row["program_id"] in out:
            out[row["program_id"]]["ended_by"] = "idle reclaim"
    for entry in out.values():
        entry["kv_hit_rate"] = round(entry["cached_tokens"] / entry["prompt_tokens"], 3) if entry["prompt_tokens"] else 0.0
        entry["llm_s"], entry["tool_s"] = round(entry["llm_s"], 3), round(entry["tool_s"], 3)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--proxy", default="http://127.0.0.1:8300", help="thunder serve's base URL")
    parser.add_argument("--model", required=True, help="the served model name")
    parser.add_argument("--agents", type=int, default=4)
    parser.add_argument("--step-limit", type=int, default=4, help="model calls per agent at most")
    parser.add_argument("--max-tokens", type=int, default=32, help="tokens per model answer at most")
    parser.add_argument("--reclaim-wait-s", type=float, default=60.0,
                        help="how long to wait for the proxy to reclaim agents that do not release")
    parser.add_argument("--out", type=Path, help="write the JSON summary here")
    args = parser.parse_args()
    if args.agents < 1 or args.step_limit < 1 or args.max_tokens < 1:
        parser.error("--agents, --step-limit and --max-tokens must be at least 1")
    try:
        health = httpx.get(f"{args.proxy}/health", timeout=10)
    except httpx.HTTPError as exc:
        parser.error(f"no thunder serve at {args.proxy}: {exc}")
    if health.status_code != 200:
        parser.error(f"thunder serve at {args.proxy} has no healthy backend: {health.text}")
    with tempfile.TemporaryDirectory(prefix="mini-tasks-") as root:
        with ThreadPoolExecutor(max_workers=args.agents) as pool:
            agents = list(pool.map(lambda i: run_agent(i, args, Path(root)), range(args.agents)))
    left = wait_until_no_programs(args.proxy, "mini-", args.reclaim_wait_s)
    summary = {"agents": agents, "programs_left": left, "profiles": profiles(args.proxy)}
    text = json.dumps(summary, indent=2)
    if args.out:
        args.out.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
