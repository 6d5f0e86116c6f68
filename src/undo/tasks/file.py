"""`task.name: file`: any JSONL/JSON/CSV/Parquet file with a field mapping."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from undo.config import TaskConfig
from undo.errors import UserError
from undo.grading import ANSWER_TYPES, answer_type
from undo.tasks.base import Record, Task, register_task
from undo.tasks.builtin import carve, stable_id
from undo.tasks.readers import field, read_rows


def _choices(raw: Any, where: str) -> list[str]:
    if isinstance(raw, dict) and "text" in raw:
        return [str(t) for t in raw["text"]]
    if isinstance(raw, str):  # CSV cells: "bank|library|mall"
        return [c.strip() for c in raw.split("|")]
    if isinstance(raw, list) and raw:
        return [str(c["text"]) if isinstance(c, dict) else str(c) for c in raw]
    raise UserError(f"{where}: field 'choices' must be a list of option texts")


def file_records(path: Path, cfg: TaskConfig, rows: list | None = None) -> list[Record]:
    if cfg.answer_type is None:
        raise UserError(f"task.answer_type is required for task 'file' ({'|'.join(ANSWER_TYPES)})")
    kind = answer_type(cfg.answer_type)  # the config validator already rejected unknown names
    f = {"question": "question", "answer": "answer", **cfg.fields}
    out = []
    for where, row in rows if rows is not None else read_rows(path):
        question = str(field(row, f["question"], where))
        raw_answer = field(row, f["answer"], where)
        choices = _choices(field(row, f["choices"], where), where) if "choices" in f else None
        answer = kind.parse_gold(raw_answer, choices, where)
        rid = str(field(row, f["id"], where)) if "id" in f else stable_id(path.stem, question)
        out.append(Record(rid, question, answer, cfg.answer_type, choices))
    ids = [r.id for r in out]
    if len(set(ids)) != len(ids):
        dup = next(i for i in ids if ids.count(i) > 1)
        raise UserError(f"{path}: duplicate id '{dup}' (map a unique field with task.fields.id)")
    return out


@register_task("file")
def file_task(cfg: TaskConfig) -> Task:
    def load(source: str | None, part: str) -> list[Record]:
        if not source:
            raise UserError("task.source must name a data file for task 'file'")
        if part == "test" and cfg.test_source:
            return file_records(Path(cfg.test_source), cfg)
        path = Path(source)
        if cfg.test_source:
            return file_records(path, cfg)
        # one file, no test split: the same fixed carve-out as SVAMP
        return file_records(path, cfg, carve(read_rows(path), part))

    return Task("file", cfg.answer_type or "number", load)
