"""Greedy refinements of one run's failed train questions under a given refine prompt.

What bench/RESULTS.md section 6 calls the copying probe: for each question the student
got wrong in ATTEMPTS (an attempts_train.jsonl), the offline teacher writes one greedy
refinement with the demo config's 3-shot turns, and each is judged as the loop would
(verified, wrong answer, false step, leaked hint).

    .venv/bin/python bench/refine_probe.py bench/out/method/steps-on/iter_1/attempts_train.jsonl \
        [--template bench/prompts/refine.finer.j2] [--show-attempt true|false]

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
from undo.feedback import refine_items  # noqa: E402
from undo.runstore import read_jsonl  # noqa: E402
from undo.tasks import make_splits  # noqa: E402
from undo.teacher import build_backend  # noqa: E402
from undo.teacher.base import Request, Usage  # noqa: E402
from undo.teacher.rationale import _judge, _messages, _sampling, few_shot_examples  # noqa: E402

DEMO = Path(__file__).resolve().parents[1] / "src" / "undo" / "configs" / "demo.yaml"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("attempts", type=Path)
    ap.add_argument("--template", help="a refine template path (default: the shipped concise one)")
    ap.add_argument("--show-attempt", default="true", choices=["true", "false"])
    args = ap.parse_args()
    # train 100, as when the probe was measured (the demo itself trains on 80)
    overrides = ["splits.train=100", f"teacher.show_attempt={args.show_attempt}"]
    if args.template:
        overrides.append(f"teacher.prompts.refine={args.template}")
    cfg = load_config(DEMO, overrides)
    train = make_splits(cfg.task, cfg.splits, cfg.seed)["train"]
    shots = few_shot_examples(train, cfg.teacher.few_shot)
    diag = {a["id"]: a for a in read_jsonl(args.attempts)}
    items = refine_items(train, diag, {}, None, False, cfg.teacher.check_steps, cfg.teacher.show_attempt)
    requests = [Request(_messages(it, "refine", cfg.teacher, shots), _sampling(cfg.teacher, 0), 0)
                for it in items]
    teacher = build_backend(cfg.teacher)
    teacher.health_check()
    usage, t0 = Usage(), time.time()
    completions = teacher.complete(requests, usage)
    reasons = Counter(_judge(it, "refine", c.text, c.finish_reason, True)[1]
                      for it, c in zip(items, completions, strict=True))
    print(f"{len(items)} failed questions, {time.time() - t0:.1f} s: {dict(reasons)}")
    for it, c in list(zip(items, completions, strict=True))[:5]:
        print(f"--- {it.record.question}\n{c.text}")


if __name__ == "__main__":
    main()
