"""Student generation, evaluation and training (LoRA, full, continue, 2-process torchrun).

Mechanics (batching, seeds, resume, the loss, saving, two processes) run on the tiny
random model of tests/tiny_model.py. What needs a model that reads and writes (copying a
sentence, learning the answer line from 16 examples) uses the real offline student
(smollm2-135m-instruct, GGUF), loaded once and saved as safetensors into a temp folder.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from types import SimpleNamespace

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pytest

from undo.config import LoraConfig, StudentConfig, TrainConfig
from undo.errors import UserError
from undo.grading import answer_line_end
from undo.lm.generate import Generation, _batches, cut, generate_chat
from undo.student.evaluate import evaluate, read_attempts
from undo.tasks.base import Record

SVAMP = Path(__file__).parent.parent / "fixtures" / "data" / "svamp" / "SVAMP.json"  # SVAMP slice
COPY_PROMPT = "Copy this text exactly: 'The answer is 42. I hope this helps you a lot.'"


# ---- fast: no model ------------------------------------------------------------------


@pytest.mark.parametrize(
    "text, done",
    [
        ("So we get 5. The answer is 5.\n", True),
        ("The answer is 5. Because", True),
        ("The answer is 3.", False),  # may still become 3.5
        ("The answer is 3.5", False),
        ("The answer is 3.5.\n", True),
        ("The answer is $5.00. ", True),
        ("The answer is 72\n", True),
        ("the answer is (B) library. ", True),
        ("We compute 3 + 4 = 7. Next", False),
    ],
)
def test_answer_line_detection(text: str, done: bool) -> None:
    assert (answer_line_end(text) is not None) is done


def test_cut_at_answer_keeps_the_answer_line() -> None:
    assert cut("We add. The answer is 3.5.\nExtra", answer_line_end) == "We add. The answer is 3.5."
    assert cut("The answer is 72\nmore", answer_line_end) == "The answer is 72"
    assert cut("The answer is 72\nmore", None) == "The answer is 72\nmore"


def test_conversations_with_the_same_examples_batch_together() -> None:
    """A conversation whose examples differ (its own question was one of them) gets a
    batch of its own, so the others keep their long shared prefix."""
    shots = [{"role": "user", "content": "Q1"}, {"role": "assistant", "content": "A1"}]
    convs = [[*shots, {"role": "user", "content": f"q{i}"}] for i in range(5)]
    convs.insert(2, [{"role": "user", "content": "q-self"}])
    prompts = [[0] * (10 + i) for i in range(len(convs))]  # only lengths matter here
    batches = _batches(convs, prompts, batch_size=4)
    assert batches == [[5, 4, 3, 1], [0], [2]]  # longest group first, longest rows first


def test_lone_conversations_share_one_batch() -> None:
    """Conversations with examples of their own and one prompt each (or k repeats of it)
    have no prefix to share within their group, so they pool into one batch; a group
    with a shared prefix keeps its batch."""
    shots = [{"role": "user", "content": "Q1"}, {"role": "assistant", "content": "A1"}]
    convs = [[*shots, {"role": "user", "content": f"q{i}"}] for i in range(3)]
    other = [{"role": "user", "content": "Q2"}, {"role": "assistant", "content": "A2"}]
    convs += [[{"role": "user", "content": "q-self"}], [*other, {"role": "user", "content": "q-other"}],
              [*other, {"role": "user", "content": "q-other"}], [{"role": "system", "content": "s"},
                                                                  {"role": "user", "content": "q-third"}]]
    prompts = [[0] * (10 + i) for i in range(3)] + [[1] * 20, [2] * 21, [2] * 21, [3] * 5]
    batches = _batches(convs, prompts, batch_size=8)
    assert batches == [[4, 5, 3, 6], [2, 1, 0]]  # the repeats of one prompt stay adjacent


def test_read_attempts_drops_a_torn_last_line(tmp_path: Path) -> None:
    p = tmp_path / "a.jsonl"
    p.write_text('{"id": "1", "correct": true}\n{"id": "2", "correct": false}\n{"id": "3", "cor')
    rows = read_attempts(p)
    assert list(rows) == ["1", "2"]  # row 3 is redone (the next append cuts it: test_runstore)
    p.write_text('{"id": "1"}\n{"id": "2"}')  # complete row, newline lost
    assert list(read_attempts(p)) == ["1", "2"]
    p.write_text('{"id": "1"}\nnot json\n{"id": "2"}\n')
    with pytest.raises(UserError, match=":2:"):
        read_attempts(p)


@pytest.mark.parametrize("scale", [8.0, 1.0])  # a peaked row (nucleus within the candidates), a flat one
def test_nucleus_sampling_draws_only_from_the_top_p_set(scale: float) -> None:
    import torch

    from undo.lm.generate import RowSampling, _sample

    torch.manual_seed(0)
    logits = torch.randn(3, 5000) * scale
    rows = [RowSampling(0.7, 0.9, 1), RowSampling(0.0), RowSampling(1.0, 1.0, 2)]
    gens = [torch.Generator().manual_seed(1), None, torch.Generator().manual_seed(2)]
    probs = torch.softmax(logits[0] / 0.7, dim=-1)
    sp, si = probs.sort(descending=True)
    nucleus = set(si[(sp.cumsum(0) - sp) <= 0.9].tolist())  # the reference rule, whole vocabulary
    seen = set()
    for _ in range(200):
        t = _sample(logits, rows, gens)
        seen.add(int(t[0]))
        assert int(t[1]) == int(logits[1].argmax())  # greedy row
    assert seen <= nucleus and len(seen) > 1


def test_training_never_replaces_a_folder_that_is_not_a_student(tmp_path: Path) -> None:
    from undo.student.train import train_student

    precious = tmp_path / "thesis"
    precious.mkdir()
    (precious / "chapter1.tex").write_text("months of work")
    with pytest.raises(UserError, match="not an undo student folder"):
        train_student([], precious, StudentConfig(), TrainConfig(), seed=0)
    assert (precious / "chapter1.tex").read_text() == "months of work"


def test_a_killed_training_resumes_from_its_last_checkpoint(tmp_path: Path,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """Stopped after step 5 with checkpoints every 2 steps, the same training started again
    resumes from step 4 and ends where the uninterrupted one ends; other examples do not."""
    from safetensors.torch import load_file
    from tiny_model import build_tiny_llama
    from transformers import TrainerCallback

    from undo.student import train as train_module

    model = build_tiny_llama(tmp_path / "tiny")
    student = StudentConfig(model=str(model), lora=LoraConfig(r=4, alpha=8))
    train = TrainConfig(max_steps=6, batch_size=2, lr=1e-3, max_seq_len=256, logging_steps=1,
                        warmup_ratio=0.0, save_steps=2)
    examples = [{"id": f"q{i}", "prompt": f"What is {i} + {i}?", "completion": f"{i} + {i} = {2 * i}\n"
                 f"The answer is {2 * i}."} for i in range(8)]

    def weights(folder: Path) -> dict:
        return load_file(str(folder / "adapter_model.safetensors"))

    whole = train_module.train_student(examples, tmp_path / "whole", student, train, seed=0, progress=False)

    class Kill(TrainerCallback):
        def on_step_end(self, args, state, control, **kw):  # type: ignore[no-untyped-def]
            if state.global_step == 5:
                raise KeyboardInterrupt  # as abrupt as a kill: nothing after it runs

    out = tmp_path / "killed"
    monkeypatch.setattr(train_module, "_progress_callback", Kill)
    with pytest.raises(KeyboardInterrupt):
        train_module.train_student(examples, out, student, train, seed=0, progress=True)
    tmp = tmp_path / ".killed.tmp"
    assert not out.exists() and sorted(c.name for c in tmp.glob("checkpoint-*")) == ["checkpoint-4"]
    monkeypatch.undo()

    resumed = train_module.train_student(examples, out, student, train, seed=0, progress=False)
    assert resumed.steps == whole.steps == 6
    assert resumed.loss_steps == whole.loss_steps and resumed.losses == pytest.approx(whole.losses, abs=1e-5)
    a, b = weights(tmp_path / "whole"), weights(out)
    assert max(float((a[k] - b[k]).abs().max()) for k in a) < 1e-5
    assert not tmp.exists() and not list(out.glob("checkpoint-*"))
    assert not (out / "undo_fingerprint.txt").exists()

    # other examples: a checkpoint left by their kill is not resumed from
    monkeypatch.setattr(train_module, "_progress_callback", Kill)
    with pytest.raises(KeyboardInterrupt):
        train_module.train_student(examples, tmp_path / "other", student, train, seed=0, progress=True)
    monkeypatch.undo()
    fresh = train_module.train_student(examples[::-1], tmp_path / "other", student, train, seed=0,
                                       progress=False)
    clean = train_module.train_student(examples[::-1], tmp_path / "clean", student, train, seed=0,
                                       progress=False)
    assert fresh.losses == pytest.approx(clean.losses, abs=1e-5)  # trained from step 0
    assert fresh.losses[:4] != pytest.approx(resumed.losses[:4], abs=1e-3)  # so the check above can fail


# ---- shared fixtures ---------------------------------------------------------------


@pytest.fixture(scope="module", autouse=True)
def _threads_for_a_busy_machine():
    """On an oversubscribed CPU, OpenMP's spin-waits make every small op wait for a
    time slice (measured: LoRA training 28 tokens/s on 2 threads, 96 on 1), so a
    busy shared machine gets one thread for this module."""
    import torch

    before = torch.get_num_threads()
    if os.getloadavg()[0] > (os.cpu_count() or 1):
        torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _fmt(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else str(x)


def svamp_rows(start: int, n: int) -> list[tuple[Record, str]]:
    """(record, equation rationale) pairs from the SVAMP slice shipped with the tests."""
    out = []
    for r in json.loads(SVAMP.read_text())[start : start + n]:
        ans = _fmt(r["Answer"])
        rec = Record(
            id=r["ID"],
            question=f"{r['Body'].strip()} {r['Question'].strip()}",
            answer=ans,
            answer_type="number",
        )
        out.append((rec, f"We compute {r['Equation'].strip()} = {ans}. The answer is {ans}."))
    return out


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> SimpleNamespace:
    """The offline student, loaded through models.py and re-saved as safetensors."""
    from undo.lm.models import load_model, load_tokenizer, resolve_model

    try:
        resolved = resolve_model("smollm2-135m-instruct")
    except UserError as e:
        pytest.skip(str(e))
    model = load_model(resolved, device="cpu").eval()
    tok = load_tokenizer(resolved)
    folder = tmp_path_factory.mktemp("smol")
    model.save_pretrained(folder)
    tok.save_pretrained(folder)
    return SimpleNamespace(dir=str(folder), model=model, tok=tok)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> SimpleNamespace:
    """The tiny random chat model (two layers, 64 wide): a second to build, no download."""
    import torch
    from tiny_model import build_tiny_llama

    from undo.lm.models import load_model, load_tokenizer, resolve_model

    folder = build_tiny_llama(tmp_path_factory.mktemp("tiny"))
    resolved = resolve_model(str(folder))
    model = load_model(resolved, device="cpu").eval()
    with torch.no_grad():  # random logits are nearly flat: spread them so greedy has no near-ties
        model.lm_head.weight.mul_(50.0)
    return SimpleNamespace(dir=str(folder), model=model, tok=load_tokenizer(resolved))


def _examples(n: int, start: int = 0) -> list[dict]:
    from undo.student.train import make_example

    return [make_example(rec, rat) for rec, rat in svamp_rows(start, n)]


@pytest.fixture(scope="module")
def lora_student(base: SimpleNamespace, tmp_path_factory: pytest.TempPathFactory) -> SimpleNamespace:
    from undo.student.train import train_student

    examples = _examples(16)
    too_long = dict(examples[5], id="too-long", completion="We compute. " * 200 + "The answer is 1.")
    out = tmp_path_factory.mktemp("runs") / "lora"
    student = StudentConfig(model=base.dir, lora=LoraConfig(r=8, alpha=16))
    train = TrainConfig(
        max_steps=4, batch_size=4, lr=1e-3, max_seq_len=256, logging_steps=1, warmup_ratio=0.0
    )
    result = train_student(examples + [too_long], out, student, train, seed=0, progress=False)
    return SimpleNamespace(dir=out, result=result, student=student, train=train)


# ---- generation ----------------------------------------------------------------------


@pytest.mark.slow
def test_generate_batched_keeps_order_and_matches_batch_of_one(base: SimpleNamespace) -> None:
    convs = [
        [{"role": "user", "content": "Write one short sentence about cats."}],
        [{"role": "user", "content": "Name a color."}],
        [{"role": "user", "content": COPY_PROMPT}],
    ]
    kw = dict(max_new_tokens=16, stop=answer_line_end)
    batched = generate_chat(base.model, base.tok, convs, batch_size=3, **kw)
    single = [generate_chat(base.model, base.tok, [c], **kw)[0] for c in convs]
    assert [g.text for g in batched] == [g.text for g in single]
    assert batched[2].text == "The answer is 42."
    assert batched[2].finish_reason == "answer"
    assert all(isinstance(g, Generation) and g.prompt_tokens > 0 for g in batched)


@pytest.mark.slow
def test_stop_at_answer_truncates_after_the_answer_line(base: SimpleNamespace) -> None:
    conv = [[{"role": "user", "content": COPY_PROMPT}]]
    full = generate_chat(base.model, base.tok, conv, max_new_tokens=40)[0]
    short = generate_chat(base.model, base.tok, conv, max_new_tokens=40, stop=answer_line_end)[0]
    assert full.text.startswith("The answer is 42.") and len(full.text) > len("The answer is 42.")
    assert full.finish_reason == "stop"
    assert (short.text, short.finish_reason) == ("The answer is 42.", "answer")
    assert short.completion_tokens < full.completion_tokens
    assert "<|im_end|>" not in full.text  # special tokens stripped


class _ScriptedLM:
    """Emits a fixed token script per prompt; records the batch width of every forward.

    A row is recognised by its padding (constant across steps and row drops), so
    prompts in one batch must have distinct lengths.
    """

    def __init__(self, tok, prompts: dict[int, list[int]]) -> None:
        import torch
        from transformers import LlamaConfig

        self.config = LlamaConfig(
            vocab_size=len(tok), hidden_size=8, num_hidden_layers=1, num_attention_heads=1
        )
        self.generation_config = SimpleNamespace(eos_token_id=None)
        self.device = torch.device("cpu")
        self.training = False
        self.scripts = prompts  # prompt length -> token script
        self.widths: list[int] = []
        self.vocab = len(tok)

    def eval(self):
        return self

    def train(self, mode: bool = True):
        return self

    def __call__(self, input_ids, attention_mask=None, **kw):
        import torch

        logits = torch.zeros(input_ids.shape[0], 1, self.vocab)
        if attention_mask is None:  # the shared-prefix pass
            return SimpleNamespace(logits=logits)
        if kw.get("logits_to_keep") == 1:
            self.width0 = attention_mask.shape[1]  # prompt prefill
        k = attention_mask.shape[1] - self.width0  # tokens generated so far
        self.widths.append(input_ids.shape[0])
        for row in range(input_ids.shape[0]):
            pad = int((attention_mask[row] == 0).sum())
            script = self.scripts[self.width0 - pad]
            logits[row, 0, script[min(k, len(script) - 1)]] = 1.0
        return SimpleNamespace(logits=logits)


def test_finished_rows_leave_the_batch(tiny: SimpleNamespace) -> None:
    from undo.lm.generate import encode_chats

    tok = tiny.tok
    convs = [[{"role": "user", "content": "x " * n}] for n in (1, 3, 5, 7)]
    lengths = [len(p) for p in encode_chats(tok, convs)]
    assert len(set(lengths)) == 4
    enc = lambda s: tok(s, add_special_tokens=False)["input_ids"]  # noqa: E731
    eos = tok.convert_tokens_to_ids("<|im_end|>")
    texts = [
        enc("We add. The answer is 3.5.\nMore text that should never be generated at all"),
        enc("short") + [eos],
        enc(" word" * 40),  # runs to the length limit
        enc("The answer is 12\nAnd then some more words"),
    ]
    lm = _ScriptedLM(tok, dict(zip(lengths, texts, strict=True)))
    gens = generate_chat(lm, tok, convs, max_new_tokens=30, batch_size=4, stop=answer_line_end)
    assert [g.finish_reason for g in gens] == ["answer", "stop", "length", "answer"]
    assert gens[0].text == "We add. The answer is 3.5."
    assert gens[1].text == "short"
    assert gens[3].text == "The answer is 12"
    assert gens[2].completion_tokens == 30
    # the batch narrows as rows finish: 4 -> ... -> 1 (only the length-limited row)
    assert lm.widths[0] == 4 and lm.widths[-1] == 1
    assert sum(lm.widths) < 4 * len(lm.widths)


def test_seeded_sampling_is_reproducible(tiny: SimpleNamespace) -> None:
    convs = [[{"role": "user", "content": "Name an animal."}]] * 2
    kw = dict(max_new_tokens=12, temperature=0.9, top_p=0.95, seed=3, batch_size=2)
    a = generate_chat(tiny.model, tiny.tok, convs, **kw)
    b = generate_chat(tiny.model, tiny.tok, convs, **kw)
    assert [g.text for g in a] == [g.text for g in b]
    other = generate_chat(tiny.model, tiny.tok, convs, **{**kw, "seed": 4})
    assert [g.text for g in other] != [g.text for g in a]  # the seed decides, so the check can fail


# ---- evaluation ----------------------------------------------------------------------


def test_evaluate_writes_and_resumes(tiny: SimpleNamespace, tmp_path: Path) -> None:
    records = [rec for rec, _ in svamp_rows(24, 4)]
    cfg = StudentConfig(model=tiny.dir, max_new_tokens=16, batch_size=2)
    out = tmp_path / "attempts.jsonl"
    first = evaluate(records[:3], tiny.dir, cfg, out_path=out)
    assert first.n == 3
    # every row's verdict is the grader's on the text it recorded, and the count is theirs
    assert [a["correct"] for a in first.attempts] == [r.grade(a["output"]).correct
                                                      for r, a in zip(records, first.attempts, strict=False)]
    assert first.correct == sum(a["correct"] for a in first.attempts)
    row = first.attempts[0]
    assert set(row) == {"id", "question", "answer", "output", "predicted", "correct",
                        "false_step", "completion_tokens"}
    assert row["id"] == records[0].id and row["answer"] == records[0].answer
    # simulate a kill in the middle of writing the last row
    text = out.read_text()
    out.write_text(text[: text.rindex('{"id"') + 10])
    survivors = read_attempts(out)
    assert len(survivors) == 2
    seen: list[int] = []
    again = evaluate(records, tiny.dir, cfg, out_path=out, progress=seen.append)
    assert [a["id"] for a in again.attempts] == [r.id for r in records]
    assert all(again.attempts[records.index(r)] == survivors[r.id]
               for r in records if r.id in survivors)
    assert seen[0] == 2 and sum(seen[1:]) == 2  # 2 rows reused, only the 2 missing generated
    lines = out.read_text().splitlines()
    assert sorted(json.loads(x)["id"] for x in lines) == sorted(r.id for r in records)


# ---- training ------------------------------------------------------------------------


@pytest.mark.slow
def test_lora_training_lowers_loss_and_reports_long_examples(lora_student: SimpleNamespace) -> None:
    r = lora_student.result
    assert r.steps == 4 and r.num_processes == 1
    assert r.dropped == ["too-long"] and r.n_examples == 16
    assert r.final_loss < r.first_loss
    assert r.tokens_per_s > 0 and len(r.losses) == 4
    d = lora_student.dir
    for name in ("adapter_config.json", "adapter_model.safetensors", "tokenizer_config.json",
                 "undo_base.txt", "train_config.json", "train_result.json"):
        assert (d / name).exists(), name
    assert json.loads((d / "train_result.json").read_text())["dropped"] == ["too-long"]
    assert not list(d.parent.glob(".lora.*"))  # the temp dir was renamed away


@pytest.mark.slow
def test_lora_student_reloads_and_generates(lora_student: SimpleNamespace) -> None:
    from undo.lm.models import load_model, load_tokenizer, resolve_model

    resolved = resolve_model(str(lora_student.dir))
    assert resolved.adapter == str(lora_student.dir)
    model, tok = load_model(resolved, device="cpu").eval(), load_tokenizer(resolved)
    rec, _ = svamp_rows(28, 1)[0]
    from undo.tasks.base import student_messages

    g = generate_chat(model, tok, [student_messages(rec)], max_new_tokens=48, stop=answer_line_end)[0]
    # after 4 steps it has at least learnt to end with the answer line, briefly
    assert "The answer is" in g.text, g.text
    assert g.finish_reason in ("answer", "stop") and g.completion_tokens < 48


@pytest.mark.slow
def test_continue_training_a_lora_student(lora_student: SimpleNamespace, tmp_path: Path) -> None:
    from undo.student.train import train_student

    train = lora_student.train.model_copy(update={"max_steps": 1, "batch_size": 2})
    out = tmp_path / "cont"
    r = train_student(_examples(2, 16), out, lora_student.student, train, seed=0,
                      init_from=str(lora_student.dir), progress=False)
    assert r.steps == 1
    assert (out / "undo_base.txt").read_text() == (lora_student.dir / "undo_base.txt").read_text()
    # continued from the trained adapter: its loss starts far below the base model's
    assert r.first_loss < lora_student.result.first_loss * 0.8


def test_full_finetune_saves_a_loadable_model(tiny: SimpleNamespace, tmp_path: Path) -> None:
    import torch

    from undo.lm.models import load_model, resolve_model
    from undo.student.train import train_student

    out = tmp_path / "full"
    student = StudentConfig(model=tiny.dir, lora=None)
    train = TrainConfig(max_steps=2, batch_size=2, lr=1e-3, max_seq_len=256, logging_steps=1)
    r = train_student(_examples(4), out, student, train, seed=0, progress=False)
    assert r.steps == 2 and (out / "config.json").exists()
    assert not (out / "adapter_config.json").exists()
    model = load_model(resolve_model(str(out)), device="cpu")
    before = load_model(resolve_model(tiny.dir), device="cpu")
    trained = dict(model.named_parameters())
    assert trained.keys() == dict(before.named_parameters()).keys()  # every weight, no adapter
    assert any(not torch.equal(p, trained[k]) for k, p in before.named_parameters())


@pytest.mark.slow
def test_torchrun_two_processes(tiny: SimpleNamespace, tmp_path: Path) -> None:
    from undo.student.launch import launch_training

    data = tmp_path / "train.jsonl"
    data.write_text("".join(json.dumps(e) + "\n" for e in _examples(16)))
    cfg = tmp_path / "run.yaml"
    cfg.write_text(
        f"seed: 0\nstudent: {{model: {tiny.dir}}}\n"
        "train: {max_steps: 4, batch_size: 2, lr: 1.0e-2, max_seq_len: 256, logging_steps: 1,"
        " warmup_ratio: 0.0}\n"
    )
    out = tmp_path / "ddp"
    r = launch_training(data, out, cfg, "torchrun", 2, progress=False)
    assert r.num_processes == 2  # a real 2-process job, not two lone ones
    assert r.steps == 4 and r.final_loss < r.first_loss
    saved = json.loads((out / "train_result.json").read_text())
    assert saved["num_processes"] == 2
    from undo.lm.models import resolve_model

    assert resolve_model(str(out)).adapter == str(out)


def test_launcher_failure_is_a_user_error(tmp_path: Path) -> None:
    from undo.student.launch import launch_training

    cfg = tmp_path / "run.yaml"
    cfg.write_text("student: {model: /nonexistent/model}\n")
    data = tmp_path / "d.jsonl"
    data.write_text('{"id": "1", "prompt": "q", "completion": "a"}\n')
    with pytest.raises(UserError, match="torchrun training failed"):
        launch_training(data, tmp_path / "out", cfg, "torchrun", 1, progress=False)


def test_loss_on_completion_positions_equals_the_models_own(tiny: SimpleNamespace) -> None:
    """The CPU trainer projects onto the vocabulary only where the next token is a target;
    the loss must be the model's own token-mean NLL, padded or padding-free alike."""
    import torch

    from undo.student.train import _plain_loss_trainer

    tok = tiny.tok
    seqs = [tok(t, add_special_tokens=False)["input_ids"] for t in
            ("Question: two plus two? Answer: 2 + 2 = 4. The answer is 4.",
             "Q: 7 - 3? A: 7 - 3 = 4. The answer is 4. Done now.")]
    prompt_len = [5, 4]
    width = max(len(s) for s in seqs)
    ids = torch.zeros((2, width), dtype=torch.long)
    mask = torch.zeros_like(ids)
    labels = torch.full_like(ids, -100)
    for i, s in enumerate(seqs):
        ids[i, : len(s)] = torch.tensor(s)
        mask[i, : len(s)] = 1
        labels[i, prompt_len[i] : len(s)] = torch.tensor(s[prompt_len[i] :])
    trainer = SimpleNamespace(args=SimpleNamespace(average_tokens_across_devices=False))
    loss_fn = _plain_loss_trainer().compute_loss
    model = tiny.model.eval()
    with torch.no_grad():
        ref = model(input_ids=ids, attention_mask=mask, labels=labels).loss
        ours = loss_fn(trainer, model, {"input_ids": ids, "attention_mask": mask, "labels": labels})
        n = int((labels[:, 1:] != -100).sum())
        summed = loss_fn(trainer, model, {"input_ids": ids, "attention_mask": mask, "labels": labels},
                         num_items_in_batch=torch.tensor(n))
        # padding-free: both examples in one row, positions restarting at each example
        flat = {"input_ids": torch.cat([ids[i, : len(s)] for i, s in enumerate(seqs)])[None],
                "position_ids": torch.cat([torch.arange(len(s)) for s in seqs])[None],
                "labels": torch.cat([labels[i, : len(s)] for i, s in enumerate(seqs)])[None]}
        packed = loss_fn(trainer, model, flat)
    assert ours.item() == pytest.approx(ref.item(), abs=1e-5)
    assert summed.item() == pytest.approx(ref.item(), abs=1e-5)
    # the second example's first token is a target of nothing (-100 at its prompt start)
    assert packed.item() == pytest.approx(ref.item(), abs=1e-4)


@pytest.mark.slow
def test_lora_student_loads_merged_with_the_same_outputs(lora_student: SimpleNamespace) -> None:
    """An adapter loaded for generation is folded into the weights (fewer, larger matmuls);
    the logits are those of the adapter applied apart."""
    import torch
    from peft import PeftModel

    from undo.lm.models import load_model, quiet_deprecations, resolve_model

    resolved = resolve_model(str(lora_student.dir))
    merged = load_model(resolved, device="cpu").eval()
    assert not isinstance(merged, PeftModel)
    base_model = load_model(resolve_model((lora_student.dir / "undo_base.txt").read_text().strip()))
    with quiet_deprecations():
        apart = PeftModel.from_pretrained(base_model, str(lora_student.dir)).eval()
    ids = torch.tensor([[1, 2, 3, 4, 5, 6, 7, 8]])
    with torch.no_grad():
        a, b = merged(input_ids=ids).logits, apart(input_ids=ids).logits
    # fp32 rounding of W + BA against W x + B(A x): ~1e-4 of the logits' scale
    assert torch.allclose(a, b, rtol=1e-3, atol=1e-2), (a - b).abs().max()
    assert torch.equal(a.argmax(-1), b.argmax(-1))
    assert (a - base_model(input_ids=ids).logits).abs().max() > 1e-3  # the adapter did change it


def test_repeated_prompts_prefill_once_and_each_row_samples_on_its_own(tiny: SimpleNamespace) -> None:
    """k samples of one prompt (a teacher's refinements) share one prefill, and greedy and
    sampled rows share a batch: each row's text is the one it gets alone."""
    from undo.lm.generate import RowSampling

    prefill_rows: list[int] = []

    class Spy:  # the model, noting how many rows each prompt prefill carries
        forward = type(tiny.model).forward  # what _cache_kwarg inspects

        def __getattr__(self, name: str):
            return getattr(tiny.model, name)

        def __call__(self, **kw):
            if kw.get("logits_to_keep") == 1 and kw.get("attention_mask") is not None:
                prefill_rows.append(kw["input_ids"].shape[0])
            return tiny.model(**kw)

    animal = [{"role": "user", "content": "Name an animal and describe it."}]
    color = [{"role": "user", "content": "Name a color."}]
    convs = [animal, animal, animal, color]
    rows = [RowSampling(0.0), RowSampling(0.9, 0.95, 11), RowSampling(0.9, 0.95, 12), RowSampling(0.0)]
    gens = generate_chat(Spy(), tiny.tok, convs, max_new_tokens=16, batch_size=4, sampling=rows)
    assert prefill_rows == [2]  # two distinct prompts, not four rows
    alone = [generate_chat(tiny.model, tiny.tok, [c], max_new_tokens=16, sampling=[rs])[0].text
             for c, rs in zip(convs, rows, strict=True)]
    assert [g.text for g in gens] == alone


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux's")
def test_a_launched_trainer_dies_with_a_killed_run(tmp_path: Path) -> None:
    """kill -9 of `undo run` must take its launcher along: else it trains on and renames a
    stale student into the run later."""
    import signal
    import subprocess
    import time

    parent = subprocess.Popen([sys.executable, "-c", (
        "import os, subprocess, sys, time\n"
        "from undo.student.launch import _pdeathsig, die_with_parent\n"
        "me, set_it = os.getpid(), _pdeathsig()\n"
        "child = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'],\n"
        "                         preexec_fn=lambda: die_with_parent(me, set_it))\n"
        "print(child.pid, flush=True)\n"
        "time.sleep(60)\n")], stdout=subprocess.PIPE, text=True)
    assert parent.stdout is not None
    child = int(parent.stdout.readline())
    os.kill(child, 0)  # alive
    parent.send_signal(signal.SIGKILL)
    parent.wait()
    def alive(pid: int) -> bool:  # a zombie (dead, not yet reaped) counts as dead
        try:
            return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
        except FileNotFoundError:
            return False

    for _ in range(50):
        if not alive(child):
            break
        time.sleep(0.1)
    else:
        os.kill(child, signal.SIGKILL)
        pytest.fail("the launched process outlived its killed parent")
