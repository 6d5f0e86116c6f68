"""Refine worked examples: a slipped attempt answered by the solution in smaller steps."""

from __future__ import annotations

import pytest

from undo.arithmetic import first_false_step, smaller_steps, split_calculation
from undo.config import OpenAIConfig, TeacherConfig
from undo.errors import UserError
from undo.tasks.base import Record
from undo.teacher.rationale import TeachItem, _messages
from undo.teacher.refine_examples import answered, refine_examples, slipped


@pytest.mark.parametrize("a, op, b, n", [
    (57, "+", 87, 2), (14, "-", 5, 2), (23, "*", 14, 3), (-27, "+", 73, 2), (67, "-", 94, 2),
    (8, "+", 5, 2), (3, "+", 4, 1), (10, "-", 3, 1), (5, "-", -3, 1), (40, "+", 20, 1)])
def test_smaller_steps_each_hold_and_reach_the_result(a, op, b, n):
    steps = smaller_steps(a, op, b)
    assert len(steps) == n
    assert all(first_false_step(s) is None for s in steps)
    assert steps[-1].endswith(f"= {eval(f'{a} {op} ({b})')}")  # noqa: S307 (literal ints)
    assert steps[0].startswith(f"{a} {op} ")


def test_split_calculation_reads_the_written_step_and_recomputes_it():
    assert split_calculation("14 - 5 = 8") == ["14 - 4 = 10", "10 - 1 = 9"]
    assert split_calculation("-27 + 73 = 40") == ["-27 + 70 = 43", "43 + 3 = 46"]
    assert split_calculation("12 x 13 = 100") == ["12 * 10 = 120", "12 * 3 = 36", "120 + 36 = 156"]
    assert split_calculation("1 + 2 + 3 = 6") is None and split_calculation("8 / 2 = 4") is None
    assert split_calculation("no calculation") is None


GOLD = "43 + 14 = 57\n57 - 10 = 47\nThe answer is 47."


def test_a_slip_is_carried_through_to_the_answer():
    attempt, false_step = slipped(GOLD, 0, 10)
    assert false_step == "43 + 14 = 67"
    assert attempt == "43 + 14 = 67\n67 - 10 = 57\nThe answer is 57."
    assert first_false_step(attempt) == false_step  # the later step holds on the slipped value
    attempt, false_step = slipped(GOLD, 1, -1)
    assert (attempt, false_step) == ("43 + 14 = 57\n57 - 10 = 46\nThe answer is 46.", "57 - 10 = 46")
    # an answer that is not the last calculation's result cannot be slipped consistently
    assert slipped("2 + 3 = 5\nThe answer is 7.", 0, 1) is None


def test_the_answer_splits_the_step_the_student_got_wrong():
    assert answered(GOLD, "43 + 14 = 67") == "43 + 10 = 53\n53 + 4 = 57\n57 - 10 = 47\nThe answer is 47."
    assert answered(GOLD, "57 - 10 = 46") is None  # nothing to split
    assert answered(GOLD, "11 + 19 = 31") is None  # not a step of this solution


def records() -> list[Record]:
    out = []
    for i, (a, b, c) in enumerate([(43, 14, 10), (58, 26, 34), (71, 83, 11)]):
        q = f"{a} + {b} - {c} ="
        out.append(Record(f"r{i}", q, str(a + b - c), "number",
                          meta={"gold_rationale": f"{a} + {b} = {a + b}\n{a + b} - {c} = {a + b - c}"}))
    return out


def test_refine_examples_are_built_from_worked_examples_and_shown_as_refine_turns():
    recs = records()
    shots = [{"question": r.prompt(), "rationale": f"{r.meta['gold_rationale']}\nThe answer is {r.answer}."}
             for r in recs]
    examples = refine_examples(shots, recs, 2)
    assert len(examples) == 2 and examples == refine_examples(shots, recs, 2)  # the same on resume
    for e, r in zip(examples, recs, strict=False):
        ctx = e["context"]
        assert e["mode"] == "refine" and ctx["gold"] == r.answer
        assert first_false_step(ctx["student_attempt"]) == ctx["student_error"]
        assert first_false_step(e["rationale"]) is None
        assert e["rationale"].endswith(f"The answer is {r.answer}.")
        assert e["rationale"] != ctx["previous_rationale"]  # the answer is a new text
    cfg = TeacherConfig(backend="openai", model="m", openai=OpenAIConfig(base_url="http://x"), style="concise",
                        show_attempt=True, few_shot=3, refine_examples=2)
    item = TeachItem(recs[2], mode="refine", context={
        "previous_rationale": shots[2]["rationale"], "previous_iteration": 0, "history": [], "profile": None,
        "student_attempt": "71 + 83 = 144\n144 - 11 = 133\nThe answer is 133.",
        "student_error": "71 + 83 = 144"})
    chat = _messages(item, "refine", cfg, examples)
    assert [m["role"] for m in chat] == ["user", "assistant", "user", "assistant", "user"]
    first = chat[0]["content"]  # the example's own question, attempt, false step and gold
    assert examples[0]["context"]["student_attempt"] in first and "first false calculation" in first
    assert f"The final answer is {recs[0].answer}." in first and recs[2].answer not in first
    assert chat[1]["content"] == examples[0]["rationale"]
    assert "71 + 83 = 144" in chat[-1]["content"]


@pytest.mark.parametrize("fields, key", [
    ({"show_attempt": False, "few_shot": 3, "refine_examples": 2}, "show_attempt"),
    ({"show_attempt": True, "few_shot": 1, "refine_examples": 2}, "few_shot")])
def test_refine_examples_need_attempts_shown_and_enough_worked_examples(fields, key):
    from undo.config import load_config

    with pytest.raises(UserError, match=f"teacher.*{key}"):
        load_config(None, [f"teacher.{k}={str(v).lower()}" for k, v in fields.items()])


def test_the_refine_step_asks_the_refine_model_with_refine_examples(tmp_path, monkeypatch):
    """teacher.refine_model writes the refinements (the teacher the rest), and each refine
    request shows teacher.refine_examples refine worked examples before its own question."""
    from fakes.fault_server import FaultServer

    from undo.config import load_config
    from undo.loop import UndoRun
    from undo.loop.feedback import refine_items

    monkeypatch.setenv("UNDO_CACHE_DIR", str(tmp_path / "cache"))
    asked: list[tuple[str, list]] = []
    with FaultServer(lambda _n, body: asked.append((body["model"], body["messages"])),
                     models=("test-model", "refiner")) as srv:
        run = UndoRun(load_config(overrides=[
            "task.name=gym", "task.dataset=chain_sum", "task.config.min_terms=3", "task.config.max_terms=3",
            "task.config.min_digits=2", "task.config.max_digits=2",
            "splits.train=4", "splits.val=1", "splits.test=1", "teacher.backend=openai",
            "teacher.model=test-model", f"teacher.openai.base_url={srv.url}", "teacher.refine_model=refiner",
            "teacher.style=concise", "teacher.few_shot=3", "teacher.refine_examples=2",
            "teacher.show_attempt=true", "teacher.max_attempts=1", "teacher.rationalize=false",
            f"output.dir={tmp_path}", "name=r"]))
        run.prepare()
        train = run.splits["train"]
        run.teach(0, [TeachItem(r) for r in train], "teacher explains", run.worked_examples())
        explained = len(asked)
        wrong = {r.id: {"id": r.id, "correct": False, "output": "10 + 10 = 21\nThe answer is 21.",
                        "false_step": "10 + 10 = 21"} for r in train}
        items = refine_items(train, wrong, run.teacher_history(1), None, False)
        run.teach(1, items, "teacher refines", run.refine_shots())
    assert explained == 4 and {m for m, _ in asked[:explained]} == {"test-model"}
    refines = asked[explained:]
    assert len(refines) == 4 and {m for m, _ in refines} == {"refiner"}
    for _, chat in refines:
        shown = [m for m in chat[:-1] if m["role"] == "user"]
        assert 1 <= len(shown) <= 2 and all("first false calculation" in m["content"] for m in shown)
        assert "10 + 10 = 21" in chat[-1]["content"]
