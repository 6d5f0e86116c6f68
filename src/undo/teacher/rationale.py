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

from undo.arithmetic import calculations, first_false_step, unrelated_step
from undo.config import TeacherConfig
from undo.grading import answer_line, answer_type
from undo.rows import RationaleRow, TeacherAttempt, VerdictCounts
from undo.runstore import append_jsonl, read_rationale_rows
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
    attempts: list[TeacherAttempt] = field(default_factory=list)


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


def examples_from_rows(candidates: list[Record], rows: list[RationaleRow], n: int) -> list[dict[str, str]]:
    """The first n verified rationales of a zero-shot pass, as worked examples; one with a
    calculation unrelated to its question (`unrelated_step`) is passed over, because every
    prompt that shows it would teach the stray line."""
    by_id = {r.id: r for r in candidates}
    return [{"question": by_id[row["id"]].prompt(), "rationale": row["rationale"]}
            for row in rows if row.get("rationale") and row["id"] in by_id
            and unrelated_step(by_id[row["id"]].prompt(), row["rationale"]) is None][:n]


# a zero-shot chain of thought needs room: at the demo's 96 tokens most would be cut off
STEPWISE_EXAMPLE_TOKENS = 384


def example_pass_config(cfg: TeacherConfig, stage: str) -> TeacherConfig:
    """The teacher settings of a worked-example pass: never rationalized (a hinted rationale
    is no example of solving); the `examples_stepwise` pass asks for a chain of thought."""
    update: dict[str, Any] = {"rationalize": False}
    if stage == "examples_stepwise":
        update.update(style="stepwise", max_tokens=max(cfg.max_tokens, STEPWISE_EXAMPLE_TOKENS))
    return cfg.model_copy(update=update)


def condensed_examples(candidates: list[Record], rows: list[RationaleRow], n: int) -> list[dict[str, str]]:
    """Concise worked examples cut from verified stepwise rationales: their calculations, one
    per line, then the answer line. Kept only when every calculation holds, none is stray
    (`unrelated_step`), and the last one's result is the gold answer, so the cut-down text
    still derives the answer by itself."""
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
        if unrelated_step(r.prompt(), text) is None:
            out.append({"question": r.prompt(), "rationale": text})
    return out[:n]


def teacher_examples(train: list[Record], n: int, style: str,
                     run_pass: Callable[[str, list[Record]], list[RationaleRow]]) -> list[dict[str, str]]:
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


class RationaleStage:
    """One teacher stage (explain, refine, rationalize) over a list of questions, in rounds.

    Each round asks every still-unsolved question's next attempt(s) in one call (batched
    backends see big batches, HTTP backends full concurrency), judges every answer and
    writes a row per question as soon as it ends: verified, out of attempts, or out of
    budget. Rows go to `out_path` as they end, so a killed stage resumes where it stopped.
    """

    def __init__(self, teacher: Any, cfg: TeacherConfig, out_path: Path, usage: Usage,
                 examples: list[dict] | None = None, progress: Callable[[int, int], None] | None = None,
                 seed: int = 0, budget: TeacherBudget | None = None) -> None:
        self.teacher, self.cfg, self.out_path, self.usage = teacher, cfg, out_path, usage
        self.examples = examples or []
        self.progress, self.seed, self.budget = progress, seed, budget
        self.done: dict[str, RationaleRow] = {row["id"]: row for row in read_rationale_rows(out_path)}
        self.verified: dict[str, list[str]] = {}  # id -> distinct verified texts so far

    def wanted(self, mode: str) -> int:
        return self.cfg.refine_samples if mode == "refine" else 1

    def messages(self, item: TeachItem, mode: str) -> list[dict[str, str]]:
        return _messages(item, mode, self.cfg, self.examples)

    def finish(self, item: TeachItem, rationale: str | None, verdict: str, reason: str) -> None:
        """Write the question's row: it is done."""
        # the first k distinct, in attempt order (a round may have drawn more)
        texts = self.verified.get(item.record.id) or ([rationale] if rationale else [])
        texts = texts[:self.wanted(item.mode)]
        row: RationaleRow = {
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
        append_jsonl(self.out_path, row)
        self.done[item.record.id] = row

    def ask(self, pairs: list[tuple[TeachItem, int]], mode: str) -> list[Any]:
        """Completions for (item, attempt) pairs. A prompt the server finds longer than the
        model's context is shortened (see `_shorten`) and asked again, as long as there
        is something left to cut; then its "context_length" answer is recorded."""
        reqs = [Request(self.messages(it, mode), _sampling(self.cfg, a), _sample_index(a, self.seed))
                for it, a in pairs]
        step = (lambda k: self.progress(k, len(reqs))) if self.progress else None
        completions = list(self.teacher.complete(reqs, self.usage, step))
        too_long = [k for k, c in enumerate(completions) if c.finish_reason == CONTEXT_LENGTH]
        # one cut per question, however many of its attempts were refused
        items = {id(pairs[k][0]): pairs[k][0] for k in too_long}
        cut = {key for key, it in items.items() if _shorten(it)}
        again = [k for k in too_long if id(pairs[k][0]) in cut]
        if again:
            for k, c in zip(again, self.ask([pairs[k] for k in again], mode), strict=True):
                completions[k] = c
        return completions

    def affordable(self, batch: list[TeachItem], mode: str, n: int) -> list[TeachItem]:
        """The items, in order, whose n requests each still fit the budget; the rest end here."""
        if self.budget is None:
            return batch
        prompt = completion = 0
        keep: list[TeachItem] = []
        for i, it in enumerate(batch):
            p, c = self.budget.bound(self.messages(it, mode))
            if not self.budget.fits(self.usage, prompt + n * p, completion + n * c):
                for cut in batch[i:]:
                    if self.verified.get(cut.record.id):
                        self.finish(cut, self.verified[cut.record.id][0], VERIFIED, "ok")
                    else:
                        self.finish(cut, None, FAILED, "budget")
                break
            prompt, completion = prompt + n * p, completion + n * c
            keep.append(it)
        return keep

    def judge_round(self, pairs: list[tuple[TeachItem, int]], completions: list[Any], mode: str,
                    sizes: dict[int, int]) -> None:
        """Each answer judged and recorded as an attempt; the verified texts collected."""
        for (it, _), c in zip(pairs, completions, strict=True):
            ok, reason, predicted = _judge(it, mode, c.text, c.finish_reason, self.cfg.check_steps)
            it.attempts.append({
                "attempt": len(it.attempts), "mode": mode, "text": c.text,
                "predicted": predicted, "correct": ok, "reason": reason,
                "prompt_tokens": c.prompt_tokens, "completion_tokens": c.completion_tokens,
                "prompt_bytes": sizes[id(it)], "cached": c.cached,
            })
            texts = self.verified.setdefault(it.record.id, [])
            if ok and (text := with_answer_line(c.text, it.record)) not in texts:
                texts.append(text)

    def run_round(self, batch: list[TeachItem], mode: str, first: int, n: int = 1) -> list[TeachItem]:
        """Attempts first..first+n-1 of every item in one call; the items still unsolved."""
        batch = self.affordable(batch, mode, n)
        pairs = [(it, a) for it in batch for a in range(first, first + n)]
        completions = self.ask(pairs, mode) if pairs else []
        sizes = {id(it): prompt_bytes(self.messages(it, mode)) for it in batch}  # as asked: maybe shortened
        self.judge_round(pairs, completions, mode, sizes)
        unsolved = []
        for it in batch:
            texts = self.verified[it.record.id]
            if len(texts) >= self.wanted(mode):
                self.finish(it, texts[0], RATIONALIZED if mode == "rationalize" else VERIFIED, "ok")
            else:
                unsolved.append(it)
        return unsolved

    def run_mode(self, todo: list[TeachItem], mode: str) -> None:
        """Every question of one mode to its end: attempts, then (explain) a rationalization."""
        # k verified samples need at least k attempts: the tries grow with refine_samples.
        # With k > 1 nearly every question uses all its tries (measured: 43 of 45 in the
        # demo), so all its attempts go in one round: in-process, one prefill serves them all
        tries = self.cfg.max_attempts + self.wanted(mode) - 1
        first = tries if self.wanted(mode) > 1 else 1
        if todo:
            todo = self.run_round(todo, mode, 0, first)
        for attempt in range(first, tries):
            if todo:
                todo = self.run_round(todo, mode, attempt)
        for it in [it for it in todo if self.verified.get(it.record.id)]:
            self.finish(it, self.verified[it.record.id][0], VERIFIED, "ok")  # fewer than k, but some
        todo = [it for it in todo if not self.verified.get(it.record.id)]
        # refine prompts already carry the gold answer; a plain rationalization there would
        # ignore the student's feedback and (greedy, cached) repeat iteration 0's text
        if todo and self.cfg.rationalize and mode == "explain":
            todo = self.run_round(todo, "rationalize", 0)
        for it in todo:
            reasons = Counter(a["reason"] for a in it.attempts)
            self.finish(it, None, FAILED, reasons.most_common(1)[0][0] if reasons else "no_attempt")

    def run(self, items: list[TeachItem]) -> list[RationaleRow]:
        """A row per item (those already in out_path are not asked again), in the order given."""
        pending = [it for it in items if it.record.id not in self.done]
        for mode in ("explain", "refine"):
            self.run_mode([it for it in pending if it.mode == mode], mode)
        return [self.done[it.record.id] for it in items]


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
) -> list[RationaleRow]:
    """Write one row per question to out_path (append, resumable); return all rows.

    Rows: id, question, answer, rationale (None if failed), rationales (every distinct
    verified text: up to `teacher.refine_samples` for refinements), verdict, reason, mode,
    attempts [{attempt, mode, text, predicted, correct, reason}], usage.
    `seed` (the run's) makes the sampled attempts of runs with other seeds other samples,
    in the cache and on the server; greedy attempts are one answer for every seed.
    With a `budget`, each round runs for the items (in the order given) whose worst-case
    cost still fits; the others end there, with reason "budget" if nothing verified.
    """
    return RationaleStage(teacher, cfg, out_path, usage, examples, progress, seed, budget).run(items)


def summarize(rows: list[RationaleRow]) -> VerdictCounts:
    """Counts per verdict and, for failures, per reason: what the report shows."""
    verdicts = Counter(r["verdict"] for r in rows)
    reasons = Counter(r["reason"] for r in rows if r["verdict"] == FAILED)
    return {"n": len(rows), "verdicts": dict(verdicts), "failed_reasons": dict(reasons)}
