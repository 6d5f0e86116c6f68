"""Teacher backends, the completion cache, prompts and verified rationale generation."""

from __future__ import annotations

import importlib

from undo.config import TeacherConfig
from undo.errors import UserError
from undo.lm.engines import AUTO, ENGINES
from undo.teacher.base import BACKENDS, TeacherBackend

# modules that register a backend, imported on demand; every inference engine
# (undo/lm/engines.py: transformers, vllm) is an in-process teacher backend
_BACKEND_MODULES = {"openai": "undo.teacher.openai_backend"} | {
    name: "undo.teacher.local_backend" for name in [*ENGINES, AUTO]}


def backend_names() -> set[str]:
    """What teacher.backend may name (config.py checks it at load): built in, or registered."""
    return set(BACKENDS) | set(_BACKEND_MODULES)


def build_backend(cfg: TeacherConfig) -> TeacherBackend:
    module = _BACKEND_MODULES.get(cfg.backend)
    if module:
        importlib.import_module(module)
    if cfg.backend not in BACKENDS:
        known = ", ".join(sorted(backend_names()))
        raise UserError(f"teacher.backend: unknown backend '{cfg.backend}' (known: {known})")
    return BACKENDS[cfg.backend](cfg)


def build_teacher(cfg: TeacherConfig, cache_path: str | None = None):  # noqa: ANN201
    """The configured backend behind the persistent completion cache."""
    from undo.teacher.cache import CachedTeacher, CompletionCache

    return CachedTeacher(build_backend(cfg), CompletionCache(cache_path))
