"""Live display: the current iteration and stage, a progress bar per stage, tables."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table

console = Console(stderr=True)

METRIC_COLUMNS = [
    ("iteration", "iter"),
    ("train_errors", "errors"),
    ("refined", "refined\nok/fail"),
    ("tailored", "texts\nnew/same"),
    ("train_examples", "train\nex."),
    ("steps", "steps"),
    ("val_acc", "val"),
    ("test_acc", "test"),
    ("teacher_tokens", "teacher\ntokens"),
    ("wall_s", "wall s"),
]


def _fmt(key: str, m: dict[str, Any]) -> str:
    v = m.get(key)
    if key == "refined":
        ok, bad = m.get("refined_verified"), m.get("refined_failed")
        return "-" if ok is None else f"{ok}/{bad}"
    if key == "tailored":
        return tailored(m)
    if v is None:
        return "-"
    if key.endswith("_acc"):
        return f"{v:.1%}"
    if key == "wall_s":
        return f"{v:.0f}"
    return str(v)


def tailored(m: dict[str, Any]) -> str:
    """Verified refined texts that are new against those that repeat the previous rationale,
    and (attempt shown) how many write the student's first false calculation right."""
    t = m.get("tailoring")
    if not t:
        return "-"
    out = f"{t['texts_new']}/{t['texts_same']}"
    if t.get("false_step_texts"):
        out += f" (fixes {t['false_step_fixed']}/{t['false_step_texts']})"
    return out


def metrics_table(rows: list[dict[str, Any]], title: str = "UNDO iterations") -> Table:
    table = Table(title=title)
    for _, header in METRIC_COLUMNS:
        table.add_column(header, justify="right")
    for m in rows:
        table.add_row(*[_fmt(k, m) for k, _ in METRIC_COLUMNS])
    return table


def headline_table(h: dict[str, Any]) -> Table:
    """Base / one-shot / UNDO on test with 95% CIs: what a run ends with."""
    table = Table(title="test accuracy, 95% bootstrap intervals over questions")
    for header in ("student", "test acc", "95% CI", "vs one-shot", "95% CI"):
        table.add_column(header, justify="right")
    for r in h["rows"]:
        diff = ((f"{r['diff_vs_oneshot']:+.1%}", f"[{r['diff_ci_low']:+.1%}, {r['diff_ci_high']:+.1%}]")
                if "diff_vs_oneshot" in r else ("-", "-"))
        table.add_row(r["arm"], f"{r['test_acc']:.1%} (n={r['n']})",
                      f"[{r['ci_low']:.1%}, {r['ci_high']:.1%}]", *diff)
    return table


@contextmanager
def stage(label: str, total: int | None) -> Iterator[Callable[[int], None]]:
    """A progress bar for one stage; yields advance(k)."""
    columns = [
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("ETA"),
        TimeRemainingColumn(),
    ]
    with Progress(*columns, console=console, transient=False,
                  disable=not sys.stderr.isatty() and total is None) as bar:
        task = bar.add_task(label, total=total)
        yield lambda k: bar.advance(task, k)


def info(message: str) -> None:
    console.print(message)


def teacher_shown(run_dir: Path) -> str:
    """One sentence: what each refine request showed the teacher, from the run's config."""
    import yaml

    from undo.runstore import RunStore

    path = RunStore(run_dir).saved_config
    if not path.exists():
        return ""
    cfg = yaml.safe_load(path.read_text()) or {}
    loop, teacher = cfg.get("loop") or {}, cfg.get("teacher") or {}
    if loop.get("method") == "oneshot":
        return "Method: one-shot distillation (iteration 0 only); the teacher explains each question once."
    if loop.get("refine") == "repeat":
        return ("Method: UNDO-repeat (loop.refine=repeat), the ablation: no teacher is asked after "
                "iteration 0; each failed question is trained on its previous verified rationale again.")
    parts = ["the question and its gold answer", "its own earlier verified rationale"
             + (" and up to two older ones" if teacher.get("history", True) else "")]
    if teacher.get("show_attempt", True):
        parts.append("the student's wrong attempt with its first false calculation named")
    else:
        parts.append("not the student's attempt (teacher.show_attempt=false)")
    shown = int(loop.get("val_errors_shown", 20) or 0)
    if shown and teacher.get("style") == "concise" and not (teacher.get("prompts") or {}).get("refine"):
        parts.append("the student's val accuracy by iteration (the concise template shows no val answers)")
    elif shown:
        parts.append(f"the student's val accuracy by iteration and up to {shown} of its val answers")
    if teacher.get("refine_examples"):
        parts.append(f"{teacher['refine_examples']} refine worked examples first (a slipped attempt answered "
                     "in smaller steps)")
    who = (f" ({teacher['refine_model']}, teacher.refine_model)"
           if teacher.get("refine_model") not in (None, teacher.get("model")) else "")
    return f"Refine requests showed the teacher{who} " + "; ".join(parts) + "."
