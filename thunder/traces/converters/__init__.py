"""Converters from recorded agent runs to trace format v1.

What lives here: one module per source format (``mini_swe_agent``,
``openhands``, ``tau_bench``,
``swe_agent_profile``), each with ``convert(path, options)`` returning
``(TraceHeader, list[TraceProgram], ConversionReport)``, plus the helpers they
share (token counting, context-reset marking, the report).

The rule that keeps it clean: converters read their input and return values;
they never write files, read a clock or print (``thunder trace convert`` in
``thunder/cli/`` does that), and they never drop a run or a value silently. A run
they cannot convert is in ``ConversionReport.skipped``; a value they could not
measure is left absent and listed in ``ConversionReport.warnings``; the
header's ``notes`` state every choice and count. The format and the choices
are documented in ``traces/README.md``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

from thunder.traces.converters import mini_swe_agent, openhands, swe_agent_profile, tau_bench
from thunder.traces.converters.options import ConversionError, ConvertOptions, ToolTimeSpec, parse_tool_time
from thunder.traces.converters.report import ConversionReport
from thunder.traces.format import TraceHeader, TraceProgram

Conversion = tuple[TraceHeader, list[TraceProgram], ConversionReport]
Converter = Callable[[Path, ConvertOptions], Conversion]

CONVERTERS: dict[str, Converter] = {
    mini_swe_agent.FORMAT_NAME: mini_swe_agent.convert,
    openhands.FORMAT_NAME: openhands.convert,
    swe_agent_profile.FORMAT_NAME: swe_agent_profile.convert,
    tau_bench.FORMAT_NAME: tau_bench.convert,
}


def convert(format_name: str, path: Path, options: ConvertOptions | None = None) -> Conversion:
    """Run the converter registered for ``format_name``; raise ``ConversionError`` if there is none."""
    converter = CONVERTERS.get(format_name)
    if converter is None:
        raise ConversionError(f"unknown format {format_name!r} (known: {', '.join(sorted(CONVERTERS))})")
    return converter(path, options or ConvertOptions())


__all__ = [
    "CONVERTERS",
    "Conversion",
    "ConversionError",
    "ConversionReport",
    "ConvertOptions",
    "Converter",
    "ToolTimeSpec",
    "convert",
    "parse_tool_time",
]
