"""How often the step check (undo/arithmetic.py) flags text, on data where the truth is known.

* GSM8K's 7,473 gold train solutions, with the <<calculator>> annotations removed (how a
  model writes them): every flag is either a slip in the gold text or a false alarm, so the
  rate bounds the check's false alarms; the flagged lines are printed to judge which.
* The verified rationales (and the student's right answers) of run folders given as
  arguments, per iteration: how many right answers came through a false step.

    .venv/bin/python bench/steps.py [RUN_DIR ...]
"""

from __future__ import annotations

import glob
import json
import re
import sys
from pathlib import Path

from undo.arithmetic import first_false_step
from undo.runstore import read_jsonl

GSM8K = Path(__file__).resolve().parents[2] / "shared" / "data" / "gsm8k" / "train.jsonl"


def gsm8k() -> None:
    if not GSM8K.exists():
        print(f"{GSM8K} not present; skipping the GSM8K measurement")
        return
    rows = [json.loads(line) for line in GSM8K.read_text().splitlines()]
    flagged = []
    for r in rows:
        text = re.sub(r"<<[^>]*>>", "", r["answer"].split("####")[0])
        if step := first_false_step(text):
            flagged.append(step)
    print(f"GSM8K gold solutions: {len(flagged)} of {len(rows)} flagged ({len(flagged) / len(rows):.2%})")
    for step in flagged:
        print(f"  {step}")


def runs(dirs: list[str]) -> None:
    for d in dirs:
        for path in sorted(glob.glob(f"{d}/iter_*/rationales.jsonl")):
            texts = [t for r in read_jsonl(Path(path)) if r["verdict"] != "failed"
                     for t in (r.get("rationales") or [r["rationale"]])]
            bad = sum(first_false_step(t) is not None for t in texts)
            print(f"{path}: {bad} of {len(texts)} verified rationales hold a false step")
        for path in sorted(glob.glob(f"{d}/iter_*/attempts_train.jsonl")):
            right = [a["output"] for a in read_jsonl(Path(path)) if a["correct"]]
            bad = sum(first_false_step(o) is not None for o in right)
            print(f"{path}: {bad} of {len(right)} right answers came through a false step")


if __name__ == "__main__":
    gsm8k()
    runs(sys.argv[1:])
