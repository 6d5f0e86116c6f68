"""The whole run's schema: one YAML file, every key overridable as `key=value`.

Unknown or misspelt keys are errors that name the key and the closest valid one,
because a silently ignored `loop.patiance: 3` wastes hours of GPU time.

This module is the schema only: it imports nothing of undo but `errors`. Values that must
name an entry of a registry (a task, an answer type, a backend, an engine, a prompt) are
checked by those registries' owners when a config is loaded (`undo.registries.load`).
"""

from __future__ import annotations

import difflib
import os
import re
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from undo.errors import UserError


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)
    # keys that may change when a run is resumed, because no result depends on them (where
    # to reach the teacher, how wide a batch, how long to go on); any other change is refused
    RESUMABLE: ClassVar[frozenset[str]] = frozenset()


# Value ranges, checked when the config loads: a bad value is one line naming its key
# before anything runs, never a traceback an hour in.
Count = Annotated[int, Field(ge=1)]  # sizes, batches, steps: at least one
NonNegative = Annotated[int, Field(ge=0)]
Positive = Annotated[float, Field(gt=0)]
# torch dtypes by name; None = the device's best (models.pick_dtype)
Dtype = Literal["float32", "bfloat16", "float16"] | None


class TaskConfig(Section):
    name: str = "svamp"
    # hub id (default for the task), or a local file/folder in the original format
    source: str | None = None
    # for `file` tasks: a registered answer type (number | choice | yesno | math)
    answer_type: str | None = None
    fields: dict[str, str] = Field(default_factory=lambda: {"question": "question", "answer": "answer"})
    # which split of the source feeds train/val and which feeds test (file tasks
    # with one file get a seeded test carve-out instead)
    test_source: str | None = None
    # for `gym` tasks: the reasoning-gym dataset name and its generator options (difficulty)
    dataset: str | None = None
    config: dict[str, Any] = Field(default_factory=dict)



class SplitsConfig(Section):
    train: Count | None = 700  # None = the whole pool minus val
    val: Count = 50
    test: Count | None = 300  # None = the whole test split


class VLLMConfig(Section):
    """Options of an in-process vLLM engine (backend=vllm); other backends ignore them.

    None of them changes what a greedy model writes, so all may change on resume."""

    RESUMABLE = frozenset({"tensor_parallel_size", "gpu_memory_utilization", "max_model_len",
                           "enable_lora", "max_lora_rank", "enforce_eager"})
    tensor_parallel_size: Count = 1
    # the share of each GPU's memory the engine takes (weights + KV cache) until released;
    # a teacher and a student engine whose shares sum over 1 never coexist (undo/lm/engines.py)
    gpu_memory_utilization: Annotated[float, Field(gt=0, le=1)] = 0.85
    max_model_len: Count | None = None  # None = the model's own context length
    # serve each iteration's LoRA student on one engine (a LoRARequest per call); off, a LoRA
    # student is refused: export it merged (`undo export-model`) and point the backend there
    enable_lora: bool = True
    max_lora_rank: Count = 64
    enforce_eager: bool = False  # skip CUDA graph capture: faster start, slower decoding


class OpenAIConfig(Section):
    """Where an OpenAI-compatible teacher is and how to talk to it (backend=openai).

    None of them changes what the teacher is asked, so all may change on resume."""

    RESUMABLE = frozenset({"base_url", "api_key_env", "concurrency", "timeout", "max_retries"})
    base_url: str | list[str] | None = None  # a list: replicas, load-balanced
    api_key_env: str | None = None  # the name of the variable holding the key, never the key
    concurrency: Count = 16
    timeout: Positive = 120.0  # seconds per attempt
    max_retries: NonNegative = 8


class TeacherConfig(Section):
    # batch_size too: in-process, each sampled row draws from its own seeded generator
    RESUMABLE = frozenset({"openai", "batch_size", "device", "price", "vllm"})
    # openai (any OpenAI-compatible server), or in-process on an engine of undo/lm/engines.py:
    # auto = vllm on a CUDA machine where vLLM is importable, else transformers
    backend: str = "auto"
    model: str = "qwen2.5-coder-0.5b-instruct"
    openai: OpenAIConfig = Field(default_factory=OpenAIConfig)  # backend=openai
    max_attempts: Count = 2
    temperature: Annotated[float, Field(ge=0)] = 0.7
    top_p: Annotated[float, Field(gt=0, le=1)] = 0.95
    max_tokens: Count = 512
    rationalize: bool = True
    batch_size: Count = 16  # in-process backends
    device: str | None = None  # in-process backends: cpu | cuda | auto
    dtype: Dtype = None
    vllm: VLLMConfig = Field(default_factory=VLLMConfig)  # backend=vllm
    prompts: dict[str, str] = Field(default_factory=dict)  # name -> template path override
    few_shot: NonNegative = 0
    # rationale style: stepwise (chain of thought) | concise (one equation per line, no prose):
    # a 135M student imitates long LaTeX-laden explanations into rambling
    style: Literal["stepwise", "concise"] = "stepwise"
    # USD per 1M tokens; {} = no cost estimate
    price: dict[str, float] = Field(default_factory=dict)
    # distinct verified refined rationales kept per failed question (diverse reasoning);
    # sampling gets max_attempts + refine_samples - 1 tries per question
    refine_samples: Count = 1
    history: bool = True  # show earlier refinements of the same question to the teacher
    # a rationale's written calculations must hold, not only its answer (undo/arithmetic.py); the
    # student's right answers reached through a false step count as errors to refine, too
    check_steps: bool = True
    # refine prompts show the student's wrong attempt (the paper's feedback) and its first
    # false calculation; a small teacher copies the attempt instead (bench/RESULTS.md)
    show_attempt: bool = True
    # the model that writes refinements, when not `model` (same backend): a stronger teacher
    # for the one step that must read the student's attempt, the cheaper one for the rest
    refine_model: str | None = None
    # refine worked examples shown before each refine request in place of the explain ones:
    # a worked example with one calculation slipped (the wrong attempt, its false step named)
    # answered by the same solution with that step in smaller steps (teacher/refine_examples.py)
    refine_examples: NonNegative = 0

    @model_validator(mode="after")
    def _refine_examples_need_attempts(self) -> TeacherConfig:
        if self.refine_examples and not self.show_attempt:
            raise ValueError("refine_examples shows a wrong attempt in each example: it needs "
                             "teacher.show_attempt=true")
        if self.refine_examples > self.few_shot:
            raise ValueError(f"refine_examples ({self.refine_examples}) are made from the worked "
                             f"examples: at most teacher.few_shot ({self.few_shot})")
        return self

    @model_validator(mode="before")
    @classmethod
    def _flat_openai_keys(cls, data: Any) -> Any:
        """Run folders written before the openai section keep resuming: their flat
        teacher.base_url etc. are read into teacher.openai."""
        if isinstance(data, dict) and any(k in data for k in OpenAIConfig.RESUMABLE):
            data = dict(data)
            section = dict(data.get("openai") or {})
            for key in OpenAIConfig.RESUMABLE & data.keys():
                section.setdefault(key, data.pop(key))
            data["openai"] = section
        return data

    @field_validator("price")
    @classmethod
    def _known_prices(cls, v: dict[str, float]) -> dict[str, float]:
        for name, usd in v.items():
            if name not in ("input", "output"):
                raise ValueError(f"unknown price '{name}'; known: input, output (USD per 1M tokens)")
            if usd < 0:
                raise ValueError(f"price '{name}' must be >= 0")
        return v


class LoraConfig(Section):
    r: Count = 16
    alpha: Positive = 32
    dropout: Annotated[float, Field(ge=0, lt=1)] = 0.0
    target_modules: str | list[str] = "all-linear"


class StudentConfig(Section):
    RESUMABLE = frozenset({"batch_size", "device", "vllm", "backend"})
    model: str = "smollm2-135m-instruct"
    lora: LoraConfig | None = Field(default_factory=LoraConfig)
    device: str | None = None
    dtype: Dtype = None
    max_new_tokens: Count = 320
    batch_size: Count = 32  # inference
    # inference engine registered in undo/lm/engines.py; auto = vllm on CUDA with vLLM, else transformers
    backend: str = "auto"
    vllm: VLLMConfig = Field(default_factory=VLLMConfig)  # backend=vllm


class TrainConfig(Section):
    # batch_size, grad_accum and num_processes may change together when their product, the
    # global batch the optimizer sees, stays the same (resume_diff checks the product)
    RESUMABLE = frozenset({"report_to", "logging_steps", "launcher", "accelerate_config",
                           "batch_size", "grad_accum", "num_processes", "save_steps"})
    epochs: Positive = 3.0
    # epochs for iterations >= 1; None = epochs. With loop.student_init=continue the student
    # already knows iteration 0's data, so a shorter pass on the new mix suffices
    refine_epochs: Positive | None = None
    max_steps: Annotated[int, Field(ge=-1)] = -1  # -1 = epochs decide
    lr: Positive = 2.0e-4
    scheduler: str = "cosine"
    warmup_ratio: Annotated[float, Field(ge=0, lt=1)] = 0.03
    weight_decay: Annotated[float, Field(ge=0)] = 0.0
    batch_size: Count = 8
    grad_accum: Count = 1
    max_seq_len: Count = 1024
    seed: int | None = None  # None = the run's seed
    bf16: bool | None = None  # None = when the device supports it
    fp16: bool = False
    gradient_checkpointing: bool = False
    # each batch as one row of its examples back to back (TRL's padding_free): no pad token is
    # computed. Off by default: CPU attention (and GPU sdpa) then computes the whole row's T x T
    # block; measured slower on CPU (bench/train_speed.py). Worth it with flash-attention's varlen.
    padding_free: bool = False
    report_to: str | list[str] = "none"
    logging_steps: Count = 5
    # a checkpoint (weights, optimizer, scheduler, RNG) every N optimizer steps, so a killed
    # training resumes from the last one instead of from step 0; 0 = none. Only the last is kept
    save_steps: NonNegative = 500
    launcher: Literal["none", "accelerate", "torchrun"] = "none"
    num_processes: Count = 1
    accelerate_config: str | None = None
    match_steps_of: str | None = None  # path of an UNDO run: train one-shot for its total steps


class BudgetConfig(Section):
    """What the teacher may spend over the whole run (billed tokens, cached answers are free).
    Each teacher round is sized to fit what is left before it starts (undo/teacher/budget.py);
    raising a budget and resuming is how a run goes on, so both may change on resume."""

    RESUMABLE = frozenset({"teacher_tokens", "cost"})
    teacher_tokens: Count | None = None  # prompt + completion tokens
    cost: Positive | None = None  # USD, priced with teacher.price

    @property
    def limited(self) -> bool:
        return self.teacher_tokens is not None or self.cost is not None


class LoopConfig(Section):
    RESUMABLE = frozenset({"max_iterations", "patience", "flow_train_eval", "budget", "min_delta"})
    method: Literal["undo", "oneshot"] = "undo"
    max_iterations: NonNegative = 3
    patience: Count = 1
    mix: Literal["mix", "replace", "accumulate"] = "mix"
    student_init: Literal["base", "continue"] = "base"
    # where an iteration's explanations of the failed train questions come from: `teacher`
    # (UNDO: the teacher rewrites them from the student's feedback) or `repeat` (the ablation:
    # no teacher call, each failed question gets its previous verified rationale again,
    # teacher.refine_samples copies), which separates the teacher's new explanation from
    # more training on the failed questions plus the student's own correct traces
    refine: Literal["teacher", "repeat"] = "teacher"
    val_errors_shown: NonNegative = 20
    eval_base: bool = True  # also score the untrained student (the comparison's first row)
    # after the loop the last student answers train too (where the next iteration's diagnosis
    # would go), so the learning flow knows whether its refined questions were fixed
    flow_train_eval: bool = True
    budget: BudgetConfig = Field(default_factory=BudgetConfig)
    # an iteration counts as an improvement only when val accuracy rises by more than this
    # (patience counts the others): 0.02 stops a loop whose gains are within noise
    min_delta: Annotated[float, Field(ge=0, lt=1)] = 0.0


class OutputConfig(Section):
    RESUMABLE = frozenset({"dir"})
    dir: str = "runs"


class RunConfig(Section):
    name: str = "undo-run"  # the run folder under output.dir
    seed: NonNegative = 0
    task: TaskConfig = Field(default_factory=TaskConfig)
    splits: SplitsConfig = Field(default_factory=SplitsConfig)
    teacher: TeacherConfig = Field(default_factory=TeacherConfig)
    student: StudentConfig = Field(default_factory=StudentConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    loop: LoopConfig = Field(default_factory=LoopConfig)
    output: OutputConfig = Field(default_factory=OutputConfig)

    @model_validator(mode="after")
    def _budget_has_a_price(self) -> RunConfig:
        if self.loop.budget.cost is not None and not self.teacher.price:
            raise ValueError("loop.budget.cost needs teacher.price (USD per 1M input/output tokens)")
        return self

    @field_validator("name")
    @classmethod
    def _folder_name(cls, v: str) -> str:
        # one folder name: a run never writes outside output.dir
        if not re.fullmatch(r"[A-Za-z0-9_][A-Za-z0-9._-]{0,127}", v):
            raise ValueError("must be one folder name (letters, digits, '.', '_', '-'), not a path")
        return v

    @property
    def run_dir(self) -> Path:
        return Path(self.output.dir) / self.name

    def train_seed(self) -> int:
        return self.seed if self.train.seed is None else self.train.seed


def resume_diff(saved: RunConfig, current: RunConfig) -> list[str]:
    """Keys whose change would make a resumed run mix results of two configs."""
    diff = [f"{name}.{key}" for name, section in current if isinstance(section, Section)
            for key in type(section).model_fields
            if key not in section.RESUMABLE and getattr(getattr(saved, name), key) != getattr(section, key)]
    diff += [k for k in ("name", "seed") if getattr(saved, k) != getattr(current, k)]

    def global_batch(t: TrainConfig) -> int:
        return t.batch_size * t.grad_accum * t.num_processes

    if global_batch(saved.train) != global_batch(current.train):
        diff.append(f"train.batch_size x grad_accum x num_processes ({global_batch(saved.train)} -> "
                    f"{global_batch(current.train)}; keep the product to change the layout)")
    return diff


def _valid_keys(model: type[BaseModel], prefix: str = "") -> list[str]:
    keys: list[str] = []
    for name, field in model.model_fields.items():
        dotted = f"{prefix}{name}"
        keys.append(dotted)
        ann = field.annotation
        for sub in (ann, *getattr(ann, "__args__", ())):
            if isinstance(sub, type) and issubclass(sub, BaseModel):
                keys.extend(_valid_keys(sub, dotted + "."))
    return keys


def _unknown_key_message(key: str) -> str:
    valid = _valid_keys(RunConfig)
    close = difflib.get_close_matches(key, valid, n=1, cutoff=0.6)
    if not close:  # a misspelt leaf under a right section: match the leaf alone
        leaf = key.rsplit(".", 1)[-1]
        section = key.rsplit(".", 1)[0] + "." if "." in key else ""
        cands = [k for k in valid if k.startswith(section)]
        close = difflib.get_close_matches(section + leaf, cands, n=1, cutoff=0.5)
    hint = f" (did you mean '{close[0]}'?)" if close else ""
    return f"unknown config key '{key}'{hint}"


def _format_validation_error(err: ValidationError, origin: str) -> str:
    first = err.errors()[0]
    key = ".".join(str(p) for p in first["loc"])
    if first["type"] == "extra_forbidden":
        return f"{origin}: {_unknown_key_message(key)}"
    msg = first["msg"].removeprefix("Value error, ")  # pydantic's prefix for our own checks
    if not key:  # a check across sections: its message names the keys
        return f"{origin}: {msg}"
    return f"{origin}: config key '{key}': {msg} (got {first.get('input')!r})"


def parse_value(text: str) -> Any:
    """`key=value` values are YAML scalars/lists: 3, 0.5, true, null, [a, b]."""
    try:
        return yaml.safe_load(text) if text != "" else ""
    except yaml.YAMLError:
        return text


def apply_override(data: dict[str, Any], dotted: str, value: Any) -> None:
    parts = dotted.split(".")
    node = data
    for part in parts[:-1]:
        if not isinstance(node.get(part), dict):
            node[part] = {}
        node = node[part]
    node[parts[-1]] = value


def parse_overrides(items: list[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for item in items:
        if "=" not in item:
            raise UserError(f"override '{item}' is not of the form key=value (e.g. loop.patience=2)")
        key, _, value = item.partition("=")
        key = key.strip()
        if key not in _valid_keys(RunConfig) and not key.startswith(
            ("task.fields.", "task.config.", "teacher.prompts.", "teacher.price.")
        ):
            raise UserError(_unknown_key_message(key))
        out[key] = parse_value(value)
    return out


def shipped_configs() -> dict[str, Path]:
    """The ready-to-run YAML files inside the package, by name (`undo run gsm8k`)."""
    from importlib.resources import files

    folder = Path(str(files("undo") / "configs"))
    return {p.stem: p for p in sorted(folder.glob("*.yaml"))}


def config_path(spec: str | os.PathLike[str]) -> Path:
    """A YAML file, or the name of a shipped config: a pip user has no configs/ folder."""
    p = Path(spec)
    if p.is_file():
        return p
    shipped = shipped_configs()
    if str(spec) in shipped and not p.exists():
        return shipped[str(spec)]
    raise UserError(f"config file not found: {p} (shipped configs by name: {', '.join(shipped)})")


def load_config(
    path: str | os.PathLike[str] | None = None,
    overrides: list[str] | None = None,
    base: dict[str, Any] | None = None,
) -> RunConfig:
    data: dict[str, Any] = dict(base or {})
    origin = "config"
    if path is not None:
        p = config_path(path)
        origin = str(p)
        try:
            loaded = yaml.safe_load(p.read_text()) or {}
        except yaml.YAMLError as e:
            raise UserError(f"{p}: not valid YAML: {e}") from None
        if not isinstance(loaded, dict):
            raise UserError(f"{p}: the top level must be a mapping of sections")
        data.update(loaded)
    for key, value in parse_overrides(overrides or []).items():
        apply_override(data, key, value)
    try:
        return RunConfig.model_validate(data)
    except ValidationError as e:
        raise UserError(_format_validation_error(e, origin)) from None


def redact_url(url: str) -> str:
    """A URL with any password in it replaced by ***: user:secret@host is a credential."""
    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.netloc.rsplit("@", 1)[1]
    return urlunsplit(parts._replace(netloc=f"{parts.username}:***@{host}"))


def config_to_yaml(cfg: RunConfig) -> str:
    """The resolved config. Secrets never appear: keys are stored as env-var names, and a
    password inside teacher.openai.base_url is masked."""
    data = cfg.model_dump(mode="json")
    openai = data["teacher"]["openai"]
    urls = openai["base_url"]
    if isinstance(urls, list):
        openai["base_url"] = [redact_url(u) for u in urls]
    elif urls is not None:
        openai["base_url"] = redact_url(urls)
    return yaml.safe_dump(data, sort_keys=False)
