"""The teacher in-process with transformers: the offline default, and small GPU setups."""

from __future__ import annotations

import json
import zlib
from typing import Any

from undo.config import TeacherConfig
from undo.models import load_model, load_tokenizer, resolve_model
from undo.teacher.base import (
    Completion,
    ProgressFn,
    Request,
    Usage,
    register_backend,
)


@register_backend("transformers")
class TransformersBackend:
    name = "transformers"

    def __init__(self, cfg: TeacherConfig) -> None:
        self.cfg = cfg
        self.model = cfg.model
        self._resolved = resolve_model(cfg.model)  # fails fast on a bad name or digest
        self._lm: Any = None
        self._tok: Any = None

    def _load(self) -> None:
        if self._lm is None:
            self._tok = load_tokenizer(self._resolved)
            self._lm = load_model(self._resolved, self.cfg.device, self.cfg.dtype).eval()

    def health_check(self) -> None:
        self._load()

    def complete(
        self,
        requests: list[Request],
        usage: Usage,
        progress: ProgressFn | None = None,
        on_result: Any = None,
    ) -> list[Completion]:
        self._load()
        out: list[Completion] = [Completion("")] * len(requests)
        # greedy and sampled requests share batches (each row samples on its own), so the
        # k samples of one refine prompt are prefilled once; only the length limit splits
        groups: dict[int, list[int]] = {}
        for i, r in enumerate(requests):
            groups.setdefault(r.sampling.max_tokens, []).append(i)
        chunk = self.cfg.batch_size * 4
        for max_tokens, group in groups.items():
            # length-sorted chunks: batches stay homogeneous, and each finished chunk is
            # handed to on_result (the cache) so a killed job loses at most one chunk
            group.sort(key=lambda i: (sum(len(m["content"]) for m in requests[i].messages),
                                      json.dumps(requests[i].messages)))
            for start in range(0, len(group), chunk):
                idx = group[start : start + chunk]
                self._run(idx, requests, max_tokens, out, usage, progress, on_result)
        return out

    def _run(
        self,
        idx: list[int],
        requests: list[Request],
        max_tokens: int,
        out: list[Completion],
        usage: Usage,
        progress: ProgressFn | None,
        on_result: Any,
    ) -> None:
        from undo.student.generate import generate_chat

        gens = generate_chat(
            self._lm,
            self._tok,
            [requests[i].messages for i in idx],
            max_new_tokens=max_tokens,
            batch_size=self.cfg.batch_size,
            stop_at_answer=True,
            progress=progress,
            sampling=[_row_sampling(requests[i]) for i in idx],
        )
        for i, g in zip(idx, gens, strict=True):
            c = Completion(g.text, g.prompt_tokens, g.completion_tokens, g.finish_reason)
            out[i] = c
            usage.add(c)
            if on_result is not None:
                on_result(i, c)


def _row_sampling(r: Request) -> Any:
    """A sampled request's seed is a function of its prompt and sample index: the same
    request draws the same text wherever it is batched, and sample 1 and 2 differ."""
    from undo.student.generate import RowSampling

    sp = r.sampling
    seed = zlib.crc32(f"{r.sample_index}\n{json.dumps(r.messages)}".encode())
    return RowSampling(sp.temperature, sp.top_p if sp.temperature > 0 else 1.0, seed)
