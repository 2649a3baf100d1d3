"""LiveToolHost: the mechanism that applies tool-resource decisions to real sandboxes.

The live twin of ``thunder.sim.tool_host.ToolHost``. A program declares
sandboxes (``declare``); together they are its environment in the policy's
terms (``thunder.core.environments``): their disk quotas and ports add up, and its
state is that of its least prepared sandbox. The host builds the
``ToolHostView`` (``snapshot``) and applies ``PrepareEnv`` / ``ReclaimEnv``
(``apply``); it never decides which. Applying is asynchronous: a decision
changes the state at once and starts a task that does the I/O through the
``LocalSandboxProvider``.

* Disk and ports are reserved (quota, one port per sandbox) from the start of
  preparation until the teardown has finished. A preparation that does not
  fit waits in a FIFO (PENDING), as in the simulator.
* A setup that fails or times out marks its sandbox FAILED (with the error)
  and tears its instance down; a failed sandbox drops out of the environment.
* A teardown that leaves something behind (a process, a bound port, a
  directory) keeps holding it, is retried with backoff, counted
  (``reclaim_failures``) and logged each time, and is reported at shutdown if
  it never succeeds: nothing is leaked silently.
* Resources a client attaches (``attach``) are recorded, listed and counted,
  never destroyed: the proxy did not create them and cannot know who else
  uses them. They are forgotten when the program ends.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections import deque
from types import MappingProxyType
from typing import Any, Callable, Mapping

from thunder.core.environments import EnvState, EnvView, ToolHostView, env_in_use
from thunder.core.program import Program, ProgramId
from thunder.runtime.sandboxes.provider import Allocation, LocalSandboxProvider, NoFreePort, SandboxSpec, SetupFailed
from thunder.runtime.sandboxes.state import (HOLDING, UNPREPARED, ProgramEnv, Sandbox, SandboxState, Teardown,
                                           SandboxHostConfig, ToolHostStats, describe_sandbox, sandboxes_resources)

log = logging.getLogger(__name__)


class LiveToolHost:
    def __init__(self, provider: LocalSandboxProvider, clock: Callable[[], float],
                 config: SandboxHostConfig = SandboxHostConfig()) -> None:
        self.provider = provider
        self.clock = clock  # the cluster's clock, so times in views compare with its own
        self.config = config
        self.programs: dict[ProgramId, ProgramEnv] = {}
        self.sandboxes: dict[str, Sandbox] = {}
        self._ids = itertools.count(1)
        self._pending: deque[str] = deque()
        self._tasks: dict[str, asyncio.Task[None]] = {}  # preparations, by sandbox id
        self._teardowns: dict[str, Teardown] = {}  # by instance name
        self._teardown_tasks: set[asyncio.Task[None]] = set()
        self._changed = asyncio.Event()
        self.reclaims = self.reclaim_failures = self.setup_failures = 0
        self.closing = False

    # -- what clients report -------------------------------------------------------------

    def declare(self, program_id: ProgramId, spec: SandboxSpec, now_s: float, needed: bool) -> Sandbox:
        """A new sandbox of ``program_id``; ``needed``: its program wants it now."""
        env = self.programs.get(program_id)
        if env is None or env.released:  # a released program named again is a new one
            env = self.programs[program_id] = ProgramEnv(last_active_s=now_s, state_since_s=now_s)
        sandbox = Sandbox(f"sb-{next(self._ids)}", program_id, spec)
        env.sandboxes.append(sandbox)
        self.sandboxes[sandbox.sandbox_id] = sandbox
        self.touch(program_id, now_s)
        if needed:
            self.need(program_id, now_s)
        return sandbox

    def attach(self, program_id: ProgramId, resources: tuple[tuple[str, str], ...], now_s: float) -> None:
        """Record (kind, id) resources the client created for the program (never destroyed here)."""
        env = self.programs.get(program_id)
        if env is None or env.released:
            env = self.programs[program_id] = ProgramEnv(last_active_s=now_s, state_since_s=now_s)
        for kind, ident in resources:
            if {"kind": kind, "id": ident} not in env.attached:
                env.attached.append({"kind": kind, "id": ident})
        self.touch(program_id, now_s)

    def need(self, program_id: ProgramId, now_s: float) -> bool:
        """The program waits for its sandboxes now (False: it has none to wait for)."""
        env = self.programs.get(program_id)
        if env is None or not self._members(env):
            return False
        if self._env_state(env) is not EnvState.READY and env.needed_since_s is None:
            env.needed_since_s = now_s
        return True

    def touch(self, program_id: ProgramId, now_s: float) -> None:
        env = self.programs.get(program_id)
        if env is not None:
            env.last_active_s = now_s

    def release(self, program_id: ProgramId) -> bool:
        """The program ended: its sandboxes wait for the policy's teardown (or for shutdown)."""
        env = self.programs.get(program_id)
        if env is None or env.released:
            return False
        env.released, env.needed_since_s, env.attached = True, None, []
        for sandbox in env.sandboxes:
            if sandbox.state is SandboxState.PENDING:
                self._pending.remove(sandbox.sandbox_id)
                sandbox.state = SandboxState.RECLAIMED
        self._forget_if_done(program_id)
        return True

    def idle_programs(self, now_s: float, idle_timeout_s: float, known: Mapping[ProgramId, Any]) -> list[ProgramId]:
        """Programs the cluster does not know (sandbox-only clients) with no call for ``idle_timeout_s``."""
        return [pid for pid, env in self.programs.items()
                if pid not in known and not env.released and now_s - env.last_active_s > idle_timeout_s]

    # -- what the policy sees ---------------------------------------------------------------

    def snapshot(self, now_s: float, programs: Mapping[ProgramId, Program],
                 last_seen_s: Mapping[ProgramId, float]) -> ToolHostView:
        envs = {}
        for program_id, env in self.programs.items():
            members = self._members(env)
            if not members:
                continue
            program = programs.get(program_id)
            in_use = env_in_use(program) and not env.released
            ready = [s.ready_s for s in members if s.ready_s is not None]
            last_used = max([*ready, last_seen_s.get(program_id, 0.0)]) if ready else None
            envs[program_id] = EnvView(
                program_id, self._env_state(env), sandboxes_resources(members), released=env.released,
                needed_since_s=env.needed_since_s, in_use=in_use, last_used_s=last_used,
                state_since_s=env.state_since_s)
        return ToolHostView(now_s=now_s, disk_capacity_bytes=self.config.disk_capacity_bytes,
                            disk_used_bytes=self._reserved(HOLDING), disk_pending_bytes=self._reserved(
                                (SandboxState.PENDING,), teardowns=False),
                            ports_capacity=self.provider.ports.capacity, ports_used=self._ports_held(),
                            ports_pending=self._count(SandboxState.PENDING), envs=MappingProxyType(envs))

    def _members(self, env: ProgramEnv) -> list[Sandbox]:
        return [s for s in env.sandboxes if s.state is not SandboxState.FAILED]

    def _env_state(self, env: ProgramEnv) -> EnvState:
        """The least prepared of its sandboxes."""
        states = {s.state for s in self._members(env)}
        if SandboxState.DECLARED in states:
            return EnvState.NONE
        for state, env_state in ((SandboxState.RECLAIMED, EnvState.RECLAIMED),
                                 (SandboxState.PENDING, EnvState.PENDING),
                                 (SandboxState.PREPARING, EnvState.PREPARING)):
            if state in states:
                return env_state
        return EnvState.READY

    def _reserved(self, states: tuple[SandboxState, ...], teardowns: bool = True) -> int:
        held = sum(s.spec.disk_quota_bytes for s in self.sandboxes.values() if s.state in states)
        return held + (sum(t.quota_bytes for t in self._teardowns.values()) if teardowns else 0)

    def _ports_held(self) -> int:
        return len(self.provider.ports.held)

    def _count(self, state: SandboxState) -> int:
        return sum(1 for s in self.sandboxes.values() if s.state is state)

    # -- applying decisions -----------------------------------------------------------------

    # Which decisions to apply, and which teardowns to refuse, is the shared applier's
    # (``thunder.core.applier.ToolApplier``); these only carry them out.

    def prepare(self, program_id: ProgramId, now_s: float) -> bool:
        """Start preparing the program's unprepared sandboxes (or queue them); False if none."""
        env = self.programs.get(program_id)
        if env is None or self.closing:
            return False
        return self._prepare(program_id, env, now_s)

    def reclaim(self, program_id: ProgramId, now_s: float, reason: str) -> bool:
        """Tear the program's sandboxes down (cancel pending ones); False if nothing was live."""
        env = self.programs.get(program_id)
        if env is None or self.closing:
            return False
        return self._reclaim(program_id, env, now_s, reason)

    def _prepare(self, program_id: ProgramId, env: ProgramEnv, now_s: float) -> bool:
        todo = [s for s in env.sandboxes if s.state in UNPREPARED]
        if env.released or not todo:
            return False
        for sandbox in todo:
            sandbox.state = SandboxState.PENDING
            self._pending.append(sandbox.sandbox_id)
        env.state_since_s = now_s
        self._admit(now_s)
        return True

    def _admit(self, now_s: float) -> None:
        """Start pending preparations in FIFO order while the head fits."""
        cap = self.config.disk_capacity_bytes
        while self._pending:
            sandbox = self.sandboxes[self._pending[0]]
            if cap is not None and self._reserved(HOLDING) + sandbox.spec.disk_quota_bytes > cap:
                return
            if self._ports_held() >= self.provider.ports.capacity:
                return
            self._pending.popleft()
            try:
                sandbox.instance = self.provider.allocate(sandbox.sandbox_id)
            except (OSError, NoFreePort) as exc:
                self._fail(sandbox, f"cannot allocate: {exc}")
                continue
            sandbox.state, sandbox.prepared = SandboxState.PREPARING, sandbox.prepared + 1
            self._tasks[sandbox.sandbox_id] = asyncio.get_running_loop().create_task(
                self._run_preparation(sandbox, sandbox.instance))

    async def _run_preparation(self, sandbox: Sandbox, instance: Allocation) -> None:
        spec, timeout_s = sandbox.spec, self.config.setup_timeout_s
        try:
            if spec.setup_command:
                await self.provider.run_setup(instance, spec.setup_command, timeout_s)
            if spec.process_command:
                await self.provider.start_process(instance, spec.process_command, spec.wait_for_port, timeout_s)
            sandbox.disk_bytes = await asyncio.to_thread(self.provider.disk_bytes, instance)
        except SetupFailed as exc:
            self._tasks.pop(sandbox.sandbox_id, None)
            if sandbox.instance is instance:
                self._teardown(sandbox)
                self._fail(sandbox, str(exc))
            return
        self._tasks.pop(sandbox.sandbox_id, None)
        if sandbox.instance is not instance:
            return
        sandbox.state, sandbox.ready_s = SandboxState.READY, self.clock()
        env = self.programs.get(sandbox.program_id)
        if env is not None and self._env_state(env) is EnvState.READY:
            env.needed_since_s, env.state_since_s = None, self.clock()
        self._notify()

    def _fail(self, sandbox: Sandbox, error: str) -> None:
        self.setup_failures += 1
        sandbox.state, sandbox.error = SandboxState.FAILED, error
        log.warning("sandbox %s of program %s failed: %s", sandbox.sandbox_id, sandbox.program_id, error)
        env = self.programs.get(sandbox.program_id)
        if env is not None and not self._members(env):
            env.needed_since_s = None
        self._notify()

    def _reclaim(self, program_id: ProgramId, env: ProgramEnv, now_s: float, reason: str) -> bool:
        live = [s for s in env.sandboxes if s.state in (SandboxState.PENDING, *HOLDING)]
        for sandbox in live:
            if sandbox.state is SandboxState.PENDING:
                self._pending.remove(sandbox.sandbox_id)
            else:
                self._teardown(sandbox)
            sandbox.state = SandboxState.RECLAIMED
        if live:
            log.info("sandboxes of program %s reclaimed (%s)", program_id, reason)
            env.state_since_s = now_s
        self._forget_if_done(program_id)
        self._admit(now_s)
        self._notify()
        return bool(live)

    def _teardown(self, sandbox: Sandbox) -> None:
        """Hand the instance to a teardown task; the sandbox holds nothing from now on."""
        instance, sandbox.instance = sandbox.instance, None
        sandbox.ready_s = None
        if instance is None:
            return
        self.reclaims += 1
        teardown = Teardown(sandbox.sandbox_id, instance, sandbox.spec.disk_quota_bytes)
        self._teardowns[instance.name] = teardown
        preparation = self._tasks.pop(sandbox.sandbox_id, None)
        if preparation is not None:
            preparation.cancel()  # its setup's process tree dies with it
        task = asyncio.get_running_loop().create_task(self._run_teardown(teardown, preparation))
        self._teardown_tasks.add(task)
        task.add_done_callback(self._teardown_tasks.discard)

    async def _run_teardown(self, teardown: Teardown, preparation: asyncio.Task[None] | None) -> None:
        if preparation is not None:
            await asyncio.gather(preparation, return_exceptions=True)
        delay_s = self.config.reclaim_retry_s
        while not await self._try_teardown(teardown):
            if self.closing:
                return  # shutdown retries on its own schedule
            await asyncio.sleep(delay_s)
            delay_s = min(30.0, delay_s * 2)

    async def _try_teardown(self, teardown: Teardown) -> bool:
        teardown.attempts += 1
        teardown.problems = await self.provider.release(teardown.instance)
        if teardown.problems:
            self.reclaim_failures += 1
            log.error("teardown of sandbox %s (%s, attempt %d) incomplete: %s", teardown.sandbox_id,
                      teardown.instance.path.name, teardown.attempts, "; ".join(teardown.problems))
            return False
        self._teardowns.pop(teardown.instance.name, None)
        self._admit(self.clock())  # room freed: pending preparations may start
        self._notify()
        return True

    def _forget_if_done(self, program_id: ProgramId) -> None:
        env = self.programs.get(program_id)
        if env is None or not env.released:
            return
        if all(s.state not in (SandboxState.PENDING, *HOLDING) for s in env.sandboxes):
            for sandbox in env.sandboxes:
                self.sandboxes.pop(sandbox.sandbox_id, None)
            del self.programs[program_id]

    # -- waiting, measuring, shutting down ------------------------------------------------------

    def _notify(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

    async def wait_settled(self, program_id: ProgramId, timeout_s: float) -> bool:
        """Until none of the program's sandboxes is pending or preparing (True), or timeout."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while True:
            env = self.programs.get(program_id)
            if env is None or not any(s.state in (SandboxState.PENDING, SandboxState.PREPARING, *UNPREPARED)
                                      for s in env.sandboxes if not env.released):
                return True
            remaining = deadline - loop.time()
            if remaining <= 0:
                return False
            try:
                await asyncio.wait_for(self._changed.wait(), remaining)
            except asyncio.TimeoutError:
                return False

    async def measure(self) -> None:
        """Walk every live instance's directory once (in a thread: walking is blocking I/O)."""
        for sandbox in list(self.sandboxes.values()):
            instance = sandbox.instance
            if instance is not None and sandbox.state in HOLDING:
                sandbox.disk_bytes = await asyncio.to_thread(self.provider.disk_bytes, instance)

    def stats(self) -> ToolHostStats:
        live = [s for s in self.sandboxes.values() if s.state in HOLDING]
        torn = [t for t in self._teardowns.values() if t.instance.path.exists()]
        return ToolHostStats(
            sandboxes_live=len(live),
            disk_bytes=sum(s.disk_bytes for s in live) + sum(self.provider.disk_bytes(t.instance) for t in torn),
            disk_reserved_bytes=self._reserved(HOLDING), ports_held=self._ports_held(),
            preparing=self._count(SandboxState.PREPARING), pending=self._count(SandboxState.PENDING),
            teardowns=len(self._teardowns), reclaims=self.reclaims, reclaim_failures=self.reclaim_failures,
            setup_failures=self.setup_failures, sigkills=self.provider.sigkills,
            attached=sum(len(e.attached) for e in self.programs.values()))

    def describe(self, program_id: ProgramId) -> dict[str, Any] | None:
        env = self.programs.get(program_id)
        if env is None:
            return None
        return {"program_id": program_id, "released": env.released, "needed_since_s": env.needed_since_s,
                "sandboxes": [describe_sandbox(s) for s in env.sandboxes],
                "attached": [{**r, "owned": False} for r in env.attached]}

    async def close(self) -> list[str]:
        """Tear everything down (shutdown); returns what could not be reclaimed, logged too."""
        self.closing = True
        self._pending.clear()
        for sandbox in self.sandboxes.values():
            if sandbox.state in HOLDING:
                self._teardown(sandbox)
            if sandbox.state is not SandboxState.FAILED:
                sandbox.state = SandboxState.RECLAIMED
        await asyncio.gather(*self._teardown_tasks, return_exceptions=True)
        loop = asyncio.get_running_loop()
        deadline, delay_s = loop.time() + self.config.shutdown_timeout_s, self.config.reclaim_retry_s
        while self._teardowns and loop.time() < deadline:
            for teardown in list(self._teardowns.values()):
                await self._try_teardown(teardown)
            if self._teardowns:
                await asyncio.sleep(min(delay_s, max(0.0, deadline - loop.time())))
                delay_s = min(5.0, delay_s * 2)
        left = [f"{t.instance.path}: {'; '.join(t.problems)}" for t in self._teardowns.values()]
        for line in left:
            log.error("sandbox not reclaimed at shutdown: %s", line)
        self.programs.clear()
        self.sandboxes.clear()
        return left


__all__ = ["LiveToolHost"]
