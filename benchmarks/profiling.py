"""Where a step's time goes: a cProfile summed per minadapt function, and a wall clock per op.

`aggregate_profile` gives each minadapt function its own time plus that of the NumPy calls it
makes; `time_ops` puts a clock around every op's forward and backward (the fast ops of
minadapt.fast, the reference ops of minadapt.nn that the fast bundle still uses: adapter,
embedding, loss, ...) and around clipping, AdamW and the shards' packing of gradients.
"""
from __future__ import annotations

import importlib
import inspect
import time
from pathlib import Path

import minadapt

PACKAGE = Path(minadapt.__file__).resolve().parent
PROFILED_FILES = ("bert.py", "model.py", "heads.py", "optim.py", "ops.py", "cores.py", "packed.py")


def _ours(filename: str) -> str | None:
    """'fast/gelu.py' for a file whose functions the profile reports (the ops in nn/ and fast/,
    bert.py, model.py, ...), else None. Helpers elsewhere (backend.py's erf, NumPy) count in their
    caller."""
    try:
        rel = Path(filename).resolve().relative_to(PACKAGE).as_posix()
    except (ValueError, OSError):
        return None
    return rel if rel.startswith(("nn/", "fast/")) or rel in PROFILED_FILES else None


def aggregate_profile(stats: dict) -> dict:
    """Sum a cProfile's time per minadapt function.

    `stats` is pstats.Stats(...).stats: {(file, line, name): (cc, nc, tottime, cumtime, callers)}.
    Each function's own time (tottime) is counted once: a minadapt function keeps its own, and the
    own time of anything else (a NumPy method, a builtin) goes to the minadapt functions that called
    it, split in proportion to the time spent through each call edge (recursively, through
    non-minadapt callers). Time with no minadapt caller at all lands in "(outside minadapt)".
    Inline operators (`@`, `+=`, ufuncs) are never separate entries: they are already in their
    caller's tottime. Returns {"total_s", "functions": [...], "files": [...]}, largest first."""
    share_memo: dict = {}

    def owners(func, seen=()):
        """{minadapt function: fraction} that the own time of `func` is attributed to."""
        if _ours(func[0]) is not None:
            return {func: 1.0}
        if func in share_memo:
            return share_memo[func]
        callers = stats.get(func, (0, 0, 0, 0, {}))[4]
        callers = {c: e for c, e in callers.items() if c not in seen and c != func}
        weights = {c: (e[3] if isinstance(e, tuple) else 0.0) for c, e in callers.items()}
        total = sum(weights.values())
        if total <= 0:
            weights = {c: (e[1] if isinstance(e, tuple) else e) for c, e in callers.items()}
            total = sum(weights.values())
        result: dict = {}
        if total <= 0:
            result = {None: 1.0}
        else:
            for c, w in weights.items():
                for owner, frac in owners(c, seen + (func,)).items():
                    result[owner] = result.get(owner, 0.0) + frac * w / total
        if not seen:
            share_memo[func] = result
        return result

    own: dict = {}
    calls: dict = {}
    for func, (cc, nc, tt, ct, callers) in stats.items():
        if _ours(func[0]) is not None:
            calls[func] = nc
        for owner, frac in owners(func).items():
            own[owner] = own.get(owner, 0.0) + tt * frac
    total = sum(own.values())
    functions = []
    files: dict = {}
    for func, t in own.items():
        if func is None:
            label, file = "(outside minadapt)", "(outside minadapt)"
        else:
            file = _ours(func[0])
            label = f"{file}:{func[2]}"
        functions.append({"function": label, "self_s": round(t, 6), "share": round(t / total, 4),
                          "calls": calls.get(func, 0)})
        files[file] = files.get(file, 0.0) + t
    functions.sort(key=lambda r: -r["self_s"])
    file_rows = sorted(({"file": f, "self_s": round(t, 6), "share": round(t / total, 4)}
                        for f, t in files.items()), key=lambda r: -r["self_s"])
    return {"total_s": round(total, 6), "functions": functions, "files": file_rows}


def run_profile_worker(args, model, dp, opt, batch) -> dict:
    """cProfile over `args.steps` training steps (after `args.warmup` untimed ones), then the
    wall-clock time of each op (`time_ops`) over as many training and inference steps.
    model, dp, opt: from minadapt.bench.build; batch: (ids, mask, labels)."""
    import cProfile
    import pstats

    from minadapt.bench import infer_step, train_step
    from minadapt.parallel.cores import DataParallel, shards

    ids, mask, labels = batch
    # cProfile sees only this process, so this part runs the batch whole, as one shard
    whole = DataParallel(model, adapter=dp.name, n=1)
    for _ in range(args.warmup):
        train_step(model, whole, opt, ids, mask, labels)
    prof = cProfile.Profile()
    t0 = time.perf_counter()
    prof.enable()
    for _ in range(args.steps):
        train_step(model, whole, opt, ids, mask, labels)
    prof.disable()
    wall = time.perf_counter() - t0
    agg = aggregate_profile(pstats.Stats(prof).stats)
    cores = len(shards(ids.shape[0], model.xp)) if dp.n > 1 else 1
    ops = None
    if model.device == "cpu":  # on a GPU each op returns before its kernels finish
        for _ in range(max(args.warmup, 1)):  # the shards' workers forked, their pages warm
            train_step(model, dp, opt, ids, mask, labels)
        ops = {"train": time_ops(lambda: train_step(model, dp, opt, ids, mask, labels), args.steps),
               "infer": time_ops(lambda: infer_step(dp, ids, mask), args.steps)}
    return {"impl": "minadapt", "seq_len": ids.shape[1], "batch_size": ids.shape[0],
            "steps": args.steps, "wall_ms_per_step": round(wall / args.steps * 1e3, 1), **agg,
            "shards": cores, "ops": ops}


FAST_OPS = ("attention", "cls_attention", "gelu", "layernorm", "dropout", "swish")  # + linear.Linear
NN_OPS = ("linear", "attention", "gelu", "layernorm", "dropout", "adapter", "swish", "relu", "tanh",
          "embedding", "loss")


def op_targets() -> list[tuple[object, str, str]]:
    """(owner, attribute, label) of every function time_ops clocks."""
    from minadapt import optim
    from minadapt.parallel import cores as parallel
    from minadapt.fast.linear import Linear

    targets = [(importlib.import_module(f"minadapt.{pkg}.{m}"), f, f"{pkg}/{m}.{f}")
               for pkg, mods in (("fast", FAST_OPS), ("nn", NN_OPS)) for m in mods
               for f in ("forward", "backward")]
    targets += [(Linear, f, f"fast/linear.{f}") for f in ("forward", "backward")]
    targets += [(optim, "clip_grad_norm", "clip_grad_norm"), (optim.AdamW, "step", "AdamW.step"),
                (parallel, "pack", "cores.pack"), (parallel, "unpack", "cores.unpack")]
    return [t for t in targets if hasattr(t[0], t[1])]


def time_ops(step, steps: int) -> dict:
    """Run step() `steps` times with a wall clock around every function of op_targets(). Each op's
    time is its own: time spent in an op it calls (the adapter's linears) counts for that op.
    Returns {"ms_per_step": {op: ms}, "total_ms": ms per step, "rest_ms": what no op covers
    (residual adds, reshapes, Python, and a shard waiting for the others)}. Unlike cProfile this
    adds one clock read per op call, not per Python call. Where a batch runs as shards
    (minadapt/parallel/cores.py), only this process's shard is seen (the workers run theirs at the same time,
    each on its own core): the figures are per core."""
    spent, originals, stack = {}, [], []  # stack: the open ops' time spent in the ops they called

    def timed(key, fn):
        def wrapper(*a, **kw):
            t0 = time.perf_counter()
            stack.append(0.0)
            try:
                return fn(*a, **kw)
            finally:
                dt, inner = time.perf_counter() - t0, stack.pop()
                spent[key] = spent.get(key, 0.0) + dt - inner
                if stack:
                    stack[-1] += dt
        return wrapper

    for owner, name, label in op_targets():
        raw = inspect.getattr_static(owner, name)  # a staticmethod stays one (fast Linear.backward)
        originals.append((owner, name, raw))
        wrapped = timed(label, getattr(owner, name) if isinstance(raw, staticmethod) else raw)
        setattr(owner, name, staticmethod(wrapped) if isinstance(raw, staticmethod) else wrapped)
    try:
        t0 = time.perf_counter()
        for _ in range(steps):
            step()
        total = time.perf_counter() - t0
    finally:
        for owner, name, raw in reversed(originals):
            setattr(owner, name, raw)
    ms = {k: round(v / steps * 1e3, 2) for k, v in sorted(spent.items(), key=lambda kv: -kv[1])}
    return {"ms_per_step": ms, "total_ms": round(total / steps * 1e3, 2),
            "rest_ms": round(total / steps * 1e3 - sum(ms.values()), 2)}


def _num(x, fmt="{:.1f}") -> str:
    return "-" if x is None else fmt.format(x)


def format_profile(prof: dict, top: int = 15) -> str:
    out = [f"profile: {prof['steps']} training steps at B={prof['batch_size']} L={prof['seq_len']} "
           f"under cProfile, as one shard (cProfile sees one process; {prof['wall_ms_per_step']:.0f} "
           f"ms/step with the profiler on); own time per minadapt function, NumPy calls counted in "
           f"their caller",
           f"  {'share':>6}  {'ms/step':>8}  {'calls/step':>10}  function"]
    for r in prof["functions"][:top]:
        out.append(f"  {100 * r['share']:5.1f}%  {1e3 * r['self_s'] / prof['steps']:8.1f}  "
                   f"{r['calls'] / prof['steps']:10.0f}  {r['function']}")
    out.append("  per file: " + ", ".join(f"{r['file']} {100 * r['share']:.1f}%"
                                           for r in prof["files"][:10]))
    ops = prof.get("ops")
    if ops:
        cores = prof.get("shards", 1)
        per = f", per core: this process's shard, {cores} run at once" if cores > 1 else ""
        out += ["", f"wall clock per op, {prof['steps']} steps each (an op's own time; no profiler "
                    f"overhead): ms per step{per}"]
        names = list(dict.fromkeys([*ops["train"]["ms_per_step"], *ops["infer"]["ms_per_step"]]))
        out.append(f"  {'op':28s} {'train':>8} {'infer':>8}")
        for name in names:
            t, i = ops["train"]["ms_per_step"].get(name), ops["infer"]["ms_per_step"].get(name)
            out.append(f"  {name:28s} {_num(t):>8} {_num(i):>8}")
        out.append(f"  {'rest (glue, Python)':28s} {_num(ops['train']['rest_ms']):>8} "
                   f"{_num(ops['infer']['rest_ms']):>8}")
        out.append(f"  {'whole step':28s} {_num(ops['train']['total_ms']):>8} "
                   f"{_num(ops['infer']['total_ms']):>8}")
    return "\n".join(out)
