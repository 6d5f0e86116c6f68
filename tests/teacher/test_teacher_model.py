"""The offline teacher for real: loads, writes a sentence, takes one training step."""

from __future__ import annotations

import pytest

from undo.config import LoraConfig, StudentConfig, TrainConfig
from undo.lm.generate import generate_chat
from undo.lm.models import load_model, load_tokenizer, resolve_model
from undo.student.train import train_student

TEACHER = "qwen2.5-coder-0.5b-instruct"


@pytest.mark.slow
def test_offline_teacher_generates_and_trains_one_step(tmp_path):
    resolved = resolve_model(TEACHER)  # verified by SHA-256, converted once
    model, tok = load_model(resolved).eval(), load_tokenizer(resolved)
    [gen] = generate_chat(model, tok, [[{"role": "user", "content": "Say hello in one sentence."}]],
                          max_new_tokens=16)
    assert gen.completion_tokens > 0 and any(c.isalpha() for c in gen.text)
    del model
    result = train_student(
        [{"id": "a", "prompt": "What is 2 + 3?", "completion": "2 + 3 = 5. The answer is 5."}],
        tmp_path / "t", StudentConfig(model=TEACHER, lora=LoraConfig(r=4, alpha=8)),
        TrainConfig(max_steps=1, batch_size=1, max_seq_len=128, logging_steps=1), seed=0,
        progress=False)
    assert result.steps == 1 and result.first_loss is not None
    assert (tmp_path / "t" / "adapter_config.json").exists()
