"""config.py: what each key may hold, and which keys may change when a run resumes."""

from __future__ import annotations

import pytest
import yaml

from undo.config import load_config, resume_diff
from undo.errors import UserError


@pytest.mark.parametrize("override, key", [
    ("splits.train=0", "splits.train"),
    ("splits.val=-3", "splits.val"),
    ("splits.test=0", "splits.test"),
    ("loop.max_iterations=-1", "loop.max_iterations"),
    ("loop.patience=0", "loop.patience"),
    ("teacher.openai.max_retries=-1", "teacher.openai.max_retries"),
    ("teacher.max_attempts=0", "teacher.max_attempts"),
    ("teacher.temperature=-0.5", "teacher.temperature"),
    ("teacher.top_p=1.5", "teacher.top_p"),
    ("teacher.max_tokens=0", "teacher.max_tokens"),
    ("teacher.openai.timeout=0", "teacher.openai.timeout"),
    ("teacher.dtype=fp32", "teacher.dtype"),
    ("student.batch_size=0", "student.batch_size"),
    ("student.dtype=bfloat61", "student.dtype"),
    ("student.max_new_tokens=0", "student.max_new_tokens"),
    ("student.lora.dropout=1.0", "student.lora.dropout"),
    ("train.lr=0", "train.lr"),
    ("train.epochs=0", "train.epochs"),
    ("train.warmup_ratio=1.0", "train.warmup_ratio"),
    ("train.grad_accum=0", "train.grad_accum"),
    ("train.num_processes=0", "train.num_processes"),
    ("name=../elsewhere", "name"),
    ("name=a/b", "name"),
    ("name=", "name"),
    ("seed=-1", "seed"),
    ("teacher.prompts.refin=my.j2", "teacher.prompts"),
    ("teacher.price.inptu=0.5", "teacher.price"),
    ("student.backend=sglang", "student.backend"),
    ("student.vllm.gpu_memory_utilization=1.5", "student.vllm.gpu_memory_utilization"),
    ("teacher.vllm.tensor_parallel_size=0", "teacher.vllm.tensor_parallel_size"),
    ("student.vllm.max_model_len=0", "student.vllm.max_model_len"),
    ("loop.budget.teacher_tokens=0", "loop.budget.teacher_tokens"),
    ("loop.budget.cost=-1", "loop.budget.cost"),
    ("loop.min_delta=1.5", "loop.min_delta"),
])
def test_a_bad_value_is_one_line_naming_its_key(override: str, key: str) -> None:
    from undo.registries import load

    with pytest.raises(UserError) as e:
        load(overrides=[override])
    msg = str(e.value)
    assert f"config key '{key}'" in msg and "\n" not in msg, msg


def _cfg(*overrides: str):
    return load_config(overrides=list(overrides))


def test_keys_no_result_depends_on_may_change_on_resume() -> None:
    saved = _cfg()
    now = _cfg("teacher.openai.base_url=http://other:8000/v1", "teacher.openai.concurrency=64",
               "student.batch_size=4", "train.logging_steps=1", "loop.max_iterations=5", "output.dir=elsewhere")
    assert resume_diff(saved, now) == []


def test_keys_that_change_results_are_refused_on_resume() -> None:
    saved = _cfg()
    now = _cfg("teacher.temperature=0.2", "train.lr=1e-3", "splits.val=10", "student.lora.r=8", "seed=3")
    assert set(resume_diff(saved, now)) == {"teacher.temperature", "train.lr", "splits.val", "student.lora",
                                            "seed"}


def test_the_training_layout_may_change_when_the_global_batch_stays() -> None:
    saved = _cfg("train.batch_size=8")
    assert resume_diff(saved, _cfg("train.batch_size=4", "train.grad_accum=2")) == []
    assert resume_diff(saved, _cfg("train.batch_size=2", "train.num_processes=4")) == []
    [msg] = resume_diff(saved, _cfg("train.num_processes=2"))
    assert "8 -> 16" in msg


def test_a_run_folder_written_before_the_openai_section_still_resumes(tmp_path) -> None:
    """config.yaml of older runs has teacher.base_url etc. flat; they are read into teacher.openai,
    while on the command line only the sectioned key exists (one spelling to document)."""
    from undo.config import config_to_yaml, load_config

    data = yaml.safe_load(config_to_yaml(_cfg()))
    data["teacher"].pop("openai")
    data["teacher"].update(base_url="http://old:8000/v1", concurrency=32, max_retries=3)
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(data))
    old = load_config(tmp_path / "config.yaml")
    assert (old.teacher.openai.base_url, old.teacher.openai.concurrency, old.teacher.openai.max_retries) == (
        "http://old:8000/v1", 32, 3)
    assert resume_diff(old, _cfg("teacher.openai.base_url=http://new:8000/v1")) == []
    with pytest.raises(UserError, match="did you mean 'teacher.openai.base_url'"):
        _cfg("teacher.base_url=http://x:1/v1")


def test_a_password_in_the_teacher_url_never_reaches_config_yaml() -> None:
    from undo.config import config_to_yaml

    cfg = _cfg("teacher.openai.base_url=[https://me:s3cret@host:8000/v1, http://plain:8000/v1]")
    text = config_to_yaml(cfg)
    assert "s3cret" not in text
    assert "https://me:***@host:8000/v1" in text and "http://plain:8000/v1" in text


def test_a_prompt_template_cannot_reach_python_internals(tmp_path) -> None:
    from undo.teacher.prompts import render

    bad = tmp_path / "explain.j2"
    bad.write_text("{{ question.__class__.__mro__[1].__subclasses__() }}")
    with pytest.raises(UserError, match="not allowed in a template"):
        render("explain", {"explain": str(bad)}, question="q")


def test_a_cost_budget_without_a_price_is_one_line() -> None:
    with pytest.raises(UserError) as e:
        load_config(overrides=["loop.budget.cost=5"])
    assert str(e.value) == "config: loop.budget.cost needs teacher.price (USD per 1M input/output tokens)"
    assert load_config(overrides=["loop.budget.cost=5", "teacher.price.input=1"]).loop.budget.cost == 5


def test_budgets_may_change_on_resume_so_a_run_can_go_on() -> None:
    assert resume_diff(_cfg(), _cfg("loop.budget.teacher_tokens=1000", "loop.min_delta=0.02")) == []
