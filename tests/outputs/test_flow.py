"""The learning flow of a run folder: transitions, one question's story, the report's grid."""

from __future__ import annotations

import json
from pathlib import Path

from undo.outputs.flow import fixed_story, flow_summary, learning_flow, story_pick
from undo.outputs.report_html import common_opening, grid_rows

Q = "State the final answer to the following arithmetic problem: "
GOLD_T2 = "58 + 26 = 84\n84 + 34 = 118\nThe answer is 118."


def _write(path: Path, rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def _attempt(qid: str, output: str, correct: bool, false_step: str | None = None) -> dict:
    return {"id": qid, "output": output, "correct": correct, "false_step": false_step}


def a_run(root: Path) -> Path:
    """One UNDO iteration over three train questions and one val question:
    t1 wrong then fixed by a new refinement, t2 refined and still wrong, t3 right throughout."""
    run = root / "run"
    run.mkdir()
    (run / "config.yaml").write_text("name: run\n")
    train = [{"id": "t1", "question": Q + "43 + 14 - 10 =", "answer": "47"},
             {"id": "t2", "question": Q + "58 + 26 + 34 =", "answer": "118"},
             {"id": "t3", "question": Q + "1 + 2 + 3 =", "answer": "6"}]
    _write(run / "splits/train.jsonl", train)
    _write(run / "splits/val.jsonl", [{"id": "v1", "question": Q + "2 + 2 + 2 =", "answer": "6"}])
    old = {"t1": "43 + 14 = 57\n57 - 10 = 47\nThe answer is 47.",
           "t2": "58 + 26 = 84\n84 + 34 = 118\nThe answer is 118.",
           "t3": "1 + 2 = 3\n3 + 3 = 6\nThe answer is 6."}
    for k in (0, 1):
        (run / f"iter_{k}").mkdir(exist_ok=True)
        (run / f"iter_{k}/metrics.json").write_text(json.dumps({"iteration": k}))
        _write(run / f"iter_{k}/attempts_val.jsonl", [_attempt("v1", "The answer is 6.", k == 1)])
    _write(run / "iter_0/rationales.jsonl", [{"id": i, "rationale": t} for i, t in old.items()])
    _write(run / "iter_0/train_data.jsonl", [{"id": i, "source": "teacher"} for i in old])
    _write(run / "iter_1/attempts_train.jsonl", [  # student 0, diagnosed
        _attempt("t1", "43 + 14 = 67\n67 - 10 = 57\nThe answer is 57.", False, "43 + 14 = 67"),
        _attempt("t2", "58 + 26 = 74\n74 + 34 = 108\nThe answer is 108.", False, "58 + 26 = 74"),
        _attempt("t3", "1 + 2 = 3\n3 + 3 = 6\nThe answer is 6.", True)])
    fixed = "43 + 10 = 53\n53 + 4 = 57\n57 - 10 = 47\nThe answer is 47."
    _write(run / "iter_1/rationales.jsonl", [{"id": "t1", "rationale": fixed, "mode": "refine"},
                                             {"id": "t2", "rationale": old["t2"], "mode": "refine"}])
    sources = {"t1": "refined", "t2": "refined", "t3": "student"}
    _write(run / "iter_1/train_data.jsonl", [{"id": i, "source": s} for i, s in sources.items()])
    _write(run / "iter_2/attempts_train.jsonl", [  # student 1 on train, after stopping
        _attempt("t1", "43 + 10 = 53\n53 + 4 = 57\n57 - 10 = 47\nThe answer is 47.", True),
        _attempt("t2", "58 + 26 = 74\n74 + 34 = 108\nThe answer is 108.", False, "58 + 26 = 74"),
        _attempt("t3", "1 + 2 = 3\n3 + 3 = 6\nThe answer is 6.", True)])
    return run


def test_transitions_between_iterations(tmp_path):
    flow = learning_flow(a_run(tmp_path))
    assert flow["counts"]["train"] == [{"iteration": 1, "fixed": 1, "broken": 0, "kept": 1, "stuck": 1,
                                        "never_refined": 0}]
    assert flow["counts"]["val"] == [{"iteration": 1, "fixed": 1, "broken": 0, "kept": 0, "still_wrong": 0}]


def test_the_story_picks_the_question_a_refinement_fixed(tmp_path):
    run = a_run(tmp_path)
    assert story_pick(run) == ("t1", 1)
    story = fixed_story(run, attempt_shown=True)
    text = "\n".join(story)
    assert "43 + 14 - 10 =" in story[0] and "(gold 47)" in story[0]
    assert "student 0 wrote:       43 + 14 = 67 / 67 - 10 = 57 / The answer is 57." in text
    assert "its first false step:  43 + 14 = 67" in text
    assert "teacher's refinement:  43 + 10 = 53 / 53 + 4 = 57" in text and "was shown this attempt" in text
    assert "student 1 now writes:" in text and "(right)" in text
    assert "--question t1" in story[-1]
    # a refinement that echoes its prompt (it still verifies) does not tell the story
    rows = [json.loads(x) for x in (run / "iter_1/rationales.jsonl").read_text().splitlines()]
    rows[0]["rationale"] = "The solution the learner studied most recently:\n" + rows[0]["rationale"]
    _write(run / "iter_1/rationales.jsonl", rows)
    from undo.outputs.flow import _clean

    assert not _clean(rows[0]["rationale"]) and _clean(GOLD_T2)
    # without the last student's train answers, the story says so instead of guessing
    (run / "iter_2/attempts_train.jsonl").unlink()
    assert "not asked (loop.flow_train_eval=false)" in "\n".join(fixed_story(run, attempt_shown=False))


def test_the_grid_names_rows_by_question_and_tags_them_for_the_filter(tmp_path):
    run = a_run(tmp_path)
    grid = flow_summary(run)["grid"]
    rows = grid_rows(run, [{"iteration": 0}, {"iteration": 1}], grid, {})
    by_id = {r["id"]: r for r in rows}
    assert [r["split"] for r in rows] == ["train", "train", "train", "val"]
    assert by_id["t1"]["tags"] == ["fixed", "refined", "train"]
    assert by_id["t2"]["tags"] == ["refined", "train", "unfixed"]
    assert by_id["t3"]["tags"] == ["train"] and by_id["v1"]["tags"] == ["val"]
    assert [c["cls"] for c in by_id["t1"]["cells"]] == ["bad", "ok"]
    assert [c["letter"] for c in by_id["t1"]["cells"]] == ["t", "r"]
    assert by_id["t1"]["cells"][1]["title"] == "iteration 1: right; trained on: refined"
    assert common_opening(rows) == Q
    assert common_opening(rows[:1]) == "" and common_opening([{"question": "a b"}, {"question": "a c"}]) == ""
