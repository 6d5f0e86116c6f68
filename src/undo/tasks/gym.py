"""`task.name: gym`: procedurally generated, verifiable tasks from reasoning-gym.

    task: {name: gym, dataset: leg_counting, config: {min_animals: 2, max_animals: 3}}

reasoning-gym draws item i of a dataset made with seed S from `Random(S + i)`. Each
(run seed, split) gets its own block of those generator states, so no two seeds and no
two splits ever draw the same item, whatever the sizes asked for. A question text can
still come out of two different states by chance; so every question also belongs to one
split by a hash of its text (a quarter of all possible questions can only ever be test,
a quarter only val, half only train), and a test question of any seed is never in
another seed's train or val. Inside one seed the splits are disjoint too. `task.config`
is passed to the dataset's own config class (its difficulty knobs). Needs
`pip install 'undo-distill[gym]'`.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from typing import Any

from undo.config import TaskConfig
from undo.errors import UserError
from undo.tasks.base import Record, Task, register_task

SPLITS = ("train", "val", "test")
# Generator states per (run seed, split): far more than any split draws, so blocks never meet.
STATE_BLOCK = 2**32
# A generator may repeat questions at low difficulty and three quarters of what it draws
# belong to other splits: draw up to this many times the size asked.
OVERSAMPLE = 40


def split_seed(run_seed: int, split: str) -> int:
    """The first generator state of (run seed, split): blocks of STATE_BLOCK never overlap."""
    return (run_seed * len(SPLITS) + SPLITS.index(split)) * STATE_BLOCK


def split_of(question: str) -> str:
    """The one split a question text may ever be in, for every seed (a hash of the text)."""
    zone = hashlib.sha256(question.encode()).digest()[0] % 4
    return "test" if zone == 0 else "val" if zone == 1 else "train"


def create(dataset: str, options: dict[str, Any], seed: int, size: int) -> Any:
    """The reasoning-gym dataset object; bad names and options become one-line errors."""
    try:
        import reasoning_gym
        from reasoning_gym.factory import DATASETS
    except ImportError:
        raise UserError("task 'gym' needs reasoning-gym: pip install 'undo-distill[gym]'") from None
    if dataset not in DATASETS:
        import difflib

        close = difflib.get_close_matches(dataset, list(DATASETS), n=1)
        hint = f" (did you mean '{close[0]}'?)" if close else ""
        raise UserError(f"task.dataset: unknown reasoning-gym dataset '{dataset}'{hint}")
    known = set(DATASETS[dataset][1].__dataclass_fields__) - {"seed", "size"}
    for key in options:
        if key not in known:
            raise UserError(f"task.config.{key}: not an option of reasoning-gym '{dataset}' "
                            f"(options: {', '.join(sorted(known))})")
    try:
        return reasoning_gym.create_dataset(dataset, seed=seed, size=size, **options)
    except (AssertionError, ValueError, TypeError) as e:
        raise UserError(f"task.config for '{dataset}' rejected by reasoning-gym: {e}") from None


# --- worked examples (teacher.few_shot) from the generator's own metadata --------------


def _legs_rationale(entry: dict[str, Any]) -> str:
    from reasoning_gym.arithmetic.leg_counting import ANIMALS

    animals = entry["metadata"]["animals"]
    lines = [f"{n} {name}s x {ANIMALS[name]} legs = {n * ANIMALS[name]}" for name, n in animals.items()]
    parts = [str(n * ANIMALS[name]) for name, n in animals.items()]
    lines.append(f"Total: {' + '.join(parts)} = {entry['answer']}")
    return "\n".join(lines)


def _chain_rationale(entry: dict[str, Any]) -> str:
    """Left to right, one operation per line: '67 - 94 = -27', '-27 + 73 = 46'."""
    tokens = entry["metadata"]["expression"].split()
    total, lines = int(tokens[0]), []
    for op, term in zip(tokens[1::2], tokens[2::2], strict=True):
        new = total + int(term) if op == "+" else total - int(term)
        lines.append(f"{total} {op} {term} = {new}")
        total = new
    return "\n".join(lines)


def _cot_rationale(entry: dict[str, Any]) -> str:
    return str(entry["metadata"]["answer_cot"]).strip()


# dataset -> entry -> a concise gold rationale (without the answer line)
GOLD_RATIONALES: dict[str, Callable[[dict[str, Any]], str]] = {
    "leg_counting": _legs_rationale,
    "chain_sum": _chain_rationale,
    "gsm_symbolic": _cot_rationale,
}


# --- splits ------------------------------------------------------------------------------


def _record(dataset: str, entry: dict[str, Any], answer_type: str) -> Record:
    from undo.grading import answer_type as get_answer_type

    question = entry["question"].strip()
    where = f"reasoning-gym '{dataset}' item {entry['metadata'].get('source_index')}"
    answer = get_answer_type(answer_type).parse_gold(entry["answer"], None, where)
    meta: dict[str, Any] = {"gym_dataset": dataset, "gym_index": entry["metadata"].get("source_index")}
    if dataset in GOLD_RATIONALES:
        meta["gold_rationale"] = GOLD_RATIONALES[dataset](entry)
    rid = f"{dataset}-{hashlib.sha1(question.encode()).hexdigest()[:12]}"
    return Record(rid, question, answer, answer_type, None, meta)


def generate_splits(cfg: TaskConfig, seed: int, sizes: dict[str, int | None]) -> dict[str, list[Record]]:
    """Distinct questions per split: each split draws from its own block of generator states
    and keeps only the questions whose text belongs to it (`split_of`)."""
    if not cfg.dataset:
        raise UserError("task.dataset is required for task 'gym' (e.g. task.dataset=leg_counting)")
    answer_type = cfg.answer_type or "number"
    out: dict[str, list[Record]] = {}
    for split in SPLITS:
        n = sizes[split]
        if n is None:
            raise UserError(f"splits.{split} must be a number for task 'gym' (generated data has no end)")
        ds = create(cfg.dataset, cfg.config, split_seed(seed, split), max(n, 1) * OVERSAMPLE)
        seen: set[str] = set()
        records: list[Record] = []
        for i in range(len(ds)):
            if len(records) == n:
                break
            entry = ds[i]
            question = entry["question"].strip()
            if question in seen or split_of(question) != split:
                continue
            seen.add(question)
            records.append(_record(cfg.dataset, entry, answer_type))
        if len(records) < n:
            raise UserError(f"reasoning-gym '{cfg.dataset}' with task.config={cfg.config} gave only "
                            f"{len(records)} distinct {split} questions for splits.{split}={n}; "
                            "ask for fewer or widen the config")
        out[split] = records
    return out


@register_task("gym")
def gym_task(cfg: TaskConfig) -> Task:
    def load(source: str | None, part: str) -> list[Record]:
        raise UserError("task 'gym' generates its splits; it has no file to load")

    return Task("gym", cfg.answer_type or "number", load,
                generate=lambda seed, sizes: generate_splits(cfg, seed, sizes))
