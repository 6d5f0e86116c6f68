"""Find UNDO's regime: teacher verified rate, one-shot student accuracy, and what its errors are.

For each candidate task setting this measures, with a chosen offline teacher (--teacher:
Qwen2.5-Coder-0.5B by default, or the 1.5B) and the offline student (SmolLM2-135M):
  * the teacher's greedy verified rate on the first N train questions, one attempt, in the
    concise style with 3 worked examples (the generator's gold rationales where the task has
    them, else the teacher's own, as the loop makes them) and zero-shot stepwise;
  * the final kept rate after resampling and rationalization (what the student trains on);
  * the student's train and test accuracy after one-shot distillation on the train split,
    and what its wrong train answers are: a false calculation (an arithmetic slip,
    `undo.arithmetic`), calculations that all hold but a wrong answer (an error of approach), or
    no calculation to read.
UNDO can act where the teacher verifies >= 70 % and the one-shot student solves 20-60 % of
train; a tailored explanation can differ from the old one where the errors are of approach.

    .venv/bin/python bench/regime.py [--teacher qwen2.5-coder-1.5b-instruct] [--train 80 --test 100
        --teach-n 32] [--only NAME ...] [--teacher-only] [--student qwen2.5-coder-0.5b-instruct]

Every run lives in bench/out/regime/<teacher>/<candidate>/ and resumes; the table goes to
bench/out/regime/regime.md and .json (all teachers).
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from undo.arithmetic import calculations, first_false_step  # noqa: E402
from undo.config import load_config  # noqa: E402
from undo.loop import UndoRun  # noqa: E402
from undo.runstore import read_jsonl  # noqa: E402
from undo.teacher.base import Usage  # noqa: E402
from undo.teacher.rationale import TeachItem, generate_rationales  # noqa: E402

OUT = Path("bench/out/regime")
TEACHER_BAR = 0.7  # greedy verified rate below which a setting is not tried on the student
SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"


def gym(dataset: str, **options: Any) -> list[str]:
    return ["task.name=gym", f"task.dataset={dataset}",
            *(f"task.config.{k}={json.dumps(v) if isinstance(v, list) else v}" for k, v in options.items())]


# name -> the task's overrides
CANDIDATES: dict[str, list[str]] = {
    "chain_sum-3t-1to2d": gym("chain_sum", min_terms=3, max_terms=3, min_digits=1, max_digits=2),
    "chain_sum-3to4t-2d": gym("chain_sum", min_terms=3, max_terms=4, min_digits=2, max_digits=2),
    "chain_sum-2to3t-2d": gym("chain_sum", min_terms=2, max_terms=3, min_digits=2, max_digits=2),
    "leg_counting-2to3": gym("leg_counting", min_animals=2, max_animals=3, max_instances=5),
    # precedence and brackets: computing left to right is an error of approach
    "basic_arithmetic-3t-1d": gym("basic_arithmetic", min_terms=3, max_terms=3, min_digits=1, max_digits=1,
                                  operators=["+", "-", "*"], allow_negation=False),
    "simple_equations-2t": gym("simple_equations", min_terms=2, max_terms=2, max_value=20),
    "products-2x1d": gym("products", min_digits=1, max_digits=2),
    "gcd-2to100": gym("gcd", max_value=100),
    "gsm_symbolic": gym("gsm_symbolic"),
    # word problems: SVAMP's pool (a fixed file; the benches may read ../shared/data)
    "svamp": ["task.name=svamp", f"task.source={SHARED / 'svamp'}", "task.dataset=null", "task.config={}"],
}

# The one-shot distillation settings every candidate shares (the demo's, at bench size).
COMMON = [
    "teacher.backend=transformers", "teacher.style=concise", "teacher.few_shot=3",
    "teacher.max_attempts=3", "teacher.rationalize=true", "teacher.max_tokens=128",
    "student.max_new_tokens=96", "train.epochs=3", "train.lr=1e-3", "train.batch_size=8",
    "train.max_seq_len=256", "loop.method=oneshot", "loop.eval_base=false", "splits.val=50",
]


def teacher_rate(name: str, task: list[str], teacher: str, n: int, style: str) -> float:
    """Greedy single-attempt verified rate on the first n train questions (concise: 3 worked
    examples, made as the loop makes them; stepwise: zero-shot)."""
    shots = 3 if style == "concise" else 0
    out = OUT / teacher
    cfg = load_config(overrides=[*task, *COMMON, f"teacher.model={teacher}", f"name={name}-{style}",
                                 f"output.dir={out}", f"splits.train={n}", "splits.val=1", "splits.test=1",
                                 f"teacher.style={style}", f"teacher.few_shot={shots}",
                                 "teacher.max_attempts=1", "teacher.rationalize=false",
                                 "teacher.max_tokens=256" if style == "stepwise" else "teacher.max_tokens=128"])
    run = UndoRun(cfg)
    run.prepare()
    train = run.splits["train"]
    examples = run.worked_examples()
    rows = generate_rationales([TeachItem(r) for r in train], run.teacher, cfg.teacher,
                               cfg.run_dir / "teacher_rate.jsonl", Usage(), examples=examples)
    return sum(r["verdict"] == "verified" for r in rows) / len(rows)


def error_kinds(attempts: list[dict[str, Any]]) -> dict[str, int]:
    """The student's wrong answers (and right ones through a false step): a false
    calculation, sound calculations, or none to read; read again with today's step check."""
    out = {"slip": 0, "approach": 0, "no_calculation": 0}
    for a in attempts:
        false_step = first_false_step(a["output"])
        if a["correct"] and not false_step:
            continue
        if false_step:
            out["slip"] += 1
        elif calculations(a["output"]):
            out["approach"] += 1
        else:
            out["no_calculation"] += 1
    return out


def oneshot(name: str, task: list[str], teacher: str, student: str, n_train: int, n_test: int) -> dict:
    cfg = load_config(overrides=[*task, *COMMON, f"teacher.model={teacher}", f"student.model={student}",
                                 f"name={name}-{student}",
                                 f"output.dir={OUT / teacher}", f"splits.train={n_train}",
                                 f"splits.test={n_test}"])
    run = UndoRun(cfg)
    run.prepare()
    m = run.iteration(0)
    assert m is not None
    train_att = run.attempts(0, "train", str(run.store.student_dir(0)))
    rationales = list(read_jsonl(run.store.rationales_file(0)))
    kept = sum(r["rationale"] is not None for r in rationales)
    greedy = sum(bool(r["attempts"]) and r["attempts"][0]["correct"] for r in rationales)
    return {"teacher_greedy": greedy / len(rationales), "teacher_kept": kept / len(rationales),
            "train_acc": sum(a["correct"] for a in train_att.values()) / len(train_att),
            "val_acc": m["val_acc"], "test_acc": m["test_acc"], "test_n": m["test_n"],
            "train_n": len(train_att), "errors": error_kinds(list(train_att.values()))}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--teacher", default="qwen2.5-coder-0.5b-instruct")
    ap.add_argument("--student", default="smollm2-135m-instruct", help="the 0.5B coder may be a student too")
    ap.add_argument("--train", type=int, default=80)
    ap.add_argument("--test", type=int, default=100)
    ap.add_argument("--teach-n", type=int, default=32)
    ap.add_argument("--only", nargs="*")
    ap.add_argument("--stepwise", action="store_true", help="also the zero-shot stepwise rate (256 tokens)")
    ap.add_argument("--teacher-only", action="store_true", help="measure the teacher rates only")
    args = ap.parse_args()
    OUT.mkdir(parents=True, exist_ok=True)
    results_path = OUT / "regime.json"
    results = json.loads(results_path.read_text()) if results_path.exists() else {}
    short = args.teacher.replace("qwen2.5-coder-", "").replace("-instruct", "")
    for name, task in CANDIDATES.items():
        if args.only and name not in args.only:
            continue
        t0 = time.time()
        key = f"{name} @ {short}" + ("" if args.student == "smollm2-135m-instruct" else f" -> {args.student}")
        r = results.get(key) or {"task": task, "teacher": args.teacher}
        if "teacher_fewshot_concise" not in r:
            r["teacher_fewshot_concise"] = teacher_rate(name, task, args.teacher, args.teach_n, "concise")
        if args.stepwise and "teacher_zeroshot_stepwise" not in r:
            r["teacher_zeroshot_stepwise"] = teacher_rate(name, task, args.teacher, args.teach_n, "stepwise")
        # a teacher below the bar cannot supply the data: the student part is not worth its time
        passes = max(r["teacher_fewshot_concise"], r.get("teacher_zeroshot_stepwise", 0)) >= TEACHER_BAR
        r["teacher_passes"] = passes
        if passes and not args.teacher_only and "train_acc" not in r:
            r.update(oneshot(name, task, args.teacher, args.student, args.train, args.test))
        done = OUT / args.teacher / f"{name}-{args.student}" / "iter_0" / "attempts_train.jsonl"
        if "train_acc" in r and done.exists():  # the step check may have learnt to read more
            r["errors"] = error_kinds(list(read_jsonl(done)))
        r["wall_s"] = r.get("wall_s", 0) + round(time.time() - t0)
        results[key] = r
        results_path.write_text(json.dumps(results, indent=2))
        print(json.dumps({key: r}), flush=True)
    lines = ["| setting @ teacher | teacher greedy, 3-shot concise | zero-shot stepwise | "
             "teacher kept (3 attempts + rationalize) | one-shot student train | val | test | "
             "wrong train answers and right ones through a false step: slip / approach / none |",
             "|---|---|---|---|---|---|---|---|"]
    for key, r in sorted(results.items()):
        stepwise = f"{r['teacher_zeroshot_stepwise']:.0%}" if "teacher_zeroshot_stepwise" in r else "-"
        if "train_acc" not in r:
            why = "not trained" if r.get("teacher_passes") else "teacher < 70 %: not trained"
            lines.append(f"| {key} | {r['teacher_fewshot_concise']:.0%} | {stepwise} | {why} | | | | |")
            continue
        e = r["errors"]
        lines.append(f"| {key} | {r['teacher_fewshot_concise']:.0%} | {stepwise} | "
                     f"{r['teacher_kept']:.0%} | {r['train_acc']:.0%} (n={r['train_n']}) | "
                     f"{r['val_acc']:.0%} | {r['test_acc']:.0%} (n={r['test_n']}) | "
                     f"{e['slip']} / {e['approach']} / {e['no_calculation']} |")
    (OUT / "regime.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
