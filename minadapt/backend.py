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


_GPU_FOUND = []  # [True] once a device has been seen: the driver is not asked again


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
# BERT's GELU is the exact form x Phi(x) = x/2 (1 + erf(x / sqrt 2)), and NumPy has no erf: on NumPy
# the libm erf runs element by element (exact, and slow: fine for the reference ops and float64
# checks; fast/numerics.py has a float32 approximation for training, benchmarks/numerics_speed.py
# times the two); CuPy has an exact kernel.
_ERF = np.frompyfunc(math.erf, 1, 1)


def erf(x):
    """Elementwise erf(x), exact to the dtype's precision, on NumPy or CuPy."""
    if get_xp(x) is not np:
        from cupyx.scipy.special import erf as cupy_erf

        return cupy_erf(x)
    return _ERF(x).astype(x.dtype)
