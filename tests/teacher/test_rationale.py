"""Verification, resampling, rationalization and resume of the rationale stage.

Driven through our real OpenAI client against the loopback test server, whose
answers are a pure function of the prompt (tests/fakes/fault_server.py).
"""

from __future__ import annotations

import json
import re

import pytest
from fakes.fault_server import FaultServer, expected_answer

from undo.config import OpenAIConfig, TeacherConfig
from undo.tasks.base import Record
from undo.teacher.base import Usage
from undo.teacher.cache import CachedTeacher, CompletionCache
from undo.teacher.openai_backend import OpenAIBackend
from undo.teacher.prompts import leaks_hint, render
from undo.teacher.rationale import TeachItem, _messages, generate_rationales


@pytest.fixture
def server():
    s = FaultServer().start()
    yield s
    s.stop()


def teacher_for(url: str, tmp_path, **kw) -> tuple[CachedTeacher, TeacherConfig]:
    cfg = TeacherConfig(backend="openai", model="test-model", openai=OpenAIConfig(base_url=url, max_retries=2),
                        max_attempts=2, rationalize=True, **kw)
    backend = OpenAIBackend(cfg, backoff_base=0.01, backoff_max=0.05)
    return CachedTeacher(backend, CompletionCache(tmp_path / "cache.sqlite")), cfg


def answer_of(messages) -> str:
    return re.search(r"The answer is (\d+)\.", expected_answer(messages)).group(1)


def test_verified_failed_and_rationalized_are_recorded(server, tmp_path):
    # the hint template leaves the gold out, so the server's answer to it is knowable up front
    hint = tmp_path / "rationalize.j2"
    hint.write_text("{{ question }} Work through the quantities one at a time and show each step.")
    teacher, cfg = teacher_for(server.url, tmp_path, prompts={"rationalize": str(hint)})
    solvable = Record("q1", "How many apples are in 2 baskets of 3?", "0", "number")
    solvable.answer = answer_of(_messages(TeachItem(solvable), "explain", cfg, []))
    hinted = Record("q2", "What is seven times six?", "0", "number")
    hinted.answer = answer_of(_messages(TeachItem(hinted), "rationalize", cfg, []))
    hopeless = Record("q3", "What is the meaning of life?", "-1", "number")
    out = tmp_path / "r.jsonl"
    usage = Usage()
    rows = generate_rationales([TeachItem(r) for r in (solvable, hinted, hopeless)], teacher, cfg,
                               out, usage)
    by_id = {r["id"]: r for r in rows}
    assert by_id["q1"]["verdict"] == "verified" and len(by_id["q1"]["attempts"]) == 1
    # attempt 0 greedy, attempt 1 sampled (a distinct cache entry), then the hint
    assert by_id["q2"]["verdict"] == "rationalized", by_id["q2"]["attempts"][-1]
    assert [a["mode"] for a in by_id["q2"]["attempts"]] == ["explain", "explain", "rationalize"]
    assert by_id["q3"]["verdict"] == "failed" and by_id["q3"]["reason"] == "wrong_answer"
    assert by_id["q3"]["rationale"] is None
    assert len(by_id["q3"]["attempts"]) == 3
    assert usage.requests == 1 + 3 + 3
    assert [json.loads(line)["id"] for line in out.read_text().splitlines()] == ["q1", "q2", "q3"]


def test_resume_makes_no_teacher_call(server, tmp_path):
    teacher, cfg = teacher_for(server.url, tmp_path)
    recs = [Record(f"q{i}", f"Question number {i}?", "5", "number") for i in range(6)]
    out = tmp_path / "r.jsonl"
    generate_rationales([TeachItem(r) for r in recs[:3]], teacher, cfg, out, Usage())
    calls = server.chat_calls
    # the same questions again, plus new ones: only the new ones reach the server
    rows = generate_rationales([TeachItem(r) for r in recs], teacher, cfg, out, Usage())
    assert [r["id"] for r in rows] == [r.id for r in recs]
    assert server.chat_calls - calls == 3 * 3
    # a fresh output file (rows lost) is rebuilt from the cache alone
    out.unlink()
    calls = server.chat_calls
    usage = Usage()
    generate_rationales([TeachItem(r) for r in recs], teacher, cfg, out, usage)
    assert server.chat_calls == calls and usage.cached == 18 and usage.requests == 0


def test_refine_prompt_carries_the_feedback():
    text = render(
        "refine", {}, question="Q?", gold="4", answer_format="the final number only",
        previous_rationale="2+2=4. The answer is 4.", history=[],
        student_attempt="2*3=7. The answer is 7.", student_error="2*3=7",
        profile={"accuracy_history": "iteration 0: 10%",
                 "errors": [{"question": "V?", "predicted": "3", "correct": False}]},
    )
    for needle in ("Q?", "Correct answer: 4", "2+2=4", "2*3=7. The answer is 7.", "iteration 0: 10%",
                   "V? -> it said 3 (wrong)", "first false calculation: 2*3=7", "The answer is X."):
        assert needle in text
    # teacher.show_attempt=false: neither the attempt nor its error, in either style
    for style in ("stepwise", "concise"):
        text = render("refine", {}, style, question="Q?", gold="4", answer_format="a number",
                      previous_rationale=None, history=[], student_attempt=None, student_error=None,
                      profile=None)
        assert "Q?" in text and "wrong attempt" not in text and "which is wrong" not in text


def test_prompt_override_by_path(tmp_path):
    p = tmp_path / "mine.j2"
    p.write_text("Custom: {{ question }}")
    assert render("explain", {"explain": str(p)}, question="Q", examples=[],
                  answer_format="x") == "Custom: Q"


def test_hint_leaks_are_rejected():
    assert leaks_hint("As given, the answer is 7. The answer is 7.")
    assert leaks_hint("The answer is 7.")
    assert not leaks_hint(
        "Tom has 3 bags with 2 apples each, so he has 3 * 2 = 6 apples. He buys one more, "
        "so 6 + 1 = 7. The answer is 7.")


def test_verified_rationales_end_with_the_answer_line():
    from undo.teacher.rationale import with_answer_line

    boxed = "5 + 5 = 10, so \\(\\boxed{10}\\)."
    assert with_answer_line(boxed, Record("a", "q", "10", "number")).endswith("\nThe answer is 10.")
    assert with_answer_line("Yes, it is.", Record("b", "q", "yes", "yesno")).endswith(
        "The answer is Yes.")
    assert with_answer_line("banks", Record("c", "q", "A", "choice", ["bank", "mall"])).endswith(
        "The answer is (A) bank.")
    kept = "3 = 3. The answer is 3."
    assert with_answer_line(kept, Record("d", "q", "3", "number")) == kept


def test_refinements_are_resampled_but_never_rationalized(server, tmp_path):
    teacher, cfg = teacher_for(server.url, tmp_path)
    ctx = {"previous_rationale": None, "history": [], "student_attempt": "The answer is 1.",
           "student_error": None, "profile": None}
    item = TeachItem(Record("r1", "Impossible?", "-1", "number"), mode="refine", context=ctx)
    [row] = generate_rationales([item], teacher, cfg, tmp_path / "r.jsonl", Usage())
    assert row["verdict"] == "failed" and row["mode"] == "refine"
    assert [a["mode"] for a in row["attempts"]] == ["refine", "refine"]  # max_attempts=2


def test_few_shot_examples_come_from_gold_rationales_and_never_show_the_question_itself():
    from undo.teacher.rationale import few_shot_examples

    gsm = [Record(f"g{i}", f"Q{i}?", str(i), "number", meta={"gold_rationale": f"R{i} #### {i}"})
           for i in range(3)]
    shots = few_shot_examples(gsm, 2)
    # each example ends with the answer line the teacher is asked to write
    assert [s["rationale"] for s in shots] == ["R0 #### 0\nThe answer is 0.", "R1 #### 1\nThe answer is 1."]
    cfg = TeacherConfig(backend="openai", model="m", openai=OpenAIConfig(base_url="http://x"))
    own = _messages(TeachItem(gsm[0]), "explain", cfg, shots)
    other = _messages(TeachItem(gsm[2]), "explain", cfg, shots)
    # examples are earlier chat turns: user question, assistant worked solution
    assert [m["role"] for m in other] == ["user", "assistant", "user", "assistant", "user"]
    assert other[1]["content"].startswith("R0") and "Q2?" in other[-1]["content"]
    assert [m["role"] for m in own] == ["user", "assistant", "user"]
    assert not any("R0" in m["content"] for m in own) and own[1]["content"].startswith("R1")
    assert few_shot_examples([Record("s", "Q?", "1", "number")], 1) == []  # none: the teacher writes them


def test_a_task_without_gold_rationales_gets_the_teachers_own_worked_examples(server, tmp_path):
    """teacher_examples: a zero-shot pass over the first train questions, verified, never
    rationalized; its first n verified rationales are the examples; resumed from its file."""
    from undo.teacher.rationale import EXAMPLE_CANDIDATES, example_pass_config, teacher_examples

    teacher, cfg = teacher_for(server.url, tmp_path)
    recs = [Record(f"w{i}", f"Word problem {i}: how many?", "0", "number") for i in range(40)]
    for r in recs[1::2]:  # every other question is one the server answers right
        r.answer = answer_of(_messages(TeachItem(r), "explain", cfg, []))
    out, usage = tmp_path / "examples.jsonl", Usage()

    def run_pass(stage, records):
        return generate_rationales([TeachItem(r) for r in records], teacher, example_pass_config(cfg, stage),
                                   out, usage, examples=[])

    shots = teacher_examples(recs, 3, cfg.style, run_pass)
    assert [s["question"] for s in shots] == [recs[i].prompt() for i in (1, 3, 5)]
    assert all(s["rationale"].endswith(f"The answer is {recs[i].answer}.")
               for s, i in zip(shots, (1, 3, 5), strict=True))
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(rows) == 3 * EXAMPLE_CANDIDATES  # candidates: train's first questions only
    assert all(a["mode"] == "explain" for r in rows for a in r["attempts"])  # no rationalization
    calls = server.chat_calls
    assert teacher_examples(recs, 3, cfg.style, run_pass) == shots and server.chat_calls == calls


def test_refine_samples_asks_for_k_distinct_verified_texts(server, tmp_path):
    """refine_samples=2: sampling continues after the first verified text, up to
    max_attempts + 1 tries; a repeated text counts once (this server answers a prompt
    identically every time), and a question with fewer than k still keeps what verified."""
    # the shipped refine prompt holds the gold, which this server's answer depends on
    refine = tmp_path / "refine.j2"
    refine.write_text("{{ question }} A learner wrote: {{ student_attempt }} Show every step of the "
                      "count again, one animal at a time, so that a learner can follow it.")
    teacher, cfg = teacher_for(server.url, tmp_path, refine_samples=2, prompts={"refine": str(refine)})
    ctx = {"previous_rationale": None, "history": [], "student_attempt": "It said 1.", "student_error": None,
           "profile": None}
    item = TeachItem(Record("r1", "How many legs have 2 cats?", "0", "number"), mode="refine", context=ctx)
    item.record.answer = answer_of(_messages(item, "refine", cfg, []))
    [row] = generate_rationales([item], teacher, cfg, tmp_path / "r.jsonl", Usage())
    assert row["verdict"] == "verified" and len(row["attempts"]) == 3
    assert all(a["correct"] for a in row["attempts"])
    assert row["rationales"] == [row["rationale"]]


@pytest.mark.parametrize("check_steps", [True, False])
def test_a_right_answer_through_a_false_step_is_rejected(server, tmp_path, check_steps):
    # this server echoes the question, so the rationale carries its "7 + 7 - 5 = 14"
    teacher, cfg = teacher_for(server.url, tmp_path, check_steps=check_steps)
    rec = Record("s1", "Is it true that 7 + 7 - 5 = 14?", "0", "number")
    rec.answer = answer_of(_messages(TeachItem(rec), "explain", cfg, []))
    [row] = generate_rationales([TeachItem(rec)], teacher, cfg, tmp_path / "r.jsonl", Usage())
    if check_steps:
        assert row["verdict"] == "failed" and row["reason"] == "false_step"
        explained = [a for a in row["attempts"] if a["mode"] == "explain"]
        assert explained and all(a["predicted"] == rec.answer for a in explained)  # answer was right
    else:
        assert row["verdict"] == "verified"


def test_sampled_attempts_depend_on_the_run_seed_and_greedy_ones_do_not(tmp_path):
    """Seeds 0/1/2 of a comparison must be independent samples of the teacher, not one
    sample served three times from the cache; the greedy answer is shared."""
    bodies: list[dict] = []

    def record(n: int, body: dict) -> str | None:
        bodies.append(body)
        return None

    with FaultServer(record) as srv:
        hopeless = Record("q", "What is the meaning of life?", "-1", "number")
        for seed in (0, 1):
            teacher, cfg = teacher_for(srv.url, tmp_path / f"s{seed}")
            cfg.rationalize = False
            generate_rationales([TeachItem(hopeless)], teacher, cfg, tmp_path / f"r{seed}.jsonl",
                                Usage(), seed=seed)
    greedy = [b for b in bodies if b["temperature"] == 0]
    sampled = [b for b in bodies if b["temperature"] > 0]
    assert len(greedy) == 2 and all("seed" not in b for b in greedy)
    assert [b["seed"] for b in sampled] == [1, 1001]  # attempt 1 of seed 0, then of seed 1


def test_a_refine_prompt_too_long_for_the_model_is_shortened_and_asked_again(tmp_path):
    """HTTP 400 "maximum context length" on a long refine prompt: drop earlier rewrites, then
    the profile, then trim the student's attempt; a prompt that never fits is recorded."""
    long_history = [{"iteration": i, "rationale": "step. " * 400} for i in range(2)]
    limit = 3000  # characters of the last message the fake server accepts

    def too_long(n: int, body: dict) -> str | None:
        return "400ctx" if len(body["messages"][-1]["content"]) > limit else None

    with FaultServer(too_long) as srv:
        teacher, cfg = teacher_for(srv.url, tmp_path)
        cfg.refine_samples = 3  # 4 attempts in one round, all refused at first: still one cut
        fits = TeachItem(Record("r1", "What is 2 + 3?", "5", "number"), "refine",
                         {"previous_rationale": "2 + 3 = 5", "history": long_history,
                          "profile": {"accuracy_history": "0: 40%", "errors": []},
                          "student_attempt": "2 + 3 = 6. The answer is 6.", "student_error": "2 + 3 = 6"})
        never = TeachItem(Record("r2", "x " * 2000, "1", "number"))  # its question alone is too long
        usage = Usage()
        rows = generate_rationales([fits, never], teacher, cfg, tmp_path / "r.jsonl", usage)
    by_id = {r["id"]: r for r in rows}
    assert fits.context["history"] == [] and fits.context["profile"] is not None  # cut just enough
    assert [a["reason"] for a in by_id["r1"]["attempts"]] != ["context_length"]
    assert by_id["r2"]["verdict"] == "failed" and by_id["r2"]["reason"] == "context_length"
    assert usage.failures == 0  # recorded, and the job went on


def test_a_budget_sizes_each_round_and_skips_what_it_cannot_pay_for(server, tmp_path):
    from undo.teacher.budget import TeacherBudget, measured_bytes_per_token

    teacher, cfg = teacher_for(server.url, tmp_path, max_tokens=64)
    records = [Record(f"q{i}", f"What is {i} plus {i}?", "-1", "number") for i in range(6)]  # never right
    bound = TeacherBudget(None, None, max_tokens=64).bound(_messages(TeachItem(records[0]), "explain", cfg, []))
    per_question = sum(bound)
    # room for round 0 of three questions and nothing more (strict bound: 1 byte per token)
    budget = TeacherBudget(tokens_left=3 * per_question + 10, cost_left=None, max_tokens=64)
    usage = Usage()
    out = tmp_path / "r.jsonl"
    rows = generate_rationales([TeachItem(r) for r in records], teacher, cfg, out, usage, budget=budget)
    # round 0 paid for the first three only (in the order given); later rounds for what was left
    tries = [len(r["attempts"]) for r in rows]
    assert min(tries[:3]) >= 1 and tries[3:] == [0, 0, 0] and tries != [2, 2, 2, 0, 0, 0]
    assert [r["reason"] for r in rows[3:]] == ["budget"] * 3
    assert sum(r["reason"] == "budget" for r in rows[:3]) >= 1  # cut after its first attempt
    assert usage.prompt_tokens + usage.completion_tokens <= budget.tokens_left
    # each attempt records its prompt's bytes: the next stage's bound uses the measured ratio
    assert all(a["prompt_bytes"] > a["prompt_tokens"] > 0 for r in rows for a in r["attempts"])
    assert measured_bytes_per_token([out]) > 1.0
    # a cost budget the same way: nothing fits in a cent at $1000 per 1M tokens
    poor = TeacherBudget(None, 0.01, price={"input": 1000.0, "output": 1000.0}, max_tokens=64)
    rows = generate_rationales([TeachItem(records[0])], teacher, cfg, tmp_path / "p.jsonl", Usage(),
                               budget=poor)
    assert rows[0]["reason"] == "budget" and rows[0]["attempts"] == []


@pytest.mark.parametrize("style", ["stepwise", "concise"])
def test_refine_prompt_shows_three_iterations_oldest_first(style):
    """Iteration 3's refine request: the rationales of iterations 0 and 1 are the older
    history, iteration 2's is the newest; both templates show them in that order, the newest
    named as what the student studied most recently."""
    from undo.loop.feedback import refine_items

    rec = Record("q", "Q?", "4", "number")
    past = [{"iteration": k, "rationale": f"RATIONALE-{k}"} for k in range(3)]
    [item] = refine_items([rec], {"q": {"correct": False, "output": "1 + 1 = 3\nThe answer is 3."}},
                          {"q": past}, {"accuracy_history": "iteration 0: 10%", "errors": [
                              {"question": "V?", "predicted": "3", "correct": False}]}, show_history=True)
    text = render("refine", {}, style, question="Q?", gold="4", answer_format="a number", **item.context)
    at = [text.index(f"RATIONALE-{k}") for k in range(3)]
    assert at == sorted(at)
    newest = text[: at[2]].rsplit("\n", 2)[-2]
    assert "most recently" in newest and "iteration 2" in newest
    for k in (0, 1):
        label = text[: at[k]].rsplit("\n", 2)[-2]
        assert f"iteration {k}" in label and "earlier" in label and "most recently" not in label
    assert "later rewrite" not in text.lower()


def test_concise_examples_cut_from_stepwise_rationales():
    """A stepwise chain of thought, cut to its calculations, is a concise worked example only
    when its calculations hold and the last one lands on the gold answer."""
    from undo.teacher.rationale import condensed_examples

    recs = [Record("a", "Olivia had 3 dollars, got 49, has 6 left. How much did she spend?", "46", "number"),
            Record("b", "Q b?", "10", "number"), Record("c", "Q c?", "12", "number"),
            Record("d", "Q d?", "5", "number")]
    rows = [
        {"id": "a", "rationale": "She starts with 3 dollars and gets 49 more: 3 + 49 = 52. "
                                 "Then she has 6 left, so she spent 52 - 6 = 46.\nThe answer is 46."},
        {"id": "b", "rationale": "2 + 3 = 6, and 6 + 4 = 10.\nThe answer is 10."},  # a false step
        # ends on another number than the answer
        {"id": "c", "rationale": "3 * 4 = 12 is what we need. Then 12 + 1 = 13.\nThe answer is 12."},
        {"id": "d", "rationale": "Five of them.\nThe answer is 5."},  # no calculation at all
    ]
    [ex] = condensed_examples(recs, rows, 3)
    assert ex == {"question": recs[0].prompt(), "rationale": "3 + 49 = 52\n52 - 6 = 46\nThe answer is 46."}


def test_a_worked_example_with_a_stray_calculation_is_passed_over():
    """The 1.5B once opened a verified example with "67 - 94 = -27" before solving z + 9 = 28,
    and 26 of 80 rationales then copied the line: such an example is skipped, zero-shot or cut."""
    from undo.teacher.rationale import condensed_examples, examples_from_rows

    recs = [Record("z", "Solve for z: z + 9 = 28", "19", "number"),
            Record("m", "Solve for m: 26*m = 260", "10", "number")]
    rows = [{"id": "z", "rationale": "67 - 94 = -27\nz + 9 = 28\nz = 28 - 9\nz = 19\nThe answer is 19."},
            {"id": "m", "rationale": "26*m = 260\nm = 260 / 26\nm = 10\nThe answer is 10."}]
    assert [e["question"] for e in examples_from_rows(recs, rows, 2)] == [recs[1].prompt()]
    stepwise = [{"id": "z", "rationale": "First, 67 - 94 = -27. Then 28 - 9 = 19.\nThe answer is 19."}]
    assert condensed_examples(recs, stepwise, 1) == []
