"""Training a task: the loop, and the few named helpers it calls.

    set_up        load the data and the model, give the model the task (method + head), the
                  optimizer, the runner (the model itself, or the batch cut over cores / MPI
                  ranks), the run's folder; resume from its checkpoint when asked
    train_step    lr = schedule(step)
                  loss, logits, grads = runner.loss_and_grads(batch)    forward, loss, backward
                  clip_grad_norm(grads)                                  global norm <= max_grad_norm
                  AdamW.step(params, grads, lr)                          the task's parameters only
    evaluate_and_save   dev metrics, a checkpoint, the plot
    finish        the last evaluation, the adapter file

The run's folder, its lock, the checkpoint and stopping on Ctrl-C live in checkpoints.py.
"""
from __future__ import annotations

import json
import math
import time
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from . import methods
from .checkpoints import (LOCK_NAME, Interrupted, load_training_checkpoint, out_lock, prepare_out,
                          save_training_checkpoint, stop_requests)
from .config import Number, finite_float, fraction, non_negative_int, positive_int
from .errors import ConfigError, MinadaptError, TrainingDiverged, WeightsError
from .backend import to_device
from .io.weights import append_line, atomic_write, read_safetensors
from .selection import Keeper, describe, holdout
from .optim import AdamW, clip_grad_norm, lr_schedule
from .parallel import join_job, launched, runner
from .predict import accuracy as evaluate  # noqa: F401  (the lessons' name for it)
from .predict import encode_examples, encode_split, evaluate as evaluate_task, softmax  # noqa: F401
from .progress import Progress


@dataclass
class TrainConfig:
    task: str = "sst2"  # a built-in task (minadapt.tasks.TASKS), or "custom" with train_file/dev_file
    data_dir: str | None = None  # the task's folder; else $MINADAPT_DATA/<task>, else download
    train_file: str | None = None  # your own data: CSV, TSV or JSONL (by extension) ...
    dev_file: str | None = None  # ... and its dev split, in the same format
    text_column: str = "text"  # your own data's columns: the text,
    text_pair_column: str | None = None  # the second text of a pair (or none),
    label_column: str = "label"  # and the label (a class name, or a number with regression)
    regression: bool = False  # your own data's label is a real number (one output, MSE loss)
    max_length: int = 128  # tokens per example, [CLS] and [SEP] included (up to 512)
    weights: str | None = None  # checkpoint folder; None: all-MiniLM-L6-v2, fetched if missing
    out: str | None = None  # where the adapter, metrics.jsonl, the plot and checkpoints go: runs/<task>
    adapter_name: str | None = None  # the task's name in the model and its files: the task's, by default
    method: str = "houlsby"  # how the backbone is adapted: a name in minadapt.methods.METHODS
    options: dict = field(default_factory=dict)  # the method's options ({"bottleneck": 16}); the
    #                                               rest keep the method's defaults
    epochs: float | None = None  # passes over the training set (fractions allowed); None: the
    #                               default, DEFAULT_EPOCHS but at least DEFAULT_MIN_STEPS steps
    max_steps: int | None = None  # stop after this many steps (overrides epochs)
    batch_size: int = 32
    lr: float | None = None  # peak learning rate after warm-up; None: the method's default_lr
    warmup: float = 0.06  # fraction of the steps spent warming up linearly from 0
    weight_decay: float = 0.01
    max_grad_norm: float = 1.0
    eval_every: int | None = None  # steps between evaluations (and checkpoints); 0: only at the
    #                                 end; None: DEFAULT_EVALS evaluations a run, as compare's
    train_subset: int | None = None  # use only the first N training sentences (quick tries, lessons)
    seed: int = 0
    device: str | None = None  # cpu or gpu
    log_every: int = 50  # steps between metrics.jsonl lines
    keep: str = "best"  # which step the adapter file holds: the best by validation score, or the last
    early_stopping_patience: int | None = None  # stop after N evaluations without a better validation score
    validation_file: str | None = None  # picks the step kept; None: a held-out slice of the
    #                                      training data (selection.holdout), never the dev set

    # what must match for --resume to continue the same run
    RESUME_KEYS = ("method", "options", "epochs", "max_steps", "batch_size", "lr", "warmup",
                   "weight_decay", "max_grad_norm", "train_subset", "seed", "adapter_name", "task",
                   "train_file", "dev_file", "text_column", "text_pair_column", "label_column",
                   "regression", "max_length", "keep", "early_stopping_patience", "validation_file")
    # what each number may be; the CLI's options use the same rules as their argparse types
    RULES = {"epochs": finite_float(min=0, strict=True), "max_steps": positive_int,
             "batch_size": positive_int, "lr": finite_float(min=0, strict=True), "warmup": fraction,
             "weight_decay": finite_float(min=0), "max_grad_norm": finite_float(min=0, strict=True),
             "eval_every": non_negative_int, "train_subset": positive_int, "seed": non_negative_int,
             "log_every": positive_int, "max_length": Number(int, low=3, high=512),
             "early_stopping_patience": positive_int}
    # the default length of a run: 2 passes, but at least 200 steps, so that a small training set
    # (BBC News' 1,602 articles left after the held-out slice are 51 steps of 32) still gets a whole
    # warm-up and decay; and 10 evaluations on the held-out slice, the best kept. These are
    # `minadapt compare`'s settings, so its runs are the evidence for them (benchmarks/README.md,
    # "Converged compare on a quiet machine")
    DEFAULT_EPOCHS, DEFAULT_MIN_STEPS, DEFAULT_EVALS = 2.0, 200, 10
    OPTIONAL = ("max_steps", "train_subset", "epochs", "early_stopping_patience", "eval_every")  # None: not set
    KEEP = ("best", "last")

    def total_steps(self, steps_per_epoch: int) -> int:
        """The run's length in steps: max_steps if set, else `epochs` passes, else the default
        (DEFAULT_EPOCHS passes, and at least DEFAULT_MIN_STEPS)."""
        if self.max_steps:
            return self.max_steps
        if self.epochs is not None:
            return max(1, round(self.epochs * steps_per_epoch))
        return max(round(self.DEFAULT_EPOCHS * steps_per_epoch), self.DEFAULT_MIN_STEPS)

    def eval_interval(self, total: int) -> int:
        """Steps between evaluations of a `total`-step run: eval_every if set (0: only at the end),
        else total / DEFAULT_EVALS rounded up (compare_run's `every`)."""
        if self.eval_every is not None:
            return self.eval_every
        return max(1, math.ceil(total / self.DEFAULT_EVALS))

    def __post_init__(self):
        """Refuse nonsense at once (ConfigError naming the field), not as a NaN hours later."""
        if (self.train_file is None) != (self.dev_file is None):
            raise ConfigError("TrainConfig.train_file and dev_file: give both (your own data), or "
                              "neither (a built-in task)")
        if self.train_file is not None and self.task == "sst2":
            self.task = "custom"  # the default task gives way to your own files
        if self.adapter_name is None:
            self.adapter_name = self.task if self.train_file is None else name_from_file(self.train_file)
        from .io.task_names import check_name

        check_name(self.adapter_name, "TrainConfig.adapter_name")
        if self.out is None:
            self.out = f"runs/{self.adapter_name}"
        if self.keep not in self.KEEP:
            raise ConfigError(f"TrainConfig.keep: expected 'best' or 'last', got {self.keep!r}")
        if self.method not in methods.METHODS:
            raise ConfigError(f"TrainConfig.method: expected one of {', '.join(methods.METHODS)}, "
                              f"got {self.method!r}")
        if not isinstance(self.options, dict):
            raise ConfigError(f"TrainConfig.options: expected a dict of the method's options, got "
                              f"{self.options!r}")
        self.options = {k: v for k, v in self.options.items() if v is not None}
        self.method_config()  # the method checks its options now
        if self.lr is None:
            self.lr = methods.get(self.method).default_lr
        for name, rule in self.RULES.items():
            rule.check(f"TrainConfig.{name}", getattr(self, name), optional=name in self.OPTIONAL)
        if self.device not in (None, "cpu", "gpu"):
            raise ConfigError(f"TrainConfig.device: expected 'cpu', 'gpu' or None, got {self.device!r}")
        if not isinstance(self.out, (str, Path)) or not str(self.out):
            raise ConfigError(f"TrainConfig.out: expected a folder path, got {self.out!r}")

    def method_config(self):
        """The method's config for this run (its options, checked), or None for a method without."""
        try:
            return methods.get(self.method).make_config(self.adapter_name, self.options)
        except ConfigError as e:
            raise ConfigError(f"TrainConfig.options: {e}") from None

    def to_dict(self):
        return asdict(self)

    def resolve_task(self):
        """The minadapt.tasks.Task this run trains on."""
        from .tasks import get_task, task_from_files

        if self.train_file is not None:
            return task_from_files(self.train_file, self.dev_file, self.text_column,
                                   self.text_pair_column, self.label_column, self.regression,
                                   name=self.adapter_name)
        return get_task(self.task)


GENERIC_STEMS = ("train", "training", "data", "dataset", "all")


def name_from_file(path) -> str:
    """A task name for a training file: its stem (news.csv -> news), or its folder's name when the
    stem says nothing (news/train.csv -> news); characters a name cannot hold become '_'."""
    import re

    p = Path(path)
    stem = p.stem if p.stem.lower() not in GENERIC_STEMS else (p.resolve().parent.name or p.stem)
    return re.sub(r"[^A-Za-z0-9_-]", "_", stem).lstrip("_-")[:64] or "custom"


@dataclass
class TrainResult:
    dev_accuracy: float  # nan for a task whose metrics do not include accuracy
    steps: int
    seconds: float
    adapter_path: Path
    metrics_path: Path
    plot_path: Path | None
    interrupted: bool = False
    dev_metrics: dict = field(default_factory=dict)  # every metric of the task, the first reported
    kept: dict | None = None  # the eval record of the step the adapter file holds
    last: dict | None = None  # the eval record of the last step
    files: list = field(default_factory=list)  # every file the run leaves in OUT


@dataclass
class Run:
    """A run as set_up leaves it; the loop moves `step` and `history` on."""
    cfg: TrainConfig
    task: object  # minadapt.tasks.Task
    model: object
    runner: object  # parallel.runner: the model itself, or the batch cut over cores / ranks
    opt: AdamW
    train: tuple  # (ids, types, lengths, labels) of the training examples
    dev: tuple  # (ids, types, labels) of the dev examples
    steps_per_epoch: int
    total: int
    warmup: int
    out: Path
    validation: tuple | None = None  # (ids, types, labels) of the examples that choose the step kept
    keeper: Keeper | None = None
    best_state: dict | None = None  # the best step's parameters (after --resume: in the adapter file)
    step: int = 0
    history: list = field(default_factory=list)
    seconds_training: float = 0.0  # wall time inside train_step (evaluations left out)
    examples: int = 0  # examples trained on by this process since it started
    interval: list = field(default_factory=list)  # the losses since the last metrics line
    started: float = field(default_factory=time.perf_counter)

    @property
    def main(self) -> bool:  # rank 0 alone prints and writes files
        return self.runner.rank == 0

    @property
    def checkpoint(self) -> Path:
        return self.out / "checkpoint.safetensors"

    @property
    def metrics(self) -> Path:
        return self.out / "metrics.jsonl"

    @property
    def adapter_file(self) -> Path:
        return self.out / "adapter.safetensors"


# --- the loop -------------------------------------------------------------------------------------
def train(cfg: TrainConfig, model=None, data=None, resume: bool = False, callback=None,
          progress: bool = True) -> TrainResult:
    """Train task cfg.adapter_name by cfg.method on cfg's data; returns the final dev metrics and
    where the files went.

    `model` and `data` ({"train": Examples or (texts, labels), "dev": ...}) may be given (tests,
    lessons); otherwise they are loaded from cfg.weights and cfg.data_dir. `callback(step, loss)`
    runs after every step (raise Interrupted inside it to simulate Ctrl-C). The --out folder is
    checked and locked before anything is loaded."""
    rank, size = launched()
    if size > 1:
        join_job()  # from here an error on any rank ends every rank (none waits for it forever)
    out = prepare_out(cfg.out)
    with out_lock(out) if rank == 0 else nullcontext():  # rank 0 alone writes OUT
        run = set_up(cfg, model, data, resume)
        bar = Progress(run.total, desc="train", unit="step", initial=run.step) if progress and run.main else None
        every = cfg.eval_interval(run.total)
        try:
            with stop_requests(say=lambda signal: _say_stopping(run, signal)) as stop:
                while run.step < run.total:
                    loss = train_step(run)
                    if bar:
                        bar.update(1, loss=loss, sent_s=round(run.examples / run.seconds_training, 1))
                    if every and run.step % every == 0 and run.step < run.total:
                        record = evaluate_and_save(run)
                        if bar:
                            bar.write(f"step {run.step}: {describe_metrics(record)}")
                        if run.keeper.stop:
                            if run.main:
                                print(f"\nearly stopping at step {run.step}: {run.keeper.since_best} "
                                      "evaluations without a better validation score (best: "
                                      f"{describe(run.keeper.best)})")
                            break
                    if callback:
                        callback(run.step, loss)
                    if run.runner.any_rank(stop):  # every rank stops after the same step
                        raise Interrupted()
        except (KeyboardInterrupt, Interrupted) as e:
            return stopped_early(run, hard=isinstance(e, KeyboardInterrupt) or e.hard)
        finally:
            if bar:
                bar.close()
        return finish(run)


def set_up(cfg: TrainConfig, model=None, data=None, resume: bool = False) -> Run:
    """Data, model, the task on it, optimizer, runner, metrics file; the checkpoint when resuming."""
    from .model import load_model
    from .tasks import load_task

    task = cfg.resolve_task()
    data = data if data is not None else load_task(task, cfg.data_dir)
    train_set, dev_set = as_examples(data["train"]), as_examples(data["dev"])
    if cfg.train_subset:
        train_set = train_set.head(cfg.train_subset)
    validation = None
    if cfg.validation_file is not None:
        from .tasks import read_examples

        validation = read_examples(task, cfg.validation_file)
    elif cfg.keep == "best" or cfg.early_stopping_patience:
        # the same slice whatever the seed, as compare's (selection.holdout); a run that
        # evaluates only at its end has nothing to choose from, so nothing is held out then
        rest, held = holdout(train_set)
        total = cfg.total_steps(math.ceil(len(rest.labels) / cfg.batch_size))
        if held is not None and (0 < cfg.eval_interval(total) < total or cfg.early_stopping_patience):
            train_set, validation = rest, held
    if model is None:
        model = load_model(cfg.weights, dtype="float32", device=cfg.device, seed=cfg.seed)
    need_tokenizer(model)
    model.tokenizer.set_max_length(cfg.max_length)
    add_task(model, cfg, task)
    model.rng = model.new_rng(cfg.seed)
    train_ids, train_types, train_lengths = encode_examples(model.tokenizer, train_set)
    dev_ids, dev_types, _ = encode_examples(model.tokenizer, dev_set)
    steps_per_epoch = math.ceil(len(train_ids) / cfg.batch_size)
    total = cfg.total_steps(steps_per_epoch)
    trainable = model.trainable_names(cfg.adapter_name)
    run = Run(cfg, task, model, runner(model, cfg.adapter_name),
              AdamW({k: model.params[k] for k in trainable}, lr=cfg.lr, weight_decay=cfg.weight_decay),
              (train_ids, train_types, train_lengths, train_set.labels), (dev_ids, dev_types, dev_set.labels),
              steps_per_epoch, total, int(cfg.warmup * total), Path(cfg.out))
    if validation is not None:
        run.validation = (*encode_examples(model.tokenizer, validation)[:2], validation.labels)
    if resume:
        if not run.checkpoint.is_file():
            raise MinadaptError(f"--resume: no checkpoint at {run.checkpoint} (train once without "
                                "--resume, or point --out at the run's folder)")
        run.step, run.history = load_training_checkpoint(run.checkpoint, model, run.opt, cfg)
        if run.main:
            print(f"resuming from {run.checkpoint} at step {run.step}/{total}")
    run.keeper = Keeper(cfg.keep, cfg.early_stopping_patience, run.history)
    if run.main:  # rewritten whole from the checkpoint's history: no duplicates, no torn last line
        atomic_write(run.metrics, "".join(json.dumps(h) + "\n" for h in run.history).encode())
    return run


def add_task(model, cfg: TrainConfig, task):
    """Give `model` task cfg.adapter_name: its head (the task's labels), then cfg.method's parameters."""
    name = cfg.adapter_name
    model.add_classification_head(name, num_labels=task.num_outputs, seed=cfg.seed,
                                  labels=task.names or None, regression=task.regression)
    model.add_method(name, methods.get(cfg.method), cfg.method_config(), seed=cfg.seed)


def train_step(run: Run) -> float:
    """One optimizer step on the step's batch; returns its loss."""
    cfg, model = run.cfg, run.model
    ids, types, lengths, labels = run.train
    t0 = time.perf_counter()
    epoch, within = divmod(run.step, run.steps_per_epoch)
    idx = epoch_batches(lengths, cfg.batch_size, cfg.seed, epoch)[within]
    b = model.tokenizer.pad([ids[i] for i in idx], [types[i] for i in idx])
    lr = lr_schedule(run.step, run.total, run.warmup, cfg.lr)
    loss, _, grads = run.runner.loss_and_grads(b.input_ids, b.attention_mask, b.token_type_ids,
                                               labels[idx], train=True)
    grad_norm = clip_grad_norm(grads, cfg.max_grad_norm)
    loss = float(loss)  # a host sync (a no-op on the CPU); the norm above already waited
    if not (math.isfinite(loss) and math.isfinite(grad_norm)):
        raise _diverged(run.step + 1, run.total, loss, grad_norm, cfg, run.checkpoint)
    run.opt.step(model.params, grads, lr)
    run.step += 1
    run.seconds_training += time.perf_counter() - t0
    run.examples += len(idx)
    run.interval.append(loss)
    if run.step % cfg.log_every == 0 or run.step == run.total:
        log(run, {"kind": "train", "step": run.step, "epoch": round(run.step / run.steps_per_epoch, 4),
                  "loss": sum(run.interval) / len(run.interval), "lr": lr, "grad_norm": grad_norm,
                  "sentences_per_s": run.examples / run.seconds_training,
                  "elapsed_s": time.perf_counter() - run.started})
        run.interval.clear()
    return loss


def evaluate_and_save(run: Run) -> dict:
    """Dev (and validation) metrics now; the adapter file when the step is the best so far, a
    checkpoint and the plot (rank 0). Returns the eval record."""
    record = evaluation(run)
    log(run, record)
    if run.validation is not None and run.keeper.update(record) and run.cfg.keep == "best":
        # copies: on the CPU adapter_state hands out the live arrays, which the next step changes
        run.best_state = {k: np.array(v, copy=True) for k, v in
                          run.model.adapter_state(run.cfg.adapter_name).items()}
        if run.main:
            save_kept(run, record)
    if run.main:
        save_training_checkpoint(run.checkpoint, run.model, run.opt, run.step, run.cfg, run.history)
        plot_history(run.history, run.out / "training.png", run_title(run.task, run.cfg))
    return record


def dev_metrics(run: Run) -> dict:
    """{metric: value} of the task's metrics on the dev set, as the model stands."""
    ids, types, labels = run.dev
    return evaluate_task(run.model, run.task, ids, types, labels, run.cfg.adapter_name, run.runner)[0]


def evaluation(run: Run) -> dict:
    """The eval record of this step: the dev metrics and, with a validation set, its metrics and
    `validation_score` (the first metric, which chooses the step kept)."""
    record = _eval_record(run.step, dev_metrics(run))
    if run.validation is not None:
        ids, types, labels = run.validation
        vm = evaluate_task(run.model, run.task, ids, types, labels, run.cfg.adapter_name, run.runner)[0]
        record.update(validation=vm, validation_score=vm[record["dev_metric"]])
    return record


def describe_metrics(record: dict) -> str:
    """'dev accuracy 87.50%, validation accuracy 88.10%' of an eval record."""
    val = f", validation {format_metrics(record['validation'])}" if "validation" in record else ""
    return f"dev {format_metrics(record['dev'])}{val}"


def save_kept(run: Run, record: dict) -> Path:
    """The adapter file, holding the parameters now in the model: those of `record`'s step."""
    cfg, model = run.cfg, run.model
    head = model.heads[cfg.adapter_name]
    return model.save_adapter(run.adapter_file, adapter=cfg.adapter_name, extra_metadata={
        "training": cfg.to_dict(), "task": task_record(run.task, cfg), "dev_metrics": record["dev"],
        "dev_accuracy": record["dev"].get("accuracy", float("nan")), "steps": record["step"],
        "kept": {k: record[k] for k in ("step", "dev", "validation") if k in record},
        "labels": list(head.labels) if head.labels else None})


def finish(run: Run) -> TrainResult:
    """The last evaluation (unless early stopping just made it), a checkpoint of the last step, the
    kept step's parameters back in the model (keep="best"), the adapter file and the plot."""
    cfg, model = run.cfg, run.model
    last = run.history[-1] if run.history and run.history[-1].get("kind") == "eval" and \
        run.history[-1]["step"] == run.step else None
    if last is None:
        last = evaluation(run)
        log(run, last)
        if run.validation is not None:
            run.keeper.update(last)
    run.runner.close()
    if run.main:  # the state to resume from is the last step's, whichever step the file holds
        save_training_checkpoint(run.checkpoint, model, run.opt, run.step, cfg, run.history)
    kept = last
    if run.validation is not None and cfg.keep == "best" and run.keeper.best is not last:
        kept = run.keeper.best  # an earlier step: its parameters back into the model
        state = run.best_state if run.best_state is not None else read_safetensors(run.adapter_file)[0]
        for k, v in state.items():
            model.params[k][...] = to_device(v, model.device)
    seconds = time.perf_counter() - run.started
    metrics = kept["dev"]
    accuracy = metrics.get("accuracy", float("nan"))
    if not run.main:
        return TrainResult(accuracy, run.step, seconds, run.adapter_file, run.metrics, None,
                           dev_metrics=metrics, kept=kept, last=last)
    adapter_path = save_kept(run, kept)
    plot = plot_history(run.history, run.out / "training.png", run_title(run.task, cfg))
    files = sorted(p for p in run.out.iterdir() if p.is_file() and p.name != LOCK_NAME)
    return TrainResult(accuracy, run.step, seconds, adapter_path, run.metrics, plot,
                       dev_metrics=metrics, kept=kept, last=last, files=files)


def stopped_early(run: Run, hard: bool) -> TrainResult:
    """After Ctrl-C: a checkpoint of the last finished step (hard: mid-step, the saved one is kept)."""
    run.runner.close()
    seconds = time.perf_counter() - run.started
    stopped = TrainResult(float("nan"), run.step, seconds, run.checkpoint, run.metrics, None, True)
    if not run.main:
        return stopped
    if hard:  # mid-step: the state in memory is half a step; keep the saved one
        saved = f"the last checkpoint ({run.checkpoint}) is kept" if run.checkpoint.is_file() else \
            "no checkpoint was saved yet"
        print(f"\nstopped during step {run.step + 1}/{run.total}; {saved}")
        return stopped
    save_training_checkpoint(run.checkpoint, run.model, run.opt, run.step, run.cfg, run.history)
    task = run.cfg.task if run.cfg.train_file is None else ""
    print(f"\ninterrupted after step {run.step}/{run.total}; saved {run.checkpoint}\n"
          f"continue with: minadapt train {task} --out {run.out} --resume (and the same options)")
    return stopped


def _say_stopping(run: Run, signal_name: str):
    if run.main:
        import sys

        print(f"\n{signal_name}: finishing step {run.step + 1}, then saving a checkpoint (again to "
              "stop at once)", file=sys.stderr, flush=True)


def log(run: Run, record: dict):
    """A line of metrics.jsonl (rank 0 writes it; every rank keeps the history)."""
    run.history.append(record)
    if run.main:  # the checkpoint holds the history too: --resume rewrites this file from it
        append_line(run.metrics, json.dumps(record))


# --- helpers ----------------------------------------------------------------------------------------
def as_examples(split):
    """A split as minadapt.tasks.Examples: given as such, or as (texts, labels) (tests, lessons)."""
    from .tasks import Examples

    if isinstance(split, Examples):
        return split
    texts, labels = split
    return Examples(list(texts), None, np.asarray(labels))


def epoch_batches(lengths, batch_size, seed, epoch):
    """Epoch `epoch`'s batches, a pure function of (seed, epoch): resuming recomputes them."""
    from .tasks.batching import bucketed_batches

    return bucketed_batches(lengths, batch_size, np.random.default_rng([seed, epoch]))


def run_title(task, cfg) -> str:
    """The plot's title: the task and what trained."""
    method = methods.get(cfg.method)
    size = method.describe(cfg.method_config())
    return f"{task.name}, {cfg.method}" + (f", {size}" if size else "")


def plot_history(history, path, title=""):
    """Training loss (per logged interval) and the task's first dev metric against the step, as a PNG.
    Uses a bare Figure (no pyplot): no display needed, and a notebook's backend is left alone.
    Written whole or not at all (io.weights.atomic_write): a full disk leaves the last plot."""
    import io

    from matplotlib.figure import Figure

    train = [h for h in history if h["kind"] == "train"]
    dev = [h for h in history if h["kind"] == "eval"]
    fig = Figure(figsize=(7, 4))
    ax1 = fig.subplots()
    ax1.plot([h["step"] for h in train], [h["loss"] for h in train], color="tab:blue", lw=1)
    ax1.set_xlabel("step")
    ax1.set_ylabel("training loss", color="tab:blue")
    ax2 = ax1.twinx()
    metric = dev[0].get("dev_metric", "accuracy") if dev else "accuracy"
    scale = 1 if metric in ("pearson", "spearman", "matthews") else 100
    ax2.plot([h["step"] for h in dev], [scale * h.get("dev_score", h.get("dev_accuracy")) for h in dev],
             "o-", color="tab:red")
    ax2.set_ylabel(f"dev {metric}" + (" (%)" if scale == 100 else ""), color="tab:red")
    ax1.set_title(title)
    fig.tight_layout()
    png = io.BytesIO()
    fig.savefig(png, format="png", dpi=100)
    atomic_write(path, png.getvalue())
    return path


def need_tokenizer(model) -> None:
    """A WeightsError naming the checkpoint folder when it had no tokenizer.json to load."""
    if model.tokenizer is None:
        folder = Path(model.backbone.get("path") or model.backbone.get("name") or "?").parent
        raise WeightsError(f"{folder}: no tokenizer.json in this checkpoint folder (it needs "
                           "config.json, model.safetensors and tokenizer.json; `minadapt download` "
                           "fetches all four files)")


def _eval_record(step, metrics) -> dict:
    """A metrics.jsonl line for an evaluation: every metric, the first as dev_score (what the plot
    shows), and dev_accuracy where accuracy is among them."""
    first = next(iter(metrics))
    record = {"kind": "eval", "step": step, "dev": metrics, "dev_metric": first,
              "dev_score": metrics[first]}
    if "accuracy" in metrics:
        record["dev_accuracy"] = metrics["accuracy"]
    return record


def format_metrics(metrics) -> str:
    """'accuracy 91.20%, f1_macro 90.85%' (Pearson and Spearman as numbers: they are not shares)."""
    return ", ".join(f"{k} {v:.4f}" if k in ("pearson", "spearman", "matthews") else f"{k} {100 * v:.2f}%"
                     for k, v in metrics.items())


def task_record(task, cfg=None) -> dict:
    """What an adapter file says of its task, so that eval and predict need nothing else: the name,
    label names, metrics, whether it is a regression, its columns, and (for your own files) where
    they were."""
    record = {"name": task.name, "labels": list(task.names), "metrics": list(task.metrics),
              "regression": task.regression, "text_column": task.text_column,
              "text_pair_column": task.text_pair_column, "label_column": task.label_column,
              "builtin": task.folder is not None}
    if task.folder is None:
        record["files"] = dict(task.files)
    if cfg is not None:
        record["max_length"] = cfg.max_length
    return record


def _diverged(step, total, loss, grad_norm, cfg, ckpt_path) -> TrainingDiverged:
    """The error for a step whose loss or gradient norm is NaN or Inf: raised before AdamW applies
    it, so neither the parameters in memory nor the checkpoint on disk ever hold a NaN."""
    if ckpt_path.is_file():
        kept = (f"the last good checkpoint, {ckpt_path} (step "
                f"{read_safetensors(ckpt_path)[1].get('step', '?')}), is kept and --resume continues it")
    else:
        kept = "no checkpoint was saved before it"
    return TrainingDiverged(
        f"training stopped at step {step}/{total}: the loss is {loss:.4g} and the gradient norm "
        f"{grad_norm:.4g}, not both finite; {kept}. Try a lower --lr (now {cfg.lr:g}) or a longer "
        f"--warmup (now {cfg.warmup:g}), in a new --out")
