"""Array backends: NumPy (the default and the reference) or CuPy (the same code on a GPU).

Every op in `minadapt.nn` asks its *input* which array module it lives in (`xp = get_xp(x)`) and
writes `xp.exp`, `xp.matmul`, ... so one line of maths runs on both. The few things NumPy and CuPy
do differently (the error function, moving arrays, synchronising) live here and nowhere else.

Device choice, in order: an explicit `device=` argument, then `$MINADAPT_DEVICE`, then "cpu".
"""
from __future__ import annotations

import math
import os

import numpy as np

DTYPES = {"float32": np.float32, "float64": np.float64}


def _keep_freed_memory() -> None:
    """Ask glibc's malloc to keep freed memory for reuse instead of handing it back to the OS.

    A training step allocates and frees ~1 GB of activations. By default glibc serves each large
    array with a fresh mmap (or trims the heap after a free), so the next step's arrays land on
    new pages, and the kernel must fault in and zero every 4 KB page again: ~10% of a step here
    (measured with `minadapt bench`). Keeping arrays up to 32 MB (glibc's limit) on the heap and
    never trimming it makes each step reuse the last step's pages. Peak memory is unchanged.
    "Never" must be meant: with a 1 GB trim threshold, a step at L=128 (1.2 GB of activations)
    still gave 170 MB back at its end and faulted it in again in the next: 1.7-3.3 s a step
    instead of 1.5-1.7 s."""
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6")
    except OSError:  # not glibc (macOS, musl): nothing to tune
        return
    M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3
    libc.mallopt(M_MMAP_THRESHOLD, 32 << 20)
    libc.mallopt(M_TRIM_THRESHOLD, 2**31 - 1)  # the largest value: never trim


_keep_freed_memory()


def _cupy():
    """Import CuPy, or raise an error that says how to get it."""
    from .errors import DeviceError

    try:
        import cupy
    except ImportError as e:  # pragma: no cover - depends on the machine
        raise DeviceError(
            "device 'gpu' needs CuPy: pip install 'minadapt[gpu]' (CUDA 12 driver) or "
            "'minadapt[gpu-cuda13]' (CUDA 13)") from e
    if not gpu_available():
        raise DeviceError("device 'gpu': CuPy is installed but finds no CUDA device")
    return cupy


_GPU_FOUND = []  # [True] once a device has been seen: asking the driver again costs ~0.1 ms


def gpu_available() -> bool:
    """True when CuPy imports and sees at least one CUDA device."""
    if _GPU_FOUND:
        return True
    try:
        import cupy

        found = cupy.cuda.runtime.getDeviceCount() > 0
    except Exception:
        return False
    if found:
        _GPU_FOUND.append(True)
    return found


def resolve_device(device: str | None = None) -> str:
    """'cpu' or 'gpu', from the argument, else $MINADAPT_DEVICE, else 'cpu'."""
    device = (device or os.environ.get("MINADAPT_DEVICE") or "cpu").lower()
    if device in ("cuda", "gpu"):
        return "gpu"
    if device != "cpu":
        raise ValueError(f"unknown device {device!r}: expected 'cpu' or 'gpu'")
    return device


def resolve_dtype(dtype) -> np.dtype:
    """np.float32 or np.float64 from a name or a dtype."""
    name = np.dtype(dtype).name if not isinstance(dtype, str) else dtype
    if name not in DTYPES:
        raise ValueError(f"unsupported dtype {dtype!r}: expected 'float32' or 'float64'")
    return np.dtype(DTYPES[name])


def xp_for(device: str):
    """The array module of a device: numpy for 'cpu', cupy for 'gpu'."""
    return _cupy() if resolve_device(device) == "gpu" else np


def get_xp(x):
    """The array module that `x` belongs to (numpy when CuPy is absent)."""
    if type(x).__module__.startswith("cupy"):
        import cupy

        return cupy
    return np


def to_device(x, device: str):
    """Copy a NumPy array to `device` (no copy when it is already there)."""
    if resolve_device(device) == "gpu":
        return _cupy().asarray(x)
    return to_numpy(x)


def to_numpy(x) -> np.ndarray:
    """A NumPy array from a NumPy or CuPy array (a device->host copy for CuPy)."""
    if type(x).__module__.startswith("cupy"):
        return x.get()
    return np.asarray(x)


def synchronize(x=None) -> None:
    """Wait for queued GPU work (no-op on the CPU); used only around timers."""
    if x is None or get_xp(x) is not np:
        try:
            import cupy

            cupy.cuda.get_current_stream().synchronize()
        except Exception:  # no CuPy, or no device: nothing queued to wait for
            pass


# --- many arrays as one vector --------------------------------------------------------------------
# An optimiser's update is elementwise, so it does not care how values are grouped into arrays. When
# the trainable parameters (and their gradients) lie end to end in one vector, AdamW is a dozen
# whole-vector operations instead of a dozen per array: on a GPU, where every operation is a kernel
# launch costing ~10-20 us of Python and driver time however small its array, that is ~15 launches
# a step instead of ~700 for the 52 arrays of a Houlsby adapter.
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


# --- random masks ---------------------------------------------------------------------------------
def keep_mask(rng, shape, p, xp=np):
    """Boolean mask, True with probability 1 - p, and the p actually used.

    On NumPy: 16 random bits per element compared with round(p * 2^16), about three times as fast
    as drawing float32 uniforms; p is thereby rounded to a multiple of 2^-16. On CuPy: uniform
    floats."""
    if xp is np:
        # the bit generator's raw 64-bit output read as four 16-bit numbers: 1.7x faster than
        # rng.integers(0, 65536, dtype=uint16), from the same (checkpointed) generator state
        threshold = int(round(p * 65536))
        n = math.prod(shape)
        bits = rng.bit_generator.random_raw(-(-n // 4)).view(np.uint16)[:n].reshape(shape)
        return bits >= threshold, threshold / 65536
    return rng.random(shape, dtype=np.float32) >= p, p


# --- scatter-add --------------------------------------------------------------------------------
def scatter_add(a, indices, values) -> None:
    """a[indices] += values, where repeated indices add up (a fancy-index `+=` keeps only one).

    NumPy spells this `np.add.at`; CuPy's portable spelling is `cupyx.scatter_add` (atomic adds)."""
    if get_xp(a) is np:
        np.add.at(a, indices, values)
    else:
        import cupyx

        cupyx.scatter_add(a, indices, values)


# --- the error function ---------------------------------------------------------------------------
# BERT's GELU is the exact form x * Phi(x) = x/2 (1 + erf(x / sqrt 2)). NumPy has no erf.
#  * float64 (gradient checks, reference comparisons): the exact libm erf, element by element.
#    It is slow (~50 ns an element) but only tiny or one-off float64 runs use it.
#  * float32 (training): a rational approximation erf(x) ~ x P(x^2) / Q(x^2) on [-4, 4] (the one in
#    Eigen and XLA), accurate to a few float32 ulps, and 3-4x faster than a table-free series.
#  * CuPy: cupyx.scipy.special.erf, an exact elementwise kernel.
_ERF64 = np.frompyfunc(math.erf, 1, 1)
_ERF_ALPHA = (-2.72614225801306e-10, 2.77068142495902e-08, -2.10102402082508e-06,
              -5.69250639462346e-05, -7.34990630326855e-04, -2.95459980854025e-03,
              -1.60960333262415e-02)
_ERF_BETA = (-1.45660718464996e-05, -2.13374055278905e-04, -1.68282697438203e-03,
             -7.37332916720468e-03, -1.42647390514189e-02)


def erf(x, out=None):
    """Elementwise erf(x), exact in float64, float32-accurate in float32; runs on NumPy and CuPy."""
    xp = get_xp(x)
    if xp is not np:
        from cupyx.scipy.special import erf as cupy_erf

        return cupy_erf(x) if out is None else cupy_erf(x, out=out)
    if x.dtype == np.float64:
        r = _ERF64(x).astype(np.float64)
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
    than on the additions; BLAS does the same sums as one product 3-6x faster (measured here: 18 vs
    110 us for 3840 rows of 64, 15 vs 55 us for 682 rows of 384). The result is the same up to
    rounding (a different order of additions)."""
    xp = get_xp(x)
    return x @ xp.full((x.shape[-1], 1), scale, x.dtype)


# --- blockwise elementwise work -------------------------------------------------------------------
# An elementwise chain like GELU's (a dozen ufuncs) over a (B*T, F) array reads and writes the whole
# array a dozen times; at 12 MB per pass that is memory traffic, not arithmetic. Cutting the rows
# into blocks of 2^18 elements (1 MB of float32, measured best here) keeps the chain's
# temporaries in the CPU's cache. (The cores are used one level up: each runs its own shard of
# the batch, see parallel.py.) On CuPy there is no such gain to have: the function runs once on
# the whole arrays.
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
