"""The in-process teacher's two stages on a finished run's own questions, timed.

    .venv/bin/python bench/teacher_stage.py runs/demo            # explain (iter 0) and refine (iter 1)
    .venv/bin/python bench/teacher_stage.py runs/demo --stage refine

Rebuilds exactly the requests the run made (its config, splits, the iteration-0 student's
train attempts, history and profile), sends them to a fresh in-process teacher with no
completion cache, and prints wall time, requests, tokens and verdicts per stage. Two
cores: run it alone. To measure an older undo on the same requests, put its source first:
PYTHONPATH=<old checkout>/src .venv/bin/python bench/teacher_stage.py runs/demo
To measure the same requests against an OpenAI-compatible server (llama.cpp, vLLM) instead:
    .venv/bin/python bench/teacher_stage.py runs/demo --base-url http://127.0.0.1:8080/v1 --concurrency 8
"""

from __future__ import annotations

import argparse
import inspect
import os
import tempfile
import time
from collections import Counter
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from undo.config import load_config  # noqa: E402
from undo.loop import UndoRun  # noqa: E402
from undo.loop.feedback import refine_items, student_profile  # noqa: E402
from undo.runstore import RunStore, read_jsonl  # noqa: E402
from undo.tasks import Record  # noqa: E402
from undo.teacher.base import Usage  # noqa: E402
from undo.teacher.local_backend import LocalBackend  # noqa: E402
from undo.teacher.rationale import TeachItem, few_shot_examples, generate_rationales  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    ap.add_argument("run", type=Path, help="a finished run folder with iter_1")
    ap.add_argument("--stage", choices=["explain", "refine", "both"], default="both")
    ap.add_argument("--base-url", help="an OpenAI-compatible server to send the requests to instead")
    ap.add_argument("--concurrency", type=int, default=8, help="with --base-url")
    a = ap.parse_args()
    cfg = load_config(a.run / "config.yaml")
    store = RunStore(a.run)
    splits = {s: [Record.from_dict(r) for r in read_jsonl(a.run / "splits" / f"{s}.jsonl")]
              for s in ("train", "val")}
    train = splits["train"]
    shots = few_shot_examples(train, cfg.teacher.few_shot)
    stages: dict[str, list[TeachItem]] = {}
    if a.stage in ("explain", "both"):
        stages["explain"] = [TeachItem(r) for r in train]
    if a.stage in ("refine", "both"):
        diag = {row["id"]: row for row in read_jsonl(store.attempts_file(1, "train"))}
        run = UndoRun(cfg)  # its history helpers, on this folder (it may have been moved)
        run.store = store
        val_attempts = list(read_jsonl(store.attempts_file(0, "val")))
        profile = (student_profile(run.val_history(1), val_attempts, cfg.loop.val_errors_shown, cfg.seed + 1)
                   if cfg.loop.val_errors_shown else None)
        stages["refine"] = refine_items(train, diag, run.teacher_history(1), profile, cfg.teacher.history,
                                        cfg.teacher.check_steps, cfg.teacher.show_attempt)
    # older undo (PYTHONPATH=<old checkout>/src, to measure the old path) had no seed argument
    seed = {"seed": cfg.seed} if "seed" in inspect.signature(generate_rationales).parameters else {}
    if a.base_url:
        from undo.config import OpenAIConfig
        from undo.teacher.openai_backend import OpenAIBackend

        served = cfg.teacher.model_copy(update={"backend": "openai", "openai": OpenAIConfig(
            base_url=a.base_url, concurrency=a.concurrency, timeout=600)})
        teacher = OpenAIBackend(served)
    else:
        teacher = LocalBackend(cfg.teacher)
    t = time.perf_counter()
    teacher.health_check()  # loads the model
    print(f"teacher load: {time.perf_counter() - t:.1f} s")
    for name, items in stages.items():
        usage = Usage()
        with tempfile.TemporaryDirectory() as d:
            t = time.perf_counter()
            rows = generate_rationales(items, teacher, cfg.teacher, Path(d) / "r.jsonl", usage,
                                       examples=shots, **seed)
            dt = time.perf_counter() - t
        print(f"{name}: {len(items)} questions, {usage.requests} requests, {dt:.1f} s "
              f"({dt / max(usage.requests, 1):.2f} s/request), prompt tokens {usage.prompt_tokens}, "
              f"completion tokens {usage.completion_tokens}, "
              f"verdicts {dict(Counter(r['verdict'] for r in rows))}")


if __name__ == "__main__":
    main()
