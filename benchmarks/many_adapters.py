"""Memory of one backbone holding N adapters: the process's RSS after loading 1..5 adapter files.

    python benchmarks/many_adapters.py [--weights DIR]

Prints, for N = 0..5 tasks (Houlsby, bottleneck 64, 2-label head, float32, written by this script
into a temporary folder), the RSS and its growth, against the adapter files' total size. The
backbone is held once: each task should add about its file's size.
"""
from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path


def rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--weights", help="checkpoint folder (default: weights/all-MiniLM-L6-v2, fetched)")
    p.add_argument("--tasks", type=int, default=5)
    args = p.parse_args()
    import numpy as np

    import minadapt

    ids = np.array([[101, 2023, 2003, 1037, 3231, 102]])
    mask = np.ones_like(ids)
    with tempfile.TemporaryDirectory() as tmp:
        maker = minadapt.load_model(args.weights)
        paths = []
        for i in range(args.tasks):
            maker.add_adapter(f"task{i}", bottleneck=64, seed=i)
            maker.add_classification_head(f"task{i}", num_labels=2, seed=i)
            paths.append(maker.save_adapter(Path(tmp) / f"task{i}.safetensors", adapter=f"task{i}"))
        del maker
        model = minadapt.load_model(args.weights)
        model.encode(ids, mask)  # the backbone's working memory, once
        base = rss_mb()
        print(f"{'tasks':>5} {'RSS MB':>8} {'+MB':>7} {'files MB':>9}")
        print(f"{0:>5} {base:>8.1f} {0:>7.1f} {0:>9.1f}")
        files = 0.0
        for i, path in enumerate(paths, start=1):
            name = model.load_adapter(path)
            model.logits(ids, mask, adapter=name)
            files += os.path.getsize(path) / 2**20
            now = rss_mb()
            print(f"{i:>5} {now:>8.1f} {now - base:>7.1f} {files:>9.1f}")


if __name__ == "__main__":
    main()
