"""`undo run --dry-run`: resolve everything and print upper bounds, calling nothing."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from undo.config import RunConfig
from undo.errors import UserError
from undo.lm.engines import ENGINES, resolve_backend
from undo.lm.models import resolve_model
from undo.runstore import RunStore, read_summary
from undo.tasks import make_splits

# a rough prompt size for the bound; refine prompts carry the student's attempt too
EXPLAIN_PROMPT_TOKENS = 200
REFINE_PROMPT_TOKENS = 900
EXAMPLE_TOKENS = 200  # one worked example (teacher.few_shot): its question and solution turns
# one refine worked example (teacher.refine_examples): a refine prompt with a wrong attempt,
# and the explanation that answers it
REFINE_EXAMPLE_TOKENS = 400


def _check_model(spec: str) -> str:
    """Where the model will come from, without loading or converting it."""
    from pathlib import Path

    from undo.lm.models import OFFLINE_MODELS, model_cache_dir, offline_gguf

    if spec in OFFLINE_MODELS:
        offline_gguf(spec)  # installed and its bytes match the pinned digest (hashed once, cached)
        converted = (model_cache_dir() / spec / "hf" / "undo_source_sha256.txt").exists()
        return f"offline {spec}" + ("" if converted else " (converted from GGUF on first use: minutes)")
    resolved = resolve_model(spec)
    return resolved.path if Path(resolved.path).exists() else f"hub {resolved.path} (downloaded on first use)"


def preflight(cfg: RunConfig, splits: dict[str, list[Any]]) -> dict[str, str]:
    """Every refusal the config alone can cause, before any model is loaded or any teacher
    called: models found, engines importable, the training launcher's files there, LoRA
    within what vLLM will serve, a budget that fits one question. Returns where each
    model comes from."""
    models = {"student": _check_model(cfg.student.model)}
    teacher_engine, student_engine = resolve_backend(cfg.teacher.backend), resolve_backend(cfg.student.backend)
    if teacher_engine in ENGINES:  # in-process: finding the model is the check
        models["teacher"] = _check_model(cfg.teacher.model)
        if cfg.teacher.refine_model and cfg.loop.refine == "teacher":
            models["refine teacher"] = _check_model(cfg.teacher.refine_model)
    roles = [("student", student_engine)] + (
        [("teacher", teacher_engine)] if teacher_engine in ENGINES else [])
    for role, backend in roles:
        if backend == "vllm":
            import importlib.util

            if importlib.util.find_spec("vllm") is None:
                raise UserError(f"{role}.backend=vllm needs vLLM: pip install 'undo-distill[vllm]'")
    if student_engine == "vllm" and cfg.student.lora is not None:
        if not cfg.student.vllm.enable_lora:
            raise UserError("student.vllm.enable_lora is false, but student.lora trains LoRA students "
                            "that vLLM must then serve: set it true, or student.lora=null")
        if cfg.student.lora.r > cfg.student.vllm.max_lora_rank:
            raise UserError(f"student.lora.r={cfg.student.lora.r} is above student.vllm.max_lora_rank="
                            f"{cfg.student.vllm.max_lora_rank}: raise the one or lower the other")
    acc = cfg.train.accelerate_config
    if cfg.train.launcher == "accelerate" and acc and not Path(acc).is_file():
        raise UserError(f"train.accelerate_config: file not found: {acc}")
    if cfg.train.match_steps_of:
        matched_steps(Path(cfg.train.match_steps_of))
    b = cfg.loop.budget
    if b.limited and splits["train"]:
        from undo.teacher.base import Usage
        from undo.teacher.budget import TeacherBudget
        from undo.teacher.rationale import TeachItem, few_shot_examples, messages_for

        # the first explain request, without teacher-written examples (they only add to it)
        first = messages_for(TeachItem(splits["train"][0]), cfg.teacher,
                             few_shot_examples(splits["train"], cfg.teacher.few_shot))
        budget = TeacherBudget(tokens_left=b.teacher_tokens, cost_left=b.cost, price=cfg.teacher.price,
                               max_tokens=cfg.teacher.max_tokens)

        if not budget.fits(Usage(), *budget.bound(first)):
            raise UserError("loop.budget is too small for even one teacher question "
                            f"(left: {b.teacher_tokens} tokens, {b.cost} USD)")
    return models


def plan(cfg: RunConfig) -> dict[str, Any]:
    """Splits and upper bounds. No teacher endpoint is contacted: the run's first step
    health-checks it (a dry run that calls out is not dry)."""
    splits = make_splits(cfg.task, cfg.splits, cfg.seed)
    models = preflight(cfg, splits)
    n_train = len(splits["train"])
    t = cfg.teacher
    explain_calls = t.max_attempts + (1 if t.rationalize else 0)
    refine_calls = t.max_attempts + t.refine_samples - 1  # refinements are never rationalized
    iters = 1 if cfg.loop.method == "oneshot" else cfg.loop.max_iterations + 1
    per_iter = []
    # a refine request carries the refine worked examples when there are any, else the explain ones
    refine_shots = (t.refine_examples * REFINE_EXAMPLE_TOKENS if t.refine_examples and t.show_attempt
                    else t.few_shot * EXAMPLE_TOKENS)
    for k in range(iters):
        calls = n_train * (explain_calls if k == 0 else refine_calls)
        prompt = (EXPLAIN_PROMPT_TOKENS + t.few_shot * EXAMPLE_TOKENS if k == 0
                  else REFINE_PROMPT_TOKENS + refine_shots)
        per_iter.append({"iteration": k, "teacher_calls_max": calls,
                         "teacher_prompt_tokens_max": calls * prompt,
                         "teacher_completion_tokens_max": calls * t.max_tokens})
    batch = cfg.train.batch_size * cfg.train.grad_accum * max(cfg.train.num_processes, 1)
    steps = (cfg.train.max_steps if cfg.train.max_steps > 0
             else math.ceil(n_train / batch) * math.ceil(max(cfg.train.epochs, cfg.train.refine_epochs or 0)))
    if cfg.train.match_steps_of:  # the matched baseline trains as long as that run did
        steps = matched_steps(Path(cfg.train.match_steps_of))
    shots = _worked_examples(cfg, splits, per_iter[0])
    out: dict[str, Any] = {
        "run_dir": str(cfg.run_dir),
        "worked_examples": shots,
        "questions": {s: len(v) for s, v in splits.items()},
        "iterations_max": iters,
        "per_iteration": per_iter,
        "student_steps_per_iteration_max": steps,
        "student_generations_per_iteration": n_train + len(splits["val"]) + len(splits["test"]),
        "models": models,
        "engines": engines_used(cfg),
        "estimates": f"teacher prompt tokens are estimates ({EXPLAIN_PROMPT_TOKENS} per explain and "
                     f"{REFINE_PROMPT_TOKENS} per refine prompt, {EXAMPLE_TOKENS} per worked example, "
                     f"{REFINE_EXAMPLE_TOKENS} per refine worked example); calls and completion tokens "
                     "are upper bounds (every attempt used, max_tokens each)",
    }
    if cfg.loop.budget.limited:
        out["budget"] = _budget_fit(cfg, per_iter)
    if t.price:
        p_in = sum(i["teacher_prompt_tokens_max"] for i in per_iter)
        p_out = sum(i["teacher_completion_tokens_max"] for i in per_iter)
        out["cost_usd_max"] = round((p_in * t.price.get("input", 0)
                                     + p_out * t.price.get("output", 0)) / 1e6, 2)
    return out


def _worked_examples(cfg: RunConfig, splits: dict[str, list[Any]], first: dict[str, Any]) -> str:
    """Where the worked examples come from; the teacher's passes that write them (when the
    task has no gold rationales) are added to iteration 0's bounds (`first`)."""
    from undo.teacher.rationale import example_candidates, example_pass_config, few_shot_examples

    t = cfg.teacher
    if not t.few_shot:
        return "none (zero-shot)"
    if few_shot_examples(splits["train"], t.few_shot):
        return f"{t.few_shot} from the task's gold rationales"
    # the teacher writes them: one or two zero-shot passes before iteration 0
    n_cand = len(example_candidates(splits["train"], t.few_shot))
    passes = 2 if t.style == "concise" else 1
    for stage in ("examples", "examples_stepwise")[:passes]:
        calls = n_cand * t.max_attempts
        first["teacher_calls_max"] += calls
        first["teacher_prompt_tokens_max"] += calls * EXPLAIN_PROMPT_TOKENS
        first["teacher_completion_tokens_max"] += calls * example_pass_config(t, stage).max_tokens
    return (f"{t.few_shot} written by the teacher: zero-shot over the first {n_cand} train questions"
            + (", then stepwise over those still unsolved" if passes == 2 else ""))


def _budget_fit(cfg: RunConfig, per_iter: list[dict[str, Any]]) -> dict[str, Any]:
    """How many iterations surely fit loop.budget, from the per-iteration upper bounds."""
    b, price = cfg.loop.budget, cfg.teacher.price
    fit, tokens, usd = 0, 0, 0.0
    for i in per_iter:
        tokens += i["teacher_prompt_tokens_max"] + i["teacher_completion_tokens_max"]
        usd += (i["teacher_prompt_tokens_max"] * price.get("input", 0)
                + i["teacher_completion_tokens_max"] * price.get("output", 0)) / 1e6
        over_tokens = b.teacher_tokens is not None and tokens > b.teacher_tokens
        if over_tokens or (b.cost is not None and usd > b.cost):
            break
        fit += 1
    return {"iterations_surely_within": fit, "iterations_max": len(per_iter),
            "note": "estimate from upper bounds (every attempt used, prompts at a typical "
                    "size); the loop sizes each teacher round to what is left and stops "
                    "when one question no longer fits"}


def engines_used(cfg: RunConfig) -> dict[str, str]:
    """Which engine answers for each role on this machine (`auto` resolved)."""
    def say(backend: str) -> str:
        engine = resolve_backend(backend)
        return engine if engine == backend else f"{engine} ({backend}: this machine)"

    teacher = (f"openai: HTTP to {cfg.teacher.openai.base_url}" if cfg.teacher.backend == "openai"
               else say(cfg.teacher.backend))
    return {"student": say(cfg.student.backend), "teacher": teacher}


def matched_steps(run_dir: Path) -> int:
    """Total optimizer steps an UNDO run used: the longer-standard-training control."""
    path = RunStore(run_dir).summary_file
    if not path.exists():
        raise UserError(f"train.match_steps_of: {path} not found (finish that run first)")
    return int(read_summary(path)["total_steps"])
