"""The BLAS ceiling: GFLOP/s this machine's BLAS reaches on exactly the step's matrix products, and
the floors: a training or an inference step that did nothing but its products, each at that rate.

Each product is timed with its operands laid out as the step's code lays them out (flops.Gemm
says how) and cut into the step's shards, one single-threaded product per core, as
parallel.DataParallel runs a batch.
"""
from __future__ import annotations

import time
from pathlib import Path

from flops import Gemm, step_gemms


def blas_runtime() -> dict:
    """The OpenBLAS this process loaded: core type it chose and the threads it runs (read through
    ctypes from the library itself, so it shows whether OPENBLAS_NUM_THREADS took effect)."""
    import ctypes

    from minadapt.parallel.cores import openblas

    found = openblas()
    if found is None:
        return {}
    path, fn = found
    corename = fn("get_corename")
    corename.restype = ctypes.c_char_p
    return {"library": Path(path).name, "corename": corename().decode(), "threads": fn("get_num_threads")()}


def gemm_operands(g: Gemm, rng, dtype="float32"):
    """Random operands laid out as the step's code lays them out; returns a function computing the
    product as the step does: cut into shards of the batch that run at once, one single-threaded
    product per core (minadapt/parallel/cores.py), or whole where the step runs one shard."""
    from minadapt.parallel.cores import shards

    def r(*shape):
        return rng.standard_normal(shape).astype(dtype)

    def heads(x, nh):  # (B, T, nh*hs) -> (B, nh, T, hs) view, as attention.split_heads
        B, T, H = x.shape
        return x.reshape(B, T, nh, H // nh).transpose(0, 2, 1, 3)

    def sharded(product, n):  # product(s) computes the rows s (of n) of the batch
        parts = shards(n)
        return lambda reps=1: on_cores(product, parts, reps)

    if g.expr == "x @ W.T":  # rows: tokens, cut as the step cuts its sentences
        x, w = r(g.m, g.k), r(g.n, g.k)
        return sharded(lambda s: x[s] @ w.T, g.m)
    if g.expr == "x @ Wt":
        x, w_t = r(g.m, g.k), r(g.k, g.n)
        return sharded(lambda s: x[s] @ w_t, g.m)
    if g.expr == "dy @ W":
        dy, w = r(g.m, g.k), r(g.k, g.n)
        return sharded(lambda s: dy[s] @ w, g.m)
    if g.expr == "dy.T @ x":  # each shard its own dW over its rows (the shards' dW are then summed)
        dy, x = r(g.k, g.m), r(g.k, g.n)
        return sharded(lambda s: dy[s].T @ x[s], g.k)
    B = g.batch[0]  # the sentences, which shards cut
    nh = g.batch[1] if len(g.batch) > 1 else None  # heads, for the per-head products
    if g.expr == "a @ b":
        a, b = r(*g.batch, g.m, g.k), r(*g.batch, g.k, g.n)
        return sharded(lambda s: a[s] @ b[s], B)
    if g.expr == "a.T @ b":
        a, b = r(*g.batch, g.k, g.m), r(*g.batch, g.k, g.n)
        return sharded(lambda s: a[s].swapaxes(-1, -2) @ b[s], B)
    if g.expr == "a @ b.T":
        a, b = r(*g.batch, g.m, g.k), r(*g.batch, g.n, g.k)
        return sharded(lambda s: a[s] @ b[s].swapaxes(-1, -2), B)
    if g.expr == "a @ Wh":
        a, w = r(B, nh, g.m, g.k), r(nh, g.k, g.n)
        return sharded(lambda s: a[s] @ w, B)
    if g.expr == "a @ Wh.T":
        a, w = r(B, nh, g.m, g.k), r(nh, g.n, g.k)
        return sharded(lambda s: a[s] @ w.swapaxes(-1, -2), B)
    if g.expr == "dc @ Wh":
        dc, w = heads(r(B, g.m, nh * g.k), nh), r(nh, g.k, g.n)
        return sharded(lambda s: dc[s] @ w, B)
    if g.expr == "a.T @ dc":
        a, dc = r(B, nh, g.k, g.m), heads(r(B, g.k, nh * g.n), nh)
        return sharded(lambda s: a[s].transpose(0, 1, 3, 2) @ dc[s], B)
    if g.expr == "dc @ b":
        dc, b = heads(r(B, g.m, nh * g.k), nh), r(B, nh, g.k, g.n)
        return sharded(lambda s: dc[s] @ b[s], B)
    raise ValueError(f"unknown gemm expression {g.expr!r}")


_THREADS: dict = {}  # n -> a ThreadPoolExecutor kept for the whole run


def on_cores(product, parts, reps: int = 1) -> list:
    """[product(s) for s in parts], each on its own thread (computed `reps` times over, the last
    results returned), OpenBLAS at one thread meanwhile: a single matrix product keeps the GIL
    released from start to end, so threads run these side by side as the step's shard processes
    do (minadapt/parallel/cores.py says why a step needs processes). The threads are made once, and `reps` lets a
    caller time many products per hand-over: one hand-over to the threads costs 70-170 us here,
    more than a short length's adapter or per-head products (12 by 32 by 12) take, and timed one
    per hand-over they would understate the ceiling."""
    from concurrent.futures import ThreadPoolExecutor

    from minadapt.parallel.cores import one_blas_thread

    def repeated(s):
        for _ in range(reps - 1):
            product(s)
        return product(s)

    if len(parts) == 1:
        return [repeated(parts[0])]
    if len(parts) not in _THREADS:
        _THREADS[len(parts)] = ThreadPoolExecutor(len(parts))
    pool = _THREADS[len(parts)]
    with one_blas_thread():
        return list(pool.map(repeated, parts))


def time_gemm(fn, min_seconds=0.2, min_reps=5, min_call_seconds=2e-3) -> float:
    """Best time of one product (seconds) from fn(reps), which computes it reps times: a ceiling,
    so the best run counts. reps is chosen so that one call takes about min_call_seconds, which
    spreads the fixed cost of a call (handing the work to the shards' threads) over many products."""
    fn()  # warm-up
    t0 = time.perf_counter()
    fn()
    reps = max(1, min(1000, round(min_call_seconds / max(time.perf_counter() - t0, 1e-7))))
    best, calls, t_start = float("inf"), 0, time.perf_counter()
    while calls < min_reps or time.perf_counter() - t_start < min_seconds:
        t0 = time.perf_counter()
        fn(reps)
        best = min(best, (time.perf_counter() - t0) / reps)
        calls += 1
    return best


def run_blas_worker(args) -> dict:
    """GFLOP/s of every distinct matrix product of the training step at each L, and the step's
    "BLAS floor": its products' FLOPs at those rates, the time a step would take if it were only
    its matrix products, each running as fast as it does alone. The same for inference
    (`infer_floor_ms`): its products are the training step's forward ones, already timed."""
    import numpy as np

    from minadapt.config import BertConfig
    from minadapt.parallel.cores import shards

    if args.weights is None:
        from minadapt.io.hub import ensure_checkpoint

        args.weights = ensure_checkpoint()
    cfg = BertConfig.from_json(Path(args.weights) / "config.json")
    rng = np.random.default_rng(0)
    cls_only = getattr(args, "ops", "fast") == "fast"  # the reference's last layer is a full one
    out = {"blas": blas_runtime(), "shards": len(shards(args.batch_size)), "lengths": []}
    for L in args.lengths:
        gemms = step_gemms(cfg, args.batch_size, L, cls_only=cls_only)
        total_flops = sum(g.flops for g in gemms)
        groups: dict = {}
        for g in gemms:
            groups.setdefault(g.shape, []).append(g)
        rows, floor, seconds_of = [], 0.0, {}
        for (expr, batch, m, k, n), group in groups.items():
            seconds = seconds_of[group[0].shape] = time_gemm(gemm_operands(group[0], rng))
            floor += len(group) * seconds
            rows.append({"expr": expr, "batch": list(batch), "m": m, "k": k, "n": n,
                         "names": sorted({g.name for g in group}), "count": len(group),
                         "ms": round(seconds * 1e3, 4),
                         "gflops_per_s": round(group[0].flops / seconds / 1e9, 1),
                         "step_share": round(len(group) * group[0].flops / total_flops, 4)})
        infer_floor = sum(seconds_of[g.shape] for g in step_gemms(cfg, args.batch_size, L, train=False,
                                                                   cls_only=cls_only))
        out["lengths"].append({"L": L, "train_flops": total_flops, "floor_ms": round(floor * 1e3, 1),
                               "infer_floor_ms": round(infer_floor * 1e3, 1), "shapes": rows})
    return out


MAIN_SHAPES = ("qkv", "qkv dx", "attn out", "ffn in", "ffn in dx", "ffn out", "ffn out dx",
               "adapter1 down", "adapter1 up dW", "attn scores q k^T", "attn context a v",
               "attn dv = a^T dc")


def format_blas(blas: dict) -> str:
    lengths = blas["lengths"]
    n = blas.get("shards", 1)
    how = (f"{n} shards at once, 1 BLAS thread each" if n > 1 else
           f"{blas['blas'].get('threads', '?')} BLAS threads")
    out = [f"BLAS ceiling ({blas['blas'].get('corename', '?')} core, {how}): GFLOP/s of each "
           "product alone, best of several runs"]
    head = f"  {'product':<20} {'expr':<9} {'shape at L=' + str(lengths[0]['L']):<30}"
    out.append(head + "".join(f" {'L=' + str(x['L']):>7}" for x in lengths))
    by_name = []  # name -> its first shape (a full layer's, not the [CLS]-only last layer's)
    for x in lengths:
        by_name.append({})
        for r in x["shapes"]:
            for n in r["names"]:
                by_name[-1].setdefault(n, r)
    for name in MAIN_SHAPES:
        r0 = by_name[0].get(name)
        if r0 is None:
            continue
        b = "x".join(map(str, r0["batch"]))
        shape = (f"{b}x" if b else "") + f"({r0['m']},{r0['k']})x({r0['k']},{r0['n']})"
        out.append(f"  {name:<20} {r0['expr']:<9} {shape:<30}"
                   + "".join(f" {x.get(name, {}).get('gflops_per_s', float('nan')):7.0f}" for x in by_name))
    out.append(f"  {'step floor (ms)':<61}" + "".join(f" {x['floor_ms']:7.0f}" for x in lengths)
               + "   (every product of the step at its own rate; element-wise work not included)")
    if all("infer_floor_ms" in x for x in lengths):
        out.append(f"  {'inference floor (ms)':<61}"
                   + "".join(f" {x['infer_floor_ms']:7.0f}" for x in lengths)
                   + "   (the same for inference: its forward products alone)")
    return "\n".join(out)
