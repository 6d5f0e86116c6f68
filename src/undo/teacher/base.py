"""The teacher interface every backend implements, and the backend registry.

A backend turns chat requests into completions. Caching, verification and
prompting live above it, so a new backend (SGLang, an API) is one class.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

Message = dict[str, str]  # {"role": ..., "content": ...}


@dataclass(frozen=True)
class SamplingParams:
    temperature: float = 0.0
    top_p: float = 1.0
    max_tokens: int = 512

    def key(self) -> dict[str, Any]:
        return {"temperature": self.temperature, "top_p": self.top_p, "max_tokens": self.max_tokens}


@dataclass(frozen=True)
class Request:
    messages: list[Message]
    sampling: SamplingParams
    sample_index: int = 0  # distinct samples of the same prompt are distinct cache entries


@dataclass
class Completion:
    text: str
    prompt_tokens: int = 0
    completion_tokens: int = 0
    finish_reason: str | None = None
    cached: bool = False


@dataclass
class Usage:
    """Accounting for one job; saved beside its results."""

    requests: int = 0
    cached: int = 0
    retries: int = 0
    failures: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    retry_reasons: dict[str, int] = field(default_factory=dict)

    def add(self, c: Completion) -> None:
        if c.cached:
            self.cached += 1
        else:
            self.requests += 1
            self.prompt_tokens += c.prompt_tokens
            self.completion_tokens += c.completion_tokens

    def merged(self, other: dict[str, Any]) -> Usage:
        """This usage plus another's (a `to_dict()` of an earlier invocation)."""
        out = Usage(**{k: v for k, v in self.__dict__.items() if k != "retry_reasons"},
                    retry_reasons=dict(self.retry_reasons))
        for key in ("requests", "cached", "retries", "failures", "prompt_tokens", "completion_tokens"):
            setattr(out, key, getattr(out, key) + int(other.get(key, 0)))
        for reason, n in (other.get("retry_reasons") or {}).items():
            out.retry_reasons[reason] = out.retry_reasons.get(reason, 0) + int(n)
        return out

    def cost(self, price: dict[str, float]) -> float | None:
        """price: USD per 1M tokens, keys `input` and `output`."""
        if not price:
            return None
        return (
            self.prompt_tokens * price.get("input", 0.0)
            + self.completion_tokens * price.get("output", 0.0)
        ) / 1e6

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


ProgressFn = Callable[[int], None]  # called with the number of newly finished requests
# Called with (request index, completion) the moment one arrives, so a cache can
# persist it before the job ends: a killed job then loses nothing it finished.
ResultFn = Callable[[int, Completion], None]


class TeacherBackend(Protocol):
    name: str  # registry name, part of the cache key
    model: str  # model id, part of the cache key

    def health_check(self) -> None:
        """Raise UserError with one clear line if the teacher cannot serve."""

    def complete(
        self,
        requests: list[Request],
        usage: Usage,
        progress: ProgressFn | None = None,
        *,
        on_result: ResultFn | None = None,
    ) -> list[Completion]:
        """Answer every request, in order. Failures after retries raise TeacherError.

        `on_result` (optional keyword; a backend may omit it, and callers then
        learn results only on return) is called once per request as it finishes.
        """


# Completion.finish_reason of a request refused as longer than the model's context: recorded
# for that request (the rationale stage shortens a refine prompt and asks again), not fatal
CONTEXT_LENGTH = "context_length"


class TeacherError(RuntimeError):
    """A request failed after all retries."""


BACKENDS: dict[str, Callable[..., TeacherBackend]] = {}


def register_backend(
    name: str,
) -> Callable[[Callable[..., TeacherBackend]], Callable[..., TeacherBackend]]:
    def deco(factory: Callable[..., TeacherBackend]) -> Callable[..., TeacherBackend]:
        BACKENDS[name] = factory
        return factory

    return deco
