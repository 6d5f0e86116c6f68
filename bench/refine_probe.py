"""Greedy refinements of one run's failed train questions under a given refine prompt.

What bench/RESULTS.md section 6 calls the copying probe: for each question the student
got wrong in ATTEMPTS (an attempts_train.jsonl), the offline teacher writes one greedy
refinement with the demo config's 3-shot turns, and each is judged as the loop would
(verified, wrong answer, false step, leaked hint).

    .venv/bin/python bench/refine_probe.py bench/out/method/steps-on/iter_1/attempts_train.jsonl \
        [--template bench/prompts/refine.finer.j2] [--show-attempt true|false]
        [--split-examples N --explain-template bench/prompts/explain.split.j2
         --template bench/prompts/refine.split.j2]
        [--iteration0 bench/out/method/steps-on/iter_0/rationales.jsonl]

--iteration0 counts the verified refinements that are iteration 0's rationale word for word.
--split-examples N replaces the worked examples with N chain sums of three two-digit terms
written in split steps (each term's tens, then its ones: "71 + 90 = 161", "161 + 3 = 164"),
to see whether the teacher can be shown a finer format for the questions a student failed.

The demo config's splits must be the ones the attempts were made on (seed 0, train 100).
"""

from __future__ import annotations

import argparse
import os
import time
from collections import Counter
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from undo.config import load_config  # noqa: E402
from undo.loop.feedback import refine_items  # noqa: E402
from undo.runstore import read_jsonl  # noqa: E402
from undo.tasks import make_splits  # noqa: E402
from undo.teacher import build_backend  # noqa: E402
from undo.teacher.base import Request, Usage  # noqa: E402
from undo.teacher.rationale import _judge, _messages, _sampling, few_shot_examples, with_answer_line  # noqa: E402

DEMO = Path(__file__).resolve().parents[1] / "src" / "undo" / "configs" / "demo.yaml"


def _terms(question: str) -> list[str]:
    """'... problem: 66 - 16 + 15 =' -> ['66', '-', '16', '+', '15']"""
    return question.rsplit(":", 1)[-1].replace("=", "").split()


def _split_steps(question: str) -> str:
    """A chain sum solved one term's tens, then its ones, at a time."""
    terms = _terms(question)
    total, lines = int(terms[0]), []
    for op, term in zip(terms[1::2], terms[2::2], strict=True):
        t = int(term)
        for part in ([t // 10 * 10, t % 10] if t >= 10 and t % 10 else [t]):
            new = total + part if op == "+" else total - part
            lines.append(f"{total} {op} {part} = {new}")
            total = new
    return "\n".join([*lines, f"The answer is {total}."])


def _has_split_step(question: str, text: str) -> bool:
    """A line 'a + b = c' whose b is not a term of the question: a term was split."""
    terms = set(_terms(question)[::2])
    for line in text.splitlines():
        parts = line.split()
        if len(parts) == 5 and parts[1] in ("+", "-") and parts[3] == "=" and parts[2] not in terms:
            return True
    return False


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("attempts", type=Path)
    ap.add_argument("--template", help="a refine template path (default: the shipped concise one)")
    ap.add_argument("--show-attempt", default="true", choices=["true", "false"])
    ap.add_argument("--split-examples", type=int, default=0, help="N worked examples in split steps")
    ap.add_argument("--explain-template", help="the template the worked examples are asked with")
    ap.add_argument("--iteration0", type=Path,
                    help="a rationales.jsonl of iteration 0: count verified refinements equal to its text")
    args = ap.parse_args()
    # train 100 and batch 96, as when the probe was measured (the demo itself now trains on 48, batch 128)
    overrides = ["splits.train=100", "teacher.batch_size=96", f"teacher.show_attempt={args.show_attempt}"]
    if args.template:
        overrides.append(f"teacher.prompts.refine={args.template}")
    if args.explain_template:
        overrides.append(f"teacher.prompts.explain={args.explain_template}")
    cfg = load_config(DEMO, overrides)
    train = make_splits(cfg.task, cfg.splits, cfg.seed)["train"]
    shots = few_shot_examples(train, cfg.teacher.few_shot)
    if args.split_examples:
        three_digit_terms = [r for r in train if all(int(t) >= 10 for t in _terms(r.question)[::2])]
        shots = [{"question": r.prompt(), "rationale": _split_steps(r.question)}
                 for r in three_digit_terms[:args.split_examples]]
    diag = {a["id"]: a for a in read_jsonl(args.attempts)}
    items = refine_items(train, diag, {}, None, False, cfg.teacher.check_steps, cfg.teacher.show_attempt)
    requests = [Request(_messages(it, "refine", cfg.teacher, shots), _sampling(cfg.teacher, 0), 0)
                for it in items]
    teacher = build_backend(cfg.teacher)
    teacher.health_check()
    usage, t0 = Usage(), time.time()
    completions = teacher.complete(requests, usage)
    pairs = list(zip(items, completions, strict=True))
    verdicts = [_judge(it, "refine", c.text, c.finish_reason, True)[1] for it, c in pairs]
    split = [v for (it, c), v in zip(pairs, verdicts, strict=True)
             if _has_split_step(it.record.question, c.text)]
    print(f"{len(split)} of {len(items)} refinements contain a split step (a term not in the question), "
          f"{split.count('ok')} of them verified")
    reasons = Counter(verdicts)
    print(f"{len(items)} failed questions, {time.time() - t0:.1f} s: {dict(reasons)}")
    if args.iteration0:
        first = {r["id"]: (r["rationale"] or "").strip() for r in read_jsonl(args.iteration0)}
        ok = [(it, c) for (it, c), v in zip(pairs, verdicts, strict=True) if v == "ok"]
        same = sum(with_answer_line(c.text, it.record).strip() == first.get(it.record.id) for it, c in ok)
        print(f"{same} of {len(ok)} verified refinements are iteration 0's rationale, word for word")
    for it, c in list(zip(items, completions, strict=True))[:5]:
        print(f"--- {it.record.question}\n{c.text}")


if __name__ == "__main__":
    main()
