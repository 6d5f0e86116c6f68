"""The loop's own metrics in the experiment trackers named by `train.report_to`.

One tracker run per run folder, named after it, shared by every iteration and by resumed
invocations: per-iteration metrics (val/test accuracy, learning-flow counts, teacher tokens
and cost, training examples by source) at the global student step where that iteration's
training ended, and each iteration's training loss as its own step range (steps offset by
the iterations before it). Inside the loop the trainer's own report_to integration is off,
so a tracker never gets one run per iteration with steps restarting at 0.

The trackers are accelerate's (`accelerate.tracking`); this module only decides which run
each one continues.
"""

from __future__ import annotations

import hashlib
import importlib.util
from collections.abc import Callable
from pathlib import Path
from typing import Any

from accelerate import PartialState
from accelerate.tracking import GeneralTracker, MLflowTracker, TensorBoardTracker, WandBTracker

from undo.errors import UserError
from undo.rows import FlowTransition, IterationMetrics
from undo.runstore import RunStore

TRACKERS: dict[str, Callable[[Path, str], GeneralTracker]] = {}


def register_tracker(name: str) -> Callable[[Callable[[Path, str], GeneralTracker]],
                                            Callable[[Path, str], GeneralTracker]]:
    """Register `(run_dir, run_name) -> accelerate tracker` under a `train.report_to` name."""

    def deco(make: Callable[[Path, str], GeneralTracker]) -> Callable[[Path, str], GeneralTracker]:
        TRACKERS[name] = make
        return make

    return deco


def _need(module: str, name: str) -> None:
    if importlib.util.find_spec(module) is None:
        raise UserError(f"train.report_to={name} needs the {module} package: pip install {module}")


@register_tracker("tensorboard")
def tensorboard(run_dir: Path, name: str) -> GeneralTracker:
    _need("tensorboard", "tensorboard")
    events = RunStore(run_dir).tensorboard_dir  # accelerate writes to logging_dir/run_name
    return TensorBoardTracker(run_name=events.name, logging_dir=events.parent)


@register_tracker("wandb")
def wandb(run_dir: Path, name: str) -> GeneralTracker:
    _need("wandb", "wandb")
    # a stable id per run folder: a resumed invocation continues the same wandb run
    run_id = hashlib.sha1(str(run_dir.resolve()).encode()).hexdigest()[:16]
    return WandBTracker("undo", name=name, id=run_id, resume="allow", dir=str(run_dir))


@register_tracker("mlflow")
def mlflow(run_dir: Path, name: str) -> GeneralTracker:
    _need("mlflow", "mlflow")
    import mlflow as ml

    # MLflow ids are its own: a resumed invocation finds its run by the run folder's tag
    tag = {"undo_run_dir": str(run_dir.resolve())}
    experiment = ml.get_experiment_by_name("undo")
    where = f"tags.undo_run_dir = '{tag['undo_run_dir']}'"
    found = ml.search_runs([experiment.experiment_id], filter_string=where) if experiment is not None else []
    run_id = found["run_id"].iloc[0] if len(found) else None
    return MLflowTracker(experiment_name="undo", run_id=run_id, tags=tag, run_name=name)


class Trackers:
    """The trackers of `report_to` that undo logs to itself (none: every call is a no-op);
    `others` are the names left to the trainer's own integration (one run per training)."""

    def __init__(self, report_to: str | list[str], run_dir: Path, name: str) -> None:
        names = [report_to] if isinstance(report_to, str) else list(report_to)
        names = [n for n in names if n not in ("none", "")]
        self.others = [n for n in names if n not in TRACKERS]
        self.active = [TRACKERS[n](run_dir, name) for n in names if n in TRACKERS]
        if self.active:
            # accelerate's trackers log through its state; the loop is one process, so this is
            # the state a trainer in this process would create anyway
            PartialState()
        for t in self.active:
            t.start()

    def __bool__(self) -> bool:
        return bool(self.active)

    def log(self, metrics: dict[str, Any], step: int) -> None:
        numbers = {k: float(v) for k, v in metrics.items()
                   if isinstance(v, int | float) and not isinstance(v, bool)}
        for t in self.active:
            t.log(numbers, step=step)

    def log_training(self, losses: list[float], loss_steps: list[int], offset: int) -> None:
        """One iteration's training loss as its own step range, after the ones before it."""
        for loss, step in zip(losses, loss_steps, strict=True):
            self.log({"train/loss": loss}, offset + step)

    def close(self) -> None:
        for t in self.active:
            t.finish()


def iteration_metrics(m: IterationMetrics, cost: float | None) -> dict[str, Any]:
    """The numbers of one iteration's metrics.json row worth a curve."""
    out = {f"eval/{k}": m[k] for k in ("val_acc", "test_acc") if m.get(k) is not None}
    for k in ("train_examples", "train_errors", "refined_verified", "refined_failed", "teacher_tokens",
              "budget_skipped", "steps"):
        if m.get(k) is not None:
            out[f"loop/{k}"] = m[k]
    for source, n in (m.get("sources") or {}).items():
        out[f"data/{source}"] = n
    if cost is not None:
        out["loop/teacher_cost_usd"] = cost
    return out


def flow_metrics(flow_counts: dict[str, list[FlowTransition]], k: int) -> dict[str, Any]:
    """Iteration k's learning-flow counts (summary.json's "flow"), per split."""
    return {f"flow/{split}/{key}": v for split, rows in flow_counts.items() for row in rows
            if row["iteration"] == k for key, v in row.items() if key != "iteration"}
