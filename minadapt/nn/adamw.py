"""AdamW, plainly: one parameter's update, written the way the maths reads (Loshchilov & Hutter, 2019).

Dimensions: any; p, g, m, v share one shape. t = 1, 2, ... counts this parameter's updates.

    p <- p - lr * wd * p                          decoupled weight decay (skipped for no-decay names)
    m <- b1 m + (1 - b1) g                        running mean of g
    v <- b2 v + (1 - b2) g^2                      running mean of g^2
    m_hat = m / (1 - b1^t),  v_hat = v / (1 - b2^t)   undo the pull towards the zeros m, v start at
    p <- p - lr * m_hat / (sqrt(v_hat) + eps)

It returns new arrays and keeps no state: the caller holds (m, v, t) per parameter. This is the
reference the learner writes (exercise 4) and reads; minadapt.optim.AdamW is the same arithmetic
done in place over one packed vector (no per-step allocations, ~15 whole-vector operations a step),
and tests/test_optim.py checks that the two give the same parameters step after step.
"""
from __future__ import annotations

from typing import NamedTuple

from ..backend import get_xp


class AdamWState(NamedTuple):
    m: object  # first moment, shaped like p
    v: object  # second moment, shaped like p
    t: int  # updates taken so far


def init(p) -> AdamWState:
    xp = get_xp(p)
    return AdamWState(xp.zeros_like(p), xp.zeros_like(p), 0)


def update(p, g, state: AdamWState, lr, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0):
    """One AdamW update. Inputs: p and g of one shape, the parameter's state (init(p) before its
    first update), this step's learning rate, and its decay (0.0 for a no-decay parameter).
    Returns (new p, new state)."""
    xp = get_xp(p)
    b1, b2 = betas
    t = state.t + 1
    p = p * (1.0 - lr * weight_decay)  # decoupled: the decay never passes through m or v
    m = b1 * state.m + (1.0 - b1) * g
    v = b2 * state.v + (1.0 - b2) * g * g
    m_hat = m / (1.0 - b1**t)
    v_hat = v / (1.0 - b2**t)
    return p - lr * m_hat / (xp.sqrt(v_hat) + eps), AdamWState(m, v, t)
