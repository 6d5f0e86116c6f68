"""The student's GPU paths on a real CUDA device, each one pass/fail with its figures.

Run by bench/gpu_check.sh on a lent GPU (no internet, no weights there): a randomly
initialised Llama-architecture model is built from a config, then

  lora_bf16      LoRA training in bf16 through train_student (tokens/s, peak memory)
  full_bf16      full fine-tuning (bf16 autocast, fp32 master weights)
  generate       our decode loop on the LoRA student through the engine pool (tokens/s)
  lifecycle      engine reuse across calls, release before training, rebuild after
                 (allocated/reserved memory before, with, and after the engine)
  vllm_lora      vLLM serving the LoRA student as a LoRARequest, released after (if installed)
  accelerate_*   `accelerate launch` with configs/accelerate/{ddp,fsdp,deepspeed_zero3}.yaml on
                 the GPU (one process: two cannot share one GPU under NCCL); the saved student
                 must hold whole tensors equal to the one trained in-process on the same batches

Prints one line per check and writes gpu_check.json to --out.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))  # tiny_model: the random-model builder the tests use

RESULTS: list[dict[str, Any]] = []


def check(name: str, fn: Callable[[], dict[str, Any]]) -> dict[str, Any] | None:
    import torch

    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    try:
        figures = fn()
        status = figures.pop("status", "pass")
    except Exception as e:  # a failed check is a figure too: report it and go on
        figures = {"error": f"{type(e).__name__}: {e}"[:600], "trace": traceback.format_exc()[-1500:]}
        status = "FAIL"
    figures["wall_s"] = round(time.perf_counter() - t0, 1)
    if torch.cuda.is_available():
        figures["peak_alloc_gib"] = round(torch.cuda.max_memory_allocated() / 2**30, 3)
    row = {"check": name, "status": status, **figures}
    RESULTS.append(row)
    shown = {k: v for k, v in row.items() if k not in ("check", "status", "trace")}
    print(f"{status:4}  {name:<18} {json.dumps(shown)}", flush=True)
    return row


def gib(n: int) -> float:
    return round(n / 2**30, 3)


def mem() -> dict[str, float]:
    import torch

    if not torch.cuda.is_available():  # a smoke run of this script on CPU
        return {"alloc": 0.0, "reserved": 0.0}
    torch.cuda.synchronize()
    return {"alloc": gib(torch.cuda.memory_allocated()), "reserved": gib(torch.cuda.memory_reserved())}


def examples(n: int) -> list[dict[str, str]]:
    return [{"id": str(i), "prompt": f"What is {i} + {i + 3}?",
             "completion": f"{i} + {i + 3} = {2 * i + 3}. The answer is {2 * i + 3}."} for i in range(n)]


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--hidden", type=int, default=1024)
    p.add_argument("--layers", type=int, default=8)
    a = p.parse_args()
    a.out.mkdir(parents=True, exist_ok=True)
    work = Path("/tmp/undo-gpu-check")
    import shutil

    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)

    import torch
    from tiny_model import build_tiny_llama

    from undo.config import RunConfig, config_to_yaml
    from undo.lm import engines
    from undo.lm.engines import EngineSpec
    from undo.student.train import _use_bf16, train_student

    device = "cuda" if torch.cuda.is_available() else "cpu"  # cpu: a smoke run of this script
    env = {"python": sys.version.split()[0], "torch": torch.__version__, "cuda": torch.version.cuda,
           "device": torch.cuda.get_device_name(0) if device == "cuda" else "cpu"}
    for mod in ("transformers", "peft", "accelerate", "trl", "datasets", "vllm", "deepspeed"):
        try:
            env[mod] = __import__(mod).__version__
        except Exception as e:  # not installed there, or broken
            env[mod] = f"unavailable ({type(e).__name__})"
    print("env", json.dumps(env), flush=True)

    base = build_tiny_llama(work / "base", hidden=a.hidden, layers=a.layers, heads=8)
    from safetensors.torch import load_file

    n_params = sum(v.numel() for v in load_file(base / "model.safetensors").values())
    print(f"model: random Llama, hidden {a.hidden}, {a.layers} layers, {n_params / 1e6:.1f}M params",
          flush=True)

    def cfg(lora: bool, steps: int = 30) -> RunConfig:
        return RunConfig.model_validate({
            "seed": 0,
            "student": {"model": str(base), "device": device, "batch_size": 32, "max_new_tokens": 48,
                        "lora": {"r": 16, "alpha": 32} if lora else None},
            "train": {"max_steps": steps, "batch_size": 8, "lr": 2e-3 if lora else 2e-4,
                      "max_seq_len": 256, "logging_steps": 1, "warmup_ratio": 0.0}})

    data = examples(64)

    def trained(name: str, lora: bool) -> dict[str, Any]:
        c = cfg(lora)
        r = train_student(data, work / name, c.student, c.train, seed=0, progress=False)
        ok = r.final_loss is not None and r.first_loss is not None and r.final_loss < r.first_loss
        saved = "adapter_config.json" if lora else "model.safetensors"
        ok = ok and (work / name / saved).exists()
        return {"status": "pass" if ok else "FAIL", "steps": r.steps, "first_loss": round(r.first_loss, 3),
                "final_loss": round(r.final_loss, 3), "tokens_per_s": round(r.tokens_per_s),
                "train_s": round(r.train_s, 1), "bf16": _use_bf16(c.train, device)}

    check("lora_bf16", lambda: trained("lora", True))
    check("full_bf16", lambda: trained("full", False))

    student = str(work / "lora")
    prompts = [[{"role": "user", "content": f"What is {i} + {i + 3}?"}] for i in range(128)]

    def generate() -> dict[str, Any]:
        spec = EngineSpec.of(cfg(True).student, student)
        engines.generate("student", spec, prompts[:4], 8)  # build + warm up
        mem()
        t0 = time.perf_counter()
        gens = engines.generate("student", spec, prompts, 48, batch_size=32)
        mem()
        dt = time.perf_counter() - t0
        tokens = sum(g.completion_tokens for g in gens)
        engines.release_all()
        return {"status": "pass" if len(gens) == 128 and tokens > 0 else "FAIL", "rows": len(gens),
                "completion_tokens": tokens, "tokens_per_s": round(tokens / dt), "sample": gens[0].text[:60]}

    check("generate", generate)

    def decode_overhead() -> dict[str, Any]:
        """Where a decode step's time goes: our loop with and without the answer-line check,
        against the bare model forwards it makes (same mask, positions and cache)."""
        from transformers import DynamicCache

        from undo.grading import answer_line_end
        from undo.lm.generate import generate_chat
        from undo.lm.models import load_model, load_tokenizer, resolve_model

        resolved = resolve_model(str(work / "full"))
        model, tok = load_model(resolved, device).eval(), load_tokenizer(resolved)
        convs = prompts[:32]
        generate_chat(model, tok, convs[:2], 4)  # warm-up

        def per_step(stop: Any = answer_line_end) -> float:
            mem()
            t0 = time.perf_counter()
            gens = generate_chat(model, tok, convs, 48, batch_size=32, stop=stop)
            mem()
            return (time.perf_counter() - t0) / max(max(g.completion_tokens for g in gens), 1)

        per_step()  # untimed: the first pass at these shapes pays for kernel/plan selection
        checked = per_step()
        unchecked = per_step(stop=None)
        checked_again = per_step()  # the order effect, if any, shows as a gap to `checked`
        with torch.inference_mode():
            cache = DynamicCache(config=model.config)
            mask = torch.ones((32, 24), dtype=torch.long, device=device)
            model(input_ids=torch.randint(0, 300, (32, 24), device=device), attention_mask=mask,
                  past_key_values=cache, use_cache=True, logits_to_keep=1)
            ids = torch.randint(0, 300, (32, 1), device=device)
            mem()
            t0 = time.perf_counter()
            for step in range(48):
                mask = torch.cat([mask, mask.new_ones((32, 1))], dim=1)
                pos = torch.full((32, 1), 24 + step, device=device)
                model(input_ids=ids, attention_mask=mask, position_ids=pos, past_key_values=cache,
                      use_cache=True)
            mem()
            bare = (time.perf_counter() - t0) / 48
        with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
            generate_chat(model, tok, convs, 16, batch_size=32)
        (a.out / "decode_profile.txt").write_text(
            prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=25))
        return {"ms_per_step": round(1e3 * checked, 2), "ms_per_step_again": round(1e3 * checked_again, 2),
                "ms_per_step_no_answer_check": round(1e3 * unchecked, 2),
                "ms_per_step_bare_forward": round(1e3 * bare, 2)}

    check("decode_overhead", decode_overhead)

    def lifecycle() -> dict[str, Any]:
        from undo.student.fit import fit

        engines.release_all()
        before = mem()
        spec = EngineSpec.of(cfg(False).student, str(work / "full"))
        built0 = engines.POOL.built
        for _ in range(3):  # three splits: one engine
            engines.generate("student", spec, prompts[:8], 8)
        held = mem()
        reused = engines.POOL.built - built0 == 1
        c = cfg(True, steps=2)
        fit(data[:16], work / "lora2", c)  # releases every engine first
        released_at_fit = engines.POOL.roles() == []
        after = mem()
        engines.generate("student", spec, prompts[:8], 8)  # rebuilt on demand
        rebuilt = engines.POOL.built - built0 == 2
        engines.release_all()
        freed = mem()
        ok = reused and released_at_fit and rebuilt and freed["alloc"] <= before["alloc"] + 0.01
        return {"status": "pass" if ok else "FAIL", "reused_across_calls": reused,
                "released_at_fit": released_at_fit, "rebuilt_after": rebuilt,
                "alloc_gib_before": before["alloc"], "alloc_gib_engine_held": held["alloc"],
                "alloc_gib_after_fit": after["alloc"], "alloc_gib_after_release": freed["alloc"],
                "reserved_gib_after_release": freed["reserved"]}

    check("lifecycle", lifecycle)

    def vllm_lora() -> dict[str, Any]:
        try:
            import vllm  # noqa: F401
        except ImportError:
            return {"status": "skip", "why": "vllm is not installed there (no internet to fetch it)"}
        spec = EngineSpec("vllm", student, "cuda", "bfloat16",
                          tuple(sorted(cfg(True).student.vllm.model_dump().items())))
        free0 = torch.cuda.mem_get_info()[0]
        gens = engines.generate("student", spec, prompts, 48)
        free_held = torch.cuda.mem_get_info()[0]
        engines.release_all()
        free1 = torch.cuda.mem_get_info()[0]
        ok = len(gens) == 128 and free1 >= free0 - 2**30
        return {"status": "pass" if ok else "FAIL", "rows": len(gens), "free_gib_before": gib(free0),
                "free_gib_held": gib(free_held), "free_gib_after_release": gib(free1)}

    check("vllm_lora", vllm_lora)

    def launched(kind: str) -> dict[str, Any]:
        from safetensors.torch import load_file

        from undo.student.launch import launch_training

        c = cfg(False, steps=4)
        cfg_file = work / f"{kind}.yaml"
        cfg_file.write_text(config_to_yaml(c))
        data_file = work / "data.jsonl"
        data_file.write_text("".join(json.dumps(e) + "\n" for e in data))
        out = work / f"acc-{kind}"
        r = launch_training(data_file, out, cfg_file, "accelerate", 1,
                            str(ROOT / "configs" / "accelerate" / f"{kind}.yaml"), progress=False)
        ref_dir = work / f"ref-{kind}"
        train_student(data, ref_dir, c.student, c.train, seed=0, progress=False)
        got, ref = load_file(out / "model.safetensors"), load_file(ref_dir / "model.safetensors")
        whole = got.keys() == ref.keys() and all(got[k].shape == ref[k].shape for k in ref)
        diff = max((got[k].float() - ref[k].float()).abs().max().item() for k in ref) if whole else None
        expected = {"fsdp": "FSDP", "deepspeed_zero3": "DEEPSPEED"}.get(kind, r.distributed)
        # ZeRO-3 trains bf16 weights (fp32 master copy in the optimizer); the in-process
        # reference keeps fp32 weights under bf16 autocast: a looser bound there
        bound = 5e-2 if kind == "deepspeed_zero3" else 1e-2
        ok = whole and diff is not None and diff < bound and r.distributed == expected
        return {"status": "pass" if ok else "FAIL", "distributed": r.distributed, "processes": r.num_processes,
                "steps": r.steps, "whole_tensors": whole, "max_abs_diff_vs_in_process": diff}

    check("accelerate_ddp", lambda: launched("ddp"))
    check("accelerate_fsdp", lambda: launched("fsdp"))
    if str(env["deepspeed"])[0].isdigit():
        check("accelerate_zero3", lambda: launched("deepspeed_zero3"))
    else:
        check("accelerate_zero3", lambda: {"status": "skip", "why": "deepspeed is not installed there"})

    (a.out / "gpu_check.json").write_text(json.dumps({"env": env, "results": RESULTS}, indent=2))
    failed = [r["check"] for r in RESULTS if r["status"] == "FAIL"]
    print(f"gpu_check: {len(RESULTS) - len(failed)} of {len(RESULTS)} not failed"
          + (f"; FAILED: {', '.join(failed)}" if failed else ""), flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
