"""Prompt tuning (Lester et al., 2021): n trained vectors in front of every sentence's embeddings.

Dimensions: B = batch, T = tokens, n = virtual tokens, H = hidden.

Where it acts, as PEFT's PeftModelForSequenceClassification does for BERT: the prompt P (n, H)
stands in for the *word* embeddings of n extra tokens before the sentence, so it goes in before the
position and type embeddings and before the embedding LayerNorm:
    w = [P; W_word[ids]]                               (B, n+T, H)  the same P for every sentence
    e = w + W_pos[0 : n+T] + W_type[[0]*n ; types]     virtual tokens: positions 0..n-1, type 0
    x = dropout(LayerNorm(e))
The attention mask gains n ones in front (`extend_mask`: every sentence sees the prompt) and the
token types n zeros (`extend_types`). [CLS] moves to position n; the head reads row 0 of the last
layer, which is now the first virtual token's: BertForSequenceClassification's pooler reads row 0
whatever sits there, and PEFT leaves that as it is. A sequence of T tokens costs n+T rows in every
layer: prompt tuning makes inference dearer, and positions limit T to max_position_embeddings - n.

Backward: the concatenation hands each part its slice of the gradient; P is shared by the batch,
so its gradient is the sum over sentences:
    dP = sum_b dw[b, :n]          dW_word[ids] gets dw[:, n:] (frozen: not formed)
"""
from __future__ import annotations

from typing import NamedTuple

from ..backend import get_xp


class PromptCache(NamedTuple):
    n: int  # virtual tokens


def init_params(n, hidden, rng, dtype):
    """PEFT's PromptTuningInit.RANDOM: a torch Embedding's own init, N(0, 1)."""
    return rng.standard_normal((n, hidden)).astype(dtype)


def forward(w, prompt):
    """Inputs: w (B, T, H) the word embeddings of the sentence, prompt (n, H).
    Returns (out (B, n+T, H) = [prompt; w] for every sentence, cache)."""
    xp = get_xp(w)
    B, n = w.shape[0], prompt.shape[0]
    p = xp.broadcast_to(prompt.astype(w.dtype, copy=False), (B, n, w.shape[2]))  # (B, n, H)
    return xp.concatenate([p, w], axis=1), PromptCache(n)


def backward(dout, cache):
    """Inputs: dout (B, n+T, H). Returns (dw (B, T, H), dprompt (n, H))."""
    n = cache.n
    # in the forward pass this was: out[b] = [P; w[b]]  ->  dP = sum_b dout[b, :n],  dw = dout[:, n:]
    return dout[:, n:], dout[:, :n].sum(axis=0)


def extend_mask(attention_mask, n):
    """(B, T) -> (B, n+T): ones in front, the prompt is never padding."""
    xp = get_xp(attention_mask)
    ones = xp.ones((attention_mask.shape[0], n), attention_mask.dtype)
    return xp.concatenate([ones, attention_mask], axis=1)


def extend_types(token_type_ids, n):
    """(B, T) -> (B, n+T): the virtual tokens are of type 0, as PEFT's zeros in front."""
    xp = get_xp(token_type_ids)
    zeros = xp.zeros((token_type_ids.shape[0], n), token_type_ids.dtype)
    return xp.concatenate([zeros, token_type_ids], axis=1)
