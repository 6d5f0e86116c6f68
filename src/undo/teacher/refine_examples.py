"""Refine worked examples: what an explanation aimed at a student's error looks like.

A refine request asks the teacher to answer a wrong attempt. Shown only explain examples,
a teacher tends to write its old solution again (bench/RESULTS.md: 5 of 29 verified
refinements were new text in the demo). A refine worked example shows the whole exchange
instead, as an earlier chat turn: a question, a wrong attempt with its first false
calculation named, and the explanation that answers that error: the same solution with
the false step written in smaller steps that each move one digit (`arithmetic.smaller_steps`).

They are built from the run's worked examples (the generator's gold rationales for gym
tasks, the teacher's own verified rationales otherwise): one calculation's result is
slipped the way a small student slips (a carry: off by 1 or 10), the calculations that
start from it are carried through, and the answer line follows.
"""

from __future__ import annotations

import hashlib
import re
from typing import Any

from undo.arithmetic import calculation_matches, split_calculation, value_of
from undo.grading import answer_line
from undo.tasks.base import Record

SLIPS = (1, -1, 10, -10)  # the carry and borrow slips a small student makes
_ANSWER = re.compile(r"the answer is\s*(.*?)\.?\s*$", re.IGNORECASE | re.MULTILINE)


def _number(text: str) -> str:
    v = value_of(text)
    return str(int(v)) if v is not None and v.denominator == 1 else ""


def slipped(rationale: str, index: int, slip: int) -> tuple[str, str] | None:
    """(the wrong attempt, its first false calculation): calculation `index` of `rationale`
    with its result off by `slip`, every later calculation that starts from that result
    recomputed from the slipped value, and the answer line changed to match. None when the
    rationale's answer is not the last calculation's result (the slip could not be carried)."""
    calcs = [m for m in calculation_matches(rationale) if _number(m["lhs"])]
    answer = _ANSWER.search(rationale)
    if not calcs or index >= len(calcs) or answer is None:
        return None
    if _number(calcs[-1]["lhs"]) != answer.group(1).strip().lstrip("$").replace(",", ""):
        return None
    true_value = _number(calcs[index]["lhs"])
    wrong = str(int(true_value) + slip)
    false_step = f"{' '.join(calcs[index]['lhs'].split())} = {wrong}"
    out, last, carried = [], 0, {true_value: wrong}
    for j, m in enumerate(calcs):
        if j < index:
            continue
        lhs = m["lhs"]
        if j == index:
            line = false_step
        else:
            first = lhs.strip().split()[0]
            if first not in carried:
                continue
            lhs = lhs.replace(first, carried[first], 1)
            line = f"{' '.join(lhs.split())} = {_number(lhs)}"
            carried[_number(m["lhs"])] = _number(lhs)
        out += [rationale[last:m.start()], line]
        last = m.end()
    text = "".join(out) + rationale[last:]
    final = carried.get(_number(calcs[-1]["lhs"]), _number(calcs[-1]["lhs"]))
    text = _ANSWER.sub(lambda _: answer_line(final), text, count=1)
    return text, false_step


def answered(rationale: str, false_step: str) -> str | None:
    """The rationale with the calculation the student got wrong in smaller steps; None when
    that calculation does not split (one digit, no ten crossed) or is not in the rationale."""
    steps = split_calculation(false_step)
    if not steps or len(steps) < 2:
        return None
    lhs = " ".join(false_step.split("=")[0].split())
    for m in calculation_matches(rationale):
        if " ".join(m["lhs"].split()) == lhs:
            return rationale[:m.start()] + "\n".join(steps) + rationale[m.end():]
    return None


def refine_examples(examples: list[dict[str, str]], records: list[Record], n: int) -> list[dict[str, Any]]:
    """Up to n refine worked examples from the run's worked examples (`question` is a
    record's prompt, `rationale` ends with its answer line), as `rationale._messages` shows
    them: mode "refine", the refine template's context, and the answering explanation."""
    by_prompt = {r.prompt(): r for r in records}
    out: list[dict[str, Any]] = []
    for e in examples:
        record = by_prompt.get(e["question"])
        if record is None or len(out) == n:
            continue
        # the slip is chosen by the question, so a run's examples are the same on resume
        h = int(hashlib.sha256(e["question"].encode()).hexdigest(), 16)
        n_calcs, slip = len(calculation_matches(e["rationale"])), SLIPS[(h >> 8) % len(SLIPS)]
        for k in range(n_calcs):  # from the hashed calculation on, the first that splits
            wrong = slipped(e["rationale"], (h + k) % n_calcs, slip)
            fixed = answered(e["rationale"], wrong[1]) if wrong else None
            if wrong and fixed:
                out.append({"question": e["question"], "mode": "refine", "rationale": fixed, "context": {
                    "gold": record.gold_display(), "previous_rationale": e["rationale"],
                    "previous_iteration": 0, "history": [], "profile": None,
                    "student_attempt": wrong[0], "student_error": wrong[1]}})
                break
    return out
