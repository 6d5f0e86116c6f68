"""Rationale generation with verification: explain, refine (the UNDO step), rationalize.

Work proceeds in rounds over all unresolved questions (so batched backends see
big batches and HTTP backends see full concurrency): attempt 0 is greedy, later
attempts sample with `teacher.temperature`; each answer is graded against gold
and, where the teacher saw the gold, checked for leaking it. Questions still
unsolved after `max_attempts` get one rationalization (gold as a hint) when
enabled; refinements, whose prompt already holds the gold, get none. Every
attempt and verdict is recorded; nothing is dropped silently.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from undo.config import TeacherConfig
from undo.grading import answer_line, answer_type
from undo.runstore import append_jsonl, read_jsonl
from undo.steps import calculations, first_false_step
from undo.tasks.base import Record
from undo.teacher.base import CONTEXT_LENGTH, Request, SamplingParams, Usage
from undo.teacher.budget import TeacherBudget, prompt_bytes
from undo.teacher.prompts import leaks_hint, render

# final verdicts written per question
VERIFIED, RATIONALIZED, FAILED = "verified", "rationalized", "failed"


@dataclass
class TeachItem:
    """One question to explain. mode: explain | refine. context feeds the refine template."""

    record: Record
    mode: str = "explain"
    context: dict[str, Any] = field(default_factory=dict)
    attempts: list[dict[str, Any]] = field(default_factory=list)


def _messages(item: TeachItem, mode: str, cfg: TeacherConfig, examples: list[dict]) -> list[dict]:
    """The chat for one request. Worked examples come first as earlier user/assistant turns
    (asked with the explain prompt, or with the refine prompt and its own context for a
    refine worked example): a small chat teacher copies a demonstrated solution format far
    more reliably than one described in words."""
    r = item.record
    fmt = answer_type(r.answer_type).answer_format

    def user(template: str, question: str, **extra: Any) -> dict[str, str]:
        ctx = {"question": question, "gold": r.gold_display(), "answer_format": fmt, "examples": [],
               **extra}
        return {"role": "user", "content": render(template, cfg.prompts, cfg.style, **ctx)}

    turns: list[dict[str, str]] = []
    for e in examples:
        if e["question"] != r.prompt():  # never the question itself: that hands over its answer
            turns += [user(e.get("mode", "explain"), e["question"], **e.get("context", {})),
                      {"role": "assistant", "content": e["rationale"]}]
    return [*turns, user(mode, r.prompt(), **item.context)]


def messages_for(item: TeachItem, cfg: TeacherConfig, examples: list[dict] | None) -> list[dict]:
    """The chat of an item's first request (what a budget bounds before asking)."""
    return _messages(item, item.mode, cfg, examples or [])


def _sampling(cfg: TeacherConfig, attempt: int) -> SamplingParams:
    temperature = 0.0 if attempt == 0 else cfg.temperature
    return SamplingParams(temperature, cfg.top_p if temperature else 1.0, cfg.max_tokens)


_HAS_ANSWER_LINE = re.compile(r"the answer is", re.IGNORECASE)


def with_answer_line(text: str, record: Record) -> str:
    """A verified rationale ends with the fixed answer line the student should learn to
    write (teachers often close with \\boxed{} instead), so its answers stop cleanly."""
    if _HAS_ANSWER_LINE.search(text):
        return text
    return f"{text.rstrip()}\n{answer_line(record.gold_display())}"


def _sample_index(attempt: int, seed: int) -> int:
    # attempt 0 is greedy: one answer whatever the seed, so runs share it in the cache
    return attempt if attempt == 0 else attempt + 1000 * seed


def few_shot_examples(records: list[Record], n: int) -> list[dict[str, str]]:
    """Up to n worked examples from the task's own gold rationales (gsm8k and some gym
    datasets have them); [] when it has none (see `teacher_examples`)."""
    if n <= 0:
        return []
    # each ends with the answer line the teacher is asked to write, so the format is shown too
    return [{"question": r.prompt(), "rationale": with_answer_line(r.meta["gold_rationale"], r)}
            for r in records if r.meta.get("gold_rationale")][:n]


# zero-shot questions tried per worked example wanted, when the teacher writes its own
EXAMPLE_CANDIDATES = 8


def example_candidates(train: list[Record], n: int) -> list[Record]:
    """The train questions a teacher-written worked example may come from (never val or test)."""
    return train[: n * EXAMPLE_CANDIDATES]


def examples_from_rows(candidates: list[Record], rows: list[dict[str, Any]], n: int) -> list[dict[str, str]]:
    """The first n verified rationales of a zero-shot pass, as worked examples."""
    by_id = {r.id: r for r in candidates}
    return [{"question": by_id[row["id"]].prompt(), "rationale": row["rationale"]}
            for row in rows if row.get("rationale") and row["id"] in by_id][:n]


# a zero-shot chain of thought needs room: at the demo's 96 tokens most would be cut off
STEPWISE_EXAMPLE_TOKENS = 384


def example_pass_config(cfg: TeacherConfig, stage: str) -> TeacherConfig:
    """The teacher settings of a worked-example pass: never rationalized (a hinted rationale
    is no example of solving); the `examples_stepwise` pass asks for a chain of thought."""
    update: dict[str, Any] = {"rationalize": False}
    if stage == "examples_stepwise":
        update.update(style="stepwise", max_tokens=max(cfg.max_tokens, STEPWISE_EXAMPLE_TOKENS))
    return cfg.model_copy(update=update)


def condensed_examples(candidates: list[Record], rows: list[dict[str, Any]], n: int) -> list[dict[str, str]]:
    """Concise worked examples cut from verified stepwise rationales: their calculations, one
    per line, then the answer line. Kept only when every calculation holds and the last one's
    result is the gold answer, so the cut-down text still derives the answer by itself."""
    by_id = {r.id: r for r in candidates}
    out = []
    for row in rows:
        r = by_id.get(row["id"])
        if r is None or not row.get("rationale"):
            continue
        calcs = calculations(row["rationale"])
        if not calcs or first_false_step(row["rationale"]):
            continue
        last = calcs[-1][1].replace("−", "-")
        if not r.grade(answer_line(last.lstrip("$€£"))).correct:
            continue
        text = "\n".join(c for c, _ in calcs) + "\n" + answer_line(r.gold_display())
        out.append({"question": r.prompt(), "rationale": text})
    return out[:n]


def teacher_examples(train: list[Record], n: int, style: str,
                     run_pass: Callable[[str, list[Record]], list[dict[str, Any]]]) -> list[dict[str, str]]:
    """Worked examples for a task without gold rationales, from the teacher's own work on the
    first train questions (never val or test). `run_pass(stage, records)` has the teacher
    explain them zero-shot with `example_pass_config(cfg, stage)` and returns the rows.

    Pass `examples`: the configured style; its first n verified rationales are the examples.
    In the concise style a small teacher writes few such solutions unprompted (0 of 12 SVAMP
    questions for the 0.5B), so what is missing comes from pass `examples_stepwise` over the
    rest, cut down to its calculations (`condensed_examples`)."""
    candidates = example_candidates(train, n)
    examples = examples_from_rows(candidates, run_pass("examples", candidates), n)
    if len(examples) < n and style == "concise":
        shown = {e["question"] for e in examples}
        rest = [r for r in candidates if r.prompt() not in shown]
        examples += condensed_examples(rest, run_pass("examples_stepwise", rest), n - len(examples))
    return examples


# refine prompts grow with history; cut in this order when the server says it is too long
_TRACE_KEEP = 600  # characters of the student's attempt kept when it must be trimmed


def _shorten(item: TeachItem) -> bool:
    """Cut the next part of a refine prompt: earlier rewrites, then the student profile, then
    the student's attempt (its end, where the answer is, stays). False: nothing left."""
    ctx = item.context
    if ctx.get("history"):
        ctx["history"] = []
    elif ctx.get("profile"):
        ctx["profile"] = None
    elif len(ctx.get("student_attempt") or "") > _TRACE_KEEP:
        ctx["student_attempt"] = "..." + ctx["student_attempt"][-_TRACE_KEEP:]
    else:
        return False
    return True


def _judge(item: TeachItem, mode: str, text: str, finish: str | None,
           check_steps: bool) -> tuple[bool, str, str | None]:
    """(accepted, reason, predicted). The reason names why a rejected attempt failed."""
    if finish == CONTEXT_LENGTH:  # the prompt did not fit the model, even shortened
        return False, CONTEXT_LENGTH, None
    verdict = item.record.grade(text)
    if finish == "length":  # cut off: whatever number it ends on is not a finished argument
        return False, "truncated", verdict.predicted
    if verdict.predicted is None:
        return False, "unparsed", None
    if not verdict.correct:
        return False, "wrong_answer", verdict.predicted
    if mode in ("refine", "rationalize") and leaks_hint(text):
        return False, "leaked_hint", verdict.predicted
    if check_steps and first_false_step(text):
        return False, "false_step", verdict.predicted
    return True, "ok", verdict.predicted


def generate_rationales(
    items: list[TeachItem],
    teacher: Any,  # a CachedTeacher (or any TeacherBackend)
    cfg: TeacherConfig,
    out_path: Path,
    usage: Usage,
    examples: list[dict] | None = None,
    progress: Callable[[int, int], None] | None = None,
    seed: int = 0,
    budget: TeacherBudget | None = None,
) -> list[dict[str, Any]]:
    """Write one row per question to out_path (append, resumable); return all rows.

    Rows: id, question, answer, rationale (None if failed), rationales (every distinct
    verified text: up to `teacher.refine_samples` for refinements), verdict, reason, mode,
    attempts [{attempt, mode, text, predicted, correct, reason}], usage.
    `seed` (the run's) makes the sampled attempts of runs with other seeds other samples,
    in the cache and on the server; greedy attempts are one answer for every seed.
    With a `budget`, each round runs for the items (in the order given) whose worst-case
    cost still fits; the others end there, with reason "budget" if nothing verified.
    """
    done = {row["id"]: row for row in read_jsonl(out_path)}
    pending = [it for it in items if it.record.id not in done]
    total_requests = 0

    verified: dict[str, list[str]] = {}  # id -> distinct verified texts so far

    def finish(item: TeachItem, rationale: str | None, verdict: str, reason: str) -> None:
        # the first k distinct, in attempt order (a round may have drawn more)
        texts = (verified.get(item.record.id) or ([rationale] if rationale else []))[:wanted(item.mode)]
        row = {
            "id": item.record.id,
            "question": item.record.question,
            "answer": item.record.answer,
            "choices": item.record.choices,
            "rationale": rationale,
            "rationales": texts,
            "verdict": verdict,
            "reason": reason,
            "mode": item.mode,
            "attempts": item.attempts,
            "usage": {
                "prompt_tokens": sum(a["prompt_tokens"] for a in item.attempts),
                "completion_tokens": sum(a["completion_tokens"] for a in item.attempts),
            },
        }
        append_jsonl(out_path, row)
        done[item.record.id] = row

    def ask(pairs: list[tuple[TeachItem, int]], mode: str) -> list[Any]:
        """Completions for (item, attempt) pairs. A prompt the server finds longer than the
        model's context is shortened (see `_shorten`) and asked again, as long as there
        is something left to cut; then its "context_length" answer is recorded."""
        nonlocal total_requests
        reqs = [Request(_messages(it, mode, cfg, examples or []), _sampling(cfg, a), _sample_index(a, seed))
                for it, a in pairs]
        total_requests += len(reqs)
        step = (lambda k: progress(k, len(reqs))) if progress else None
        completions = list(teacher.complete(reqs, usage, step))
        too_long = [k for k, c in enumerate(completions) if c.finish_reason == CONTEXT_LENGTH]
        # one cut per question, however many of its attempts were refused
        items = {id(pairs[k][0]): pairs[k][0] for k in too_long}
        cut = {key for key, it in items.items() if _shorten(it)}
        again = [k for k in too_long if id(pairs[k][0]) in cut]
        if again:
            for k, c in zip(again, ask([pairs[k] for k in again], mode), strict=True):
                completions[k] = c
        return completions

    def affordable(batch: list[TeachItem], mode: str, n: int) -> list[TeachItem]:
        """The items, in order, whose n requests each still fit the budget; the rest end here."""
        if budget is None:
            return batch
        prompt = completion = 0
        keep: list[TeachItem] = []
        for i, it in enumerate(batch):
            p, c = budget.bound(_messages(it, mode, cfg, examples or []))
            if not budget.fits(usage, prompt + n * p, completion + n * c):
                for cut in batch[i:]:
                    if verified.get(cut.record.id):
                        finish(cut, verified[cut.record.id][0], VERIFIED, "ok")
                    else:
                        finish(cut, None, FAILED, "budget")
                break
            prompt, completion = prompt + n * p, completion + n * c
            keep.append(it)
        return keep

    def run_round(batch: list[TeachItem], mode: str, first: int, n: int = 1) -> list[TeachItem]:
        """Attempts first..first+n-1 of every item in one call; the items still unsolved."""
        batch = affordable(batch, mode, n)
        pairs = [(it, a) for it in batch for a in range(first, first + n)]
        completions = ask(pairs, mode) if pairs else []
        sizes = {id(it): prompt_bytes(_messages(it, mode, cfg, examples or [])) for it in batch}
        for (it, _), c in zip(pairs, completions, strict=True):
            ok, reason, predicted = _judge(it, mode, c.text, c.finish_reason, cfg.check_steps)
            it.attempts.append({
                "attempt": len(it.attempts), "mode": mode, "text": c.text,
                "predicted": predicted, "correct": ok, "reason": reason,
                "prompt_tokens": c.prompt_tokens, "completion_tokens": c.completion_tokens,
                "prompt_bytes": sizes[id(it)], "cached": c.cached,
            })
            texts = verified.setdefault(it.record.id, [])
            if ok and (text := with_answer_line(c.text, it.record)) not in texts:
                texts.append(text)
        unsolved = []
        for it in batch:
            texts = verified[it.record.id]
            if len(texts) >= wanted(mode):
                verdict = RATIONALIZED if mode == "rationalize" else VERIFIED
                finish(it, texts[0], verdict, "ok")
            else:
                unsolved.append(it)
        return unsolved

    def wanted(mode: str) -> int:
        return cfg.refine_samples if mode == "refine" else 1

    for mode in ("explain", "refine"):
        todo = [it for it in pending if it.mode == mode]
        # k verified samples need at least k attempts: the tries grow with refine_samples.
        # With k > 1 nearly every question uses all its tries (measured: 43 of 45 in the
        # demo), so all its attempts go in one round: in-process, one prefill serves them all
        tries = cfg.max_attempts + wanted(mode) - 1
        first = tries if wanted(mode) > 1 else 1
        if todo:
            todo = run_round(todo, mode, 0, first)
        for attempt in range(first, tries):
            if todo:
                todo = run_round(todo, mode, attempt)
        for it in [it for it in todo if verified.get(it.record.id)]:
            finish(it, verified[it.record.id][0], VERIFIED, "ok")  # fewer than k, but some
        todo = [it for it in todo if not verified.get(it.record.id)]
        # refine prompts already carry the gold answer; a plain rationalization there would
        # ignore the student's feedback and (greedy, cached) repeat iteration 0's text
        if todo and cfg.rationalize and mode == "explain":
            todo = run_round(todo, "rationalize", 0)
        for it in todo:
            reasons = Counter(a["reason"] for a in it.attempts)
            finish(it, None, FAILED, reasons.most_common(1)[0][0] if reasons else "no_attempt")
    return [done[it.record.id] for it in items]


def summarize(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Counts per verdict and, for failures, per reason: what the report shows."""
    verdicts = Counter(r["verdict"] for r in rows)
    reasons = Counter(r["reason"] for r in rows if r["verdict"] == FAILED)
    return {"n": len(rows), "verdicts": dict(verdicts), "failed_reasons": dict(reasons)}
