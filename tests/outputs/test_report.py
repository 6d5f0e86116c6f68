"""What the report says the teacher was shown: one sentence, from the run's own config."""

from __future__ import annotations

import pytest
import yaml

from undo.display import teacher_shown


@pytest.mark.parametrize("cfg, says, not_says", [
    ({"loop": {"method": "oneshot"}}, ["one-shot distillation"], ["Refine requests"]),
    ({"loop": {"refine": "repeat"}}, ["UNDO-repeat", "no teacher is asked"], []),
    ({"teacher": {"show_attempt": False, "style": "concise"}, "loop": {"val_errors_shown": 6}},
     ["not the student's attempt (teacher.show_attempt=false)", "val accuracy by iteration"], ["refine_model"]),
    ({"teacher": {"model": "small", "refine_model": "big", "refine_examples": 3}},
     ["teacher (big, teacher.refine_model)", "first false calculation named", "3 refine worked examples"], []),
    ({"teacher": {"model": "same", "refine_model": "same"}}, ["Refine requests showed the teacher the"],
     ["refine_model"]),
])
def test_the_sentence_follows_the_config(tmp_path, cfg, says, not_says):
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(cfg))
    sentence = teacher_shown(tmp_path)
    assert all(s in sentence for s in says), sentence
    assert not any(s in sentence for s in not_says), sentence
    assert teacher_shown(tmp_path / "missing") == ""
