"""Tiny GGUF models and LoRA adapters for llama-server, written with the pinned `gguf` package.

No small GGUF model can be downloaded on these machines, so the tests write their own: a
2-layer llama (64-wide embeddings, 4 heads) with a ~380-token SentencePiece vocabulary that
includes the 256 byte tokens, about 0.5 MB, loading in well under a second. Weights are
random but seeded, so the same seed always gives the same file (byte for byte) and the same
tokens at temperature 0; two seeds give different tokens. Text from random weights is
noise (often not even UTF-8): tests compare token ids, never text.

A LoRA adapter touches `output.weight` only (the logits), strongly enough that applying it
at scale 1 changes which token wins; at scale 0 it changes nothing.
"""

from __future__ import annotations

from pathlib import Path

import gguf
import numpy as np

ARCH = "llama"
N_EMBD, N_HEAD, N_LAYER, N_FF, N_CTX = 64, 4, 2, 128, 512
WORDS = (
    "the", "model", "hello", "world", "chat", "swap", "token", "weights", "server",
    "llama", "green", "blue", "red", "one", "two", "three", "yes", "no", "and", "or", "is",
    "it", "to", "of", "in", "on", "at", "we", "you", "they", "he", "she", "this", "that",
    "new", "old", "good", "bad", "fast", "slow", "up", "down", "left", "right", "day",
    "night", "sun", "moon", "star", "sky", "sea", "land", "tree",
)


def vocabulary() -> tuple[list[str], list[float], list[int]]:
    """(tokens, scores, types): control tokens, 256 byte tokens, then word pieces."""
    tokens = ["<unk>", "<s>", "</s>"]
    types = [gguf.TokenType.UNKNOWN, gguf.TokenType.CONTROL, gguf.TokenType.CONTROL]
    tokens += [f"<0x{b:02X}>" for b in range(256)]
    types += [gguf.TokenType.BYTE] * 256
    pieces = ["\u2581", *"abcdefghijklmnopqrstuvwxyz", *(f"\u2581{c}" for c in "abcdefghijklmnopqrstuvwxyz"),
              *"0123456789", *".,!?", *(f"\u2581{w}" for w in WORDS)]
    tokens += pieces
    types += [gguf.TokenType.NORMAL] * len(pieces)
    scores = [0.0] * (3 + 256) + [-float(i) for i in range(len(pieces))]
    return tokens, scores, [int(t) for t in types]


def _normal(rng: np.random.Generator, shape: tuple[int, ...], std: float) -> np.ndarray:
    return (rng.standard_normal(shape) * std).astype(np.float32)


def write_model(path: Path, seed: int) -> Path:
    """A random-weight llama GGUF; deterministic for a given seed."""
    rng = np.random.default_rng(seed)
    tokens, scores, types = vocabulary()
    n_vocab = len(tokens)
    w = gguf.GGUFWriter(str(path), ARCH)
    w.add_name(f"tiny-llama-{seed}")
    w.add_context_length(N_CTX)
    w.add_embedding_length(N_EMBD)
    w.add_block_count(N_LAYER)
    w.add_feed_forward_length(N_FF)
    w.add_head_count(N_HEAD)
    w.add_head_count_kv(N_HEAD)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_rope_dimension_count(N_EMBD // N_HEAD)
    w.add_file_type(gguf.LlamaFileType.ALL_F32)
    w.add_tokenizer_model("llama")
    w.add_token_list(tokens)
    w.add_token_scores(scores)
    w.add_token_types(types)
    w.add_bos_token_id(1)
    w.add_eos_token_id(2)
    w.add_unk_token_id(0)
    w.add_add_bos_token(True)
    # numpy shapes are (rows, cols) = ggml's (ne[1], ne[0]): a projection is (n_out, n_in)
    w.add_tensor("token_embd.weight", _normal(rng, (n_vocab, N_EMBD), 1.0))
    for i in range(N_LAYER):
        p = f"blk.{i}"
        w.add_tensor(f"{p}.attn_norm.weight", np.ones(N_EMBD, dtype=np.float32))
        for t in ("attn_q", "attn_k", "attn_v", "attn_output"):
            w.add_tensor(f"{p}.{t}.weight", _normal(rng, (N_EMBD, N_EMBD), 0.2))
        w.add_tensor(f"{p}.ffn_norm.weight", np.ones(N_EMBD, dtype=np.float32))
        w.add_tensor(f"{p}.ffn_gate.weight", _normal(rng, (N_FF, N_EMBD), 0.2))
        w.add_tensor(f"{p}.ffn_up.weight", _normal(rng, (N_FF, N_EMBD), 0.2))
        w.add_tensor(f"{p}.ffn_down.weight", _normal(rng, (N_EMBD, N_FF), 0.2))
    w.add_tensor("output_norm.weight", np.ones(N_EMBD, dtype=np.float32))
    w.add_tensor("output.weight", _normal(rng, (n_vocab, N_EMBD), 1.0))
    _finish(w)
    return path


def write_lora(path: Path, seed: int, rank: int = 4) -> Path:
    """A LoRA adapter on `output.weight` of any model written by `write_model`."""
    rng = np.random.default_rng(seed)
    n_vocab = len(vocabulary()[0])
    w = gguf.GGUFWriter(str(path), ARCH)
    w.add_type(gguf.GGUFType.ADAPTER)
    w.add_string(gguf.Keys.Adapter.TYPE, "lora")
    w.add_float32(gguf.Keys.Adapter.LORA_ALPHA, float(rank))  # effective scale = user scale
    # ggml: lora_a ne = [n_in, rank], lora_b ne = [rank, n_out]
    w.add_tensor("output.weight.lora_a", _normal(rng, (rank, N_EMBD), 1.0))
    w.add_tensor("output.weight.lora_b", _normal(rng, (n_vocab, rank), 2.0))
    _finish(w)
    return path


def _finish(w: gguf.GGUFWriter) -> None:
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
