"""The matrix products of one adapter-training (or inference) step, and their FLOPs.

`step_gemms` follows the code that runs: minadapt/bert.py with the fast ops (minadapt/fast/), for
a model whose backbone is frozen and whose task trains Houlsby adapters and a classification head:

  * a frozen linear's forward reads its contiguous W^T copy (fast/linear.py), a trainable one W;
    in backward a frozen linear computes dx only, a trainable one dx and dW;
  * backward stops at layer 0 (nothing below trains), and inside layer 0 right after the
    attention-output adapter: with Q, K, V and the attention output frozen, nothing below that
    adapter needs a gradient (bert.after_attention_backward, need_dc=False);
  * the last layer computes its query, attention output, FFN and adapters for the [CLS] row alone,
    and attends without forming keys and values (fast/cls_layer.py, fast/cls_attention.py).
    cls_only=False: the reference ops (minadapt.nn), whose last layer is a full one.
"""
from __future__ import annotations

import math
from typing import NamedTuple


class Gemm(NamedTuple):
    """One matrix product of the step: `batch` independent (m, k) x (k, n) products.
    `expr` is how the code writes it, which fixes the memory layout BLAS sees:
      "x @ Wt"    x (m, k), Wt (k, n) contiguous: a frozen linear's forward on its W^T copy
      "x @ W.T"   x (m, k), W (n, k): a trainable linear's forward, W in torch layout (out, in)
      "dy @ W"    dy (m, k), W (k, n): a linear backward's dx
      "dy.T @ x"  dy (k, m), x (k, n): a linear backward's dW
      "a @ b", "a.T @ b", "a.T @ dc", "dc @ b"   attention's batched products over (B, nh):
                  a and b are contiguous (B, nh, ., .) arrays (fast/attention.py copies q, k^T and
                  v so), dc a per-head view of the (B, T, H) gradient; over (B,) alone (the last
                  layer's cls_attention), contiguous (B, ., .) arrays
      "a @ b.T"   over (B,): b (B, n, k) read transposed (the layer input x as x^T)
      "a @ Wh", "a @ Wh.T", "dc @ Wh"   cls_attention's products over (B, nh) with a weight's
                  per-head rows Wh (nh, hs, H), shared by the B sentences
    """
    name: str
    phase: str  # "fwd" or "bwd"
    expr: str
    batch: tuple  # () or (B, nh) or (B,)
    m: int
    k: int
    n: int

    @property
    def flops(self) -> int:
        return 2 * math.prod(self.batch) * self.m * self.k * self.n

    @property
    def shape(self) -> tuple:
        """What its speed depends on: products with the same shape are timed once."""
        return self.expr, self.batch, self.m, self.k, self.n


def linear(name, rows, d_in, d_out, train, trainable, need_dx=True):
    """A linear y = x W^T (rows x d_in -> rows x d_out): its forward and, in training, the backward
    products it needs: dx = dy W unless nothing below wants it; dW = dy^T x only when it trains."""
    out = [Gemm(name, "fwd", "x @ W.T" if trainable else "x @ Wt", (), rows, d_in, d_out)]
    if train and need_dx:
        out.append(Gemm(name + " dx", "bwd", "dy @ W", (), rows, d_out, d_in))
    if train and trainable:
        out.append(Gemm(name + " dW", "bwd", "dy.T @ x", (), d_out, rows, d_in))
    return out


def attention(B, nh, Tq, Tk, hs, train):
    """fast/attention.py: scores and context per head; backward dv, da, dq, dk."""
    bh = (B, nh)
    out = [Gemm("attn scores q k^T", "fwd", "a @ b", bh, Tq, hs, Tk),
           Gemm("attn context a v", "fwd", "a @ b", bh, Tq, Tk, hs)]
    if train:
        out += [Gemm("attn dv = a^T dc", "bwd", "a.T @ dc", bh, Tk, Tq, hs),
                Gemm("attn da = dc v^T", "bwd", "dc @ b", bh, Tq, hs, Tk),
                Gemm("attn dq = ds k", "bwd", "a @ b", bh, Tq, Tk, hs),
                Gemm("attn dk = ds^T q", "bwd", "a.T @ b", bh, Tk, Tq, hs)]
    return out


def cls_attention(B, nh, Tq, Tk, hs, train):
    """fast/cls_attention.py: the last layer's attention over keys and values it never forms."""
    H = nh * hs
    out = [Gemm("cls u = q Wk_h", "fwd", "a @ Wh", (B, nh), Tq, hs, H),
           Gemm("cls scores u x^T", "fwd", "a @ b.T", (B,), nh * Tq, H, Tk),
           Gemm("cls z = a x", "fwd", "a @ b", (B,), nh * Tq, Tk, H),
           Gemm("cls context z Wv_h^T", "fwd", "a @ Wh.T", (B, nh), Tq, H, hs)]
    if train:
        out += [Gemm("cls dz = dc Wv_h", "bwd", "dc @ Wh", (B, nh), Tq, hs, H),
                Gemm("cls da = dz x^T", "bwd", "a @ b.T", (B,), nh * Tq, H, Tk),
                Gemm("cls dx = a^T dz", "bwd", "a.T @ b", (B,), Tk, nh * Tq, H),
                Gemm("cls du = ds x", "bwd", "a @ b", (B,), nh * Tq, Tk, H),
                Gemm("cls dx += ds^T u", "bwd", "a.T @ b", (B,), Tk, nh * Tq, H),
                Gemm("cls dq = du Wk_h^T", "bwd", "a @ Wh.T", (B, nh), Tq, H, hs)]
    return out


def adapter(name, rows, H, m, train):
    """nn/adapter.py: down- and up-projection, both trainable (backward always returns dh)."""
    return linear(name + " down", rows, H, m, train, True) + linear(name + " up", rows, m, H, train, True)


def step_gemms(cfg, B: int, L: int, bottleneck: int = 64, num_labels: int = 2,
               train: bool = True, cls_only: bool = True) -> list[Gemm]:
    """Every matrix product of one step of adapter training (train=True) or inference, in the
    order the forward runs them (a layer's backward products beside its forward ones).
    cfg: a BertConfig (hidden_size, intermediate_size, num_attention_heads, num_hidden_layers).
    cls_only=False: the last layer computes every row (the reference ops)."""
    H, F, nh, n_layers = (cfg.hidden_size, cfg.intermediate_size, cfg.num_attention_heads,
                          cfg.num_hidden_layers)
    hs, m, N = H // nh, bottleneck, B * L
    gemms = []
    for i in range(n_layers):
        last = cls_only and i == n_layers - 1
        rows, Tq = (B, 1) if last else (N, L)  # rows after attention
        below = train and i > 0  # does anything below this layer need its dx?
        if last:  # q for [CLS] alone; k and v never formed
            gemms += linear("q", B, H, H, below, False, need_dx=True)
            gemms += cls_attention(B, nh, Tq, L, hs, below)
        else:
            gemms += linear("qkv", N, H, 3 * H, below, False, need_dx=True)
            gemms += attention(B, nh, Tq, L, hs, below)
        gemms += linear("attn out", rows, H, H, below, False)
        gemms += adapter("adapter1", rows, H, m, train)
        gemms += linear("ffn in", rows, H, F, train, False)
        gemms += linear("ffn out", rows, F, H, train, False)
        gemms += adapter("adapter2", rows, H, m, train)
    gemms += linear("head dense", B, H, H, train, True)
    gemms += linear("head out", B, H, num_labels, train, True)
    return gemms


def step_flops(cfg, B, L, bottleneck=64, num_labels=2, cls_only=True) -> dict:
    """FLOPs (2 per multiply-add) of the matrix products of one training and one inference step.
    Element-wise work (GELU, softmax, LayerNorm, dropout, AdamW) is not counted: it is a few
    percent of the FLOPs, though not of the time."""
    train = step_gemms(cfg, B, L, bottleneck, num_labels, train=True, cls_only=cls_only)
    infer = step_gemms(cfg, B, L, bottleneck, num_labels, train=False, cls_only=cls_only)
    return {"train": sum(g.flops for g in train),
            "train_fwd": sum(g.flops for g in train if g.phase == "fwd"),
            "train_bwd": sum(g.flops for g in train if g.phase == "bwd"),
            "infer": sum(g.flops for g in infer)}
