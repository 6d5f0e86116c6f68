"""undo: UNDO (UNderstanding Distillation as Optimization) distillation of teacher reasoning.

The package, by what each part does (DESIGN.md has the method and the run folder):
  api            the Python API the CLI is a shell over: load, run, teach, train, evaluate, read_*
  config         the run's schema (imports nothing above it); registries: names checked by their owners
  loop/          the method: run (iterations, resume, summary), feedback, mixing, plan
  teacher/       backends (HTTP, in-process), prompts, the completion cache, the rationale stage
  student/       training (TRL), evaluation, the launcher for several processes
  lm/            models (offline registry, GGUF conversion), engines, the decode loop
  tasks/         datasets and generators; grading reads and compares answers; arithmetic checks steps
  outputs/       what reads a finished run: report, report_html, flow, transfer, export, tracking
  runstore, rows the run folder's paths and its row formats; stats the intervals
"""

from typing import Any

__version__ = "0.1.0"

# api.__all__, named here so that `import undo` does not load the API (tests/test_api.py checks)
_API = ("load", "run", "teach", "train", "evaluate", "read_summary", "read_attempts", "read_flow")
__all__ = [*_API, "__version__"]


def __getattr__(name: str) -> Any:
    # the API on first use: `import undo.lm.generate` does not load the config schema
    if name in _API:
        from undo import api

        return getattr(api, name)
    raise AttributeError(f"module 'undo' has no attribute {name!r}")
