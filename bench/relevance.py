"""How often a verified text holds a calculation unrelated to its question (`unrelated_step`).

    .venv/bin/python bench/relevance.py RUN_DIR [RUN_DIR ...]

For each finished run folder: the teacher-written worked examples (iteration 0's
examples*.jsonl, what every teacher prompt then shows) and every iteration's verified
rationales. Prints, per file, verified texts and how many hold a stray calculation, with the
first few such lines, so a reader can see whether the check catches copies of a stray line
and nothing else. Reads run folders only; loads no model.
"""

from __future__ import annotations

import argparse
import sys
from collections import Counter
from pathlib import Path

from undo.arithmetic import unrelated_step
from undo.runstore import RunStore, read_jsonl, read_rationale_rows
from undo.tasks import Record


def scan(run_dir: Path) -> list[tuple[str, int, int, Counter[str]]]:
    store = RunStore(run_dir)
    questions = {r["id"]: Record.from_dict(r).prompt() for r in read_jsonl(store.split_file("train"))}
    files = [store.stage_rows_file(0, st) for st in RunStore.STAGE_FILES if st != "teach"]
    files += [store.rationales_file(k) for k in store.iterations()]
    out = []
    for path in files:
        if not path.exists():
            continue
        verified, stray = 0, Counter()
        for row in read_rationale_rows(path):
            for text in row.get("rationales") or ([row["rationale"]] if row.get("rationale") else []):
                verified += 1
                line = unrelated_step(questions[row["id"]], text)
                if line is not None:
                    stray[line] += 1
        out.append((str(path.relative_to(run_dir)), verified, sum(stray.values()), stray))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("runs", nargs="+", type=Path)
    args = ap.parse_args()
    total = [0, 0]
    for run in args.runs:
        if not RunStore(run).split_file("train").exists():
            print(f"{run}: no splits/train.jsonl, skipped", file=sys.stderr)
            continue
        for rel, verified, n_stray, stray in scan(run):
            total[0] += verified
            total[1] += n_stray
            top = "; ".join(f"{line!r} x{c}" for line, c in stray.most_common(3))
            print(f"{run.name}/{rel}: {n_stray} of {verified} verified texts hold a stray calculation"
                  + (f" ({top})" if top else ""))
    print(f"all: {total[1]} of {total[0]} verified texts")


if __name__ == "__main__":
    main()
