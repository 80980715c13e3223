"""`minadapt serve` with 8 tasks: traffic spread over all of them against all on one, this server
against an earlier one (issue 33: a batch of several tasks is one forward).

    python benchmarks/serve_tasks.py --baseline DIR [--tasks 8] [--clients 8] [--requests 30]
                                     [--timeout 900] [--json out.json]

Eight Houlsby adapters (random, off the identity; 2 or 5 labels) are written to a temporary folder
and served by one process. For each server (the checkout in DIR, then this one) and each traffic
mix, --clients clients send --requests requests each, one after another (each asking for 1, 2 or 4
of the shortest SST-2 dev sentences): "spread" picks the task of each request at random among the
8, "one" sends every request to the first task. Every answer is compared with `minadapt predict`'s.
Printed per configuration: errors, wrong answers, p50/p99 latency, texts/s, and the server's RSS
(VmRSS) after the run. Both servers run in the same run, on 127.0.0.1 only, one after the other.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from serve_load import REPO, measure, plan, start_server, stop_server  # noqa: E402

LABELS = (["negative", "positive"], ["world", "sports", "business", "science", "arts"])


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--baseline", required=True, help="a checkout of the earlier code")
    p.add_argument("--weights", help="checkpoint folder (default: the default checkpoint)")
    p.add_argument("--tasks", type=int, default=8)
    p.add_argument("--clients", type=int, default=8)
    p.add_argument("--requests", type=int, default=30, help="requests per client")
    p.add_argument("--pool", type=int, default=300, help="the N shortest SST-2 dev sentences")
    p.add_argument("--timeout", type=float, default=900, help="seconds for the whole run")
    p.add_argument("--json", metavar="FILE")
    args = p.parse_args()
    end = time.monotonic() + args.timeout

    import minadapt
    from minadapt.predict import predict_texts

    data = Path(os.environ.get("MINADAPT_DATA", REPO / "data")) / "sst2" / "dev.tsv"
    pool = [line.split("\t")[0].strip() for line in data.read_text().splitlines()[1:]]
    pool = sorted(pool, key=lambda t: (len(t.split()), t))[:args.pool]
    model = minadapt.load_model(args.weights)
    rng = np.random.default_rng(0)
    names = [f"task{k}" for k in range(args.tasks)]
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        paths, want = [], {}
        for k, name in enumerate(names):
            labels = LABELS[k % 2]
            model.add_adapter(name, bottleneck=64, seed=k)
            model.add_classification_head(name, num_labels=len(labels), labels=labels, seed=k)
            for key in model.trainable_names(name):
                model.params[key][...] += rng.normal(0, 0.05, model.params[key].shape).astype(model.dtype)
            paths.append(model.save_adapter(Path(tmp) / f"{name}.safetensors", adapter=name))
            for text, (label, prob) in zip(pool, predict_texts(model, name, pool)):
                want[name, text] = (label, round(prob, 4))
        for label, cwd in (("baseline", Path(args.baseline)), ("this", REPO)):
            proc, addr = start_server(cwd, args.weights, paths)
            try:
                for mix, tasks in (("one", names[:1]), ("spread", names)):
                    row = measure(addr, plan(args.clients, args.requests, pool, tasks), want, end)
                    row["rss_mb"] = rss_mb(proc.pid)
                    results[f"{label}/{mix}"] = row
                    print(f"{label:8} {mix:6}: {row}", flush=True)
            finally:
                stop_server(proc)

    print(f"\n{args.tasks} tasks loaded, {args.clients} clients x {args.requests} requests")
    print("| server | traffic | errors | wrong | p50 ms | p99 ms | texts/s | spread / one | RSS MB |")
    print("|---|---|---|---|---|---|---|---|---|")
    for key, row in results.items():
        server, mix = key.split("/")
        ratio = row["texts_per_s"] / results[f"{server}/one"]["texts_per_s"]
        print(f"| {server} | {mix} | {row['errors']} | {row['wrong']} | {row['p50_ms']:.0f} | "
              f"{row['p99_ms']:.0f} | {row['texts_per_s']:.1f} | {ratio:.2f} | {row['rss_mb']:.0f} |")
    if args.json:
        Path(args.json).write_text(json.dumps({"tasks": args.tasks, "clients": args.clients,
                                               "requests": args.requests, "results": results}, indent=1))
    return 0 if all(r["errors"] == 0 and r["wrong"] == 0 for k, r in results.items()
                    if k.startswith("this")) else 1


if __name__ == "__main__":
    sys.exit(main())
