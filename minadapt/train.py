"""Training an adapter on a task: the loop, evaluation, checkpoints, metrics and plots.

    step:  lr = schedule(step)
           loss, logits, grads = model.loss_and_grads(batch)     forward, loss, backward
           clip_grad_norm(grads)                                  global norm <= max_grad_norm
           AdamW.step(params, grads, lr)                          adapters + head only

Everything a run needs to continue lives in `out/checkpoint.safetensors`: the trainable
parameters, AdamW's moments, the step, and the state of the dropout generator. The order of the
batches is not stored: epoch e's order is drawn from a generator seeded with (seed, e), so a
resumed run recomputes it. That is why `--resume` ends with exactly the numbers of a run that was
never interrupted. Ctrl-C (or SIGTERM) lets the step under way finish, then saves a checkpoint and
exits (a second Ctrl-C stops at once, keeping the last saved checkpoint); every evaluation saves one
too. Stopping mid-step would leave a half-drawn dropout generator, or a half-applied AdamW update.
"""
from __future__ import annotations

import json
import math
import os
import signal
import sys
import time
from contextlib import contextmanager, nullcontext
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from .backend import to_device, to_numpy
from .config import Number, finite_float, fraction, non_negative_int, positive_int
from .errors import ConfigError, MinadaptError, TrainingDiverged, WeightsError
from .nn.adapter import NON_LINEARITIES
from .optim import AdamW, clip_grad_norm, lr_schedule
from .parallel.mpi import data_parallel, join_job, launched
from .progress import Progress
from .io.weights import check_finite, read_safetensors, save_tensors


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
    weights: str | None = None  # checkpoint folder; None: weights/all-MiniLM-L6-v2, fetched if missing
    out: str | None = None  # where the adapter, metrics.jsonl, the plot and checkpoints go: runs/<task>
    adapter_name: str | None = None  # the adapter's and head's name: the task's, by default
    method: str = "houlsby"  # what trains (METHODS): bottleneck adapters, LoRA, the whole model, a probe
    preset: str | None = None  # "houlsby-paper": adapter-bert's choices (model.PRESETS); houlsby only
    bottleneck: int = 64  # m, the adapter's width (houlsby and pfeiffer)
    non_linearity: str = "swish"  # f between down- and up-projection (houlsby and pfeiffer)
    train_layer_norms: bool = False  # also train the LayerNorms, as Houlsby et al. (houlsby, pfeiffer)
    lora_rank: int = 8  # r of LoRA's update B A on query and value (lora only)
    lora_alpha: float = 16.0  # the update is scaled by alpha / r, PEFT's lora_alpha (lora only)
    lora_dropout: float = 0.1  # dropout on LoRA's input, PEFT's lora_dropout (lora only)
    epochs: float | None = None  # passes over the training set (fractions allowed); None: the
    #                               default, DEFAULT_EPOCHS but at least DEFAULT_MIN_STEPS steps
    max_steps: int | None = None  # stop after this many steps (overrides epochs)
    batch_size: int = 32
    lr: float | None = None  # peak learning rate after warm-up; None: DEFAULT_LR[method]
    warmup: float = 0.06  # fraction of the steps spent warming up linearly from 0
    weight_decay: float = 0.01
    max_grad_norm: float = 1.0
    eval_every: int = 500  # steps between dev evaluations (and checkpoints); 0: only at the end
    train_subset: int | None = None  # use only the first N training sentences (quick tries, lessons)
    seed: int = 0
    device: str | None = None  # cpu or gpu
    log_every: int = 50  # steps between metrics.jsonl lines

    # what must match for --resume to continue the same run
    RESUME_KEYS = ("method", "preset", "lora_rank", "lora_alpha", "lora_dropout", "bottleneck", "non_linearity", "train_layer_norms", "epochs", "max_steps",
                   "batch_size", "lr", "warmup", "weight_decay", "max_grad_norm", "train_subset",
                   "seed", "adapter_name", "task", "train_file", "dev_file", "text_column",
                   "text_pair_column", "label_column", "regression", "max_length")

    # what each number may be; the CLI's options use the same rules as their argparse types
    RULES = {"bottleneck": positive_int, "epochs": finite_float(min=0, strict=True),
             "max_steps": positive_int, "batch_size": positive_int,
             "lr": finite_float(min=0, strict=True), "warmup": fraction,
             "weight_decay": finite_float(min=0), "max_grad_norm": finite_float(min=0, strict=True),
             "eval_every": non_negative_int, "train_subset": positive_int, "seed": non_negative_int,
             "log_every": positive_int, "max_length": Number(int, low=3, high=512),
             "lora_rank": positive_int, "lora_alpha": finite_float(min=0, strict=True),
             "lora_dropout": Number(float, low=0.0, high=0.99)}
    # what trains, for each method (`minadapt train --help` shows these lines)
    METHODS = {
        "houlsby": "two bottleneck adapters per layer (after attention and after the FFN) + the head",
        "pfeiffer": "one bottleneck adapter per layer (after the FFN) + the head",
        "lora": "low-rank updates B A of the query and value weights in every layer + the head",
        "full": "every backbone weight (embeddings, attention, FFN, LayerNorms) + the head",
        "probe": "the classification head alone, on the frozen backbone's [CLS] features",
    }
    # the peak learning rate when none is given: full fine-tuning moves pretrained weights, which
    # 2e-3 would wreck (BERT's fine-tuning rates are 2e-5 to 5e-5; 1e-4 suits this small model)
    DEFAULT_LR = {"houlsby": 2e-3, "pfeiffer": 2e-3, "lora": 2e-3, "full": 1e-4, "probe": 2e-3}
    # the default length of a run: 1.25 passes, but at least 200 steps, so that a small training
    # set (BBC News' 1,780 articles are 56 steps of 32) still gets a whole warm-up and decay
    DEFAULT_EPOCHS, DEFAULT_MIN_STEPS = 1.25, 200
    # the fields that only some methods read: set away from their default, another method refuses them
    ONLY_FOR = {"preset": ("houlsby",), "bottleneck": ("houlsby", "pfeiffer"),
                "non_linearity": ("houlsby", "pfeiffer"), "train_layer_norms": ("houlsby", "pfeiffer"),
                "lora_rank": ("lora",), "lora_alpha": ("lora",), "lora_dropout": ("lora",)}

    OPTIONAL = ("max_steps", "train_subset", "epochs")  # None: not set

    def total_steps(self, steps_per_epoch: int) -> int:
        """The run's length in steps: max_steps if set, else `epochs` passes, else the default
        (DEFAULT_EPOCHS passes, and at least DEFAULT_MIN_STEPS)."""
        if self.max_steps:
            return self.max_steps
        if self.epochs is not None:
            return max(1, round(self.epochs * steps_per_epoch))
        return max(round(self.DEFAULT_EPOCHS * steps_per_epoch), self.DEFAULT_MIN_STEPS)

    def __post_init__(self):
        """Refuse nonsense at once (ConfigError naming the field), not as a NaN hours later."""
        if (self.train_file is None) != (self.dev_file is None):
            raise ConfigError("TrainConfig.train_file and dev_file: give both (your own data), or "
                              "neither (a built-in task)")
        if self.train_file is not None and self.task == "sst2":
            self.task = "custom"  # the default task gives way to your own files
        if self.out is None:
            self.out = f"runs/{self.task}"
        if self.adapter_name is None:
            self.adapter_name = self.task
        if self.method not in self.METHODS:
            raise ConfigError(f"TrainConfig.method: expected one of {', '.join(self.METHODS)}, got "
                              f"{self.method!r}")
        if self.lr is None:
            self.lr = self.DEFAULT_LR[self.method]
        for name, rule in self.RULES.items():
            rule.check(f"TrainConfig.{name}", getattr(self, name), optional=name in self.OPTIONAL)
        for name, methods in self.ONLY_FOR.items():
            if self.method not in methods and getattr(self, name) != self.__dataclass_fields__[name].default:
                raise ConfigError(f"TrainConfig.{name}: only method {' or '.join(methods)} uses it, "
                                  f"not {self.method}")
        if self.preset is not None:
            from .model import PRESETS

            if self.preset not in PRESETS:
                raise ConfigError(f"TrainConfig.preset: expected one of {', '.join(PRESETS)}, got "
                                  f"{self.preset!r}")
            if self.non_linearity != "swish" or self.train_layer_norms:
                raise ConfigError(f"TrainConfig.preset {self.preset!r} sets the non-linearity and "
                                  "the LayerNorms itself: leave non_linearity and train_layer_norms alone")
        if self.non_linearity not in NON_LINEARITIES:
            raise ConfigError(f"TrainConfig.non_linearity: expected one of "
                              f"{', '.join(NON_LINEARITIES)}, got {self.non_linearity!r}")
        if self.device not in (None, "cpu", "gpu"):
            raise ConfigError(f"TrainConfig.device: expected 'cpu', 'gpu' or None, got {self.device!r}")
        if not isinstance(self.out, (str, Path)) or not str(self.out):
            raise ConfigError(f"TrainConfig.out: expected a folder path, got {self.out!r}")

    def to_dict(self):
        return asdict(self)


    def resolve_task(self):
        """The minadapt.tasks.Task this run trains on."""
        from .tasks import get_task, task_from_files

        if self.train_file is not None:
            return task_from_files(self.train_file, self.dev_file, self.text_column,
                                   self.text_pair_column, self.label_column, self.regression,
                                   name=self.task)
        return get_task(self.task)


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


class Interrupted(Exception):
    """Raised inside the loop after the step during which Ctrl-C or SIGTERM arrived, so the run can
    save and stop cleanly; hard=True: a second signal, raised wherever the loop was."""

    def __init__(self, hard: bool = False):
        super().__init__("interrupted")
        self.hard = hard


def encode_split(tokenizer, sentences):
    """Token ids of each sentence (unpadded) and their lengths."""
    ids = tokenizer.ids(sentences)
    return ids, np.array([len(s) for s in ids])


def encode_examples(tokenizer, examples):
    """Token ids and type ids of each example (text, or text pair), unpadded, and their lengths."""
    ids, types = tokenizer.ids_and_types(examples.texts, examples.pairs)
    return ids, types, np.array([len(s) for s in ids])


def as_examples(split):
    """A split as minadapt.tasks.Examples: given as such, or as (texts, labels) (tests, lessons)."""
    from .tasks import Examples

    if isinstance(split, Examples):
        return split
    texts, labels = split
    return Examples(list(texts), None, np.asarray(labels))


def task_outputs(model, ids, types=None, batch_size=128, adapter=None, runner=None):
    """The head's outputs on a whole split, in batches sorted by length: class probabilities
    (N, C), or the score (N, 1) of a regression head. runner: what computes the logits (a
    parallel.DataParallel; default: the model)."""
    from .tasks.batching import sequential_batches

    name = model.resolve(adapter)
    head = model.heads[name]
    logits = runner.logits if runner is not None else (
        lambda *b: model.logits(*b, adapter=name))
    lengths = np.array([len(s) for s in ids])
    out = np.zeros((len(ids), head.num_labels), np.float64)
    for idx in sequential_batches(len(ids), batch_size, lengths):
        b = model.tokenizer.pad([ids[i] for i in idx], None if types is None else [types[i] for i in idx])
        z = logits(b.input_ids, b.attention_mask, b.token_type_ids)
        out[idx] = to_numpy(z if head.regression else softmax(z))
    return out


def evaluate_task(model, task, ids, types, labels, adapter=None, runner=None, batch_size=128):
    """({metric: value} for each of task.metrics, outputs (see task_outputs)) on a whole split."""
    from .tasks import evaluate as score, predictions

    outputs = task_outputs(model, ids, types, batch_size, adapter, runner)
    return score(task, predictions(task, outputs), labels), outputs


def evaluate(model, ids, labels, batch_size=128, adapter=None, runner=None):
    """Accuracy and predicted probabilities of task `adapter` on a whole split, in batches sorted
    by length. runner: what computes the logits (a parallel.DataParallel; default: the model)."""
    from .tasks.batching import sequential_batches

    name = model.resolve(adapter)
    logits = runner.logits if runner is not None else (
        lambda *b: model.logits(*b, adapter=name))
    lengths = np.array([len(s) for s in ids])
    probs = np.zeros((len(ids), model.heads[name].num_labels), np.float64)
    for idx in sequential_batches(len(ids), batch_size, lengths):
        b = model.tokenizer.pad([ids[i] for i in idx])
        probs[idx] = to_numpy(softmax(logits(b.input_ids, b.attention_mask, b.token_type_ids)))
    acc = float((probs.argmax(1) == np.asarray(labels)).mean())
    return acc, probs


def softmax(z):
    from .backend import get_xp

    xp = get_xp(z)
    e = xp.exp(z - z.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def epoch_batches(lengths, batch_size, seed, epoch):
    """Epoch `epoch`'s batches, a pure function of (seed, epoch): resuming recomputes them."""
    from .tasks.batching import bucketed_batches

    return bucketed_batches(lengths, batch_size, np.random.default_rng([seed, epoch]))


# --- checkpoints ----------------------------------------------------------------------------------
def save_training_checkpoint(path, model, opt, step, cfg, history):
    state = opt.state_dict()
    tensors = {f"param/{k}": v for k, v in model.adapter_state(cfg.adapter_name).items()}
    check_finite(tensors, f"{path} (not written: the parameters in memory are not finite)")
    tensors.update({f"adam_m/{k}": v for k, v in state["m"].items()})
    tensors.update({f"adam_v/{k}": v for k, v in state["v"].items()})
    meta = {"format": "minadapt-checkpoint/1", "step": str(step), "config": json.dumps(cfg.to_dict()),
            "adam_step": json.dumps(state["step"]), "rng": json.dumps(rng_state(model.rng)),
            "history": json.dumps(history)}
    save_tensors(path, tensors, meta)


def load_training_checkpoint(path, model, opt, cfg):
    tensors, meta = read_safetensors(path)
    check_finite(tensors, path)
    if meta.get("format") != "minadapt-checkpoint/1":
        raise MinadaptError(f"{path}: not a minadapt training checkpoint")
    saved = json.loads(meta["config"])
    fields = TrainConfig.__dataclass_fields__  # a checkpoint from before a field existed had its default
    changed = [k for k in TrainConfig.RESUME_KEYS if saved.get(k, fields[k].default) != getattr(cfg, k)]
    if changed:
        raise MinadaptError(f"{path}: cannot resume with different settings: " + ", ".join(
            f"{k}={getattr(cfg, k)!r} (checkpoint has {saved.get(k)!r})" for k in changed))
    for k in model.trainable_names(cfg.adapter_name):
        model.params[k][...] = to_device(tensors[f"param/{k}"], model.device)
    opt.load_state_dict({"step": json.loads(meta["adam_step"]),
                         "m": {k: tensors[f"adam_m/{k}"] for k in opt.names},
                         "v": {k: tensors[f"adam_v/{k}"] for k in opt.names}}, model.params)
    set_rng_state(model.rng, json.loads(meta["rng"]))
    return int(meta["step"]), json.loads(meta["history"])


def rng_state(rng):
    if isinstance(rng, np.random.Generator):
        return rng.bit_generator.state
    return None  # CuPy's generator state is not saved: a resumed GPU run draws new dropout masks


def set_rng_state(rng, state):
    if state is not None and isinstance(rng, np.random.Generator):
        rng.bit_generator.state = state


# --- plots ----------------------------------------------------------------------------------------
def plot_history(history, path, title=""):
    """Training loss (per logged interval) and the task's first dev metric against the step, as a PNG.
    Uses a bare Figure (no pyplot): no display needed, and a notebook's backend is left alone."""
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
    fig.savefig(path, dpi=100)
    return path


# --- the output folder and its lock ---------------------------------------------------------------
LOCK_NAME = "train.lock"  # OUT/train.lock holds the pid of the run writing to OUT


def prepare_out(out) -> Path:
    """`out` as a folder this process can write to (created if missing), or a ConfigError naming
    it: checked before any data or model is loaded, so a typo costs nothing."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ConfigError(f"{out}: is a file, not a folder (--out names the folder for the adapter, "
                          "metrics and checkpoints)")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ConfigError(f"{out}: cannot create the --out folder: {e.strerror or e}") from None
    if not os.access(out, os.W_OK | os.X_OK):
        raise ConfigError(f"{out}: the --out folder is not writable")
    return out


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)  # signal 0: only asks whether the process exists
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, but belongs to someone else
        return True
    return True


@contextmanager
def out_lock(out: Path):
    """Hold OUT/train.lock (our pid inside) while training, so that a second run on the same OUT
    refuses instead of writing checkpoints over the first one's. A lock left by a process that no
    longer exists (killed with SIGKILL, a power cut) is taken over; the lock is removed at exit."""
    lock = Path(out) / LOCK_NAME
    for _ in range(2):
        try:
            fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            break
        except FileExistsError:
            try:
                pid = int(lock.read_text().split()[0])
            except (OSError, ValueError, IndexError):
                pid = None  # unreadable or half-written: treat as stale
            if pid is not None and _pid_alive(pid):
                raise ConfigError(f"{out}: another training run (pid {pid}) is writing to this --out "
                                  f"folder; wait for it to end or choose another --out (if no run "
                                  f"is using it, delete {lock})") from None
            print(f"minadapt: taking over {lock} (pid {pid} is not running)", file=sys.stderr)
            lock.unlink(missing_ok=True)
        except OSError as e:
            raise ConfigError(f"{out}: cannot write to the --out folder: {e.strerror or e}") from None
    else:
        raise ConfigError(f"{out}: could not take {lock}; is another run starting there?")
    with os.fdopen(fd, "w") as f:
        f.write(f"{os.getpid()}\n")
    try:
        yield lock
    finally:
        try:
            lock.unlink(missing_ok=True)
        except OSError:  # a filesystem gone read-only: the error that stopped the run is the one to say
            pass


def need_tokenizer(model) -> None:
    """A WeightsError naming the checkpoint folder when it had no tokenizer.json to load."""
    if model.tokenizer is None:
        folder = Path(model.backbone.get("path") or model.backbone.get("name") or "?").parent
        raise WeightsError(f"{folder}: no tokenizer.json in this checkpoint folder (it needs "
                           "config.json, model.safetensors and tokenizer.json; `minadapt download` "
                           "fetches all four files)")


# --- the loop -------------------------------------------------------------------------------------
def train(cfg: TrainConfig, model=None, data=None, resume: bool = False, callback=None,
          progress: bool = True) -> TrainResult:
    """Train an adapter and a head; returns the final dev accuracy and where the files went.

    `model` and `data` ({"train": (sentences, labels), "dev": ...}) may be given (tests, lessons);
    otherwise they are loaded from cfg.weights and cfg.data_dir. `callback(step, loss)` runs after
    every step (raise Interrupted inside it to simulate Ctrl-C). The --out folder is checked and
    locked before anything is loaded."""
    rank, size = launched()
    if size > 1:
        join_job()  # from here an error on any rank ends every rank (none waits for it forever)
    out = prepare_out(cfg.out)
    # rank 0 alone writes OUT, so it alone holds the lock; the others would find it taken
    with out_lock(out) if rank == 0 else nullcontext():
        return _train(cfg, model, data, resume, callback, progress)


def _train(cfg, model, data, resume, callback, progress) -> TrainResult:
    from .model import load_model
    from .tasks import load_task

    out = Path(cfg.out)  # made and locked by train()
    task = cfg.resolve_task()
    if data is None:
        data = load_task(task, cfg.data_dir)
    train_set, dev_set = as_examples(data["train"]), as_examples(data["dev"])
    if cfg.train_subset:
        n = cfg.train_subset
        train_set = type(train_set)(train_set.texts[:n], None if train_set.pairs is None else
                                    train_set.pairs[:n], train_set.labels[:n])
    if model is None:
        model = load_model(cfg.weights, dtype="float32", device=cfg.device, seed=cfg.seed)
    need_tokenizer(model)
    model.tokenizer.set_max_length(cfg.max_length)
    add_method(model, cfg, task)
    model.rng = model._new_rng(cfg.seed)

    train_ids, train_types, train_len = encode_examples(model.tokenizer, train_set)
    train_labels = train_set.labels
    dev_ids, dev_types, _ = encode_examples(model.tokenizer, dev_set)
    dev_labels = dev_set.labels
    steps_per_epoch = math.ceil(len(train_ids) / cfg.batch_size)
    total = cfg.total_steps(steps_per_epoch)
    warmup = int(cfg.warmup * total)
    trainable = model.trainable_names(cfg.adapter_name)
    opt = AdamW({k: model.params[k] for k in trainable}, lr=cfg.lr, weight_decay=cfg.weight_decay)
    # the batch cut over the CPU's cores (one shard, here, on a GPU or a single core), or over
    # the processes of `mpiexec -n N` (distributed.py): then rank 0 alone prints and writes files
    dp = data_parallel(model, adapter=cfg.adapter_name)
    main = dp.rank == 0

    ckpt_path, metrics_path = out / "checkpoint.safetensors", out / "metrics.jsonl"
    step, history = 0, []
    if resume:
        if not ckpt_path.is_file():
            raise MinadaptError(f"--resume: no checkpoint at {ckpt_path} (train once without "
                                "--resume, or point --out at the run's folder)")
        step, history = load_training_checkpoint(ckpt_path, model, opt, cfg)
        if main:
            print(f"resuming from {ckpt_path} at step {step}/{total}")
    if main:
        with open(metrics_path, "w") as f:  # rewritten from the checkpoint's history: no duplicates
            f.writelines(json.dumps(h) + "\n" for h in history)

    def log(record):
        history.append(record)
        if main:
            with open(metrics_path, "a") as f:
                f.write(json.dumps(record) + "\n")

    stop_requested = []  # a signal arrived: finish this step, then save and stop

    def on_signal(signum, frame):
        if stop_requested:  # the second one: stop now, mid-step
            raise Interrupted(hard=True)
        stop_requested.append(signum)
        if main:
            print(f"\n{signal.Signals(signum).name}: finishing step {step + 1}, then saving a "
                  "checkpoint (again to stop at once)", file=sys.stderr, flush=True)

    handled = (signal.SIGINT, signal.SIGTERM)
    old_handlers = [signal.signal(s, on_signal) for s in handled] if _main_thread() else None
    bar = Progress(total, desc="train", unit="step", initial=step) if progress and main else None
    t0, sentences, interval_loss, interval_n = time.perf_counter(), 0, 0.0, 0
    eval_seconds = 0.0  # kept out of the training speed
    epoch, batches = -1, None
    interrupted = None  # or "clean" (after a finished step) or "hard" (mid-step)
    try:
        while step < total:
            if step // steps_per_epoch != epoch:
                epoch = step // steps_per_epoch
                batches = epoch_batches(train_len, cfg.batch_size, cfg.seed, epoch)
            idx = batches[step % steps_per_epoch]
            b = model.tokenizer.pad([train_ids[i] for i in idx], [train_types[i] for i in idx])
            lr = lr_schedule(step, total, warmup, cfg.lr)
            loss, _, grads = dp.loss_and_grads(b.input_ids, b.attention_mask, b.token_type_ids,
                                               train_labels[idx], train=True)
            grad_norm = clip_grad_norm(grads, cfg.max_grad_norm)
            loss = float(loss)  # a host sync (a no-op on the CPU); the norm above already waited
            if not (math.isfinite(loss) and math.isfinite(grad_norm)):
                raise _diverged(step + 1, total, loss, grad_norm, cfg, ckpt_path)
            opt.step(model.params, grads, lr)
            step += 1
            sentences += len(idx)
            interval_loss, interval_n = interval_loss + loss, interval_n + 1
            if step % cfg.log_every == 0 or step == total:
                elapsed = time.perf_counter() - t0
                log({"kind": "train", "step": step, "epoch": round(step / steps_per_epoch, 4),
                     "loss": interval_loss / interval_n, "lr": lr, "grad_norm": grad_norm,
                     "sentences_per_s": sentences / (elapsed - eval_seconds), "elapsed_s": elapsed})
                interval_loss, interval_n = 0.0, 0
            if bar:
                speed = sentences / (time.perf_counter() - t0 - eval_seconds)
                bar.update(1, loss=loss, sent_s=round(speed, 1))
            if cfg.eval_every and step % cfg.eval_every == 0 and step < total:
                t_eval = time.perf_counter()
                metrics, _ = evaluate_task(model, task, dev_ids, dev_types, dev_labels,
                                           adapter=cfg.adapter_name, runner=dp)
                log(_eval_record(step, metrics))
                if bar:
                    bar.write(f"step {step}: dev {format_metrics(metrics)}")
                if main:
                    save_training_checkpoint(ckpt_path, model, opt, step, cfg, history)
                    plot_history(history, out / "training.png", run_title(task, cfg))
                eval_seconds += time.perf_counter() - t_eval
            if callback:
                callback(step, loss)
            if dp.any_rank(stop_requested):  # every rank stops after the same step
                raise Interrupted()
    except (KeyboardInterrupt, Interrupted) as e:
        interrupted = "hard" if getattr(e, "hard", False) or isinstance(e, KeyboardInterrupt) else "clean"
    finally:
        if bar:
            bar.close()
        if old_handlers is not None:
            for s, old in zip(handled, old_handlers):
                signal.signal(s, old)
    seconds = time.perf_counter() - t0
    if interrupted:
        dp.close()  # (an exception that escaped the loop leaves the workers to their finaliser)
    if interrupted == "hard":  # mid-step: the state in memory is half a step; keep the saved one
        saved = f"the last checkpoint ({ckpt_path}) is kept" if ckpt_path.is_file() else \
            "no checkpoint was saved yet"
        if main:
            print(f"\nstopped during step {step + 1}/{total}; {saved}")
        return TrainResult(float("nan"), step, seconds, ckpt_path, metrics_path, None, True)
    if interrupted and not main:
        return TrainResult(float("nan"), step, seconds, ckpt_path, metrics_path, None, True)
    if interrupted:
        save_training_checkpoint(ckpt_path, model, opt, step, cfg, history)
        print(f"\ninterrupted after step {step}/{total}; saved {ckpt_path}\n"
              f"continue with: minadapt train {cfg.task if cfg.train_file is None else ''} --out {out} "
              "--resume (and the same options)")
        return TrainResult(float("nan"), step, seconds, ckpt_path, metrics_path, None, True)

    metrics, _ = evaluate_task(model, task, dev_ids, dev_types, dev_labels,
                               adapter=cfg.adapter_name, runner=dp)
    dp.close()
    log(_eval_record(step, metrics))
    if not main:
        return TrainResult(metrics.get("accuracy", float("nan")), step, seconds,
                           out / "adapter.safetensors", metrics_path, None, dev_metrics=metrics)
    save_training_checkpoint(ckpt_path, model, opt, step, cfg, history)
    head = model.heads[cfg.adapter_name]
    adapter_path = model.save_adapter(out / "adapter.safetensors", adapter=cfg.adapter_name, extra_metadata={
        "training": cfg.to_dict(), "task": task_record(task, cfg), "dev_metrics": metrics,
        "dev_accuracy": metrics.get("accuracy", float("nan")), "steps": step,
        "labels": list(head.labels) if head.labels else None})
    plot = plot_history(history, out / "training.png", run_title(task, cfg))
    return TrainResult(metrics.get("accuracy", float("nan")), step, seconds, adapter_path,
                       metrics_path, plot, dev_metrics=metrics)


def add_method(model, cfg, task):
    """Give `model` task cfg.adapter_name, adapted by cfg.method, with its head (Model.add_*)."""
    name, seed = cfg.adapter_name, cfg.seed
    if cfg.method in ("houlsby", "pfeiffer"):
        model.add_adapter(name, cfg.bottleneck, cfg.non_linearity, seed=seed,
                          train_layer_norms=cfg.train_layer_norms, architecture=cfg.method,
                          preset=cfg.preset)
    elif cfg.method == "lora":
        model.add_lora(name, r=cfg.lora_rank, alpha=cfg.lora_alpha, dropout=cfg.lora_dropout, seed=seed)
    model.add_classification_head(name, num_labels=task.num_outputs, seed=seed,
                                  labels=task.names or None, regression=task.regression)
    if cfg.method == "full":  # after the head: add_full_finetuning adds the backbone to its names
        model.add_full_finetuning(name)
    # "probe": the head alone


def run_title(task, cfg) -> str:
    """The plot's title: the task and what trained."""
    size = {"houlsby": f", bottleneck {cfg.bottleneck}", "pfeiffer": f", bottleneck {cfg.bottleneck}",
            "lora": f", rank {cfg.lora_rank}"}.get(cfg.method, "")
    return f"{task.name}, {cfg.method}{size}"


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


def _main_thread():
    import threading

    return threading.current_thread() is threading.main_thread()
