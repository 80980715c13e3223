"""BERT's input embeddings: word + position + token type, then LayerNorm (and dropout, in the model).

Dimensions: B = batch, T = tokens, H = hidden, V = vocabulary.

Forward:   e[b, t] = W_word[ids[b, t]] + W_pos[s + t] + W_type[types[b, t]]
Backward:  a lookup is a sparse matmul with a one-hot matrix, so its gradient is a scatter-add:
           dW_word[v] = sum of de[b, t] over every (b, t) whose id is v   (likewise for the others)
s, the position offset, is 0 in BERT and pad_token_id + 1 in RoBERTa (architectures.py); a model
without token types (DistilBERT) has no W_type, and no term for it.
Only full fine-tuning trains the embeddings; the backward is here for it and for gradient checks.
"""
from __future__ import annotations

from typing import NamedTuple

from ..backend import get_xp, scatter_add


class EmbeddingCache(NamedTuple):
    input_ids: object  # (B, T) int
    token_type_ids: object  # (B, T) int
    shapes: tuple  # shapes of (W_word, W_pos, W_type); W_type's is None without token types
    offset: int  # s: the first token's row of W_pos


def forward(input_ids, token_type_ids, w_word, w_pos, w_type, offset=0):
    """Inputs: ids and types (B, T) ints; tables (V, H), (P, H), (types, H) or None (no token
    types); offset s. Returns (e (B, T, H), cache)."""
    T = input_ids.shape[1]
    e = w_word[input_ids]  # (B, T, H), a gather
    e += w_pos[offset:offset + T]  # broadcast over the batch
    if w_type is not None:
        e += w_type[token_type_ids]
    shapes = (w_word.shape, w_pos.shape, None if w_type is None else w_type.shape)
    return e, EmbeddingCache(input_ids, token_type_ids, shapes, offset)


def backward(de, cache):
    """Inputs: de (B, T, H). Returns (dW_word, dW_pos, dW_type or None)."""
    xp = get_xp(de)
    ids, types, (s_word, s_pos, s_type), offset = cache
    H = de.shape[-1]
    rows = de.reshape(-1, H)
    dw_word = xp.zeros(s_word, de.dtype)
    scatter_add(dw_word, ids.reshape(-1), rows)  # a repeated id sums all its rows
    dw_pos = xp.zeros(s_pos, de.dtype)
    dw_pos[offset:offset + de.shape[1]] = de.sum(axis=0)
    if s_type is None:
        return dw_word, dw_pos, None
    dw_type = xp.zeros(s_type, de.dtype)
    scatter_add(dw_type, types.reshape(-1), rows)
    return dw_word, dw_pos, dw_type
