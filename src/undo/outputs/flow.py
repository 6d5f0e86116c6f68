"""The learning flow: what the loop did to each question, iteration by iteration.

For every train and val question: whether the student of each iteration answered it right,
and (train) what its training example in that iteration came from: the student's own
trace, a refined teacher rationale, an earlier teacher rationale, or nothing. Between two
iterations a question is `fixed` (wrong -> right), `broken` (right -> wrong), `kept`
(right -> right) or still wrong; a still-wrong train question is `stuck` when a verified
refinement was trained on, `never_refined` when none was.

Where the verdicts come from: the student of iteration k answers val in iter_k/attempts_val
and train in iter_{k+1}/attempts_train (the next iteration's diagnosis; for the last student
the loop writes it there after stopping, unless loop.flow_train_eval is false). A verdict
that does not exist is None, and its transitions are counted as `unknown`.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any, cast

from undo.arithmetic import calculations
from undo.errors import UserError
from undo.rows import Flow, FlowQuestion, FlowTransition, RationaleRow, StudentAttempt
from undo.runstore import RunStore, read_attempt_rows, read_jsonl, read_rationale_rows, read_train_rows


def _attempts(path: Path) -> dict[str, StudentAttempt]:
    return {str(r["id"]): r for r in read_attempt_rows(path)} if path.exists() else {}


def _rationales(path: Path) -> dict[str, RationaleRow]:
    return {str(r["id"]): r for r in read_rationale_rows(path)} if path.exists() else {}


def _iterations(store: RunStore) -> list[int]:
    ks = []
    k = 0
    while store.metrics_file(k).exists():
        ks.append(k)
        k += 1
    return ks


def learning_flow(run_dir: Path) -> dict[str, Any]:
    """{"iterations": [...], "questions": {id: {...}}, "counts": {split: [{iteration, ...}]}}."""
    store = RunStore(Path(run_dir))
    store.config_file()  # a folder that is no run: one line
    ks = _iterations(store)
    splits = {s: [str(r["id"]) for r in read_jsonl(store.split_file(s))] for s in ("train", "val")}
    questions: dict[str, dict[str, Any]] = {}
    for split, ids in splits.items():
        for qid in ids:
            questions[qid] = {"split": split, "correct": {}, "source": {}, "refined": {}}
    for split in ("train", "val"):
        base = _attempts(store.attempts_file("base", split))
        for qid in splits[split]:
            if qid in base:
                questions[qid]["correct"]["base"] = bool(base[qid]["correct"])
    for k in ks:
        val = _attempts(store.attempts_file(k, "val"))
        train = _attempts(store.attempts_file(k + 1, "train"))  # student k, diagnosed next
        refined = _rationales(store.rationales_file(k)) if k > 0 else {}
        sources: dict[str, list[str]] = {}
        data_file = store.train_data_file(k)
        for row in read_train_rows(data_file) if data_file.exists() else []:
            sources.setdefault(str(row["id"]), []).append(row["source"])
        for qid in splits["val"]:
            questions[qid]["correct"][k] = bool(val[qid]["correct"]) if qid in val else None
        for qid in splits["train"]:
            q = questions[qid]
            q["correct"][k] = bool(train[qid]["correct"]) if qid in train else None
            src = sources.get(qid, [])
            q["source"][k] = src[0] if len(set(src)) == 1 else ("+".join(sorted(set(src))) or "none")
            if k > 0:
                q["refined"][k] = (None if qid not in refined
                                   else bool(refined[qid].get("rationale")))
    counts = {split: [_transitions(questions, splits[split], k, split) for k in ks if k > 0]
              for split in ("train", "val")}
    return {"iterations": ks, "questions": questions, "counts": counts}


def _transitions(questions: dict[str, dict[str, Any]], ids: list[str], k: int, split: str) -> FlowTransition:
    c: Counter[str] = Counter()
    for qid in ids:
        q = questions[qid]
        before, after = q["correct"].get(k - 1), q["correct"].get(k)
        if before is None or after is None:
            c["unknown"] += 1
        elif not before and after:
            c["fixed"] += 1
        elif before and not after:
            c["broken"] += 1
        elif before:
            c["kept"] += 1
        elif split == "train":
            c["stuck" if q["refined"].get(k) else "never_refined"] += 1
        else:
            c["still_wrong"] += 1
    keys = (["fixed", "broken", "kept", "stuck", "never_refined"] if split == "train"
            else ["fixed", "broken", "kept", "still_wrong"])
    out = cast(FlowTransition, {"iteration": k, **{key: c[key] for key in keys}})
    if c["unknown"]:
        out["unknown"] = c["unknown"]  # the last iteration's train verdicts: not diagnosed
    return out


def flow_markdown(flow: dict[str, Any]) -> str:
    lines = []
    for split in ("train", "val"):
        rows = flow["counts"][split]
        if not rows:
            continue
        keys = [k for k in rows[0] if k != "iteration"]
        lines += [f"**{split}** (iteration t against t-1)", "",
                  "| iteration | " + " | ".join(keys) + " |",
                  "|---" * (len(keys) + 1) + "|"]
        lines += ["| " + " | ".join(str(r.get(k, "")) for k in ["iteration", *keys]) + " |" for r in rows]
        lines.append("")
    return "\n".join(lines)


def question_story(run_dir: Path, qid: str) -> list[str]:
    """One question through the run: each iteration's answer and verdict, and the teacher's
    refined explanation beside the error it answered."""
    store = RunStore(Path(run_dir))
    flow = learning_flow(run_dir)
    if qid not in flow["questions"]:
        raise UserError(f"{run_dir}: no train or val question with id '{qid}'")
    q = flow["questions"][qid]
    split = q["split"]
    record = next(r for r in read_jsonl(store.split_file(split)) if str(r["id"]) == qid)
    out = [f"{qid} ({split})  gold: {record.get('answer')}", record.get("question", ""), ""]

    def answer(path: Path) -> str:
        row = _attempts(path).get(qid)
        if row is None:
            return "(not answered)"
        verdict = "right" if row["correct"] else "WRONG"
        return f"{verdict}: {row['output'].strip()[-300:]}"

    base_file = store.attempts_file("base", split)
    if base_file.exists():
        out += ["== base student ==", answer(base_file), ""]
    for k in flow["iterations"]:
        out.append(f"== iteration {k} ==")
        if split == "train":
            rationales = _rationales(store.rationales_file(k))
            if k > 0 and qid in rationales:
                error = _attempts(store.attempts_file(k, "train")).get(qid)
                if error is not None:
                    out += ["student's error it answered:", error["output"].strip()[-300:]]
                refined = rationales[qid].get("rationale")
                out += ["teacher's refined explanation:" if refined else "refinement: none verified",
                        (refined or "").strip()]
            elif k == 0 and qid in rationales:
                first = rationales[qid].get("rationale") or "(none verified)"
                out += ["teacher's explanation:", first.strip()]
            out.append(f"trained on: {q['source'].get(k)}")
            out.append("student after training: " + answer(store.attempts_file(k + 1, "train")))
        else:
            out.append("student after training: " + answer(store.attempts_file(k, "val")))
        out.append("")
    return out


def _one_line(text: str, n: int = 160) -> str:
    flat = " / ".join(line.strip() for line in text.strip().splitlines() if line.strip())
    return flat if len(flat) <= n else flat[: n - 3] + "..."


def _clean(text: str) -> bool:
    """Every line a calculation or the answer line: no prose (a small teacher sometimes
    echoes its prompt into a rationale that still verifies)."""
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return len(calculations(text)) >= len(lines) - 1


def story_pick(run_dir: Path) -> tuple[str, int] | None:
    """(question id, iteration k) of the train question whose story tells UNDO best: wrong
    before iteration k, a verified refinement at k, and right after it; among those, one
    whose attempt had a false calculation, whose refinement is only calculations (no echoed
    prompt) and is new text first. None when no iteration refined anything."""
    store = RunStore(Path(run_dir))
    best: tuple[tuple[bool, ...], str, int] | None = None
    for k in _iterations(store)[1:]:
        refined = _rationales(store.rationales_file(k))
        diag = _attempts(store.attempts_file(k, "train"))
        after = _attempts(store.attempts_file(k + 1, "train"))
        previous = {qid: r.get("rationale")
                    for qid, r in _rationales(store.rationales_file(k - 1)).items()}
        for qid, row in refined.items():
            if not row.get("rationale") or qid not in diag:
                continue
            new = " ".join(row["rationale"].split()) != " ".join((previous.get(qid) or "").split())
            rank = (bool(after.get(qid, {}).get("correct")), bool(diag[qid].get("false_step")),
                    _clean(row["rationale"]), new)
            if best is None or rank > best[0]:
                best = (rank, qid, k)
    return (best[1], best[2]) if best else None


def fixed_story(run_dir: Path, attempt_shown: bool) -> list[str]:
    """A few lines for the end of a run: one train question's wrong answer, the teacher's
    refinement aimed at it, and the student's answer after training on it ([] if none)."""
    store = RunStore(Path(run_dir))
    pick = story_pick(run_dir)
    if pick is None:
        return []
    qid, k = pick
    record = next(r for r in read_jsonl(store.split_file("train")) if str(r["id"]) == qid)
    before = _attempts(store.attempts_file(k, "train"))[qid]
    refined = _rationales(store.rationales_file(k))[qid]
    after = _attempts(store.attempts_file(k + 1, "train")).get(qid)
    out = [f"One question's story (train, iteration {k}): {record['question'].strip()}  "
           f"(gold {record['answer']})",
           f"  student {k - 1} wrote:       {_one_line(before['output'])}"]
    if before.get("false_step"):
        out.append(f"  its first false step:  {before['false_step']}")
    seen = "the teacher was shown this attempt" if attempt_shown else "the teacher was not shown the attempt"
    out.append(f"  teacher's refinement:  {_one_line(refined['rationale'])}  ({seen})")
    if after is None:
        out.append(f"  student {k} on it:        not asked (loop.flow_train_eval=false)")
    else:
        out.append(f"  student {k} now writes:  {_one_line(after['output'])}  "
                   f"({'right' if after['correct'] else 'still wrong'})")
    out.append(f"  the whole story: undo flow {run_dir} --question {qid}; every question: report.html")
    return out


def flow_summary(run_dir: Path) -> Flow:
    """Counts for summary.json; the per-question grid goes to flow.json beside it."""
    flow = learning_flow(run_dir)
    grid: dict[str, FlowQuestion] = {
        qid: {"split": q["split"], "correct": {str(k): v for k, v in q["correct"].items()},
              "source": {str(k): v for k, v in q["source"].items()},
              "refined": {str(k): v for k, v in q["refined"].items()}}
        for qid, q in flow["questions"].items()}
    return {"counts": flow["counts"], "grid": grid}
