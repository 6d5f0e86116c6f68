"""Jinja2 prompt templates: shipped with the package, overridable by path in the config."""

from __future__ import annotations

import re
from functools import lru_cache
from pathlib import Path
from typing import Any

import jinja2
from jinja2.sandbox import SandboxedEnvironment

from undo.errors import UserError

TEMPLATE_DIR = Path(__file__).parent / "prompts"
TEMPLATES = ("explain", "refine", "rationalize")


@lru_cache(maxsize=32)
def _load(path: str) -> jinja2.Template:
    # sandboxed: a template from a shared config can format text, not reach Python objects
    env = SandboxedEnvironment(undefined=jinja2.StrictUndefined, keep_trailing_newline=False)
    try:
        return env.from_string(Path(path).read_text())
    except OSError as e:
        raise UserError(f"cannot read prompt template {path}: {e.strerror}") from None
    except jinja2.TemplateSyntaxError as e:
        raise UserError(f"{path}:{e.lineno}: template syntax error: {e.message}") from None


STYLES = ("stepwise", "concise")  # teacher.style: which shipped family of templates


def template_path(name: str, style: str = "stepwise") -> Path:
    """The shipped template: `explain.j2` (stepwise) or `explain.concise.j2` (concise)."""
    return TEMPLATE_DIR / (f"{name}.j2" if style == "stepwise" else f"{name}.{style}.j2")


def render(name: str, overrides: dict[str, str], style: str = "stepwise", **context: Any) -> str:
    if name not in TEMPLATES:
        raise UserError(f"unknown prompt '{name}' (known: {', '.join(TEMPLATES)})")
    path = overrides.get(name) or str(template_path(name, style))
    try:
        return _load(path).render(**context).strip()
    except jinja2.UndefinedError as e:
        raise UserError(f"prompt template {path}: {e.message}") from None
    except jinja2.exceptions.SecurityError as e:
        raise UserError(f"prompt template {path}: not allowed in a template: {e}") from None


# Phrases by which a teacher that saw the gold answer gives it away instead of deriving it.
_LEAK = re.compile(
    r"\b(as given|as stated|we are (told|given) (that )?the (correct )?answer|the answer (was|is) "
    r"(given|provided)|the hint|given (correct )?answer|correct answer (provided|given)"
    r"|correct (final )?answer is"
    # a rationale is what the student will imitate: one that talks about "the student" is
    # feedback addressed to us, not a solution
    r"|the student('s)?)\b",
    re.IGNORECASE,
)
_ANSWER_TAIL = re.compile(r"the answer is[^\n]*$", re.IGNORECASE)
MIN_REASONING_WORDS = 12
MIN_CALCULATIONS = 2  # or this many "=" steps: a concise rationale is short but still derives


def leaks_hint(text: str) -> bool:
    """True when a hinted rationale states the answer without reasoning its way there."""
    body = _ANSWER_TAIL.sub("", text.strip())
    derives = len(body.split()) >= MIN_REASONING_WORDS or body.count("=") >= MIN_CALCULATIONS
    return bool(_LEAK.search(text)) or not derives
