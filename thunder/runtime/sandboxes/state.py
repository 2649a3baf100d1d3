"""The live tool host's records: sandbox states, per-program environments, teardowns,
the host's configuration and statistics (``LiveToolHost`` in ``tool_host.py`` changes them)."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from thunder.core.environments import EnvResources
from thunder.core.program import ProgramId
from thunder.runtime.sandboxes.provider import Allocation, SandboxSpec


class SandboxState(Enum):
    DECLARED = "declared"  # known, nothing held
    PENDING = "pending"  # asked for; waits for room on the host
    PREPARING = "preparing"  # directory and port held, setup running
    READY = "ready"
    RECLAIMED = "reclaimed"  # torn down; may be prepared again while its program lives
    FAILED = "failed"  # setup failed; see ``error``


HOLDING = (SandboxState.PREPARING, SandboxState.READY)
UNPREPARED = (SandboxState.DECLARED, SandboxState.RECLAIMED)


@dataclass(frozen=True, slots=True)
class SandboxHostConfig:
    """Capacities of the live host. None: unlimited."""

    disk_capacity_bytes: int | None = None
    setup_timeout_s: float = 600.0
    reclaim_retry_s: float = 0.5  # first retry delay of a failed teardown; doubles up to 30 s
    shutdown_timeout_s: float = 30.0  # how long shutdown keeps retrying teardowns


@dataclass(slots=True, eq=False)
class Sandbox:
    """Mechanism state of one declared sandbox (mutable, never shown to a policy)."""

    sandbox_id: str
    program_id: ProgramId
    spec: SandboxSpec
    state: SandboxState = SandboxState.DECLARED
    instance: Allocation | None = None
    error: str | None = None
    disk_bytes: int = 0  # measured, last walk
    ready_s: float | None = None
    prepared: int = 0  # instances started so far


@dataclass(slots=True, eq=False)
class ProgramEnv:
    """One program's sandboxes, attached resources and timestamps."""

    sandboxes: list[Sandbox] = field(default_factory=list)
    attached: list[dict[str, str]] = field(default_factory=list)
    released: bool = False
    needed_since_s: float | None = None
    last_active_s: float = 0.0
    state_since_s: float = 0.0


@dataclass(slots=True, eq=False)
class Teardown:
    """An instance being torn down (or whose teardown failed and is retried)."""

    sandbox_id: str
    instance: Allocation
    quota_bytes: int
    attempts: int = 0
    problems: list[str] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class ToolHostStats:
    """What ``/metrics`` shows about sandboxes."""

    sandboxes_live: int
    disk_bytes: int  # measured under the live instances and unfinished teardowns
    disk_reserved_bytes: int
    ports_held: int
    preparing: int
    pending: int
    teardowns: int
    reclaims: int
    reclaim_failures: int
    setup_failures: int
    sigkills: int
    attached: int


def describe_sandbox(sandbox: Sandbox) -> dict[str, Any]:
    instance = sandbox.instance
    return {"sandbox_id": sandbox.sandbox_id, "program_id": sandbox.program_id, "state": sandbox.state.value,
            "path": str(instance.path) if instance is not None else None,
            "port": instance.port if instance is not None else None, "error": sandbox.error,
            "disk_bytes": sandbox.disk_bytes, "disk_quota_bytes": sandbox.spec.disk_quota_bytes,
            "instances": sandbox.prepared}


def sandboxes_resources(members: list[Sandbox]) -> EnvResources:
    """A program's sandboxes as one environment in the policy's terms: quotas and ports add up,
    setup takes as long as the slowest."""
    return EnvResources(disk_bytes=sum(s.spec.disk_quota_bytes for s in members), ports=len(members),
                        processes=sum(1 for s in members if s.spec.process_command),
                        setup_s=max(s.spec.expected_setup_s for s in members))
