"""The numerics behind the fast CPU ops: a float32 erf, short-row sums, cache-sized blocks, cheap
random masks, and a malloc setting for step-sized arrays.

Each is a faster way to compute what a reference op in `minadapt/nn/` writes plainly; the ops in
this package that use them are tested equal to their references (tests/test_fast_ops.py).
Measurements behind the choices are in benchmarks/README.md.
"""
from __future__ import annotations

import math

import numpy as np

from ..backend import erf as exact_erf
from ..backend import get_xp
from ..row_generators import RowGenerators


def keep_freed_memory() -> None:
    """Ask glibc's malloc to keep freed memory for reuse instead of handing it back to the OS.

    A training step allocates and frees all of its activations. By default glibc serves each large
    array with a fresh mmap (or trims the heap after a free), so the next step's arrays land on
    new pages, and the kernel must fault in and zero every 4 KB page again. Keeping arrays up to
    32 MB (glibc's limit) on the heap and never trimming it makes each step reuse the last step's
    pages. Peak memory is unchanged. "Never" must be meant: with a large but finite trim threshold,
    a step at long lengths still gave memory back at its end and faulted it in again in the next
    (benchmarks/README.md, "Never trimming the heap", has the measurements)."""
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6")
    except OSError:  # not glibc (macOS, musl): nothing to tune
        return
    M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3
    libc.mallopt(M_MMAP_THRESHOLD, 32 << 20)
    libc.mallopt(M_TRIM_THRESHOLD, 2**31 - 1)  # the largest value: never trim


# --- random masks ---------------------------------------------------------------------------------
def keep_mask(rng, shape, p, xp=np):
    """Boolean mask, True with probability 1 - p, and the p actually used.

    On NumPy: 16 random bits per element compared with round(p * 2^16), faster than drawing float32
    uniforms (benchmarks/numerics_speed.py); p is thereby rounded to a multiple of 2^-16. On CuPy:
    uniform floats."""
    if xp is np:
        # the bit generator's raw 64-bit output read as four 16-bit numbers: faster than
        # rng.integers(0, 65536, dtype=uint16), from the same (checkpointed) generator state
        threshold = int(round(p * 65536))
        if isinstance(rng, RowGenerators):  # each row from its own generator (row_generators.py)
            return rng.keep_bits(shape) >= threshold, threshold / 65536
        n = math.prod(shape)
        bits = rng.bit_generator.random_raw(-(-n // 4)).view(np.uint16)[:n].reshape(shape)
        return bits >= threshold, threshold / 65536
    return rng.random(shape, dtype=np.float32) >= p, p


# --- the error function ---------------------------------------------------------------------------
# BERT's GELU is the exact form x * Phi(x) = x/2 (1 + erf(x / sqrt 2)). NumPy has no erf:
#  * float64 (gradient checks, reference comparisons) and CuPy: backend.erf, exact;
#  * float32 on NumPy (training): a rational approximation erf(x) ~ x P(x^2) / Q(x^2) on [-4, 4]
#    (the one in Eigen and XLA), accurate to a few float32 ulps, and much faster than libm's erf
#    called element by element (benchmarks/numerics_speed.py).
_ERF_ALPHA = (-2.72614225801306e-10, 2.77068142495902e-08, -2.10102402082508e-06,
              -5.69250639462346e-05, -7.34990630326855e-04, -2.95459980854025e-03,
              -1.60960333262415e-02)
_ERF_BETA = (-1.45660718464996e-05, -2.13374055278905e-04, -1.68282697438203e-03,
             -7.37332916720468e-03, -1.42647390514189e-02)


def erf(x, out=None):
    """Elementwise erf(x): exact in float64 and on CuPy, float32-accurate in float32."""
    if get_xp(x) is not np or x.dtype != np.float32:
        r = exact_erf(x)
        if out is None:
            return r
        out[...] = r
        return out
    return _erf32(x, out)


def _monic(p_coefficients, q_coefficients):
    """The same ratio P/Q with both divided by Q's leading coefficient, so that Q's is 1: Horner's
    first step for Q is then t^2 + b1, one pass over the array instead of two (t^2 b0, + b1)."""
    lead = q_coefficients[0]
    return tuple(a / lead for a in p_coefficients), tuple(b / lead for b in q_coefficients)


def _erf32(x, out=None):
    # Beyond |x| = 4, erf(x) rounds to +-1 in float32, so clamping there loses nothing.
    return _odd_rational(np.clip(x, -4.0, 4.0, out=out), *_ERF_MONIC)


def _odd_rational(t, p_coefficients, q_coefficients):
    """In place, float32: t <- t P(t^2) / Q(t^2), coefficients highest power first (Horner), Q
    monic (`_monic`). Each line is one pass over the array: 22 for erf's degrees (6 and 4 in t^2)."""
    assert q_coefficients[0] == 1.0, "make Q monic first (_monic)"
    t2 = t * t
    p = t2 * np.float32(p_coefficients[0])
    p += np.float32(p_coefficients[1])
    for a in p_coefficients[2:]:
        p *= t2
        p += np.float32(a)
    p *= t
    q = t2 + np.float32(q_coefficients[1])  # Q's leading coefficient is 1
    for b in q_coefficients[2:]:
        q *= t2
        q += np.float32(b)
    return np.divide(p, q, out=t)


# GELU's gate is Phi(x) = (1 + erf(x / sqrt 2)) / 2. Substituting t = x / sqrt 2 into erf's rational
# form t P(t^2) / Q(t^2), and folding in the halving, gives Phi(x) = 1/2 + x P'(x^2) / Q'(x^2), with
#   P'(w) = P(w / 2) / (2 sqrt 2),   Q'(w) = Q(w / 2):
# the same approximation, three passes over the array fewer (no x / sqrt 2, no + 1, no / 2).
def _substituted(coefficients, factor):
    """Coefficients of c(w / 2) * factor, for c given highest power first."""
    n = len(coefficients) - 1
    return tuple(float(c) * factor / 2.0 ** (n - i) for i, c in enumerate(coefficients))


_ERF_MONIC = _monic(_ERF_ALPHA, _ERF_BETA)
_PHI_MONIC = _monic(_substituted(_ERF_ALPHA, 1.0 / (2.0 * math.sqrt(2.0))), _substituted(_ERF_BETA, 1.0))
_PHI_CLIP = 4.0 * math.sqrt(2.0)  # where erf(x / sqrt 2) is +-1 in float32


def normal_cdf(x, out=None):
    """Phi(x), the standard normal CDF, elementwise: exact in float64, float32-accurate in float32
    (erf's approximation above, with the constants folded in)."""
    if get_xp(x) is not np or x.dtype != np.float32:
        r = erf(x * x.dtype.type(1.0 / math.sqrt(2.0)), out=out)
        r += 1.0
        r *= 0.5
        return r
    t = _odd_rational(np.clip(x, -_PHI_CLIP, _PHI_CLIP, out=out), *_PHI_MONIC)
    t += 0.5
    return t


# --- sums along short rows -------------------------------------------------------------------------
def row_sums(x, scale=1.0):
    """x (..., n) -> (..., 1): each row's sum (times `scale`), as the matrix-vector product x @ 1.

    For many short rows (n = 64 to 384) NumPy's reduction x.sum(axis=-1) spends more time per row
    than on the additions; BLAS does the same sums as one product, faster
    (benchmarks/numerics_speed.py). The result is the same up to rounding (a different order of
    additions)."""
    xp = get_xp(x)
    return x @ xp.full((x.shape[-1], 1), scale, x.dtype)


# --- blockwise elementwise work -------------------------------------------------------------------
# An elementwise chain like GELU's (a dozen ufuncs) over a (B*T, F) array reads and writes the whole
# array a dozen times; at 12 MB per pass that is memory traffic, not arithmetic. Cutting the rows
# into blocks of 2^18 elements (1 MB of float32; benchmarks/README.md has the sizes tried) keeps
# the chain's temporaries in the CPU's cache. (The cores are used one level up: each runs its own
# shard of the batch, see parallel/cores.py.) On CuPy there is no such gain to have: the function
# runs once on the whole arrays.
_BLOCK_ELEMENTS = 1 << 18


def blockwise(fn, *arrays):
    """Run fn(*blocks) over matching slices of `arrays` along their first axis, one after another.

    All arrays share their first axis; fn writes its results into slices of output arrays passed
    among `arrays` (slices along the first axis of a contiguous array are views). Blocks hold about
    _BLOCK_ELEMENTS elements of the first array."""
    first = arrays[0]
    if get_xp(first) is not np:
        return fn(*arrays)
    n = first.shape[0]
    step = max(1, _BLOCK_ELEMENTS // max(1, first.size // max(n, 1)))
    for i in range(0, n, step):
        fn(*(a[i:i + step] for a in arrays))
