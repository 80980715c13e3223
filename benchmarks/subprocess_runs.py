"""Running the benchmark's configurations: one subprocess each, minadapt and PyTorch interleaved.

Each (implementation, L) runs in a fresh subprocess, for two reasons: BLAS reads its thread count
(OPENBLAS_NUM_THREADS, OMP_NUM_THREADS, MKL_NUM_THREADS) once, when NumPy is first imported, so
it must be in the environment before that; and ru_maxrss only ever grows, so a process per
configuration is the only way to get each one's peak. With `--compare torch` the two
implementations alternate (minadapt L=16, torch L=16, minadapt L=32, ...): a shared machine's
speed drifts by 5-10% over minutes, so only ratios taken side by side in one run mean anything.
"""
from __future__ import annotations

import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

from minadapt.errors import MinadaptError

HERE = Path(__file__).resolve().parent
BENCH_SCRIPT = HERE / "harness.py"
TORCH_SCRIPT = HERE / "torch_step.py"
PROFILE_STEPS, PROFILE_WARMUP = 5, 2


class BenchError(MinadaptError):
    """A benchmark subprocess failed, or the PyTorch side cannot run."""


def thread_env(threads: int, openblas_timeout: int = 0) -> dict:
    """The environment variables that fix a subprocess's thread counts: minadapt's shards
    (minadapt/parallel/cores.py), BLAS and OpenMP (torch)."""
    env = {k: str(threads) for k in ("MINADAPT_THREADS", "OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS",
                                     "MKL_NUM_THREADS")}
    if openblas_timeout:
        env["OPENBLAS_THREAD_TIMEOUT"] = str(openblas_timeout)
    return env


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


def run_process(cmd, env_extra, what) -> tuple[str, dict]:
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


def last_json(out: tuple[str, dict], what: str) -> dict:
    stdout, usage = out
    for line in reversed(stdout.strip().splitlines()):
        if line.startswith("{"):
            return {**json.loads(line), "process": usage}
    raise BenchError(f"{what}: no JSON in its output:\n{stdout[-2000:]}")


def worker_command(args, L=None, mode=None, weights=None, lengths=None) -> list[str]:
    """`python benchmarks/harness.py --worker ...` for one configuration (mode: None, profile, blas)."""
    lengths = lengths or [L]
    cmd = [sys.executable, str(BENCH_SCRIPT), "--worker",
           "--lengths", ",".join(map(str, lengths)), "--batch-size", str(args.batch_size),
           "--warmup", str(PROFILE_WARMUP if mode == "profile" else args.warmup),
           "--steps", str(PROFILE_STEPS if mode == "profile" else args.steps),
           "--threads", str(args.threads)]
    if weights is not None:
        cmd += ["--weights", str(weights)]
    if getattr(args, "device", None):
        cmd += ["--device", args.device]
    if getattr(args, "ops", "fast") != "fast":
        cmd += ["--ops", args.ops]
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


def load_average() -> float:
    return round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else float("nan")


def ratio(a, b, key):
    """a[key] / b[key] (medians for timings), or None when either side is missing."""
    if not a or not b or a.get(key) is None or b.get(key) is None:
        return None
    x, y = a[key], b[key]
    x, y = (x["median"], y["median"]) if isinstance(x, dict) else (x, y)
    return round(x / y, 3) if y else None
