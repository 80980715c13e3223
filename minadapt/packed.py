"""Many arrays as one vector, and back.

An optimiser's update is elementwise, so it does not care how values are grouped into arrays. When
the trainable parameters (and their gradients) lie end to end in one vector, AdamW is a dozen
whole-vector operations instead of a dozen per array (on a GPU each operation is a kernel launch,
whatever the array's size), and the gradients of a data-parallel step are one vector to add up
across processes (parallel/cores.py, parallel/mpi.py).
"""
from __future__ import annotations

import math

import numpy as np

from .backend import get_xp


def pack(arrays: dict, names, out=None) -> tuple:
    """Copy arrays[name] for `names` (in that order) end to end into one 1-D vector: a new one, or
    `out`. Returns (vector, {name: view of the vector shaped like the original})."""
    xp = get_xp(arrays[names[0]])
    vector = xp.concatenate([arrays[n].reshape(-1) for n in names], out=out)  # one copy (one launch)
    return vector, unpack(vector, {n: arrays[n].shape for n in names})


def unpack(vector, shapes: dict) -> dict:
    """{name: view of `vector`} for shapes {name: shape} laid end to end in that order (as `pack`
    lays them)."""
    views, at = {}, 0
    for n, shape in shapes.items():
        size = math.prod(shape)
        views[n] = vector[at:at + size].reshape(shape)
        at += size
    return views


def _address(a) -> int:
    return a.data.ptr if get_xp(a) is not np else a.__array_interface__["data"][0]


def owner(a):
    """The array that owns the memory `a` views (an array's base may also be a buffer object)."""
    while a.base is not None and type(a.base) is type(a):
        a = a.base
    return a


def packed_offsets(arrays: dict):
    """When `arrays` are contiguous views that tile one 1-D vector exactly (as `pack` makes them),
    return (vector, {name: offset}); otherwise None."""
    if not arrays:
        return None
    vector = owner(next(iter(arrays.values())))
    if vector.ndim != 1 or not vector.flags.c_contiguous:
        return None
    start, offsets, total = _address(vector), {}, 0
    for name, a in arrays.items():
        if owner(a) is not vector or not a.flags.c_contiguous or a.dtype != vector.dtype:
            return None
        offsets[name] = (_address(a) - start) // a.itemsize
        total += a.size
    spans = sorted((o, arrays[n].size) for n, o in offsets.items())
    if total != vector.size or any(o != prev_o + prev_n for (prev_o, prev_n), (o, _) in
                                   zip([(0, 0)] + spans[:-1], spans)):
        return None
    return vector, offsets
