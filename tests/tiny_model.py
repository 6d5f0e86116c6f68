"""A tiny randomly initialised Llama-architecture chat model, built from a config in a second.

For tests and the GPU check (bench/gpu_check.sh): no weights to download or carry. Its
tokenizer is a byte-level BPE trained here on a few sentences, with a ChatML template, so
every path that needs a chat model (TRL SFT, our decode loop, merging, vLLM) runs on it.
"""

from __future__ import annotations

from pathlib import Path

CHATML = (
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\\n' + message['content']"
    " + '<|im_end|>' + '\\n' }}{% endfor %}{% if add_generation_prompt %}"
    "{{ '<|im_start|>assistant\\n' }}{% endif %}"
)

_CORPUS = [
    "Question: Tom has 3 apples and buys 4 more. How many apples does he have?",
    "Tom starts with 3 apples. 3 + 4 = 7. The answer is 7.",
    "Solve the problem step by step. End with a line of the form The answer is N.",
    "A farm has 12 cows and 5 hens. Each cow has 4 legs and each hen has 2 legs.",
    "12 * 4 = 48 and 5 * 2 = 10, so 48 + 10 = 58 legs. The answer is 58.",
    "What is 128 - 39? 128 - 39 = 89. The answer is 89.",
    "0 1 2 3 4 5 6 7 8 9 10 100 1000 + - * / = . , ? ! ( ) : ;",
]


def build_tiny_llama(folder: Path, *, hidden: int = 64, layers: int = 2, heads: int = 4,
                     seed: int = 0, vocab: int = 400) -> Path:
    """Write a tokenizer and a random Llama (hidden x layers) to `folder`; return it."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    bpe.train_from_iterator(_CORPUS * 4, trainers.BpeTrainer(
        vocab_size=vocab, special_tokens=specials, show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    tok = PreTrainedTokenizerFast(tokenizer_object=bpe, eos_token="<|im_end|>",
                                  pad_token="<|endoftext|>")
    tok.chat_template = CHATML
    tok.save_pretrained(folder)
    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=len(tok), hidden_size=hidden, intermediate_size=hidden * 2,
        num_hidden_layers=layers, num_attention_heads=heads, num_key_value_heads=max(1, heads // 2),
        max_position_embeddings=2048, tie_word_embeddings=False,
        eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id, bos_token_id=None,
    )
    LlamaForCausalLM(config).save_pretrained(folder)
    return folder
