"""Tasks: real release files, user files, seeded splits, errors that name the line."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from undo.config import load_config
from undo.errors import UserError
from undo.tasks import get_task, make_splits


def splits_of(cfg):
    """make_splits on what a whole run config says (it takes only the task, sizes, seed)."""
    return make_splits(cfg.task, cfg.splits, cfg.seed)

DATA = Path(__file__).resolve().parent.parent / "fixtures" / "data"  # slices of the release files


def cfg_for(task: str, *extra: str):
    return load_config(overrides=[f"task.name={task}", f"task.source={DATA / task}", *extra])


@pytest.mark.parametrize("task,pool,test,answer_type", [
    ("gsm8k", 41, 10, "number"),
    ("svamp", 140, 60, "number"),           # the fixed seeded 30 % carve-out (700/300 of the release)
    ("commonsenseqa", 40, 10, "choice"),
    ("strategyqa", None, None, "yesno"),    # BIG-bench file: carve-out, duplicates removed
])
def test_builtin_tasks_load_the_original_files(task, pool, test, answer_type):
    t = get_task(cfg_for(task).task)
    train_part, test_part = t.load(str(DATA / task), "train"), t.load(str(DATA / task), "test")
    if pool is not None:
        assert (len(train_part), len(test_part)) == (pool, test)
    ids = [r.id for r in train_part + test_part]
    assert len(ids) == len(set(ids))  # stable, unique ids
    assert {r.answer_type for r in train_part} == {answer_type}
    r = train_part[0]
    assert r.question and r.answer
    if answer_type == "choice":
        assert len(r.choices) == 5 and r.answer in "ABCDE" and "Answer Choices: (A)" in r.prompt()
    if answer_type == "yesno":
        assert {x.answer for x in train_part} == {"yes", "no"}


def test_svamp_record_and_gsm8k_answer_normalised():
    load = get_task(cfg_for("svamp").task).load
    svamp = load(str(DATA / "svamp"), "train") + load(str(DATA / "svamp"), "test")
    chal1 = next(r for r in svamp if r.id == "chal-1")
    assert chal1.answer == "51"
    assert chal1.question.startswith("Each pack of dvds costs 76 dollars.")
    gsm = get_task(cfg_for("gsm8k").task).load(str(DATA / "gsm8k"), "train")
    assert gsm[0].answer == "72"
    assert gsm[0].meta["gold_rationale"].endswith("48+24 = 72 clips altogether in April and May.")


def test_splits_are_seeded_disjoint_and_sized():
    a = splits_of(cfg_for("svamp", "splits.train=100", "splits.val=20", "splits.test=50"))
    b = splits_of(cfg_for("svamp", "splits.train=100", "splits.val=20", "splits.test=50"))
    c = splits_of(cfg_for("svamp", "splits.train=100", "splits.val=20", "splits.test=50", "seed=1"))
    ids = {k: [r.id for r in v] for k, v in a.items()}
    assert {k: len(v) for k, v in ids.items()} == {"train": 100, "val": 20, "test": 50}
    assert ids == {k: [r.id for r in v] for k, v in b.items()}
    assert ids["val"] != [r.id for r in c["val"]]
    assert not set(ids["train"]) & set(ids["val"])
    assert not (set(ids["train"]) | set(ids["val"])) & set(ids["test"])


def _write_user_files(tmp_path: Path) -> dict[str, Path]:
    rows = [{"uid": f"u{i}", "prompt": f"What is {i} + {i}?", "label": 2 * i} for i in range(10)]
    paths = {"jsonl": tmp_path / "d.jsonl", "json": tmp_path / "d.json", "csv": tmp_path / "d.csv",
             "parquet": tmp_path / "d.parquet"}
    paths["jsonl"].write_text("".join(json.dumps(r) + "\n" for r in rows))
    paths["json"].write_text(json.dumps(rows))
    pd.DataFrame(rows).to_csv(paths["csv"], index=False)
    pd.DataFrame(rows).to_parquet(paths["parquet"])
    return paths


@pytest.mark.parametrize("fmt", ["jsonl", "json", "csv", "parquet"])
def test_user_file_with_field_mapping(tmp_path, fmt):
    path = _write_user_files(tmp_path)[fmt]
    cfg = load_config(overrides=[
        "task.name=file", f"task.source={path}", "task.answer_type=number",
        "task.fields.question=prompt", "task.fields.answer=label", "task.fields.id=uid",
        "splits.val=2", "splits.train=null", "splits.test=null"])
    s = splits_of(cfg)
    assert (len(s["train"]), len(s["val"]), len(s["test"])) == (5, 2, 3)  # 30% test carve-out
    rec = next(r for r in s["train"] + s["val"] + s["test"] if r.id == "u3")
    assert rec.question == "What is 3 + 3?" and rec.answer == "6"


def test_user_choice_file_accepts_option_text_as_answer(tmp_path):
    path = tmp_path / "c.jsonl"
    path.write_text(json.dumps({"q": "Sky colour?", "opts": ["red", "blue"], "a": "blue"}) + "\n")
    cfg = load_config(overrides=["task.name=file", f"task.source={path}", f"task.test_source={path}",
                                 "task.answer_type=choice", "task.fields.question=q",
                                 "task.fields.answer=a", "task.fields.choices=opts"])
    [rec] = get_task(cfg.task).load(str(path), "train")
    assert rec.answer == "B" and rec.grade("The answer is (B) blue.").correct


def test_missing_field_names_file_and_line(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text('{"question": "a", "answer": 1}\n{"question": "b"}\n')
    cfg = load_config(overrides=["task.name=file", f"task.source={path}", "task.answer_type=number"])
    with pytest.raises(UserError, match=f"{path}:2: missing field 'answer'"):
        splits_of(cfg)


def test_unknown_task_lists_the_known_ones():
    # refused when the config loads, before anything is written
    known = "commonsenseqa, file, gsm8k, gym, strategyqa, svamp"
    from undo.registries import load

    with pytest.raises(UserError, match=f"config key 'task.name': unknown task; known: {known}"):
        load(overrides=["task.name=mmlu"])
    load_config(overrides=["task.name=mmlu"])  # the schema alone does not know the registries


def test_misspelt_config_key_suggests_the_right_one():
    with pytest.raises(UserError, match="did you mean 'teacher.max_attempts'"):
        load_config(overrides=["teacher.max_atempts=3"])


def test_one_seeds_splits_never_share_a_question_of_a_pool(tmp_path):
    """A question repeated in the file (case and spacing aside) is kept once, in test if the
    test carve-out holds it, so train, val and test of a seed never share one."""
    rows = [{"question": f"What is {i} plus one?", "answer": i + 1} for i in range(30)]
    rows += [{"question": "what is  4 plus ONE?", "answer": 5},
             {"question": "WHAT is 7 plus one?", "answer": 8}]
    pool = tmp_path / "pool.jsonl"
    pool.write_text("".join(json.dumps(r) + "\n" for r in rows))
    for seed in range(3):
        cfg = load_config(overrides=["task.name=file", f"task.source={pool}", "task.answer_type=number",
                                     "splits.train=null", "splits.val=5", "splits.test=null", f"seed={seed}"])
        sp = make_splits(cfg.task, cfg.splits, cfg.seed)
        texts = [" ".join(r.question.lower().split()) for part in sp.values() for r in part]
        assert len(texts) == len(set(texts)) == 30
        assert len(sp["val"]) == 5 and len(sp["train"]) == 30 - 5 - len(sp["test"])
