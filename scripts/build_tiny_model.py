#!/usr/bin/env python3
"""Build a tiny Llama-architecture model directory for vLLM, with no downloads.

Usage: python scripts/build_tiny_model.py OUT_DIR [--vocab-size 4096] [--corpus DIR]
                                              [--layers 2] [--hidden 128] [--heads 4]

Run it with the vLLM venv's interpreter (it needs the `tokenizers` library):

    .venv-vllm/bin/python scripts/build_tiny_model.py .models/tiny-llama

The directory holds only `config.json`, `tokenizer.json` and `tokenizer_config.json`:
no weights. `vllm serve OUT_DIR --load-format dummy` fills the weights with random
values, so outputs are gibberish, but token counts, KV-cache use, prefix caching and
timing behave as in a real model, which is all the thunder tests need.

KV cost per token = 2 (K and V) x layers x kv_heads x head_dim x 2 bytes (bf16)
                  = 2 x 2 x 4 x 32 x 2 = 1024 bytes, so `--kv-cache-memory-bytes`
maps to KV capacity in tokens as bytes / 1 KiB. Larger shapes (`--layers`,
`--hidden`, `--heads`; head_dim = hidden / heads, as many KV heads as heads)
make prefill dearer per token, so re-prefill is a larger share of a step:
KV bytes per token = 4 x layers x hidden (printed after the build).

The tokenizer is a byte-level BPE trained on the running interpreter's standard
library sources, read in sorted order: the same Python version gives the same
vocabulary on every machine, whatever else is installed. Takes a few seconds.
"""

from __future__ import annotations

import argparse
import json
import sys
import sysconfig
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # imported lazily below: only the vLLM venv has tokenizers
    from tokenizers import Tokenizer

BOS, EOS, PAD = "<|bos|>", "<|eos|>", "<|pad|>"
ROLE_TOKENS = ("<|system|>", "<|user|>", "<|assistant|>", "<|tool|>")
SPECIAL_TOKENS = (BOS, EOS, PAD, *ROLE_TOKENS)

# One role marker token, the content, then EOS per message. Content may arrive as a
# list of OpenAI content parts; only text parts matter for a text-only model.
CHAT_TEMPLATE = (
    "{{ bos_token }}"
    "{% for message in messages %}"
    "{{ '<|' + message['role'] + '|>' + '\\n' }}"
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% elif message['content'] %}"
    "{% for part in message['content'] %}{% if part['type'] == 'text' %}{{ part['text'] }}{% endif %}{% endfor %}"
    "{% endif %}"
    "{{ eos_token + '\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|assistant|>\\n' }}{% endif %}"
)

# Default shapes chosen for 1 KiB of KV per token in bf16 (see module docstring).
LAYERS, HEADS, HIDDEN = 2, 4, 128
CORPUS_BYTES = 4 * 2**20  # enough text for 4k merges; more only slows training


def corpus_files(root: Path, budget_bytes: int) -> list[str]:
    """The first `.py` files under `root` in sorted path order, up to `budget_bytes`."""
    picked: list[str] = []
    total = 0
    for path in sorted(root.rglob("*.py")):
        # site-packages and test data can hold huge generated files; skip those.
        if "site-packages" in path.parts or not path.is_file():
            continue
        size = path.stat().st_size
        if size > 256 * 1024:
            continue
        picked.append(str(path))
        total += size
        if total >= budget_bytes:
            break
    return picked


def train_tokenizer(files: list[str], vocab_size: int) -> Tokenizer:
    """A byte-level BPE tokenizer with the special tokens at ids 0..len(SPECIAL_TOKENS)-1."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=2,
        special_tokens=list(SPECIAL_TOKENS),
        # all 256 byte symbols, so any text (any language, any bytes) is encodable
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train(files, trainer)
    return tokenizer


def kv_bytes_per_token(layers: int, hidden: int) -> int:
    """K and V, every layer, all heads (head_dim x heads = hidden), 2 bytes each (bf16)."""
    return 2 * layers * hidden * 2


def model_config(vocab_size: int, max_positions: int, layers: int = LAYERS, hidden: int = HIDDEN,
                 heads: int = HEADS) -> dict[str, object]:
    """A Llama `config.json`; the default shape keeps KV at 1 KiB per token in bf16."""
    if layers < 1 or heads < 1 or hidden % heads or (hidden // heads) % 16:
        raise SystemExit(f"bad shape: layers {layers}, hidden {hidden}, heads {heads} "
                         "(hidden must be heads x a multiple of 16)")
    return {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "hidden_size": hidden,
        "intermediate_size": 4 * hidden,
        "num_hidden_layers": layers,
        "num_attention_heads": heads,
        "num_key_value_heads": heads,
        "head_dim": hidden // heads,
        "hidden_act": "silu",
        "max_position_embeddings": max_positions,
        "rms_norm_eps": 1e-5,
        "rope_theta": 10000.0,
        "tie_word_embeddings": False,
        "vocab_size": vocab_size,
        "bos_token_id": SPECIAL_TOKENS.index(BOS),
        "eos_token_id": SPECIAL_TOKENS.index(EOS),
        "pad_token_id": SPECIAL_TOKENS.index(PAD),
        "torch_dtype": "bfloat16",
    }


def tokenizer_config(max_positions: int) -> dict[str, object]:
    """`tokenizer_config.json` for transformers' fast tokenizer, with the chat template."""
    return {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "bos_token": BOS,
        "eos_token": EOS,
        "pad_token": PAD,
        "additional_special_tokens": list(ROLE_TOKENS),
        # the template inserts BOS itself; adding it again would double it
        "add_bos_token": False,
        "add_eos_token": False,
        "clean_up_tokenization_spaces": False,
        "model_max_length": max_positions,
        "chat_template": CHAT_TEMPLATE,
    }


def build(out_dir: Path, vocab_size: int, max_positions: int, corpus: Path, layers: int = LAYERS,
          hidden: int = HIDDEN, heads: int = HEADS) -> None:
    config = model_config(vocab_size, max_positions, layers, hidden, heads)  # shape errors before training
    files = corpus_files(corpus, CORPUS_BYTES)
    if not files:
        raise SystemExit(f"no .py files to train the tokenizer on under {corpus}")
    tokenizer = train_tokenizer(files, vocab_size)
    # config.vocab_size must cover every id; a tokenizer short of merges is still valid.
    if tokenizer.get_vocab_size() > vocab_size:
        raise SystemExit(f"tokenizer has {tokenizer.get_vocab_size()} ids, more than {vocab_size}")
    out_dir.mkdir(parents=True, exist_ok=True)
    tokenizer.save(str(out_dir / "tokenizer.json"))
    write_json(out_dir / "tokenizer_config.json", tokenizer_config(max_positions))
    write_json(out_dir / "config.json", config)


def write_json(path: Path, data: dict[str, object]) -> None:
    path.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n", encoding="utf-8")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out_dir", type=Path, help="directory to write the model into")
    parser.add_argument("--vocab-size", type=int, default=4096)
    parser.add_argument("--max-positions", type=int, default=8192)
    parser.add_argument(
        "--corpus",
        type=Path,
        default=Path(sysconfig.get_paths()["stdlib"]),
        help="directory of .py files to train the tokenizer on (default: Python's stdlib)",
    )
    parser.add_argument("--layers", type=int, default=LAYERS)
    parser.add_argument("--hidden", type=int, default=HIDDEN, help="hidden size; the MLP is 4x this")
    parser.add_argument("--heads", type=int, default=HEADS, help="attention heads (as many KV heads)")
    args = parser.parse_args(argv)
    build(args.out_dir, args.vocab_size, args.max_positions, args.corpus, args.layers, args.hidden, args.heads)
    print(args.out_dir, file=sys.stdout)
    print(f"KV bytes per token: {kv_bytes_per_token(args.layers, args.hidden)}", file=sys.stderr)


if __name__ == "__main__":
    main()
