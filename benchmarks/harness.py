"""The benchmark harness: how long one adapter-training step takes, where the time goes, and how
that compares with PyTorch + AdapterHub on the same machine. Run it from a source checkout, with
the installed minadapt:

    python benchmarks/harness.py --lengths 16,64                     minadapt alone
    python benchmarks/harness.py --compare torch --torch-python PY --lengths 16,64 --rounds 3 --json F
    python benchmarks/harness.py --profile --blas --data-dir DIR     + profile, BLAS ceiling, epoch

What is timed, per sequence length L (batch B = 32, every row L real tokens, float32), as
`minadapt train` runs it (minadapt.bench.build and train_step: the batch cut over the cores by
parallel.DataParallel):

    train   dp.loss_and_grads (forward with dropout, loss, backward) + clip_grad_norm + AdamW.step
            split into  fwd = time inside Model._forward in this process (its shard's forward)
                        bwd = the rest of loss_and_grads (loss, backward, the other shards' wait)
                        opt = clip_grad_norm + AdamW.step
    infer   dp.logits (dropout off, [CLS]-only last layer)

`warmup` untimed steps, then `steps` timed ones; each number is the median with [min-max].
Peak RSS is the process's high-water mark (ru_maxrss) after the training steps, plus its shard
workers' (VmHWM), shared pages counted in each: an upper bound.

The files beside this one: flops.py (the step's matrix products and FLOPs), blas.py (the BLAS
ceiling on those products, and the step's floors), profiling.py (cProfile per minadapt function,
wall clock per op), subprocess_runs.py (the subprocesses, minadapt and torch interleaved, rounds),
report.py (the table, the SST-2 epoch estimate), torch_step.py (the PyTorch side).
"""
from __future__ import annotations

import os

# As the minadapt command does, before NumPy is imported: idle OpenBLAS threads sleep after 2^1
# cycles of spinning instead of ~0.1 s, so they do not steal the shards' cores between products.
os.environ.setdefault("OPENBLAS_THREAD_TIMEOUT", "1")

import argparse  # noqa: E402
import json  # noqa: E402
import resource  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import subprocess_runs  # noqa: E402
import report  # noqa: E402
from blas import blas_runtime, run_blas_worker  # noqa: E402
from subprocess_runs import BenchError  # noqa: E402
from flops import step_flops  # noqa: E402
from profiling import run_profile_worker  # noqa: E402

from minadapt.errors import MinadaptError  # noqa: E402


# --- arguments -------------------------------------------------------------------------------------
def _lengths(text: str) -> list[int]:
    try:
        values = sorted({int(v) for v in text.split(",") if v.strip()})
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None
    if not values or values[0] < 1:
        raise argparse.ArgumentTypeError(f"expected positive lengths, got {text!r}")
    return values


def _at_least(low: int):
    def parse(text: str) -> int:
        v = int(text)
        if v < low:
            raise argparse.ArgumentTypeError(f"expected an integer >= {low}, got {text}")
        return v
    return parse


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="benchmarks/harness.py", formatter_class=argparse.ArgumentDefaultsHelpFormatter,
        description="Time minadapt's adapter-training and inference steps at batch 32 and several "
        "lengths, each configuration in its own subprocess; optionally against PyTorch + "
        "AdapterHub (benchmarks/torch_step.py) in the same run, with a profile per op and the BLAS "
        "ceiling of the step's own matrix products. Writes all results to --json.")
    p.add_argument("--lengths", type=_lengths, default="16,32,64,128", metavar="L,L,...",
                   help="sequence lengths to time (every row has L real tokens)")
    p.add_argument("--batch-size", type=_at_least(1), default=32, help="sentences per step")
    p.add_argument("--warmup", type=_at_least(0), default=5, help="untimed steps first")
    p.add_argument("--steps", type=_at_least(1), default=20, help="timed steps (median, min, max)")
    p.add_argument("--rounds", type=_at_least(1), default=1,
                   help="time each length's minadapt/torch pair this many times, alternating which "
                   "goes first; each row then shows the median over the rounds, and the ratio is "
                   "the median of the rounds' ratios (on a machine whose speed drifts, two runs "
                   "side by side compare more fairly than two runs minutes apart)")
    p.add_argument("--threads", type=_at_least(1), default=2,
                   help="threads of each subprocess: minadapt's shards (MINADAPT_THREADS; each "
                   "shard runs single-threaded BLAS) and torch's BLAS/OpenMP threads "
                   "(OPENBLAS/OMP/MKL_NUM_THREADS)")
    p.add_argument("--openblas-timeout", type=_at_least(0), default=0, metavar="N",
                   help="OPENBLAS_THREAD_TIMEOUT for the subprocesses: idle OpenBLAS threads "
                   "spin for 2^N cycles before they sleep (N clamped to 4..30; OpenBLAS's own "
                   "default is 28, ~0.1 s). 0: as the minadapt command, 1 unless already set")
    p.add_argument("--ops", choices=["fast", "reference"], default="fast",
                   help="minadapt's ops: minadapt.fast, or the plain minadapt.nn")
    p.add_argument("--compare", choices=["none", "torch"], default="none",
                   help="also time PyTorch + AdapterHub (benchmarks/torch_step.py), interleaved")
    p.add_argument("--torch-python", default=sys.executable, metavar="PATH",
                   help="the python that has torch, transformers and adapters")
    p.add_argument("--json", default="bench.json", metavar="PATH", help="write all results here")
    p.add_argument("--profile", action="store_true",
                   help="also profile a few training steps (cProfile), time summed per minadapt "
                   "function, and the wall clock of each op")
    p.add_argument("--blas", action="store_true",
                   help="also measure the BLAS's GFLOP/s on the step's own matrix shapes, and "
                   "the floor of each training and inference step (its products alone at those "
                   "rates; with --compare torch also as a share of PyTorch's time); with SST-2's "
                   "data, the epoch floor too")
    p.add_argument("--data-dir", metavar="DIR", help="folder with SST-2's train.tsv, for the epoch "
                   "estimate and floor (default: $MINADAPT_DATA/sst2 or the cache; skipped when "
                   "absent)")
    p.add_argument("--wait-quiet", type=_at_least(0), default=0, metavar="SECONDS",
                   help="before each subprocess, wait up to SECONDS for other processes to leave "
                   "the CPU idle (on a shared machine; 0: start at once)")
    p.add_argument("--weights", metavar="DIR", help="checkpoint folder (default: "
                   "weights/all-MiniLM-L6-v2, downloaded when missing)")
    p.add_argument("--device", choices=["cpu", "gpu"], default=None,
                   help="where minadapt runs (default: $MINADAPT_DEVICE or cpu)")
    p.add_argument("--worker", action="store_true",
                   help="internal: run one configuration in this process and print its JSON")
    return p


# --- the worker: one configuration in this process -------------------------------------------------
def summary(seconds: list[float]) -> dict:
    ms = [s * 1e3 for s in seconds]
    return {"median": round(statistics.median(ms), 3), "min": round(min(ms), 3), "max": round(max(ms), 3)}


def peak_rss_mb(pids=()) -> float:
    """Peak resident memory of this process, plus that of the shard worker processes `pids`
    (DataParallel.pids): their sum, in which the pages they share (the weights, inherited from the
    fork) count once per process, so an upper bound on what they hold."""
    kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KB on Linux, bytes on macOS
    mb = kb / (1024 * 1024 if sys.platform == "darwin" else 1024)
    for pid in pids:
        with open(f"/proc/{pid}/status") as f:  # VmHWM: the process's peak resident set, in kB
            mb += next(int(line.split()[1]) for line in f if line.startswith("VmHWM:")) / 1024
    return round(mb, 1)


def gpu_memory(device: str) -> dict:
    """On the GPU: the device and the memory CuPy's pool holds (its high-water mark, since the pool
    keeps freed blocks for reuse), the counterpart of torch.cuda.max_memory_reserved()."""
    if device != "gpu":
        return {}
    import cupy

    name = cupy.cuda.runtime.getDeviceProperties(cupy.cuda.Device().id)["name"]
    return {"gpu": name.decode() if isinstance(name, bytes) else str(name),
            "peak_gpu_mb": round(cupy.get_default_memory_pool().total_bytes() / 2**20, 1)}


def setup(args):
    """The benchmarked model, its DataParallel and AdamW (minadapt.bench.build, as `minadapt train`
    makes them) and a random batch of args.lengths[0] tokens a row."""
    from minadapt.bench import build, random_batch

    model, dp, opt = build(args.weights, args.device, args.ops)
    L = args.lengths[0]
    if L > model.cfg.max_position_embeddings:
        dp.close()
        raise BenchError(f"L={L} exceeds the model's max_position_embeddings "
                         f"({model.cfg.max_position_embeddings})")
    return model, dp, opt, random_batch(args.batch_size, L, model.cfg.vocab_size)


def time_forward(model, sync):
    """Make the model's own _forward record how long each call takes (loss_and_grads calls it; in
    this process that is shard 0's forward)."""
    forward, spent = model._forward, []

    def timed(*a, **kw):
        t0 = time.perf_counter()
        out = forward(*a, **kw)
        sync(out[0])
        spent.append(time.perf_counter() - t0)
        return out

    model._forward = timed
    return spent


def run_worker(args) -> dict:
    """Time training and inference steps of one configuration (args.lengths[0])."""
    import numpy as np

    from minadapt.backend import synchronize
    from minadapt.bench import infer_step, train_step
    from minadapt.parallel.cores import shards

    model, dp, opt, (ids, mask, labels) = setup(args)
    B, L = ids.shape
    fwd_spent = time_forward(model, synchronize)  # before the workers fork: they inherit it
    fwd, bwd, stp, tot = [], [], [], []
    try:
        for i in range(args.warmup + args.steps):
            n_fwd = len(fwd_spent)
            loss, t_lg, t_opt = train_step(model, dp, opt, ids, mask, labels)
            if i >= args.warmup:
                tot.append(t_lg + t_opt)
                stp.append(t_opt)
                if len(fwd_spent) == n_fwd + 1:  # else loss_and_grads no longer calls _forward
                    fwd.append(fwd_spent[-1])
                    bwd.append(t_lg - fwd[-1])
        rss_train = peak_rss_mb(dp.pids)
        gpu_mem = gpu_memory(model.device)
        final_loss = float(loss)
        del model._forward  # the class's own again
        inf = [infer_step(dp, ids, mask) for _ in range(args.warmup + args.steps)][args.warmup:]
        logits = dp.logits(ids, mask)
        rss_infer = peak_rss_mb(dp.pids)
    finally:
        dp.close()
    head, adapter = model.heads[dp.name], model.adapters[dp.name]
    assert tuple(logits.shape) == (B, head.num_labels)
    flops = step_flops(model.cfg, B, L, adapter.bottleneck, head.num_labels,
                       cls_only=args.ops == "fast")
    train_ms, infer_ms = summary(tot), summary(inf)
    return {
        "impl": "minadapt",
        "ops": args.ops,
        "numpy_version": np.__version__,
        "device": model.device,
        "blas": blas_runtime(),
        "env": {k: os.environ[k] for k in subprocess_runs.thread_env(1, 1) if k in os.environ},
        "threads": args.threads,
        "shards": len(shards(B, model.xp)) if dp.n > 1 else 1,
        "batch_size": B,
        "seq_len": L,
        "warmup": args.warmup,
        "steps": args.steps,
        "train_ms": train_ms,
        "fwd_ms": summary(fwd) if fwd else None,
        "bwd_ms": summary(bwd) if bwd else None,
        "opt_ms": summary(stp),
        "infer_ms": infer_ms,
        "peak_rss_mb": rss_train,
        "peak_rss_after_infer_mb": rss_infer,
        **gpu_mem,
        "trainable_params": int(sum(model.params[k].size for k in model.trainable_names(dp.name))),
        "final_train_loss": final_loss,  # the same batch every step, so it falls
        "flops": flops,
        "gflops_per_s": {"train": round(flops["train"] / train_ms["median"] / 1e6, 1),
                         "infer": round(flops["infer"] / infer_ms["median"] / 1e6, 1)},
    }


def worker(args) -> dict:
    from minadapt.fast.numerics import keep_freed_memory

    keep_freed_memory()  # as the minadapt command does: each step reuses the last one's pages
    if args.blas:
        return run_blas_worker(args)
    if len(args.lengths) != 1:
        raise BenchError("--worker times one configuration: give one --lengths value")
    if not args.profile:
        return run_worker(args)
    model, dp, opt, batch = setup(args)
    try:
        return run_profile_worker(args, model, dp, opt, batch)
    finally:
        dp.close()


# --- the parent: plan, spawn, collect --------------------------------------------------------------
def run(args) -> int:
    from minadapt.io.hub import ensure_checkpoint

    weights = Path(args.weights).resolve() if args.weights else ensure_checkpoint().resolve()
    if args.compare == "torch":
        subprocess_runs.check_torch(args)
    env = subprocess_runs.thread_env(args.threads, args.openblas_timeout)
    rep = {"machine": {**subprocess_runs.machine_info(), "load_start": subprocess_runs.load_average()},
           "config": {"batch_size": args.batch_size, "lengths": args.lengths, "warmup": args.warmup,
                      "steps": args.steps, "rounds": args.rounds, "threads": args.threads,
                      "compare": args.compare, "device": args.device or "cpu", "ops": args.ops,
                      "weights": str(weights), "env": env,
                      "adapter": "Houlsby, bottleneck 64, swish; head 2 labels", "dtype": "float32"},
           "rows": []}
    results: dict = {}  # (impl, L) -> [one result per round]
    loads: dict = {}
    tmp_json = Path(args.json).with_name(Path(args.json).name + ".torch.tmp")

    def spawn(cmd, what):
        if args.wait_quiet:
            subprocess_runs.wait_quiet(args.wait_quiet)
        print(f"bench: {what} (load average {subprocess_runs.load_average():.2f}) ...", file=sys.stderr, flush=True)
        return subprocess_runs.run_process(cmd, env, what)

    for impl, L in subprocess_runs.plan_runs(args.lengths, args.compare, args.rounds):
        loads.setdefault((impl, L), subprocess_runs.load_average())
        if impl == "minadapt":
            res = subprocess_runs.last_json(spawn(subprocess_runs.worker_command(args, L, weights=weights),
                                          f"minadapt L={L}"), f"minadapt L={L}")
        else:
            tmp_json.parent.mkdir(parents=True, exist_ok=True)
            _, usage = spawn(subprocess_runs.torch_command(args, L, weights, tmp_json), f"torch L={L}")
            res = {**json.loads(tmp_json.read_text()), "process": usage}
            tmp_json.unlink()
        results.setdefault((impl, L), []).append(res)
        print(f"bench: {impl} L={L}: train {res['train_ms']['median']:.1f} ms, infer "
              f"{res['infer_ms']['median']:.1f} ms, peak RSS {res['peak_rss_mb']:.0f} MB",
              file=sys.stderr, flush=True)
    for L in args.lengths:
        a_rounds, t_rounds = results[("minadapt", L)], results.get(("torch", L))
        a, t = subprocess_runs.merge_rounds(a_rounds), t_rounds and subprocess_runs.merge_rounds(t_rounds)
        rep["rows"].append({"L": L, "minadapt": a, "torch": t,
                            "load1": {impl: loads.get((impl, L)) for impl in ("minadapt", "torch")
                                      if (impl, L) in loads},
                            "ratio": None if t is None else {
                                "train": subprocess_runs.paired_ratio(a_rounds, t_rounds, "train_ms"),
                                "infer": subprocess_runs.paired_ratio(a_rounds, t_rounds, "infer_ms"),
                                "rss": subprocess_runs.paired_ratio(a_rounds, t_rounds, report.memory_key(rep))}})
    rep["machine"]["load_end"] = subprocess_runs.load_average()

    if args.profile:
        L = min(args.lengths, key=lambda x: abs(x - 64))
        rep["profile"] = subprocess_runs.last_json(spawn(subprocess_runs.worker_command(args, L, "profile", weights),
                                                 f"profile L={L}"), "profile")
    if args.blas:
        rep["blas"] = subprocess_runs.last_json(spawn(subprocess_runs.worker_command(
            args, mode="blas", weights=weights, lengths=args.lengths), "BLAS ceiling"), "blas")

    lengths = report.sst2_lengths(weights, args.data_dir)
    if lengths is not None:
        rep.update(report.epoch_report(rep, lengths, args.batch_size))

    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(rep, indent=2) + "\n")
    print(report.print_report(rep))
    print(f"\nwritten: {args.json}")
    return 0


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.worker:
            print(json.dumps(worker(args)))
            return 0
        return run(args)
    except MinadaptError as e:
        print(f"benchmarks/harness.py: error: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
