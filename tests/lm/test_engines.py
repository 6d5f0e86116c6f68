"""The engine pool: one engine per role, reused while the weights stay, released on demand."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from tiny_model import build_tiny_llama

from undo.config import StudentConfig
from undo.errors import UserError
from undo.lm.engines import ENGINES, EnginePool, EngineSpec, TransformersEngine, register_engine


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, str]:
    d = tmp_path_factory.mktemp("engines")
    return str(build_tiny_llama(d / "a", seed=0)), str(build_tiny_llama(d / "b", seed=1))


@pytest.fixture
def shared() -> Iterator[str]:
    """An engine that, like vLLM, takes a fixed 60 % of the GPU (weights: a real tiny model)."""

    @register_engine("test-share")
    class SharedEngine(TransformersEngine):
        gpu_share = 0.6

        @staticmethod
        def share_wanted(spec: EngineSpec) -> float:
            return 0.6

    yield "test-share"
    ENGINES.pop("test-share")


def test_one_engine_per_role_reused_until_the_weights_change(models: tuple[str, str]) -> None:
    a, b = models
    pool = EnginePool()
    spec = EngineSpec.of(StudentConfig(model=a, device="cpu"))
    first, adapter = pool.get("student", spec)
    assert adapter is None  # transformers merges an adapter into its weights instead
    for _ in range(3):  # every split, every stage: the same engine
        assert pool.get("student", spec)[0] is first
    assert pool.built == 1
    pool.get("teacher", EngineSpec.of(StudentConfig(model=b, device="cpu")))
    assert sorted(pool.roles()) == ["student", "teacher"] and pool.built == 2
    pool.get("student", EngineSpec.of(StudentConfig(model=b, device="cpu")))  # the next student
    assert pool.events[-2:] == [("release", "student", a), ("build", "student", b)]
    assert first.model is None  # its weights were let go
    pool.release_all()
    assert pool.roles() == [] and pool.released == 3


def test_engines_with_fixed_gpu_shares_over_one_never_coexist(models: tuple[str, str], shared: str) -> None:
    a, b = models
    pool = EnginePool()
    pool.get("teacher", EngineSpec(shared, a, "cpu"))
    pool.get("student", EngineSpec(shared, b, "cpu"))  # 0.6 + 0.6 > 1: the teacher goes first
    assert pool.roles() == ["student"]
    assert [e[:2] for e in pool.events] == [("build", "teacher"), ("release", "teacher"),
                                            ("build", "student")]
    pool.get("teacher", EngineSpec("transformers", a, "cpu"))  # no fixed share: both stay
    assert sorted(pool.roles()) == ["student", "teacher"]


def test_unknown_backend_and_vllm_without_lora_are_one_line(tmp_path: Path) -> None:
    pool = EnginePool()
    with pytest.raises(UserError, match="unknown inference backend 'sglang'"):
        pool.get("student", EngineSpec("sglang", "smollm2-135m-instruct"))
    student = tmp_path / "student"
    student.mkdir()
    (student / "adapter_config.json").write_text('{"r": 8}')
    (student / "undo_base.txt").write_text("smollm2-135m-instruct\n")
    cfg = StudentConfig(model=str(student), backend="vllm")
    no_lora = cfg.model_copy(update={"vllm": cfg.vllm.model_copy(update={"enable_lora": False})})
    with pytest.raises(UserError, match="LoRA student and vllm.enable_lora is false"):
        pool.get("student", EngineSpec.of(no_lora))
    low_rank = cfg.model_copy(update={"vllm": cfg.vllm.model_copy(update={"max_lora_rank": 4})})
    with pytest.raises(UserError, match="LoRA rank 8 > vllm.max_lora_rank=4"):
        pool.get("student", EngineSpec.of(low_rank))
    assert pool.built == 0  # refused before anything was loaded
