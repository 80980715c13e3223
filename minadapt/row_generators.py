"""Dropout masks drawn per sentence, so that a training run does not depend on how its batches are cut.

Data parallelism cuts each global batch of B sentences into shards (cores: parallel/cores.py; processes
on one or several machines: parallel/mpi.py). If each shard drew its masks from one generator, the
mask a sentence gets would depend on which shard it landed in and on what else is there: the
same seed would give a different run on 1, 2 or 4 processes. Instead, every row b of the global
batch gets its own generator, seeded from the step's parent generator:

    seeds = rng.integers(0, 2**63, size=B)          # the same draw in every process
    row b's masks:  default_rng(seeds[b])            # whoever computes row b

Every process holds the same parent `rng` (seeded alike, and each step draws B seeds from it
whatever its own rows are), so all of them know every row's seed. A dropout op asks for a mask of
shape (b, ...) for the rows it holds; `RowGenerators` draws each row's part from that row's own
generator, in the order the ops run, which is the same in every shard, and of the same shape (every
shard is padded to the global batch's length T). So sentence b's masks are the same whether it
runs alone, in a shard of 16 or in the whole batch of 32.

The parent moves on by B draws a step, whatever the cut: a checkpoint's generator state resumes
into any number of processes. CPU only (NumPy): on a GPU, one small draw per row would be one
kernel launch per row.
"""
from __future__ import annotations

import math

import numpy as np


class RowGenerators:
    """One NumPy Generator per row of a batch, sliced along with the rows (`rows[a:b]`).

    Ops treat it as a Generator: `random(shape)` (reference dropout) and `keep_bits(shape)` (the
    fast ops' 16-bit masks, numerics.keep_mask) return shape[0] rows, row i drawn from generator i."""

    def __init__(self, seeds, generators=None):
        self.seeds = seeds  # (b,) one seed per row
        self._generators = generators  # made at the first draw: a shard sent to a worker process
        # travels as its seeds, and each process seeds only its own rows' generators

    @classmethod
    def draw(cls, rng, batch_size: int, rows: slice = slice(None)) -> "RowGenerators":
        """The generators of rows `rows` of a batch of `batch_size`, from parent `rng`, which moves
        on by batch_size draws whatever `rows` is (see the module docstring)."""
        return cls(rng.integers(0, 2**63, size=batch_size)[rows])

    @property
    def generators(self) -> list:
        if self._generators is None:
            self._generators = [np.random.default_rng(int(s)) for s in self.seeds]
        return self._generators

    def __len__(self):
        return len(self.seeds)

    def __getitem__(self, rows: slice) -> "RowGenerators":
        """Rows `rows`, sharing their generators (and so their state) with these once made."""
        assert isinstance(rows, slice), "RowGenerators are sliced along the batch axis only"
        made = self._generators
        return RowGenerators(self.seeds[rows], None if made is None else made[rows])

    def _check(self, shape):
        assert shape[0] == len(self.seeds), \
            f"a mask of {shape[0]} rows asked of the generators of {len(self.seeds)} rows"

    def random(self, shape, dtype=np.float64):
        """Uniforms in [0, 1) of `shape`; row i from generator i."""
        self._check(shape)
        out = np.empty(shape, dtype)
        for g, row in zip(self.generators, out):
            g.random(dtype=dtype, out=row)
        return out

    def keep_bits(self, shape):
        """16 random bits per element (uint16) of `shape`, row i from generator i's raw 64-bit
        output read as four 16-bit numbers (what numerics.keep_mask draws from one Generator)."""
        self._check(shape)
        n = math.prod(shape[1:])
        words = -(-n // 4)
        bits = np.empty((len(self.seeds), 4 * words), np.uint16)
        for g, row in zip(self.generators, bits):
            row.view(np.uint64)[:] = g.bit_generator.random_raw(words)
        return bits[:, :n].reshape(shape)
