"""report.html: one self-contained page per run (plots inlined), rendered from a Jinja2 template.

Sections: accuracy per iteration (val and test, 95 % CIs, base and one-shot lines), training
loss per iteration, the teacher's verdicts per iteration, training-set sources, teacher
tokens and cost, the learning flow (counts and a question x iteration grid whose rows open
onto that question's attempts and rationales), and the transfer matrix when there is one.
"""

from __future__ import annotations

import base64
import io
import os
from collections import Counter
from pathlib import Path
from typing import Any

from undo.rows import Flow, FlowQuestion, IterationMetrics, RationaleRow, Summary
from undo.runstore import (
    RunStore,
    read_attempt_rows,
    read_json,
    read_jsonl,
    read_rationale_rows,
    train_result_file,
)

SECTIONS = ["accuracy", "loss", "verdicts", "sources", "teacher", "flow"]


def _png(fig: Any) -> str:
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def _figure(width: float = 6.0, height: float = 3.2) -> tuple[Any, Any]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt.subplots(figsize=(width, height))


def _verdict(row: RationaleRow) -> str:
    """verified / rationalized, or why it failed (wrong_answer, unparsed, truncated, leak, ...)."""
    return row["verdict"] if row["verdict"] != "failed" else row.get("reason", "failed")


def report_data(run_dir: Path, summary: Summary) -> dict[str, Any]:
    from undo.stats import accuracy_ci

    rows = summary["iterations"]
    iters = [r for r in rows if isinstance(r["iteration"], int)]
    store = RunStore(run_dir)
    acc = []
    for r in rows:
        entry: dict[str, Any] = {"iteration": r["iteration"]}
        for split in ("val", "test"):
            path = store.attempts_file(r["iteration"], split)
            got = [bool(a["correct"]) for a in read_attempt_rows(path)] if path.exists() else []
            entry[split] = accuracy_ci(got, n_boot=2000) if got else None
        acc.append(entry)
    losses, offset = [], 0
    for r in iters:
        tr_file = train_result_file(store.student_dir(r["iteration"]))
        tr = read_json(tr_file) if tr_file.exists() else {"losses": [], "loss_steps": []}
        losses.append({"iteration": r["iteration"], "steps": [offset + s for s in tr["loss_steps"]],
                       "losses": tr["losses"]})
        offset += r.get("steps") or 0
    verdicts, usage = [], []
    for r in iters:
        k = r["iteration"]
        path = store.rationales_file(k)
        verdicts.append({"iteration": k, "counts": dict(Counter(_verdict(x) for x in read_rationale_rows(path)))
                         if path.exists() else {}})
        u_file = store.teacher_usage_file(k)
        u = read_json(u_file) if u_file.exists() else {}
        tokens = u.get("usage", {}).get("prompt_tokens", 0) + u.get("usage", {}).get("completion_tokens", 0)
        usage.append({"iteration": k, "tokens": tokens, "cost": u.get("cost_usd")})
    flow_file = store.flow_file
    flow: Flow = read_json(flow_file) if flow_file.exists() else {"counts": {}, "grid": {}}
    from undo.display import tailored, teacher_shown

    grid = flow.get("grid", {})
    rows_of_grid = grid_rows(run_dir, iters, grid, _question_details(run_dir, iters, grid))
    opening = common_opening(rows_of_grid)
    for r in rows_of_grid:
        r["question"] = r["question"][len(opening):]
    return {"grid_rows": rows_of_grid, "grid_opening": opening.strip(),
            "flow_filters": [(tag, label, sum(tag in r["tags"] for r in rows_of_grid))
                             for tag, label in FLOW_FILTERS],
            "summary": summary, "rows": rows, "iters": iters, "acc": acc, "losses": losses,
            "tailored": [tailored(r) for r in rows], "shown": teacher_shown(run_dir),
            "verdicts": verdicts, "usage": usage, "flow": flow}


FLOW_FILTERS = [("fixed", "fixed by a refinement"), ("unfixed", "refined, still wrong"), ("refined", "refined"),
                ("train", "train"), ("val", "val")]
# what a training example's source letter means in the grid
SOURCE_LETTERS = {"student": "s", "refined": "r", "teacher": "t", "repeat": "p", "none": "-"}


def _tags(q: FlowQuestion, ks: list[int]) -> list[str]:
    """The filter tags of a question: `fixed` (a verified refinement at k, wrong before k and
    right after), `unfixed` (refined, still wrong after), `refined`, and its split."""
    tags = {q["split"]}
    for k in ks[1:]:
        if q["refined"].get(str(k)):
            tags.add("refined")
            before, after = q["correct"].get(str(k - 1)), q["correct"].get(str(k))
            if before is False and after:
                tags.add("fixed")
            elif after is False:
                tags.add("unfixed")
    return sorted(tags)


def grid_rows(run_dir: Path, iters: list[IterationMetrics], grid: dict[str, FlowQuestion],
              details: dict[str, list]) -> list[dict[str, Any]]:
    """One row per train and val question, named by its text: a cell per column (the base
    student where it was scored, then each iteration: right, wrong, not answered; the letter
    is the training example's source), filter tags, and the attempts and rationales its row
    opens onto. Train first, in split order."""
    ks = [r["iteration"] for r in iters]
    store = RunStore(run_dir)
    text = {str(r["id"]): r["question"] for split in ("train", "val")
            for r in (read_jsonl(store.split_file(split)) if store.split_file(split).exists() else [])}
    columns = (["base"] if any("base" in q["correct"] for q in grid.values()) else []) + ks
    out = []
    for qid, q in grid.items():
        cells = []
        for k in columns:
            c = q["correct"].get(str(k))
            source = q["source"].get(str(k)) or ""
            letter = "+".join(SOURCE_LETTERS.get(x, x[:1]) for x in source.split("+")) if source else ""
            state = "not answered" if c is None else ("right" if c else "wrong")
            cells.append({"cls": "na" if c is None else ("ok" if c else "bad"), "letter": letter,
                          "title": f"{'base student' if k == 'base' else f'iteration {k}'}: {state}"
                                   + (f"; trained on: {source}" if source else "")})
        out.append({"id": qid, "split": q["split"], "question": " ".join(text.get(qid, qid).split()),
                    "cells": cells, "tags": _tags(q, ks), "details": details.get(qid, [])})
    order = {"train": 0, "val": 1}
    return sorted(out, key=lambda r: order.get(r["split"], 2))


def common_opening(rows: list[dict[str, Any]], least: int = 16) -> str:
    """The words every question opens with ("State the final answer to the following
    arithmetic problem:"), said once above the grid instead of on every row."""
    texts = [r["question"] for r in rows]
    if len(texts) < 2:
        return ""
    prefix = os.path.commonprefix(texts)
    prefix = prefix[: prefix.rfind(" ") + 1] if " " in prefix else ""
    return prefix if len(prefix) >= least else ""


def _question_details(run_dir: Path, iters: list[IterationMetrics],
                      grid: dict[str, FlowQuestion]) -> dict[str, list]:
    """Per question: (iteration, what) lines from the attempt and rationale files, each read once."""
    out: dict[str, list] = {qid: [] for qid in grid}

    def add(path: Path, label: str, text_of: Any) -> None:
        if path.exists():
            for row in read_jsonl(path):
                if str(row["id"]) in out:
                    out[str(row["id"])].append((label, text_of(row)))

    store = RunStore(run_dir)
    for r in iters:
        k = r["iteration"]
        add(store.attempts_file(k, "train"), f"iteration {k}: the student before it (diagnosis)",
            lambda a: ("right" if a["correct"] else "wrong") + ": " + a["output"])
        what = "explains" if k == 0 else "refines"
        add(store.rationales_file(k), f"iteration {k}: the teacher ({what})",
            lambda x: x.get("rationale") or f"(none verified: {x.get('reason')})")
        add(store.attempts_file(k, "val"), f"iteration {k}: the student after training (val)",
            lambda a: ("right" if a["correct"] else "wrong") + ": " + a["output"])
    return out


def plots(data: dict[str, Any]) -> dict[str, str]:
    """The figures, as data: URLs."""
    out: dict[str, str] = {}
    iters, acc = data["iters"], data["acc"]
    fig, ax = _figure()
    xs = [r["iteration"] for r in iters]
    for split, marker in (("val", "o-"), ("test", "s-")):
        pts = [(e["iteration"], e[split]) for e in acc if isinstance(e["iteration"], int) and e[split]]
        if pts:
            ax.plot([p[0] for p in pts], [p[1][0] for p in pts], marker, label=split)
            ax.fill_between([p[0] for p in pts], [p[1][1] for p in pts], [p[1][2] for p in pts], alpha=0.2)
    base = next((e for e in acc if e["iteration"] == "base" and e["test"]), None)
    if base:
        ax.axhline(base["test"][0], color="grey", ls=":", label="base student (test)")
    oneshot = next((e for e in acc if e["iteration"] == 0 and e["test"]), None)
    if oneshot:
        ax.axhline(oneshot["test"][0], color="black", ls="--", lw=0.8, label="one-shot (test)")
    ax.set(xlabel="iteration", ylabel="accuracy", xticks=xs)
    ax.legend(fontsize=8)
    out["accuracy"] = _png(fig)

    fig, ax = _figure()
    for curve in data["losses"]:
        if curve["losses"]:
            ax.plot(curve["steps"], curve["losses"], label=f"iteration {curve['iteration']}")
    ax.set(xlabel="student step (all iterations)", ylabel="training loss")
    ax.legend(fontsize=8)
    out["loss"] = _png(fig)

    for key, series in (("verdicts", [(v["iteration"], v["counts"]) for v in data["verdicts"]]),
                        ("sources", [(r["iteration"], r.get("sources") or {}) for r in iters])):
        fig, ax = _figure()
        labels = sorted({name for _, counts in series for name in counts})
        bottom = [0] * len(series)
        for name in labels:
            vals = [counts.get(name, 0) for _, counts in series]
            ax.bar([str(k) for k, _ in series], vals, bottom=bottom, label=name)
            bottom = [b + v for b, v in zip(bottom, vals, strict=True)]
        ax.set(xlabel="iteration", ylabel="questions" if key == "verdicts" else "training examples")
        if labels:
            ax.legend(fontsize=8)
        out[key] = _png(fig)

    fig, ax = _figure()
    total, cum = 0, []
    for u in data["usage"]:
        total += u["tokens"]
        cum.append(total)
    ax.plot([str(u["iteration"]) for u in data["usage"]], cum, "o-")
    ax.set(xlabel="iteration", ylabel="teacher tokens, cumulative")
    out["teacher"] = _png(fig)
    return out


def write_html(run_dir: Path, summary: Summary, markdown_tables: dict[str, str]) -> str:
    """Render report.html's text (the caller writes it)."""
    import jinja2

    data = report_data(run_dir, summary)
    env = jinja2.Environment(loader=jinja2.PackageLoader("undo", "templates"),
                             autoescape=jinja2.select_autoescape(["html", "j2"]))
    matrix_file = RunStore(run_dir).transfer_matrix_file
    return env.get_template("report.html.j2").render(
        **data, plots=plots(data), sections=SECTIONS, tables=markdown_tables,
        matrix=read_json(matrix_file) if matrix_file.exists() else None)
