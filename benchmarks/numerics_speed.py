"""The small timings behind fast/numerics.py's choices, each against the plain way, side by side.

    python benchmarks/numerics_speed.py [--rounds 7] [--repeat 20]

On one shard's arrays of a training step (B = 16 sentences, T = 64 tokens, H = 384, 12 heads),
float32, one BLAS thread:
  mask     dropout's keep mask: numerics.keep_mask (16 random bits an element) against float32
           uniforms compared with p, as nn/dropout.py draws them ((B, T, H), p = 0.1);
  row_sums the sums of the attention scores' short rows: numerics.row_sums (x @ 1) against
           x.sum(axis=-1) ((B nh T, T));
  erf      numerics.erf on float32 (a rational approximation) against backend.erf, libm's erf
           called element by element ((B T, 4 H), GELU's input).
Each round times both ways in turn (`--repeat` calls each, the median kept); the table gives the
median over rounds and the ratio plain / numerics, paired within rounds.
"""
from __future__ import annotations

import argparse
import os
import statistics
import time

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # before NumPy loads BLAS: one shard, one core

import numpy as np  # noqa: E402

from minadapt.backend import erf as exact_erf  # noqa: E402
from minadapt.fast import numerics  # noqa: E402


def median_s(fn, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def cases(B=16, T=64, H=384, nh=12):
    rng = np.random.default_rng(0)
    scores = rng.standard_normal((B * nh * T, T), dtype=np.float32)
    gelu_in = rng.standard_normal((B * T, 4 * H), dtype=np.float32)
    mask_rng = np.random.default_rng(1)
    return {
        "mask": (lambda: numerics.keep_mask(mask_rng, (B, T, H), 0.1),
                 lambda: mask_rng.random((B, T, H), dtype=np.float32) >= 0.1),
        "row_sums": (lambda: numerics.row_sums(scores), lambda: scores.sum(axis=-1, keepdims=True)),
        "erf": (lambda: numerics.erf(gelu_in), lambda: exact_erf(gelu_in)),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--repeat", type=int, default=20)
    args = ap.parse_args()
    print(f"{'':9s} {'numerics ms':>12s} {'plain ms':>10s} {'plain / numerics':>17s}")
    for name, (fast, plain) in cases().items():
        f_times, p_times, ratios = [], [], []
        repeat = max(1, args.repeat // 10) if name == "erf" else args.repeat  # libm's erf is slow
        for _ in range(args.rounds):
            f, p = median_s(fast, repeat), median_s(plain, repeat)
            f_times.append(f)
            p_times.append(p)
            ratios.append(p / f)
        print(f"{name:9s} {1e3 * statistics.median(f_times):12.3f} {1e3 * statistics.median(p_times):10.3f} "
              f"{statistics.median(ratios):17.2f}")


if __name__ == "__main__":
    main()
