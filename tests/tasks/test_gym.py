"""The `gym` task: seeded, disjoint generated splits, and grading that agrees with reasoning-gym."""

from __future__ import annotations

import pytest

from undo.config import load_config
from undo.errors import UserError
from undo.grading import answer_line, grade
from undo.tasks import make_splits
from undo.tasks.gym import GOLD_RATIONALES, create


def splits_of(cfg):
    """make_splits on what a whole run config says (it takes only the task, sizes, seed)."""
    return make_splits(cfg.task, cfg.splits, cfg.seed)

reasoning_gym = pytest.importorskip("reasoning_gym", reason="pip install 'undo-distill[gym]'")

CHAIN = ["task.name=gym", "task.dataset=chain_sum", "task.config.min_terms=3", "task.config.max_terms=3",
         "task.config.min_digits=1", "task.config.max_digits=2"]


def _splits(*extra: str) -> dict:
    return splits_of(load_config(overrides=[*CHAIN, "splits.train=300", "splits.val=100",
                                              "splits.test=200", *extra]))


def test_splits_are_sized_disjoint_and_seeded() -> None:
    a = _splits()
    assert {k: len(v) for k, v in a.items()} == {"train": 300, "val": 100, "test": 200}
    questions = {k: {r.question for r in v} for k, v in a.items()}
    assert all(len(q) == len(a[k]) for k, q in questions.items())  # no repeats inside a split
    assert not questions["train"] & questions["val"]
    assert not questions["train"] & questions["test"]
    assert not questions["val"] & questions["test"]
    again = _splits()
    assert [r.to_dict() for r in again["train"]] == [r.to_dict() for r in a["train"]]
    other = _splits("seed=1")
    assert [r.question for r in other["test"]] != [r.question for r in a["test"]]
    # test does not depend on how much train/val is asked for
    small = splits_of(load_config(overrides=[*CHAIN, "splits.train=5", "splits.val=5", "splits.test=200"]))
    assert [r.id for r in small["test"]] == [r.id for r in a["test"]]
    r = a["train"][0]
    assert r.answer_type == "number" and r.grade(answer_line(r.answer)).correct
    assert r.meta["gym_dataset"] == "chain_sum" and r.meta["gold_rationale"]


def test_gold_rationales_reach_the_gold_answer() -> None:
    for r in _splits()["train"][:100]:
        assert r.grade(r.meta["gold_rationale"]).correct, r.meta["gold_rationale"]


@pytest.mark.parametrize("dataset,options", [
    ("chain_sum", {"min_terms": 2, "max_terms": 4, "min_digits": 1, "max_digits": 3}),
    ("leg_counting", {"min_animals": 2, "max_animals": 3, "max_instances": 5}),
])
def test_our_verdict_agrees_with_score_answer(dataset: str, options: dict) -> None:
    """On 250 generated items, five candidate answers each (the gold and four wrong numbers),
    our grader's verdict on 'The answer is X.' equals the dataset's own score_answer == 1."""
    ds = create(dataset, options, seed=7, size=250)
    checked = disagreements = 0
    for entry in ds:
        gold = int(entry["answer"])
        for candidate in {gold, gold + 1, gold - 1, gold + 10, 10 * gold + 3}:
            ours = grade(f"Working...\n{answer_line(str(candidate))}", entry["answer"], "number").correct
            theirs = ds.score_answer(str(candidate), entry) == 1.0
            checked += 1
            disagreements += ours != theirs
        if dataset in GOLD_RATIONALES:
            assert grade(GOLD_RATIONALES[dataset](entry), entry["answer"], "number").correct
    assert checked >= 1000 and disagreements == 0


def test_bad_gym_settings_are_one_line_errors() -> None:
    with pytest.raises(UserError, match="task.dataset is required"):
        splits_of(load_config(overrides=["task.name=gym"]))
    with pytest.raises(UserError, match="did you mean 'chain_sum'"):
        splits_of(load_config(overrides=["task.name=gym", "task.dataset=chain_sums"]))
    with pytest.raises(UserError, match=r"task.config.max_termz: not an option"):
        splits_of(load_config(overrides=[*CHAIN, "task.config.max_termz=3"]))
    with pytest.raises(UserError, match="splits.test must be a number"):
        splits_of(load_config(overrides=[*CHAIN, "splits.test=null"]))
    # 1-digit sums of 2 terms: far fewer distinct questions than asked for
    with pytest.raises(UserError, match="distinct"):
        splits_of(load_config(overrides=["task.name=gym", "task.dataset=chain_sum", "task.config.min_terms=2",
                                           "task.config.max_terms=2", "task.config.min_digits=1",
                                           "task.config.max_digits=1", "splits.test=500"]))


def test_seeds_and_splits_draw_disjoint_generator_states() -> None:
    """reasoning-gym item i of a dataset made with seed S is Random(S + i): every (run seed,
    split) starts its own block of states, so no two seeds or splits share an item."""
    from undo.tasks.gym import OVERSAMPLE, SPLITS, STATE_BLOCK, split_seed

    starts = sorted(split_seed(seed, split) for seed in range(50) for split in SPLITS)
    assert len(set(starts)) == len(starts)
    assert all(b - a >= STATE_BLOCK for a, b in zip(starts, starts[1:], strict=False))
    assert STATE_BLOCK > 10**6 * OVERSAMPLE  # a million questions per split still fit the block


def test_a_test_question_of_any_seed_is_never_in_another_seeds_train_or_val() -> None:
    """The demo's chain sums repeat across seeds (a popular question comes up again), but a
    question's split is fixed by its text: a development seed's val or train can never hold a
    final seed's test question, and one seed's splits never share one."""
    from undo.tasks.gym import split_of

    splits = {seed: _splits(f"seed={seed}") for seed in (0, 1, 2, 100, 101)}
    for parts in splits.values():
        for split, records in parts.items():
            assert all(split_of(r.question) == split for r in records)
        ids = [r.id for records in parts.values() for r in records]
        assert len(ids) == len(set(ids))
    for a in splits:
        test = {r.id for r in splits[a]["test"]}
        for b in splits:
            if a != b:
                assert not test & {r.id for part in ("train", "val") for r in splits[b][part]}
    # the guarantee is not vacuous: the same question does come up in two seeds' tests
    assert {r.id for r in splits[0]["test"]} & {r.id for r in splits[100]["test"]}
