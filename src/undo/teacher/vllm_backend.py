"""The teacher in-process with vLLM (GPU users; `pip install undo-distill[vllm]`).

For a teacher on another box, run `vllm serve` and use the `openai` backend instead.
"""

from __future__ import annotations

from typing import Any

from undo.config import TeacherConfig
from undo.errors import UserError
from undo.teacher.base import Completion, ProgressFn, Request, Usage, register_backend


@register_backend("vllm")
class VLLMBackend:
    name = "vllm"

    def __init__(self, cfg: TeacherConfig) -> None:
        try:
            import vllm  # noqa: F401
        except ImportError:
            raise UserError(
                "teacher.backend=vllm needs vLLM: pip install 'undo-distill[vllm]' "
                "(or serve the model with `vllm serve` and use teacher.backend=openai)"
            ) from None
        self.cfg = cfg
        self.model = cfg.model
        self._llm: Any = None

    def health_check(self) -> None:
        if self._llm is None:
            from vllm import LLM

            from undo.models import resolve_model

            resolved = resolve_model(self.model)
            kw = {"tokenizer": resolved.path} if resolved.gguf_file else {}
            path = f"{resolved.path}/{resolved.gguf_file}" if resolved.gguf_file else resolved.path
            self._llm = LLM(model=path, dtype=self.cfg.dtype or "auto", **kw)

    def complete(
        self, requests: list[Request], usage: Usage, progress: ProgressFn | None = None,
        on_result: Any = None,
    ) -> list[Completion]:
        from vllm import SamplingParams

        self.health_check()
        params = [
            SamplingParams(temperature=r.sampling.temperature, top_p=r.sampling.top_p,
                           max_tokens=r.sampling.max_tokens,
                           seed=r.sample_index if r.sampling.temperature > 0 else None)
            for r in requests
        ]
        outs = self._llm.chat([r.messages for r in requests], params, use_tqdm=False)
        results = []
        for i, o in enumerate(outs):
            gen = o.outputs[0]
            c = Completion(gen.text, len(o.prompt_token_ids or []), len(gen.token_ids),
                           gen.finish_reason)
            usage.add(c)
            results.append(c)
            if on_result is not None:
                on_result(i, c)
        if progress is not None:
            progress(len(results))
        return results
