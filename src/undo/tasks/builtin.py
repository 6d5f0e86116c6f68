"""The built-in reasoning tasks: GSM8K, SVAMP, CommonsenseQA, StrategyQA.

Each loads from the hub by its usual id (source=None), or from local files in
the original release format (a file or a folder), e.g. ../shared/data/svamp.
"""

from __future__ import annotations

import hashlib
import random
import re
from pathlib import Path
from typing import Any, TypeVar

from undo.errors import UserError
from undo.grading import format_number
from undo.grading import parse_yesno as _yesno
from undo.tasks.base import LETTERS, Record, Task, register_task
from undo.tasks.readers import field, hub_rows, read_rows

# Single-file releases (SVAMP, BIG-bench StrategyQA) have no test split: a fixed
# seed makes the carve-out identical for every run and every arm of a comparison.
CARVE_SEED = 1234
CARVE_TEST_FRACTION = 0.3


def stable_id(prefix: str, text: str) -> str:
    return f"{prefix}-{hashlib.sha1(text.encode()).hexdigest()[:12]}"


T = TypeVar("T")


def carve(rows: list[T], part: str) -> list[T]:
    order = list(range(len(rows)))
    random.Random(CARVE_SEED).shuffle(order)
    n_test = round(len(rows) * CARVE_TEST_FRACTION)
    chosen = order[:n_test] if part == "test" else order[n_test:]
    return [rows[i] for i in sorted(chosen)]


def local_path(source: str, candidates: dict[str, list[str]], part: str) -> Path | None:
    """A folder holding the release's files, or a single file; None when it is a hub id."""
    p = Path(source).expanduser()
    if p.is_file():
        return p
    if p.is_dir():
        for name in candidates[part]:
            if (p / name).is_file():
                return p / name
        raise UserError(f"{p}: expected one of {candidates[part]} for the {part} split")
    if source.startswith((".", "/", "~")) or p.suffix in (".json", ".jsonl", ".csv", ".parquet"):
        raise UserError(f"task.source not found: {source}")
    return None


# --- GSM8K ----------------------------------------------------------------------------


def _gsm8k_answer(solution: str, where: str) -> str:
    if "####" not in solution:
        raise UserError(f"{where}: GSM8K answer has no '#### N' line")
    return format_number(solution.rsplit("####", 1)[1].strip())


def load_gsm8k(source: str | None, part: str) -> list[Record]:
    files = {"train": ["train.jsonl"], "test": ["test.jsonl"]}
    path = local_path(source, files, part) if source else None
    rows = read_rows(path) if path else hub_rows(source or "openai/gsm8k", part, "main")
    out = []
    for i, (where, row) in enumerate(rows):
        solution = field(row, "answer", where)
        out.append(Record(
            id=f"gsm8k-{part}-{i}",
            question=field(row, "question", where),
            answer=_gsm8k_answer(solution, where),
            answer_type="number",
            # a worked example for teacher.few_shot: calculator tags and the "#### N" line go,
            # the answer line the teacher is asked for is added where it is used
            meta={"gold_rationale": re.sub(r"<<[^<>]*>>", "", solution.rsplit("####", 1)[0]).strip()},
        ))
    return out


@register_task("gsm8k")
def gsm8k() -> Task:
    return Task("gsm8k", "number", load_gsm8k)


# --- SVAMP ----------------------------------------------------------------------------


def load_svamp(source: str | None, part: str) -> list[Record]:
    files = {"train": ["SVAMP.json", "svamp.json"], "test": ["SVAMP.json", "svamp.json"]}
    path = local_path(source, files, part) if source else None
    if path:
        rows = carve(read_rows(path), part)  # the original release is one file
    else:
        rows = hub_rows(source or "ChilleD/SVAMP", part)  # ships the usual 700/300 split
    out = []
    for where, row in rows:
        body, q = field(row, "Body", where), field(row, "Question", where)
        out.append(Record(
            id=str(row.get("ID") or stable_id("svamp", body + q)),
            question=f"{body.strip()} {q.strip()}",
            answer=format_number(field(row, "Answer", where)),
            answer_type="number",
            meta={"equation": row.get("Equation"), "type": row.get("Type")},
        ))
    return out


@register_task("svamp")
def svamp() -> Task:
    return Task("svamp", "number", load_svamp)


# --- CommonsenseQA --------------------------------------------------------------------


def _csqa_choices(raw: Any, where: str) -> tuple[list[str], list[str]]:
    if isinstance(raw, dict):  # hub layout: {"label": [...], "text": [...]}
        return list(raw["label"]), list(raw["text"])
    if isinstance(raw, list):  # original layout: [{"label", "text"}]
        return [c["label"] for c in raw], [c["text"] for c in raw]
    raise UserError(f"{where}: unrecognised 'choices' layout")


def load_commonsenseqa(source: str | None, part: str) -> list[Record]:
    files = {"train": ["train_rand_split.jsonl"], "test": ["dev_rand_split.jsonl"]}
    path = local_path(source, files, part) if source else None
    if path:
        rows = read_rows(path)
    else:  # the hub's test split has no labels; validation is the usual test set
        rows = hub_rows(source or "tau/commonsense_qa", "train" if part == "train" else "validation")
    out = []
    for where, row in rows:
        q = row["question"] if "question" in row else None
        if isinstance(q, dict):  # original: {"stem", "choices"}
            stem, raw_choices = field(q, "stem", where), field(q, "choices", where)
        else:
            stem, raw_choices = field(row, "question", where), field(row, "choices", where)
        labels, texts = _csqa_choices(raw_choices, where)
        key = str(field(row, "answerKey", where)).strip()
        if key not in labels:
            raise UserError(f"{where}: answerKey '{key}' is not one of the choice labels {labels}")
        out.append(Record(
            id=str(row.get("id") or stable_id("csqa", stem)),
            question=stem,
            answer=LETTERS[labels.index(key)],
            answer_type="choice",
            choices=texts,
        ))
    return out


@register_task("commonsenseqa")
def commonsenseqa() -> Task:
    return Task("commonsenseqa", "choice", load_commonsenseqa)


# --- StrategyQA -----------------------------------------------------------------------


def load_strategyqa(source: str | None, part: str) -> list[Record]:
    files = {"train": ["task.json"], "test": ["task.json"]}
    path = local_path(source, files, part) if source else None
    rows = read_rows(path) if path else hub_rows(source or "ChilleD/StrategyQA", part)
    out, seen = [], set()
    for where, row in rows:
        if "target_scores" in row:  # BIG-bench layout
            question = field(row, "input", where)
            scores = field(row, "target_scores", where)
            answer = "yes" if scores.get("Yes") == 1 else "no"
            facts = str(row.get("target", "")).split(".", 1)[-1].strip()
        else:
            question = field(row, "question", where)
            answer = _yesno(field(row, "answer", where), where)
            facts = row.get("facts")
        rid = str(row.get("qid") or stable_id("strategyqa", question))
        if rid in seen:  # the release repeats a few questions verbatim
            continue
        seen.add(rid)
        out.append(Record(id=rid, question=question, answer=answer, answer_type="yesno",
                          meta={"facts": facts}))
    # BIG-bench's version is one file: carved after removing repeats, so that a repeated
    # question cannot land in train and test both
    return carve(out, part) if path else out


@register_task("strategyqa")
def strategyqa() -> Task:
    return Task("strategyqa", "yesno", load_strategyqa)
