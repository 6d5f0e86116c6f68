"""`task.name: file`: any JSONL/JSON/CSV/Parquet file with a field mapping."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from undo.config import TaskConfig
from undo.errors import UserError
from undo.tasks.base import LETTERS, Record, Task, register_task
from undo.tasks.builtin import _yesno, carve, format_number, stable_id
from undo.tasks.readers import field, read_rows


def _choices(raw: Any, where: str) -> list[str]:
    if isinstance(raw, dict) and "text" in raw:
        return [str(t) for t in raw["text"]]
    if isinstance(raw, str):  # CSV cells: "bank|library|mall"
        return [c.strip() for c in raw.split("|")]
    if isinstance(raw, list) and raw:
        return [str(c["text"]) if isinstance(c, dict) else str(c) for c in raw]
    raise UserError(f"{where}: field 'choices' must be a list of option texts")


def _choice_answer(value: Any, choices: list[str], where: str) -> str:
    text = str(value).strip().strip("()").strip()
    if len(text) == 1 and text.upper() in LETTERS[: len(choices)]:
        return text.upper()
    if isinstance(value, int) and 0 <= value < len(choices):
        return LETTERS[value]
    lowered = [c.strip().lower() for c in choices]
    if text.lower() in lowered:
        return LETTERS[lowered.index(text.lower())]
    raise UserError(f"{where}: answer {value!r} is neither a choice letter nor an option's text")


def file_records(path: Path, cfg: TaskConfig, rows: list | None = None) -> list[Record]:
    if cfg.answer_type is None:
        raise UserError("task.answer_type is required for task 'file' (number|choice|yesno|math)")
    f = {"question": "question", "answer": "answer", **cfg.fields}
    out = []
    for where, row in rows if rows is not None else read_rows(path):
        question = str(field(row, f["question"], where))
        raw_answer = field(row, f["answer"], where)
        choices = _choices(field(row, f["choices"], where), where) if "choices" in f else None
        if cfg.answer_type == "number":
            answer = format_number(raw_answer)
        elif cfg.answer_type == "choice":
            if choices is None:
                raise UserError("task.fields.choices is required when task.answer_type is 'choice'")
            answer = _choice_answer(raw_answer, choices, where)
        elif cfg.answer_type == "yesno":
            answer = _yesno(raw_answer, where)
        else:
            answer = str(raw_answer).strip()
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

    return Task("file", cfg.answer_type or "number", load, "", "a user's own data file")
