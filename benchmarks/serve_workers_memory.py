"""What `minadapt serve --workers N` costs in memory: each process's RSS and PSS, N = 1 and 2.

    python benchmarks/serve_workers_memory.py [--weights DIR] [--workers 2]

Starts `python -m minadapt.serve` on 127.0.0.1 with one adapter (written to a temporary folder),
once with one process and once with --workers N, sends each process a few 32-text requests (so
each has run the model and made its workspaces), then reads /proc/PID/smaps_rollup of every
process: RSS counts shared pages in full in every process that maps them, PSS divides each shared
page among its sharers, so the PSS sum is what the machine really spends. If the workers share
the frozen weights (forked after loading), N workers cost far less than N times one.
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]


def rollup(pid: int) -> dict:
    out = {}
    with open(f"/proc/{pid}/smaps_rollup") as f:
        for line in f:
            parts = line.split()
            if parts[0] in ("Rss:", "Pss:", "Shared_Clean:", "Private_Dirty:"):
                out[parts[0][:-1]] = int(parts[1]) / 1024
    return out


def children(pid: int) -> list[int]:
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            return [int(x) for x in f.read().split()]
    except OSError:
        return []


def run(weights, adapter, workers: int) -> dict:
    argv = [sys.executable, "-m", "minadapt.serve", "--port", "0", "--adapter", str(adapter),
            "--workers", str(workers)] + (["--weights", str(weights)] if weights else [])
    proc = subprocess.Popen(argv, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONUNBUFFERED": "1", "OPENBLAS_NUM_THREADS": "1"})
    try:
        for line in proc.stdout:
            if "listening on " in line:
                url = line.split("listening on ", 1)[1].split()[0]
                break
        body = json.dumps({"texts": [f"a long and winding film number {i}, " * 6 for i in range(32)]}).encode()
        for _ in range(4 * workers):  # the kernel spreads connections over the workers
            with urllib.request.urlopen(urllib.request.Request(url + "/predict", body), timeout=120) as r:
                r.read()
        time.sleep(0.5)
        pids = children(proc.pid) if workers > 1 else [proc.pid]
        procs = {pid: rollup(pid) for pid in pids}
        if workers > 1:
            procs["parent"] = rollup(proc.pid)
        return procs
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=60)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--weights")
    p.add_argument("--workers", type=int, default=2)
    args = p.parse_args()
    import minadapt

    model = minadapt.load_model(args.weights)
    model.add_adapter("sst2", bottleneck=64)
    model.add_classification_head("sst2", num_labels=2, labels=["negative", "positive"])
    with tempfile.TemporaryDirectory() as tmp:
        path = model.save_adapter(Path(tmp) / "sst2.safetensors", adapter="sst2")
        for n in (1, args.workers):
            procs = run(args.weights, path, n)
            for pid, m in procs.items():
                print(f"workers={n} {pid}: " + ", ".join(f"{k} {v:.0f} MB" for k, v in m.items()))
            print(f"workers={n}: RSS sum {sum(m['Rss'] for m in procs.values()):.0f} MB, "
                  f"PSS sum {sum(m['Pss'] for m in procs.values()):.0f} MB", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
