"""Feedback for the teacher: what the student got wrong, and a profile of the student.

This is the part of UNDO that makes the teacher "listen": each refinement sees
the student's own wrong reasoning, the teacher's earlier explanations of that
question, and a short profile of the student (val accuracy history and a sample
of its val answers).
"""

from __future__ import annotations

import random
from typing import Any

from undo.arithmetic import corrects
from undo.rows import RationaleRow, StudentAttempt, Tailoring
from undo.tasks.base import Record
from undo.teacher.rationale import TeachItem

MAX_ATTEMPT_CHARS = 1500  # a looping student can write pages; the teacher needs the gist
MAX_QUESTION_CHARS = 240


def _clip(text: str, n: int) -> str:
    return text if len(text) <= n else text[:n].rstrip() + " ..."


def solved(attempt: StudentAttempt | None, check_steps: bool = True) -> bool:
    """The student answered right, and (with teacher.check_steps) every written calculation
    holds: a right answer reached through "42 + 15 = 19" is an error worth refining."""
    return bool(attempt and attempt["correct"]
                and not (check_steps and attempt.get("false_step")))


def student_profile(
    val_history: list[tuple[int, float]],
    val_attempts: list[StudentAttempt],
    shown: int,
    seed: int,
) -> dict[str, Any]:
    """Val accuracy by iteration, and up to `shown` val answers, mistakes first."""
    wrong = [a for a in val_attempts if not a["correct"]]
    right = [a for a in val_attempts if a["correct"]]
    rng = random.Random(seed)
    rng.shuffle(wrong)
    rng.shuffle(right)
    # mostly errors, with a few successes so the teacher sees what already works
    sample = wrong[: max(shown - shown // 4, 0)]
    sample += right[: shown - len(sample)]
    return {
        "accuracy_history": ", ".join(f"iteration {k}: {acc:.0%}" for k, acc in val_history),
        "errors": [
            {"question": _clip(a["question"], MAX_QUESTION_CHARS), "predicted": a["predicted"],
             "correct": a["correct"]}
            for a in sample[:shown]
        ],
    }


def refine_items(
    train: list[Record],
    train_attempts: dict[str, StudentAttempt],
    teacher_history: dict[str, list[dict[str, Any]]],
    profile: dict[str, Any] | None,
    show_history: bool,
    check_steps: bool = True,
    show_attempt: bool = True,
) -> list[TeachItem]:
    """One refine request per train question the student answered wrongly.

    teacher_history: id -> earlier verified teacher rationales, oldest first, each
    {"iteration", "rationale"}; the newest is "the teacher's previous rationale".
    """
    items = []
    for r in train:
        attempt = train_attempts.get(r.id)
        if attempt is None or solved(attempt, check_steps):
            continue
        past = teacher_history.get(r.id, [])
        items.append(TeachItem(
            record=r,
            mode="refine",
            context={
                # the newest verified rationale, and up to two older ones (oldest first)
                "previous_rationale": past[-1]["rationale"] if past else None,
                "previous_iteration": past[-1]["iteration"] if past else None,
                "history": past[-3:-1] if show_history else [],
                "student_attempt": _clip(attempt["output"].strip() or "(no answer)",
                                         MAX_ATTEMPT_CHARS) if show_attempt else None,
                # the first calculation of the attempt that does not hold (undo/arithmetic.py), if any
                "student_error": attempt.get("false_step") if show_attempt else None,
                "profile": profile,
            },
        ))
    return items


def _same_text(a: str, b: str) -> bool:
    return " ".join(a.split()) == " ".join(b.split())


def tailoring(items: list[TeachItem], refined: dict[str, RationaleRow]) -> Tailoring:
    """Did the refinements answer the student, or repeat the old explanation?

    Over every verified refined text: how many differ from the question's previous verified
    rationale (whitespace aside) and how many are that rationale again; and, for questions
    whose refine request showed the student's attempt with its first false calculation,
    how many texts write that calculation correctly (`arithmetic.corrects`)."""
    out: Tailoring = {"questions": len(items), "questions_verified": 0, "questions_new": 0, "texts": 0,
                      "texts_new": 0, "texts_same": 0, "attempt_shown": 0, "false_step_named": 0,
                      "false_step_texts": 0, "false_step_fixed": 0}
    for it in items:
        ctx = it.context
        out["attempt_shown"] += ctx.get("student_attempt") is not None
        false_step = ctx.get("student_error")
        out["false_step_named"] += bool(false_step)
        row = refined.get(it.record.id) or {}
        texts = (row.get("rationales") or [row["rationale"]]) if row.get("rationale") else []
        if not texts:
            continue
        previous = ctx.get("previous_rationale")
        new = [t for t in texts if previous is None or not _same_text(t, previous)]
        out["questions_verified"] += 1
        out["questions_new"] += bool(new)
        out["texts"] += len(texts)
        out["texts_new"] += len(new)
        out["texts_same"] += len(texts) - len(new)
        if false_step:
            out["false_step_texts"] += len(texts)
            out["false_step_fixed"] += sum(corrects(false_step, t) for t in texts)
    return out
