"""Batched chat generation on transformers: the student's evaluation and the in-process teacher.

A hand-written decode loop rather than `model.generate`: a row that has finished
(end token, or the caller's stop rule says its reply is complete) is dropped from the
batch and its KV cache at once, so it stops costing compute. With `generate` a batch
pays for its longest row at full width until the very end; here the width shrinks
(bench/generation.py measures both, and transformers' `generate_batch`).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from undo.errors import UserError

# The caller's rule for a finished reply: where in the text the reply ends, or None while it
# goes on (the student's and teacher's: undo.grading.answer_line_end). It sees the last
# _TAIL_TOKENS tokens while decoding, so it must recognise an ending within them.
StopRule = Callable[[str], int | None]
_TAIL_TOKENS = 48


@dataclass
class Generation:
    text: str
    prompt_tokens: int
    completion_tokens: int
    finish_reason: str  # "stop" (end token) | "length" | "answer" (the stop rule ended it)


def stop_token_ids(model: Any, tokenizer: Any) -> set[int]:
    """End-of-turn ids: the tokenizer's eos, <|im_end|> where it exists, the model's eos."""
    ids: set[int] = set()
    if tokenizer.eos_token_id is not None:
        ids.add(int(tokenizer.eos_token_id))
    for tok in ("<|im_end|>", "<|eot_id|>", "<|endoftext|>", "<end_of_turn>"):
        tid = tokenizer.convert_tokens_to_ids(tok)
        if isinstance(tid, int) and tid != tokenizer.unk_token_id and tid >= 0:
            ids.add(tid)
    gen_eos = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    if isinstance(gen_eos, int):
        ids.add(gen_eos)
    elif gen_eos:
        ids.update(int(i) for i in gen_eos)
    return ids


def encode_chats(tokenizer: Any, conversations: list[list[dict]]) -> list[list[int]]:
    """Prompt token ids: chat template with the assistant turn opened."""
    out = []
    for conv in conversations:
        text = tokenizer.apply_chat_template(conv, tokenize=False, add_generation_prompt=True)
        # the template already wrote any BOS; adding special tokens again would double it
        out.append(tokenizer(text, add_special_tokens=False)["input_ids"])
    return out


@dataclass(frozen=True)
class RowSampling:
    """How one row picks its tokens: greedy when temperature is 0, else sampled with its
    own generator, so a row's sample does not depend on which rows share its batch."""

    temperature: float = 0.0
    top_p: float = 1.0
    seed: int | None = None


_NUCLEUS_CANDIDATES = 64  # top-p looks among this many tokens first: sorting 150k per row is slow


def _sample(logits: Any, rows: list[RowSampling], generators: list[Any]) -> Any:
    """Next token per row: argmax for greedy rows; for sampled rows a draw from the
    temperature-scaled distribution cut to its top-p nucleus (the smallest prefix of
    tokens, most likely first, that holds top_p of the mass), with the row's generator."""
    import torch

    nxt = logits.argmax(dim=-1)
    hot = [i for i, rs in enumerate(rows) if rs.temperature > 0]
    if not hot:
        return nxt
    temps = torch.tensor([rows[i].temperature for i in hot], device=logits.device)[:, None]
    probs = torch.softmax(logits[hot].float() / temps, dim=-1)
    top_p, top_ids = probs.topk(min(_NUCLEUS_CANDIDATES, probs.shape[-1]), dim=-1)
    for j, i in enumerate(hot):
        rs, gen = rows[i], generators[i]
        if rs.top_p >= 1.0:
            nxt[i] = torch.multinomial(probs[j], 1, generator=gen)[0]
            continue
        p, ids = top_p[j], top_ids[j]
        if p.sum() <= rs.top_p:  # a flat distribution: the nucleus reaches past the candidates
            p, ids = probs[j].sort(descending=True)
        # a token stays while the mass before it is within top_p (the top token always does)
        p = p.masked_fill(p.cumsum(dim=-1) - p > rs.top_p, 0.0)
        nxt[i] = ids[torch.multinomial(p, 1, generator=gen)[0]]
    return nxt


def cut(text: str, stop: StopRule | None) -> str:
    """`text` up to where `stop` says the reply ended (all of it when it has not)."""
    end = stop(text) if stop is not None else None
    return text[:end].rstrip() if end is not None else text


# Below this many shared tokens, a separate prefix pass costs more than it saves.
_MIN_SHARED_PREFIX = 8


def _shared_prefix(prompts: list[list[int]]) -> int:
    """Tokens every prompt starts with (system prompt, chat header, few-shot block),
    leaving each prompt at least one token of its own."""
    first, n = prompts[0], min(len(p) for p in prompts) - 1
    for p in prompts[1:]:
        i = 0
        while i < n and p[i] == first[i]:
            i += 1
        n = i
    return n if len(prompts) > 1 and n >= _MIN_SHARED_PREFIX else 0


def _cache_kwarg(model: Any) -> str:
    """transformers 5.x renamed forward's `past_key_values` to `cache` (the old name warns);
    ask the unwrapped model which one it takes so every 5.x release works quietly."""
    while hasattr(model, "get_base_model"):  # a PEFT wrapper forwards **kwargs
        model = model.get_base_model()
    return _forward_cache_kwarg(type(model))


@functools.lru_cache(maxsize=8)
def _forward_cache_kwarg(model_class: type) -> str:
    import inspect

    forward = getattr(model_class, "forward", model_class.__call__)  # any callable LM works
    return "cache" if "cache" in inspect.signature(forward).parameters else "past_key_values"


def _prefill(model: Any, prompts: list[list[int]], pad_id: int, cache: Any,
             cache_kw: str) -> tuple[Any, Any, Any]:
    """Run the prompts into `cache`; return (last logits, attention mask, last positions).

    A prefix shared by every prompt runs once at batch 1 and its cache is copied to
    each row; the rest is left-padded after it. Pads sit in the middle then, which
    the mask hides and the positions (mask cumsum) skip, so each row sees exactly
    its own prompt.
    """
    import torch

    device = model.device
    shared = _shared_prefix(prompts)
    if shared:
        model(
            input_ids=torch.tensor([prompts[0][:shared]], device=device),
            **{cache_kw: cache},
            use_cache=True,
            logits_to_keep=1,
        )
        cache.batch_repeat_interleave(len(prompts))
    rests = [p[shared:] for p in prompts]
    width = max(len(r) for r in rests)
    input_ids = torch.full((len(rests), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rests), shared + width), dtype=torch.long)
    mask[:, :shared] = 1
    for i, r in enumerate(rests):  # left padding: every row's next token lands in the same column
        input_ids[i, width - len(r) :] = torch.tensor(r, dtype=torch.long)
        mask[i, shared + width - len(r) :] = 1
    input_ids, mask = input_ids.to(device), mask.to(device)
    positions = (mask.cumsum(-1) - 1).clamp(min=0)[:, shared:]
    logits = model(
        input_ids=input_ids,
        attention_mask=mask,
        position_ids=positions,
        **{cache_kw: cache},
        use_cache=True,
        logits_to_keep=1,  # the prompt's other logits would be vocab x length of waste
    ).logits[:, -1, :]
    return logits, mask, positions[:, -1]


def _new_cache(model: Any) -> Any:
    # transformers' own cache; the model fills it, rows leave it by reorder_cache
    from transformers import DynamicCache

    return DynamicCache(config=model.config)


def _generate_batch(
    model: Any,
    tokenizer: Any,
    prompts: list[list[int]],
    sampling: list[RowSampling],
    max_new_tokens: int,
    stop: StopRule | None,
    stop_ids: set[int],
) -> list[Generation]:
    import torch

    device = model.device
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    rows = list(range(len(prompts)))  # original row of each live batch slot
    out_ids: list[list[int]] = [[] for _ in prompts]
    finish: list[str] = ["length"] * len(prompts)
    cache = _new_cache(model)
    end_ids = torch.tensor(sorted(stop_ids), device=device)
    generators = [torch.Generator(device=device).manual_seed(rs.seed or 0) if rs.temperature > 0 else None
                  for rs in sampling]
    # several samples of one prompt (a teacher's k refinements) prefill it once
    distinct: dict[tuple[int, ...], int] = {}
    source = [distinct.setdefault(tuple(p), len(distinct)) for p in prompts]

    with torch.inference_mode():
        cache_kw = _cache_kwarg(model)  # once per batch, not per decoded token
        logits, mask, last_pos = _prefill(model, [list(p) for p in distinct], pad_id, cache, cache_kw)
        if len(distinct) < len(prompts):
            idx = torch.tensor(source, device=device)
            cache.reorder_cache(idx)
            logits, mask, last_pos = logits[idx], mask[idx], last_pos[idx]
        for step in range(max_new_tokens):
            nxt = _sample(logits, [sampling[r] for r in rows], [generators[r] for r in rows])
            keep = _record_step(nxt, end_ids, rows, out_ids, finish, stop, tokenizer)
            if not keep or step == max_new_tokens - 1:
                break
            if len(keep) < len(rows):  # drop finished rows, cache included
                idx = torch.tensor(keep, device=device)
                cache.reorder_cache(idx)
                mask, nxt, last_pos = mask[idx], nxt[idx], last_pos[idx]
                rows = [rows[s] for s in keep]
            mask = torch.cat([mask, mask.new_ones((len(rows), 1))], dim=1)
            last_pos = last_pos + 1
            logits = model(
                input_ids=nxt[:, None],
                attention_mask=mask,
                position_ids=last_pos[:, None],
                **{cache_kw: cache},
                use_cache=True,
            ).logits[:, -1, :]

    results = []
    for i, p in enumerate(prompts):
        text = tokenizer.decode(out_ids[i], skip_special_tokens=True)
        if finish[i] == "answer":
            text = cut(text, stop)
        results.append(Generation(text.strip(), len(p), len(out_ids[i]), finish[i]))
    return results


def _record_step(nxt: Any, end_ids: Any, rows: list[int], out_ids: list[list[int]], finish: list[str],
                 stop: StopRule | None, tokenizer: Any) -> list[int]:
    """Each live row's new token appended; a row that ended (end token, or `stop` says its
    reply is complete) gets its finish reason. Returns the batch slots that go on."""
    import torch

    is_end = torch.isin(nxt, end_ids).tolist() if len(end_ids) else [False] * len(rows)
    keep: list[int] = []
    for slot, (row, tok, ended) in enumerate(zip(rows, nxt.tolist(), is_end, strict=True)):
        out_ids[row].append(tok)
        if ended:
            finish[row] = "stop"
        elif stop is not None and stop(
            tokenizer.decode(out_ids[row][-_TAIL_TOKENS:], skip_special_tokens=True)
        ) is not None:
            finish[row] = "answer"
        else:
            keep.append(slot)
    return keep


def _batches(conversations: list[list[dict]], prompts: list[list[int]], batch_size: int) -> list[list[int]]:
    """Row indices per batch. Conversations with the same earlier turns (system prompt,
    worked examples) batch together, so each batch's shared prefix runs once: one
    conversation without an example (its own question was that example) in a batch
    would cut the shared part to the system prompt and make every row pay for the
    examples (measured: 20 s instead of 2 s to prefill 16 three-shot teacher prompts).
    Within a group, longest first: similar lengths share a batch (little padding), and
    a batch that does not fit in memory fails at once rather than at the end; repeats
    of one prompt sit together, so they share a batch and its one prefill.

    A group that holds one prompt (a lone question, or the k samples of one) has no
    prefix to share with itself, so a batch of its own saves nothing: such groups pool
    into one batch, which prefills the same tokens and decodes them together (measured on
    the demo's three lone explain prompts: 20.1 s one by one, 18.4 s together;
    bench/RESULTS.md, issue 21 §6)."""
    groups: dict[str, list[int]] = {}
    for i, conv in enumerate(conversations):
        groups.setdefault(repr(conv[:-1]), []).append(i)
    lone = [k for k, g in groups.items() if len({tuple(prompts[i]) for i in g}) == 1]
    if len(lone) > 1:
        groups[""] = [i for k in lone for i in groups.pop(k)]
    batches = []
    for rows in sorted(groups.values(), key=lambda g: -max(len(prompts[i]) for i in g)):
        rows.sort(key=lambda i: (-len(prompts[i]), prompts[i]))  # repeats of a prompt adjacent
        batches += [rows[s : s + batch_size] for s in range(0, len(rows), batch_size)]
    return batches


def generate_chat(
    model: Any,
    tokenizer: Any,
    conversations: list[list[dict]],
    max_new_tokens: int,
    temperature: float = 0.0,
    top_p: float = 1.0,
    batch_size: int = 16,
    stop: StopRule | None = None,
    seed: int | None = None,
    progress: Callable[[int], None] | None = None,
    *,
    sampling: list[RowSampling] | None = None,
    ignore_eos: bool = False,
) -> list[Generation]:
    """One assistant reply per conversation, in the order given.

    Greedy when temperature == 0, else sampling; or `sampling` gives each conversation
    its own (temperature, top_p, seed), so greedy and sampled requests share batches.
    A sampled row draws from its own generator, seeded from (seed, row) or its own
    seed: a rerun with the same inputs is identical, however they are batched.
    Repeated conversations (k samples of one prompt) are prefilled once per batch.
    `stop` (the caller's rule) ends a row once its reply is complete, cut there.
    `progress(n)` is called after each batch with the number of conversations it
    finished. `ignore_eos` (benchmarks only) runs every row to max_new_tokens.
    """
    if not conversations:
        return []
    if batch_size < 1 or max_new_tokens < 1:
        raise UserError("generation needs batch_size >= 1 and max_new_tokens >= 1")
    if sampling is None:
        sampling = [RowSampling(temperature, top_p, (seed or 0) * 100_003 + i)
                    for i in range(len(conversations))]
    elif len(sampling) != len(conversations):
        raise ValueError("sampling needs one entry per conversation")
    prompts = encode_chats(tokenizer, conversations)
    stops = set() if ignore_eos else stop_token_ids(model, tokenizer)
    results: list[Generation | None] = [None] * len(prompts)
    was_training = model.training
    model.eval()
    try:
        for chunk in _batches(conversations, prompts, batch_size):
            outs = _generate_batch(
                model,
                tokenizer,
                [prompts[i] for i in chunk],
                [sampling[i] for i in chunk],
                max_new_tokens,
                None if ignore_eos else stop,
                stops,
            )
            for i, g in zip(chunk, outs, strict=True):
                results[i] = g
            if progress:
                progress(len(chunk))
    finally:
        model.train(was_training)
    return [r for r in results if r is not None]
