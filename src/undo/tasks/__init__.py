"""Registered tasks and deterministic splits."""

from __future__ import annotations

import inspect
import random

from undo.config import RunConfig, SplitsConfig, TaskConfig
from undo.errors import UserError
from undo.tasks import builtin, file, gym  # noqa: F401  (registers the built-in tasks)
from undo.tasks.base import TASKS, Record, Task, student_messages

__all__ = ["Record", "Task", "TASKS", "get_task", "make_splits", "student_messages"]


def get_task(cfg: TaskConfig) -> Task:
    factory = TASKS.get(cfg.name)
    if factory is None:
        raise UserError(f"unknown task '{cfg.name}'; known tasks: {', '.join(sorted(TASKS))}")
    return factory(cfg) if inspect.signature(factory).parameters else factory()


def make_splits(task_cfg: TaskConfig, sizes: SplitsConfig, seed: int) -> dict[str, list[Record]]:
    """train/val from the task's train pool (disjoint), test from its test split; seeded.
    A fixed pool (SVAMP, a user's file) gives every seed the same test questions and a
    resampled train/val. A procedural task (gym) generates each split itself from the run seed."""
    task = get_task(task_cfg)
    if task.generate is not None:
        return task.generate(seed, {"train": sizes.train, "val": sizes.val, "test": sizes.test})
    pool = task.load(task_cfg.source, "train")
    test = task.load(task_cfg.test_source or task_cfg.source, "test")
    if task_cfg.test_source:  # a test set of the user's own must be unseen in training
        seen = {_norm(r.question) for r in pool}
        shared = [r for r in test if _norm(r.question) in seen]
        if shared:
            raise UserError(f"task.test_source: {len(shared)} of its {len(test)} questions are also in "
                            f"task.source (e.g. {shared[0].question[:60]!r}); a test set must be unseen")
    # one seed's train, val and test never share a question: a repeat (case and spacing
    # aside) is kept once, and a pool question that the test split also holds is left to test
    test = list(_unique(test).values())
    in_test = set(_unique(test))
    pool = [r for q, r in _unique(pool).items() if q not in in_test]
    rng = random.Random(seed)
    order = list(range(len(pool)))
    rng.shuffle(order)
    n_val = sizes.val
    if n_val >= len(pool):
        raise UserError(f"splits.val={n_val} leaves no training questions (pool has {len(pool)})")
    val = [pool[i] for i in order[:n_val]]
    rest = order[n_val:]
    n_train = len(rest) if sizes.train is None else min(sizes.train, len(rest))
    train = [pool[i] for i in sorted(rest[:n_train])]
    if sizes.test is not None and sizes.test < len(test):
        idx = sorted(random.Random(seed + 1).sample(range(len(test)), sizes.test))
        test = [test[i] for i in idx]
    return {"train": train, "val": val, "test": test}


def _unique(records: list[Record]) -> dict[str, Record]:
    """The first record of each question text, keyed by its normalised text."""
    out: dict[str, Record] = {}
    for r in records:
        out.setdefault(_norm(r.question), r)
    return out


def _norm(question: str) -> str:
    return " ".join(question.lower().split())


def split_part(cfg: RunConfig, split: str) -> list[Record]:
    if split not in ("train", "val", "test"):
        raise UserError(f"unknown split '{split}' (train, val or test)")
    return make_splits(cfg.task, cfg.splits, cfg.seed)[split]
