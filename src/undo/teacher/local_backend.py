"""The teacher in-process, on a registered inference engine (undo/lm/engines.py):
transformers (the offline default, small GPU setups) or vLLM (a GPU box).

For a teacher on another machine, run `vllm serve` there and use teacher.backend=openai.
"""

from __future__ import annotations

import json
import zlib
from typing import Any

from undo.config import TeacherConfig
from undo.grading import answer_line_end
from undo.lm import engines
from undo.lm.engines import AUTO, ENGINES, EngineSpec
from undo.lm.generate import RowSampling
from undo.lm.models import resolve_model
from undo.teacher.base import Completion, ProgressFn, Request, Usage, register_backend


class LocalBackend:
    """Requests answered by the pooled "teacher" engine of `cfg.backend` (`auto`: resolved)."""

    def __init__(self, cfg: TeacherConfig) -> None:
        self.cfg = cfg
        self.model = cfg.model
        resolve_model(cfg.model)  # fails fast on a bad name or digest
        self._spec = EngineSpec.of(cfg)
        self.name = self._spec.backend  # the engine's own name (`auto` resolved) keys the cache

    def health_check(self) -> None:
        engines.POOL.get("teacher", self._spec)  # loads the model: a bad one fails here

    def complete(
        self,
        requests: list[Request],
        usage: Usage,
        progress: ProgressFn | None = None,
        on_result: Any = None,
    ) -> list[Completion]:
        out: list[Completion] = [Completion("")] * len(requests)
        # greedy and sampled requests share batches (each row samples on its own), so the
        # k samples of one refine prompt are prefilled once; only the length limit splits
        groups: dict[int, list[int]] = {}
        for i, r in enumerate(requests):
            groups.setdefault(r.sampling.max_tokens, []).append(i)
        chunk = ENGINES[self.name].rows_per_call(self.cfg.batch_size)
        for max_tokens, group in groups.items():
            # length-sorted chunks: batches stay homogeneous, and each finished chunk is
            # handed to on_result (the cache) so a killed job loses at most one chunk
            group.sort(key=lambda i: (sum(len(m["content"]) for m in requests[i].messages),
                                      json.dumps(requests[i].messages)))
            for start in range(0, len(group), chunk):
                idx = group[start : start + chunk]
                gens = engines.generate(
                    "teacher", self._spec, [requests[i].messages for i in idx], max_tokens,
                    [_row_sampling(requests[i]) for i in idx], batch_size=self.cfg.batch_size,
                    stop=answer_line_end, progress=progress)
                for i, g in zip(idx, gens, strict=True):
                    c = Completion(g.text, g.prompt_tokens, g.completion_tokens, g.finish_reason)
                    out[i] = c
                    usage.add(c)
                    if on_result is not None:
                        on_result(i, c)
        return out


for _name in [*ENGINES, AUTO]:  # every inference engine can host the teacher
    register_backend(_name)(LocalBackend)


def _row_sampling(r: Request) -> RowSampling:
    """A sampled request's seed is a function of its prompt and sample index: the same
    request draws the same text wherever it is batched, and sample 1 and 2 differ."""
    sp = r.sampling
    seed = zlib.crc32(f"{r.sample_index}\n{json.dumps(r.messages)}".encode())
    return RowSampling(sp.temperature, sp.top_p if sp.temperature > 0 else 1.0, seed)
