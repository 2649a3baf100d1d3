"""The ``thunder`` command line: the one place where the worlds are wired together.

``app`` holds the commands; each module here registers one group of them:
``trace_commands`` (trace validate/convert/synth/stats), ``sim_commands``
(simulate, compare) and ``live_commands`` (run, serve, calibrate).
"""

from __future__ import annotations

# Imported for their side effect, registering commands, in the order --help lists them.
from thunder.cli import sim_commands  # noqa: F401,I001
from thunder.cli import live_commands  # noqa: F401
from thunder.cli import trace_commands  # noqa: F401
from thunder.cli.app import app

__all__ = ["app", "main"]


def main() -> None:  # pragma: no cover - console entry point
    app()
