"""Data parallelism on a CPU's cores: each core runs the whole model on its own share of the batch.

A sentence never looks at another one (attention stays inside a sentence), so a batch of B
sentences can be cut into n shards that run forward and backward independently. The mean loss over
the batch is the shard losses weighted by their share, L = sum_s (B_s / B) L_s, so each shard's
backward starts from dL/dL_s = B_s / B and the gradients simply add up. This is the data
parallelism of multi-GPU training (each device its own micro-batch, gradients summed), with cores
for devices and one shared copy of the weights.

Why it beats letting BLAS use the cores: OpenBLAS threads only the matrix products. Everything
between them (GELU, softmax, LayerNorm, residual adds; ~30% of a step here) runs on one core, while
the other waits. With shards, every line of the step runs on every core, and each product is a
single-threaded one on half the rows: no hand-off between BLAS threads inside a call. NumPy
releases the GIL inside each ufunc and each matmul, so plain Python threads are enough; the GIL is
held only between NumPy calls. Measured on the 2-core benchmark machine at B=32, the same model in
one process, two shards and the whole batch (2 BLAS threads) alternating for 20 rounds: a training
step at L=64 took 0.81x the time of the whole-batch step, inference 0.83x; at L=16 0.90x and
0.89x, where each NumPy call is short enough that Python's own time and the GIL start to show.

Shards are used on NumPy only (a GPU is one device), when OpenBLAS is the BLAS (its thread count
can be set to 1 while shards run; another BLAS would multiply threads), and for B >= 2.
$MINADAPT_THREADS sets the number of shards (default: the cores this process may run on).
"""
from __future__ import annotations

import os
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np

_OPENBLAS = []  # [found or None], looked up once
_POOL: dict = {}  # the shard threads: {"pid", "size", "executor"}, made on first use
_INSIDE = threading.local()  # .active: this thread is running a shard (no nested sharding)


def cores() -> int:
    """The cores this process may run on (its CPU affinity), e.g. 2 on the benchmark machine."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def threads() -> int:
    """How many shards a batch is cut into on the CPU: $MINADAPT_THREADS, else cores()."""
    value = os.environ.get("MINADAPT_THREADS")
    if not value:
        return cores()
    if not value.strip().isdigit() or int(value) < 1:
        from .errors import ConfigError

        raise ConfigError(f"MINADAPT_THREADS={value!r}: expected a whole number of threads, 1 or "
                          f"more (the shards a batch is cut into; unset: the {cores()} cores here)")
    return int(value)


def openblas():
    """The OpenBLAS NumPy loaded, as (library path, fn) with fn(name) -> that ctypes function
    (e.g. fn("set_num_threads")) under whichever symbol prefix this build uses; None for another
    BLAS, or where /proc/self/maps does not exist (not Linux)."""
    if not _OPENBLAS:
        _OPENBLAS.append(_find_openblas())
    return _OPENBLAS[0]


def _find_openblas():
    import ctypes

    try:
        with open("/proc/self/maps") as f:
            libs = sorted({line.split()[-1] for line in f if "openblas" in line.lower() and "/" in line})
    except OSError:
        return None
    for path in libs:
        try:
            lib = ctypes.CDLL(path)
        except OSError:
            continue
        for prefix, suffix in (("scipy_openblas_", "64_"), ("openblas_", "64_"), ("openblas_", "")):
            if hasattr(lib, f"{prefix}get_num_threads{suffix}"):
                return path, lambda name, lib=lib, pre=prefix, suf=suffix: getattr(lib, pre + name + suf)
    return None


def shards(batch_size: int, xp=np) -> list[slice]:
    """The slices of the batch axis that run in parallel: threads() near-equal ones on NumPy with
    OpenBLAS, else one (the whole batch). Also one inside a running shard: shards do not nest."""
    n = min(threads(), batch_size)
    if xp is not np or n < 2 or openblas() is None or getattr(_INSIDE, "active", False):
        return [slice(0, batch_size)]
    bounds = [batch_size * i // n for i in range(n + 1)]
    return [slice(a, b) for a, b in zip(bounds[:-1], bounds[1:])]


def run(fn, *per_shard):
    """[fn(*args) for args in zip(*per_shard)], each call on its own thread, OpenBLAS held at one
    thread meanwhile (restored afterwards). One call runs here, in this thread, unchanged."""
    calls = list(zip(*per_shard))
    if len(calls) == 1:
        return [fn(*calls[0])]
    blas = openblas()[1]
    set_threads, get_threads = blas("set_num_threads"), blas("get_num_threads")

    def shard(args):
        _INSIDE.active = True
        try:
            return fn(*args)
        finally:
            _INSIDE.active = False

    before = get_threads()
    set_threads(1)  # each shard's products run single-threaded in its own thread
    try:
        return list(_pool(len(calls)).map(shard, calls))
    finally:
        set_threads(before)


def _pool(size: int) -> ThreadPoolExecutor:
    """The shard threads: made on first use, again for more shards, and again in a forked child
    process. A fork copies the executor but not its threads: the copy believes its idle threads
    are waiting for work, starts none, and the child's shards would wait forever."""
    if _POOL.get("pid") != os.getpid() or _POOL["size"] < size:
        if _POOL.get("pid") == os.getpid():
            _POOL["executor"].shutdown(wait=False)  # the idle threads of the smaller pool
        _POOL.update(pid=os.getpid(), size=size,
                     executor=ThreadPoolExecutor(size, thread_name_prefix="minadapt-shard"))
    return _POOL["executor"]


def child_rngs(rng, n: int) -> list:
    """n generators for n shards' dropout, seeded from `rng`'s own stream: the same parent state
    gives the same masks (a resumed run repeats them), and the parent moves on as it would after
    any draw. One shard uses `rng` itself."""
    if n == 1:
        return [rng]
    seeds = rng.integers(0, 2**63, size=n)
    return [np.random.default_rng(int(s)) for s in seeds]
