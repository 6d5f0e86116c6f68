"""Measured student throughput on this machine: generation and training.

    .venv/bin/python bench/student.py [--quick] [--skip-train] [--device cpu|cuda] [--threads N]

Prints, for smollm2-135m-instruct (CPU) or a small random Llama (CUDA):
  * fp32 matmul FLOP/s (torch.mm 4096x4096), the yardstick for the fractions below;
  * generation tokens/s at batch 1, 8 and 32 (same prompts, fixed new tokens, no
    early stop) and the batch32/batch1 ratio (target >= 8x);
  * training tokens/s at batch 8 x 256 tokens, LoRA and full fine-tuning, each in
    its own subprocess so its peak RSS (getrusage maxrss) is its own.

FLOP model (N = parameters, attention's length-dependent term ignored):
  generation 2N per token; full training 6N (forward 2N + backward 4N);
  LoRA ~4N (forward 2N + activation gradients 2N; no base weight gradients).

On a CPU shared with other busy processes, OpenMP spin-waits make every small op
wait for a time slice; --threads 1 then measures the code rather than the
contention (the load average is printed for that reason).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def matmul_flops(device: str, n: int = 4096, reps: int = 5, dtype: str = "float32") -> float:
    import torch

    a = torch.randn(n, n, device=device, dtype=getattr(torch, dtype))
    b = torch.randn(n, n, device=device, dtype=getattr(torch, dtype))
    torch.mm(a, b)  # warm-up
    _sync(device)
    t = time.perf_counter()
    for _ in range(reps):
        torch.mm(a, b)
    _sync(device)
    return 2 * n**3 * reps / (time.perf_counter() - t)


def _sync(device: str) -> None:
    import torch

    if device == "cuda":
        torch.cuda.synchronize()


def _prompts(k: int) -> list[list[dict]]:
    topics = ["cats", "rivers", "trains", "bread", "clocks", "maps", "bees", "snow"]
    return [
        [{"role": "user", "content": f"Write a short story about {topics[i % 8]} number {i}."}]
        for i in range(k)
    ]


def bench_generation(
    model, tok, device: str, new_tokens: int, sizes: list[int]
) -> dict[int, tuple[float, float]]:
    """batch -> (generated tokens/s, processed tokens/s incl. the prompts' prefill)."""
    from undo.lm.generate import generate_chat

    generate_chat(model, tok, _prompts(2), max_new_tokens=4, batch_size=2)  # warm-up
    out = {}
    for bs in sizes:
        convs = _prompts(max(bs, 2))  # batch 1 still runs two prompts, one after the other
        _sync(device)
        t = time.perf_counter()
        gens = generate_chat(model, tok, convs, max_new_tokens=new_tokens, batch_size=bs,
                             ignore_eos=True)
        _sync(device)
        dt = time.perf_counter() - t
        done = sum(g.completion_tokens for g in gens)
        out[bs] = (done / dt, (done + sum(g.prompt_tokens for g in gens)) / dt)
    return out


def _train_examples(tok, n: int, seq: int) -> list[dict]:
    """n examples of exactly `seq` tokens (no padding waste in a batch)."""
    from undo.student.train import _conversation, _token_length

    words = " ".join(f"w{i}" for i in range(4 * seq))
    out = []
    for i in range(n):
        ex = {"id": str(i), "prompt": f"Question {i}: add the numbers.", "completion": ""}
        lo, hi = 0, len(words)
        while lo < hi:  # the longest completion that keeps the example within seq tokens
            mid = (lo + hi + 1) // 2
            ex["completion"] = words[:mid]
            if _token_length(tok, _conversation(ex)) <= seq:
                lo = mid
            else:
                hi = mid - 1
        ex["completion"] = words[:lo]
        out.append(ex)
    return out


def train_child(mode: str, model_dir: str, device: str, steps: int, batch: int, seq: int) -> None:
    """Runs in its own process: one training run, then a JSON line on stdout."""
    from undo.config import LoraConfig, StudentConfig, TrainConfig
    from undo.lm.models import load_tokenizer, resolve_model
    from undo.student.train import train_student

    tok = load_tokenizer(resolve_model(model_dir))
    examples = _train_examples(tok, batch * steps, seq)
    student = StudentConfig(model=model_dir, device=device,
                            lora=LoraConfig(r=16, alpha=32) if mode == "lora" else None)
    train = TrainConfig(max_steps=steps, batch_size=batch, max_seq_len=seq, logging_steps=1,
                        warmup_ratio=0.0, lr=1e-4)
    with tempfile.TemporaryDirectory() as d:
        # the figure is the whole optimisation loop, first (warm-up) step included
        r = train_student(examples, Path(d) / "s", student, train, seed=0, progress=False)
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux: KiB
    if device == "cuda":
        import torch

        gpu_peak = torch.cuda.max_memory_allocated()
    else:
        gpu_peak = 0
    print(json.dumps({"tokens_per_s": r.tokens_per_s, "steps": r.steps, "train_s": r.train_s,
                      "num_tokens": r.num_tokens, "peak_rss": rss, "gpu_peak": gpu_peak}))


def run_child(mode: str, model_dir: str, device: str, steps: int, batch: int, seq: int) -> dict:
    import torch

    cmd = [sys.executable, __file__, "--child", mode, "--model-dir", model_dir, "--device", device,
           "--steps", str(steps), "--batch", str(batch), "--seq", str(seq),
           "--threads", str(torch.get_num_threads())]
    p = subprocess.run(cmd, capture_output=True, text=True)
    if p.returncode != 0:
        raise SystemExit(f"{mode} training child failed:\n{p.stderr[-3000:]}")
    return json.loads(p.stdout.strip().splitlines()[-1])


def _gib(b: float) -> str:
    return f"{b / 2**30:.1f} GiB"


def load_bench_model(device: str, tmp: str):
    """(model, tokenizer, saved folder): smollm2 on CPU; a random ~150M Llama on CUDA."""
    from undo.lm.models import load_model, load_tokenizer, resolve_model

    if device == "cpu":
        resolved = resolve_model("smollm2-135m-instruct")
        model = load_model(resolved, device="cpu").eval()
        tok = load_tokenizer(resolved)
    else:
        import torch
        from transformers import LlamaConfig, LlamaForCausalLM

        tok = load_tokenizer(resolve_model("smollm2-135m-instruct"))
        cfg = LlamaConfig(vocab_size=len(tok), hidden_size=768, intermediate_size=2048,
                          num_hidden_layers=12, num_attention_heads=12, num_key_value_heads=4,
                          max_position_embeddings=2048, tie_word_embeddings=True)
        torch.manual_seed(0)
        model = LlamaForCausalLM(cfg).to(device).eval()
    # the training children read this copy: safetensors load in ~1 s, the GGUF in ~25 s
    model.save_pretrained(tmp)
    tok.save_pretrained(tmp)
    return model, tok


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="fewer tokens and steps")
    ap.add_argument("--skip-train", action="store_true")
    ap.add_argument("--device", default=None, help="cpu | cuda (default: both where present)")
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--model-dir", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--seq", type=int, default=256)
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    a = ap.parse_args()
    if a.threads:
        import torch

        torch.set_num_threads(a.threads)
    if a.child:
        train_child(a.child, a.model_dir, a.device, a.steps, a.batch, a.seq)
        return

    import torch

    devices = [a.device] if a.device else ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    new_tokens = 32 if a.quick else 64
    steps = 1 if a.quick else 3
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"{os.cpu_count()} cores; load average {os.getloadavg()[0]:.1f}")
    for device in devices:
        peak = matmul_flops(device)
        print(f"\n[{device}] fp32 matmul 4096^2: {peak / 1e9:.0f} GFLOP/s")
        with tempfile.TemporaryDirectory() as tmp:
            model, tok = load_bench_model(device, tmp)
            n_params = sum(p.numel() for p in model.parameters())
            print(f"[{device}] model: {n_params / 1e6:.1f}M parameters")
            gen = bench_generation(model, tok, device, new_tokens, [1, 8, 32])
            for bs, (tps, processed) in gen.items():
                # new tokens only; counting the prompts too overstates a little, since a
                # prefix shared by a batch's prompts is computed once
                frac = tps * 2 * n_params / peak
                frac_all = processed * 2 * n_params / peak
                print(f"[{device}] generation batch {bs:>2}: {tps:7.1f} new tokens/s = "
                      f"{frac:.1%} of matmul peak at 2N FLOPs/token "
                      f"({frac_all:.1%} counting prompt tokens, {processed:.0f} tokens/s)")
            print(f"[{device}] batch32 / batch1: {gen[32][0] / gen[1][0]:.1f}x new tokens/s "
                  f"({new_tokens} new tokens per prompt; target >= 8x)")
            del model
            if a.skip_train:
                continue
            for mode, per_token in (("lora", 4), ("full", 6)):
                r = run_child(mode, tmp, device, steps, a.batch, a.seq)
                frac = r["tokens_per_s"] * per_token * n_params / peak
                mem = f"peak RSS {_gib(r['peak_rss'])}"
                if device == "cuda":
                    mem += f", GPU peak {_gib(r['gpu_peak'])}"
                print(f"[{device}] train {mode:<4} batch {a.batch}x{a.seq}: "
                      f"{r['tokens_per_s']:7.1f} tokens/s ({frac:.1%} of matmul peak at "
                      f"{per_token}N FLOPs/token; {r['steps']} steps), {mem}")


if __name__ == "__main__":
    main()
