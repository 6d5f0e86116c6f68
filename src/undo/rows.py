"""The run folder's row formats, defined once: what each JSONL/JSON file of a run holds.

`RunStore` (runstore.py) knows where each file is; this module says what a row in it is.
Writers build these TypedDicts and readers annotate with them, so a renamed or missing
field is a type error rather than a KeyError an hour into a run. They are plain dicts at
run time: nothing is converted when a row is read or written.
"""

from __future__ import annotations

from typing import Any, TypedDict


class TeacherAttempt(TypedDict):
    """One teacher answer, inside a rationale row's `attempts`."""

    attempt: int
    mode: str  # explain | refine | rationalize (| examples, examples_stepwise)
    text: str
    predicted: str | None
    correct: bool  # accepted: right answer, no leak, every calculation holds (check_steps)
    reason: str  # ok | wrong_answer | unparsed | truncated | leaked_hint | false_step | context_length
    prompt_tokens: int
    completion_tokens: int
    prompt_bytes: int
    cached: bool


class TokenUsage(TypedDict):
    prompt_tokens: int
    completion_tokens: int


class RationaleRow(TypedDict):
    """iter_K/rationales.jsonl: the teacher's work on one question (explain at K=0, refine after)."""

    id: str
    question: str
    answer: Any
    choices: Any
    rationale: str | None  # the first verified text; None: nothing verified
    rationales: list[str]  # every distinct verified text, up to teacher.refine_samples
    verdict: str  # verified | rationalized | failed
    reason: str  # ok, or why it failed (budget, or the most common attempt reason)
    mode: str  # explain | refine | repeat | control
    attempts: list[TeacherAttempt]
    usage: TokenUsage


class StudentAttempt(TypedDict):
    """iter_K/attempts_<split>.jsonl (and base/): one student answer, graded."""

    id: str
    question: str
    answer: Any
    output: str
    predicted: str | None
    correct: bool
    false_step: str | None  # the first calculation that does not hold, as written
    completion_tokens: int


class TrainRow(TypedDict):
    """iter_K/train_data.jsonl: one training example and where it came from."""

    id: str
    question: str
    rationale: str | None  # None: no text for this question (source "none"), not trained on
    source: str  # student | refined | teacher | repeat | control | none
    iteration: int


class IterationMetrics(TypedDict, total=False):
    """iter_K/metrics.json (base/metrics.json has iteration "base" and the accuracies only)."""

    iteration: int | str
    val_acc: float
    val_n: int
    test_acc: float
    test_n: int
    train_errors: int | None
    refined_verified: int | None
    refined_failed: int | None
    budget_skipped: int
    tailoring: dict[str, Any]
    train_examples: int
    sources: dict[str, int]
    steps: int
    teacher_tokens: int
    teacher_requests: int
    wall_s: float


class Summary(TypedDict, total=False):
    """summary.json: the finished loop."""

    name: str
    method: str
    best_iteration: int | None
    best_val_acc: float
    best_test_acc: float
    stop_reason: str
    total_steps: int
    teacher_tokens: int
    wall_s: float
    iterations: list[IterationMetrics]
    best_student: str
    budget: dict[str, Any]
    headline: dict[str, Any]
    flow: dict[str, Any]
