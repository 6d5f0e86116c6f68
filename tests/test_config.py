"""config.py: what each key may hold, and which keys may change when a run resumes."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

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


def _sections_and_fields(model, prefix=""):
    """(dotted key, field) of every field of `model` and of each section under it."""
    from pydantic import BaseModel

    for name, field in model.model_fields.items():
        yield prefix + name, field
        for sub in (field.annotation, *getattr(field.annotation, "__args__", ())):
            if isinstance(sub, type) and issubclass(sub, BaseModel):
                yield from _sections_and_fields(sub, f"{prefix}{name}.")


def test_every_key_of_every_section_says_what_it_is() -> None:
    """A key added without Field(description=...) fails here: `undo keys` and the misspelt-key
    error show the description."""
    import inspect

    from pydantic import BaseModel

    import undo.config as config

    keys = dict(_sections_and_fields(config.RunConfig))
    assert len(keys) > 90 and {"teacher.openai.base_url", "student.lora.r", "loop.budget.cost"} <= set(keys)
    undocumented = [k for k, f in keys.items() if not (f.description or "").strip()]
    # sections defined in config.py but not (yet) reachable from RunConfig count too
    for name, cls in inspect.getmembers(config, inspect.isclass):
        if issubclass(cls, BaseModel) and cls.__module__ == config.__name__:
            undocumented += [f"{name}.{k}" for k, f in cls.model_fields.items()
                             if not (f.description or "").strip()]
    assert undocumented == []
    assert [k for k, f in keys.items() if "\n" in f.description] == []


def test_descriptions_keep_each_keys_default_and_range() -> None:
    from undo.config import LoopConfig, SplitsConfig, TeacherConfig

    assert [type(m).__name__ for m in SplitsConfig.model_fields["val"].metadata] == ["Ge"]
    assert [type(m).__name__ for m in TeacherConfig.model_fields["top_p"].metadata] == ["Gt", "Le"]
    assert (SplitsConfig().val, TeacherConfig().top_p, LoopConfig().patience) == (50, 0.95, 1)
    assert TeacherConfig().openai.concurrency == 16 and TeacherConfig().prompts == {}
    with pytest.raises(UserError, match="config key 'splits.val'"):
        load_config(overrides=["splits.val=0"])


def test_a_misspelt_key_is_told_what_the_closest_one_does(tmp_path) -> None:
    from undo.config import LoopConfig

    what = LoopConfig.model_fields["patience"].description
    with pytest.raises(UserError) as e:
        _cfg("loop.patiance=3")
    assert str(e.value) == f"unknown config key 'loop.patiance' (did you mean 'loop.patience': {what}?)"
    bad = tmp_path / "bad.yaml"
    bad.write_text("loop: {patiance: 2}\n")
    with pytest.raises(UserError) as e:
        load_config(bad)
    assert str(e.value) == f"{bad}: unknown config key 'loop.patiance' (did you mean 'loop.patience': {what}?)"


def test_describe_keys_lists_a_section_and_its_keys() -> None:
    from undo.config import RunConfig, _valid_keys, describe_keys

    rows = describe_keys("teacher.openai")
    assert [r[0] for r in rows] == ["teacher.openai", "teacher.openai.base_url", "teacher.openai.api_key_env",
                                    "teacher.openai.concurrency", "teacher.openai.timeout",
                                    "teacher.openai.max_retries"]
    assert rows[1][:3] == ("teacher.openai.base_url", "str|list[str]|None", "null")
    assert describe_keys("teacher.openai.") == rows
    assert [r[0] for r in describe_keys()] == _valid_keys(RunConfig)
    assert all(all(col for col in r) for r in describe_keys())
    by_key = {r[0]: r[1:3] for r in describe_keys()}
    assert by_key["splits.train"] == ("int>=1|None", "700")
    assert by_key["teacher.top_p"] == ("0<float<=1", "0.95")
    assert by_key["teacher.style"] == ("stepwise|concise", "stepwise")
    assert by_key["student.lora"] == ("section|None", "{}")
    assert by_key["task.fields"] == ("dict[str,str]", "{question: question, answer: answer}")
    assert by_key["train.max_steps"] == ("int>=-1", "-1")
    with pytest.raises(UserError, match=r"^unknown config key 'teacher.open' \(did you mean 'teacher.openai'"):
        describe_keys("teacher.open")  # a prefix is a whole key or section, not its first letters


def test_undo_keys_prints_one_line_per_key_and_refuses_an_unknown_prefix() -> None:
    from undo.config import describe_keys

    def undo(*args: str) -> subprocess.CompletedProcess:  # as tests/test_cli.py runs the command
        return subprocess.run([sys.executable, "-m", "undo.cli", *args], capture_output=True, text=True,
                              cwd=Path(__file__).resolve().parents[1])

    r = undo("keys", "teacher.openai")
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert [line.split()[0] for line in lines] == [row[0] for row in describe_keys("teacher.openai")]
    base_url = next(line for line in lines if line.startswith("teacher.openai.base_url "))
    assert base_url.split()[1:3] == ["str|list[str]|None", "null"] and "replicas" in base_url
    assert len(undo("keys").stdout.splitlines()) == len(describe_keys())
    bad = undo("keys", "teacher.opnai")
    assert bad.returncode == 2 and bad.stdout == ""
    [line] = bad.stderr.strip().splitlines()
    assert line.startswith("error: unknown config key 'teacher.opnai' (did you mean 'teacher.openai': ")
