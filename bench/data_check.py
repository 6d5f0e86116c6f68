"""The built-in tasks on the full release files: sizes, unique ids, and every gold graded correct.

    .venv/bin/python bench/data_check.py [--data ../shared/data]

The tests run the same checks on slices (tests/fixtures/data); this runs them on the whole
files and prints the counts, so a loader or grading change is checked against every row.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from undo.grading import grade
from undo.tasks import get_task
from undo.tasks.base import LETTERS

ROOT = Path(__file__).resolve().parents[1]


def _jsonl(path: Path) -> list[dict]:
    with path.open(encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def check_task(name: str, data: Path) -> str:
    from undo.config import TaskConfig

    task = get_task(TaskConfig(name=name, source=str(data / name)))
    train, test = task.load(str(data / name), "train"), task.load(str(data / name), "test")
    ids = [r.id for r in train + test]
    overlap = len({r.id for r in train} & {r.id for r in test})
    gold_ok = 0
    for r in train + test:  # the answer line the teacher and student are asked to write
        shown = f"({r.answer}) {r.choices[LETTERS.index(r.answer)]}" if r.choices else r.answer
        gold_ok += r.grade(f"The answer is {shown}.").correct
    return (f"{name:<14} train pool {len(train):>5}  test {len(test):>5}  unique ids "
            f"{len(set(ids)) == len(ids)}  train/test overlap {overlap}  gold answer lines graded "
            f"correct {gold_ok}/{len(ids)}")


def main() -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    ap.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data")
    a = ap.parse_args()
    for name in ("gsm8k", "svamp", "commonsenseqa", "strategyqa"):
        print(check_task(name, a.data))
    rows = _jsonl(a.data / "gsm8k" / "train.jsonl")
    ok = sum(grade(r["answer"], r["answer"].rsplit("####", 1)[1].strip(), "number").correct for r in rows)
    print(f"gsm8k gold rationales (with their '#### N' line) graded correct: {ok}/{len(rows)}")
    svamp = json.loads((a.data / "svamp" / "SVAMP.json").read_text(encoding="utf-8"))
    as_int = sum(grade(f"The answer is {int(r['Answer'])}", str(r["Answer"]), "number").correct for r in svamp)
    print(f"svamp float golds (51.0) matched by integer answers (51): {as_int}/{len(svamp)}")


if __name__ == "__main__":
    main()
