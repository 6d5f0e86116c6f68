"""Supervised fine-tuning of the student on rationales (TRL SFTTrainer, optional LoRA).

A training example is one JSON object:

    {"id": "svamp-12", "prompt": "<the user message>", "completion": "<rationale + answer line>"}

`prompt` may also be a list of chat messages (e.g. with a system turn). It becomes
TRL's conversational prompt-completion format, so the loss covers the assistant
turn only: the rationale, its answer line and the end-of-turn token.

The student folder is written to a temporary sibling and renamed into place, so a
killed training never leaves a half-written student behind. Every `train.save_steps`
the sibling gets a checkpoint; a training started again on the same examples with the
same settings resumes from the last complete one (`_resume_point`).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from undo.config import StudentConfig, TrainConfig
from undo.errors import UserError
from undo.lm.models import quiet_deprecations
from undo.runstore import swap_dir, train_result_file
from undo.tasks.base import Record, student_messages

log = logging.getLogger(__name__)


@dataclass
class TrainResult:
    steps: int
    final_loss: float | None
    first_loss: float | None
    losses: list[float]  # one per logging step
    loss_steps: list[int]
    tokens_per_s: float  # all tokens the model read (prompt + completion), all processes
    wall_s: float  # load + train + save
    train_s: float  # the optimisation loop alone
    dropped: list[str]  # ids of examples longer than max_seq_len (not trained on)
    n_examples: int  # examples trained on
    num_tokens: int
    num_processes: int
    distributed: str = "NO"  # accelerate's DistributedType: NO | MULTI_GPU | MULTI_CPU | FSDP | DEEPSPEED

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def make_example(record: Record, rationale: str) -> dict[str, Any]:
    """A training example: the exact user message the student sees, then the rationale."""
    return {
        "id": record.id,
        "prompt": student_messages(record)[0]["content"],
        "completion": rationale.strip(),
    }


def _conversation(example: dict[str, Any]) -> dict[str, list[dict[str, str]]]:
    try:
        prompt, completion = example["prompt"], example["completion"]
    except KeyError as e:
        raise UserError(f"training example {example.get('id', '?')}: missing key {e}") from None
    msgs = [{"role": "user", "content": prompt}] if isinstance(prompt, str) else list(prompt)
    return {"prompt": msgs, "completion": [{"role": "assistant", "content": completion}]}


def _token_length(tokenizer: Any, conv: dict[str, list[dict[str, str]]]) -> int:
    # the same call TRL makes, so our count is its count
    ids = tokenizer.apply_chat_template(
        conv["prompt"] + conv["completion"], tokenize=True, return_dict=True
    )["input_ids"]
    return len(ids)


@dataclass
class _Init:
    model: Any
    tokenizer: Any
    peft_config: Any  # a fresh LoRA to add, or None
    base_spec: str | None  # what undo_base.txt records (LoRA students only)


def _spec_for_file(spec: str) -> str:
    """A local folder is recorded as an absolute path: a relative one breaks from another cwd."""
    return str(Path(spec).resolve()) if Path(spec).exists() else spec


def _load_init(init_spec: str, student: StudentConfig, device: str) -> _Init:
    from undo.lm.models import load_model, load_tokenizer, resolve_model

    resolved = resolve_model(init_spec)
    # Full fine-tuning keeps fp32 master weights (bf16 autocast does the speed-up);
    # a frozen LoRA base may sit in bf16 on a GPU that supports it.
    dtype = student.dtype
    if dtype is None:
        dtype = "float32"
        if student.lora is not None and device == "cuda":
            import torch

            dtype = "bfloat16" if torch.cuda.is_bf16_supported() else "float32"
    tokenizer = load_tokenizer(resolved)
    if resolved.adapter and student.lora is not None:
        # `continue`: keep training the saved adapter (its own r/alpha/targets win)
        model = load_model(resolved, device="cpu", dtype=dtype, trainable_adapter=True)
        base = (Path(resolved.adapter) / "undo_base.txt").read_text().strip()
        return _Init(model, tokenizer, None, base)
    # (full fine-tuning from a LoRA student starts from it with the adapter folded in,
    # which load_model does for any adapter it is not asked to keep training)
    model = load_model(resolved, device="cpu", dtype=dtype)
    if student.lora is None:
        return _Init(model, tokenizer, None, None)
    from peft import LoraConfig

    lora = student.lora
    peft_config = LoraConfig(
        r=lora.r,
        lora_alpha=lora.alpha,
        lora_dropout=lora.dropout,
        target_modules=lora.target_modules,
        task_type="CAUSAL_LM",
    )
    return _Init(model, tokenizer, peft_config, _spec_for_file(init_spec))


def _use_bf16(train: TrainConfig, device: str) -> bool:
    if device != "cuda":
        return False  # measured slower than fp32 on this kind of CPU (no AMX); never on CPU
    if train.bf16 is None:
        import torch

        return bool(torch.cuda.is_bf16_supported()) and not train.fp16
    return train.bf16


def _sft_config(train: TrainConfig, seed: int, output_dir: Path, device: str) -> Any:
    from trl import SFTConfig

    return SFTConfig(
        output_dir=str(output_dir),
        num_train_epochs=train.epochs,
        max_steps=train.max_steps,
        learning_rate=train.lr,
        lr_scheduler_type=train.scheduler,
        warmup_steps=train.warmup_ratio,  # a float < 1 is a ratio of the total steps
        weight_decay=train.weight_decay,
        per_device_train_batch_size=train.batch_size,
        gradient_accumulation_steps=train.grad_accum,
        # _prepare already drops examples over max_seq_len (truncation would cut the answer
        # off); TRL refuses a max_length it cannot enforce without packing
        max_length=None if train.padding_free else train.max_seq_len,
        padding_free=train.padding_free,
        seed=seed,
        data_seed=seed,
        bf16=_use_bf16(train, device),
        fp16=train.fp16 and device == "cuda",
        report_to=train.report_to,
        logging_steps=train.logging_steps,
        logging_first_step=True,  # first_loss is the loss before any update
        # the student folder is written once, at the end; checkpoints only make a kill cheap
        save_strategy="steps" if train.save_steps else "no",
        save_steps=train.save_steps or 500,
        save_total_limit=1,  # the older one goes only once the newer is complete
        use_cpu=device == "cpu",
        disable_tqdm=True,  # our own bar, or silence
        dataloader_pin_memory=device == "cuda",
        completion_only_loss=True,
        **_checkpointing(train.gradient_checkpointing),
    )


def _checkpointing(on: bool) -> dict[str, bool]:
    """TRL defaults this to True; ours is False. transformers 5.x renamed the field."""
    from trl import SFTConfig

    if "activation_checkpointing" in SFTConfig.__dataclass_fields__:
        return {"activation_checkpointing": on}
    return {"gradient_checkpointing": on}


def _progress_callback() -> Any:
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )
    from transformers import TrainerCallback

    class RichProgress(TrainerCallback):
        """step/total, loss, tokens/s and ETA on one line (main process only)."""

        def __init__(self) -> None:
            self.bar: Progress | None = None
            self.task: Any = None
            self.start = 0.0

        def on_train_begin(self, args, state, control, **kw):  # type: ignore[no-untyped-def]
            if not state.is_world_process_zero:
                return
            self.bar = Progress(
                TextColumn("train"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("loss {task.fields[loss]}  {task.fields[tps]} tok/s"),
                TimeElapsedColumn(),
                TimeRemainingColumn(),
            )
            self.bar.start()
            self.task = self.bar.add_task("train", total=state.max_steps, loss="-", tps="-")
            self.start = time.perf_counter()

        def on_step_end(self, args, state, control, **kw):  # type: ignore[no-untyped-def]
            if self.bar is not None:
                self.bar.update(self.task, completed=state.global_step)

        def on_log(self, args, state, control, logs=None, **kw):  # type: ignore[no-untyped-def]
            if self.bar is None or not logs:
                return
            fields: dict[str, str] = {}
            if "loss" in logs:
                fields["loss"] = f"{logs['loss']:.4f}"
            if "num_tokens" in logs:
                elapsed = max(time.perf_counter() - self.start, 1e-9)
                fields["tps"] = f"{logs['num_tokens'] / elapsed:.0f}"
            if fields:
                self.bar.update(self.task, **fields)

        def on_train_end(self, args, state, control, **kw):  # type: ignore[no-untyped-def]
            if self.bar is not None:
                self.bar.stop()
                self.bar = None

    return RichProgress()


def _plain_loss_trainer() -> Any:
    """SFTTrainer with its own loss, computed only where there is something to learn.

    TRL patches a chunked log-prob kernel into the model: a GPU memory saver that also
    computes per-token entropy for its logs. Without Triton its torch fallback took 40% of
    every CPU step here (profiled: 34 of 81 s). The model's own loss would instead project
    every position onto the vocabulary, prompt included, though only completion tokens are
    targets (prompt labels are -100): the student's prompt is ~3/4 of each example, and the
    49k-wide logits and their softmax are a fifth of the step's work. So the LM head runs
    only at positions whose next token is a target (`logits_to_keep` as a boolean mask);
    the loss is the same token-mean NLL over the same labels."""
    import torch
    from trl import SFTTrainer

    class PlainLossSFTTrainer(SFTTrainer):
        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):  # type: ignore[no-untyped-def]
            inputs = dict(inputs)
            labels = inputs.pop("labels")
            keep = torch.zeros_like(labels, dtype=torch.bool)
            keep[:, :-1] = labels[:, 1:] != -100  # position p predicts token p + 1
            targets = labels[:, 1:][keep[:, :-1]]
            outputs = model(**inputs, use_cache=False, logits_to_keep=keep)
            logits = outputs.logits.reshape(-1, outputs.logits.shape[-1])
            loss = torch.nn.functional.cross_entropy(logits.float(), targets, reduction="sum")
            loss = loss / (num_items_in_batch if num_items_in_batch is not None else max(len(targets), 1))
            if model.training:  # the token count TRL would log: tokens/s and the progress bar use it
                mask = inputs.get("attention_mask")
                seen = mask.sum() if mask is not None else torch.tensor(labels.numel(), device=labels.device)
                self._total_train_tokens += self.accelerator.gather_for_metrics(seen).sum().item()
                self._metrics["train"]["num_tokens"] = [self._total_train_tokens]
            if self.args.average_tokens_across_devices and num_items_in_batch is not None:
                loss = loss * self.accelerator.num_processes  # as Trainer.compute_loss: DDP averages
            return (loss, outputs) if return_outputs else loss

    return PlainLossSFTTrainer


def _prepare(
    examples: list[dict[str, Any]], tokenizer: Any, max_seq_len: int
) -> tuple[list[dict[str, Any]], list[str], int]:
    """Conversations that fit, the ids of those that do not, and the kept token count."""
    kept, dropped, tokens = [], [], 0
    for i, ex in enumerate(examples):
        conv = _conversation(ex)
        n = _token_length(tokenizer, conv)
        if n > max_seq_len:
            # truncating would cut the answer line off: the student would learn to stop mid-answer
            dropped.append(str(ex.get("id", i)))
        else:
            kept.append(conv)
            tokens += n
    return kept, dropped, tokens


CHECKPOINT = "checkpoint"  # transformers' PREFIX_CHECKPOINT_DIR
FINGERPRINT = "undo_fingerprint.txt"
# keys that cannot change what is trained: a checkpoint stays good across them
_NOT_IN_FINGERPRINT = {"report_to", "logging_steps", "launcher", "accelerate_config", "save_steps"}


def _fingerprint(kept: list[dict[str, Any]], student: StudentConfig, train: TrainConfig, seed: int,
                 init_spec: str) -> str:
    """What a checkpoint was made from: the examples, the student, the settings, the seed."""
    what = {"examples": kept, "student": student.model_dump(mode="json"),
            "train": train.model_dump(mode="json", exclude=_NOT_IN_FINGERPRINT),
            "seed": seed, "init": _spec_for_file(init_spec)}
    return hashlib.sha256(json.dumps(what, sort_keys=True).encode()).hexdigest()


def _resume_point(tmp: Path, fingerprint: str) -> Path | None:
    """The last complete checkpoint of a killed training of the same thing, if any.
    transformers writes trainer_state.json last, so a checkpoint without it was cut short."""
    try:
        if (tmp / FINGERPRINT).read_text().strip() != fingerprint:
            return None
    except OSError:
        return None
    done = [c for c in tmp.glob(f"{CHECKPOINT}-*") if (c / "trainer_state.json").is_file()]
    return max(done, key=lambda c: int(c.name.rsplit("-", 1)[1]), default=None)


def _prepare_tmp(tmp: Path, fingerprint: str, resume_from: Path | None) -> None:
    """Rank 0: keep only the checkpoint training resumes from, or start tmp afresh."""
    if resume_from is None:
        shutil.rmtree(tmp, ignore_errors=True)  # another training's leftovers
        tmp.mkdir(parents=True)
        (tmp / FINGERPRINT).write_text(fingerprint + "\n")
        return
    for c in tmp.glob(f"{CHECKPOINT}-*"):
        if c != resume_from:  # one cut short by the kill
            shutil.rmtree(c)


def train_student(
    examples: list[dict[str, Any]],
    out_dir: Path,
    student: StudentConfig,
    train: TrainConfig,
    seed: int,
    init_from: str | None = None,
    progress: bool = True,
) -> TrainResult:
    """Fine-tune `init_from` (default: student.model) on `examples`; save to `out_dir`.

    LoRA when student.lora is set, full fine-tuning when it is None. `init_from`
    may be a previous LoRA student folder: its adapter is trained further. Under
    torchrun/accelerate every process calls this; only the main one writes.
    """
    from undo.lm.models import pick_device

    t0 = time.perf_counter()
    out_dir = Path(out_dir)
    # the new student replaces out_dir at the end: never a folder that is not an undo student
    if out_dir.is_file() or (out_dir.is_dir() and any(out_dir.iterdir())
                             and not train_result_file(out_dir).exists()):
        raise UserError(f"{out_dir} exists and is not an undo student folder; "
                        "it would be replaced: choose another --out")
    device = pick_device(student.device)
    init_spec = init_from or student.model
    with quiet_deprecations():
        init = _load_init(init_spec, student, device)
    kept, dropped = _fitting(examples, init.tokenizer, train.max_seq_len)

    tmp = out_dir.parent / f".{out_dir.name}.tmp"
    rank0 = int(os.environ.get("RANK", "0")) == 0
    fingerprint = _fingerprint(kept, student, train, seed, init_spec)
    resume_from = _resume_point(tmp, fingerprint)  # every rank reads before rank 0 changes tmp

    trainer = _trainer(init, kept, _sft_config(train, seed, tmp, device), device)
    trainer.accelerator.wait_for_everyone()
    if rank0:
        _prepare_tmp(tmp, fingerprint, resume_from)
    trainer.accelerator.wait_for_everyone()
    _own_progress(trainer, progress)

    if resume_from is not None:
        log.info("training resumes from %s of a killed run", resume_from.name)
    t1 = time.perf_counter()
    with quiet_deprecations():
        trainer.train(resume_from_checkpoint=str(resume_from) if resume_from else None)
    train_s = time.perf_counter() - t1

    result = _result(trainer, train_s, dropped, len(kept))
    with quiet_deprecations():
        # every process takes part: under FSDP / DeepSpeed ZeRO-3 the trainer's own save path
        # gathers the sharded weights (rank 0 alone would write a partial or empty student);
        # an adapter only for a PeftModel, full weights otherwise
        trainer.save_model(str(tmp))
    if trainer.is_world_process_zero():
        _finish(init, tmp, out_dir, student, train, seed, init_spec, result, t0)
    result.wall_s = time.perf_counter() - t0
    return result


def _own_progress(trainer: Any, progress: bool) -> None:
    """Our progress bar (step, loss, tokens/s) instead of the trainer's printer and tqdm bar."""
    from transformers import PrinterCallback, ProgressCallback

    trainer.remove_callback(PrinterCallback)  # it prints raw log dicts when tqdm is off
    trainer.remove_callback(ProgressCallback)
    if progress:
        trainer.add_callback(_progress_callback())


def _fitting(examples: list[dict[str, Any]], tokenizer: Any, max_seq_len: int) -> tuple[list[dict], list[str]]:
    """(the examples that fit max_seq_len, tokenized; the ids of those dropped, with a warning)."""
    kept, dropped, _ = _prepare(examples, tokenizer, max_seq_len)
    if dropped:
        log.warning(
            "%d of %d training examples exceed max_seq_len=%d tokens and are dropped: %s",
            len(dropped), len(examples), max_seq_len, ", ".join(dropped[:20]),
        )
    if not kept:
        raise UserError(
            f"no training example fits in train.max_seq_len={max_seq_len} tokens "
            f"({len(examples)} given)"
        )
    return kept, dropped


def _trainer(init: Any, kept: list[dict[str, Any]], args: Any, device: str) -> Any:
    """TRL's SFTTrainer (on CPU our plain-loss subclass of it) over the kept examples."""
    import datasets
    from trl import SFTTrainer

    bars_were_on = datasets.is_progress_bar_enabled()
    datasets.disable_progress_bars()  # tokenizing a few hundred rows needs no bar
    try:
        with quiet_deprecations():
            trainer_class = _plain_loss_trainer() if device == "cpu" else SFTTrainer
            return trainer_class(
                model=init.model,
                args=args,
                train_dataset=datasets.Dataset.from_list(kept),
                processing_class=init.tokenizer,
                peft_config=init.peft_config,
            )
    finally:
        if bars_were_on:
            datasets.enable_progress_bars()


def _result(trainer: Any, train_s: float, dropped: list[str], n_examples: int) -> TrainResult:
    """What the trainer's log history says of the training (wall_s is set by the caller)."""
    history = trainer.state.log_history
    logged = [(h["step"], float(h["loss"])) for h in history if "loss" in h]
    num_tokens = int(max((h.get("num_tokens", 0) for h in history), default=0))
    kind = trainer.accelerator.distributed_type
    return TrainResult(
        steps=trainer.state.global_step,
        final_loss=logged[-1][1] if logged else None,
        first_loss=logged[0][1] if logged else None,
        losses=[v for _, v in logged],
        loss_steps=[s for s, _ in logged],
        tokens_per_s=num_tokens / train_s if train_s > 0 else 0.0,
        wall_s=0.0,
        train_s=train_s,
        dropped=dropped,
        n_examples=n_examples,
        num_tokens=num_tokens,
        num_processes=trainer.args.world_size,
        distributed=str(getattr(kind, "value", kind)),
    )


def _finish(
    init: _Init,
    tmp: Path,
    out_dir: Path,
    student: StudentConfig,
    train: TrainConfig,
    seed: int,
    init_spec: str,
    result: TrainResult,
    t0: float,
) -> None:
    """Rank 0, after the weights are saved: tokenizer, provenance, then the atomic swap."""
    for checkpoint in tmp.glob(f"{CHECKPOINT}-*"):
        shutil.rmtree(checkpoint)
    (tmp / FINGERPRINT).unlink(missing_ok=True)
    init.tokenizer.save_pretrained(str(tmp))
    (tmp / "training_args.bin").unlink(missing_ok=True)  # a pickle nobody should load
    if init.base_spec is not None:
        (tmp / "undo_base.txt").write_text(init.base_spec + "\n")
    (tmp / "train_config.json").write_text(
        json.dumps(
            {
                "student": student.model_dump(mode="json"),
                "train": train.model_dump(mode="json"),
                "seed": seed,
                "init_from": _spec_for_file(init_spec),
            },
            indent=2,
        )
    )
    result.wall_s = time.perf_counter() - t0
    train_result_file(tmp).write_text(json.dumps(result.to_dict(), indent=2))
    swap_dir(tmp, out_dir)


def read_examples(path: Path) -> list[dict[str, Any]]:
    """Training examples from a JSONL file (one example per line)."""
    rows = []
    with Path(path).open() as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as e:
                raise UserError(f"{path}:{n}: not valid JSON: {e.msg}") from None
    return rows

