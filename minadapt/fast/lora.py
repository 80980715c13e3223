"""LoRA's low-rank term as nn/lora.py computes it (the maths is there); only `add_to_slices` differs.

The fused Q|K|V projection hands bert.py a new array that no other code holds, so the low-rank
terms can be added into its slices in place, where the reference concatenates the slices into a
new (..., 3H) array.
"""
from __future__ import annotations

from ..nn.lora import LoraCache, delta_backward, delta_forward  # noqa: F401  (the reference's)


def add_to_slices(y, deltas):
    """As nn.lora.add_to_slices, written into y itself, which is returned. y must be an array that
    no other code holds (a projection's own output)."""
    for j, delta in deltas.items():
        O = delta.shape[-1]
        y[..., j * O:(j + 1) * O] += delta
    return y
