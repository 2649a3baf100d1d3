"""Policy registry: name -> factory, so the CLI and configs can say ``thunder``.

``make_policy("thunder", decay_base=4)`` builds the policy's frozen config
from keyword options (unknown option names are rejected by name, with the
known ones listed) and returns a fresh policy object; policies keep
per-run state, so each run needs its own.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any, Callable

from thunder.policies.autellix import AutellixConfig, LeastAttainedServicePolicy
from thunder.core.policy import Policy
from thunder.policies.continuum import ContinuumConfig, TtlPinningPolicy
from thunder.policies.gateway import CacheAwareGatewayPolicy, GatewayConfig, PowerOfTwoConfig, PowerOfTwoPolicy
from thunder.policies.thunder.paper import ProgramAwarePolicy, ThunderConfig
from thunder.policies.thunder.default import DefaultThunderConfig, DefaultThunderPolicy
from thunder.policies.vllm import RequestLevelPolicy, VllmConfig


@dataclass(frozen=True, slots=True)
class PolicyFactory:
    """Builds one policy from keyword options validated against its config type."""

    name: str
    config_type: type
    build: Callable[[Any], Policy]

    def option_help(self) -> dict[str, str]:
        """Option name -> help text, in declaration order."""
        return {f.name: f.metadata.get("help", "") for f in fields(self.config_type)}

    def __call__(self, **options: Any) -> Policy:
        known = self.option_help()
        unknown = sorted(set(options) - set(known))
        if unknown:
            raise ValueError(f"policy {self.name!r} has no option(s) {', '.join(map(repr, unknown))}; "
                             f"known options: {', '.join(known) or '(none)'}")
        return self.build(self.config_type(**options))


POLICIES: dict[str, PolicyFactory] = {
    "vllm": PolicyFactory("vllm", VllmConfig, RequestLevelPolicy),
    "continuum": PolicyFactory("continuum", ContinuumConfig, TtlPinningPolicy),
    "thunder": PolicyFactory("thunder", DefaultThunderConfig, DefaultThunderPolicy),
    "thunder-paper": PolicyFactory("thunder-paper", ThunderConfig, ProgramAwarePolicy),
    "gateway": PolicyFactory("gateway", GatewayConfig, CacheAwareGatewayPolicy),
    "power-of-two": PolicyFactory("power-of-two", PowerOfTwoConfig, PowerOfTwoPolicy),
    "autellix": PolicyFactory("autellix", AutellixConfig, LeastAttainedServicePolicy),
}


def policy_names() -> list[str]:
    return sorted(POLICIES)


def make_policy(name: str, **options: Any) -> Policy:
    """A fresh policy called ``name`` configured by ``options``."""
    factory = POLICIES.get(name)
    if factory is None:
        raise ValueError(f"unknown policy {name!r}; known policies: {', '.join(policy_names())}")
    return factory(**options)
