"""The fair comparison: every arm gets the same chances, on seeds no choice was made on.

Arms, per seed (the seed drives the generated splits, the teacher's sampling and training):
  base          the untrained student
  oneshot       one-shot distillation at the config's epochs (= UNDO's iteration 0)
  oneshot_eN    one-shot at N epochs, for each N of --epochs (2x and 3x the config's by default:
                also the matched-steps baselines; UNDO's total steps are printed beside them)
  oneshot_best  the one-shot arm whose epochs win on val (ties: fewer epochs), as UNDO's
                iteration is chosen on val
  undo_K        UNDO iteration K (teacher refinements of the failed train questions)
  undo_best     UNDO's best iteration by val (iteration 0 included)
  repeat_K      UNDO-repeat (`loop.refine=repeat`): the same loop, every refinement replaced by
                the question's previous verified rationale (refine_samples copies), trained for
                exactly UNDO's optimizer steps of that iteration: it separates the teacher's new
                explanation from more training on the failed questions plus the student's traces
  repeat_best   UNDO-repeat's best iteration by val
  V_1, V_best   with --variants: UNDO iteration 1 under variant V's overrides (VARIANTS: the
                student's attempt shown, refine worked examples, the 1.5B teacher refining),
                and its best by val; "control" is bench/control.py's scripted refinement, a
                control arm (no LLM), never a teacher a user can pick
  V_1_eN        with --undo-epochs: V's iteration 1 trained for N epochs on the same refinements;
                V_best then chooses iteration and epochs together on val, as oneshot_best does
UNDO-repeat and the one-shot grid reuse the UNDO run's splits and iteration 0 (copied), so
every arm of a seed answers the same questions. Each difference gets a hierarchical
bootstrap 95 % CI (seeds resampled, then questions within each: training noise and question
noise), printed beside its per-seed values. Final figures use --seeds (default FINAL_SEEDS,
never used for a choice); DEV_SEEDS served every method choice (bench/method.py, RESULTS).

    .venv/bin/python bench/quality.py                          # chain_sum, the demo's task
    .venv/bin/python bench/quality.py --seeds 100 101 --label quick --test 100
    .venv/bin/python bench/quality.py --variants shown15_ex control    # the mechanism arms
    nohup .venv/bin/python bench/quality.py > bench/out/quality.log 2>&1 &

Writes bench/out/quality/<label>/results.{json,md} and bench/quality_<label>.png.
Everything resumes: re-running skips finished stages (teacher calls are cached too).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from control import write_control  # noqa: E402

from undo.config import RunConfig, config_to_yaml, load_config  # noqa: E402
from undo.loop import UndoRun  # noqa: E402
from undo.loop.feedback import refine_items  # noqa: E402
from undo.runstore import read_json, read_jsonl, write_atomic  # noqa: E402
from undo.stats import hierarchical_bootstrap, paired_by_seed  # noqa: E402

ROOT = Path(__file__).resolve().parent
DEV_SEEDS = [0, 1, 2]  # every method choice so far (bench/method.py, four rounds of RESULTS)
FINAL_SEEDS = [100, 101, 102, 103, 104]  # used for nothing but the final table
# preset -> (config file, overrides incl. default sizes); --train/--val/--test override the sizes
PRESETS: dict[str, tuple[str, list[str]]] = {
    # the demo's method at the demo's earlier size (train 80; the demo now runs 48 to fit 6
    # minutes), val and test larger to resolve points; the base arm, teacher batch and flow
    # setting of the committed results (bench/RESULTS.md), so their run folders resume
    "chain_sum": ("configs/demo.yaml", ["splits.train=80", "splits.val=100", "splits.test=300",
                                        "loop.eval_base=true", "teacher.batch_size=96",
                                        "loop.flow_train_eval=false"]),
    # SVAMP's pool is fixed: seeds resample train/val from its 700 questions, test is its fixed
    # 300-question carve-out, so seed-to-seed spread there is training noise and train sampling only
    "svamp": ("configs/demo.yaml", ["task.name=svamp", "task.source=../shared/data/svamp", "task.dataset=null",
                                    "task.config={}", "splits.train=null", "splits.val=100", "splits.test=300",
                                    "teacher.style=stepwise", "teacher.few_shot=0",
                                    "teacher.max_tokens=256", "student.max_new_tokens=192",
                                    "train.max_seq_len=512", "loop.eval_base=true", "teacher.batch_size=96"]),
}


STRONG = "qwen2.5-coder-1.5b-instruct"  # requirements/teacher-1.5b.txt
# variant -> overrides of an UNDO iteration-1 arm that shares the UNDO run's iteration 0 and its
# diagnosis of student 0 (copied): only the refine step differs
VARIANTS: dict[str, list[str]] = {
    "shown": ["teacher.show_attempt=true"],
    "shown_ex": ["teacher.show_attempt=true", "teacher.refine_examples=3"],
    "shown15": ["teacher.show_attempt=true", f"teacher.refine_model={STRONG}"],
    "shown15_ex": ["teacher.show_attempt=true", f"teacher.refine_model={STRONG}", "teacher.refine_examples=3"],
    "control": [],  # CONTROL: bench/control.py writes the refinements, no teacher
}
SHARED_PARTS = ["splits", "base", "iter_0", "iter_1/attempts_train.jsonl", "iter_1/.done/attempts_train"]
# an iteration-1 epochs arm (--undo-epochs) also shares the variant's refinements and their mix
REFINED_PARTS = [*SHARED_PARTS, "iter_1/rationales.jsonl", "iter_1/teacher_usage.json", "iter_1/.done/teach",
                 "iter_1/train_data.jsonl", "iter_1/.done/mix"]


def variant_config(seed: int, variant: str, common: list[str], config: Path,
                   refine_epochs: float | None = None) -> RunConfig:
    """The run config of arm `variant` (UNDO, one iteration, the variant's overrides);
    `refine_epochs`: its iteration 1 trained for that many epochs (--undo-epochs)."""
    name, extra = (f"{variant}-s{seed}", []) if refine_epochs is None else \
        (f"{variant}-e{refine_epochs:g}-s{seed}", [f"train.refine_epochs={refine_epochs}"])
    return load_config(config, [*common, f"name={name}", "loop.method=undo", "loop.max_iterations=1",
                                "loop.patience=99", *VARIANTS[variant], *extra])


def variant_arm(seed: int, variant: str, undo_dir: Path, common: list[str], config: Path,
                compute: bool = True) -> UndoRun:
    """UNDO iteration 1 of `variant` on the UNDO run's iteration 0 and diagnosis (copied)."""
    cfg = variant_config(seed, variant, common, config)
    run = UndoRun(cfg)
    if not compute:
        return run
    copy_parts(undo_dir, cfg.run_dir, SHARED_PARTS, cfg)
    if variant == "control":
        run.prepare()
        diag = run.attempts(1, "train", str(run.store.student_dir(0)))
        items = refine_items(run.splits["train"], diag, run.teacher_history(1), None, False,
                             cfg.teacher.check_steps, True)
        print(f"seed {seed}: control refinements {write_control(run, 1, items)}", flush=True)
    run.run()
    return run


def attempts(run_dir: Path, k: int | str, split: str) -> dict[str, bool]:
    path = run_dir / (f"iter_{k}" if isinstance(k, int) else k) / f"attempts_{split}.jsonl"
    return {a["id"]: bool(a["correct"]) for a in read_jsonl(path)}


def copy_parts(src: Path, dst: Path, parts: list[str], cfg: RunConfig) -> None:
    """Start run `dst` from `src`'s finished parts (splits, stages), with its own config.yaml."""
    if (dst / "config.yaml").exists():
        return
    for part in parts:
        s, d = src / part, dst / part
        d.parent.mkdir(parents=True, exist_ok=True)
        shutil.copytree(s, d) if s.is_dir() else shutil.copy2(s, d)
    write_atomic(dst / "config.yaml", config_to_yaml(cfg))


def run_seed(seed: int, args: argparse.Namespace, config: Path, preset: list[str],
             out_dir: Path) -> dict[str, Any]:
    """All arms of one seed; returns {arm: {"val": {id: ok}, "test": {id: ok}}} and facts."""
    common = [*preset, *args.sizes, *args.set, f"seed={seed}", f"output.dir={out_dir}"]
    undo_cfg = load_config(config, [*common, f"name=undo-s{seed}", "loop.method=undo",
                                    f"loop.max_iterations={args.iters}", "loop.patience=99"])
    # --summarize: read the finished runs only (every arm's run folder must be complete)
    run = (lambda cfg: None) if args.summarize else (lambda cfg: UndoRun(cfg).run())
    run(undo_cfg)
    undo_dir = undo_cfg.run_dir
    iters = [k for k in range(args.iters + 1) if (undo_dir / f"iter_{k}" / "metrics.json").exists()]
    metrics = {k: read_json(undo_dir / f"iter_{k}" / "metrics.json") for k in iters}
    arms: dict[str, dict[str, dict[str, bool]]] = {"base": {"test": attempts(undo_dir, "base", "test"),
                                                            "val": attempts(undo_dir, "base", "val")}}
    for k in iters:
        arms["oneshot" if k == 0 else f"undo_{k}"] = {s: attempts(undo_dir, k, s) for s in ("val", "test")}

    # UNDO-repeat: iteration 0 is UNDO's; each later iteration trains exactly as many steps as UNDO's
    if len(iters) > 1:
        steps = metrics[1]["steps"]
        repeat_cfg = load_config(config, [
            *common, f"name=repeat-s{seed}", "loop.method=undo", "loop.refine=repeat",
            "loop.max_iterations=1", "loop.patience=99", f"train.max_steps={steps}"])
        # the same student 0 diagnosed on train: UNDO's diagnosis, copied (greedy: the same answers)
        copy_parts(undo_dir, repeat_cfg.run_dir, ["splits", "base", "iter_0", "iter_1/attempts_train.jsonl",
                                                  "iter_1/.done/attempts_train"], repeat_cfg)
        run(repeat_cfg)
        arms["repeat_1"] = {s: attempts(repeat_cfg.run_dir, 1, s) for s in ("val", "test")}

    # the one-shot grid: the same verified rationales (iteration 0's teach stage, copied), other epochs
    base_epochs = undo_cfg.train.epochs
    grid = {base_epochs: "oneshot"}
    for epochs in args.epochs:
        if epochs == base_epochs:
            continue
        name = f"oneshot_e{epochs:g}"
        cfg = load_config(config, [*common, f"name=oneshot-e{epochs:g}-s{seed}", "loop.method=oneshot",
                                   "loop.eval_base=false", f"train.epochs={epochs}"])
        copy_parts(undo_dir, cfg.run_dir, ["splits", "iter_0/rationales.jsonl", "iter_0/teacher_usage.json",
                                           "iter_0/.done/teach"], cfg)
        run(cfg)
        arms[name] = {s: attempts(cfg.run_dir, 0, s) for s in ("val", "test")}
        grid[epochs] = name
        metrics_e = read_json(cfg.run_dir / "iter_0" / "metrics.json")
        grid_steps = metrics_e["steps"]
        print(f"seed {seed}: one-shot {epochs:g} epochs, {grid_steps} steps", flush=True)

    def val_acc(arm: str) -> float:
        v = arms[arm]["val"]
        return sum(v.values()) / len(v)

    # choices on val only: one-shot's epochs, and each loop's iteration (ties: the cheaper)
    best_epochs = max(sorted(grid), key=lambda e: val_acc(grid[e]))  # max keeps the first of ties
    arms["oneshot_best"] = arms[grid[best_epochs]]
    undo_best = max(["oneshot", *[f"undo_{k}" for k in iters if k]], key=val_acc)
    arms["undo_best"] = arms[undo_best]
    if "repeat_1" in arms:
        arms["repeat_best"] = arms[max(["oneshot", "repeat_1"], key=val_acc)]
    variant_tailoring, variant_best = {}, {}
    for variant in args.variants:
        arm_run = variant_arm(seed, variant, undo_dir, common, config, compute=not args.summarize)
        arms[f"{variant}_1"] = {s: attempts(arm_run.cfg.run_dir, 1, s) for s in ("val", "test")}
        # UNDO's iteration 1 gets the epochs grid one-shot gets (--undo-epochs), on the same
        # refinements (copied): val chooses iteration and epochs together
        choices = ["oneshot", f"{variant}_1"]
        own_epochs = undo_cfg.train.refine_epochs or base_epochs  # the variant run's own
        for epochs in args.undo_epochs:
            if epochs == own_epochs:
                continue
            cfg_e = variant_config(seed, variant, common, config, refine_epochs=epochs)
            if not args.summarize:
                copy_parts(arm_run.cfg.run_dir, cfg_e.run_dir, REFINED_PARTS, cfg_e)
                UndoRun(cfg_e).run()
            arms[f"{variant}_1_e{epochs:g}"] = {s: attempts(cfg_e.run_dir, 1, s) for s in ("val", "test")}
            choices.append(f"{variant}_1_e{epochs:g}")
        variant_best[variant] = max(choices, key=val_acc)
        arms[f"{variant}_best"] = arms[variant_best[variant]]
        variant_tailoring[variant] = read_json(arm_run.store.metrics_file(1)).get("tailoring")
    facts = {"seed": seed, "oneshot_best_epochs": best_epochs, "undo_best": undo_best,
             "variant_tailoring": variant_tailoring, "variant_best": variant_best,
             "repeat_best": max(["oneshot", "repeat_1"], key=val_acc) if "repeat_1" in arms else None,
             "undo_steps": {k: metrics[k]["steps"] for k in iters},
             "undo_total_steps_x": round(sum(metrics[k]["steps"] for k in iters) / metrics[0]["steps"], 2),
             "tailoring": {k: metrics[k].get("tailoring") for k in iters if k},
             "sources": {k: metrics[k].get("sources") for k in iters}}
    return {"arms": arms, "facts": facts}


def overlap_check(config: Path, preset: list[str], sizes: list[str], seeds: list[int]) -> dict[str, int]:
    """How many of each final seed's test questions any other seed (development or final) holds in
    train or val: zero by construction for generated tasks (undo/tasks/gym.py), printed as proof."""
    from undo.tasks import make_splits

    cfg = load_config(config, [*preset, *sizes])
    splits = {s: make_splits(cfg.task, cfg.splits, s) for s in sorted(set(seeds) | set(DEV_SEEDS))}
    out = {}
    for s in seeds:
        test = {r.id for r in splits[s]["test"]}
        others = {r.id for t, sp in splits.items() if t != s for part in ("train", "val") for r in sp[part]}
        out[str(s)] = len(test & others)
    return out


ARMS = ["base", "oneshot", "oneshot_e6", "oneshot_e9", "oneshot_best", "undo_1", "undo_best", "repeat_1",
        "repeat_best"]
COMPARISONS = [  # (b, a): b - a
    ("undo_best", "oneshot_best"), ("undo_best", "repeat_best"), ("undo_1", "repeat_1"),
    ("undo_best", "oneshot"), ("undo_best", "oneshot_e6"), ("undo_best", "oneshot_e9"),
    ("repeat_best", "oneshot_best"), ("oneshot_best", "oneshot"), ("oneshot", "base"),
]


def summarize(per_seed: list[dict[str, Any]], seeds: list[int]) -> dict[str, Any]:
    variants = sorted({k[:-2] for p in per_seed for k in p["arms"] if k.endswith("_1")} - {"undo", "repeat"})
    comparisons = COMPARISONS + [c for v in variants for c in (
        (f"{v}_best", "oneshot_best"), (f"{v}_best", "repeat_best"), (f"{v}_1", "repeat_1"),
        (f"{v}_1", "undo_1"))]
    arms_seen = [a for a in ARMS + sorted({k for p in per_seed for k in p["arms"]} - set(ARMS))
                 if all(a in p["arms"] for p in per_seed)]
    table: dict[str, Any] = {}
    # a fixed test set (SVAMP) gives every seed the same questions: one resample serves them all
    shared = all(set(p["arms"]["base"]["test"]) == set(per_seed[0]["arms"]["base"]["test"]) for p in per_seed)
    for arm in arms_seen:
        groups = [[v for _, v in sorted(p["arms"][arm]["test"].items())] for p in per_seed]
        acc, lo, hi = hierarchical_bootstrap(groups, shared_questions=shared and len(per_seed) > 1)
        table[arm] = {"test_acc": acc, "ci": [lo, hi], "per_seed": [sum(g) / len(g) for g in groups],
                      "val_per_seed": [sum(p["arms"][arm]["val"].values()) / len(p["arms"][arm]["val"])
                                       for p in per_seed]}
    diffs: dict[str, Any] = {}
    for b, a in comparisons:
        if a in table and b in table:
            per = paired_by_seed([p["arms"][a]["test"] for p in per_seed],
                                 [p["arms"][b]["test"] for p in per_seed])
            d, lo, hi = hierarchical_bootstrap(per, shared_questions=shared and len(per_seed) > 1)
            base = table[a]["test_acc"]
            diffs[f"{b} - {a}"] = {"diff": d, "ci": [lo, hi], "relative": d / base if base else None,
                                   "per_seed": [sum(x) / len(x) for x in per]}
    return {"seeds": seeds, "shared_test": shared, "arms": table, "differences": diffs,
            "facts": [p["facts"] for p in per_seed]}


def markdown(res: dict[str, Any], label: str, sizes: dict[str, int]) -> str:
    seeds = res["seeds"]
    kind = "development: not final figures" if set(seeds) & set(DEV_SEEDS) else "final: used for no choice"
    lines = [f"# {label}: seeds {seeds} ({kind}), {sizes['train']} train, "
             f"{sizes['val']} val, {sizes['test']} test questions per seed", "",
             "Intervals: hierarchical bootstrap 95 % (seeds resampled, then questions within each seed).", "",
             "| arm | test acc [95 % CI] | per seed (test) | per seed (val) |", "|---|---|---|---|"]
    for arm, r in res["arms"].items():
        lines.append(f"| {arm} | {r['test_acc']:.1%} [{r['ci'][0]:.1%}, {r['ci'][1]:.1%}] | "
                     + ", ".join(f"{x:.1%}" for x in r["per_seed"]) + " | "
                     + ", ".join(f"{x:.1%}" for x in r["val_per_seed"]) + " |")
    lines += ["", "| difference | points [95 % CI] | relative | per seed |", "|---|---|---|---|"]
    for key, d in res["differences"].items():
        rel = "-" if d["relative"] is None else f"{d['relative']:+.0%}"
        lines.append(f"| {key} | {d['diff']:+.1%} [{d['ci'][0]:+.1%}, {d['ci'][1]:+.1%}] | {rel} | "
                     + ", ".join(f"{x:+.1%}" for x in d["per_seed"]) + " |")
    lines += ["", "| seed | one-shot epochs chosen | UNDO best | repeat best | UNDO steps (x iteration 0) "
              "| refined texts new / same | false step named -> written right |",
              "|---|---|---|---|---|---|---|"]
    for f in res["facts"]:
        t = f["tailoring"].get(1) or f["tailoring"].get("1") or {}
        lines.append(f"| {f['seed']} | {f['oneshot_best_epochs']:g} | {f['undo_best']} | {f['repeat_best']} | "
                     f"{f['undo_steps']} ({f['undo_total_steps_x']}x) | {t.get('texts_new', '-')} / "
                     f"{t.get('texts_same', '-')} | {t.get('false_step_texts', '-')} -> "
                     f"{t.get('false_step_fixed', '-')} |")
    variants = sorted({v for f in res["facts"] for v in f.get("variant_tailoring", {})})
    if variants:
        lines += ["", "| seed | variant | chosen on val | questions refined | verified | texts new / same "
                  "| false step named -> written right |", "|---|---|---|---|---|---|---|"]
        for f in res["facts"]:
            for v in variants:
                t = f["variant_tailoring"].get(v) or {}
                lines.append(f"| {f['seed']} | {v} | {f.get('variant_best', {}).get(v, '-')} | "
                             f"{t.get('questions', '-')} | "
                             f"{t.get('questions_verified', '-')} | "
                             f"{t.get('texts_new', '-')} / {t.get('texts_same', '-')} | "
                             f"{t.get('false_step_texts', '-')} -> {t.get('false_step_fixed', '-')} |")
    return "\n".join(lines) + "\n"


def plot(res: dict[str, Any], label: str, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    arms = list(res["arms"])
    fig, ax = plt.subplots(figsize=(7.2, 4.0), dpi=110)
    for i, arm in enumerate(arms):
        r = res["arms"][arm]
        ax.errorbar([i], [r["test_acc"]], yerr=[[r["test_acc"] - r["ci"][0]], [r["ci"][1] - r["test_acc"]]],
                    fmt="o", color="C0", capsize=4, label="mean, hierarchical 95 % CI" if i == 0 else None)
        ax.plot([i] * len(r["per_seed"]), r["per_seed"], ".", color="C1", alpha=0.6,
                label="single seeds" if i == 0 else None)
    ax.set_xticks(range(len(arms)))
    ax.set_xticklabels(arms, rotation=30, ha="right", fontsize=8)
    ax.set_ylabel("test accuracy")
    kind = "development" if set(res["seeds"]) & set(DEV_SEEDS) else "final"
    ax.set_title(f"{label}: {len(res['seeds'])} {kind} seeds", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out)
    plt.close(fig)


def main() -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    ap.add_argument("--preset", choices=sorted(PRESETS), default="chain_sum")
    ap.add_argument("--seeds", type=int, nargs="+", default=FINAL_SEEDS)
    ap.add_argument("--train", type=int, default=None, help="default: the preset's")
    ap.add_argument("--val", type=int, default=None, help="default: the preset's")
    ap.add_argument("--test", type=int, default=None, help="default: the preset's")
    ap.add_argument("--iters", type=int, default=1, help="UNDO iterations after one-shot")
    ap.add_argument("--epochs", type=float, nargs="+", default=[3, 6, 9],
                    help="the one-shot grid (the config's own epochs is UNDO's iteration 0)")
    ap.add_argument("--undo-epochs", type=float, nargs="*", default=[],
                    help="with --variants: each variant's iteration 1 also trained for these epochs "
                         "(its refinements copied), chosen on val as one-shot's epochs are")
    ap.add_argument("--set", nargs="*", default=[], help="extra key=value overrides for every arm")
    ap.add_argument("--label", default=None, help="output name (default: the preset's)")
    ap.add_argument("--summarize", action="store_true", help="only read finished runs and write the tables")
    ap.add_argument("--variants", nargs="*", default=[], choices=sorted(VARIANTS),
                    help="extra UNDO arms on the same iteration 0 (control: the scripted control arm)")
    args = ap.parse_args()
    config_name, preset = PRESETS[args.preset]
    config = ROOT.parent / config_name
    label = args.label or args.preset
    out_dir = ROOT / "out" / "quality" / label
    args.sizes = [f"splits.{k}={v}" for k, v in (("train", args.train), ("val", args.val), ("test", args.test))
                  if v is not None]
    if set(args.seeds) & set(DEV_SEEDS):
        print(f"note: seeds {sorted(set(args.seeds) & set(DEV_SEEDS))} are development seeds: "
              "not final figures", flush=True)
    t0 = time.time()
    generated = load_config(config, preset).task.name == "gym"
    overlap = overlap_check(config, preset, args.sizes, args.seeds) if generated else None
    if overlap is not None:
        print(f"final test questions also in another seed's train/val: {overlap}", flush=True)
    per_seed = []
    for seed in args.seeds:
        per_seed.append(run_seed(seed, args, config, preset, out_dir))
        print(json.dumps({"seed": seed, **{a: round(sum(v["test"].values()) / len(v["test"]), 4)
                                            for a, v in per_seed[-1]["arms"].items()}}), flush=True)
    res = summarize(per_seed, args.seeds)
    first = out_dir / f"undo-s{args.seeds[0]}" / "splits"
    sizes = {s: sum(1 for _ in (first / f"{s}.jsonl").open()) for s in ("train", "val", "test")}
    res.update(preset=args.preset, label=label, sizes=sizes, iters=args.iters, epochs=args.epochs,
               undo_epochs=args.undo_epochs,
               overrides=[*preset, *args.set], dev_seeds=DEV_SEEDS, overlap=overlap,
               wall_s=round(time.time() - t0))
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "results.json").write_text(json.dumps(res, indent=2))
    png = ROOT / f"quality_{label}.png"
    plot(res, label, png)
    md = markdown(res, label, sizes) + f"\nwall {res['wall_s']} s; plot {png.relative_to(ROOT.parent)}\n"
    (out_dir / "results.md").write_text(md)
    print(md)


if __name__ == "__main__":
    main()
