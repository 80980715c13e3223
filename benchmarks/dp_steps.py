"""Training-step times on SST-2's mix of lengths for three ways to use a machine's cores, in one run.

    python benchmarks/dp_steps.py [--data-dir DIR] [--batches 16] [--rounds 2] [--ranks 2]

(a) one process, the batch whole, OpenBLAS threaded over the cores (MINADAPT_THREADS=1);
(b) parallel.DataParallel: the batch cut into one shard per core, forked workers (the default);
(c) parallel.mpi.MPIDataParallel: `mpiexec -n RANKS`, one rank per core, an Allreduce a step;
and, for reference, (a1) one process with OpenBLAS at one thread, and (b0) DataParallel drawing
dropout masks per shard, as it did before masks were drawn per sentence (row_generators.py).
Each is a subprocess timing the same `--batches` batches of 32 drawn from SST-2's first epoch
(bucketed by length, padded as `minadapt train` pads them) after two warm-up steps: forward with
dropout, backward, clipping, AdamW. Configurations alternate over `--rounds` rounds, so that a
drift of the machine's speed hits all alike. Prints a Markdown table: median of the rounds' mean
step times, and the epoch (2105 steps of 32) that mean implies; then the time of one Allreduce
of the packed trainable vector between the ranks. Needs `pip install minadapt[mpi]` for (c).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

CHILD = r"""
import json, os, sys, time
import numpy as np
import minadapt
from minadapt.fast.numerics import keep_freed_memory
from minadapt.tasks.sst2 import load_sst2
from minadapt.train import encode_split, epoch_batches
from minadapt.optim import AdamW, clip_grad_norm
from minadapt.parallel.mpi import data_parallel

keep_freed_memory()
args = json.loads(sys.argv[1])
if args.get("per_shard_masks"):  # (b0): one generator per shard, as before row_generators.py
    import minadapt.parallel

    class PerShard:
        def __init__(self, rng):
            self.rng = rng

        @staticmethod
        def draw(rng, batch_size):
            return PerShard(rng)

        def __getitem__(self, rows):
            return np.random.default_rng(int(self.rng.integers(0, 2**63)))

    minadapt.parallel.RowGenerators = PerShard
model = minadapt.load_model(dtype="float32", seed=0)
model.add_adapter("sst2", bottleneck=64)
model.add_classification_head("sst2", num_labels=2)
sents, labels = load_sst2(args["data_dir"])["train"]
ids, lengths = encode_split(model.tokenizer, sents)
batches = epoch_batches(lengths, 32, 0, 0)
pick = np.random.default_rng(1).choice(len(batches), args["batches"] + 2, replace=False)
opt = AdamW({k: model.params[k] for k in model.trainable_names("sst2")}, lr=1e-4)
dp = data_parallel(model, adapter="sst2")
times = []
for j, b in enumerate(pick):
    idx = batches[b]
    pad = model.tokenizer.pad([ids[i] for i in idx])
    if hasattr(dp, "comm"):
        dp.comm.Barrier()
    t = time.perf_counter()
    loss, _, grads = dp.loss_and_grads(pad.input_ids, pad.attention_mask, pad.token_type_ids,
                                       labels[idx], train=True)
    clip_grad_norm(grads, 1.0)
    opt.step(model.params, grads, 1e-4)
    if j >= 2:
        times.append(time.perf_counter() - t)
allreduce = None
if hasattr(dp, "comm"):
    from mpi4py import MPI
    v = np.ones(dp.size + 1 + 64, np.float32)
    for _ in range(3):
        dp.comm.Allreduce(MPI.IN_PLACE, v)
    dp.comm.Barrier()
    t = time.perf_counter()
    for _ in range(50):
        dp.comm.Allreduce(MPI.IN_PLACE, v)
    allreduce = (time.perf_counter() - t) / 50
dp.close()
if dp.rank == 0:
    print("RESULT " + json.dumps({"mean": float(np.mean(times)), "times": times,
                                  "allreduce": allreduce, "floats": dp.size}))
"""

CONFIGS = {  # label, environment, ranks (None: --ranks under mpiexec), extra arguments
    "a": ("1 process, OpenBLAS on every core (MINADAPT_THREADS=1)", {"MINADAPT_THREADS": "1"}, 0, {}),
    "a1": ("1 process, OpenBLAS at 1 thread (MINADAPT_THREADS=1 OPENBLAS_NUM_THREADS=1)",
           {"MINADAPT_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}, 0, {}),
    "b0": ("DataParallel, masks per shard (before row_generators.py)", {}, 0, {"per_shard_masks": True}),
    "b": ("DataParallel: a shard per core, forked workers, masks per sentence (default)", {}, 0, {}),
    "c": ("MPIDataParallel: mpiexec -n RANKS, one rank per core", {}, None, {}),
}


def run(key, args):
    label, env, ranks, extra = CONFIGS[key]
    command = [sys.executable, "-c", CHILD, json.dumps({"data_dir": args.data_dir,
                                                         "batches": args.batches, **extra})]
    if ranks is None:
        command = [str(Path(sys.executable).parent / "mpiexec"), "-n", str(args.ranks), *command]
    env = {**os.environ, "OPENBLAS_THREAD_TIMEOUT": "1", **env}
    p = subprocess.run(command, capture_output=True, text=True, env=env)
    line = [x for x in p.stdout.splitlines() if x.startswith("RESULT ")]
    if p.returncode or not line:
        sys.exit(f"({key}) failed:\n{p.stdout}\n{p.stderr}")
    return json.loads(line[0][7:])


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data-dir", default=None, help="SST-2 folder (default: $MINADAPT_DATA/sst2)")
    ap.add_argument("--batches", type=int, default=16, help="timed steps per configuration and round")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--ranks", type=int, default=2, help="MPI ranks for (c)")
    args = ap.parse_args()
    import numpy as np

    results = {k: [] for k in CONFIGS}
    for r in range(args.rounds):
        for k in CONFIGS:
            results[k].append(run(k, args))
            print(f"round {r + 1} ({k}): {1000 * results[k][-1]['mean']:.0f} ms/step", file=sys.stderr)
    print("| configuration | ms/step (mean over batches; median of rounds) | SST-2 epoch (2105 steps) |")
    print("|---|---|---|")
    for k, (label, *_) in CONFIGS.items():
        ms = 1000 * float(np.median([x["mean"] for x in results[k]]))
        spread = ", ".join(f"{1000 * x['mean']:.0f}" for x in results[k])
        print(f"| ({k}) {label.replace('RANKS', str(args.ranks))} | {ms:.0f} (rounds: {spread}) | "
              f"{ms * 2105 / 60000:.1f} min |")
    c = results["c"]
    floats = c[0]["floats"]
    ar = float(np.median([x["allreduce"] for x in c]))
    print(f"\nAllreduce of the packed vector ({floats:,} trainable floats + loss + logits, "
          f"{4 * floats / 1e6:.2f} MB float32) between {args.ranks} ranks: {1000 * ar:.2f} ms")


if __name__ == "__main__":
    main()
