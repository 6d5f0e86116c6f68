"""undo.outputs.tracking: accelerate's trackers, one tracker run per run folder, resumed runs continue it."""

from __future__ import annotations

import pytest

from undo.errors import UserError
from undo.outputs.tracking import Trackers, iteration_metrics


def test_tensorboard_run_continues_across_invocations(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    first = Trackers(["tensorboard", "none"], tmp_path, "demo")
    assert first and first.others == []
    first.log({"eval/val_acc": 0.25, "note": "text is not a curve", "flag": True}, step=0)
    first.log_training([2.0, 1.5], [5, 10], offset=0)
    first.close()
    again = Trackers("tensorboard", tmp_path, "demo")  # a resumed invocation
    again.log({"eval/val_acc": 0.5}, step=10)
    again.close()
    events = EventAccumulator(str(tmp_path / "tensorboard"))
    events.Reload()
    assert [(e.step, e.value) for e in events.Scalars("eval/val_acc")] == [(0, 0.25), (10, 0.5)]
    assert [e.step for e in events.Scalars("train/loss")] == [5, 10]
    assert set(events.Tags()["scalars"]) == {"eval/val_acc", "train/loss"}


def test_names_undo_does_not_log_itself_go_to_the_trainer(tmp_path):
    t = Trackers(["comet_ml"], tmp_path, "demo")
    assert not t and t.others == ["comet_ml"]
    t.log({"eval/val_acc": 1.0}, step=0)  # no tracker: a no-op
    t.close()


def test_a_missing_tracker_package_is_one_line(tmp_path, monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "wandb" else real(name, *a))
    with pytest.raises(UserError, match="train.report_to=wandb needs the wandb package"):
        Trackers("wandb", tmp_path, "demo")


def test_iteration_metrics_keeps_the_numbers():
    m = {"val_acc": 0.4, "test_acc": None, "steps": 30, "sources": {"refined": 7}, "other": "x"}
    assert iteration_metrics(m, cost=0.5) == {"eval/val_acc": 0.4, "loop/steps": 30, "data/refined": 7,
                                             "loop/teacher_cost_usd": 0.5}
