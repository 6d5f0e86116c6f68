"""The Python API (`from undo import ...`) on a tiny run: what a script does, as the README shows."""

from __future__ import annotations

from pathlib import Path

import pytest
from tiny_model import build_tiny_llama

from undo.errors import UserError

ROOT = Path(__file__).resolve().parents[1]
TINY = ["splits.train=6", "splits.val=3", "splits.test=3", "teacher.max_attempts=1", "teacher.batch_size=8",
        "teacher.few_shot=1", "train.max_steps=2", "train.batch_size=2", "train.max_seq_len=384",
        "loop.max_iterations=1", "loop.patience=5", "loop.val_errors_shown=2", "loop.flow_train_eval=true",
        "loop.eval_base=true"]


def test_the_api_is_the_package_surface():
    import undo
    from undo import api

    assert undo.load is api.load and undo.run is api.run and undo.read_flow is api.read_flow
    # the package names the API without importing it (a lazy export): the two lists agree
    assert undo.__all__ == [*api.__all__, "__version__"]
    with pytest.raises(AttributeError):
        undo.nothing_here  # noqa: B018
    with pytest.raises(UserError, match="config key 'task.name': unknown task"):
        undo.load("demo", ["task.name=nope"])


@pytest.mark.slow
def test_a_script_runs_the_loop_and_reads_what_it_wrote(tmp_path, monkeypatch):
    import undo

    monkeypatch.setenv("UNDO_CACHE_DIR", str(tmp_path / "cache"))
    student = build_tiny_llama(tmp_path / "tiny")  # a random student: every question stays to refine
    # the one-shot baseline: the loop's first iteration only, which is all a test of the API needs
    cfg = undo.load("demo", [*TINY, f"output.dir={tmp_path / 'runs'}", "name=api", f"student.model={student}",
                             "loop.method=oneshot"])
    summary = undo.run(cfg)
    assert summary["best_iteration"] == 0 and undo.read_summary(cfg.run_dir)["stop_reason"] == "oneshot"
    test = undo.read_attempts(cfg.run_dir, 0, "test")
    assert len(test) == 3 and {"id", "correct", "output"} <= set(test[0])
    assert len(undo.read_attempts(cfg.run_dir, "base", "val")) == 3  # the untrained student
    assert "counts" in undo.read_flow(cfg.run_dir)
    with pytest.raises(UserError, match="not found"):
        undo.read_attempts(cfg.run_dir, 7, "test")
    # one stage at a time, with the same config
    scored = undo.evaluate(cfg, str(cfg.run_dir / "iter_0" / "student"), "val", out=tmp_path / "val.jsonl")
    assert scored["n"] == 3 and (tmp_path / "val.jsonl").exists()
    with pytest.raises(UserError, match="never shown to the teacher"):
        undo.teach(cfg, tmp_path / "t.jsonl", split="test")
