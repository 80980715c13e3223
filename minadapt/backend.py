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


def _cupy():
    """Import CuPy, or raise an error that says how to get it."""
    try:
        import cupy
    except ImportError as e:  # pragma: no cover - depends on the machine
        raise RuntimeError(
            "device 'gpu' needs CuPy: pip install 'minadapt[gpu]' (CUDA 12) or cupy-cuda13x (CUDA 13)"
        ) from e
    return cupy


def gpu_available() -> bool:
    """True when CuPy imports and sees at least one CUDA device."""
    try:
        import cupy

        return cupy.cuda.runtime.getDeviceCount() > 0
    except Exception:
        return False


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
        except ImportError:
            pass


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

        return cupy_erf(x) if out is None else cupy_erf(x, out)
    if x.dtype == np.float64:
        r = _ERF64(x).astype(np.float64)
        if out is None:
            return r
        out[...] = r
        return out
    return _erf32(x, out)


def _erf32(x, out=None):
    # Beyond |x| = 4, erf(x) rounds to +-1 in float32, so clamping there loses nothing.
    t = np.clip(x, -4.0, 4.0, out=out)
    x2 = t * t
    p = x2 * np.float32(_ERF_ALPHA[0]) + np.float32(_ERF_ALPHA[1])
    for a in _ERF_ALPHA[2:]:
        p *= x2
        p += np.float32(a)
    p *= t
    q = x2 * np.float32(_ERF_BETA[0]) + np.float32(_ERF_BETA[1])
    for b in _ERF_BETA[2:]:
        q *= x2
        q += np.float32(b)
    return np.divide(p, q, out=t)
