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
    mode: str  # explain | refine | rationalize (worked-example passes record theirs as explain)
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
    # ok, or why it failed (budget, or the most common attempt reason); repeat rows: repeat | no_rationale
    reason: str
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


class Tailoring(TypedDict):
    """metrics.json's "tailoring" (iterations >= 1): did the refinements answer the student?"""

    questions: int  # refine requests (train questions the student got wrong)
    questions_verified: int  # of them, with at least one verified refined text
    questions_new: int  # of them, with a text that differs from the previous verified rationale
    texts: int  # verified refined texts
    texts_new: int  # of them, differing from the question's previous verified rationale (whitespace aside)
    texts_same: int  # of them, that rationale again
    attempt_shown: int  # refine requests that showed the student's attempt
    false_step_named: int  # of them, naming the attempt's first false calculation
    false_step_texts: int  # verified texts answering a request that named one
    false_step_fixed: int  # of them, writing that calculation correctly (arithmetic.corrects)


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
    tailoring: Tailoring
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
    budget: BudgetUse  # only with a loop.budget
    headline: Headline  # only for method undo
    flow: dict[str, list[FlowTransition]]  # flow.json's "counts"


class UsageCounts(TypedDict):
    """A teacher stage's accounting: teacher.base.Usage.to_dict()."""

    requests: int  # requests sent to the teacher (cache hits not counted)
    cached: int  # answers taken from the cache
    retries: int
    failures: int  # requests that failed after their retries
    prompt_tokens: int  # billed: cache hits add nothing
    completion_tokens: int
    retry_reasons: dict[str, int]  # why requests were retried -> how often


class VerdictCounts(TypedDict):
    """A teacher stage's rows counted (teacher.rationale.summarize)."""

    n: int  # rows
    verdicts: dict[str, int]  # verdict (verified | rationalized | failed) -> rows
    failed_reasons: dict[str, int]  # a failed row's reason -> rows


class StageUsage(TypedDict):
    """iter_K/teacher_usage.json (and iter_0/examples_usage.json, examples_stepwise_usage.json):
    what a finished teacher stage spent. (While it runs, <name>.partial.json holds the
    UsageCounts of earlier invocations, flat, plus "invocations".)"""

    usage: UsageCounts  # summed over every invocation (a resumed stage counts what it spent before)
    invocations: int  # processes that ran the stage, the finishing one included
    summary: VerdictCounts
    cost_usd: float | None  # None: no teacher.price (or no teacher: loop.refine=repeat)


class _FlowTransitionCounts(TypedDict):
    iteration: int  # t: the student of iteration t against the student of t-1
    fixed: int  # wrong -> right
    broken: int  # right -> wrong
    kept: int  # right -> right


class FlowTransition(_FlowTransitionCounts, total=False):
    """One split's learning-flow counts at one iteration (summary.json's "flow" and flow.json's
    "counts": split -> one per iteration from 1). Written by outputs/flow.py."""

    stuck: int  # train only: still wrong although a verified refinement was trained on
    never_refined: int  # train only: still wrong, no verified refinement
    still_wrong: int  # val only
    unknown: int  # only when above 0: a verdict is missing (the last student, not asked on train)


class FlowQuestion(TypedDict):
    """flow.json's "grid": one train or val question through the run. Every map is keyed by
    iteration as a string ("0", "1", ...; "base": the untrained student, where it was scored)."""

    split: str  # train | val
    correct: dict[str, bool | None]  # the student answered right; None: not asked
    source: dict[str, str]  # train only: the TrainRow source(s) it was trained on ("a+b", "none")
    refined: dict[str, bool | None]  # train, iterations >= 1: a refinement verified; None: not refined


class Flow(TypedDict):
    """flow.json: the learning flow of a finished loop (outputs/flow.py flow_summary)."""

    counts: dict[str, list[FlowTransition]]  # split (train | val) -> per iteration from 1
    grid: dict[str, FlowQuestion]  # question id -> its path


class _HeadlineArmScore(TypedDict):
    arm: str  # "base student", "one-shot (iteration 0)", "UNDO (iteration K, ...)"
    iteration: int | str  # "base", 0, K
    n: int  # test questions (those the one-shot student answered)
    test_acc: float
    ci_low: float  # the 95 % bootstrap interval of test_acc
    ci_high: float


class HeadlineArm(_HeadlineArmScore, total=False):
    """One row of summary.json's "headline" (outputs/report.py headline)."""

    diff_vs_oneshot: float  # every arm but one-shot: test_acc minus one-shot's, paired
    diff_ci_low: float  # its 95 % paired bootstrap interval
    diff_ci_high: float


class Headline(TypedDict):
    """summary.json's "headline": base / one-shot / UNDO on test."""

    rows: list[HeadlineArm]  # []: no one-shot test answers, or no best iteration
    sentence: str  # what the UNDO row shows against one-shot ("" when rows is empty)


class BudgetUse(TypedDict, total=False):
    """summary.json's "budget" (teacher.budget.budget_summary): written with a loop.budget."""

    spent_tokens: int  # teacher prompt + completion tokens of the whole run
    limit_tokens: int  # loop.budget.teacher_tokens, when set
    spent_cost: float  # USD, when teacher.price is set
    limit_cost: float  # loop.budget.cost, when set


class TransferMetrics(TypedDict, total=False):
    """RUN/transfer_<student>_iter<K>_<digest>/metrics.json: another student trained on
    iteration K's train_data.jsonl and scored on the run's val and test (outputs/transfer.py)."""

    run: str  # the run folder
    dir: str  # this transfer folder
    iteration: int  # K: whose train_data.jsonl
    student: str  # the student model trained
    train_examples: int
    val_acc: float
    val_n: int
    test_acc: float
    test_n: int


class _TransferCellScore(TypedDict):
    student: str
    iteration: int
    test_acc: float
    n: int  # test questions
    dir: str  # the cell's transfer folder


class TransferCell(_TransferCellScore, total=False):
    """One cell of transfer_matrix.json: a student trained on one iteration's data."""

    diff_vs_first: float  # every cell but the student's first: test_acc minus the first's, paired
    ci_low: float  # its 95 % paired bootstrap interval
    ci_high: float


class TransferMatrix(TypedDict):
    """RUN/transfer_matrix.json: students x iterations (outputs/transfer.py transfer_matrix)."""

    run: str
    iterations: list[int]  # the iterations whose data was used, ascending
    students: list[str]
    overrides: list[str]  # the config overrides of every cell, sorted
    cells: list[TransferCell]
