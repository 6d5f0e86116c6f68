"""The `undo` command: a thin shell over library functions the tests call too.

Every subcommand takes the run config's sections as dotted `key=value`
overrides (e.g. `teacher.model=NAME loop.patience=2`), optionally on top of a
YAML file given with --config.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from undo.errors import UserError

app = typer.Typer(
    help=(
        "undo: distil a teacher LLM's reasoning into a small student with UNDO "
        "(UNderstanding Distillation as Optimization, arXiv 2504.02521).\n\n"
        "Quick start (offline, CPU):  undo demo\n\n"
        "Real run:  undo run configs/gsm8k.yaml teacher.base_url=http://HOST:8000/v1"
    ),
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)
cache_app = typer.Typer(help="Inspect or clear the teacher completion cache.", no_args_is_help=True)
app.add_typer(cache_app, name="cache")

Overrides = Annotated[
    Optional[list[str]],  # noqa: UP045  (typer needs Optional on 3.10)
    typer.Argument(help="config overrides as key=value, e.g. task.source=PATH splits.train=100"),
]
ConfigOpt = Annotated[Optional[Path], typer.Option("--config", "-c", help="a run YAML")]  # noqa: UP045


def _config(path: Path | None, overrides: list[str] | None, **forced: object):
    from undo.config import load_config

    items = list(overrides or []) + [f"{k}={v}" for k, v in forced.items() if v is not None]
    return load_config(path, items)


def _emit(obj: dict) -> None:
    print(json.dumps(obj))


@app.command()
def data(
    task: Annotated[str, typer.Argument(help="a registered task (gsm8k, svamp, ...) or 'file'")],
    overrides: Overrides = None,
    split: Annotated[str, typer.Option(help="train | val | test")] = "train",
    limit: Annotated[Optional[int], typer.Option(help="print at most N records")] = None,  # noqa: UP045
    config: ConfigOpt = None,
) -> None:
    """Print a task's normalised records as JSONL.

    Example: undo data svamp --split test --limit 3 task.source=../shared/data/svamp
    """
    from undo.tasks import split_part

    cfg = _config(config, overrides, **{"task.name": task})
    records = split_part(cfg, split)
    for r in records[:limit] if limit is not None else records:
        print(json.dumps(r.to_dict(), ensure_ascii=False))


@app.command()
def grade(
    file: Annotated[Path, typer.Argument(help='JSONL rows {"output", "answer", "choices"?}')],
    answer_type: Annotated[str, typer.Option("--answer-type", help="number|choice|yesno|math")],
    details: Annotated[bool, typer.Option("--details", help="also print a verdict per row")] = False,
) -> None:
    """Grade model outputs against gold answers; prints {"n","correct","accuracy","unparsed"}.

    Example: undo grade outputs.jsonl --answer-type number --details
    """
    from undo.grading import GRADERS, grade as grade_one
    from undo.tasks.readers import field, read_rows

    if answer_type not in GRADERS:
        raise UserError(f"unknown answer type '{answer_type}'; known: {', '.join(GRADERS)}")
    n = correct = unparsed = 0
    for where, row in read_rows(file):
        v = grade_one(str(field(row, "output", where)), str(field(row, "answer", where)),
                      answer_type, row.get("choices"))
        n += 1
        correct += v.correct
        unparsed += v.predicted is None
        if details:
            _emit({"row": where, "predicted": v.predicted, "correct": v.correct})
    _emit({"n": n, "correct": correct, "accuracy": correct / n if n else 0.0, "unparsed": unparsed})


def main() -> None:
    try:
        app()
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print("interrupted: finished work is saved; run the same command again to resume",
              file=sys.stderr)
        sys.exit(130)


if __name__ == "__main__":
    main()
