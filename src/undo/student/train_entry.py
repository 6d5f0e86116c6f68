"""`python -m undo.student.train_entry`: one training process under torchrun/accelerate.

Every process runs this with the same arguments; the trainer finds its rank in
the environment the launcher set, and only the main process writes the student.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from undo.errors import UserError
from undo.registries import load as load_config
from undo.student.launch import die_with_parent
from undo.student.train import read_examples, train_student


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m undo.student.train_entry")
    p.add_argument("--data", required=True, help="training examples, JSONL")
    p.add_argument("--out", required=True, help="student folder to write")
    p.add_argument("--config", required=True, help="run config YAML (student/train/seed)")
    p.add_argument("--init-from", default=None, help="base model spec or previous student")
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("overrides", nargs="*", help="key=value config overrides")
    a = p.parse_args(argv)
    die_with_parent()  # a worker never outlives its launcher (see launch.die_with_parent)
    try:
        cfg = load_config(a.config, a.overrides)
        train_student(
            read_examples(Path(a.data)),
            Path(a.out),
            cfg.student,
            cfg.train,
            seed=cfg.train_seed(),
            init_from=a.init_from,
            progress=not a.no_progress,
        )
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
