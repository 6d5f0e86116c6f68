"""`undo export-model` and `undo export`: a run's student, or its distilled training set,
as one ordinary folder that other tools load.

A LoRA student is merged into full weights (what `vllm serve`, TGI, llama.cpp converters
and `from_pretrained` without PEFT expect); a fully fine-tuned one is copied. The folder
holds safetensors, the tokenizer with its chat template, and a model card naming the
teacher, the task, the method and the accuracy measured on the run's own splits.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from undo.errors import UserError
from undo.rows import IterationMetrics, RationaleRow, TrainRow
from undo.runstore import (
    RunStore,
    read_jsonl,
    read_metrics,
    read_rationale_rows,
    read_train_rows,
    swap_dir,
    train_result_file,
)

_MADE_BY = "undo_export.json"  # marks a folder an export wrote (an export may replace it)


@contextlib.contextmanager
def _export_folder(out: Path, command: str, info: dict[str, Any]) -> Iterator[Path]:
    """A temporary sibling of `out` to fill; once filled it is stamped with `info` and swapped
    into place, so a killed export never leaves half a folder. `out` must be absent, empty,
    or an earlier export: anything else is refused before any work."""
    if out.is_file() or (out.is_dir() and any(out.iterdir()) and not (out / _MADE_BY).exists()):
        raise UserError(f"{out} exists and was not written by undo {command}; choose another --out")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}-"))
    tmp.chmod(0o755)  # mkdtemp makes it private; the export is for others to read
    try:
        yield tmp
        (tmp / _MADE_BY).write_text(json.dumps(info, indent=2) + "\n")
        swap_dir(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def export_model(run_dir: Path, out: Path, iteration: int | None = None,
                 dtype: str | None = None) -> dict[str, Any]:
    """Merge iteration K's student (default: the run's best by val) into `out`."""
    from undo.config import load_config

    run_dir = Path(run_dir)
    store = RunStore(run_dir)
    cfg = load_config(store.config_file())
    if iteration is None:
        iteration = store.best_iteration()
    student = store.student_dir(iteration)
    if not train_result_file(student).exists():
        raise UserError(f"{student}: no trained student (iteration {iteration} has not finished training)")
    metrics_file = store.metrics_file(iteration)
    metrics: IterationMetrics = read_metrics(metrics_file) if metrics_file.exists() else {}
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
    import torch

    from undo.lm.models import load_model, load_tokenizer, quiet_deprecations, resolve_model

    with _export_folder(Path(out), "export-model", info) as tmp:
        resolved = resolve_model(str(student))
        with quiet_deprecations():  # merged in float32, then cast: a bf16 merge would round twice
            model = load_model(resolved, device="cpu", dtype="float32")
        model = model.to(getattr(torch, dtype or _saved_dtype(resolved.path)))
        model.save_pretrained(tmp)  # safetensors
        load_tokenizer(resolved).save_pretrained(tmp)  # with the chat template it was trained on
        (tmp / "README.md").write_text(model_card(info | {"merged_lora": bool(resolved.adapter)}))


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


# ---- the distilled dataset ------------------------------------------------------------


def export_dataset(run_dir: Path, out: Path, iteration: int | str | None = None,
                   push_to_hub: str | None = None) -> dict[str, Any]:
    """Iteration K's training set (default: the best by val) as a Hugging Face DatasetDict:
    `out/hf` (save_to_disk), `out/data/train-00000-of-00001.parquet`, `out/README.md` (card)."""
    import datasets
    import yaml

    from undo.config import config_to_yaml, load_config

    run_dir = Path(run_dir)
    store = RunStore(run_dir)
    cfg = load_config(store.config_file())
    k = store.best_iteration() if iteration in (None, "best") else int(iteration)
    data_file = store.train_data_file(k)
    if not data_file.exists():
        raise UserError(f"{data_file}: not found (iteration {k} has no training set)")
    out = Path(out)
    rows = _dataset_rows(store, k, cfg.teacher.model)
    if not rows:
        raise UserError(f"{data_file}: empty training set; nothing to export")
    ds = datasets.DatasetDict({"train": datasets.Dataset.from_list(rows)})
    metrics = [read_metrics(store.metrics_file(j)) for j in store.iterations()
               if store.metrics_file(j).exists()]
    info = {"run": str(run_dir.resolve()), "iteration": k, "rows": len(rows), "teacher": cfg.teacher.model,
            "student": cfg.student.model, "method": cfg.loop.method, "task": cfg.task.name,
            "dataset": cfg.task.dataset or cfg.task.source}
    with _export_folder(out, "export", info) as tmp:
        bars_were_on = datasets.is_progress_bar_enabled()
        datasets.disable_progress_bars()
        try:
            ds.save_to_disk(str(tmp / "hf"))
            (tmp / "data").mkdir()
            ds["train"].to_parquet(str(tmp / "data" / "train-00000-of-00001.parquet"))
        finally:
            if bars_were_on:
                datasets.enable_progress_bars()
        (tmp / "README.md").write_text(dataset_card(info, metrics, config_to_yaml(cfg), yaml))
    if push_to_hub:
        _push(out, push_to_hub)
        info["pushed_to"] = push_to_hub
    return {"out": str(out), **info}


def _dataset_rows(store: RunStore, k: int, teacher: str) -> list[dict[str, Any]]:
    """Iteration k's training rows with their answer, where each was written and its verdict."""
    gold = {str(r["id"]): r for r in read_jsonl(store.split_file("train"))}
    # the teacher's verdict and attempt count for each question, from the iteration that wrote it
    teacher_rows: dict[tuple[int, str], RationaleRow] = {}
    for j in range(k + 1):
        path = store.rationales_file(j)
        if path.exists():
            for t_row in read_rationale_rows(path):
                teacher_rows[(j, str(t_row["id"]))] = t_row
    rows = []
    for row in read_train_rows(store.train_data_file(k)):
        qid = str(row["id"])
        made_in = _origin(teacher_rows, qid, row, k)
        t = teacher_rows.get((made_in, qid), {}) if made_in is not None else {}
        rows.append({
            "id": qid, "question": row["question"], "rationale": row["rationale"],
            "answer": str(gold.get(qid, {}).get("answer", "")), "source": row["source"],
            "iteration": k, "written_in_iteration": made_in if row["source"] != "student" else k,
            "verdict": "student_correct" if row["source"] == "student" else t.get("verdict", "verified"),
            "teacher": teacher if row["source"] != "student" else None,
            "teacher_attempts": len(t.get("attempts") or []) if row["source"] != "student" else 0,
        })
    return rows


def _origin(teacher_rows: dict[tuple[int, str], RationaleRow], qid: str, row: TrainRow,
            k: int) -> int | None:
    """The iteration whose teacher stage wrote this row's rationale (latest first)."""
    for j in range(k, -1, -1):
        t = teacher_rows.get((j, qid))
        if t and row["rationale"] in ([t.get("rationale")] + list(t.get("rationales") or [])):
            return j
    return None


def _push(out: Path, repo: str) -> None:
    try:
        from huggingface_hub import HfApi

        api = HfApi()
        api.create_repo(repo, repo_type="dataset", exist_ok=True)
        api.upload_folder(folder_path=str(out), repo_id=repo, repo_type="dataset",
                          allow_patterns=["README.md", "data/*"])
    except Exception as e:  # no hub, no token, no rights: the local export stands
        raise UserError(f"--push-to-hub {repo}: {type(e).__name__}: {str(e).splitlines()[0][:200]} "
                        f"(the dataset is saved in {out})") from None


def dataset_card(info: dict[str, Any], metrics: list[IterationMetrics], config_yaml: str, yaml: Any) -> str:
    n = info["rows"]
    size = "n<1K" if n < 1000 else "1K<n<10K" if n < 10_000 else "10K<n<100K"
    front = {
        "license": "other",  # placeholder: the source data's and the teacher's terms apply
        "task_categories": ["text-generation"],
        "language": ["en"],
        "size_categories": [size],
        "tags": ["undo", "distillation", "rationales", "reasoning"],
        "configs": [{"config_name": "default",
                     "data_files": [{"split": "train", "path": "data/train-*.parquet"}]}],
    }
    acc = ["| iteration | val | test | train examples |", "| --- | --- | --- | --- |"]
    acc += [f"| {m.get('iteration')} | {_pct(m.get('val_acc'))} | {_pct(m.get('test_acc'))} | "
            f"{m.get('train_examples', '')} |" for m in metrics]
    return "\n".join([
        "---", yaml.safe_dump(front, sort_keys=False).rstrip(), "---", "",
        f"# Rationales distilled with UNDO: {info['task']}"
        + (f" / {info['dataset']}" if info.get("dataset") else ""), "",
        f"{n} training examples from iteration {info['iteration']} of an undo run (method "
        f"`{info['method']}`): teacher **{info['teacher']}**, student **{info['student']}**. Each row "
        "is a question, a rationale ending in `The answer is X.`, the gold answer, and where the "
        "rationale came from: `teacher` (verified against gold), `refined` (the teacher's rewrite "
        "for a question the student got wrong, verified), or `student` (the student's own correct "
        "trace).", "",
        "Fields: id, question, rationale, answer, source, iteration, written_in_iteration, verdict, "
        "teacher, teacher_attempts.", "",
        "License: set this to the terms of the source dataset and of the teacher model's outputs.", "",
        "## The student's accuracy per iteration (greedy, the run's own splits)", "", *acc, "",
        "## The exact config", "", "```yaml", config_yaml.rstrip(), "```", "",
    ])
