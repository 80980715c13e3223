"""Latency and memory of `minadapt serve`: one process with two adapters, against one with one.

    python benchmarks/serve_latency.py [--weights DIR] [--adapter A.safetensors --adapter B.safetensors]
                                       [--requests 50] [--timeout 120] [--json out.json]

Without --adapter it writes two into a temporary folder (Houlsby, bottleneck 64, random weights off
the identity): "sst2", 2 labels (negative, positive), and "topic", 5 labels. It then starts

  * `python -m minadapt.serve` with both adapters on 127.0.0.1 (a free port), and
  * the same with the first adapter alone,

and reads each process's RSS (VmRSS) once it listens and again after one 32-text request: the
backbone is held once, so the difference should be about the second adapter's file. Then, against
the two-adapter server, for 1 and 32 texts per request and 1 and 8 concurrent clients (all asking
the first task), it sends --requests requests per configuration (split over the clients, each
sending its share one after another) and prints the p50 and p99 latency as the client sees it
(connection, JSON and all) and texts/s. With 50 requests the p99 is the slowest request but one.

Every answer is checked against the in-process model (softmax of `model.logits` for the same text,
atol 1e-5); a failed request or a differing answer makes the script exit 1. All traffic goes to
127.0.0.1; the whole run stops after --timeout seconds.
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
WORDS = ("the film a story is was not very quite funny dull witty gorgeous slow long short actors "
         "plot ending music and but with without every moment scene feels like heart mess charm "
         "tedious brilliant script director hours minutes nothing something anyone").split()
CONFIGS = [(1, 1), (1, 8), (32, 1), (32, 8)]  # (texts per request, concurrent clients)


def sentences(n: int, seed: int) -> list[str]:
    """n made-up sentences of 6 to 30 words (SST-2's length range), the same for a seed."""
    rng = np.random.default_rng(seed)
    return [" ".join(rng.choice(WORDS, rng.integers(6, 31))) for _ in range(n)]


def rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


class Deadline(Exception):
    pass


class Run:
    def __init__(self, timeout: float):
        self.end = time.monotonic() + timeout

    def left(self) -> float:
        left = self.end - time.monotonic()
        if left <= 0:
            raise Deadline("the overall --timeout passed")
        return left


def start_server(run: Run, weights, paths, max_batch) -> tuple[subprocess.Popen, str]:
    argv = [sys.executable, "-m", "minadapt.serve", "--host", "127.0.0.1", "--port", "0",
            "--max-batch", str(max_batch)]
    if weights:
        argv += ["--weights", str(weights)]
    for p in paths:
        argv += ["--adapter", str(p)]
    proc = subprocess.Popen(argv, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})
    timer = threading.Timer(run.left(), proc.kill)  # a server that never says it listens
    timer.start()
    try:
        for line in proc.stdout:
            if "listening on " in line:
                return proc, line.split("listening on ", 1)[1].split()[0]
    finally:
        timer.cancel()
    raise RuntimeError(f"the server did not start: {proc.stderr.read()}")


def stop_server(proc: subprocess.Popen) -> str:
    """SIGTERM, then its stderr (the last line counts requests and forwards)."""
    proc.send_signal(signal.SIGTERM)
    try:
        _, err = proc.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        raise RuntimeError("the server did not stop within 30 s of SIGTERM") from None
    if proc.returncode != 0:
        raise RuntimeError(f"the server exited {proc.returncode}: {err}")
    return err.strip().splitlines()[-1]


def post(url: str, body: dict, timeout: float) -> dict:
    req = urllib.request.Request(url + "/predict", json.dumps(body).encode(),
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=min(timeout, 30)) as r:
        return json.loads(r.read())


def measure(run: Run, url, task, requests, n_texts, clients, pool, want) -> dict:
    """Latencies (ms) of `requests` requests of n_texts texts each from `clients` threads; the
    number of failed requests and of answers that differ from `want` (text -> probabilities)."""
    latencies, failures, wrong = [], [], [0]
    lock = threading.Lock()

    def client(c):
        for i in range(c, requests, clients):
            texts = [pool[(i * n_texts + k) % len(pool)] for k in range(n_texts)]
            t0 = time.perf_counter()
            try:
                answer = post(url, {"task": task, "texts": texts}, run.left())
            except Exception as e:  # counted, and the script fails at the end
                with lock:
                    failures.append(f"{type(e).__name__}: {e}")
                continue
            ms = 1e3 * (time.perf_counter() - t0)
            bad = sum(not np.allclose(list(p["probabilities"].values()), want[t], rtol=0, atol=1e-5)
                      for t, p in zip(texts, answer["predictions"]))
            with lock:
                latencies.append(ms)
                wrong[0] += bad + abs(len(answer["predictions"]) - len(texts))

    t0 = time.perf_counter()
    threads = [threading.Thread(target=client, args=(c,), daemon=True) for c in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(run.left())
    wall = time.perf_counter() - t0
    if any(t.is_alive() for t in threads):
        raise Deadline("the overall --timeout passed while requests were under way")
    lat = np.array(latencies)
    return {"texts": n_texts, "clients": clients, "requests": requests, "failed": len(failures),
            "wrong": wrong[0], "p50_ms": float(np.percentile(lat, 50)) if len(lat) else None,
            "p99_ms": float(np.percentile(lat, 99)) if len(lat) else None,
            "texts_per_s": len(lat) * n_texts / wall, "errors": failures[:3]}


def make_adapters(model, folder: Path) -> list[Path]:
    rng = np.random.default_rng(0)
    paths = []
    for name, labels in (("sst2", ["negative", "positive"]),
                         ("topic", ["world", "sports", "business", "science", "arts"])):
        model.add_adapter(name, bottleneck=64)
        model.add_classification_head(name, num_labels=len(labels), labels=labels)
        for k in model.trainable_names(name):
            model.params[k][...] += rng.normal(0, 0.02, model.params[k].shape).astype(model.dtype)
        paths.append(model.save_adapter(folder / f"{name}.safetensors", adapter=name))
        model.remove(name)
    return paths


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--weights", help="checkpoint folder (default: weights/all-MiniLM-L6-v2)")
    p.add_argument("--adapter", action="append", default=[], metavar="FILE",
                   help="two adapter files (default: made here, see above)")
    p.add_argument("--requests", type=int, default=50, help="requests per configuration")
    p.add_argument("--max-batch", type=int, default=64, help="the server's --max-batch")
    p.add_argument("--timeout", type=float, default=120, help="seconds for the whole run")
    p.add_argument("--json", metavar="FILE", help="also write the results here")
    args = p.parse_args()
    if args.adapter and len(args.adapter) != 2:
        p.error("give two --adapter files, or none")
    run = Run(args.timeout)

    import minadapt
    from minadapt.train import softmax

    model = minadapt.load_model(args.weights)
    with tempfile.TemporaryDirectory() as tmp:
        paths = [Path(a) for a in args.adapter] or make_adapters(model, Path(tmp))
        names = [model.load_adapter(path) for path in paths]
        task = names[0]
        pool = sentences(256, seed=0)
        b = model.tokenizer.encode(pool)
        want = dict(zip(pool, softmax(model.logits(*b, adapter=task))))

        memory = {}
        for label, held in (("one adapter", paths[:1]), ("two adapters", paths)):
            proc, url = start_server(run, args.weights, held, args.max_batch)
            try:
                memory[label] = {"idle_mb": rss_mb(proc.pid)}
                post(url, {"task": task, "texts": pool[:32]}, run.left())
                memory[label]["after_32_mb"] = rss_mb(proc.pid)
                if label == "two adapters":
                    rows = [measure(run, url, task, args.requests, n, c, pool, want) for n, c in CONFIGS]
            finally:
                if proc.poll() is None:
                    last = stop_server(proc)
        file_mb = paths[1].stat().st_size / 2**20

    print(f"two adapters: {paths[0].name} and {paths[1].name} (the second file: {file_mb:.2f} MiB)")
    print(f"{'RSS (MiB)':<22}{'listening':>10}{'after 32 texts':>16}")
    for label, m in memory.items():
        print(f"{label:<22}{m['idle_mb']:>10.1f}{m['after_32_mb']:>16.1f}")
    d = {k: memory["two adapters"][k] - memory["one adapter"][k] for k in ("idle_mb", "after_32_mb")}
    print(f"{'difference':<22}{d['idle_mb']:>10.1f}{d['after_32_mb']:>16.1f}")
    print(f"\n/predict on {task!r}, {args.requests} requests per row, server --max-batch {args.max_batch}")
    print(f"{'texts':>5} {'clients':>7} {'p50 ms':>8} {'p99 ms':>8} {'texts/s':>8} {'failed':>6} {'wrong':>5}")
    for r in rows:
        print(f"{r['texts']:>5} {r['clients']:>7} {r['p50_ms']:>8.1f} {r['p99_ms']:>8.1f} "
              f"{r['texts_per_s']:>8.0f} {r['failed']:>6} {r['wrong']:>5}")
    print(f"server: {last}")
    if args.json:
        Path(args.json).write_text(json.dumps({"memory": memory, "adapter_file_mb": file_mb,
                                               "rows": rows, "server": last}, indent=2))
    bad = [r for r in rows if r["failed"] or r["wrong"]]
    for r in bad:
        print(f"FAILED: {r['texts']} texts x {r['clients']} clients: {r['failed']} failed, "
              f"{r['wrong']} answers differ from the model's {r['errors']}", file=sys.stderr)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
