"""The refine step under each variant, on one finished UNDO run's iteration 0 (a dev seed).

For each variant of bench/quality.py's VARIANTS (the attempt shown or not, refine worked
examples, the 0.5B or the 1.5B teacher; "control" is the scripted control arm, no LLM),
this copies SOURCE's splits, iteration 0 and its diagnosis of student 0, then runs the
loop's own refine stage (`UndoRun.teach` with `refine_items`, as `UndoRun.iteration`
does) and prints the tailoring counts: questions verified, verified texts that are new
versus the question's previous rationale, and false steps named -> written right.
With --train, each variant then trains and scores iteration 1 (val and test), so the
student's gain can be read on val.

    .venv/bin/python bench/mechanism.py /work/dev/runs/demo --variants demo shown shown_ex \
        shown15 shown15_ex control [--train]

Writes bench/out/mechanism/<source name>/<variant>/ and mechanism.{json,md} there.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from control import write_control  # noqa: E402
from quality import SHARED_PARTS, VARIANTS, copy_parts  # noqa: E402

from undo.config import load_config  # noqa: E402
from undo.loop import UndoRun  # noqa: E402
from undo.loop.feedback import refine_items, student_profile, tailoring  # noqa: E402
from undo.runstore import read_json, read_jsonl  # noqa: E402

ROOT = Path(__file__).resolve().parent
ARMS = {"demo": [], **VARIANTS}  # "demo": the source run's own refine settings


def refine_stage(run: UndoRun, variant: str) -> dict:
    """Iteration 1's refine stage exactly as the loop runs it; returns its tailoring counts."""
    cfg, train = run.cfg, run.splits["train"]
    diag = run.attempts(1, "train", str(run.store.student_dir(0)))
    val_prev = list(read_jsonl(run.store.attempts_file(0, "val")))
    profile = student_profile(run.val_history(1), val_prev, cfg.loop.val_errors_shown,
                              cfg.seed + 1) if cfg.loop.val_errors_shown else None
    # the control reads the student's false step whatever the source run showed its teacher
    items = refine_items(train, diag, run.teacher_history(1), profile, cfg.teacher.history,
                         cfg.teacher.check_steps, cfg.teacher.show_attempt or variant == "control")
    t0 = time.time()
    if variant == "control":
        write_control(run, 1, items)
        rows = list(read_jsonl(run.store.rationales_file(1)))
    else:
        rows = run.teach(1, items, "teacher refines", run.refine_shots())
    out = tailoring(items, {r["id"]: r for r in rows})
    usage = read_json(run.store.teacher_usage_file(1))
    out["wall_s"] = round(time.time() - t0, 1)
    out["accepted_attempts"] = sum(a.get("reason") == "ok" for r in rows for a in r.get("attempts", []))
    out["attempts"] = sum(len(r.get("attempts", [])) for r in rows)
    out["completion_tokens"] = usage["usage"].get("completion_tokens", 0)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    ap.add_argument("source", type=Path, help="a finished UNDO run folder (iteration 1 diagnosed)")
    ap.add_argument("--variants", nargs="+", default=list(ARMS), choices=list(ARMS))
    ap.add_argument("--train", action="store_true", help="also train and score iteration 1")
    args = ap.parse_args()
    src = args.source.resolve()
    out_dir = ROOT / "out" / "mechanism" / src.name
    results_path = out_dir / "mechanism.json"
    results = json.loads(results_path.read_text()) if results_path.exists() else {}
    source_cfg = src / "config.yaml"
    for variant in args.variants:
        cfg = load_config(source_cfg, [f"output.dir={out_dir}", f"name={variant}", "loop.method=undo",
                                       "loop.max_iterations=1", "loop.patience=99", "loop.refine=teacher",
                                       *ARMS[variant]])
        copy_parts(src, cfg.run_dir, SHARED_PARTS, cfg)
        run = UndoRun(cfg)
        run.prepare()
        r = results.get(variant) or refine_stage(run, variant)
        r["overrides"] = ARMS[variant]
        if args.train:
            run.run()
            m = read_json(run.store.metrics_file(1))
            r.update(val_acc=m["val_acc"], test_acc=m.get("test_acc"),
                     val_acc_iter0=read_json(run.store.metrics_file(0))["val_acc"])
        results[variant] = r
        results_path.write_text(json.dumps(results, indent=2))
        print(json.dumps({variant: r}), flush=True)
    lines = ["| variant | wall s | failed questions | verified | texts new / same | false step named -> "
             "written right | accepted attempts | val iter 0 -> 1 |", "|---|---|---|---|---|---|---|---|"]
    for v, r in results.items():
        val = f"{r['val_acc_iter0']:.1%} -> {r['val_acc']:.1%}" if "val_acc" in r else "-"
        lines.append(f"| {v} | {r['wall_s']} | {r['questions']} | {r['questions_verified']} | "
                     f"{r['texts_new']} / "
                     f"{r['texts_same']} | {r['false_step_texts']} -> {r['false_step_fixed']} | "
                     f"{r['accepted_attempts']} / {r['attempts']} | {val} |")
    (out_dir / "mechanism.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
