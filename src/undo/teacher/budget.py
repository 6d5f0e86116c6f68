"""The teacher's budget: each round of requests is sized, before it starts, to what is left.

A request's cost is bounded before it is sent: its prompt by the prompt's UTF-8 bytes over
the lowest bytes-per-token ratio this run has measured (1 before any: a byte-level BPE token
holds at least one byte), plus a chat-template allowance, and its completion by
`teacher.max_tokens`. A round whose bound does not fit runs for the questions it can afford,
in the order given (the loop puts the hardest first), and the rest are recorded as skipped
for the budget: the run never starts work it could not pay for.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from undo.runstore import read_json, read_jsonl
from undo.teacher.base import Usage

TEMPLATE_TOKENS = 64  # the chat template's own tokens (role headers, a default system prompt)


def prompt_bytes(messages: list[dict[str, str]]) -> int:
    return sum(len(m["content"].encode()) for m in messages)


@dataclass
class TeacherBudget:
    """What is left at a stage's start (None = no limit on that measure)."""

    tokens_left: float | None
    cost_left: float | None
    price: dict[str, float] = field(default_factory=dict)
    bytes_per_token: float = 1.0  # the lowest measured; 1 is a strict bound
    max_tokens: int = 512

    def bound(self, messages: list[dict[str, str]]) -> tuple[int, int]:
        """(prompt, completion) tokens one request may bill at most."""
        return math.ceil(prompt_bytes(messages) / self.bytes_per_token) + TEMPLATE_TOKENS, self.max_tokens

    def fits(self, spent: Usage, prompt: int, completion: int) -> bool:
        """Would `spent` (this stage so far) plus a request bounded so stay within the budget?"""
        if self.tokens_left is not None:
            if spent.prompt_tokens + spent.completion_tokens + prompt + completion > self.tokens_left:
                return False
        if self.cost_left is not None:
            usd = ((spent.prompt_tokens + prompt) * self.price.get("input", 0.0)
                   + (spent.completion_tokens + completion) * self.price.get("output", 0.0)) / 1e6
            if usd > self.cost_left:
                return False
        return True


def spent_before(stage_usage_files: list[Path]) -> Usage:
    """Billed usage of the given finished or interrupted teacher stages of a run."""
    total = Usage()
    for path in stage_usage_files:
        if path.exists():
            data = read_json(path)
            total = total.merged(data.get("usage", data))
    return total


def measured_bytes_per_token(rationale_files: list[Path]) -> float:
    """The lowest prompt bytes per billed prompt token seen in earlier rows (1.0 if none)."""
    ratios = [a["prompt_bytes"] / a["prompt_tokens"]
              for path in rationale_files if path.exists() for row in read_jsonl(path)
              for a in row.get("attempts", []) if a.get("prompt_bytes") and a.get("prompt_tokens")]
    return max(1.0, min(ratios)) if ratios else 1.0


def budget_summary(limit_tokens: int | None, limit_cost: float | None, spent: Usage,
                   price: dict[str, float]) -> dict[str, Any]:
    out: dict[str, Any] = {"spent_tokens": spent.prompt_tokens + spent.completion_tokens}
    if limit_tokens is not None:
        out["limit_tokens"] = limit_tokens
    if price:
        out["spent_cost"] = round(spent.cost(price) or 0.0, 4)
    if limit_cost is not None:
        out["limit_cost"] = limit_cost
    return out
