"""Build the next training set from the student's own traces and the teacher's.

Policies (loop.mix):
- mix: the student's own correct traces for questions it solved, plus refined
  teacher traces for those it failed (SIKeD-style self-guided mixing).
- replace: teacher traces only: refined where the student failed, the latest
  verified teacher rationale elsewhere.
- accumulate: the previous training set plus the new refined traces.
With loop.refine=repeat the "refined" traces are the old rationales again (source `repeat`).
A failed question whose refinement never verified keeps its last verified
teacher rationale, if any; otherwise it is left out and counted.
"""

from __future__ import annotations

from collections import Counter

from undo.loop.feedback import solved as is_solved
from undo.rows import RationaleRow, StudentAttempt, TrainRow
from undo.tasks.base import Record


def _row(r: Record, rationale: str, source: str, iteration: int) -> TrainRow:
    return {"id": r.id, "question": r.question, "rationale": rationale, "source": source,
            "iteration": iteration}


def mix_training_set(
    policy: str,
    iteration: int,
    train: list[Record],
    train_attempts: dict[str, StudentAttempt],
    refined: dict[str, RationaleRow],
    latest_teacher: dict[str, str],
    previous_rows: list[TrainRow],
    check_steps: bool = True,
) -> tuple[list[TrainRow], dict[str, int]]:
    """Returns (rows, counts by source); rows carry id, question, rationale, source."""
    rows: list[TrainRow] = []
    if policy == "accumulate":
        rows = list(previous_rows)
    for r in train:
        attempt = train_attempts.get(r.id)
        solved = is_solved(attempt, check_steps)
        new = refined.get(r.id)
        # every verified sample of a refinement is a training example (teacher.refine_samples)
        refined_texts = (new.get("rationales") or [new["rationale"]]) if new and new.get("rationale") else []
        # loop.refine=repeat: the old rationale again, labelled as what it is (as is a bench's
        # scripted control arm, mode "control")
        mode = (new or {}).get("mode") or "refine"
        source = "refined" if mode == "refine" else mode
        if policy == "accumulate":
            if not solved:
                rows += [_row(r, t, source, iteration) for t in refined_texts]
            continue
        if solved and policy == "mix":
            rows.append(_row(r, attempt["output"].strip(), "student", iteration))
        elif refined_texts:
            rows += [_row(r, t, source, iteration) for t in refined_texts]
        elif r.id in latest_teacher:
            rows.append(_row(r, latest_teacher[r.id], "teacher", iteration))
        else:
            rows.append({"id": r.id, "question": r.question, "rationale": None,
                         "source": "none", "iteration": iteration})
    kept = [x for x in rows if x["rationale"]]
    counts = Counter(x["source"] for x in rows)
    return kept, dict(counts)
