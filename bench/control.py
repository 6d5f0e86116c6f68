"""A CONTROL arm for the benches, not a teacher: a scripted refinement, no LLM.

For each train question the student got wrong, the refinement is the question's previous
verified rationale with the student's first false calculation written in smaller steps
that each move one digit (`undo.arithmetic.smaller_steps`): "14 - 5 = 8" in the attempt turns
the rationale's "14 - 5 = 9" into "14 - 4 = 10", "10 - 1 = 9". Where the attempt has no
false calculation that the rationale also writes (a wrong approach, or a slip on a value
only the student had), the rationale's first calculation that splits is split instead.

It is what an explanation aimed at exactly this student's slip can give at best, written
without a teacher: if it does not beat UNDO-repeat, neither can a teacher's tailoring of
the same kind, and the student (not the teacher) is the bottleneck. It lives in bench/
only: a user never picks it (`loop.refine` has no such value).
"""

from __future__ import annotations

from typing import Any

from undo.arithmetic import calculation_matches, first_false_step, split_calculation
from undo.grading import grade
from undo.teacher.rationale import TeachItem
from undo.teacher.refine_examples import answered


def scripted(previous: str, false_step: str | None) -> tuple[str, str] | None:
    """(the scripted refinement, how it was aimed: "false step" or "first splittable")."""
    if false_step:
        text = answered(previous, false_step)
        if text:
            return text, "false step"
    for m in calculation_matches(previous):
        steps = split_calculation(m.group(0))
        if steps and len(steps) > 1:
            return previous[:m.start()] + "\n".join(steps) + previous[m.end():], "first splittable"
    return None


def write_control(run: Any, k: int, items: list[TeachItem]) -> dict[str, int]:
    """Iteration k's rationales.jsonl, written through the loop's own teacherless stage
    (`UndoRun.written_refinements`, as loop.refine=repeat writes its rows), so that
    `run.iteration(k)` trains on them. Returns how each was aimed (zeros when already done)."""
    counts = {"false step": 0, "first splittable": 0, "unchanged": 0, "no rationale": 0}
    if run.store.done(k, "teach"):
        return counts

    def control(it: TeachItem) -> tuple[str | None, str]:
        old, r = it.context.get("previous_rationale"), it.record
        got = scripted(old, it.context.get("student_error")) if old else None
        text, how = got if got else (old, "unchanged" if old else "no rationale")
        counts[how] += 1
        if text:  # every scripted step holds and the answer line is the gold's
            assert first_false_step(text) is None, text
            assert grade(text, r.answer, r.answer_type, r.choices).correct, text
        return text, f"control: {how}"

    run.written_refinements(k, items, control, "control", {"control": counts})
    return counts
