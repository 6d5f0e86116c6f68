"""Our decode loop against transformers' own generation, on the loop's real prompts.

Three ways to answer the same prompts greedily with the same model:
  ours            undo.lm.generate.generate_chat: a finished row (end token, or the caller's
                  stop rule: the answer line) leaves the batch and its KV cache at once; a
                  prefix shared by a batch's prompts is prefilled once
  generate        model.generate() on the same left-padded batches, the answer line as a
                  StoppingCriteria (a finished row keeps its slot until the batch ends)
  generate_batch  transformers' continuous batching (model.generate_batch), all prompts at
                  once; it has no stop rule, so a row runs to its end token
Workloads: the student (a finished run's best student, its test questions, 48 new tokens,
batch 32 and 64) and the in-process teacher (the run's explain requests: 3 worked examples,
greedy, teacher.max_tokens, teacher.batch_size). Texts are compared with ours (after the
same cut at the answer line). Sampled requests are not compared: only ours draws each row
from its own seeded generator, which the teacher's k refinements need.

    .venv/bin/python bench/generation.py runs/demo                  # after `make demo`
    .venv/bin/python bench/generation.py runs/demo --only student --arms ours generate

Two cores: run it alone. Writes bench/results/generation.json.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402
from transformers import GenerationConfig, StoppingCriteria, StoppingCriteriaList  # noqa: E402

from undo.config import load_config  # noqa: E402
from undo.grading import answer_line_end  # noqa: E402
from undo.lm.generate import cut, encode_chats, generate_chat, stop_token_ids  # noqa: E402
from undo.lm.models import load_model, load_tokenizer, resolve_model  # noqa: E402
from undo.runstore import read_json  # noqa: E402
from undo.tasks import make_splits  # noqa: E402
from undo.tasks.base import student_messages  # noqa: E402
from undo.teacher.rationale import TeachItem, few_shot_examples, messages_for  # noqa: E402

ARMS = ("ours", "generate", "generate_batch")


class AnswerLine(StoppingCriteria):
    """The stop rule as transformers takes it: per row, done once its answer line is written."""

    def __init__(self, tok: Any, prompt_width: int) -> None:
        self.tok, self.width = tok, prompt_width

    def __call__(self, input_ids: torch.Tensor, scores: Any, **kwargs: Any) -> torch.Tensor:
        new = input_ids[:, self.width:][:, -48:]
        texts = self.tok.batch_decode(new, skip_special_tokens=True)
        return torch.tensor([answer_line_end(t) is not None for t in texts], device=input_ids.device)


def run_ours(model: Any, tok: Any, convs: list, new_tokens: int, batch: int) -> list[str]:
    gens = generate_chat(model, tok, convs, new_tokens, batch_size=batch, stop=answer_line_end)
    return [g.text for g in gens]


def run_generate(model: Any, tok: Any, convs: list, new_tokens: int, batch: int) -> list[str]:
    prompts = encode_chats(tok, convs)
    ends = sorted(stop_token_ids(model, tok))
    pad = tok.pad_token_id if tok.pad_token_id is not None else ends[0]
    out: list[str] = []
    for s in range(0, len(prompts), batch):
        rows = prompts[s:s + batch]
        width = max(len(r) for r in rows)
        ids = torch.tensor([[pad] * (width - len(r)) + r for r in rows])
        mask = torch.tensor([[0] * (width - len(r)) + [1] * len(r) for r in rows])
        with torch.inference_mode():
            gen = model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=new_tokens, do_sample=False,
                                 eos_token_id=ends, pad_token_id=pad,
                                 stopping_criteria=StoppingCriteriaList([AnswerLine(tok, width)]))
        for row in gen[:, width:]:
            out.append(cut(tok.decode(row, skip_special_tokens=True), answer_line_end).strip())
    return out


def run_generate_batch(model: Any, tok: Any, convs: list, new_tokens: int, batch: int) -> list[str]:
    prompts = encode_chats(tok, convs)
    ends = sorted(stop_token_ids(model, tok))
    cfg = GenerationConfig(max_new_tokens=new_tokens, do_sample=False, eos_token_id=ends,
                           pad_token_id=tok.pad_token_id if tok.pad_token_id is not None else ends[0],
                           max_batch_tokens=batch * 64)
    with torch.inference_mode():
        res = model.generate_batch(prompts, generation_config=cfg, progress_bar=False)
    texts = {}
    for rid, r in res.items():
        texts[int(rid.rsplit("_", 1)[-1])] = tok.decode(r.generated_tokens, skip_special_tokens=True)
    return [cut(texts[i], answer_line_end).strip() for i in range(len(prompts))]


RUNNERS = {"ours": run_ours, "generate": run_generate, "generate_batch": run_generate_batch}


def measure(name: str, model: Any, tok: Any, convs: list, new_tokens: int, batches: list[int],
            arms: list[str]) -> list[dict[str, Any]]:
    rows = []
    run_ours(model, tok, convs[:2], 4, 2)  # warm-up
    for batch in batches:
        reference: list[str] | None = None
        for arm in arms:
            t0 = time.perf_counter()
            try:
                texts = RUNNERS[arm](model, tok, convs, new_tokens, batch)
            except Exception as e:  # an engine this machine or version cannot run: say so
                rows.append({"workload": name, "batch": batch, "arm": arm,
                             "error": f"{type(e).__name__}: {e}"[:300]})
                print(json.dumps(rows[-1]), flush=True)
                continue
            wall = time.perf_counter() - t0
            if arm == "ours":
                reference = texts
            same = None if reference is None else sum(a == b for a, b in zip(texts, reference, strict=True))
            rows.append({"workload": name, "batch": batch, "arm": arm, "prompts": len(convs),
                         "wall_s": round(wall, 2), "same_text_as_ours": same})
            print(json.dumps(rows[-1]), flush=True)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    ap.add_argument("run", type=Path, help="a finished run folder (make demo: runs/demo)")
    ap.add_argument("--only", choices=["student", "teacher"], nargs="*", default=["student", "teacher"])
    ap.add_argument("--arms", nargs="*", choices=ARMS, default=list(ARMS))
    ap.add_argument("--student-batches", type=int, nargs="*", default=[32, 64])
    ap.add_argument("--student-questions", type=int, default=None, help="the first N test questions (all)")
    ap.add_argument("--teacher-questions", type=int, default=96)
    args = ap.parse_args()
    cfg = load_config(args.run / "config.yaml")
    splits = make_splits(cfg.task, cfg.splits, cfg.seed)
    torch.manual_seed(0)
    rows: list[dict[str, Any]] = []
    if "student" in args.only:
        best = read_json(args.run / "summary.json")["best_iteration"]
        folder = args.run / f"iter_{best}" / "student" if isinstance(best, int) else None
        resolved = resolve_model(str(folder) if folder and folder.exists() else cfg.student.model)
        model, tok = load_model(resolved, device="cpu").eval(), load_tokenizer(resolved)
        if hasattr(model, "merge_and_unload"):  # every arm on the same plain weights
            model = model.merge_and_unload()
        convs = [student_messages(r) for r in splits["test"][:args.student_questions]]
        rows += measure("student", model, tok, convs, cfg.student.max_new_tokens, args.student_batches,
                        args.arms)
        del model
    if "teacher" in args.only:
        resolved = resolve_model(cfg.teacher.model)
        model, tok = load_model(resolved, device="cpu").eval(), load_tokenizer(resolved)
        shots = few_shot_examples(splits["train"], cfg.teacher.few_shot)
        convs = [messages_for(TeachItem(r), cfg.teacher, shots)
                 for r in splits["train"][:args.teacher_questions]]
        rows += measure("teacher explain", model, tok, convs, cfg.teacher.max_tokens, [cfg.teacher.batch_size],
                        args.arms)
    print("\n| workload | batch | arm | wall s | vs ours | same text as ours |\n|---|---|---|---|---|---|")
    for r in rows:
        if "error" in r:
            print(f"| {r['workload']} | {r['batch']} | {r['arm']} | - | - | {r['error'][:80]} |")
            continue
        ours = next(o["wall_s"] for o in rows if o["workload"] == r["workload"] and o["batch"] == r["batch"]
                    and o["arm"] == "ours" and "error" not in o)
        print(f"| {r['workload']} | {r['batch']} | {r['arm']} | {r['wall_s']} | {r['wall_s'] / ours:.2f}x "
              f"| {r['same_text_as_ours']}/{r['prompts']} |")
    out = Path(__file__).resolve().parent / "results" / "generation.json"
    out.write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
