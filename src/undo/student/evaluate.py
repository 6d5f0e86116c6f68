"""Greedy student answers, graded against gold; resumable attempt files.

An attempt file is JSONL, one row per question, appended and flushed after
each batch. A killed evaluation restarted with the same file generates only the
questions it has no row for.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from undo.config import StudentConfig
from undo.errors import UserError
from undo.runstore import JsonlAppender, read_jsonl
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
    """Rows already written, by id (a torn last row is not one: it is redone)."""
    return {str(row["id"]): row for row in read_jsonl(Path(path))}


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
    f = JsonlAppender(Path(out_path)) if out_path else None
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
            rows = [_attempt(todo[i], g.text, g.completion_tokens) for i, g in zip(chunk, gens, strict=True)]
            for row in rows:
                done[row["id"]] = row
            if f:
                f.write(rows)
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
        with JsonlAppender(Path(out_path)) as f:
            f.write(rows)
    for row in rows:
        done[row["id"]] = row
    if progress:
        progress(len(rows))
