"""A launched multi-process training saves the whole student: 2 gloo processes on CPU.

Every process takes part in the trainer's own save path (under FSDP / ZeRO-3 it gathers
the shards; rank 0 alone would write a partial student), so the student a 2-process run
saves must equal the one a single process trains on the same global batch, and answer a
fixed prompt the same way. accelerate runs FSDP and DeepSpeed only on GPUs (on CPU an
FSDP config becomes MULTI_CPU data parallel): bench/gpu_check.py checks those on CUDA.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from tiny_model import build_tiny_llama

from undo.config import load_config

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("dist")
    model = build_tiny_llama(d / "tiny")
    data = d / "data.jsonl"
    data.write_text("".join(json.dumps({
        "id": str(i), "prompt": f"What is {i} + {i + 1}?",
        "completion": f"{i} + {i + 1} = {2 * i + 1}. The answer is {2 * i + 1}."}) + "\n" for i in range(8)))
    return {"dir": d, "model": model, "data": data}


def _config(setup: dict[str, Path], lora: bool) -> Path:
    path = setup["dir"] / f"run-{lora}.yaml"
    path.write_text(
        f"seed: 0\nstudent: {{model: {setup['model']}, lora: {'{r: 4, alpha: 8}' if lora else 'null'}}}\n"
        "train: {max_steps: 3, batch_size: 2, lr: 1.0e-3, max_seq_len: 256, logging_steps: 1,"
        " warmup_ratio: 0.0}\n")
    return path


def _weights(folder: Path) -> dict:
    from safetensors.torch import load_file

    name = "adapter_model.safetensors" if (folder / "adapter_config.json").exists() else "model.safetensors"
    return load_file(folder / name)


def _greedy(folder: Path) -> str:
    from undo.lm.generate import generate_chat
    from undo.lm.models import load_model, load_tokenizer, resolve_model

    resolved = resolve_model(str(folder))
    model = load_model(resolved, device="cpu")
    [g] = generate_chat(model, load_tokenizer(resolved), [[{"role": "user", "content": "What is 3 + 4?"}]],
                        max_new_tokens=12)
    return g.text


@pytest.mark.slow
@pytest.mark.parametrize("lora", [False, True], ids=["full", "lora"])
def test_sharded_saves_equal_the_single_process_student(setup: dict[str, Path], lora: bool) -> None:
    from undo.student.launch import launch_training
    from undo.student.train import read_examples, train_student

    cfg_path = _config(setup, lora)
    cfg = load_config(cfg_path, ["train.batch_size=4"])  # the same global batch in one process
    single = setup["dir"] / f"single-{lora}"
    train_student(read_examples(setup["data"]), single, cfg.student, cfg.train, seed=0, progress=False)
    reference = _weights(single)
    for kind, distributed in (("ddp", "MULTI_CPU"),):
        out = setup["dir"] / f"{kind}-{lora}"
        r = launch_training(setup["data"], out, cfg_path, "accelerate", 2,
                            str(ROOT / "configs" / "accelerate" / f"{kind}.yaml"), progress=False)
        assert (r.num_processes, r.distributed, r.steps) == (2, distributed, 3)
        saved = _weights(out)
        assert saved.keys() == reference.keys()
        for name, tensor in reference.items():  # whole tensors, the same values
            assert saved[name].shape == tensor.shape, name
            assert (saved[name] - tensor).abs().max().item() < 1e-5, (kind, name)
        assert _greedy(out) == _greedy(single)
    initial = _weights(setup["model"])
    if not lora:  # and training did move the weights
        assert max((reference[k] - initial[k]).abs().max().item() for k in initial) > 1e-4


def test_accelerate_configs_are_valid_yaml_with_a_distributed_type() -> None:
    import yaml

    kinds = {p.stem: yaml.safe_load(p.read_text())["distributed_type"]
             for p in (ROOT / "configs" / "accelerate").glob("*.yaml")}
    assert kinds == {"ddp": "MULTI_GPU", "fsdp": "FSDP", "deepspeed_zero3": "DEEPSPEED"}
    ds = yaml.safe_load((ROOT / "configs" / "accelerate" / "deepspeed_zero3.yaml").read_text())
    assert ds["deepspeed_config"]["zero3_save_16bit_model"] is True  # else ZeRO-3 saves empty tensors
    fsdp = yaml.safe_load((ROOT / "configs" / "accelerate" / "fsdp.yaml").read_text())
    assert fsdp["fsdp_config"]["fsdp_state_dict_type"] == "FULL_STATE_DICT"
