"""Metrics tables, plots, a markdown/HTML report, and paired comparisons of runs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from undo.display import tailored, teacher_shown
from undo.errors import UserError
from undo.rows import Headline, HeadlineArm, IterationMetrics, TransferMatrix
from undo.runstore import RunStore, TransferFolder, read_attempt_rows, read_json, read_summary, write_atomic
from undo.stats import accuracy_ci, paired_bootstrap


def _pct(v: Any) -> str:
    return "-" if v is None else f"{v:.1%}"


def markdown_table(rows: list[IterationMetrics]) -> str:
    head = ("| iteration | train errors | refined ok/failed | refined texts new/same | train examples | steps "
            "| val acc | test acc | teacher tokens | wall s |")
    lines = [head, "|" + "---|" * 10]
    for m in rows:
        refined = ("-" if m.get("refined_verified") is None
                   else f"{m['refined_verified']}/{m['refined_failed']}")
        lines.append(
            f"| {m['iteration']} | {m.get('train_errors', '-') if m.get('train_errors') is not None else '-'} "
            f"| {refined} | {tailored(m)} | {m.get('train_examples', '-')} | {m.get('steps', '-')} "
            f"| {_pct(m.get('val_acc'))} | {_pct(m.get('test_acc'))} "
            f"| {m.get('teacher_tokens', '-')} | {m.get('wall_s', '-')} |"
        )
    return "\n".join(lines)


def _plot(rows: list[IterationMetrics], out: Path) -> str | None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None  # plots are optional: pip install 'undo-distill[plot]'
    iters = [r for r in rows if isinstance(r["iteration"], int)]
    if not iters:
        return None
    fig, ax = plt.subplots(figsize=(5, 3.2))
    xs = [r["iteration"] for r in iters]
    ax.plot(xs, [r["val_acc"] for r in iters], "o-", label="val")
    ax.plot(xs, [r["test_acc"] for r in iters], "s-", label="test")
    base = next((r for r in rows if r["iteration"] == "base"), None)
    if base:
        ax.axhline(base["test_acc"], color="grey", ls="--", label="base student (test)")
    ax.set_xlabel("iteration")
    ax.set_ylabel("accuracy")
    ax.set_xticks(xs)
    ax.legend()
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=120)
    plt.close(fig)
    return str(out.relative_to(out.parent.parent))


def write_report(run_dir: Path) -> Path:
    store = RunStore(run_dir)
    summary = read_summary(store.summary_file)
    rows = summary["iterations"]
    plot = _plot(rows, store.plot_file("accuracy"))
    md = [
        f"# {summary['name']} ({summary['method']})",
        "",
        f"Best iteration by val accuracy: **{summary['best_iteration']}** "
        f"(val {_pct(summary['best_val_acc'])}, test {_pct(summary['best_test_acc'])}). "
        f"Stopped: {summary['stop_reason']}. Total student steps: {summary['total_steps']}; "
        f"teacher tokens: {summary['teacher_tokens']}; wall time {summary['wall_s']:.0f} s.",
        "",
        teacher_shown(run_dir),
        "",
        markdown_table(rows),
        "",
    ]
    if summary.get("headline", {}).get("rows"):
        md += [headline_markdown(summary["headline"]), ""]
    if any(summary.get("flow", {}).values()):
        from undo.outputs.flow import flow_markdown

        md += ["## Learning flow", "",
               "Per question between consecutive iterations: fixed (wrong -> right), broken "
               "(right -> wrong), kept, and for train questions still wrong: stuck (a verified "
               "refinement was trained on) or never refined. `undo flow RUN --question ID` shows "
               "one question's answers and the refined explanations.", "",
               flow_markdown({"counts": summary["flow"]})]
    if store.transfer_matrix_file.exists():
        matrix: TransferMatrix = read_json(store.transfer_matrix_file)
        md += ["## Transfer: other students on this run's data", "",
               "Test accuracy of each student trained on each iteration's training set; in brackets, "
               "the paired 95% CI against the same student's first column.", "",
               *matrix_lines(matrix), ""]
    if plot:
        md.append(f"![accuracy]({plot})")
    text = "\n".join(md) + "\n"
    write_atomic(store.report_md, text)
    from undo.outputs.report_html import write_html

    write_atomic(store.report_html, write_html(run_dir, summary, {}))
    return store.report_md


# ---- comparisons -------------------------------------------------------------------


def headline(run_dir: Path, best: int | None) -> Headline:
    """Base / one-shot / UNDO on test, with 95% CIs, and one sentence saying what it shows.

    The UNDO row is the best iteration by val; when that is iteration 0 itself, the last
    UNDO iteration is shown instead, marked as not chosen. The arms answer the same test
    questions, so differences are paired."""
    def attempts(k: int | str) -> dict[str, bool] | None:
        path = store.attempts_file(k, "test")
        return {a["id"]: bool(a["correct"]) for a in read_attempt_rows(path)} if path.exists() else None

    store = RunStore(run_dir)
    oneshot = attempts(0)
    if oneshot is None or best is None:
        return {"rows": [], "sentence": ""}
    ids = sorted(oneshot)
    # the iterations after one-shot that were scored
    later = [k for k in store.iterations() if k > 0 and store.attempts_file(k, "test").exists()]
    undo_k = best if best != 0 else (later[-1] if later else None)
    arms: list[tuple[str, int | str]] = [("base student", "base"), ("one-shot (iteration 0)", 0)]
    if undo_k is not None:
        arms.append((f"UNDO (iteration {undo_k}, best by val)" if best != 0
                     else f"UNDO (iteration {undo_k}, not chosen: val not above one-shot)", undo_k))
    rows: list[HeadlineArm] = []
    for label, k in arms:
        res = attempts(k)
        if res is None:
            continue
        acc, lo, hi = accuracy_ci([res[i] for i in ids])
        row: HeadlineArm = {"arm": label, "iteration": k, "n": len(ids), "test_acc": acc,
                            "ci_low": lo, "ci_high": hi}
        if k != 0:
            d, dlo, dhi = paired_bootstrap([oneshot[i] for i in ids], [res[i] for i in ids])
            row.update({"diff_vs_oneshot": d, "diff_ci_low": dlo, "diff_ci_high": dhi})
        rows.append(row)
    undo = next((r for r in rows if r["iteration"] == undo_k and undo_k not in (None, 0)), None)
    if undo is None:
        return {"rows": rows, "sentence": "No UNDO iteration ran after one-shot."}
    d, lo, hi = undo["diff_vs_oneshot"], undo["diff_ci_low"], undo["diff_ci_high"]
    verdict = ("the 95% interval excludes zero: a gain beyond question-sampling noise" if lo > 0
               else "the 95% interval excludes zero: UNDO did worse here" if hi < 0
               else "the 95% interval includes zero: not distinguishable from one-shot at this size")
    how = "chosen on val" if best != 0 else "not chosen (its val accuracy did not beat one-shot's)"
    sentence = (f"UNDO's iteration {undo_k}, {how}, scores {d:+.1%} [{lo:+.1%}, {hi:+.1%}] against "
                f"one-shot at the same epochs on {len(ids)} test questions; {verdict} (one seed: "
                "training noise is not in this interval; `undo compare` over runs of several seeds covers it).")
    return {"rows": rows, "sentence": sentence}


def headline_markdown(h: Headline) -> str:
    lines = ["| student | test acc [95% CI] | vs one-shot [95% CI] |", "|---|---|---|"]
    for r in h["rows"]:
        diff = (f"{r['diff_vs_oneshot']:+.1%} [{r['diff_ci_low']:+.1%}, {r['diff_ci_high']:+.1%}]"
                if "diff_vs_oneshot" in r else "-")
        lines.append(f"| {r['arm']} | {r['test_acc']:.1%} [{r['ci_low']:.1%}, {r['ci_high']:.1%}] "
                     f"(n={r['n']}) | {diff} |")
    return "\n".join(lines) + "\n\n" + h["sentence"]


def test_attempts(run: Path | str, iteration: str | int | None = None) -> tuple[str, dict[str, bool]]:
    """(label, id -> correct) for a run's best (or given) iteration, or a transfer folder.

    `RUN@K` names iteration K of a run (`RUN@base`: the untrained student)."""
    text = str(run)
    if "@" in text and iteration is None:
        text, _, k = text.rpartition("@")
        iteration = int(k) if k.isdigit() else k
    run = Path(text)
    transfer = TransferFolder(run)
    if transfer.finished():  # a transfer folder: its own student's test answers
        label, path = run.name, transfer.attempts_file("test")
    else:
        store = RunStore(run)
        if not store.summary_file.exists():
            raise UserError(f"{run}: no summary.json (not a finished undo run)")
        k = read_summary(store.summary_file)["best_iteration"] if iteration is None else iteration
        label = f"{run.name}@{k}"
        path = store.attempts_file(k, "test")
    if not path.exists():
        raise UserError(f"{path}: not found")
    return label, {a["id"]: bool(a["correct"]) for a in read_attempt_rows(path)}


def compare(arms: list[list[Path | str]] | list[Path | str], n_boot: int = 10_000) -> list[dict[str, Any]]:
    """Test accuracy of each arm, and each arm minus the first with a 95% CI.

    An arm is one run, or several (one per seed: `RUN_A_s1,RUN_A_s2`), paired with the other
    arms' runs in the order given: each seed's runs must have answered the same test
    questions. The interval is a hierarchical bootstrap (seeds, then questions within each),
    which covers training noise as well as question sampling; with one run per arm it is the
    paired bootstrap over questions. When every seed answered the same test questions (a fixed
    test set), one question resample serves all seeds of a draw. Rows carry the per-seed
    figures beside the interval."""
    from undo.stats import hierarchical_bootstrap, paired_by_seed

    specs = [[a] if isinstance(a, (str, Path)) else list(a) for a in arms]
    if len({len(s) for s in specs}) != 1:
        raise UserError("every arm needs the same number of runs (one per seed, in the same seed order); "
                        f"got {', '.join(str(len(s)) for s in specs)}")
    loaded = [[test_attempts(r) for r in spec] for spec in specs]
    for arm in loaded:
        for label, res in arm:
            if not res:
                raise UserError(f"{label}: no test attempts to compare (its attempts_test.jsonl is empty)")
    ref = loaded[0]
    # a fixed test set (SVAMP, a user's file) gives every seed the same questions
    shared = len(ref) > 1 and all(set(res) == set(ref[0][1]) for _, res in ref)
    out = []
    for arm in loaded:
        for (label, res), (ref_label, ref_res) in zip(arm, ref, strict=True):
            if set(res) != set(ref_res):
                raise UserError(f"{label} and {ref_label} were not scored on the same test questions")
        label = ",".join(lbl for lbl, _ in arm)
        per_seed = [sum(res.values()) / len(res) for _, res in arm]
        acc, lo, hi = hierarchical_bootstrap([[res[q] for q in sorted(res)] for _, res in arm], n_boot,
                                             shared_questions=shared)
        row: dict[str, Any] = {"run": label, "seeds": len(arm), "n": sum(len(res) for _, res in arm),
                               "shared_test": shared,
                               "test_acc": acc, "acc_ci_low": lo, "acc_ci_high": hi, "per_seed": per_seed}
        if arm is not ref:
            diffs = paired_by_seed([res for _, res in ref], [res for _, res in arm])
            d, lo, hi = hierarchical_bootstrap(diffs, n_boot, shared_questions=shared)
            row.update(diff=d, ci_low=lo, ci_high=hi, diff_per_seed=[sum(x) / len(x) for x in diffs])
        out.append(row)
    return out


def matrix_lines(matrix: TransferMatrix) -> list[str]:
    ks = matrix["iterations"]
    lines = ["| student | " + " | ".join(f"iteration {k}" for k in ks) + " |", "|---" * (len(ks) + 1) + "|"]
    for student in matrix["students"]:
        cells = {c["iteration"]: c for c in matrix["cells"] if c["student"] == student}
        out = []
        for k in ks:
            c = cells[k]
            diff = (f" ({c['diff_vs_first']:+.1%} [{c['ci_low']:+.1%}, {c['ci_high']:+.1%}])"
                    if "diff_vs_first" in c else "")
            out.append(f"{c['test_acc']:.1%}{diff}")
        lines.append(f"| {student} | " + " | ".join(out) + " |")
    return lines
