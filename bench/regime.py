"""Find UNDO's regime for the offline pair: teacher verified rate and one-shot student accuracy.

For each candidate reasoning-gym setting this measures, with the offline teacher
(Qwen2.5-Coder-0.5B) and student (SmolLM2-135M):
  * the teacher's greedy verified rate on the first N train questions, zero-shot
    (stepwise chain of thought) and few-shot (concise, 3 worked examples as chat turns);
  * the final kept rate after resampling and rationalization (what the student trains on);
  * the student's train and test accuracy after one-shot distillation on the train split.
UNDO can act where the teacher verifies >= 70 % and the one-shot student solves 20-60 % of train.

    .venv/bin/python bench/regime.py [--train 200 --test 200 --teach-n 100] [--only NAME]

Every run lives in bench/out/regime/<candidate>/ and resumes; the table goes to
bench/out/regime/regime.md and .json.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from undo.config import load_config  # noqa: E402
from undo.loop import UndoRun  # noqa: E402
from undo.tasks import make_splits  # noqa: E402
from undo.teacher import build_teacher  # noqa: E402
from undo.teacher.base import Usage  # noqa: E402
from undo.teacher.rationale import TeachItem, few_shot_examples, generate_rationales  # noqa: E402

OUT = Path("bench/out/regime")
TEACHER_BAR = 0.7  # greedy verified rate below which a setting is not tried on the student

# name -> (gym dataset, generator options)
CANDIDATES: dict[str, tuple[str, dict[str, int]]] = {
    "chain_sum-3t-1to2d": ("chain_sum", {"min_terms": 3, "max_terms": 3, "min_digits": 1, "max_digits": 2}),
    "chain_sum-3to4t-2d": ("chain_sum", {"min_terms": 3, "max_terms": 4, "min_digits": 2, "max_digits": 2}),
    "chain_sum-2to3t-2d": ("chain_sum", {"min_terms": 2, "max_terms": 3, "min_digits": 2, "max_digits": 2}),
    "leg_counting-2to3": ("leg_counting", {"min_animals": 2, "max_animals": 3, "max_instances": 5}),
}

# The one-shot distillation settings every candidate shares (the demo's, at bench size).
COMMON = [
    "teacher.backend=transformers", "teacher.style=concise", "teacher.few_shot=3",
    "teacher.max_attempts=3", "teacher.rationalize=true", "teacher.max_tokens=128",
    "student.max_new_tokens=96", "train.epochs=3", "train.lr=1e-3", "train.batch_size=8",
    "train.max_seq_len=256", "loop.method=oneshot", "loop.eval_base=false", "splits.val=50",
]


def overrides(dataset: str, options: dict[str, int]) -> list[str]:
    return ["task.name=gym", f"task.dataset={dataset}",
            *(f"task.config.{k}={v}" for k, v in options.items())]


def teacher_rate(name: str, dataset: str, options: dict[str, int], n: int, style: str, shots: int) -> float:
    """Greedy single-attempt verified rate on the first n train questions."""
    cfg = load_config(overrides=[*overrides(dataset, options), *COMMON, f"splits.train={n}", "splits.test=1",
                                 f"teacher.style={style}", f"teacher.few_shot={shots}",
                                 "teacher.max_attempts=1", "teacher.rationalize=false",
                                 "teacher.max_tokens=256" if style == "stepwise" else "teacher.max_tokens=128"])
    train = make_splits(cfg.task, cfg.splits, cfg.seed)["train"]
    out = OUT / name / f"teacher_{style}_{shots}shot.jsonl"
    rows = generate_rationales([TeachItem(r) for r in train], build_teacher(cfg.teacher), cfg.teacher, out,
                               Usage(), examples=few_shot_examples(train, shots) if shots else [])
    return sum(r["verdict"] == "verified" for r in rows) / len(rows)


def oneshot(name: str, dataset: str, options: dict[str, int], n_train: int, n_test: int) -> dict:
    cfg = load_config(overrides=[*overrides(dataset, options), *COMMON, f"name={name}",
                                 f"output.dir={OUT}", f"splits.train={n_train}", f"splits.test={n_test}"])
    run = UndoRun(cfg)
    run.prepare()
    m = run.iteration(0)
    assert m is not None
    train_att = run.attempts(0, "train", str(run.store.path(0, "student")))
    rationales = [json.loads(x) for x in run.store.path(0, "rationales.jsonl").read_text().splitlines()]
    kept = sum(r["rationale"] is not None for r in rationales)
    greedy = sum(bool(r["attempts"]) and r["attempts"][0]["correct"] for r in rationales)
    return {"teacher_greedy": greedy / len(rationales), "teacher_kept": kept / len(rationales),
            "train_acc": sum(a["correct"] for a in train_att.values()) / len(train_att),
            "val_acc": m["val_acc"], "test_acc": m["test_acc"], "test_n": m["test_n"],
            "train_n": len(train_att)}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--train", type=int, default=200)
    ap.add_argument("--test", type=int, default=200)
    ap.add_argument("--teach-n", type=int, default=100)
    ap.add_argument("--only", nargs="*")
    ap.add_argument("--teacher-only", action="store_true", help="measure the teacher rates only")
    args = ap.parse_args()
    OUT.mkdir(parents=True, exist_ok=True)
    results_path = OUT / "regime.json"
    results = json.loads(results_path.read_text()) if results_path.exists() else {}
    for name, (dataset, options) in CANDIDATES.items():
        if args.only and name not in args.only:
            continue
        t0 = time.time()
        r = {"dataset": dataset, "config": options}
        r["teacher_zeroshot_stepwise"] = teacher_rate(name, dataset, options, args.teach_n, "stepwise", 0)
        r["teacher_fewshot_concise"] = teacher_rate(name, dataset, options, args.teach_n, "concise", 3)
        # a teacher below the bar cannot supply the data: the student part is not worth its hour
        passes = max(r["teacher_zeroshot_stepwise"], r["teacher_fewshot_concise"]) >= TEACHER_BAR
        r["teacher_passes"] = passes
        if passes and not args.teacher_only:
            r.update(oneshot(name, dataset, options, args.train, args.test))
        r["wall_s"] = round(time.time() - t0)
        results[name] = r
        results_path.write_text(json.dumps(results, indent=2))
        print(json.dumps({name: r}), flush=True)
    lines = ["| setting | teacher greedy, zero-shot stepwise | teacher greedy, 3-shot concise | "
             "teacher kept (3 attempts + rationalize) | one-shot student train | val | test |",
             "|---|---|---|---|---|---|---|"]
    for name, r in results.items():
        if "train_acc" not in r:
            why = "not trained (--teacher-only)" if r.get("teacher_passes") else "teacher < 70 %: not trained"
            lines.append(f"| {name} | {r['teacher_zeroshot_stepwise']:.0%} | "
                         f"{r['teacher_fewshot_concise']:.0%} | {why} | | | |")
            continue
        lines.append(f"| {name} | {r['teacher_zeroshot_stepwise']:.0%} | {r['teacher_fewshot_concise']:.0%} | "
                     f"{r['teacher_kept']:.0%} | {r['train_acc']:.0%} (n={r['train_n']}) | "
                     f"{r['val_acc']:.0%} | {r['test_acc']:.0%} (n={r['test_n']}) |")
    (OUT / "regime.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
