"""`undo export-model`: a run's student as one ordinary model folder.

A LoRA student is merged into full weights (what `vllm serve`, TGI, llama.cpp converters
and `from_pretrained` without PEFT expect); a fully fine-tuned one is copied. The folder
holds safetensors, the tokenizer with its chat template, and a model card naming the
teacher, the task, the method and the accuracy measured on the run's own splits.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from undo.errors import UserError
from undo.runstore import RunStore, read_json

_MADE_BY = "undo_export.json"  # marks a folder this command wrote (it may replace it)


def export_model(run_dir: Path, out: Path, iteration: int | None = None,
                 dtype: str | None = None) -> dict[str, Any]:
    """Merge iteration K's student (default: the run's best by val) into `out`."""
    from undo.config import load_config

    run_dir = Path(run_dir)
    if not (run_dir / "config.yaml").exists():
        raise UserError(f"{run_dir}: not an undo run folder (no config.yaml)")
    cfg = load_config(run_dir / "config.yaml")
    store = RunStore(run_dir)
    if iteration is None:
        if not (run_dir / "summary.json").exists():
            raise UserError(f"{run_dir}: unfinished run; pass --iteration K")
        iteration = int(read_json(run_dir / "summary.json")["best_iteration"])
    student = store.path(iteration, "student")
    if not (student / "train_result.json").exists():
        raise UserError(f"{student}: no trained student (iteration {iteration} has not finished training)")
    metrics_file = store.path(iteration, "metrics.json")
    metrics = read_json(metrics_file) if metrics_file.exists() else {}
    info = {
        "run": str(run_dir.resolve()), "iteration": iteration, "student_base": cfg.student.model,
        "teacher": cfg.teacher.model, "method": cfg.loop.method, "task": cfg.task.name,
        "dataset": cfg.task.dataset or cfg.task.source, "seed": cfg.seed,
        "val_acc": metrics.get("val_acc"), "val_n": metrics.get("val_n"),
        "test_acc": metrics.get("test_acc"), "test_n": metrics.get("test_n"),
    }
    merge_student(student, Path(out), info, dtype)
    return {"out": str(out), **info}


def merge_student(student: Path, out: Path, info: dict[str, Any], dtype: str | None = None) -> None:
    """Write `student` (LoRA folder or full weights) merged into `out`, atomically."""
    from undo.lm.models import load_model, load_tokenizer, quiet_deprecations, resolve_model

    out = Path(out)
    if out.is_file() or (out.is_dir() and any(out.iterdir()) and not (out / _MADE_BY).exists()):
        raise UserError(f"{out} exists and was not written by undo export-model; choose another --out")
    import torch

    resolved = resolve_model(str(student))
    with quiet_deprecations():  # merged in float32, then cast: a bf16 merge would round twice
        model = load_model(resolved, device="cpu", dtype="float32")
    model = model.to(getattr(torch, dtype or _saved_dtype(resolved.path)))
    tokenizer = load_tokenizer(resolved)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}-"))
    tmp.chmod(0o755)
    try:
        model.save_pretrained(tmp)  # safetensors
        tokenizer.save_pretrained(tmp)  # with the chat template the student was trained on
        (tmp / "README.md").write_text(model_card(info | {"merged_lora": bool(resolved.adapter)}))
        (tmp / _MADE_BY).write_text(json.dumps(info, indent=2) + "\n")
        old = out.parent / f".{out.name}.old"
        shutil.rmtree(old, ignore_errors=True)
        if out.exists():
            os.replace(out, old)
        os.replace(tmp, out)
        shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _saved_dtype(base_path: str) -> str:
    """The base model's own dtype (bf16 for most hub models), so the export is not twice its size;
    float32 where the config does not say (the offline models, converted from GGUF)."""
    cfg_file = Path(base_path) / "config.json"
    if cfg_file.exists():
        cfg = json.loads(cfg_file.read_text())
        name = cfg.get("dtype") or cfg.get("torch_dtype")
        if name in ("float32", "bfloat16", "float16"):
            return name
    return "float32"


def _pct(x: float | None) -> str:
    return "n/a" if x is None else f"{100 * x:.1f} %"


def model_card(info: dict[str, Any]) -> str:
    base = info["student_base"]
    front = ["---", "library_name: transformers", "pipeline_tag: text-generation",
             "tags: [undo, distillation, reasoning]"]
    if "/" in str(base) and not str(base).startswith(("/", ".")):
        front.append(f"base_model: {base}")
    front.append("---")
    lines = [
        *front, "",
        f"# {Path(str(base)).name} distilled with UNDO",
        "",
        f"A student model distilled from the teacher **{info['teacher']}** with undo "
        f"(method `{info['method']}`, iteration {info['iteration']}; UNDO: Understanding Distillation "
        "as Optimization, arXiv 2504.02521).",
        "",
        "| | |", "| --- | --- |",
        f"| student base | {base} |",
        f"| teacher | {info['teacher']} |",
        f"| task | {info['task']}{' / ' + str(info['dataset']) if info.get('dataset') else ''} |",
        f"| val accuracy | {_pct(info.get('val_acc'))} (n={info.get('val_n')}) |",
        f"| test accuracy | {_pct(info.get('test_acc'))} (n={info.get('test_n')}) |",
        f"| LoRA merged | {'yes' if info.get('merged_lora') else 'no (full fine-tune)'} |",
        f"| run seed | {info.get('seed')} |",
        "",
        "Accuracies are greedy, on the run's own held-out questions, graded by undo's answer "
        "checker: the student answers with its reasoning and a final line `The answer is X.`",
        "",
        "```python",
        "from transformers import AutoModelForCausalLM, AutoTokenizer",
        "tok = AutoTokenizer.from_pretrained(PATH)",
        "model = AutoModelForCausalLM.from_pretrained(PATH)",
        "```",
        "",
        "Or serve it: `vllm serve PATH`.",
        "",
    ]
    return "\n".join(lines)
