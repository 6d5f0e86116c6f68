"""A loaded config's names, checked against the registries that own them.

`config.py` is the schema and imports nothing above it, so the names a registry must hold
(task, answer type, teacher backend, inference engine, prompt template) are checked here,
by asking each owner: `load` is `config.load_config` plus this check, and every entry point
(the CLI, `UndoRun`, the Python API) goes through it. An unknown name is one line naming
its key, as any other bad value is.
"""

from __future__ import annotations

import os
from collections.abc import Collection
from typing import Any

from undo.config import RunConfig, load_config
from undo.errors import UserError


def _known(key: str, value: Any, known: Collection[str], what: str, origin: str) -> None:
    if value is not None and value not in known:
        raise UserError(f"{origin}: config key '{key}': unknown {what}; known: "
                        f"{', '.join(sorted(known))} (got {value!r})")


def check_registered(cfg: RunConfig, origin: str = "config") -> RunConfig:
    """`cfg` if every registry name in it exists; else UserError naming the first bad key."""
    from undo.grading import ANSWER_TYPES
    from undo.lm.engines import AUTO, ENGINES
    from undo.tasks import TASKS
    from undo.teacher import backend_names
    from undo.teacher.prompts import TEMPLATES

    _known("task.name", cfg.task.name, TASKS, "task", origin)
    _known("task.answer_type", cfg.task.answer_type, ANSWER_TYPES, "answer type", origin)
    _known("teacher.backend", cfg.teacher.backend, backend_names(), "teacher backend", origin)
    _known("student.backend", cfg.student.backend, [*ENGINES, AUTO], "inference backend", origin)
    for name in cfg.teacher.prompts:
        _known("teacher.prompts", name, TEMPLATES, "prompt", origin)
    return cfg


def load(path: str | os.PathLike[str] | None = None, overrides: list[str] | None = None,
         base: dict[str, Any] | None = None) -> RunConfig:
    """A config file (or a shipped name) with `key=value` overrides, every value and name checked."""
    from undo.config import config_path

    origin = str(config_path(path)) if path is not None else "config"
    return check_registered(load_config(path, overrides, base), origin)
