"""WordPiece tokenisation through HuggingFace `tokenizers`, padded to the longest row of a batch.

The checkpoint's tokenizer.json pads every sentence to a fixed 128 tokens. Most SST-2 sentences are
a fraction of that, and attention and every matmul cost grow with the padded length, so padding is
turned off here and each batch is padded only to its own longest sentence (`pad`).
"""
from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

import numpy as np

from .errors import WeightsError

MAX_LENGTH = 128


class Batch(NamedTuple):
    input_ids: np.ndarray  # (B, T) int64, 0 ([PAD]) after each sentence's end
    attention_mask: np.ndarray  # (B, T) int64, 1 for real tokens, 0 for padding
    token_type_ids: np.ndarray  # (B, T) int64, all 0 for single sentences


class Tokenizer:
    """`Tokenizer(path_to_tokenizer_json)`; `encode(texts)` -> Batch; `ids(texts)` -> unpadded ids."""

    def __init__(self, path: str | Path, max_length: int = MAX_LENGTH):
        from tokenizers import Tokenizer as HFTokenizer

        path = Path(path)
        if path.is_dir():
            path = path / "tokenizer.json"
        if not path.is_file():
            raise WeightsError(f"{path}: no such file (the checkpoint folder needs tokenizer.json)")
        try:
            self.tk = HFTokenizer.from_file(str(path))
        except Exception as e:  # tokenizers raises a bare Exception for malformed files
            raise WeightsError(f"{path}: not a readable tokenizer.json: {e}") from None
        self.tk.no_padding()
        self.tk.enable_truncation(max_length)
        self.max_length = max_length
        self.pad_id = self.tk.token_to_id("[PAD]") or 0

    def ids(self, texts: list[str]) -> list[np.ndarray]:
        """Token ids of each text, [CLS] ... [SEP], truncated to max_length, not padded."""
        return [np.asarray(e.ids, dtype=np.int64) for e in self.tk.encode_batch(list(texts))]

    def pad(self, seqs: list[np.ndarray]) -> Batch:
        """Right-pad a list of id arrays to the longest one."""
        T = max(len(s) for s in seqs)
        input_ids = np.full((len(seqs), T), self.pad_id, dtype=np.int64)
        mask = np.zeros((len(seqs), T), dtype=np.int64)
        for row, s in enumerate(seqs):
            input_ids[row, : len(s)] = s
            mask[row, : len(s)] = 1
        return Batch(input_ids, mask, np.zeros_like(input_ids))

    def encode(self, texts: list[str]) -> Batch:
        """Tokenise and pad a batch of texts."""
        if isinstance(texts, str):
            texts = [texts]
        return self.pad(self.ids(texts))

    def tokens(self, text: str) -> list[str]:
        """The WordPiece tokens of one text (for showing what the model sees)."""
        return self.tk.encode(text).tokens
