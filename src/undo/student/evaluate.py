"""Greedy student answers, graded against gold; resumable attempt files.

An attempt file is JSONL, one row per question, appended and flushed after
each batch. A killed evaluation restarted with the same file generates only the
questions it has no row for.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from undo.config import StudentConfig
from undo.errors import UserError
from undo.steps import first_false_step
from undo.student.generate import encode_chats, generate_chat, load_student
from undo.tasks.base import Record, student_messages


@dataclass
class EvalResult:
    n: int
    correct: int
    accuracy: float
    attempts: list[dict[str, Any]]  # in the order of the records given

    def summary(self) -> dict[str, Any]:
        return {"n": self.n, "correct": self.correct, "accuracy": self.accuracy}


def read_attempts(path: Path) -> dict[str, dict[str, Any]]:
    """Rows already written, by id. A torn last line (killed mid-write) is cut off
    the file, so appending continues from a clean line boundary."""
    path = Path(path)
    if not path.exists():
        return {}
    data = path.read_bytes()
    body, newline, tail = data.rpartition(b"\n")
    rows: dict[str, dict[str, Any]] = {}
    for n, raw in enumerate(body.split(b"\n") if newline else [], 1):
        if raw.strip():
            try:
                row = json.loads(raw)
            except json.JSONDecodeError:
                raise UserError(f"{path}:{n}: not valid JSON; delete the line or the file") from None
            rows[str(row["id"])] = row
    if tail.strip():  # no newline after the last row: a write was cut short
        try:
            row = json.loads(tail)
        except json.JSONDecodeError:
            with path.open("r+b") as f:
                f.truncate(len(body) + len(newline))
        else:
            rows[str(row["id"])] = row
            with path.open("ab") as f:
                f.write(b"\n")
    return rows


def _attempt(record: Record, output: str, completion_tokens: int) -> dict[str, Any]:
    verdict = record.grade(output)
    return {
        "id": record.id,
        "question": record.prompt(),
        "answer": record.answer,
        "output": output,
        "predicted": verdict.predicted,
        "correct": bool(verdict.correct),
        "false_step": first_false_step(output),  # a calculation that does not hold, as written
        "completion_tokens": completion_tokens,
    }


def evaluate(
    records: list[Record],
    student_spec: str,
    cfg: StudentConfig,
    out_path: Path | None = None,
    progress: Callable[[int], None] | None = None,
    model: Any = None,
    tokenizer: Any = None,
) -> EvalResult:
    """Answer every record greedily with the student, grade, and (optionally) record.

    Pass `model`/`tokenizer` to reuse a loaded student; otherwise `student_spec`
    (a model spec or saved student folder) is loaded with `cfg`'s device/dtype.
    """
    done = read_attempts(out_path) if out_path else {}
    wanted = {r.id for r in records}
    if len(wanted) != len(records):
        raise UserError("evaluate: record ids are not unique")
    todo = [r for r in records if r.id not in done]
    if progress and len(records) > len(todo):
        progress(len(records) - len(todo))
    if todo:
        if model is None or tokenizer is None:
            if cfg.backend == "vllm":
                _generate_vllm(todo, student_spec, cfg, out_path, done, progress)
                todo = []
            else:
                model, tokenizer = load_student(student_spec, cfg)
    if todo:
        _generate(todo, model, tokenizer, cfg, out_path, done, progress)
    attempts = [done[r.id] for r in records]
    correct = sum(1 for a in attempts if a["correct"])
    n = len(attempts)
    return EvalResult(n=n, correct=correct, accuracy=correct / n if n else 0.0, attempts=attempts)


def _generate(
    todo: list[Record],
    model: Any,
    tokenizer: Any,
    cfg: StudentConfig,
    out_path: Path | None,
    done: dict[str, dict[str, Any]],
    progress: Callable[[int], None] | None,
) -> None:
    convs = [student_messages(r) for r in todo]
    # chunks of one batch each, longest prompts first, so every chunk is written
    # (and survives a kill) as soon as it is done, with little padding waste
    lengths = [len(ids) for ids in encode_chats(tokenizer, convs)]
    order = sorted(range(len(todo)), key=lambda i: -lengths[i])
    f = None
    if out_path:
        Path(out_path).parent.mkdir(parents=True, exist_ok=True)
        f = Path(out_path).open("a")
    try:
        for start in range(0, len(order), cfg.batch_size):
            chunk = order[start : start + cfg.batch_size]
            gens = generate_chat(
                model,
                tokenizer,
                [convs[i] for i in chunk],
                max_new_tokens=cfg.max_new_tokens,
                temperature=0.0,
                batch_size=cfg.batch_size,
                stop_at_answer=True,
            )
            for i, g in zip(chunk, gens, strict=True):
                row = _attempt(todo[i], g.text, g.completion_tokens)
                done[row["id"]] = row
                if f:
                    f.write(json.dumps(row) + "\n")
            if f:
                f.flush()
            if progress:
                progress(len(chunk))
    finally:
        if f:
            f.close()


def _generate_vllm(
    todo: list[Record],
    student_spec: str,
    cfg: StudentConfig,
    out_path: Path | None,
    done: dict[str, dict[str, Any]],
    progress: Callable[[int], None] | None,
) -> None:
    from undo.student.generate import generate_chat_vllm

    # vLLM schedules the whole set at once; rows are written when it returns
    gens = generate_chat_vllm(
        student_spec, [student_messages(r) for r in todo], cfg.max_new_tokens, temperature=0.0
    )
    rows = [_attempt(r, g.text, g.completion_tokens) for r, g in zip(todo, gens, strict=True)]
    if out_path:
        Path(out_path).parent.mkdir(parents=True, exist_ok=True)
        with Path(out_path).open("a") as f:
            f.writelines(json.dumps(row) + "\n" for row in rows)
    for row in rows:
        done[row["id"]] = row
    if progress:
        progress(len(rows))
