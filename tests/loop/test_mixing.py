"""Mixing policies, feedback construction and the paired comparison (no models)."""

from __future__ import annotations

from undo.loop.feedback import refine_items, student_profile
from undo.loop.mixing import mix_training_set
from undo.stats import paired_bootstrap
from undo.tasks.base import Record

TRAIN = [Record(f"q{i}", f"Question {i}?", str(i), "number") for i in range(4)]
# q0 solved by the student, q1-q3 failed
ATTEMPTS = {
    "q0": {"id": "q0", "correct": True, "output": "0+0=0. The answer is 0."},
    "q1": {"id": "q1", "correct": False, "output": "The answer is 7."},
    "q2": {"id": "q2", "correct": False, "output": "I think 9. The answer is 9."},
    "q3": {"id": "q3", "correct": False, "output": ""},
}
REFINED = {"q1": {"rationale": "refined 1. The answer is 1."}, "q2": {"rationale": None}}
LATEST = {"q0": "teacher 0", "q1": "teacher 1", "q2": "teacher 2"}  # q3: never verified


def test_mix_uses_student_traces_refinements_then_last_teacher_rationale():
    rows, counts = mix_training_set("mix", 1, TRAIN, ATTEMPTS, REFINED, LATEST, [])
    by_id = {r["id"]: r for r in rows}
    assert by_id["q0"]["source"] == "student" and by_id["q0"]["rationale"].startswith("0+0")
    assert by_id["q1"]["source"] == "refined"
    assert by_id["q2"]["source"] == "teacher" and by_id["q2"]["rationale"] == "teacher 2"
    assert "q3" not in by_id
    assert counts == {"student": 1, "refined": 1, "teacher": 1, "none": 1}


def test_replace_uses_teacher_traces_only():
    rows, _ = mix_training_set("replace", 1, TRAIN, ATTEMPTS, REFINED, LATEST, [])
    assert [(r["id"], r["source"]) for r in rows] == [("q0", "teacher"), ("q1", "refined"),
                                                      ("q2", "teacher")]


def test_accumulate_appends_refinements_to_the_previous_set():
    prev = [{"id": "q0", "rationale": "old 0", "source": "teacher", "iteration": 0}]
    rows, _ = mix_training_set("accumulate", 2, TRAIN, ATTEMPTS, REFINED, LATEST, prev)
    assert [(r["id"], r["source"]) for r in rows] == [("q0", "teacher"), ("q1", "refined")]


def test_refine_items_carry_feedback_for_wrong_questions_only():
    history = {"q1": [{"iteration": 0, "rationale": "t0"}, {"iteration": 1, "rationale": "t1"}]}
    profile = student_profile([(0, 0.1), (1, 0.2)], [
        {"question": "v1", "predicted": "3", "correct": False},
        {"question": "v2", "predicted": "4", "correct": True},
    ], shown=2, seed=0)
    items = refine_items(TRAIN, ATTEMPTS, history, profile, show_history=True)
    assert [it.record.id for it in items] == ["q1", "q2", "q3"]
    q1 = items[0].context
    assert q1["previous_rationale"] == "t1" and q1["history"] == [{"iteration": 0, "rationale": "t0"}]
    assert q1["student_attempt"] == "The answer is 7."
    assert items[2].context["student_attempt"] == "(no answer)"
    assert items[1].context["previous_rationale"] is None
    assert profile["accuracy_history"] == "iteration 0: 10%, iteration 1: 20%"
    assert [e["question"] for e in profile["errors"]] == ["v1", "v2"]


def test_paired_bootstrap_interval():
    a = [False] * 50 + [True] * 50
    b = [True] * 80 + [False] * 20
    d, lo, hi = paired_bootstrap(a, b, n_boot=2000)
    assert abs(d - 0.3) < 1e-9 and lo < d < hi and lo > 0
    d0, lo0, hi0 = paired_bootstrap(a, a, n_boot=500)
    assert d0 == lo0 == hi0 == 0


def test_every_verified_refinement_sample_is_a_training_example():
    refined = {"q1": {"rationale": "a. The answer is 1.", "rationales": ["a. The answer is 1.",
                                                                         "b. The answer is 1."]}}
    for policy in ("mix", "replace", "accumulate"):
        rows, counts = mix_training_set(policy, 1, TRAIN, ATTEMPTS, refined, LATEST, [])
        assert [r["rationale"][0] for r in rows if r["id"] == "q1"] == ["a", "b"], policy
        assert counts["refined"] == 2


def test_headline_rows_and_sentence(tmp_path):
    import json

    from undo.outputs.report import headline, headline_markdown

    def write(part: str, correct: list[bool]) -> None:
        (tmp_path / part).mkdir()
        with (tmp_path / part / "attempts_test.jsonl").open("w") as f:
            for i, c in enumerate(correct):
                f.write(json.dumps({"id": f"q{i}", "correct": c}) + "\n")

    write("base", [False] * 200)
    write("iter_0", [i % 4 == 0 for i in range(200)])  # 25 %
    write("iter_1", [i % 2 == 0 for i in range(200)])  # 50 %: every one-shot success kept
    h = headline(tmp_path, best=1)
    assert [r["arm"] for r in h["rows"]] == ["base student", "one-shot (iteration 0)",
                                             "UNDO (iteration 1, best by val)"]
    undo = h["rows"][2]
    assert undo["test_acc"] == 0.5 and abs(undo["diff_vs_oneshot"] - 0.25) < 1e-9
    assert undo["diff_ci_low"] > 0 and "excludes zero: a gain" in h["sentence"]
    assert "UNDO (iteration 1" in headline_markdown(h)
    # best by val is iteration 0: the last UNDO iteration is still shown, marked not chosen
    h0 = headline(tmp_path, best=0)
    assert [r["arm"] for r in h0["rows"]] == ["base student", "one-shot (iteration 0)",
                                              "UNDO (iteration 1, not chosen: val not above one-shot)"]
    assert "not chosen" in h0["sentence"] and "+25.0%" in h0["sentence"]


def test_a_right_answer_through_a_false_step_is_refined_not_imitated():
    attempts = {**ATTEMPTS, "q0": {"id": "q0", "correct": True, "output": "1+1=3. The answer is 0.",
                                   "false_step": "1+1=3"}}
    refined = {**REFINED, "q0": {"rationale": "0+0=0. The answer is 0."}}
    rows, counts = mix_training_set("mix", 1, TRAIN, attempts, refined, LATEST, [])
    assert {r["id"]: r["source"] for r in rows}["q0"] == "refined"
    assert [it.record.id for it in refine_items(TRAIN, attempts, {}, None, False)] == ["q0", "q1", "q2", "q3"]
    # with teacher.check_steps off, the answer alone decides
    rows, _ = mix_training_set("mix", 1, TRAIN, attempts, refined, LATEST, [], check_steps=False)
    assert {r["id"]: r["source"] for r in rows}["q0"] == "student"
    items = refine_items(TRAIN, attempts, {}, None, False, check_steps=False)
    assert "q0" not in [it.record.id for it in items]


def test_tailoring_counts_new_text_repeats_and_fixed_false_steps():
    from undo.loop.feedback import tailoring

    history = {"q1": [{"iteration": 0, "rationale": "3 - 2 = 1\nThe answer is 1."}],
               "q2": [{"iteration": 0, "rationale": "old two"}]}
    attempts = {**ATTEMPTS, "q1": {"correct": False, "output": "3 - 2 = 5\nThe answer is 5.",
                                   "false_step": "3 - 2 = 5"}}
    items = refine_items(TRAIN, attempts, history, None, show_history=True)
    refined = {
        # one text the old rationale again (whitespace aside), one new that writes 3 - 2 right
        "q1": {"rationale": "3 - 2 = 1\nThe answer is 1.",
               "rationales": ["3 - 2 = 1\n The answer is 1.", "3 - 1 - 1 = 1\n3 - 2 = 1\nThe answer is 1."]},
        "q2": {"rationale": None, "rationales": []},
        "q3": {"rationale": "new three", "rationales": ["new three"]},
    }
    t = tailoring(items, refined)
    assert t == {"questions": 3, "questions_verified": 2, "questions_new": 2, "texts": 3, "texts_new": 2,
                 "texts_same": 1, "attempt_shown": 3, "false_step_named": 1, "false_step_texts": 2,
                 "false_step_fixed": 2}
    hidden = refine_items(TRAIN, attempts, history, None, show_history=True, show_attempt=False)
    t = tailoring(hidden, refined)
    assert t["attempt_shown"] == t["false_step_named"] == t["false_step_texts"] == 0


def test_refine_repeat_trains_on_the_previous_rationale_without_a_teacher(tmp_path):
    """loop.refine=repeat (the UNDO-repeat ablation): each failed question's refinement is its
    last verified rationale, refine_samples copies, labelled `repeat`; no teacher is built."""
    from pathlib import Path

    from undo.config import load_config
    from undo.loop import UndoRun
    from undo.runstore import append_jsonl

    cfg = load_config(Path(__file__).resolve().parents[2] / "configs" / "demo.yaml", [
        f"output.dir={tmp_path}", "splits.train=4", "splits.val=2", "splits.test=2", "loop.refine=repeat",
        "teacher.refine_samples=3"])
    run = UndoRun(cfg)
    run.prepare()
    train = run.splits["train"]
    for r in train[:3]:  # iteration 0 verified three of the four
        append_jsonl(run.store.rationales_file(0), {"id": r.id, "rationale": f"old {r.id}"})
    attempts = {r.id: {"correct": i == 0, "output": "1 + 1 = 2\nThe answer is 2."} for i, r in enumerate(train)}
    items = refine_items(train, attempts, run.teacher_history(1), None, show_history=True)
    rows = {r["id"]: r for r in run.repeat(1, items)}
    assert run._teacher is None
    assert [rows[r.id]["rationales"] for r in train[1:]] == [[f"old {train[1].id}"] * 3,
                                                            [f"old {train[2].id}"] * 3, []]
    assert rows[train[3].id]["reason"] == "no_rationale"
    data, counts = mix_training_set("mix", 1, train, attempts, rows,
                                    {i: h[-1]["rationale"] for i, h in run.teacher_history(1).items()}, [])
    assert counts == {"student": 1, "repeat": 6, "none": 1}
    from undo.loop.feedback import tailoring

    t = tailoring(items, rows)
    assert (t["texts_new"], t["texts_same"]) == (0, 6)


def test_a_bench_control_arms_rows_are_labelled_by_their_mode():
    from undo.loop.mixing import mix_training_set
    from undo.tasks.base import Record

    r = Record("q1", "1 + 1 =", "2", "number")
    wrong = {"q1": {"id": "q1", "correct": False, "output": "1 + 1 = 3\nThe answer is 3.",
                    "false_step": "1 + 1 = 3"}}
    for mode, source in (("refine", "refined"), ("repeat", "repeat"), ("control", "control")):
        refined = {"q1": {"id": "q1", "rationale": "1 + 1 = 2\nThe answer is 2.", "mode": mode}}
        rows, counts = mix_training_set("mix", 1, [r], wrong, refined, {}, [])
        assert [x["source"] for x in rows] == [source] and counts.get(source) == 1
