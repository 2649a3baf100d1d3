"""Agent traces: the trace v1 format, and everything that makes or reads one.

* ``format``: the dataclasses and the validating reader (``load_trace``, ``iter_programs``);
* ``writer``: ``write_trace`` and the dict forms;
* ``scale``, ``stats``: scaling a trace's tokens and times, and its summary statistics;
* ``converters/``: public agent runs (mini-swe-agent, OpenHands, tau-bench, SWE-agent
  profiles) into traces;
* ``synth/``: synthetic workloads fitted to real ones.

The format and the writer are re-exported here: ``from thunder.traces import load_trace``.
"""

from thunder.traces.format import (FORMAT_VERSION, EnvSpec, Trace, TraceError, TraceHeader, TraceProgram,
                                   TraceReader, TraceStep, iter_programs, load_trace, parse_program)
from thunder.traces.writer import header_to_dict, program_to_dict, step_to_dict, write_trace

__all__ = ["EnvSpec", "FORMAT_VERSION", "Trace", "TraceError", "TraceHeader", "TraceProgram", "TraceReader",
           "TraceStep", "header_to_dict", "iter_programs", "load_trace", "parse_program", "program_to_dict",
           "step_to_dict", "write_trace"]
