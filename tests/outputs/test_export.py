"""`undo export-model`: a LoRA student merged into one folder answers exactly as the adapter did."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from tiny_model import build_tiny_llama

from undo.config import RunConfig, config_to_yaml
from undo.errors import UserError
from undo.runstore import RunStore, write_json

PROMPTS = [[{"role": "user", "content": "What is 3 + 4?"}],
           [{"role": "user", "content": "A farm has 12 cows. How many legs?"}]]


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A run folder whose iteration 0 holds a LoRA student trained hard enough to matter."""
    from undo.student.train import train_student

    d = tmp_path_factory.mktemp("export")
    base = build_tiny_llama(d / "tiny")
    cfg = RunConfig.model_validate({
        "name": "exp", "student": {"model": str(base), "lora": {"r": 4, "alpha": 16}},
        "teacher": {"model": "qwen2.5-coder-0.5b-instruct"},
        "train": {"max_steps": 6, "batch_size": 4, "lr": 5e-2, "max_seq_len": 256, "warmup_ratio": 0.0},
        "output": {"dir": str(d / "runs")}})
    store = RunStore(cfg.run_dir)
    store.root.mkdir(parents=True)
    (store.root / "config.yaml").write_text(config_to_yaml(cfg))
    examples = [{"id": str(i), "prompt": f"What is {i} + 4?", "completion": f"{i} + 4 = {i + 4}. "
                 f"The answer is {i + 4}."} for i in range(8)]
    train_student(examples, store.student_dir(0), cfg.student, cfg.train, seed=0, progress=False)
    write_json(store.metrics_file(0), {"val_acc": 0.25, "val_n": 8, "test_acc": 0.5, "test_n": 4})
    return store.root


def _adapter_model(student: Path):  # noqa: ANN202
    """The student as PEFT runs it: base weights plus the LoRA, not merged."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from undo.lm.models import quiet_deprecations

    base = AutoModelForCausalLM.from_pretrained((student / "undo_base.txt").read_text().strip(),
                                                dtype="float32")
    with quiet_deprecations():
        return PeftModel.from_pretrained(base, str(student)).eval()


@pytest.mark.slow
def test_merged_export_answers_as_the_adapter_model(run: Path, tmp_path: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from undo.lm.generate import generate_chat
    from undo.outputs.export import export_model

    out = tmp_path / "model"
    info = export_model(run, out, iteration=0)
    assert info["iteration"] == 0 and info["test_acc"] == 0.5
    assert (out / "model.safetensors").exists() and not (out / "adapter_config.json").exists()
    card = (out / "README.md").read_text()
    assert "qwen2.5-coder-0.5b-instruct" in card and "50.0 %" in card and "LoRA merged | yes" in card

    merged = AutoModelForCausalLM.from_pretrained(out).eval()  # plain transformers, no PEFT
    tok = AutoTokenizer.from_pretrained(out)
    assert tok.chat_template  # the template the student was trained with travels along
    adapter = _adapter_model(run / "iter_0" / "student")
    plain_base = AutoModelForCausalLM.from_pretrained(run.parent.parent / "tiny").eval()
    kw = {"max_new_tokens": 16}
    ours = [g.text for g in generate_chat(merged, tok, PROMPTS, **kw)]
    assert ours == [g.text for g in generate_chat(adapter, tok, PROMPTS, **kw)]
    ids = tok.apply_chat_template(PROMPTS[0], add_generation_prompt=True, return_tensors="pt",
                                  return_dict=True)["input_ids"]
    with torch.no_grad():
        lm, la, lb = merged(ids).logits, adapter(ids).logits, plain_base(ids).logits
    assert (lm - la).abs().max().item() < 1e-4
    assert (la - lb).abs().max().item() > 1e-2  # the adapter does change the model

    again = export_model(run, out, iteration=0)  # its own folder may be replaced
    assert again["out"] == str(out)


def test_export_refuses_bad_targets(run: Path, tmp_path: Path) -> None:
    from undo.outputs.export import export_model

    other = tmp_path / "notes"
    other.mkdir()
    (other / "keep.txt").write_text("mine")
    with pytest.raises(UserError, match="not written by undo export-model"):
        export_model(run, other, iteration=0)
    assert (other / "keep.txt").read_text() == "mine"
    with pytest.raises(UserError, match="unfinished run; pass --iteration"):
        export_model(run, tmp_path / "m")
    with pytest.raises(UserError, match="no trained student"):
        export_model(run, tmp_path / "m", iteration=3)
    with pytest.raises(UserError, match="not an undo run folder"):
        export_model(tmp_path, tmp_path / "m")
    assert json.loads((run / "iter_0" / "student" / "train_result.json").read_text())["steps"] == 6
