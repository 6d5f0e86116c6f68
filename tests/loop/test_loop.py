"""A tiny UNDO loop, killed and resumed: the real offline teacher (its rationales must verify),
the tiny random student of tests/tiny_model.py (the loop's mechanics need no student that
reads), generated chain-sum questions (the demo's task), 2 iterations, a few steps.

The teacher's cost on 2 cores is its prompt tokens (about 5 ms each for the 0.5B), so the
tiny runs show it one worked example and ask for one refinement per question.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from undo.config import config_to_yaml, load_config
from undo.errors import UserError
from undo.loop import UndoRun
from undo.runstore import read_json
from undo.tasks import Record
from undo.teacher.cache import CompletionCache

ROOT = Path(__file__).resolve().parents[2]

TINY = [
    "splits.train=6", "splits.val=3", "splits.test=3",
    "teacher.max_attempts=1", "teacher.batch_size=8", "teacher.few_shot=1", "teacher.refine_samples=1",
    "train.max_steps=2", "train.batch_size=2", "train.max_seq_len=384", "train.logging_steps=1",
    "loop.max_iterations=1", "loop.patience=5", "loop.val_errors_shown=2", "loop.flow_train_eval=true",
    "loop.eval_base=true",
]


def tiny_config(out: Path, name: str, student: Path):
    return load_config(ROOT / "configs" / "demo.yaml",
                       [*TINY, f"output.dir={out}", f"name={name}", f"student.model={student}"])


def cache_rows(cache_dir: Path) -> int:
    with CompletionCache(cache_dir) as c:
        return int(c.stats()["entries"])


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory: pytest.TempPathFactory, tiny_student: Path):  # noqa: ANN201
    """One tiny run for the focused tests below: the real CLI killed (-9) twice, once after
    iteration 0's teaching and once while its student trains, then resumed in process."""
    from types import SimpleNamespace

    from undo.lm import engines
    from undo.student import fit as fit_module

    tmp = tmp_path_factory.mktemp("loop")
    cache = tmp / "cache"
    env = {**os.environ, "UNDO_CACHE_DIR": str(cache), "HF_HUB_OFFLINE": "1"}
    cfg = tiny_config(tmp / "runs", "tiny", tiny_student)
    run_dir = cfg.run_dir
    cfg_file = tmp / "run.yaml"
    cfg_file.write_text(config_to_yaml(cfg))

    cmd = [sys.executable, "-m", "undo.cli", "run", str(cfg_file)]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 1200
    while not (run_dir / "iter_0/.done/teach").exists():
        assert proc.poll() is None, "run ended before it could be interrupted"
        assert time.time() < deadline
        time.sleep(0.2)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    killed = SimpleNamespace(summary=(run_dir / "summary.json").exists(),
                             usage_0=read_json(run_dir / "iter_0/teacher_usage.json"),
                             rationales_0=(run_dir / "iter_0/rationales.jsonl").read_text(),
                             entries=cache_rows(cache))

    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    while not (run_dir / "iter_0/.student.tmp").exists():
        assert proc.poll() is None, "run ended before it could be interrupted in training"
        assert time.time() < deadline
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    killed.in_training = SimpleNamespace(trained=(run_dir / "iter_0/.done/train").exists()
                                         or (run_dir / "iter_0/student").exists(),
                                         entries=cache_rows(cache))

    held_at_training: list[list[str]] = []
    real_train = fit_module.train_student

    def spy(*args, **kw):  # noqa: ANN002, ANN003, ANN202
        held_at_training.append(engines.POOL.roles())
        return real_train(*args, **kw)

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("UNDO_CACHE_DIR", str(cache))
        mp.setattr(fit_module, "train_student", spy)
        first_event = len(engines.POOL.events)
        summary = UndoRun(load_config(cfg_file)).run()
        events = engines.POOL.events[first_event:]
        yield SimpleNamespace(tmp=tmp, cache=cache, run_dir=run_dir, cfg_file=cfg_file, killed=killed,
                              summary=summary, events=events, held_at_training=held_at_training)


def _lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.open()]


@pytest.mark.slow
def test_a_killed_run_resumes_without_asking_the_teacher_again(tiny_run):
    r, killed = tiny_run, tiny_run.killed
    assert not killed.summary
    assert killed.entries == killed.usage_0["usage"]["requests"] > 0  # every answer cached as it came
    assert not killed.in_training.trained  # killed in training: no student, no marker
    assert killed.in_training.entries == killed.entries  # the resumed teach stage called nothing again
    assert read_json(r.run_dir / "iter_0/teacher_usage.json") == killed.usage_0  # stage not redone
    assert (r.run_dir / "iter_0/rationales.jsonl").read_text() == killed.rationales_0
    later = [read_json(p)["usage"] for p in r.run_dir.glob("iter_[1-9]*/teacher_usage.json")]
    assert all(u["cached"] == 0 for u in later)
    assert cache_rows(r.cache) == killed.entries + sum(u["requests"] for u in later)


@pytest.mark.slow
def test_one_engine_per_student_and_none_held_while_training(tiny_run):
    # iteration 1's diagnosis reuses the engine that scored iteration 0
    built = [Path(m).parent.name for kind, role, m in tiny_run.events if (kind, role) == ("build", "student")]
    assert built == ["iter_0", "iter_1"]
    assert tiny_run.held_at_training == [[], []]


@pytest.mark.slow
def test_the_run_folder_holds_every_stage(tiny_run):
    run_dir = tiny_run.run_dir
    for rel in ["config.yaml", "summary.json", "report.md", "report.html",
                "splits/train.jsonl", "splits/val.jsonl", "splits/test.jsonl",
                "base/attempts_val.jsonl", "base/attempts_test.jsonl",
                "iter_0/rationales.jsonl", "iter_0/train_data.jsonl", "iter_0/metrics.json",
                "iter_0/student/adapter_config.json", "iter_0/student/undo_base.txt",
                "iter_0/attempts_val.jsonl", "iter_0/attempts_test.jsonl",
                "iter_1/attempts_train.jsonl", "iter_1/metrics.json"]:
        assert (run_dir / rel).exists(), rel
    assert [r["iteration"] for r in tiny_run.summary["iterations"]] == ["base", 0, 1]
    assert {a["id"] for a in _lines(run_dir / "iter_0/attempts_test.jsonl")} == {
        r["id"] for r in _lines(run_dir / "splits/test.jsonl")}


@pytest.mark.slow
def test_verified_rationales_grade_correct_and_tailoring_is_counted(tiny_run):
    run_dir = tiny_run.run_dir
    train = {r.id: r for r in (Record.from_dict(x) for x in _lines(run_dir / "splits/train.jsonl"))}
    kept = [r for r in _lines(run_dir / "iter_0/rationales.jsonl") if r["rationale"]]
    assert kept and all(train[r["id"]].grade(r["rationale"]).correct for r in kept)  # a real teacher
    m1 = read_json(run_dir / "iter_1/metrics.json")
    assert m1["train_errors"] == sum(not a["correct"] for a in _lines(run_dir / "iter_1/attempts_train.jsonl"))
    refined_rows = _lines(run_dir / "iter_1/rationales.jsonl")
    assert {r["mode"] for r in refined_rows} <= {"refine"}
    # every verified refined text is new or the previous rationale again; the demo's teacher is
    # not shown the attempt, and the report says so
    t = m1["tailoring"]
    assert t["questions"] == len(refined_rows) == m1["train_errors"]
    assert t["texts"] == t["texts_new"] + t["texts_same"] == sum(len(r["rationales"]) for r in refined_rows)
    assert t["attempt_shown"] == t["false_step_named"] == 0
    assert tiny_run.summary["iterations"][2]["tailoring"] == t
    report_md = (run_dir / "report.md").read_text()
    assert "not the student's attempt (teacher.show_attempt=false)" in report_md
    assert f"{t['texts_new']}/{t['texts_same']}" in report_md


@pytest.mark.slow
def test_the_learning_flow_places_every_train_question(tiny_run):
    from undo.outputs.flow import question_story

    run_dir = tiny_run.run_dir
    before = {a["id"]: a["correct"] for a in _lines(run_dir / "iter_1/attempts_train.jsonl")}
    after = {a["id"]: a["correct"] for a in _lines(run_dir / "iter_2/attempts_train.jsonl")}
    counts = tiny_run.summary["flow"]["train"][0]
    assert counts["fixed"] == sum(not before[i] and after[i] for i in before)
    assert counts["broken"] == sum(before[i] and not after[i] for i in before)
    assert counts["stuck"] + counts["never_refined"] == sum(not before[i] and not after[i] for i in before)
    assert sum(v for k, v in counts.items() if k != "iteration") == 6  # none unknown
    grid = read_json(run_dir / "flow.json")["grid"]
    assert {i: g["correct"]["0"] for i, g in grid.items() if g["split"] == "train"} == before
    assert "## Learning flow" in (run_dir / "report.md").read_text()
    story = "\n".join(question_story(run_dir, next(iter(before))))
    assert "== iteration 1 ==" in story and "trained on:" in story and "student after training:" in story


@pytest.mark.slow
def test_report_html_renders_in_chromium(tiny_run):
    import shutil

    run_dir = tiny_run.run_dir
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    assert browser, "the report test needs Chromium: `make test` installs it (apt-get install chromium)"
    shown = subprocess.run([browser, "--headless", "--no-sandbox", "--disable-gpu", "--enable-logging=stderr",
                            "--dump-dom", (run_dir / "report.html").as_uri()],
                           capture_output=True, text=True, timeout=120)
    dom = shown.stdout
    assert all(f'id="{s}"' in dom for s in ("accuracy", "loss", "verdicts", "sources", "teacher", "flow"))
    figures = re.search(r'data-figures="(\d+)/(\d+)"', dom)
    assert figures and figures.group(1) == figures.group(2) == "5", dom[-300:]
    assert "Uncaught" not in shown.stderr and ":CONSOLE" not in shown.stderr
    assert dom.count("<details>") == 6 + 3  # a row per train and val question
    # the grid reads at a glance: iteration headers, rows named by their question, a filter
    assert "<th>iter 0</th><th>iter 1</th>" in dom and 'id="flow-filter"' in dom
    assert "9 shown" in dom  # the filter's script ran over every row
    first_train = _lines(run_dir / "splits" / "train.jsonl")[0]["question"]
    assert first_train.rsplit(":", 1)[-1].strip() in dom


@pytest.mark.slow
def test_the_distilled_dataset_loads_back_with_the_hubs_tools(tiny_run):
    import datasets
    from huggingface_hub import DatasetCard

    from undo.outputs.export import export_dataset

    run_dir, out = tiny_run.run_dir, tiny_run.tmp / "dataset"
    train = {r["id"]: r for r in _lines(run_dir / "splits/train.jsonl")}
    exported = export_dataset(run_dir, out, iteration=1)
    ds = datasets.load_from_disk(str(out / "hf"))["train"]
    train_rows = _lines(run_dir / "iter_1/train_data.jsonl")
    assert ds.num_rows == exported["rows"] == len(train_rows)
    assert [r["rationale"] for r in ds] == [r["rationale"] for r in train_rows]
    assert {r["source"] for r in ds} <= {"student", "refined", "teacher"}
    assert all(r["answer"] == str(train[r["id"]]["answer"]) for r in ds)
    parquet = datasets.Dataset.from_parquet(str(out / "data/train-00000-of-00001.parquet"))
    assert parquet.num_rows == ds.num_rows
    card = DatasetCard.load(out / "README.md")
    assert card.data.license == "other" and "undo" in card.data.tags
    assert "qwen2.5-coder-0.5b-instruct" in card.text and "## The exact config" in card.text


@pytest.mark.slow
def test_a_finished_run_run_again_changes_and_calls_nothing(tiny_run, monkeypatch):
    monkeypatch.setenv("UNDO_CACHE_DIR", str(tiny_run.cache))
    entries = cache_rows(tiny_run.cache)
    again = UndoRun(load_config(tiny_run.cfg_file)).run()
    assert again["iterations"] == tiny_run.summary["iterations"]
    assert cache_rows(tiny_run.cache) == entries
    # a changed setting is refused instead of mixing two configs in one folder
    with pytest.raises(UserError, match="train.lr"):
        UndoRun(load_config(tiny_run.cfg_file, ["train.lr=0.1"])).prepare()


@pytest.mark.slow
def test_another_student_on_the_runs_data_and_the_transfer_matrix(tiny_run, tmp_path):
    from tiny_model import build_tiny_llama

    from undo.outputs.report import compare, matrix_lines
    from undo.outputs.transfer import run_transfer, transfer_matrix

    run_dir = tiny_run.run_dir
    other = str(build_tiny_llama(tmp_path / "other_student", hidden=32, seed=1))  # another width and seed
    t = run_transfer(run_dir, other, 0, ["train.max_steps=1"])
    assert t["train_examples"] == len((run_dir / "iter_0/train_data.jsonl").read_text().splitlines())
    assert t["test_n"] == 3
    name = Path(t["dir"]).name
    assert name.startswith("transfer_") and "other_student_iter0_" in name
    rows = compare([f"{run_dir}@0", t["dir"]], n_boot=200)
    assert [r["n"] for r in rows] == [3, 3]
    # the same student with another setting gets a folder of its own
    again = run_transfer(run_dir, other, 0, ["train.max_steps=2"])
    assert again["dir"] != t["dir"]
    # a students x iterations matrix: the iteration-0 cell is the one trained above (reused)
    m = transfer_matrix(run_dir, [other], ["0", "1"], ["train.max_steps=1"], n_boot=200)
    first, second = m["cells"]
    assert (first["iteration"], first["dir"]) == (0, t["dir"]) and second["iteration"] == 1
    assert "diff_vs_first" not in first and second["ci_low"] <= second["diff_vs_first"] <= second["ci_high"]
    assert read_json(run_dir / "transfer_matrix.json")["cells"] == m["cells"]
    assert matrix_lines(m)[2].startswith(f"| {other} | ")
    assert matrix_lines(m)[2] in (run_dir / "report.md").read_text()


def test_dry_run_plans_without_calling_anything(tmp_path):
    from undo.loop.plan import plan

    cfg = load_config(ROOT / "configs" / "demo.yaml",
                      [f"output.dir={tmp_path}", "teacher.price={input: 1, output: 2}", "splits.train=16",
                       "teacher.refine_samples=2"])
    p = plan(cfg)
    assert p["questions"] == {"train": 16, "val": cfg.splits.val, "test": cfg.splits.test}
    assert p["per_iteration"][0]["teacher_calls_max"] == 16 * 3  # 2 attempts + 1 rationalization
    assert p["per_iteration"][1]["teacher_calls_max"] == 16 * 3  # 2 attempts + 1 more for 2 samples
    assert len(p["per_iteration"]) == cfg.loop.max_iterations + 1
    assert p["student_steps_per_iteration_max"] == 2 * 3  # 16 examples / batch 8, 3 epochs
    assert p["cost_usd_max"] > 0
    assert p["models"] == {"student": "offline smollm2-135m-instruct",
                           "teacher": "offline qwen2.5-coder-0.5b-instruct"}  # found, not loaded
    assert "estimates" in p["estimates"]  # what is an estimate says so
    assert p["engines"]["teacher"] == "transformers"  # the demo names its engine
    assert p["engines"]["student"] in ("transformers (auto: this machine)", "vllm (auto: this machine)")
    assert not cfg.run_dir.exists()  # planning writes nothing
    # a budget: how many iterations surely fit
    per = [i["teacher_prompt_tokens_max"] + i["teacher_completion_tokens_max"] for i in p["per_iteration"]]
    tight = load_config(ROOT / "configs" / "demo.yaml", [f"output.dir={tmp_path}", "splits.train=16",
                                                         "teacher.refine_samples=2",
                                                         f"loop.budget.teacher_tokens={per[0] + per[1] + 1}"])
    assert plan(tight)["budget"]["iterations_surely_within"] == 2
    # a refine request with refine worked examples carries those, not the explain examples
    from undo.loop.plan import REFINE_EXAMPLE_TOKENS, REFINE_PROMPT_TOKENS

    shown = plan(load_config(ROOT / "configs" / "demo.yaml", [f"output.dir={tmp_path}", "splits.train=16",
                                                             "teacher.show_attempt=true",
                                                             "teacher.refine_examples=2"]))
    calls = shown["per_iteration"][1]["teacher_calls_max"]
    assert shown["per_iteration"][1]["teacher_prompt_tokens_max"] == calls * (
        REFINE_PROMPT_TOKENS + 2 * REFINE_EXAMPLE_TOKENS)


def test_bad_config_is_one_clear_error(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("loop: {patiance: 2}\n")
    r = subprocess.run([sys.executable, "-m", "undo.cli", "run", str(bad), "--dry-run"],
                       capture_output=True, text=True)
    assert r.returncode == 2
    assert r.stderr.strip() == (f"error: {bad}: unknown config key 'loop.patiance' (did you mean "
                                "'loop.patience': stop after this many iterations in a row without a val "
                                "gain above min_delta?)")


def test_resume_accepts_a_config_saved_before_a_new_key_existed(tmp_path):
    """A key added to undo after a run started takes its default, as it did then; a key
    whose saved value differs is still refused."""
    import yaml

    cfg = load_config(ROOT / "configs" / "demo.yaml", [f"output.dir={tmp_path}", "splits.train=4",
                                                      "splits.val=2", "splits.test=2",
                                                      "teacher.refine_samples=1"])  # the default
    saved = cfg.model_dump(mode="json")
    del saved["teacher"]["refine_samples"]
    cfg.run_dir.mkdir(parents=True)
    (cfg.run_dir / "config.yaml").write_text(yaml.safe_dump(saved))
    UndoRun(cfg).prepare()
    saved["teacher"]["max_tokens"] = 7
    (cfg.run_dir / "config.yaml").write_text(yaml.safe_dump(saved))
    with pytest.raises(UserError, match="teacher.max_tokens"):
        UndoRun(cfg).prepare()


def test_refine_epochs_apply_to_iterations_after_the_first(tmp_path, monkeypatch):
    import undo.student.fit as fit_module

    seen: dict = {}

    def fake_fit(examples, out_dir, cfg, init_from):
        seen[out_dir.parent.name] = (cfg.train.epochs, init_from)
        out_dir.mkdir(parents=True)
        (out_dir / "train_result.json").write_text('{"steps": 1}')

    monkeypatch.setattr(fit_module, "fit", fake_fit)
    cfg = load_config(ROOT / "configs" / "demo.yaml", [
        f"output.dir={tmp_path}", "splits.train=4", "splits.val=2", "splits.test=2", "train.epochs=3",
        "train.refine_epochs=1"])
    run = UndoRun(cfg)
    run.prepare()
    rows = [{"id": r.id, "rationale": "1 + 1 = 2\nThe answer is 2."} for r in run.splits["train"]]
    run.train(0, rows, "base-model")
    run.train(1, rows, "previous-student")
    assert seen == {"iter_0": (3.0, "base-model"), "iter_1": (1.0, "previous-student")}


def test_teacher_usage_is_summed_over_interrupted_invocations(tmp_path, monkeypatch):
    """A stage stopped halfway (here: the endpoint rejects the key at request 5) and resumed
    reports what both invocations spent; what the first finished comes back as cache hits."""
    from fakes.fault_server import FaultServer

    from undo.teacher.rationale import TeachItem

    monkeypatch.setenv("UNDO_CACHE_DIR", str(tmp_path / "cache"))
    data = tmp_path / "q.jsonl"
    data.write_text("".join(json.dumps({"question": f"What is {i} + {i}?", "answer": 2 * i}) + "\n"
                            for i in range(10)))

    def cfg_for(url: str):
        return load_config(overrides=[
            "task.name=file", f"task.source={data}", "task.answer_type=number", "splits.val=1",
            "splits.train=null", "splits.test=null", "teacher.backend=openai", "teacher.model=test-model",
            f"teacher.openai.base_url={url}", "teacher.openai.concurrency=1", "teacher.max_attempts=1",
            "teacher.rationalize=false", f"output.dir={tmp_path / 'runs'}", "name=u"])

    with FaultServer({5: "401"}) as srv:
        first = UndoRun(cfg_for(srv.url))
        first.prepare()
        n = len(first.splits["train"])
        with pytest.raises(UserError, match="rejected the API key"):
            first.teach(0, [TeachItem(r) for r in first.splits["train"]], "teacher explains")
        first.store.unlock()
    partial = read_json(first.store.teacher_usage_partial_file(0))
    assert partial["requests"] == 4 and partial["invocations"] == 1
    with FaultServer() as srv:  # another address: where the teacher is may change on resume
        again = UndoRun(cfg_for(srv.url))
        again.prepare()
        again.teach(0, [TeachItem(r) for r in again.splits["train"]], "teacher explains")
    info = read_json(again.store.teacher_usage_file(0))
    assert info["invocations"] == 2
    assert info["usage"]["cached"] == 4 and info["usage"]["requests"] == 4 + (n - 4)
    assert not again.store.teacher_usage_partial_file(0).exists()


@pytest.mark.slow
def test_a_teacher_budget_is_never_exceeded(tmp_path, monkeypatch, tiny_student):
    """A real tiny run with room for about three explanations: the teacher explains what it can
    afford, skips the rest for the budget, and never bills more than the limit."""
    monkeypatch.setenv("UNDO_CACHE_DIR", str(tmp_path / "cache"))
    limit = 3000
    cfg = load_config(ROOT / "configs" / "demo.yaml",
                      [*TINY, f"output.dir={tmp_path / 'runs'}", "name=budget", f"student.model={tiny_student}",
                       f"loop.budget.teacher_tokens={limit}", "train.report_to=tensorboard"])
    summary = UndoRun(cfg).run()
    rows = [json.loads(line) for line in (cfg.run_dir / "iter_0/rationales.jsonl").open()]
    assert any(r["reason"] == "budget" for r in rows) and any(r["rationale"] for r in rows)
    assert any(r["reason"] == "budget" and r["attempts"] == [] for r in rows)  # never asked: it did not fit
    assert summary["budget"]["limit_tokens"] == limit
    assert 0 < summary["budget"]["spent_tokens"] <= limit
    billed = sum(read_json(p)["usage"]["prompt_tokens"] + read_json(p)["usage"]["completion_tokens"]
                 for p in cfg.run_dir.glob("iter_*/teacher_usage.json"))
    assert billed == summary["budget"]["spent_tokens"]

    # train.report_to=tensorboard: one event log for the whole run, read back with TensorBoard's
    # own reader: accuracy per iteration at the step where its training ended, and each
    # iteration's loss in its own step range
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(cfg.run_dir / "tensorboard"))
    events.Reload()
    iters = [r for r in summary["iterations"] if isinstance(r["iteration"], int)]
    ends = [sum(r["steps"] for r in iters[: i + 1]) for i in range(len(iters))]
    assert [e.step for e in events.Scalars("eval/val_acc")] == [0, *ends]  # base at step 0
    assert [e.value for e in events.Scalars("eval/val_acc")][1:] == pytest.approx([r["val_acc"] for r in iters])
    loss_steps = [e.step for e in events.Scalars("train/loss")]
    assert loss_steps == sorted(loss_steps) and len(set(loss_steps)) == len(loss_steps)  # no restart at 0
    assert loss_steps[-1] == ends[-1]
    tags = set(events.Tags()["scalars"])
    assert len(iters) == 2 and {"loop/train_examples", "flow/val/fixed"} <= tags
    assert not list(cfg.run_dir.glob("iter_*/student/runs"))  # the trainer logged no runs of its own


@pytest.mark.slow
def test_the_teacher_writes_its_own_worked_examples_for_a_users_word_problem_file(
        tmp_path, monkeypatch, tiny_student):
    """The demo's concise style on a JSONL of word problems with no gold rationales: before
    teaching, the teacher writes its worked example from train questions (zero-shot, never
    hinted), topped up from a stepwise pass when too few concise answers verify: none of the
    0.5B's concise answers to these 8 questions does, so the stepwise pass always runs here."""
    from undo.teacher import rationale

    monkeypatch.setenv("UNDO_CACHE_DIR", str(tmp_path / "cache"))
    # the stepwise pass decodes its batch until the longest chain ends: 384 tokens cost about two
    # minutes here, and this file's verified chains run 130-230 tokens
    monkeypatch.setattr(rationale, "STEPWISE_EXAMPLE_TOKENS", 256)
    rows = json.loads((ROOT / "tests/fixtures/data/svamp/SVAMP.json").read_text())
    data = tmp_path / "word_problems.jsonl"
    data.write_text("".join(json.dumps({"question": f"{r['Body']} {r['Question']}", "answer": r["Answer"]})
                            + "\n" for r in rows))
    cfg = load_config(ROOT / "configs" / "demo.yaml", [
        *TINY, "splits.train=8", "loop.max_iterations=0", f"student.model={tiny_student}",
        f"output.dir={tmp_path / 'runs'}", "name=words", "task.name=file",
        f"task.source={data}", "task.answer_type=number", "task.dataset=null", "task.config={}"])
    summary = UndoRun(cfg).run()
    run_dir = cfg.run_dir
    examples = [json.loads(line) for line in (run_dir / "iter_0/examples.jsonl").open()]
    train_ids = {json.loads(line)["id"] for line in (run_dir / "splits/train.jsonl").open()}
    assert len(examples) == 8 and {e["id"] for e in examples} == train_ids  # 1 x 8 candidates, train has 8
    assert all(a["mode"] == "explain" for e in examples for a in e["attempts"])  # zero-shot, never hinted
    usages = [read_json(run_dir / "iter_0/teacher_usage.json")["usage"],
              read_json(run_dir / "iter_0/examples_usage.json")["usage"]]
    assert not any(e["rationale"] for e in examples)  # none of the 0.5B's concise answers verify here
    stepwise = [json.loads(line) for line in (run_dir / "iter_0/examples_stepwise.jsonl").open()]
    assert {e["id"] for e in stepwise} == train_ids and any(e["rationale"] for e in stepwise)
    usages.append(read_json(run_dir / "iter_0/examples_stepwise_usage.json")["usage"])
    m0 = read_json(run_dir / "iter_0/metrics.json")
    assert m0["teacher_tokens"] == sum(u["prompt_tokens"] + u["completion_tokens"] for u in usages)
    assert m0["train_examples"] > 0
    assert [r["iteration"] for r in summary["iterations"]] == ["base", 0]


def test_auto_backend_is_vllm_only_on_cuda_with_vllm_importable(monkeypatch):
    import importlib.util

    import torch

    from undo.lm.engines import resolve_backend
    from undo.teacher import build_backend

    real = importlib.util.find_spec
    for cuda, has_vllm, want in ((False, True, "transformers"), (True, False, "transformers"),
                                 (True, True, "vllm")):
        monkeypatch.setattr(torch.cuda, "is_available", lambda cuda=cuda: cuda)
        monkeypatch.setattr(importlib.util, "find_spec",
                            lambda name, *a, v=has_vllm: (real("json") if v else None) if name == "vllm"
                            else real(name, *a))
        assert resolve_backend("auto") == want and resolve_backend("transformers") == "transformers"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    cfg = load_config(ROOT / "configs" / "demo.yaml", ["teacher.backend=auto"])
    assert build_backend(cfg.teacher).name == "transformers"  # the engine's name keys the cache


def test_dry_run_says_where_worked_examples_come_from(tmp_path):
    from undo.loop.plan import plan

    gym = plan(load_config(ROOT / "configs" / "demo.yaml", [f"output.dir={tmp_path}", "splits.train=16"]))
    assert gym["worked_examples"] == "3 from the task's gold rationales"
    words = ["task.name=file", f"task.source={ROOT / 'tests/fixtures/data/gsm8k/test.jsonl'}",
             "task.answer_type=number", "task.fields.answer=answer", "task.dataset=null", "task.config={}",
             "splits.train=null", "splits.val=2", "splits.test=2", f"output.dir={tmp_path}"]
    p = plan(load_config(ROOT / "configs" / "demo.yaml", words))
    assert p["worked_examples"].startswith("3 written by the teacher: zero-shot over the first 5 train")
    assert "stepwise" in p["worked_examples"]
    # both passes are in iteration 0's bound: 5 questions, 2 attempts each, twice
    assert p["per_iteration"][0]["teacher_calls_max"] == 5 * 3 + 2 * 5 * 2
