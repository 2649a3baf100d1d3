"""Policy registries: name -> factory, so the CLI and configs can say ``thunder``.

``make_policy("thunder", reserve_quantile=0.8)`` and
``make_tool_policy("program-aware", lookahead=4)`` build the policy's frozen
config from keyword options (unknown option names are rejected by name, with the
known ones listed) and return a fresh policy object; policies keep per-run
state, so each run needs its own. Schedulers and tool-resource policies share
one ``Factory`` type and differ only in what they build.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any, Callable, Generic, TypeVar

from thunder.core.policy import Policy, ToolPolicy
from thunder.policies.autellix import AutellixConfig, LeastAttainedServicePolicy
from thunder.policies.continuum import ContinuumConfig, TtlPinningPolicy
from thunder.policies.gateway import CacheAwareGatewayPolicy, GatewayConfig, PowerOfTwoConfig, PowerOfTwoPolicy
from thunder.policies.thunder.default import DefaultThunderConfig, DefaultThunderPolicy
from thunder.policies.thunder.paper import ProgramAwarePolicy, ThunderConfig
from thunder.policies.tools import (KeepConfig, KeepUntilRunEnd, OnDemandConfig, PrepareAheadAndCollect,
                                    PrepareOnDemand, ProgramAwareToolsConfig)
from thunder.policies.vllm import RequestLevelPolicy, VllmConfig

Built = TypeVar("Built")


@dataclass(frozen=True, slots=True)
class Factory(Generic[Built]):
    """Builds one policy from keyword options validated against its config type."""

    kind: str  # "policy" or "tool policy", for messages
    name: str
    config_type: type
    build: Callable[[Any], Built]

    def option_help(self) -> dict[str, str]:
        """Option name -> help text, in declaration order."""
        return {f.name: f.metadata.get("help", "") for f in fields(self.config_type)}

    def __call__(self, **options: Any) -> Built:
        known = self.option_help()
        unknown = sorted(set(options) - set(known))
        if unknown:
            raise ValueError(f"{self.kind} {self.name!r} has no option(s) {', '.join(map(repr, unknown))}; "
                             f"known options: {', '.join(known) or '(none)'}")
        return self.build(self.config_type(**options))


def _scheduler(name: str, config_type: type, build: Callable[[Any], Policy]) -> Factory[Policy]:
    return Factory("policy", name, config_type, build)


def _tools(name: str, config_type: type, build: Callable[[Any], ToolPolicy]) -> Factory[ToolPolicy]:
    return Factory("tool policy", name, config_type, build)


POLICIES: dict[str, Factory[Policy]] = {
    "vllm": _scheduler("vllm", VllmConfig, RequestLevelPolicy),
    "continuum": _scheduler("continuum", ContinuumConfig, TtlPinningPolicy),
    "thunder": _scheduler("thunder", DefaultThunderConfig, DefaultThunderPolicy),
    "thunder-paper": _scheduler("thunder-paper", ThunderConfig, ProgramAwarePolicy),
    "gateway": _scheduler("gateway", GatewayConfig, CacheAwareGatewayPolicy),
    "power-of-two": _scheduler("power-of-two", PowerOfTwoConfig, PowerOfTwoPolicy),
    "autellix": _scheduler("autellix", AutellixConfig, LeastAttainedServicePolicy),
}

# In the order of the comparison: the two baselines, then ThunderAgent's.
TOOL_POLICIES: dict[str, Factory[ToolPolicy]] = {
    "keep": _tools("keep", KeepConfig, KeepUntilRunEnd),
    "on-demand": _tools("on-demand", OnDemandConfig, PrepareOnDemand),
    "program-aware": _tools("program-aware", ProgramAwareToolsConfig, PrepareAheadAndCollect),
}


def policy_names() -> list[str]:
    return sorted(POLICIES)


def tool_policy_names() -> list[str]:
    """In the order of the comparison: the two baselines, then ThunderAgent's."""
    return list(TOOL_POLICIES)


def make_policy(name: str, **options: Any) -> Policy:
    """A fresh policy called ``name`` configured by ``options``."""
    factory = POLICIES.get(name)
    if factory is None:
        raise ValueError(f"unknown policy {name!r}; known policies: {', '.join(policy_names())}")
    return factory(**options)


def make_tool_policy(name: str, **options: Any) -> ToolPolicy:
    """A fresh tool-resource policy called ``name`` configured by ``options``."""
    factory = TOOL_POLICIES.get(name)
    if factory is None:
        raise ValueError(f"unknown tool policy {name!r}; known tool policies: {', '.join(tool_policy_names())}")
    return factory(**options)
