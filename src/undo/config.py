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
import types
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal, Union, get_args, get_origin

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic.fields import FieldInfo

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
    name: str = Field("svamp", description="the task: a registered name (gsm8k, svamp, commonsenseqa, "
                      "strategyqa, gym), or file for a data file of your own")
    source: str | None = Field(None, description="where the task's data is: a hub id, or a local file/folder "
                               "in the original format; None = the task's default")
    answer_type: str | None = Field(None, description="file tasks: a registered answer type that grades "
                                    "answers (number | choice | yesno | math); required there")
    fields: dict[str, str] = Field(
        default_factory=lambda: {"question": "question", "answer": "answer"},
        description="file tasks: the column of a row that holds each record field (question, answer, "
                    "and optionally choices, id)")
    # a test set of the user's own must not overlap task.source (undo/tasks/__init__.py checks)
    test_source: str | None = Field(None, description="where the test split comes from (hub id, file or "
                                    "folder); None = task.source (one file: a seeded test carve-out)")
    dataset: str | None = Field(None, description="gym tasks: the reasoning-gym dataset name")
    config: dict[str, Any] = Field(default_factory=dict, description="gym tasks: the dataset generator's "
                                   "options (difficulty); {} = its defaults")


class SplitsConfig(Section):
    train: Count | None = Field(700, description="train questions drawn from the pool; None = the whole pool "
                                "minus val")
    val: Count = Field(50, description="val questions held out of the pool: they pick the best iteration and "
                       "stop the loop")
    test: Count | None = Field(300, description="test questions scored at the end; None = the whole test split")


class VLLMConfig(Section):
    """Options of an in-process vLLM engine (backend=vllm); other backends ignore them.

    None of them changes what a greedy model writes, so all may change on resume."""

    RESUMABLE = frozenset({"tensor_parallel_size", "gpu_memory_utilization", "max_model_len",
                           "enable_lora", "max_lora_rank", "enforce_eager"})
    tensor_parallel_size: Count = Field(1, description="GPUs the engine splits the model over")
    # a teacher and a student engine whose shares sum over 1 never coexist (undo/lm/engines.py)
    gpu_memory_utilization: Annotated[float, Field(gt=0, le=1)] = Field(
        0.85, description="the share of each GPU's memory the engine takes (weights + KV cache) until released")
    max_model_len: Count | None = Field(None, description="the engine's context length in tokens; None = the "
                                        "model's own")
    # off, a LoRA student is refused: export it merged (`undo export-model`) and point the backend there
    enable_lora: bool = Field(True, description="serve each iteration's LoRA student on one engine "
                              "(a LoRARequest per call)")
    max_lora_rank: Count = Field(64, description="the largest LoRA rank the engine serves (at least "
                                 "student.lora.r)")
    enforce_eager: bool = Field(False, description="skip CUDA graph capture: faster start, slower decoding")


class OpenAIConfig(Section):
    """Where an OpenAI-compatible teacher is and how to talk to it (backend=openai).

    None of them changes what the teacher is asked, so all may change on resume."""

    RESUMABLE = frozenset({"base_url", "api_key_env", "concurrency", "timeout", "max_retries"})
    base_url: str | list[str] | None = Field(None, description="the server's URL (usually ending in /v1), or "
                                             "a list of replicas to load-balance over; required for openai")
    api_key_env: str | None = Field(None, description="the name of the environment variable holding the API "
                                    "key, never the key; None = no key (a local server)")
    concurrency: Count = Field(16, description="requests in flight at once, over all replicas")
    timeout: Positive = Field(120.0, description="seconds one attempt of a request may take")
    max_retries: NonNegative = Field(8, description="retries of a failed request before it counts as failed")


class TeacherConfig(Section):
    # batch_size too: in-process, each sampled row draws from its own seeded generator
    RESUMABLE = frozenset({"openai", "batch_size", "device", "price", "vllm"})
    backend: str = Field("auto", description="openai (any OpenAI-compatible server), or an in-process engine "
                         "of undo/lm/engines.py; auto = vllm on CUDA where vLLM imports, else transformers")
    model: str = Field("qwen2.5-coder-0.5b-instruct", description="the teacher model: a hub id, local folder "
                       "or offline name (for openai, the name the server serves)")
    openai: OpenAIConfig = Field(default_factory=OpenAIConfig, description="where an OpenAI-compatible teacher "
                                 "is and how to talk to it, for backend=openai")
    max_attempts: Count = Field(2, description="tries per question before it counts as unsolved: the first "
                                "greedy, the rest sampled")
    temperature: Annotated[float, Field(ge=0)] = Field(0.7, description="the sampling temperature of attempts "
                                                       "after the first (greedy) one")
    top_p: Annotated[float, Field(gt=0, le=1)] = Field(0.95, description="nucleus sampling: sampled attempts "
                                                       "draw from this share of the probability mass")
    max_tokens: Count = Field(512, description="the most tokens the teacher writes per answer")
    rationalize: bool = Field(True, description="questions still unsolved after max_attempts get one more "
                              "try with the gold answer as a hint (never refinements)")
    batch_size: Count = Field(16, description="questions per generation batch (in-process backends)")
    device: str | None = Field(None, description="in-process backends: cpu | cuda | auto; None = auto "
                               "(cuda, else mps, else cpu)")
    dtype: Dtype = Field(None, description="in-process backends: the torch dtype by name; None = the device's "
                         "best")
    vllm: VLLMConfig = Field(default_factory=VLLMConfig, description="options of an in-process vLLM engine "
                             "for backend=vllm")
    prompts: dict[str, str] = Field(default_factory=dict, description="prompt template overrides: name "
                                    "(explain | refine | rationalize) -> template path; {} = the shipped ones")
    few_shot: NonNegative = Field(0, description="worked examples shown as earlier chat turns before each "
                                  "request; 0 = zero-shot")
    # a 135M student imitates long LaTeX-laden explanations into rambling
    style: Literal["stepwise", "concise"] = Field("stepwise", description="rationale style: stepwise (chain "
                                                  "of thought) | concise (one equation per line, no prose)")
    price: dict[str, float] = Field(default_factory=dict, description="USD per 1M tokens, as {input: X, "
                                    "output: Y}; {} = no cost estimate")
    # sampling gets max_attempts + refine_samples - 1 tries per question
    refine_samples: Count = Field(1, description="distinct verified refined rationales kept per failed "
                                  "question (diverse reasoning)")
    history: bool = Field(True, description="show earlier refinements of the same question to the teacher")
    # the student's right answers reached through a false step count as errors to refine, too
    check_steps: bool = Field(True, description="a rationale's written calculations must hold, not only its "
                              "answer (undo/arithmetic.py)")
    # a small teacher copies the shown attempt instead of rewriting it (bench/RESULTS.md)
    show_attempt: bool = Field(True, description="refine prompts show the student's wrong attempt (the paper's "
                               "feedback) and its first false calculation")
    # a stronger teacher for the one step that must read the student's attempt, the cheaper one for the rest
    refine_model: str | None = Field(None, description="the model that writes refinements (same backend); "
                                     "None = teacher.model")
    # a worked example with one calculation slipped (the wrong attempt, its false step named)
    # answered by the same solution with that step in smaller steps (teacher/refine_examples.py)
    refine_examples: NonNegative = Field(0, description="refine worked examples shown before each refine "
                                         "request in place of the explain ones (at most few_shot)")

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
    r: Count = Field(16, description="the LoRA rank")
    alpha: Positive = Field(32, description="the LoRA alpha: updates are scaled by alpha / r")
    dropout: Annotated[float, Field(ge=0, lt=1)] = Field(0.0, description="dropout on the LoRA layers' input")
    target_modules: str | list[str] = Field("all-linear", description="the modules that get adapters: "
                                            "all-linear, or a list of module names")


class StudentConfig(Section):
    RESUMABLE = frozenset({"batch_size", "device", "vllm", "backend"})
    model: str = Field("smollm2-135m-instruct", description="the student model: a hub id, local folder or "
                       "offline name")
    lora: LoraConfig | None = Field(default_factory=LoraConfig, description="LoRA adapter settings; None = "
                                    "full fine-tuning")
    device: str | None = Field(None, description="cpu | cuda | auto; None = auto (cuda, else mps, else cpu)")
    dtype: Dtype = Field(None, description="the torch dtype by name; None = the device's best")
    max_new_tokens: Count = Field(320, description="the most tokens the student writes per answer")
    batch_size: Count = Field(32, description="questions per inference batch")
    backend: str = Field("auto", description="the inference engine registered in undo/lm/engines.py; auto = "
                         "vllm on CUDA with vLLM, else transformers")
    vllm: VLLMConfig = Field(default_factory=VLLMConfig, description="options of an in-process vLLM engine "
                             "for backend=vllm")


class TrainConfig(Section):
    # batch_size, grad_accum and num_processes may change together when their product, the
    # global batch the optimizer sees, stays the same (resume_diff checks the product)
    RESUMABLE = frozenset({"report_to", "logging_steps", "launcher", "accelerate_config",
                           "batch_size", "grad_accum", "num_processes", "save_steps"})
    epochs: Positive = Field(3.0, description="passes over the training set per iteration (fractions allowed)")
    # with loop.student_init=continue the student already knows iteration 0's data, so a
    # shorter pass on the new mix suffices
    refine_epochs: Positive | None = Field(None, description="epochs for iterations >= 1; None = epochs")
    max_steps: Annotated[int, Field(ge=-1)] = Field(-1, description="optimizer steps per training, overriding "
                                                    "epochs; -1 = epochs decide")
    lr: Positive = Field(2.0e-4, description="the peak learning rate")
    scheduler: str = Field("cosine", description="the learning-rate schedule, by transformers' name (cosine, "
                           "linear, constant, ...)")
    warmup_ratio: Annotated[float, Field(ge=0, lt=1)] = Field(0.03, description="the share of the steps that "
                                                              "warm the learning rate up")
    weight_decay: Annotated[float, Field(ge=0)] = Field(0.0, description="the optimizer's weight decay")
    batch_size: Count = Field(8, description="examples per forward pass on each process")
    grad_accum: Count = Field(1, description="forward passes accumulated per optimizer step")
    max_seq_len: Count = Field(1024, description="the most tokens per training example; longer ones are left "
                               "out, never truncated")
    seed: int | None = Field(None, description="the training seed; None = the run's seed")
    bf16: bool | None = Field(None, description="train in bfloat16 mixed precision; None = when the device "
                              "supports it")
    fp16: bool = Field(False, description="train in float16 mixed precision")
    gradient_checkpointing: bool = Field(False, description="recompute activations in the backward pass: less "
                                         "memory, slower steps")
    # off by default: with it CPU attention (and GPU sdpa) computes the whole row's T x T
    # block; measured slower on CPU (bench/train_speed.py). Worth it with flash-attention's varlen.
    padding_free: bool = Field(False, description="each batch as one row of its examples back to back (TRL's "
                               "padding_free): no pad token is computed")
    report_to: str | list[str] = Field("none", description="the experiment trackers to log to (wandb, "
                                       "tensorboard, ...), or none")
    logging_steps: Count = Field(5, description="log the training loss every N optimizer steps")
    # so a killed training resumes from the last one instead of from step 0
    save_steps: NonNegative = Field(500, description="a checkpoint (weights, optimizer, scheduler, RNG) every "
                                    "N optimizer steps, only the last kept; 0 = none")
    launcher: Literal["none", "accelerate", "torchrun"] = Field("none", description="how training starts: in "
                                                                "this process (none), or accelerate/torchrun")
    num_processes: Count = Field(1, description="training processes (one per GPU) the launcher starts")
    accelerate_config: str | None = Field(None, description="an accelerate config file for "
                                          "launcher=accelerate; None = accelerate's default")
    match_steps_of: str | None = Field(None, description="path of an UNDO run: train one-shot for its total "
                                       "optimizer steps; None = off")


class BudgetConfig(Section):
    """What the teacher may spend over the whole run (billed tokens, cached answers are free).
    Each teacher round is sized to fit what is left before it starts (undo/teacher/budget.py);
    raising a budget and resuming is how a run goes on, so both may change on resume."""

    RESUMABLE = frozenset({"teacher_tokens", "cost"})
    teacher_tokens: Count | None = Field(None, description="the most billed teacher tokens (prompt + "
                                         "completion) over the run; None = no limit")
    cost: Positive | None = Field(None, description="the most the teacher may cost over the run, in USD priced "
                                  "with teacher.price; None = no limit")

    @property
    def limited(self) -> bool:
        return self.teacher_tokens is not None or self.cost is not None


class LoopConfig(Section):
    RESUMABLE = frozenset({"max_iterations", "patience", "flow_train_eval", "budget", "min_delta"})
    method: Literal["undo", "oneshot"] = Field("undo", description="undo (train, diagnose, refine, repeat) or "
                                               "oneshot (the baseline: one training, no refinement)")
    max_iterations: NonNegative = Field(3, description="refinement iterations after the first training "
                                        "(iteration 0); 0 = none")
    patience: Count = Field(1, description="stop after this many iterations in a row without a val gain "
                            "above min_delta")
    mix: Literal["mix", "replace", "accumulate"] = Field("mix", description="the next training set: mix (the "
                                                         "student's correct traces + refined ones), replace "
                                                         "(teacher traces only) or accumulate (all so far)")
    student_init: Literal["base", "continue"] = Field("base", description="each iteration trains the base "
                                                      "student afresh, or continues the previous iteration's")
    # `repeat` (teacher.refine_samples copies) separates the teacher's new explanation from
    # more training on the failed questions plus the student's own correct traces
    refine: Literal["teacher", "repeat"] = Field("teacher", description=(
        "where the failed train questions' new explanations come from: teacher (UNDO: rewritten from the "
        "student's feedback) or repeat (the ablation: no teacher call, each gets its previous verified "
        "rationale again)"))
    val_errors_shown: NonNegative = Field(20, description="val answers, mistakes first, shown to the teacher "
                                          "in the refine prompt as the student's profile; 0 = none")
    eval_base: bool = Field(True, description="also score the untrained student (the comparison's first row)")
    flow_train_eval: bool = Field(True, description="after the loop the last student answers train too, so "
                                  "the learning flow knows whether its refined questions were fixed")
    budget: BudgetConfig = Field(default_factory=BudgetConfig, description="what the teacher may spend over "
                                 "the whole run")
    # patience counts the iterations that do not: 0.02 stops a loop whose gains are within noise
    min_delta: Annotated[float, Field(ge=0, lt=1)] = Field(0.0, description="an iteration counts as an "
                                                           "improvement only when val accuracy rises by more "
                                                           "than this (0.02 = 2 points)")


class OutputConfig(Section):
    RESUMABLE = frozenset({"dir"})
    dir: str = Field("runs", description="the folder that holds the run folders")


class RunConfig(Section):
    name: str = Field("undo-run", description="the run folder under output.dir (one folder name, not a path)")
    seed: NonNegative = Field(0, description="the run's seed: splits, sampling, and training unless train.seed")
    task: TaskConfig = Field(default_factory=TaskConfig, description="the task: its data and how answers "
                             "are graded")
    splits: SplitsConfig = Field(default_factory=SplitsConfig, description="how many questions train, val "
                                 "and test get")
    teacher: TeacherConfig = Field(default_factory=TeacherConfig, description="the model that writes and "
                                   "refines rationales, and how it is asked")
    student: StudentConfig = Field(default_factory=StudentConfig, description="the small model being "
                                   "trained, and how it answers")
    train: TrainConfig = Field(default_factory=TrainConfig, description="how the student is fine-tuned on "
                               "each iteration's rationales")
    loop: LoopConfig = Field(default_factory=LoopConfig, description="the UNDO loop: iterations, stopping, "
                             "how each training set is built, the teacher's budget")
    output: OutputConfig = Field(default_factory=OutputConfig, description="where run folders are written")

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


def _fields(model: type[BaseModel], prefix: str = "") -> Iterator[tuple[str, FieldInfo]]:
    """Every key of `model` as (dotted name, field), a section before its keys, in field order."""
    for name, field in model.model_fields.items():
        dotted = f"{prefix}{name}"
        yield dotted, field
        ann = field.annotation
        for sub in (ann, *getattr(ann, "__args__", ())):
            if isinstance(sub, type) and issubclass(sub, BaseModel):
                yield from _fields(sub, dotted + ".")


def _valid_keys(model: type[BaseModel], prefix: str = "") -> list[str]:
    return [key for key, _ in _fields(model, prefix)]


_BOUNDS = {"ge": ">=", "gt": ">", "le": "<=", "lt": "<"}


def _type_name(ann: Any, metadata: list[Any] | None = None) -> str:
    """A field's type in one word for `undo keys`: int>=1, 0<float<=1, stepwise|concise, str|None."""
    origin, args = get_origin(ann), get_args(ann)
    if ann is type(None):
        return "None"
    if origin is Annotated:  # an alias such as Count inside a union: its constraints ride along
        return _type_name(args[0], [m for a in args[1:] for m in getattr(a, "metadata", [a])])
    if origin in (Union, types.UnionType):
        return "|".join(_type_name(a) for a in args)
    if origin is Literal:
        return "|".join(str(a) for a in args)
    if origin is not None:
        return f"{origin.__name__}[{','.join(_type_name(a) for a in args)}]"
    if isinstance(ann, type) and issubclass(ann, BaseModel):
        return "section"
    name = getattr(ann, "__name__", str(ann))
    bounds = [(op, getattr(m, attr)) for m in metadata or []
              for attr, op in _BOUNDS.items() if hasattr(m, attr)]
    lower = [f"{v}{op.replace('>', '<')}" for op, v in bounds if op.startswith(">")]
    upper = [f"{op}{v}" for op, v in bounds if op.startswith("<")]
    if lower and upper:  # 0<float<=1
        return f"{lower[0]}{name}{upper[0]}"
    return name + "".join(f"{op}{v}" for op, v in bounds)


def _default_text(field: FieldInfo) -> str:
    """The default as a `key=value` override writes it: null, true, [a, b]; a section is {}."""
    value = field.get_default(call_default_factory=True)
    if isinstance(value, BaseModel):
        return "{}"
    text = yaml.safe_dump(value, default_flow_style=True, sort_keys=False, width=1 << 16)
    return text.removesuffix("\n...\n").strip()


def describe_keys(prefix: str = "") -> list[tuple[str, str, str, str]]:
    """(key, type, default, description) of every config key, or of `prefix` and the keys
    under it (`teacher.openai`); UserError naming an unknown prefix."""
    prefix = prefix.strip().rstrip(".")
    rows = [(key, _type_name(f.annotation, f.metadata), _default_text(f), f.description or "")
            for key, f in _fields(RunConfig) if not prefix or key == prefix or key.startswith(prefix + ".")]
    if not rows:
        raise UserError(_unknown_key_message(prefix))
    return rows


def _unknown_key_message(key: str) -> str:
    fields = dict(_fields(RunConfig))
    valid = list(fields)
    close = difflib.get_close_matches(key, valid, n=1, cutoff=0.6)
    if not close:  # a misspelt leaf under a right section: match the leaf alone
        leaf = key.rsplit(".", 1)[-1]
        section = key.rsplit(".", 1)[0] + "." if "." in key else ""
        cands = [k for k in valid if k.startswith(section)]
        close = difflib.get_close_matches(section + leaf, cands, n=1, cutoff=0.5)
    hint = f" (did you mean '{close[0]}': {fields[close[0]].description}?)" if close else ""
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
