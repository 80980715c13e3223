"""`minadapt bench`: how long one adapter-training step takes, where the time goes, and how that
compares with PyTorch + AdapterHub on the same machine.

What is timed, per sequence length L (batch B = 32, every row L real tokens, float32):

    train   loss_and_grads (forward with dropout, loss, backward) + clip_grad_norm + AdamW.step
            split into  fwd = time inside Model._forward (embeddings, encoder, head)
                        bwd = the rest of loss_and_grads (loss, head and encoder backward)
                        opt = clip_grad_norm + AdamW.step
    infer   Model.logits (dropout off, [CLS]-only last layer)

`warmup` untimed steps, then `steps` timed ones; each number is the median with [min-max].
Peak RSS is the process's high-water mark (ru_maxrss) after the training steps, plus its shard
workers' (VmHWM), shared pages counted in each: an upper bound.

Each (implementation, L) runs in a fresh subprocess, for two reasons: BLAS reads its thread count
(OPENBLAS_NUM_THREADS, OMP_NUM_THREADS, MKL_NUM_THREADS) once, when NumPy is first imported, so
it must be in the environment before that; and ru_maxrss only ever grows, so a process per
configuration is the only way to get each one's peak. With `--compare torch` the two
implementations alternate (minadapt L=16, torch L=16, minadapt L=32, ...): a shared machine's
speed drifts by 5-10% over minutes, so only ratios taken side by side in one run mean anything.

Also here: the step's matrix products and FLOP count (`step_gemms`), the GFLOP/s this machine's
BLAS reaches on exactly those products (`--blas`, the ceiling, and the floors: a training or
inference step that did nothing but its matrix products), a cProfile of the step summed per
minadapt function (`--profile`), and an estimate of one SST-2 epoch's time (with `--blas`, also its
floor: the epoch if each step took only its matrix products).
"""
from __future__ import annotations

import argparse
import json
import math
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import NamedTuple

from .errors import MinadaptError

PACKAGE = Path(__file__).resolve().parent
TORCH_SCRIPT = PACKAGE.parent / "benchmarks" / "torch_step.py"
CLS_ID = 101  # [CLS] in BERT's uncased vocabulary
MAX_GRAD_NORM = 1.0  # as in minadapt train
PROFILE_STEPS, PROFILE_WARMUP = 5, 2


class BenchError(MinadaptError):
    """A benchmark subprocess failed, or the PyTorch side cannot run."""


# --- arguments -------------------------------------------------------------------------------------
def _lengths(text: str) -> list[int]:
    try:
        values = sorted({int(v) for v in text.split(",") if v.strip()})
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None
    if not values or values[0] < 1:
        raise argparse.ArgumentTypeError(f"expected positive lengths, got {text!r}")
    return values


def _positive(text: str) -> int:
    v = int(text)
    if v < 1:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, got {text}")
    return v


def _non_negative(text: str) -> int:
    v = int(text)
    if v < 0:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {text}")
    return v


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The options of `minadapt bench` (cli.py adds --weights and --device)."""
    p.add_argument("--lengths", type=_lengths, default="16,32,64,128", metavar="L,L,...",
                   help="sequence lengths to time (every row has L real tokens)")
    p.add_argument("--batch-size", type=_positive, default=32)
    p.add_argument("--warmup", type=_non_negative, default=5, help="untimed steps first")
    p.add_argument("--steps", type=_positive, default=20, help="timed steps (median, min, max)")
    p.add_argument("--rounds", type=_positive, default=1,
                   help="time each length's minadapt/torch pair this many times, alternating which "
                   "goes first; each row then shows the median over the rounds, and the ratio is "
                   "the median of the rounds' ratios (on a machine whose speed drifts, two runs "
                   "side by side compare more fairly than two runs minutes apart)")
    p.add_argument("--threads", type=_positive, default=2,
                   help="threads of each subprocess: minadapt's shards (MINADAPT_THREADS; each "
                   "shard runs single-threaded BLAS) and torch's BLAS/OpenMP threads "
                   "(OPENBLAS/OMP/MKL_NUM_THREADS)")
    p.add_argument("--openblas-timeout", type=_non_negative, default=0, metavar="N",
                   help="OPENBLAS_THREAD_TIMEOUT for the subprocesses: idle OpenBLAS threads "
                   "spin for 2^N cycles before they sleep (N clamped to 4..30; OpenBLAS's own "
                   "default is 28, ~0.1 s). 0: leave it to minadapt, which sets 1 unless it is set")
    p.add_argument("--compare", choices=["none", "torch"], default="none",
                   help="also time PyTorch + AdapterHub (benchmarks/torch_step.py), interleaved")
    p.add_argument("--torch-python", default=sys.executable, metavar="PATH",
                   help="the python that has torch, transformers and adapters")
    p.add_argument("--json", default="bench.json", metavar="PATH", help="write all results here")
    p.add_argument("--profile", action="store_true",
                   help="also profile a few training steps (cProfile), time summed per minadapt function")
    p.add_argument("--blas", action="store_true",
                   help="also measure the BLAS's GFLOP/s on the step's own matrix shapes, and "
                   "the floor of each training and inference step (its products alone at those "
                   "rates; with --compare torch also as a share of PyTorch's time); with SST-2's "
                   "data, the epoch floor too")
    p.add_argument("--data-dir", metavar="DIR", help="folder with SST-2's train.tsv, for the epoch "
                   "estimate and floor (default: $MINADAPT_DATA/sst2 or the cache; skipped when "
                   "absent)")
    p.add_argument("--wait-quiet", type=_non_negative, default=0, metavar="SECONDS",
                   help="before each subprocess, wait up to SECONDS for other processes to leave "
                   "the CPU idle (on a shared machine; 0: start at once)")
    p.add_argument("--worker", action="store_true",
                   help="internal: run one configuration in this process and print its JSON")


# --- the step's matrix products --------------------------------------------------------------------
class Gemm(NamedTuple):
    """One matrix product of the step: `batch` independent (m, k) x (k, n) products.
    `expr` is how the code writes it, which fixes the memory layout BLAS sees:
      "x @ Wt"    x (m, k), Wt (k, n) contiguous: a frozen linear's forward on its W^T copy
                  (linear.py says why the step keeps one)
      "x @ W.T"   x (m, k), W (n, k): a trainable linear's forward, W in torch layout (out, in)
      "dy @ W"    dy (m, k), W (k, n): a linear backward's dx
      "dy.T @ x"  dy (k, m), x (k, n): a linear backward's dW
      "a @ b", "a.T @ b", "a.T @ dc", "dc @ b"   attention's batched products over (B, nh):
                  a and b are contiguous (B, nh, ., .) arrays (attention copies q, k^T and v so),
                  dc a per-head view of the (B, T, H) gradient; over (B,) alone (the last layer's
                  cls_attention), contiguous (B, ., .) arrays
      "a @ b.T"   over (B,): b (B, n, k) read transposed (the layer input x as x^T)
      "a @ Wh", "a @ Wh.T", "dc @ Wh"   cls_attention's products over (B, nh) with a weight's
                  per-head rows Wh (nh, hs, H), shared by the B sentences
    """
    name: str
    phase: str  # "fwd" or "bwd"
    expr: str
    batch: tuple  # () or (B, nh)
    m: int
    k: int
    n: int

    @property
    def flops(self) -> int:
        return 2 * math.prod(self.batch) * self.m * self.k * self.n

    @property
    def shape(self) -> tuple:
        """What its speed depends on: products with the same shape are timed once."""
        return self.expr, self.batch, self.m, self.k, self.n


def _linear(name, rows, d_in, d_out, train, trainable, need_dx=True):
    """A linear y = x W^T (rows x d_in -> rows x d_out): its forward and, in training, the backward
    products it needs: dx = dy W unless nothing below wants it; dW = dy^T x only when it trains."""
    out = [Gemm(name, "fwd", "x @ W.T" if trainable else "x @ Wt", (), rows, d_in, d_out)]
    if train and need_dx:
        out.append(Gemm(name + " dx", "bwd", "dy @ W", (), rows, d_out, d_in))
    if train and trainable:
        out.append(Gemm(name + " dW", "bwd", "dy.T @ x", (), d_out, rows, d_in))
    return out


def _attention(B, nh, Tq, Tk, hs, train):
    bh = (B, nh)
    out = [Gemm("attn scores q k^T", "fwd", "a @ b", bh, Tq, hs, Tk),
           Gemm("attn context a v", "fwd", "a @ b", bh, Tq, Tk, hs)]
    if train:
        out += [Gemm("attn dv = a^T dc", "bwd", "a.T @ dc", bh, Tk, Tq, hs),
                Gemm("attn da = dc v^T", "bwd", "dc @ b", bh, Tq, hs, Tk),
                Gemm("attn dq = ds k", "bwd", "a @ b", bh, Tq, Tk, hs),
                Gemm("attn dk = ds^T q", "bwd", "a.T @ b", bh, Tk, Tq, hs)]
    return out


def _cls_attention(B, nh, Tq, Tk, hs, train):
    """nn/cls_attention.py: the last layer's attention over keys and values it never forms."""
    H = nh * hs
    out = [Gemm("cls u = q Wk_h", "fwd", "a @ Wh", (B, nh), Tq, hs, H),
           Gemm("cls scores u x^T", "fwd", "a @ b.T", (B,), nh * Tq, H, Tk),
           Gemm("cls z = a x", "fwd", "a @ b", (B,), nh * Tq, Tk, H),
           Gemm("cls context z Wv_h^T", "fwd", "a @ Wh.T", (B, nh), Tq, H, hs)]
    if train:
        out += [Gemm("cls dz = dc Wv_h", "bwd", "dc @ Wh", (B, nh), Tq, hs, H),
                Gemm("cls da = dz x^T", "bwd", "a @ b.T", (B,), nh * Tq, H, Tk),
                Gemm("cls dx = a^T dz", "bwd", "a.T @ b", (B,), Tk, nh * Tq, H),
                Gemm("cls du = ds x", "bwd", "a @ b", (B,), nh * Tq, Tk, H),
                Gemm("cls dx += ds^T u", "bwd", "a.T @ b", (B,), Tk, nh * Tq, H),
                Gemm("cls dq = du Wk_h^T", "bwd", "a @ Wh.T", (B, nh), Tq, H, hs)]
    return out


def step_gemms(cfg, B: int, L: int, bottleneck: int = 64, num_labels: int = 2,
               train: bool = True) -> list[Gemm]:
    """Every matrix product of one step of adapter training (train=True) or inference, as the work
    needs it: frozen linears get dx only (no dW), adapters and head get dx and dW, no dx below
    layer 0 (the embeddings are frozen), and the last layer computes its query, attention output,
    FFN and adapters for the [CLS] row alone, and attends without forming keys and values.
    cfg: a BertConfig (hidden_size, intermediate_size, num_attention_heads, num_hidden_layers)."""
    H, F, nh, n_layers = (cfg.hidden_size, cfg.intermediate_size, cfg.num_attention_heads,
                          cfg.num_hidden_layers)
    hs, m, N = H // nh, bottleneck, B * L
    gemms = []
    for i in range(n_layers):
        cls_only = i == n_layers - 1
        rows, Tq = (B, 1) if cls_only else (N, L)  # rows after attention
        need_dx = i > 0
        if cls_only:
            gemms += _linear("q", B, H, H, train, False, need_dx)
            gemms += _cls_attention(B, nh, Tq, L, hs, train)
        else:
            gemms += _linear("qkv", N, H, 3 * H, train, False, need_dx)
            gemms += _attention(B, nh, Tq, L, hs, train)
        gemms += _linear("attn out", rows, H, H, train, False)
        for where in ("adapter1", "ffn", "adapter2"):
            if where == "ffn":
                gemms += _linear("ffn in", rows, H, F, train, False)
                gemms += _linear("ffn out", rows, F, H, train, False)
            else:
                gemms += _linear(where + " down", rows, H, m, train, True)
                gemms += _linear(where + " up", rows, m, H, train, True)
    gemms += _linear("head dense", B, H, H, train, True)
    gemms += _linear("head out", B, H, num_labels, train, True)
    return gemms


def step_flops(cfg, B, L, bottleneck=64, num_labels=2) -> dict:
    """FLOPs (2 per multiply-add) of the matrix products of one training and one inference step.
    Element-wise work (GELU, softmax, LayerNorm, dropout, AdamW) is not counted: it is a few
    percent of the FLOPs, though not of the time."""
    train = step_gemms(cfg, B, L, bottleneck, num_labels, train=True)
    return {"train": sum(g.flops for g in train),
            "train_fwd": sum(g.flops for g in train if g.phase == "fwd"),
            "train_bwd": sum(g.flops for g in train if g.phase == "bwd"),
            "infer": sum(g.flops for g in step_gemms(cfg, B, L, bottleneck, num_labels, train=False))}


# --- small helpers ---------------------------------------------------------------------------------
def summary(seconds: list[float]) -> dict:
    ms = [s * 1e3 for s in seconds]
    return {"median": round(statistics.median(ms), 3), "min": round(min(ms), 3), "max": round(max(ms), 3)}


def peak_rss_mb(model=None) -> float:
    """Peak resident memory of this process, plus that of `model`'s shard worker processes
    (parallel.py): their sum, in which the pages they share (the weights, in shared memory or
    inherited from the fork) count once per process, so an upper bound on what they hold."""
    kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KB on Linux, bytes on macOS
    mb = kb / (1024 * 1024 if sys.platform == "darwin" else 1024)
    for pid in model.worker_pids if model is not None else ():
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


def memory_key(report_or_device) -> str:
    """Which peak memory a run is compared on: GPU memory for --device gpu, else host RSS."""
    device = report_or_device if isinstance(report_or_device, str) else \
        report_or_device["config"].get("device")
    return "peak_gpu_mb" if device == "gpu" else "peak_rss_mb"


def blas_runtime() -> dict:
    """The OpenBLAS this process loaded: core type it chose and the threads it runs (read through
    ctypes from the library itself, so it shows whether OPENBLAS_NUM_THREADS took effect)."""
    import ctypes

    from .parallel import openblas

    found = openblas()
    if found is None:
        return {}
    path, fn = found
    corename = fn("get_corename")
    corename.restype = ctypes.c_char_p
    return {"library": Path(path).name, "corename": corename().decode(), "threads": fn("get_num_threads")()}


def thread_env(threads: int, openblas_timeout: int = 0) -> dict:
    """The environment variables that fix a subprocess's thread counts: minadapt's shards
    (parallel.py), BLAS and OpenMP (torch)."""
    env = {k: str(threads) for k in ("MINADAPT_THREADS", "OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS",
                                     "MKL_NUM_THREADS")}
    if openblas_timeout:
        env["OPENBLAS_THREAD_TIMEOUT"] = str(openblas_timeout)
    return env


def random_batch(B, L, vocab_size, num_labels=2, seed=0):
    """Token ids from the ordinary vocabulary ([1000, 30000), [CLS] first), mask all ones, labels."""
    import numpy as np

    rng = np.random.default_rng(seed)
    hi = min(30000, vocab_size)
    lo = min(1000, hi // 2)
    ids = rng.integers(lo, hi, size=(B, L), dtype=np.int64)
    ids[:, 0] = CLS_ID if CLS_ID < vocab_size else 1
    mask = np.ones((B, L), np.int64)
    labels = rng.integers(0, num_labels, size=B, dtype=np.int64)
    return ids, mask, labels


# --- the worker: one configuration in this process -------------------------------------------------
def build(args):
    """The benchmarked model (adapters of bottleneck 64 + head), its optimiser and a batch."""
    from .model import load_model
    from .optim import AdamW

    model = load_model(args.weights, dtype="float32", device=args.device)
    model.add_adapter("sst2", bottleneck=64)
    model.add_classification_head("sst2")
    opt = AdamW({k: model.params[k] for k in model.trainable}, lr=1e-3)
    L = args.lengths[0]
    if L > model.cfg.max_position_embeddings:
        raise BenchError(f"L={L} exceeds the model's max_position_embeddings "
                         f"({model.cfg.max_position_embeddings})")
    return model, opt, random_batch(args.batch_size, L, model.cfg.vocab_size)


def _time_forward(model, sync):
    """Make the model's own _forward record how long each call takes (loss_and_grads calls it)."""
    forward, spent = model._forward, []

    def timed(*a, **kw):
        t0 = time.perf_counter()
        out = forward(*a, **kw)
        sync(out[0])
        spent.append(time.perf_counter() - t0)
        return out

    model._forward = timed
    return spent


def train_step(model, opt, ids, mask, labels, sync):
    """One training step; returns (loss, seconds in loss_and_grads, seconds in clip + AdamW)."""
    from .optim import clip_grad_norm

    t0 = time.perf_counter()
    loss, _, grads = model.loss_and_grads(ids, mask, None, labels, train=True)
    sync(loss)
    t1 = time.perf_counter()
    clip_grad_norm(grads, MAX_GRAD_NORM)
    opt.step(model.params, grads)
    sync(next(iter(model.params.values())))
    return loss, t1 - t0, time.perf_counter() - t1


def run_worker(args) -> dict:
    """Time training and inference steps of one configuration (args.lengths[0])."""
    import numpy as np

    from .backend import synchronize

    model, opt, (ids, mask, labels) = build(args)
    B, L = ids.shape
    fwd_spent = _time_forward(model, synchronize)
    fwd, bwd, stp, tot = [], [], [], []
    for i in range(args.warmup + args.steps):
        n_fwd = len(fwd_spent)
        loss, t_lg, t_opt = train_step(model, opt, ids, mask, labels, synchronize)
        if i >= args.warmup:
            tot.append(t_lg + t_opt)
            stp.append(t_opt)
            if len(fwd_spent) == n_fwd + 1:  # else loss_and_grads no longer calls _forward
                # this process's shard's forward (the workers' run at the same time, unseen)
                fwd.append(fwd_spent[-1])
                bwd.append(t_lg - fwd[-1])
    rss_train = peak_rss_mb(model)
    gpu_mem = gpu_memory(model.device)
    final_loss = float(loss)
    del model._forward  # the class's own again
    inf = []
    for i in range(args.warmup + args.steps):
        t0 = time.perf_counter()
        logits = model.logits(ids, mask)
        synchronize(logits)
        if i >= args.warmup:
            inf.append(time.perf_counter() - t0)
    assert tuple(logits.shape) == (B, model.head.num_labels)
    flops = step_flops(model.cfg, B, L, model.adapter.bottleneck, model.head.num_labels)
    train_ms = summary(tot)
    infer_ms = summary(inf)
    return {
        "impl": "minadapt",
        "numpy_version": np.__version__,
        "device": model.device,
        "blas": blas_runtime(),
        "env": {k: os.environ[k] for k in thread_env(1, 1) if k in os.environ},
        "threads": args.threads,
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
        "peak_rss_after_infer_mb": peak_rss_mb(model),
        **gpu_mem,
        "trainable_params": int(sum(model.params[k].size for k in model.trainable)),
        "final_train_loss": final_loss,  # the same batch every step, so it falls
        "flops": flops,
        "gflops_per_s": {"train": round(flops["train"] / train_ms["median"] / 1e6, 1),
                         "infer": round(flops["infer"] / infer_ms["median"] / 1e6, 1)},
    }


# --- profile: where a step's time goes, per minadapt function --------------------------------------
PROFILED_FILES = ("bert.py", "model.py", "heads.py", "optim.py")  # and every nn/*.py


def _ours(filename: str) -> str | None:
    """'nn/gelu.py' for a file whose functions the profile reports (the layers, bert.py, model.py,
    heads.py, optim.py), else None. Helpers elsewhere (backend.py's erf, NumPy) count in their caller."""
    try:
        rel = Path(filename).resolve().relative_to(PACKAGE).as_posix()
    except (ValueError, OSError):
        return None
    return rel if rel.startswith("nn/") or rel in PROFILED_FILES else None


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


def run_profile_worker(args) -> dict:
    """cProfile over `args.steps` training steps (after `args.warmup` untimed ones), then the
    wall-clock time of each op (`time_ops`) over as many training and inference steps."""
    import cProfile
    import pstats

    from .backend import synchronize
    from .parallel import shards

    model, opt, (ids, mask, labels) = build(args)
    for _ in range(args.warmup):
        train_step(model, opt, ids, mask, labels, synchronize)
    # cProfile sees only this process, so this part runs the batch whole, as one shard
    os.environ["MINADAPT_THREADS"], threads = "1", os.environ.get("MINADAPT_THREADS")
    try:
        prof = cProfile.Profile()
        t0 = time.perf_counter()
        prof.enable()
        for _ in range(args.steps):
            train_step(model, opt, ids, mask, labels, synchronize)
        prof.disable()
        wall = time.perf_counter() - t0
    finally:
        if threads is None:
            del os.environ["MINADAPT_THREADS"]
        else:
            os.environ["MINADAPT_THREADS"] = threads
    agg = aggregate_profile(pstats.Stats(prof).stats)
    cores = len(shards(ids.shape[0], model.xp))
    ops = {
        "train": time_ops(lambda: train_step(model, opt, ids, mask, labels, synchronize), args.steps),
        "infer": time_ops(lambda: synchronize(model.logits(ids, mask)), args.steps),
    } if model.device == "cpu" else None  # on a GPU each op returns before its kernels finish
    return {"impl": "minadapt", "seq_len": ids.shape[1], "batch_size": ids.shape[0],
            "steps": args.steps, "wall_ms_per_step": round(wall / args.steps * 1e3, 1), **agg,
            "shards": cores, "ops": ops}


OP_MODULES = ("linear", "attention", "cls_attention", "gelu", "layernorm", "dropout", "adapter",
              "swish", "tanh", "embedding", "loss")


def time_ops(step, steps: int) -> dict:
    """Run step() `steps` times with a wall clock around every forward and backward of
    minadapt/nn/*.py and around clipping and AdamW. Each op's time is its own: time spent in an op
    it calls (the adapter's linears) counts for that op. Returns {"ms_per_step": {op: ms},
    "total_ms": ms per step, "rest_ms": what no op covers (residual adds, reshapes, Python, and a
    shard waiting for the others)}. Unlike cProfile this adds one clock read per op call, not per
    Python call. Where a batch runs as shards (parallel.py), only this process's shard is seen (the
    workers run theirs at the same time, each on its own core): the figures are per core."""
    import importlib

    from . import optim

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

    targets = [(importlib.import_module(f"minadapt.nn.{m}"), f) for m in OP_MODULES
               for f in ("forward", "backward")]
    targets += [(optim, "clip_grad_norm"), (optim.AdamW, "step")]
    for owner, name in targets:
        if hasattr(owner, name):
            fn = getattr(owner, name)
            label = "AdamW.step" if owner is optim.AdamW else f"{owner.__name__.split('.')[-1]}.{name}"
            originals.append((owner, name, fn))
            setattr(owner, name, timed(label, fn))
    try:
        t0 = time.perf_counter()
        for _ in range(steps):
            step()
        total = time.perf_counter() - t0
    finally:
        for owner, name, fn in originals:
            setattr(owner, name, fn)
    ms = {k: round(v / steps * 1e3, 2) for k, v in sorted(spent.items(), key=lambda kv: -kv[1])}
    return {"ms_per_step": ms, "total_ms": round(total / steps * 1e3, 2),
            "rest_ms": round(total / steps * 1e3 - sum(ms.values()), 2)}


# --- BLAS ceiling: GFLOP/s on the step's own shapes ------------------------------------------------
def gemm_operands(g: Gemm, rng, dtype="float32"):
    """Random operands laid out as the step's code lays them out; returns a function computing the
    product as the step does: cut into shards of the batch that run at once, one single-threaded
    product per core (parallel.py), or whole where the step runs one shard."""
    from .parallel import shards

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
    do (parallel.py says why a step needs processes). The threads are made once, and `reps` lets a
    caller time many products per hand-over: one hand-over to the threads costs 70-170 us here,
    more than a short length's adapter or per-head products (12 by 32 by 12) take, and timed one
    per hand-over they would understate the ceiling."""
    from concurrent.futures import ThreadPoolExecutor

    from .parallel import one_blas_thread

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

    from .config import BertConfig
    from .parallel import shards

    if args.weights is None:
        from .hub import ensure_checkpoint

        args.weights = ensure_checkpoint()
    cfg = BertConfig.from_json(Path(args.weights) / "config.json")
    rng = np.random.default_rng(0)
    out = {"blas": blas_runtime(), "shards": len(shards(args.batch_size)), "lengths": []}
    for L in args.lengths:
        gemms = step_gemms(cfg, args.batch_size, L)
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
        infer_floor = sum(seconds_of[g.shape] for g in step_gemms(cfg, args.batch_size, L, train=False))
        out["lengths"].append({"L": L, "train_flops": total_flops, "floor_ms": round(floor * 1e3, 1),
                               "infer_floor_ms": round(infer_floor * 1e3, 1), "shapes": rows})
    return out


# --- the parent: plan, spawn, collect --------------------------------------------------------------
def plan_runs(lengths, compare: str, rounds: int = 1) -> list[tuple[str, int]]:
    """The order of the subprocesses: per length minadapt, then torch, so they interleave; with
    several rounds, the next round of that length swaps the order (A B, B A, A B, ...), so neither
    side always runs first on a machine that speeds up or slows down."""
    impls = ["minadapt"] + (["torch"] if compare == "torch" else [])
    return [(impl, L) for L in lengths for r in range(rounds)
            for impl in (impls if r % 2 == 0 else impls[::-1])]


def merge_rounds(results: list[dict]) -> dict:
    """One row's result from its rounds: every timing's median is the median of the rounds'
    medians, its min and max the extremes over all rounds; peak memory the largest. The rounds
    themselves are kept under "rounds" (when there are several)."""
    if len(results) == 1:
        return results[0]
    merged = dict(results[-1])
    for key, value in results[0].items():
        if key.endswith("_ms") and isinstance(value, dict):
            stats = [r[key] for r in results if r.get(key)]
            merged[key] = {"median": round(statistics.median(x["median"] for x in stats), 3),
                           "min": min(x["min"] for x in stats), "max": max(x["max"] for x in stats)}
        elif key.startswith("peak_") and isinstance(value, (int, float)):
            merged[key] = max(r[key] for r in results)
    merged["rounds"] = results
    return merged


def paired_ratio(ours: list[dict], theirs: list[dict], key: str):
    """The median over rounds of ours[i][key] / theirs[i][key] (each round's pair ran side by side)."""
    ratios = [ratio(a, b, key) for a, b in zip(ours, theirs)]
    ratios = [r for r in ratios if r is not None]
    return round(statistics.median(ratios), 3) if ratios else None


def machine_busy_s() -> float | None:
    """CPU seconds all processes have spent so far, from /proc/stat (None where there is none)."""
    try:
        with open("/proc/stat") as f:
            fields = [int(v) for v in f.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def wait_quiet(max_seconds: float, threshold: float = 0.1, window: float = 5.0) -> float | None:
    """Wait until the CPU time used by all processes over `window` seconds is below `threshold`
    cores (nothing else runs), or `max_seconds` pass. Returns the last busy-cores reading."""
    deadline = time.monotonic() + max_seconds
    busy = None
    while time.monotonic() < deadline:
        b0 = machine_busy_s()
        if b0 is None:
            return None
        time.sleep(window)
        busy = round((machine_busy_s() - b0) / window, 2)
        if busy < threshold:
            break
    return busy


def _spawn(cmd, env_extra, what) -> tuple[str, dict]:
    """Run one subprocess with the thread variables set; returns (its stdout, usage), usage =
    {wall_s, cpu_s: the subprocess's CPU time, others_cores: the cores that *other* processes kept
    busy meanwhile, on average}. others_cores above ~0.1 means the timings were disturbed."""
    env = {**os.environ, **env_extra}
    before, busy0 = resource.getrusage(resource.RUSAGE_CHILDREN), machine_busy_s()
    t0 = time.perf_counter()
    r = subprocess.run(cmd, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    after, busy1 = resource.getrusage(resource.RUSAGE_CHILDREN), machine_busy_s()
    if r.returncode != 0:
        tail = "\n".join((r.stderr or r.stdout).strip().splitlines()[-15:])
        raise BenchError(f"{what} failed (exit {r.returncode}): {' '.join(map(str, cmd))}\n{tail}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    others = None if busy0 is None else round(max(0.0, busy1 - busy0 - cpu) / wall, 2)
    return r.stdout, {"wall_s": round(wall, 2), "cpu_s": round(cpu, 2), "others_cores": others}


def _last_json(out: tuple[str, dict], what: str) -> dict:
    stdout, usage = out
    for line in reversed(stdout.strip().splitlines()):
        if line.startswith("{"):
            return {**json.loads(line), "process": usage}
    raise BenchError(f"{what}: no JSON in its output:\n{stdout[-2000:]}")


def worker_command(args, L=None, mode=None, weights=None, lengths=None) -> list[str]:
    """`python -m minadapt.cli bench --worker ...` for one configuration (mode: None, profile, blas)."""
    lengths = lengths or [L]
    cmd = [sys.executable, "-m", "minadapt.cli", "bench", "--worker",
           "--lengths", ",".join(map(str, lengths)), "--batch-size", str(args.batch_size),
           "--warmup", str(PROFILE_WARMUP if mode == "profile" else args.warmup),
           "--steps", str(PROFILE_STEPS if mode == "profile" else args.steps),
           "--threads", str(args.threads)]
    if weights is not None:
        cmd += ["--weights", str(weights)]
    if getattr(args, "device", None):
        cmd += ["--device", args.device]
    if mode:
        cmd.append("--" + mode)
    return cmd


def torch_command(args, L, weights, json_path) -> list[str]:
    return [args.torch_python, str(TORCH_SCRIPT), "--seq-len", str(L),
            "--batch-size", str(args.batch_size), "--warmup", str(args.warmup),
            "--steps", str(args.steps), "--threads", str(args.threads),
            "--weights", str(weights), "--json", str(json_path),
            "--device", "cuda" if getattr(args, "device", None) == "gpu" else "cpu"]


def check_torch(args):
    """Fail before any timing when the PyTorch side cannot run."""
    if not TORCH_SCRIPT.is_file():
        raise BenchError(f"--compare torch needs {TORCH_SCRIPT} (run from a source checkout)")
    try:
        r = subprocess.run([args.torch_python, "-c", "import torch, transformers, adapters"],
                           capture_output=True, text=True)
    except OSError as e:
        raise BenchError(f"--torch-python {args.torch_python}: cannot run it ({e.strerror or e})") from None
    if r.returncode != 0:
        raise BenchError(f"--compare torch: {args.torch_python} cannot import torch, transformers "
                         f"and adapters (install minadapt[ref] there, or pass --torch-python):\n"
                         + "\n".join(r.stderr.strip().splitlines()[-3:]))


def machine_info() -> dict:
    import numpy as np

    cpu = platform.processor() or platform.machine()
    try:  # "AMD EPYC" alone names several generations: family and model tell them apart
        with open("/proc/cpuinfo") as f:
            fields = dict(line.split(":", 1) for line in f.read().split("\n\n")[0].splitlines()
                          if ":" in line)
        fields = {k.strip(): v.strip() for k, v in fields.items()}
        cpu = fields["model name"]
        if "cpu family" in fields and "model" in fields:
            cpu += f" (family {fields['cpu family']}, model {fields['model']})"
    except (OSError, KeyError, ValueError):
        pass
    try:
        blas = np.show_config(mode="dicts")["Build Dependencies"]["blas"]
        blas = {k: blas.get(k) for k in ("name", "version", "openblas configuration") if k in blas}
    except Exception:  # older NumPy: no mode="dicts"
        blas = {}
    return {"cpu": cpu, "simd": simd_width(), "cores": os.cpu_count(),
            "usable_cores": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
            "numpy": np.__version__, "blas": blas, "python": platform.python_version(),
            "platform": platform.platform()}


def simd_width() -> str:
    """The widest vector instructions NumPy found on this CPU, recorded beside the timings because
    NumPy picks its loops by them, and the elementwise work follows: on one AVX2 host (no AVX-512),
    float32 exp took 1.6 ns an element where a multiply took 0.11, and every softmax score and
    every GELU input in backward takes one exp."""
    try:
        from numpy._core._multiarray_umath import __cpu_features__ as found
    except ImportError:  # NumPy 1.x
        try:
            from numpy.core._multiarray_umath import __cpu_features__ as found
        except ImportError:
            return "?"
    for name in ("AVX512F", "AVX2", "NEON", "ASIMD"):
        if found.get(name):
            return {"AVX512F": "AVX-512"}.get(name, name)
    return "none found"


def _load() -> float:
    return round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else float("nan")


def ratio(a, b, key):
    """a[key] / b[key] (medians for timings), or None when either side is missing."""
    if not a or not b or a.get(key) is None or b.get(key) is None:
        return None
    x, y = a[key], b[key]
    x, y = (x["median"], y["median"]) if isinstance(x, dict) else (x, y)
    return round(x / y, 3) if y else None


# --- the epoch estimate ----------------------------------------------------------------------------
def interpolate(x: float, xs: list, ys: list) -> float:
    """Piecewise-linear through (xs, ys) (xs increasing), extended linearly past both ends; with a
    single point, proportional to x. Never below a tenth of the smallest y."""
    if len(xs) == 1:
        return ys[0] * x / xs[0]
    i = 1
    while i < len(xs) - 1 and x > xs[i]:
        i += 1
    x0, x1, y0, y1 = xs[i - 1], xs[i], ys[i - 1], ys[i]
    return max(y0 + (y1 - y0) * (x - x0) / (x1 - x0), 0.1 * min(ys))


def epoch_estimate(step_ms: dict, lengths, batch_size: int, seed: int = 0) -> dict:
    """Seconds for one epoch of length-bucketed batches (as `minadapt train` draws them), each
    step's time interpolated from `step_ms` {L: median ms} at the batch's padded length, scaled by
    the batch's size. An estimate: it assumes the time depends only on (rows, padded length)."""
    import numpy as np

    from .data.sst2 import bucketed_batches

    lengths = np.asarray(lengths)
    xs = sorted(step_ms)
    ys = [step_ms[x] for x in xs]
    batches = bucketed_batches(lengths, batch_size, np.random.default_rng(seed))
    padded = np.array([lengths[b].max() for b in batches])
    ms = sum(interpolate(int(p), xs, ys) * len(b) / batch_size for p, b in zip(padded, batches))
    return {"steps": len(batches), "seconds": round(ms / 1e3, 3),
            "mean_padded_len": round(float(padded.mean()), 1),
            "mean_len": round(float(lengths.mean()), 1),
            # batches whose time is extrapolated, not interpolated
            "extrapolated": round(float(((padded < xs[0]) | (padded > xs[-1])).mean()), 3)}


def epoch_report(report: dict, lengths, batch_size: int) -> dict:
    """{"epoch_estimate": {impl: epoch_estimate of its measured steps}}, and with --blas also
    "epoch_floor": the same epoch with each step taking only its matrix products' time at the BLAS
    ceiling (the "step floor" per L). A step cannot be faster than its own products, so when the
    floor alone is above a target, no saving outside the products reaches it on this machine."""
    out: dict = {"epoch_estimate": {}}
    for impl in ("minadapt", "torch"):
        step_ms = {row["L"]: row[impl]["train_ms"]["median"] for row in report["rows"] if row.get(impl)}
        if step_ms:
            out["epoch_estimate"][impl] = epoch_estimate(step_ms, lengths, batch_size)
    if report.get("blas"):
        floor_ms = {x["L"]: x["floor_ms"] for x in report["blas"]["lengths"]}
        out["epoch_floor"] = epoch_estimate(floor_ms, lengths, batch_size)
    return out


def sst2_lengths(weights, data_dir):
    """Token lengths of SST-2's training sentences, or None when the data or tokenizer is absent."""
    from .data.sst2 import find_sst2, read_tsv
    from .tokenizer import Tokenizer

    try:
        tok = Tokenizer(weights)
        sentences, _ = read_tsv(find_sst2(data_dir, download=False) / "train.tsv")
    except MinadaptError:
        return None
    return [len(ids) for ids in tok.ids(sentences)]


# --- printing --------------------------------------------------------------------------------------
def _ms(s) -> str:
    return "-" if not s else f"{s['median']:.1f} [{s['min']:.0f}-{s['max']:.0f}]"


def _num(x, fmt="{:.1f}") -> str:
    return "-" if x is None else fmt.format(x)


TABLE_COLUMNS = [("L", 4), ("train ms [min-max]", 22), ("fwd/bwd/opt ms", 17), ("infer ms", 20),
                 ("RSS MB", 7), ("GFLOP/s", 7), ("torch train", 22), ("torch infer", 20),
                 ("torch RSS", 9), ("ratio tr/inf/rss", 17), ("others", 9)]


def format_table(rows: list[dict], mem: str = "peak_rss_mb") -> str:
    """The results as fixed-width columns, one line per length (rows as in the JSON's "rows");
    `mem`: the peak-memory field shown ("peak_rss_mb", or "peak_gpu_mb" for GPU runs)."""
    def line(cells):
        return " | ".join(str(c).rjust(w) for c, (_, w) in zip(cells, TABLE_COLUMNS))

    names = [name for name, _ in TABLE_COLUMNS]
    if mem == "peak_gpu_mb":
        names = [n.replace("RSS", "GPU").replace("rss", "mem") for n in names]
    out = [line(names), "-+-".join("-" * w for _, w in TABLE_COLUMNS)]
    for row in rows:
        a, t, r = row["minadapt"], row.get("torch"), row.get("ratio") or {}
        split = "-"
        if a.get("fwd_ms") and a.get("bwd_ms"):
            split = "/".join(f"{a[k]['median']:.0f}" for k in ("fwd_ms", "bwd_ms", "opt_ms"))
        ratios = "-" if not t else "/".join(_num(r.get(k), "{:.2f}") for k in ("train", "infer", "rss"))
        others = "/".join(_num(x.get("process", {}).get("others_cores"), "{:.1f}") for x in (a, t) if x)
        out.append(line([row["L"], _ms(a["train_ms"]), split, _ms(a["infer_ms"]),
                         _num(a.get(mem), "{:.0f}"),
                         _num((a.get("gflops_per_s") or {}).get("train"), "{:.0f}"),
                         _ms(t and t["train_ms"]), _ms(t and t["infer_ms"]),
                         _num(t and t.get(mem), "{:.0f}"), ratios, others]))
    return "\n".join(out)


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
        out.append(f"  {'op':22s} {'train':>8} {'infer':>8}")
        for name in names:
            t, i = ops["train"]["ms_per_step"].get(name), ops["infer"]["ms_per_step"].get(name)
            out.append(f"  {name:22s} {_num(t):>8} {_num(i):>8}")
        out.append(f"  {'rest (glue, Python)':22s} {_num(ops['train']['rest_ms']):>8} "
                   f"{_num(ops['infer']['rest_ms']):>8}")
        out.append(f"  {'whole step':22s} {_num(ops['train']['total_ms']):>8} "
                   f"{_num(ops['infer']['total_ms']):>8}")
    return "\n".join(out)


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


def floor_shares(report: dict) -> list[dict]:
    """Per L with both a BLAS floor and a PyTorch row: each floor as a share of PyTorch's median
    time, train and inference. A ratio target r (minadapt / torch <= r) can only be met if this
    share is below r, and the gap r - share is all the time left, as a share of PyTorch's step, for
    everything that is not a matrix product (GELU, softmax, LayerNorm, dropout, AdamW, Python)."""
    floors = {x["L"]: x for x in (report.get("blas") or {}).get("lengths", [])}
    out = []
    for row in report["rows"]:
        t, f = row.get("torch"), floors.get(row["L"])
        if not t or not f:
            continue
        share = {"train": f["floor_ms"] / t["train_ms"]["median"]}
        if "infer_floor_ms" in f:
            share["infer"] = f["infer_floor_ms"] / t["infer_ms"]["median"]
        out.append({"L": row["L"], **{k: round(v, 3) for k, v in share.items()}})
    return out


def format_floor_shares(shares: list[dict]) -> str:
    cells = ", ".join(f"L={s['L']} {s['train']:.2f}/{_num(s.get('infer'), '{:.2f}')}" for s in shares)
    return ("floor / torch (train/infer): the products alone as a share of PyTorch's time, so the "
            "lowest ratio a NumPy step with these products could reach: " + cells)


def format_epoch_floor(floor: dict, estimate: dict) -> str:
    line = (f"epoch floor: {floor['seconds'] / 60:.1f} min ({floor['seconds']:.0f} s) = the same "
            f"{floor['steps']} batches, each step only its matrix products at the ceiling above "
            "(no GELU, softmax, LayerNorm, optimiser or Python). A step is never faster than its "
            "products")
    if estimate.get("minadapt"):
        share = floor["seconds"] / estimate["minadapt"]["seconds"]
        line += f"; they are {100 * share:.0f}% of minadapt's estimated epoch"
    return line


# --- main ------------------------------------------------------------------------------------------
def main(args) -> int:
    if args.worker:
        if args.blas:
            result = run_blas_worker(args)
        else:
            if len(args.lengths) != 1:
                raise BenchError("--worker times one configuration: give one --lengths value")
            result = run_profile_worker(args) if args.profile else run_worker(args)
        print(json.dumps(result))
        return 0

    from .hub import ensure_checkpoint

    weights = Path(args.weights).resolve() if args.weights else ensure_checkpoint().resolve()
    if args.compare == "torch":
        check_torch(args)
    env = thread_env(args.threads, args.openblas_timeout)
    report = {"machine": {**machine_info(), "load_start": _load()},
              "config": {"batch_size": args.batch_size, "lengths": args.lengths, "warmup": args.warmup,
                         "steps": args.steps, "rounds": args.rounds, "threads": args.threads,
                         "compare": args.compare, "device": args.device or "cpu",
                         "weights": str(weights), "env": env,
                         "adapter": "Houlsby, bottleneck 64, swish; head 2 labels", "dtype": "float32"},
              "rows": []}
    results: dict = {}  # (impl, L) -> [one result per round]
    loads: dict = {}
    tmp_json = Path(args.json).with_name(Path(args.json).name + ".torch.tmp")

    def spawn(cmd, what):
        if args.wait_quiet:
            wait_quiet(args.wait_quiet)
        print(f"bench: {what} (load average {_load():.2f}) ...", file=sys.stderr, flush=True)
        return _spawn(cmd, env, what)

    for impl, L in plan_runs(args.lengths, args.compare, args.rounds):
        loads.setdefault((impl, L), _load())
        if impl == "minadapt":
            res = _last_json(spawn(worker_command(args, L, weights=weights), f"minadapt L={L}"),
                             f"minadapt L={L}")
        else:
            tmp_json.parent.mkdir(parents=True, exist_ok=True)
            _, usage = spawn(torch_command(args, L, weights, tmp_json), f"torch L={L}")
            res = {**json.loads(tmp_json.read_text()), "process": usage}
            tmp_json.unlink()
        results.setdefault((impl, L), []).append(res)
        print(f"bench: {impl} L={L}: train {res['train_ms']['median']:.1f} ms, infer "
              f"{res['infer_ms']['median']:.1f} ms, peak RSS {res['peak_rss_mb']:.0f} MB",
              file=sys.stderr, flush=True)
    for L in args.lengths:
        a_rounds, t_rounds = results[("minadapt", L)], results.get(("torch", L))
        a, t = merge_rounds(a_rounds), t_rounds and merge_rounds(t_rounds)
        report["rows"].append({"L": L, "minadapt": a, "torch": t,
                               "load1": {impl: loads.get((impl, L)) for impl in ("minadapt", "torch")
                                         if (impl, L) in loads},
                               "ratio": None if t is None else {
                                   "train": paired_ratio(a_rounds, t_rounds, "train_ms"),
                                   "infer": paired_ratio(a_rounds, t_rounds, "infer_ms"),
                                   "rss": paired_ratio(a_rounds, t_rounds, memory_key(report))}})
    report["machine"]["load_end"] = _load()

    if args.profile:
        L = min(args.lengths, key=lambda x: abs(x - 64))
        report["profile"] = _last_json(spawn(worker_command(args, L, "profile", weights),
                                             f"profile L={L}"), "profile")
    if args.blas:
        report["blas"] = _last_json(spawn(worker_command(args, mode="blas", weights=weights,
                                                         lengths=args.lengths), "BLAS ceiling"), "blas")

    lengths = sst2_lengths(weights, args.data_dir)
    if lengths is not None:
        report.update(epoch_report(report, lengths, args.batch_size))

    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(report, indent=2) + "\n")
    print(print_report(report))
    print(f"\nwritten: {args.json}")
    return 0


def print_report(report: dict) -> str:
    m, c = report["machine"], report["config"]
    rows = report["rows"]
    a0 = rows[0]["minadapt"]
    lines = [f"minadapt bench: B={c['batch_size']}, float32, {c['threads']} threads, "
             f"{c['warmup']} warm-up + {c['steps']} timed steps, median [min-max]"
             + (f"; {c['rounds']} rounds (median of round medians; ratio = median of the rounds' "
                "ratios)" if c.get("rounds", 1) > 1 else ""),
             f"machine: {m['cpu']}, {m.get('simd', '?')}, {m['cores']} cores, numpy {m['numpy']}, "
             f"BLAS {a0.get('blas', {}).get('corename', '?')} x{a0.get('blas', {}).get('threads', '?')}, "
             f"python {m['python']}; load average {m['load_start']} at start, {m['load_end']} at end", ""]
    if a0.get("gpu"):
        lines.append(f"GPU: {a0['gpu']} (ratio rss = peak GPU memory held: CuPy's pool vs "
                     "torch.cuda.max_memory_reserved)")
    lines.append(format_table(rows, memory_key(report)))
    if any(r.get("torch") for r in rows):
        t0 = next(r["torch"] for r in rows if r.get("torch"))
        lines.append(f"torch {t0.get('torch_version')}, transformers {t0.get('transformers_version')}, "
                     f"adapters {t0.get('adapters_version')}; ratio = minadapt / torch (below 1: minadapt "
                     "is faster or smaller); only ratios from one run count")
    lines.append("fwd = inside Model._forward; bwd = rest of loss_and_grads; opt = clip_grad_norm + "
                 "AdamW. GFLOP/s = the step's matmul FLOPs / median train time. FLOPs per step: "
                 + ", ".join(f"L={r['L']} {r['minadapt']['flops']['train'] / 1e9:.1f}G" for r in rows))
    lines.append("others = cores kept busy by other processes while minadapt/torch ran (average)")
    disturbed = [f"{impl} L={r['L']}" for r in rows for impl in ("minadapt", "torch")
                 if r.get(impl) and (r[impl].get("process", {}).get("others_cores") or 0) > 0.1]
    if disturbed:
        lines.append(f"WARNING: other processes used the CPU during {', '.join(disturbed)}: "
                     "those timings (and their ratios) are disturbed; rerun on a quiet machine")
    if report.get("epoch_estimate"):
        est = report["epoch_estimate"]
        first = next(iter(est.values()))
        parts = [f"{impl} {e['seconds'] / 60:.1f} min" for impl, e in est.items()]
        lines.append(f"\nepoch estimate (SST-2 train, {first['steps']} length-bucketed batches of "
                     f"{c['batch_size']}, mean padded length {first['mean_padded_len']}, step time "
                     f"interpolated from the measured lengths; an ESTIMATE, not a measurement): "
                     + ", ".join(parts))
        if first["extrapolated"] > 0.2:
            lines.append(f"  {100 * first['extrapolated']:.0f}% of these batches lie outside the "
                         "measured lengths, so their times are extrapolated; measure short lengths "
                         "too (--lengths 8,16,32,64) for a better estimate")
    for part, fmt in (("profile", format_profile), ("blas", format_blas)):
        if report.get(part):
            lines += ["", fmt(report[part])]
            others = report[part].get("process", {}).get("others_cores")
            if others is not None and others > 0.1:
                lines.append(f"WARNING: other processes kept {others:.1f} cores busy meanwhile: "
                             "these numbers are disturbed")
    if report.get("epoch_floor"):
        lines.append(format_epoch_floor(report["epoch_floor"], report.get("epoch_estimate", {})))
    shares = floor_shares(report)
    if shares:
        lines.append(format_floor_shares(shares))
    return "\n".join(lines)
