"""Answer extraction and comparison, one function per answer type.

(Placeholder signatures; the full implementation lands with its tests.)
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Verdict:
    correct: bool
    predicted: str | None  # the normalised extracted answer; None = nothing parsable


def answer_line(answer: str) -> str:
    return f"The answer is {answer}."


def extract_answer(text: str, answer_type: str, choices: list[str] | None = None) -> str | None:
    raise NotImplementedError


def grade(output: str, gold: str, answer_type: str, choices: list[str] | None = None) -> Verdict:
    raise NotImplementedError
