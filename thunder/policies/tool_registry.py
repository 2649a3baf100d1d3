"""Tool-resource policy registry: name -> factory (``keep``, ``on-demand``, ``program-aware``).

``make_tool_policy("program-aware", lookahead=4)`` builds the policy's frozen
config from keyword options (unknown names are rejected, the known ones
listed) and returns a fresh policy; like the schedulers, each run needs its
own.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any, Callable

from thunder.policies.tools import (KeepConfig, KeepUntilRunEnd, OnDemandConfig, PrepareAheadAndCollect,
                                    PrepareOnDemand, ProgramAwareToolsConfig, ToolPolicy)


@dataclass(frozen=True, slots=True)
class ToolPolicyFactory:
    """Builds one tool-resource policy from keyword options checked against its config."""

    name: str
    config_type: type
    build: Callable[[Any], ToolPolicy]

    def option_help(self) -> dict[str, str]:
        """Option name -> help text, in declaration order."""
        return {f.name: f.metadata.get("help", "") for f in fields(self.config_type)}

    def __call__(self, **options: Any) -> ToolPolicy:
        known = self.option_help()
        unknown = sorted(set(options) - set(known))
        if unknown:
            raise ValueError(f"tool policy {self.name!r} has no option(s) {', '.join(map(repr, unknown))}; "
                             f"known options: {', '.join(known)}")
        return self.build(self.config_type(**options))


TOOL_POLICIES: dict[str, ToolPolicyFactory] = {
    "keep": ToolPolicyFactory("keep", KeepConfig, KeepUntilRunEnd),
    "on-demand": ToolPolicyFactory("on-demand", OnDemandConfig, PrepareOnDemand),
    "program-aware": ToolPolicyFactory("program-aware", ProgramAwareToolsConfig, PrepareAheadAndCollect),
}


def tool_policy_names() -> list[str]:
    """In the order of the comparison: the two baselines, then ThunderAgent's."""
    return list(TOOL_POLICIES)


def make_tool_policy(name: str, **options: Any) -> ToolPolicy:
    """A fresh tool-resource policy called ``name`` configured by ``options``."""
    factory = TOOL_POLICIES.get(name)
    if factory is None:
        raise ValueError(f"unknown tool policy {name!r}; known tool policies: {', '.join(tool_policy_names())}")
    return factory(**options)
