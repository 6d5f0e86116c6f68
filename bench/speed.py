"""Issue 11's speed figures in one run: each next to its baseline and the matmul peak.

    .venv/bin/python bench/speed.py [--old 159411b] [--quick]

The baseline is an older commit of this repository (default 159411b, whose figures the
issue quotes: teacher 58.9 tokens/s at batch 16, student 268.7 new tokens/s at batch 32,
HTTP client 9.7 % over ideal). It is exported with `git archive` into a temporary folder
and each side measures itself with its own copy of the same benches, one after the other,
in fresh processes (its own `src` on PYTHONPATH), on the same workloads:
  * bench/teacher_client.py --inprocess: the in-process teacher on 16 "step by step" prompts,
    greedy, up to 128 new tokens, at batch 16 (and batch 1), plus the HTTP client at
    concurrency 64 (N = 2,000) against a loopback server answering after 100 ms;
  * bench/teacher_client.py at concurrency 256 (N = 10,000);
  * bench/student.py: student generation at batch 32 (64 new tokens, no early stop) and
    LoRA / full training at batch 8 x 256 tokens.
The matmul peak (2048^2 and 4096^2, fp32 and bf16) is measured here, between the sides.
Fractions of peak use 2N FLOPs per generated token and 4N (LoRA) / 6N (full) per trained
token, N = the model's parameters. Ratios are new / old; run it on an otherwise idle
machine (two jobs on 2 cores distort both).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
from student import matmul_flops  # noqa: E402  (the same yardstick bench/student.py prints)

TEACHER = "qwen2.5-coder-0.5b-instruct"


def cpu_flags() -> set[str]:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return set()
    line = next((ln for ln in text.splitlines() if ln.startswith("flags")), "")
    return set(line.split(":", 1)[-1].split())


def teacher_params() -> int:
    """N of the offline teacher, from its config on the meta device (no weights read)."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    from undo.lm.models import resolve_model

    cfg = AutoConfig.from_pretrained(resolve_model(TEACHER).path)
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(cfg)
    return sum(p.numel() for p in model.parameters())


def export(commit: str, into: Path) -> Path:
    """The commit's src/ and bench/ in a folder of their own."""
    tree = into / commit
    tree.mkdir(parents=True)
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", commit, "src", "bench"],
                             check=True, capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", str(tree)], input=archive, check=True)
    return tree


def run(tree: Path, script: str, *args: str) -> str:
    env = {**os.environ, "PYTHONPATH": str(tree / "src"), "HF_HUB_OFFLINE": "1"}
    t0 = time.time()
    p = subprocess.run([sys.executable, str(tree / "bench" / script), *args], env=env,
                       capture_output=True, text=True)
    if p.returncode:
        sys.exit(f"{tree.name}: bench/{script} {' '.join(args)} failed:\n{p.stderr[-3000:]}")
    print(f"  {tree.name}: bench/{script} {' '.join(args)} ({time.time() - t0:.0f} s)", flush=True)
    return p.stdout


def _http_key(fig: dict[str, Any], concurrency: int) -> str:
    return f"{'floor' if fig['section'].startswith('floor') else 'http'}_{concurrency}"


def measure(tree: Path, quick: bool) -> dict[str, Any]:
    out: dict[str, Any] = {}
    n64, n256 = ("500", "2500") if quick else ("2000", "10000")
    for line in run(tree, "teacher_client.py", "--json", "--inprocess", "--n", n64).splitlines():
        fig = json.loads(line)
        if "batch16_tokens_per_s" in fig:
            out["teacher_b16"] = fig["batch16_tokens_per_s"]
            out["teacher_b1"] = fig["batch1_tokens_per_s"]
        else:
            out[_http_key(fig, 64)] = fig["overhead_pct"]
    for line in run(tree, "teacher_client.py", "--json", "--n", n256, "--concurrency", "256").splitlines():
        fig = json.loads(line)
        out[_http_key(fig, 256)] = fig["overhead_pct"]
    text = run(tree, "student.py", "--device", "cpu", *(["--quick"] if quick else []))
    patterns = {"student_params": r"model: ([\d.]+)M parameters",
                "student_b32": r"generation batch 32:\s+([\d.]+) new tokens/s",
                "train_lora": r"train lora batch \S+:\s+([\d.]+) tokens/s",
                "train_full": r"train full batch \S+:\s+([\d.]+) tokens/s"}
    for key, pattern in patterns.items():
        m = re.search(pattern, text)
        out[key] = float(m.group(1)) if m else None
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    ap.add_argument("--old", default="159411b", help="the baseline commit")
    ap.add_argument("--quick", action="store_true", help="smaller workloads (a smoke run, not the figures)")
    ap.add_argument("--json", type=Path, default=ROOT / "bench" / "results" / "speed.json")
    args = ap.parse_args()
    import torch

    flags = cpu_flags()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {os.cpu_count()} cores; "
          f"avx512_bf16 {'yes' if 'avx512_bf16' in flags else 'no'}, "
          f"amx_bf16 {'yes' if 'amx_bf16' in flags else 'no'}, "
          f"avx512_vnni {'yes' if 'avx512_vnni' in flags else 'no'}; "
          f"load average {os.getloadavg()[0]:.1f}", flush=True)
    sides: dict[str, dict[str, Any]] = {}
    peaks: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as tmp:
        old_tree = export(args.old, Path(tmp))
        head = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"],
                              check=True, capture_output=True, text=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(ROOT), "status", "--porcelain", "--untracked-files=no",
                                "src", "bench"], check=True, capture_output=True, text=True).stdout.strip()
        new_label = head + ("+changes" if dirty else "")
        sides["old"] = measure(old_tree, args.quick)
        for dtype in ("float32", "bfloat16"):
            for n in (2048, 4096):
                peaks[f"{dtype}_{n}"] = matmul_flops("cpu", n, dtype=dtype) / 1e9
        sides["new"] = measure(ROOT, args.quick)
    n_teacher = teacher_params()
    n_student = (sides["new"]["student_params"] or 0) * 1e6
    peak32 = max(peaks["float32_2048"], peaks["float32_4096"]) * 1e9
    peak16 = max(peaks["bfloat16_2048"], peaks["bfloat16_4096"]) * 1e9

    print(f"\nmatmul peak: fp32 {peaks['float32_2048']:.0f} / {peaks['float32_4096']:.0f} GFLOP/s, "
          f"bf16 {peaks['bfloat16_2048']:.0f} / {peaks['bfloat16_4096']:.0f} GFLOP/s (2048^2 / 4096^2)")
    rows = [  # key, what, unit, FLOPs per token (x N), N, target ratio (None: lower is better)
        ("teacher_b16", "teacher in process, batch 16", "tokens/s", 2, n_teacher, 2.5),
        ("teacher_b1", "teacher in process, batch 1", "tokens/s", 2, n_teacher, None),
        ("student_b32", "student generation, batch 32", "new tokens/s", 2, n_student, 2.0),
        ("train_lora", "student LoRA training, 8 x 256", "tokens/s", 4, n_student, 1.8),
        ("train_full", "student full training, 8 x 256", "tokens/s", 6, n_student, None),
        ("http_64", "HTTP client over ideal, concurrency 64", "%", 0, 0, None),
        ("floor_64", "raw-socket floor over ideal, concurrency 64", "%", 0, 0, None),
        ("http_256", "HTTP client over ideal, concurrency 256", "%", 0, 0, None),
        ("floor_256", "raw-socket floor over ideal, concurrency 256", "%", 0, 0, None),
    ]
    print(f"\n| figure | old ({args.old}) | new ({new_label}) | new / old | target | "
          "new, share of fp32 peak | new, share of bf16 peak |")
    print("|---|---|---|---|---|---|---|")
    for key, what, unit, per_token, n, target in rows:
        old, new = sides["old"].get(key), sides["new"].get(key)
        if old is None or new is None:
            print(f"| {what} | {old} | {new} | - | - | - | - |")
            continue
        if unit == "%":
            goal = "-" if key.startswith("floor") else "<= 5 %"
            print(f"| {what} | {old:.1f} % | {new:.1f} % | - | {goal} | - | - |")
            continue
        share = [f"{new * per_token * n / p:.1%}" for p in (peak32, peak16)]
        goal = f">= {target}x" if target else "-"
        print(f"| {what} | {old:.1f} {unit} | {new:.1f} {unit} | {new / old:.2f}x | {goal} | "
              f"{share[0]} | {share[1]} |")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps({"old": args.old, "new": new_label, "quick": args.quick,
                                     "peaks_gflops": peaks, "cpu_bf16": "avx512_bf16" in flags,
                                     "params": {"teacher": n_teacher, "student": n_student},
                                     "sides": sides}, indent=2) + "\n")
    print(f"\nwrote {args.json}")


if __name__ == "__main__":
    main()
