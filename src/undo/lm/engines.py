"""Inference engines shared by teacher and student, and their lifecycle.

An engine holds one model's weights on a device and answers batches of chats. Engines
are registered data (`ENGINES`): adding one (SGLang, say) is one class here.

The pool keeps at most one engine per role ("teacher", "student") and reuses it for
every split, stage and iteration that asks for the same weights. A vLLM engine serving
LoRA students is built once per run: each iteration's adapter travels with the request
(`LoRARequest`), so a new student costs no new engine. Before training, the loop calls
`release_all()`: an engine's weights and GPU memory go back (vLLM holds its
`gpu_memory_utilization` share of the card until it is shut down), and the next request
builds it again. `POOL.built` and `POOL.released` count both, for tests and logs.
"""

from __future__ import annotations

import contextlib
import gc
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Protocol

from undo.errors import UserError
from undo.lm.generate import Generation, RowSampling, StopRule, generate_chat
from undo.lm.models import ResolvedModel, load_model, load_tokenizer, resolve_model

log = logging.getLogger(__name__)

ProgressFn = Callable[[int], None]


@dataclass(frozen=True)
class EngineSpec:
    """What an engine is asked to hold: a backend, a model spec and where/how to run it."""

    backend: str
    model: str  # a model spec: offline name, hub id, folder, or a saved (LoRA) student
    device: str | None = None
    dtype: str | None = None
    vllm: tuple[tuple[str, Any], ...] = ()  # VLLMConfig's items (hashable)

    @classmethod
    def of(cls, cfg: Any, model: str | None = None) -> EngineSpec:
        """From a StudentConfig or TeacherConfig (backend, model, device, dtype, vllm)."""
        return cls(resolve_backend(cfg.backend), model or cfg.model, cfg.device, cfg.dtype,
                   tuple(sorted(cfg.vllm.model_dump().items())))


class Engine(Protocol):
    name: ClassVar[str]
    gpu_share: float  # the fixed share of GPU memory it holds (vLLM), 0 = what it uses

    @staticmethod
    def rows_per_call(batch_size: int) -> int: ...  # how many rows one call should carry

    @staticmethod
    def share_wanted(spec: EngineSpec) -> float: ...  # the GPU share it will take, 0 = none fixed

    @staticmethod
    def serves_adapters(spec: EngineSpec) -> bool: ...  # a LoRA goes with each call, not in the weights

    @staticmethod
    def accepts(resolved: ResolvedModel, spec: EngineSpec) -> None: ...  # UserError if it cannot serve

    def generate(self, conversations: list[list[dict]], max_new_tokens: int,
                 sampling: list[RowSampling], *, adapter: str | None, batch_size: int,
                 stop: StopRule | None, progress: ProgressFn | None) -> list[Generation]: ...

    def release(self) -> None: ...


ENGINES: dict[str, type] = {}
AUTO = "auto"  # a backend name that picks an engine for the machine (resolve_backend)


def resolve_backend(name: str) -> str:
    """The engine `name` stands for: `auto` is vLLM on a CUDA machine where vLLM is
    importable (it schedules its own batches and holds a KV cache), else transformers."""
    if name != AUTO:
        return name
    import importlib.util

    import torch

    return "vllm" if torch.cuda.is_available() and importlib.util.find_spec("vllm") else "transformers"


def register_engine(name: str) -> Callable[[type], type]:
    def deco(cls: type) -> type:
        cls.name = name  # type: ignore[attr-defined]
        ENGINES[name] = cls
        return cls

    return deco


def _free_accelerator_memory() -> None:
    gc.collect()
    try:
        import torch
    except ImportError:
        return
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


@register_engine("transformers")
class TransformersEngine:
    """Our decode loop (undo/lm/generate.py) on a transformers model. An adapter is merged
    into the weights at load (models.load_model), so each student is its own engine."""

    gpu_share: float = 0.0  # takes what its weights need, no fixed share

    @staticmethod
    def serves_adapters(spec: EngineSpec) -> bool:
        return False  # merged into the weights instead

    @staticmethod
    def rows_per_call(batch_size: int) -> int:
        return batch_size * 4  # a few batches: length-sorted within, little padding

    @staticmethod
    def share_wanted(spec: EngineSpec) -> float:
        return 0.0

    def __init__(self, resolved: ResolvedModel, spec: EngineSpec) -> None:
        self.tokenizer = load_tokenizer(resolved)
        self.model = load_model(resolved, spec.device, spec.dtype).eval()

    @staticmethod
    def accepts(resolved: ResolvedModel, spec: EngineSpec) -> None:
        return None

    def generate(self, conversations: list[list[dict]], max_new_tokens: int,
                 sampling: list[RowSampling], *, adapter: str | None, batch_size: int,
                 stop: StopRule | None, progress: ProgressFn | None) -> list[Generation]:
        return generate_chat(self.model, self.tokenizer, conversations, max_new_tokens,
                             batch_size=batch_size, stop=stop,
                             progress=progress, sampling=sampling)

    def release(self) -> None:
        self.model = None
        self.tokenizer = None
        _free_accelerator_memory()


@register_engine("vllm")
class VLLMEngine:
    """vLLM's offline `LLM` (GPU; `pip install undo-distill[vllm]`). It schedules its own
    batches, so `batch_size` is not used; the answer-line cut is applied to the text after
    the fact (stop strings cannot express it). With `enable_lora`, LoRA students of one base
    share the engine: the adapter of the call goes with it as a LoRARequest."""

    def __init__(self, resolved: ResolvedModel, spec: EngineSpec) -> None:
        try:
            from vllm import LLM
        except ImportError:
            raise UserError("backend=vllm needs vLLM: pip install 'undo-distill[vllm]' (or serve "
                            "the teacher with `vllm serve` and use teacher.backend=openai)") from None
        opts = dict(spec.vllm)
        path = str(Path(resolved.path) / resolved.gguf_file) if resolved.gguf_file else resolved.path
        kw: dict[str, Any] = {
            "model": path,
            "dtype": spec.dtype or "auto",
            "tensor_parallel_size": opts["tensor_parallel_size"],
            "gpu_memory_utilization": opts["gpu_memory_utilization"],
            "max_model_len": opts["max_model_len"],
            "enforce_eager": opts["enforce_eager"],
        }
        if resolved.gguf_file:
            kw["tokenizer"] = resolved.path
        if opts["enable_lora"]:
            kw.update(enable_lora=True, max_lora_rank=opts["max_lora_rank"], max_loras=1)
        self._llm: Any = LLM(**kw)
        self.gpu_share = float(opts["gpu_memory_utilization"])
        self._adapters: dict[str, int] = {}  # adapter folder -> LoRA id (vLLM caches by id)

    @staticmethod
    def rows_per_call(batch_size: int) -> int:
        return 1024  # vLLM schedules its own batches: give it many rows at once

    @staticmethod
    def share_wanted(spec: EngineSpec) -> float:
        return float(dict(spec.vllm).get("gpu_memory_utilization", 0.9))

    @staticmethod
    def serves_adapters(spec: EngineSpec) -> bool:
        return bool(dict(spec.vllm).get("enable_lora", True))

    @staticmethod
    def accepts(resolved: ResolvedModel, spec: EngineSpec) -> None:
        if not resolved.adapter:
            return
        opts = dict(spec.vllm)
        if not opts.get("enable_lora", True):
            raise UserError(f"'{resolved.spec}' is a LoRA student and vllm.enable_lora is false: "
                            "set it true, or merge it with `undo export-model` and use that folder")
        rank = int(json.loads((Path(resolved.adapter) / "adapter_config.json").read_text())["r"])
        if rank > opts.get("max_lora_rank", 64):
            raise UserError(f"'{resolved.spec}' has LoRA rank {rank} > vllm.max_lora_rank="
                            f"{opts.get('max_lora_rank')}: raise vllm.max_lora_rank")

    def generate(self, conversations: list[list[dict]], max_new_tokens: int,
                 sampling: list[RowSampling], *, adapter: str | None, batch_size: int,
                 stop: StopRule | None, progress: ProgressFn | None) -> list[Generation]:
        from vllm import SamplingParams

        lora = None
        if adapter:
            from vllm.lora.request import LoRARequest

            lora_id = self._adapters.setdefault(adapter, len(self._adapters) + 1)
            lora = LoRARequest(f"student-{lora_id}", lora_id, adapter)
        params = [SamplingParams(temperature=s.temperature, top_p=s.top_p if s.temperature > 0 else 1.0,
                                 max_tokens=max_new_tokens,
                                 seed=s.seed if s.temperature > 0 else None)
                  for s in sampling]
        outs = self._llm.chat(conversations, params, lora_request=lora, use_tqdm=False)
        results = []
        for out in outs:
            c = out.outputs[0]
            text, reason = c.text, c.finish_reason or "stop"
            if stop is not None and (end := stop(text)) is not None:
                text, reason = text[:end], "answer"
            results.append(Generation(text.strip(), len(out.prompt_token_ids or []), len(c.token_ids),
                                      reason))
        if progress:
            progress(len(results))
        return results

    def release(self) -> None:
        llm, self._llm = self._llm, None
        if llm is None:
            return
        # vLLM >= 0.11 has LLM.shutdown(); older V1 engines stop through their engine core
        shutdown = getattr(llm, "shutdown", None) or getattr(
            getattr(getattr(llm, "llm_engine", None), "engine_core", None), "shutdown", None)
        if shutdown is not None:
            with contextlib.suppress(Exception):
                shutdown()
        del llm
        with contextlib.suppress(Exception):
            from vllm.distributed import destroy_distributed_environment, destroy_model_parallel

            destroy_model_parallel()
            destroy_distributed_environment()
        _free_accelerator_memory()


class EnginePool:
    """At most one engine per role, reused while the weights asked for stay the same."""

    def __init__(self) -> None:
        self._held: dict[str, tuple[tuple, Any]] = {}  # role -> (key, engine)
        self.events: list[tuple[str, str, str]] = []  # ("build" | "release", role, model)

    @property
    def built(self) -> int:
        return sum(e[0] == "build" for e in self.events)

    @property
    def released(self) -> int:
        return sum(e[0] == "release" for e in self.events)

    def get(self, role: str, spec: EngineSpec) -> tuple[Any, str | None]:
        """(engine, adapter to pass with each call) for `spec`, built only when needed."""
        cls = ENGINES.get(spec.backend)
        if cls is None:
            raise UserError(f"unknown inference backend '{spec.backend}' (known: {', '.join(ENGINES)})")
        resolved = resolve_model(spec.model)
        cls.accepts(resolved, spec)
        serves = cls.serves_adapters(spec)
        # the weights an engine holds: a served adapter is not part of them
        key = (spec.backend, resolved.path, resolved.gguf_file,
               None if serves else resolved.adapter, spec.device, spec.dtype, spec.vllm)
        held = self._held.get(role)
        if held is not None and held[0] == key:
            return held[1], resolved.adapter if serves else None
        if held is not None:
            self.release(role)  # this role's previous weights: free them before loading new ones
        self._make_room(role, spec)
        base = ResolvedModel(resolved.spec, resolved.path, resolved.gguf_file,
                             None if serves else resolved.adapter)
        engine = cls(base, spec)
        self.events.append(("build", role, spec.model))
        self._held[role] = (key, engine)
        return engine, resolved.adapter if serves else None

    def _make_room(self, role: str, spec: EngineSpec) -> None:
        """An engine with a fixed share of the GPU (vLLM) cannot start while others hold
        more than the rest: release them first (they are rebuilt when next asked for)."""
        want = ENGINES[spec.backend].share_wanted(spec)
        if want <= 0:
            return
        for other, (_, engine) in list(self._held.items()):
            if other != role and want + float(getattr(engine, "gpu_share", 0.0)) > 1.0:
                log.info("releasing the %s engine: the %s engine needs %.0f%% of the GPU",
                         other, role, 100 * want)
                self.release(other)

    def release(self, role: str) -> None:
        held = self._held.pop(role, None)
        if held is not None:
            held[1].release()
            self.events.append(("release", role, str(held[0][1])))

    def release_all(self) -> None:
        """Free every engine (before training: the trainer needs the memory)."""
        for role in list(self._held):
            self.release(role)

    def roles(self) -> list[str]:
        return list(self._held)


POOL = EnginePool()


def generate(role: str, spec: EngineSpec, conversations: list[list[dict]], max_new_tokens: int,
             sampling: list[RowSampling] | None = None, *, batch_size: int = 16,
             stop: StopRule | None = None, progress: ProgressFn | None = None) -> list[Generation]:
    """One reply per conversation from the pooled engine of `role` (greedy unless `sampling`)."""
    if not conversations:
        return []
    engine, adapter = POOL.get(role, spec)
    rows = sampling or [RowSampling()] * len(conversations)
    return engine.generate(conversations, max_new_tokens, rows, adapter=adapter,
                           batch_size=batch_size, stop=stop, progress=progress)


def release_all() -> None:
    POOL.release_all()
