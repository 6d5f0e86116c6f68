"""Train a student in this process or under a launcher; the CLI and the loop share it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from undo.config import RunConfig, config_to_yaml
from undo.errors import UserError
from undo.runstore import write_atomic
from undo.student.train import TrainResult, train_student
from undo.tasks.base import Record
from undo.tasks.readers import field, read_rows


def fit(examples: list[dict[str, Any]], out_dir: Path, cfg: RunConfig,
        init_from: str | None = None) -> TrainResult:
    """In-process training, or `train.launcher` (accelerate/torchrun) with N processes."""
    from undo.lm import engines

    # the trainer needs the memory: every inference engine of this process (student,
    # in-process teacher) gives its weights and GPU memory back; the next request rebuilds it
    engines.release_all()
    if cfg.train.launcher == "none":
        return train_student(examples, out_dir, cfg.student, cfg.train, seed=cfg.train_seed(),
                             init_from=init_from)
    from undo.student.launch import launch_training

    # the launched processes read their inputs from files next to the output
    staging = out_dir.parent / f".{out_dir.name}-launch"
    staging.mkdir(parents=True, exist_ok=True)
    data = staging / "examples.jsonl"
    write_atomic(data, "".join(json.dumps(e, ensure_ascii=False) + "\n" for e in examples))
    cfg_path = staging / "config.yaml"
    write_atomic(cfg_path, config_to_yaml(cfg))
    return launch_training(data, out_dir, cfg_path, cfg.train.launcher, cfg.train.num_processes,
                           cfg.train.accelerate_config, init_from)


def examples_from_file(path: Path) -> list[dict[str, Any]]:
    """Rows with question (+ choices) and rationale, e.g. from `undo teach` or a run's
    train_data.jsonl; rows whose rationale is null (failed questions) are skipped."""
    from undo.student.train import make_example

    out = []
    for where, row in read_rows(path):
        rationale = row.get("rationale")
        if not rationale:
            continue
        rec = Record(id=str(row.get("id") or where), question=str(field(row, "question", where)),
                     answer=str(row.get("answer", "")), answer_type="number",
                     choices=row.get("choices"))
        out.append(make_example(rec, str(rationale)))
    if not out:
        raise UserError(f"{path}: no row with a rationale to train on")
    return out


def train_from_file(data: Path, out: Path, cfg: RunConfig) -> dict[str, Any]:
    result = fit(examples_from_file(data), out, cfg)
    return {"out": str(out), "steps": result.steps, "first_loss": result.first_loss,
            "final_loss": result.final_loss, "examples": result.n_examples,
            "dropped_too_long": len(result.dropped), "tokens_per_s": round(result.tokens_per_s, 1)}
