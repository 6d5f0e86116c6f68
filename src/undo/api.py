"""The Python API: what a script needs, and exactly what the CLI calls.

    from undo import load, run, read_summary, read_attempts, read_flow

    cfg = load("demo", ["splits.train=40", "output.dir=runs"])   # a shipped name or a YAML path
    summary = run(cfg)                                           # the whole loop (resumes)
    print(summary["best_iteration"], summary["best_test_acc"])
    wrong = [a for a in read_attempts(cfg.run_dir, 1, "test") if not a["correct"]]
    print(read_flow(cfg.run_dir)["counts"]["train"])   # per iteration: fixed, broken, kept, stuck

One stage at a time: `teach` (verified rationales to a JSONL file), `train` (a student on
such a file), `evaluate` (a student on a split). Every function takes a loaded config.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from undo.config import RunConfig
from undo.errors import UserError
from undo.registries import load
from undo.rows import StudentAttempt, Summary
from undo.runstore import RunStore, read_json, read_jsonl

__all__ = ["load", "run", "teach", "train", "evaluate", "read_summary", "read_attempts", "read_flow"]


def run(cfg: RunConfig) -> dict[str, Any]:
    """The UNDO loop (or the one-shot baseline, `loop.method`) in `cfg.run_dir`: resumes a
    stopped run, refuses a changed config. Returns summary.json's content."""
    from undo.loop import UndoRun

    return UndoRun(cfg).run()


def teach(cfg: RunConfig, out: Path, split: str = "train", limit: int | None = None) -> dict[str, Any]:
    """The teacher explains a split's questions (the first `limit`); the verified rationales go
    to `out` (JSONL, resumable). Returns the verdict counts, usage and cost."""
    from undo import display
    from undo.runstore import claim_output, write_json
    from undo.tasks import split_part
    from undo.teacher import build_teacher
    from undo.teacher.base import Usage
    from undo.teacher.rationale import TeachItem, generate_rationales, summarize

    if split == "test":
        raise UserError("the test split is never shown to the teacher")
    out = Path(out)
    records = split_part(cfg, split)[:limit]
    # the teacher settings that change what is written (not where or how fast it asks)
    teacher_keys = {k: v for k, v in cfg.teacher.model_dump(mode="json").items()
                    if k not in cfg.teacher.RESUMABLE}
    claim_output(out, {"command": "teach", "task": cfg.task.model_dump(mode="json"), "split": split,
                       "seed": cfg.seed, "teacher": teacher_keys})
    teacher = build_teacher(cfg.teacher)
    teacher.health_check()
    usage = Usage()
    # worked examples come from train questions only
    train_records = records if split == "train" else split_part(cfg, "train")
    examples = _worked_examples(cfg, train_records, teacher, usage, out)
    with display.stage("teacher explains", None) as advance:
        rows = generate_rationales([TeachItem(r) for r in records], teacher, cfg.teacher, out,
                                   usage, examples=examples, progress=lambda n, _t: advance(n), seed=cfg.seed)
    stats = {"summary": summarize(rows), "usage": usage.to_dict(), "cost_usd": usage.cost(cfg.teacher.price)}
    write_json(out.with_suffix(".usage.json"), stats)
    return stats


def _worked_examples(cfg: RunConfig, train: list[Any], teacher: Any, usage: Any, out: Path) -> list[dict]:
    """The task's gold rationales, else the teacher's own verified zero-shot ones (their rows
    written beside `out`)."""
    from undo import display
    from undo.teacher.rationale import (
        TeachItem,
        example_pass_config,
        few_shot_examples,
        generate_rationales,
        teacher_examples,
    )

    examples = few_shot_examples(train, cfg.teacher.few_shot)
    if not cfg.teacher.few_shot or examples:
        return examples

    def run_pass(stage: str, recs: list) -> list[dict]:
        with display.stage(f"worked examples ({stage})", None) as advance:
            rows_out, stage_cfg = out.with_suffix(f".{stage}.jsonl"), example_pass_config(cfg.teacher, stage)
            return generate_rationales([TeachItem(r) for r in recs], teacher, stage_cfg, rows_out, usage,
                                       examples=[], progress=lambda n, _t: advance(n), seed=cfg.seed)

    return teacher_examples(train, cfg.teacher.few_shot, cfg.teacher.style, run_pass)


def train(cfg: RunConfig, data: Path, out: Path) -> dict[str, Any]:
    """A student (`cfg.student`, `cfg.train`) fine-tuned on a rationale file (rows with
    `question` and `rationale`, as `teach` writes) into `out`. Returns the training result."""
    from undo.student.fit import train_from_file

    return train_from_file(Path(data), Path(out), cfg)


def evaluate(cfg: RunConfig, student: str, split: str = "test", limit: int | None = None,
             out: Path | None = None) -> dict[str, Any]:
    """A student (a saved folder, hub id or offline name) answers a split as the loop scores
    it; per-question attempts go to `out` when given. Returns n, correct and accuracy."""
    from undo import display
    from undo.runstore import claim_output
    from undo.student.evaluate import evaluate as answer
    from undo.tasks import split_part

    records = split_part(cfg, split)[:limit]
    if out is not None:
        claim_output(Path(out), {"command": "eval", "student": student, "split": split,
                                 "task": cfg.task.model_dump(mode="json"),
                                 "max_new_tokens": cfg.student.max_new_tokens})
    with display.stage(f"student answers {split}", len(records)) as advance:
        res = answer(records, student, cfg.student, out_path=out, progress=advance)
    return {"n": res.n, "correct": res.correct, "accuracy": res.accuracy}


def read_summary(run_dir: Path | str) -> Summary:
    """A finished run's summary.json: best iteration, accuracies, stop reason, every iteration."""
    path = RunStore(Path(run_dir)).summary_file
    if not path.exists():
        raise UserError(f"{path}: not found (is the run finished?)")
    return read_json(path)


def read_attempts(run_dir: Path | str, iteration: int | str, split: str) -> list[StudentAttempt]:
    """The attempts of iteration K's student (`"base"`: the untrained one) on a split; iteration
    K's train attempts are the diagnosis of student K-1."""
    path = RunStore(Path(run_dir)).attempts_file(iteration, split)
    if not path.exists():
        raise UserError(f"{path}: not found")
    return list(read_jsonl(path))


def read_flow(run_dir: Path | str) -> dict[str, Any]:
    """Each question's path through the iterations (flow.json), and the counts per transition."""
    path = RunStore(Path(run_dir)).flow_file
    if not path.exists():
        raise UserError(f"{path}: not found (is the run finished?)")
    return read_json(path)
