"""Student training speed on a run's real training data: the old path against today's.

    .venv/bin/python bench/train_speed.py runs/demo/iter_0/train_data.jsonl [--epochs 1]

"old": padded batches, the model's own loss (LM head over every position, prompt included);
"new": today's path, the LM head only at positions whose next token is a target, with
padded batches (the default) or `--padding-free` batches. Same examples, order, seed and optimizer, so
the loss curves must agree to rounding; each arm runs in its own process, one after the
other (two cores: never time two at once). Prints tokens/s (real tokens only), the
optimisation loop's seconds, the ratio, and the largest difference between the curves.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def _old_trainer() -> Any:
    """The loss before this change: the model's own, logits at every position."""
    from trl import SFTTrainer

    class OldLoss(SFTTrainer):
        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):  # type: ignore[no-untyped-def]
            outputs = model(**inputs, use_cache=False, num_items_in_batch=num_items_in_batch)
            if model.training:
                seen = self.accelerator.gather_for_metrics(inputs["attention_mask"].sum()).sum().item()
                self._total_train_tokens += seen
                self._metrics["train"]["num_tokens"] = [self._total_train_tokens]
            return (outputs.loss, outputs) if return_outputs else outputs.loss

    return OldLoss


def child(arm: str, data: str, epochs: float, model: str, padding_free: bool) -> None:
    from undo.config import LoraConfig, StudentConfig, TrainConfig
    from undo.runstore import read_jsonl
    from undo.student import train as train_mod
    from undo.tasks.base import INSTRUCTION

    rows = list(read_jsonl(Path(data)))
    # the exact user message the loop trains on (tasks.base.student_messages)
    examples = [{"id": r["id"], "prompt": f"{r['question']}\n{INSTRUCTION}", "completion": r["rationale"]}
                for r in rows]
    if arm == "old":
        train_mod._plain_loss_trainer = _old_trainer
    student = StudentConfig(model=model, lora=LoraConfig(r=16, alpha=32, dropout=0.0))
    train = TrainConfig(epochs=epochs, lr=1e-3, batch_size=8, max_seq_len=256, logging_steps=1,
                        padding_free=padding_free and arm == "new")
    with tempfile.TemporaryDirectory() as d:
        r = train_mod.train_student(examples, Path(d) / "s", student, train, seed=0, progress=False)
    print(json.dumps({"tokens_per_s": r.tokens_per_s, "train_s": r.train_s, "steps": r.steps,
                      "num_tokens": r.num_tokens, "losses": r.losses}))


def main() -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    ap.add_argument("data", help="a run's iter_K/train_data.jsonl")
    ap.add_argument("--epochs", type=float, default=1.0)
    ap.add_argument("--model", default="smollm2-135m-instruct")
    ap.add_argument("--padding-free", action="store_true", help="the new arm packs each batch into one row")
    ap.add_argument("--child", choices=["old", "new"], help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.child:
        child(a.child, a.data, a.epochs, a.model, a.padding_free)
        return
    res = {}
    for arm in ("old", "new"):
        p = subprocess.run([sys.executable, __file__, a.data, "--epochs", str(a.epochs), "--model", a.model,
                            "--child", arm, *(["--padding-free"] if a.padding_free else [])],
                           capture_output=True, text=True)
        if p.returncode != 0:
            raise SystemExit(f"{arm} failed:\n{p.stderr[-3000:]}")
        res[arm] = json.loads(p.stdout.strip().splitlines()[-1])
        r = res[arm]
        print(f"{arm}: {r['steps']} steps, {r['num_tokens']} tokens, {r['train_s']:.1f} s, "
              f"{r['tokens_per_s']:.0f} tokens/s")
    old, new = res["old"], res["new"]
    diff = max(abs(x - y) for x, y in zip(old["losses"], new["losses"], strict=True))
    print(f"speed-up new/old: {new['tokens_per_s'] / old['tokens_per_s']:.2f}x; same tokens: "
          f"{old['num_tokens'] == new['num_tokens']}; largest loss difference over {len(old['losses'])} "
          f"logged steps: {diff:.2e} (first loss {old['losses'][0]:.4f})")


if __name__ == "__main__":
    main()
