"""A tiny real UNDO loop on the offline teacher and student, killed and resumed.

Real models, real SVAMP questions, 2 iterations, a few steps: minutes on 2 cores.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from undo.config import load_config
from undo.errors import UserError
from undo.loop import UndoRun
from undo.runstore import read_json
from undo.tasks import Record
from undo.teacher.cache import CompletionCache

ROOT = Path(__file__).resolve().parents[1]
SVAMP = ROOT.parent / "shared" / "data" / "svamp"

TINY = [
    f"task.source={SVAMP}",
    "splits.train=6", "splits.val=3", "splits.test=3",
    "teacher.max_attempts=1", "teacher.max_tokens=320", "teacher.batch_size=8",
    "student.max_new_tokens=96",
    "train.max_steps=2", "train.batch_size=2", "train.max_seq_len=384", "train.logging_steps=1",
    "loop.max_iterations=1", "loop.patience=5", "loop.val_errors_shown=2",
]


def tiny_config(out: Path, name: str):
    return load_config(ROOT / "configs" / "demo.yaml", [*TINY, f"output.dir={out}", f"name={name}"])


def cache_rows(cache_dir: Path) -> int:
    with CompletionCache(cache_dir) as c:
        return int(c.stats()["entries"])


def teacher_requests(run_dir: Path) -> int:
    return sum(read_json(p)["usage"]["requests"] for p in run_dir.glob("iter_*/teacher_usage.json"))


@pytest.mark.slow
def test_tiny_loop_then_kill_and_resume_repeats_no_teacher_call(tmp_path, monkeypatch):
    # 1) uninterrupted reference run, its own completion cache
    monkeypatch.setenv("UNDO_CACHE_DIR", str(tmp_path / "cache_a"))
    ref_cfg = tiny_config(tmp_path / "runs", "ref")
    summary = UndoRun(ref_cfg).run()
    ref = ref_cfg.run_dir
    for rel in ["config.yaml", "summary.json", "report.md", "report.html",
                "splits/train.jsonl", "splits/val.jsonl", "splits/test.jsonl",
                "base/attempts_val.jsonl", "base/attempts_test.jsonl",
                "iter_0/rationales.jsonl", "iter_0/train_data.jsonl", "iter_0/metrics.json",
                "iter_0/student/adapter_config.json", "iter_0/attempts_test.jsonl",
                "iter_1/attempts_train.jsonl", "iter_1/metrics.json"]:
        assert (ref / rel).exists(), rel
    assert len(summary["iterations"]) == 3  # base, 0, 1
    # the in-process teacher ran for real: its verified rationales grade correct
    train = {json.loads(line)["id"]: Record.from_dict(json.loads(line))
             for line in (ref / "splits/train.jsonl").open()}
    verified = [json.loads(line) for line in (ref / "iter_0/rationales.jsonl").open()]
    verified = [r for r in verified if r["verdict"] in ("verified", "rationalized")]
    assert verified and all(train[r["id"]].grade(r["rationale"]).correct for r in verified)
    m1 = read_json(ref / "iter_1/metrics.json")
    assert m1["train_errors"] == sum(
        not json.loads(line)["correct"] for line in (ref / "iter_1/attempts_train.jsonl").open())
    if m1["train_errors"]:
        assert (ref / "iter_1/rationales.jsonl").exists()
        modes = {json.loads(line)["mode"] for line in (ref / "iter_1/rationales.jsonl").open()}
        assert modes == {"refine"}
    ref_calls = teacher_requests(ref)
    assert ref_calls == cache_rows(tmp_path / "cache_a")

    # 2) the same run in a subprocess, killed (-9) as soon as iteration 0's teaching is done
    cache_b = tmp_path / "cache_b"
    env = {**os.environ, "UNDO_CACHE_DIR": str(cache_b), "HF_HUB_OFFLINE": "1"}
    cfg_file = tmp_path / "run.yaml"
    cfg_file.write_text((ref / "config.yaml").read_text())
    cmd = [sys.executable, "-m", "undo.cli", "run", str(cfg_file), "name=resumed"]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    run_b = tmp_path / "runs" / "resumed"
    deadline = time.time() + 900
    while not (run_b / "iter_0/.done/teach").exists():
        assert proc.poll() is None, "run ended before it could be interrupted"
        assert time.time() < deadline
        time.sleep(0.2)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    before = cache_rows(cache_b)
    assert before > 0 and not (run_b / "summary.json").exists()

    # 3) resume with the same command: no finished teacher call is made again
    monkeypatch.setenv("UNDO_CACHE_DIR", str(cache_b))
    resumed = UndoRun(load_config(cfg_file, ["name=resumed"])).run()
    assert read_json(run_b / "iter_0/teacher_usage.json") == read_json(ref / "iter_0/teacher_usage.json")
    assert cache_rows(cache_b) == ref_calls  # killed + resumed asked exactly what one run asks
    assert [(r["iteration"], r["val_acc"], r["test_acc"]) for r in resumed["iterations"]] == [
        (r["iteration"], r["val_acc"], r["test_acc"]) for r in summary["iterations"]]

    # 4) a changed setting is refused instead of mixing two configs in one folder
    with pytest.raises(UserError, match="train.lr"):
        UndoRun(load_config(cfg_file, ["name=resumed", "train.lr=0.1"])).prepare()


def test_dry_run_plans_without_calling_anything(tmp_path):
    from undo.plan import plan

    cfg = load_config(ROOT / "configs" / "demo.yaml",
                      [f"task.source={SVAMP}", f"output.dir={tmp_path}", "teacher.price={input: 1, output: 2}"])
    p = plan(cfg)
    assert p["questions"] == {"train": 20, "val": 10, "test": 30}
    assert p["per_iteration"][0]["teacher_calls_max"] == 20 * 3  # 2 attempts + 1 rationalization
    assert len(p["per_iteration"]) == 3
    assert p["student_steps_per_iteration_max"] == 5 * 2  # 20 examples / batch 4, 2 epochs
    assert p["cost_usd_max"] > 0
    assert not cfg.run_dir.exists()  # planning writes nothing


def test_bad_config_is_one_clear_error(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("loop: {patiance: 2}\n")
    r = subprocess.run([sys.executable, "-m", "undo.cli", "run", str(bad), "--dry-run"],
                       capture_output=True, text=True)
    assert r.returncode == 2
    assert r.stderr.strip() == (f"error: {bad}: unknown config key 'loop.patiance' "
                                "(did you mean 'loop.patience'?)")
