"""Transfer, the paper's second claim: does UNDO's refined data help another student too?

For each seed, a second student (default: Qwen2.5-Coder-0.5B-Instruct, offline) is trained
on a finished bench arm's iteration-0 data (one-shot: the teacher's first explanations) and
on its iteration-1 data (the mix with the refinements), with the run's own training settings
(`undo transfer`, `undo.outputs.transfer.transfer_matrix`), and scored on the seed's test questions.
The difference gets a hierarchical bootstrap 95 % CI (seeds, then questions), printed beside
the per-seed values: iteration 1's data against iteration 0's (what the refinements add), and
the best iteration by the run's val against iteration 0 (`undo transfer --iterations 0,best`:
no difference by construction on a seed where val kept iteration 0).

    .venv/bin/python bench/transfer_quality.py --label chain_sum --arm shown15_ex --seeds 100 101 102
    .venv/bin/python bench/transfer_quality.py --build --arm shown15_ex --seeds 104   # no quality.py run
    .venv/bin/python bench/transfer_quality.py --from-files --arm shown15_ex          # pool, train nothing

Reads bench/out/quality/<label>/<arm>-s<seed>/ (bench/quality.py's run folder; `--build` makes
it alone, with its own iteration 0 and none of the other arms: the same config, so quality.py
resumes it). Each seed's answers, per test question, go to
bench/results/transfer_<label>_<arm>/s<seed>.json (small, committed: a five-seed interval can
be pooled from seeds run in different sessions, on machines that kept no run folder), the
table of the seeds asked for to pooled.{json,md} beside them. `--collect` keeps the answers
an earlier call left in a run folder; `--from-files` trains and scores nothing: it pools the
kept files.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from quality import PRESETS, variant_config  # noqa: E402

from undo.loop import UndoRun  # noqa: E402
from undo.outputs.transfer import transfer_matrix  # noqa: E402
from undo.runstore import RunStore, read_json, read_jsonl, write_atomic  # noqa: E402
from undo.stats import hierarchical_bootstrap, paired_by_seed  # noqa: E402

ROOT = Path(__file__).resolve().parent


def seed_answers(run_dir: Path, seed: int, student: str, extra: list[str],
                 train: bool = True) -> dict[str, Any]:
    """The second student's per-question test answers on the run's iteration 0 and 1 data:
    trained and scored now, or (`train=False`) read from the run's transfer_matrix.json."""
    m = (transfer_matrix(run_dir, [student], ["0", "1"], extra, n_boot=2000) if train
         else read_json(RunStore(run_dir).transfer_matrix_file))
    tests: dict[str, dict[str, bool]] = {}
    for c in (c for c in m["cells"] if c["student"] == student):
        tests[str(c["iteration"])] = {str(a["id"]): bool(a["correct"])
                                      for a in read_jsonl(Path(c["dir"]) / "attempts_test.jsonl")}
    # the run's own students' val accuracy per iteration, and the best iteration the loop chose on it
    store = RunStore(run_dir)
    val = {k: read_json(store.metrics_file(int(k)))["val_acc"] for k in tests}
    return {"seed": seed, "student": student, "run": run_dir.name, "test": tests, "val": val,
            "best_iteration": store.best_iteration()}


def against_iteration_0(per_seed: list[dict[int, dict[str, bool]]], iterations: list[int]) -> dict[str, Any]:
    """Each seed's iteration `iterations[i]` data against its iteration 0 data: the mean difference,
    its hierarchical 95 % CI (seeds, then questions) and the per-seed differences."""
    per = paired_by_seed([t[0] for t in per_seed], [t[k] for t, k in zip(per_seed, iterations, strict=True)])
    diff, lo, hi = hierarchical_bootstrap(per)
    return {"diff": diff, "ci": [lo, hi], "per_seed_diff": [sum(x) / len(x) for x in per]}


def main() -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    ap.add_argument("--label", default="chain_sum", help="bench/quality.py's output name")
    ap.add_argument("--preset", default="chain_sum", choices=sorted(PRESETS),
                    help="bench/quality.py's preset, for --build")
    ap.add_argument("--arm", default="undo", help="the bench arm whose runs give the data (undo, shown15_ex)")
    ap.add_argument("--seeds", type=int, nargs="+", default=[100, 101, 102, 103, 104])
    ap.add_argument("--student", default="qwen2.5-coder-0.5b-instruct")
    ap.add_argument("--set", nargs="*", default=[], help="extra key=value overrides for the second student")
    ap.add_argument("--from-files", action="store_true",
                    help="pool the answers kept in bench/results/transfer_<label>_<arm>/; train nothing")
    ap.add_argument("--build", action="store_true",
                    help="make the arm's run folder first (its own iteration 0), without bench/quality.py")
    ap.add_argument("--collect", action="store_true",
                    help="keep the answers an earlier call left in each run's transfer_matrix.json; "
                         "train nothing")
    ap.add_argument("--out", type=Path, default=ROOT / "out",
                    help="the bench output folder (another worktree's)")
    args = ap.parse_args()
    out_dir = args.out / "quality" / args.label
    kept = ROOT / "results" / f"transfer_{args.label}_{args.arm}"
    t0, trained = time.time(), not (args.from_files or args.collect)
    per_seed: list[dict[int, dict[str, bool]]] = []
    best: list[int | None] = []  # per seed; None where a kept file predates the val figures
    for seed in args.seeds:
        run_dir = out_dir / f"{args.arm}-s{seed}"
        if args.from_files:
            if not (kept / f"s{seed}.json").exists():
                raise SystemExit(f"{kept / f's{seed}.json'}: no answers kept for seed {seed} "
                                 "(train it, or --collect a finished run)")
            answers = read_json(kept / f"s{seed}.json")
        else:
            if args.build:
                config_name, preset = PRESETS[args.preset]
                common = [*preset, f"seed={seed}", f"output.dir={out_dir}"]
                UndoRun(variant_config(seed, args.arm, common, ROOT.parent / config_name)).run()
            answers = seed_answers(run_dir, seed, args.student, args.set, train=not args.collect)
            kept.mkdir(parents=True, exist_ok=True)
            write_atomic(kept / f"s{seed}.json", json.dumps(answers, indent=0, sort_keys=True))
        if answers["student"] != args.student:
            raise SystemExit(f"{kept / f's{seed}.json'}: second student {answers['student']}, "
                             f"not {args.student}")
        tests = {int(k): v for k, v in answers["test"].items()}
        per_seed.append(tests)
        best.append(answers.get("best_iteration"))
        print(json.dumps({"seed": seed, **{f"iteration {k}": round(sum(v.values()) / len(v), 4)
                                           for k, v in tests.items()}}), flush=True)
    accs = {k: [sum(t[k].values()) / len(t[k]) for t in per_seed] for k in (0, 1)}
    res = {"arm": args.arm, "student": args.student, "seeds": args.seeds, "per_seed": accs,
           **against_iteration_0(per_seed, [1] * len(per_seed)),
           "wall_s": round(time.time() - t0) if trained else None}  # pooling is no timing
    diff, (lo, hi) = res["diff"], res["ci"]
    if None not in best:  # the issue's "best iteration's data": iteration 0 wherever val kept it
        res["best_by_val"] = {"iterations": best, **against_iteration_0(per_seed, best)}
    write_atomic(kept / "pooled.json", json.dumps(res, indent=2))
    lines = [f"Second student {args.student} on the data of arm {args.arm}, seeds {args.seeds}:", "",
             "| data | test acc, mean | per seed |", "|---|---|---|"]
    for k, label in ((0, "iteration 0 (one-shot)"), (1, "iteration 1 (with refinements)")):
        seeds = ", ".join(f"{x:.1%}" for x in accs[k])
        lines.append(f"| {label} | {sum(accs[k]) / len(accs[k]):.1%} | {seeds} |")
    per_diff = ", ".join(f"{x:+.1%} ({s})" for x, s in zip(res["per_seed_diff"], args.seeds, strict=True))
    lines += ["", f"iteration 1 - iteration 0: {diff:+.1%} [{lo:+.1%}, {hi:+.1%}] (hierarchical 95 % CI); "
              f"per seed {per_diff}",
              f"wall {res['wall_s']} s" if trained else "pooled from kept answers, nothing trained"]
    if "best_by_val" in res:
        b = res["best_by_val"]
        per_b = ", ".join(f"{x:+.1%} ({s}: {k})" for x, s, k in zip(b["per_seed_diff"], args.seeds,
                                                                  b["iterations"], strict=True))
        lines += ["", f"best iteration by val - iteration 0: {b['diff']:+.1%} [{b['ci'][0]:+.1%}, "
                  f"{b['ci'][1]:+.1%}]; per seed (seed: iteration val chose) {per_b}"]
    write_atomic(kept / "pooled.md", "\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
