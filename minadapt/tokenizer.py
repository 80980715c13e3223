"""Tokenisation through HuggingFace `tokenizers`, padded to the longest row of a batch.

Each checkpoint's own tokenizer.json says how to cut text into tokens (BERT's and DistilBERT's and
ELECTRA's WordPiece, RoBERTa's byte-level BPE, XLM-R's SentencePiece unigram) and how to frame one
text or a pair (its post-processor): BERT's layout is shown below; RoBERTa and XLM-R write
`<s> a </s></s> b </s>`. Models without token types (RoBERTa and XLM-R have a one-row table,
DistilBERT none) get type ids 0 everywhere, as transformers gives them.

The checkpoint's tokenizer.json pads every sentence to a fixed 128 tokens. Most SST-2 sentences are
a fraction of that, and attention and every matmul cost grow with the padded length, so padding is
turned off here and each batch is padded only to its own longest sentence (`pad`).

Sentence pairs (RTE, MRPC, STS-B, ...) use BERT's pair layout, the `pair` template of the
checkpoint's tokenizer.json:

    tokens          [CLS] a1 a2 a3 [SEP] b1 b2 [SEP]
    token_type_ids    0   0  0  0    0   1  1    1

so the model tells the two texts apart by the segment embedding added to each token
(`embeddings.token_type_embeddings`), not only by the [SEP] between them. A pair longer than
`max_length` is cut "longest first", as HF's fast tokenizers do (`truncation=True`). With
m = max_length - 3 tokens left for the two texts: when the shorter text takes at most half of m it is
kept whole and the longer one is cut to the rest; otherwise both are cut to half, the longer text
(b on a tie) getting the odd token. Tokens are always cut from the end of a text. (transformers'
slow, pure-Python tokenizer removes one token at a time from the longer text instead, which can put
the odd token on the other side: the fast rule is the one matched here, and tested.)
"""
from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import NamedTuple

import numpy as np

from .architectures import ARCHITECTURES
from .errors import ConfigError, WeightsError

MAX_LENGTH = 128
SPECIAL_TOKENS_PAIR = 3  # [CLS] a [SEP] b [SEP]: the shortest max_length that leaves room for text


class Batch(NamedTuple):
    input_ids: np.ndarray  # (B, T) int64, 0 ([PAD]) after each sentence's end
    attention_mask: np.ndarray  # (B, T) int64, 1 for real tokens, 0 for padding
    token_type_ids: np.ndarray  # (B, T) int64, 0 on [CLS] a [SEP], 1 on b [SEP], 0 on padding


class Tokenizer:
    """`Tokenizer(path_to_tokenizer_json)`; `encode(texts, pairs=None)` -> Batch;
    `ids(texts, pairs=None)` -> unpadded ids; `ids_and_types(texts, pairs=None)` -> ids and type ids.

    `max_length` (tokens per example, special tokens included) may be raised up to the number of
    positions the checkpoint's position table covers (512 for BERT-family checkpoints), read from the
    config.json beside tokenizer.json when there is one: the model has no position embedding beyond
    that. The same config.json says whether the model has token types and which id pads.
    """

    def __init__(self, path: str | Path, max_length: int = MAX_LENGTH):
        from tokenizers import Tokenizer as HFTokenizer

        path = Path(path)
        if path.is_dir():
            path = path / "tokenizer.json"
        if not path.is_file():
            raise WeightsError(f"{path}: no such file (the checkpoint folder needs tokenizer.json)")
        self.config = path.parent / "config.json"
        facts = _checkpoint_facts(self.config)
        self.limit = facts.get("max_tokens")  # positions the model has, or None
        self.positions = facts.get("max_position_embeddings")
        self.token_types = facts.get("token_types", True)  # False: type ids are all 0
        try:
            self.tk = HFTokenizer.from_file(str(path))
        except Exception as e:  # tokenizers raises a bare Exception for malformed files
            raise WeightsError(f"{path}: not a readable tokenizer.json: {e}") from None
        self.tk.no_padding()
        self.set_max_length(max_length)
        pad = facts.get("pad_token_id")
        if pad is None:
            pad = self.tk.token_to_id("[PAD]") or self.tk.token_to_id("<pad>") or 0
        self.pad_id = pad

    def set_max_length(self, max_length: int) -> None:
        """Truncate every example to `max_length` tokens from now on ([CLS] and [SEP]s included)."""
        # a pair's special tokens: 3 in BERT ([CLS] a [SEP] b [SEP]), 4 in RoBERTa (<s> a </s></s> b </s>);
        # below that, tokenizers leaves a pair uncut rather than fail
        specials = max(SPECIAL_TOKENS_PAIR, self.tk.num_special_tokens_to_add(True))
        if not isinstance(max_length, int) or max_length < specials:
            raise ConfigError(f"max_length must be an integer >= {specials} (room for a pair's "
                              f"{specials} special tokens), got {max_length!r}")
        if self.limit is not None and max_length > self.limit:
            raise ConfigError(f"max_length {max_length} is longer than the checkpoint allows: "
                              f"{self.config} has max_position_embeddings {self.positions}"
                              + (f" ({self.limit} tokens after its position offset)"
                                 if self.positions != self.limit else ""))
        self.tk.enable_truncation(max_length, strategy="longest_first")
        self.max_length = max_length

    def cutting_at(self, max_length: int) -> "Tokenizer":
        """This tokenizer truncating at `max_length` instead: a copy, made once per length, so that
        texts for an adapter trained at 256 tokens are cut at 256 while others are cut at 128,
        without changing what this one does (the server tokenises for several tasks)."""
        if max_length == self.max_length:
            return self
        copies = self.__dict__.setdefault("_copies", {})
        if max_length not in copies:
            from tokenizers import Tokenizer as HFTokenizer

            other = copy.copy(self)
            other._copies = {}
            other.tk = HFTokenizer.from_str(self.tk.to_str())
            other.set_max_length(max_length)
            copies[max_length] = other
        return copies[max_length]

    def _encodings(self, texts, pairs):
        """The tokenizers library's Encoding of each text (or of each (text, pair) when pairs)."""
        if isinstance(texts, str):
            texts = [texts]
        texts = list(texts)
        if pairs is None:
            return self.tk.encode_batch(texts)
        if isinstance(pairs, str):
            pairs = [pairs]
        pairs = list(pairs)
        if len(pairs) != len(texts):
            raise ValueError(f"{len(texts)} texts but {len(pairs)} pairs: one pair per text")
        return self.tk.encode_batch(list(zip(texts, pairs)))

    def ids(self, texts: list[str], pairs: list[str] | None = None) -> list[np.ndarray]:
        """Token ids of each text, [CLS] a [SEP] (or [CLS] a [SEP] b [SEP] with pairs), truncated to
        max_length, not padded."""
        return [np.asarray(e.ids, dtype=np.int64) for e in self._encodings(texts, pairs)]

    def ids_and_types(self, texts: list[str], pairs: list[str] | None = None
                      ) -> tuple[list[np.ndarray], list[np.ndarray]]:
        """(ids, type_ids): two lists of int64 arrays, one pair of equal-length arrays per example;
        type ids are 0 on [CLS] a [SEP] and 1 on b [SEP] (all 0 without pairs)."""
        encodings = self._encodings(texts, pairs)
        ids = [np.asarray(e.ids, dtype=np.int64) for e in encodings]
        if not self.token_types:
            return ids, [np.zeros_like(i) for i in ids]
        return ids, [np.asarray(e.type_ids, dtype=np.int64) for e in encodings]

    def pad(self, seqs: list[np.ndarray], types: list[np.ndarray] | None = None) -> Batch:
        """Right-pad a list of id arrays (and their type ids, 0 when None) to the longest one."""
        T = max(len(s) for s in seqs)
        input_ids = np.full((len(seqs), T), self.pad_id, dtype=np.int64)
        mask = np.zeros((len(seqs), T), dtype=np.int64)
        type_ids = np.zeros((len(seqs), T), dtype=np.int64)
        for row, s in enumerate(seqs):
            input_ids[row, : len(s)] = s
            mask[row, : len(s)] = 1
            if types is not None:
                type_ids[row, : len(s)] = types[row]
        return Batch(input_ids, mask, type_ids)

    def encode(self, texts: list[str], pairs: list[str] | None = None) -> Batch:
        """Tokenise and pad a batch of texts (or of (text, pair) pairs)."""
        return self.pad(*self.ids_and_types(texts, pairs))

    def tokens(self, text: str, pair: str | None = None) -> list[str]:
        """The tokens of one text or pair (for showing what the model sees)."""
        return self.tk.encode(text, pair).tokens


def _checkpoint_facts(config_path: Path) -> dict:
    """What the tokenizer needs from a checkpoint's config.json: `max_tokens` (the positions its table
    covers: max_position_embeddings, less RoBERTa's offset), `token_types` (False where the model
    has at most one type) and `pad_token_id`. Fields are left out when there is no such file or
    field (a bare tokenizer.json: then only the caller's max_length applies)."""
    try:
        d = json.loads(config_path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    if not isinstance(d, dict):
        return {}
    model_type = d.get("model_type")  # an unsupported one is the model's to refuse (config.py)
    arch = ARCHITECTURES.get(model_type if isinstance(model_type, str) else "bert", ARCHITECTURES["bert"])
    facts = {}
    pad = d.get("pad_token_id")
    if isinstance(pad, int):
        facts["pad_token_id"] = pad
    positions = d.get("max_position_embeddings")
    if isinstance(positions, int):
        facts["max_position_embeddings"] = positions
        offset = facts.get("pad_token_id", 0) + 1 if arch.positions_after_pad else 0  # as BertConfig's
        facts["max_tokens"] = positions - offset
    types = arch.fixed.get("type_vocab_size", d.get("type_vocab_size", 2))
    facts["token_types"] = not isinstance(types, int) or types > 1
    return facts
