"""`undo transfer`: train a different student on a finished run's training set.

The paper shows UNDO's refined data helps other students too; this measures it
on the run's own test questions, so `undo compare` can pair the results.
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

from undo.errors import UserError
from undo.registries import load as load_config
from undo.rows import TransferCell, TransferMatrix, TransferMetrics
from undo.runstore import RunStore, read_jsonl, read_train_rows, train_result_file, write_json
from undo.tasks import Record


def run_transfer(run_dir: Path, student: str, iteration: int | None,
                 overrides: list[str]) -> TransferMetrics:
    from undo.student.evaluate import evaluate
    from undo.student.fit import fit
    from undo.student.train import make_example

    run_dir = Path(run_dir)
    store = RunStore(run_dir)
    cfg = load_config(store.config_file(), [f"student.model={student}", *overrides])
    if iteration is None:
        iteration = store.best_iteration()
    data_path = store.train_data_file(iteration)
    if not data_path.exists():
        raise UserError(f"{data_path}: not found (iteration {iteration} has no training set)")
    # readable, and unique per (student, overrides): "org/m" and "org_m" or the same
    # student with another lr never share a folder
    slug = re.sub(r"[^A-Za-z0-9_.-]+", "_", student).strip("_")[-60:]
    made_by = {"student": student, "iteration": iteration, "overrides": sorted(overrides)}
    digest = hashlib.sha1(json.dumps(made_by, sort_keys=True).encode()).hexdigest()[:8]
    folder = store.transfer(f"{slug}_iter{iteration}_{digest}")
    write_json(folder.made_by_file, made_by)
    splits = {s: [Record.from_dict(r) for r in read_jsonl(store.split_file(s))]
              for s in ("train", "val", "test")}
    by_id = {r.id: r for r in splits["train"]}
    examples = [make_example(by_id[row["id"]], row["rationale"]) for row in read_train_rows(data_path)]
    if not train_result_file(folder.student_dir).exists():
        fit(examples, folder.student_dir, cfg, init_from=student)  # honours train.launcher, as the loop does
    metrics: TransferMetrics = {"run": str(run_dir), "dir": str(folder.root), "iteration": iteration,
                                "student": student, "train_examples": len(examples)}
    for split in ("val", "test"):
        res = evaluate(splits[split], str(folder.student_dir), cfg.student,
                       out_path=folder.attempts_file(split))
        metrics[f"{split}_acc"] = res.accuracy
        metrics[f"{split}_n"] = res.n
    write_json(folder.metrics_file, metrics)
    return metrics


def transfer_matrix(run_dir: Path, students: list[str], iterations: list[str],
                    overrides: list[str], n_boot: int = 10_000) -> TransferMatrix:
    """Each student trained on each iteration's data (cells resume like run_transfer), with
    each cell's test accuracy and its paired 95 % CI against the same student's first cell
    (iteration 0 when listed): does the refined data help other students too?"""
    from undo.outputs.report import test_attempts
    from undo.stats import paired_bootstrap

    run_dir = Path(run_dir)
    store = RunStore(run_dir)
    if not students or not iterations:
        raise UserError("transfer: give at least one student and one iteration")
    best = store.best_iteration("'best' needs its summary.json") if "best" in iterations else None
    ks: list[int] = []
    for it in iterations:
        if it != "best" and not str(it).isdigit():
            raise UserError(f"transfer: iteration '{it}' is neither a number nor 'best'")
        k = best if it == "best" else int(it)
        if k not in ks:
            ks.append(k)
    ks.sort()
    rows: list[TransferCell] = []
    for student in students:
        cells = [run_transfer(run_dir, student, k, overrides) for k in ks]
        ref_label, ref = test_attempts(cells[0]["dir"])
        for k, cell in zip(ks, cells, strict=True):
            _, res = test_attempts(cell["dir"])
            row: TransferCell = {"student": student, "iteration": k, "test_acc": cell["test_acc"],
                                 "n": cell["test_n"], "dir": cell["dir"]}
            if k != ks[0]:
                common = sorted(set(ref) & set(res))
                d, lo, hi = paired_bootstrap([ref[i] for i in common], [res[i] for i in common], n_boot)
                row.update({"diff_vs_first": d, "ci_low": lo, "ci_high": hi})
            rows.append(row)
    matrix: TransferMatrix = {"run": str(run_dir), "iterations": ks, "students": students,
                              "overrides": sorted(overrides), "cells": rows}
    write_json(store.transfer_matrix_file, matrix)
    if store.summary_file.exists():
        from undo.outputs.report import write_report

        write_report(run_dir)  # the report shows the matrix
    return matrix
