"""Transfer, the paper's second claim: does UNDO's refined data help another student too?

For each seed, a second student (default: Qwen2.5-Coder-0.5B-Instruct, offline) is trained
on a finished bench arm's iteration-0 data (one-shot: the teacher's first explanations) and
on its iteration-1 data (the mix with the refinements), with the run's own training settings
(`undo transfer`, `undo.outputs.transfer.transfer_matrix`), and scored on the seed's test questions.
The difference gets a hierarchical bootstrap 95 % CI (seeds, then questions), printed beside
the per-seed values.

    .venv/bin/python bench/transfer_quality.py --label chain_sum --arm shown15_ex --seeds 100 101 102

Reads bench/out/quality/<label>/<arm>-s<seed>/ (bench/quality.py); writes transfer_<arm>.{json,md} there.
`--from-files` trains and scores nothing: it pools the answers that earlier calls (one seed
at a time, say) left in each run's transfer_matrix.json cells.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from undo.outputs.transfer import transfer_matrix  # noqa: E402
from undo.runstore import RunStore, read_json, read_jsonl  # noqa: E402
from undo.stats import hierarchical_bootstrap, paired_by_seed  # noqa: E402

ROOT = Path(__file__).resolve().parent


def main() -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    ap.add_argument("--label", default="chain_sum")
    ap.add_argument("--arm", default="undo", help="the bench arm whose runs give the data (undo, shown15_ex)")
    ap.add_argument("--seeds", type=int, nargs="+", default=[100, 101, 102, 103, 104])
    ap.add_argument("--student", default="qwen2.5-coder-0.5b-instruct")
    ap.add_argument("--set", nargs="*", default=[], help="extra key=value overrides for the second student")
    ap.add_argument("--from-files", action="store_true",
                    help="pool the answers already in each run's transfer_matrix.json; train nothing")
    ap.add_argument("--out", type=Path, default=ROOT / "out",
                    help="the bench output folder (another worktree's)")
    args = ap.parse_args()
    out_dir = args.out / "quality" / args.label
    t0 = time.time()
    per_seed: list[dict[str, dict[str, bool]]] = []
    for seed in args.seeds:
        run_dir = out_dir / f"{args.arm}-s{seed}"
        if args.from_files:
            m = read_json(RunStore(run_dir).transfer_matrix_file)
        else:
            m = transfer_matrix(run_dir, [args.student], ["0", "1"], args.set, n_boot=2000)
        tests = {}
        for c in (c for c in m["cells"] if c["student"] == args.student):
            tests[c["iteration"]] = {str(a["id"]): bool(a["correct"])
                                     for a in read_jsonl(Path(c["dir"]) / "attempts_test.jsonl")}
        per_seed.append(tests)
        print(json.dumps({"seed": seed, **{f"iteration {k}": round(sum(v.values()) / len(v), 4)
                                           for k, v in tests.items()}}), flush=True)
    per = paired_by_seed([t[0] for t in per_seed], [t[1] for t in per_seed])
    diff, lo, hi = hierarchical_bootstrap(per)
    accs = {k: [sum(t[k].values()) / len(t[k]) for t in per_seed] for k in (0, 1)}
    res = {"arm": args.arm, "student": args.student, "seeds": args.seeds, "per_seed": accs,
           "diff": diff, "ci": [lo, hi], "per_seed_diff": [sum(x) / len(x) for x in per],
           "wall_s": round(time.time() - t0)}
    (out_dir / f"transfer_{args.arm}.json").write_text(json.dumps(res, indent=2))
    lines = [f"Second student {args.student} on the data of arm {args.arm}, seeds {args.seeds}:", "",
             "| data | test acc, mean | per seed |", "|---|---|---|"]
    for k, label in ((0, "iteration 0 (one-shot)"), (1, "iteration 1 (with refinements)")):
        seeds = ", ".join(f"{x:.1%}" for x in accs[k])
        lines.append(f"| {label} | {sum(accs[k]) / len(accs[k]):.1%} | {seeds} |")
    per_diff = ", ".join(f"{x:+.1%}" for x in res["per_seed_diff"])
    lines += ["", f"iteration 1 - iteration 0: {diff:+.1%} [{lo:+.1%}, {hi:+.1%}] (hierarchical 95 % CI); "
              f"per seed {per_diff}", f"wall {res['wall_s']} s"]
    (out_dir / f"transfer_{args.arm}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
