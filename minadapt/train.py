"""Training an adapter on SST-2: the loop, evaluation, checkpoints, metrics and plots.

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
import signal
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from .backend import to_device, to_numpy
from .errors import MinadaptError
from .optim import AdamW, clip_grad_norm, lr_schedule
from .distributed import data_parallel
from .progress import Progress
from .weights import read_safetensors, save_tensors


@dataclass
class TrainConfig:
    data_dir: str | None = None  # SST-2 folder (train.tsv, dev.tsv); else $MINADAPT_DATA/sst2, else download
    weights: str | None = None  # checkpoint folder; None: weights/all-MiniLM-L6-v2, fetched if missing
    out: str = "runs/sst2"  # where the adapter, metrics.jsonl, the plot and checkpoints go
    adapter_name: str = "sst2"
    bottleneck: int = 64  # m, the adapter's width
    non_linearity: str = "swish"
    train_layer_norms: bool = False
    epochs: float = 1.25  # passes over the training set (fractions allowed)
    max_steps: int | None = None  # stop after this many steps (overrides epochs)
    batch_size: int = 32
    lr: float = 2e-3  # peak learning rate after warm-up
    warmup: float = 0.06  # fraction of the steps spent warming up linearly from 0
    weight_decay: float = 0.01
    max_grad_norm: float = 1.0
    eval_every: int = 500  # steps between dev evaluations (and checkpoints); 0: only at the end
    train_subset: int | None = None  # use only the first N training sentences (quick tries, lessons)
    seed: int = 0
    device: str | None = None  # cpu or gpu
    log_every: int = 50  # steps between metrics.jsonl lines

    # what must match for --resume to continue the same run
    RESUME_KEYS = ("bottleneck", "non_linearity", "train_layer_norms", "epochs", "max_steps",
                   "batch_size", "lr", "warmup", "weight_decay", "max_grad_norm", "train_subset",
                   "seed", "adapter_name")

    def to_dict(self):
        return asdict(self)


@dataclass
class TrainResult:
    dev_accuracy: float
    steps: int
    seconds: float
    adapter_path: Path
    metrics_path: Path
    plot_path: Path | None
    interrupted: bool = False


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


def evaluate(model, ids, labels, batch_size=128, adapter=None, runner=None):
    """Accuracy and predicted probabilities of task `adapter` on a whole split, in batches sorted
    by length. runner: what computes the logits (a parallel.DataParallel; default: the model)."""
    from .data.sst2 import sequential_batches

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
    from .data.sst2 import bucketed_batches

    return bucketed_batches(lengths, batch_size, np.random.default_rng([seed, epoch]))


# --- checkpoints ----------------------------------------------------------------------------------
def save_training_checkpoint(path, model, opt, step, cfg, history):
    state = opt.state_dict()
    tensors = {f"param/{k}": v for k, v in model.adapter_state(cfg.adapter_name).items()}
    tensors.update({f"adam_m/{k}": v for k, v in state["m"].items()})
    tensors.update({f"adam_v/{k}": v for k, v in state["v"].items()})
    meta = {"format": "minadapt-checkpoint/1", "step": str(step), "config": json.dumps(cfg.to_dict()),
            "adam_step": json.dumps(state["step"]), "rng": json.dumps(rng_state(model.rng)),
            "history": json.dumps(history)}
    save_tensors(path, tensors, meta)


def load_training_checkpoint(path, model, opt, cfg):
    tensors, meta = read_safetensors(path)
    if meta.get("format") != "minadapt-checkpoint/1":
        raise MinadaptError(f"{path}: not a minadapt training checkpoint")
    saved = json.loads(meta["config"])
    changed = [k for k in TrainConfig.RESUME_KEYS if saved.get(k) != getattr(cfg, k)]
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
    """Training loss (per logged interval) and dev accuracy against the step, as a PNG.
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
    ax2.plot([h["step"] for h in dev], [100 * h["dev_accuracy"] for h in dev], "o-",
             color="tab:red")
    ax2.set_ylabel("dev accuracy (%)", color="tab:red")
    ax1.set_title(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    return path


# --- the loop -------------------------------------------------------------------------------------
def train(cfg: TrainConfig, model=None, data=None, resume: bool = False, callback=None,
          progress: bool = True) -> TrainResult:
    """Train an adapter and a head; returns the final dev accuracy and where the files went.

    `model` and `data` ({"train": (sentences, labels), "dev": ...}) may be given (tests, lessons);
    otherwise they are loaded from cfg.weights and cfg.data_dir. `callback(step, loss)` runs after
    every step (raise Interrupted inside it to simulate Ctrl-C)."""
    from .data.sst2 import load_sst2
    from .model import load_model

    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    if data is None:
        data = load_sst2(cfg.data_dir)
    train_sents, train_labels = data["train"]
    if cfg.train_subset:
        train_sents, train_labels = train_sents[:cfg.train_subset], train_labels[:cfg.train_subset]
    if model is None:
        model = load_model(cfg.weights, dtype="float32", device=cfg.device, seed=cfg.seed)
    model.add_adapter(cfg.adapter_name, cfg.bottleneck, cfg.non_linearity, seed=cfg.seed,
                      train_layer_norms=cfg.train_layer_norms)
    model.add_classification_head(cfg.adapter_name, num_labels=2, seed=cfg.seed)
    model.rng = model._new_rng(cfg.seed)

    train_ids, train_len = encode_split(model.tokenizer, train_sents)
    dev_ids, _ = encode_split(model.tokenizer, data["dev"][0])
    dev_labels = np.asarray(data["dev"][1])
    steps_per_epoch = math.ceil(len(train_ids) / cfg.batch_size)
    total = cfg.max_steps or max(1, round(cfg.epochs * steps_per_epoch))
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
            b = model.tokenizer.pad([train_ids[i] for i in idx])
            lr = lr_schedule(step, total, warmup, cfg.lr)
            loss, _, grads = dp.loss_and_grads(b.input_ids, b.attention_mask, b.token_type_ids,
                                               train_labels[idx], train=True)
            grad_norm = clip_grad_norm(grads, cfg.max_grad_norm)
            opt.step(model.params, grads, lr)
            step += 1
            sentences += len(idx)
            loss = float(loss)  # the one host sync per step (a no-op on the CPU)
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
                acc, _ = evaluate(model, dev_ids, dev_labels, adapter=cfg.adapter_name, runner=dp)
                log({"kind": "eval", "step": step, "dev_accuracy": acc})
                if bar:
                    bar.write(f"step {step}: dev accuracy {100 * acc:.2f}%")
                if main:
                    save_training_checkpoint(ckpt_path, model, opt, step, cfg, history)
                    plot_history(history, out / "training.png", f"SST-2, bottleneck {cfg.bottleneck}")
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
              f"continue with: minadapt train sst2 --out {out} --resume (and the same options)")
        return TrainResult(float("nan"), step, seconds, ckpt_path, metrics_path, None, True)

    acc, _ = evaluate(model, dev_ids, dev_labels, adapter=cfg.adapter_name, runner=dp)
    dp.close()
    log({"kind": "eval", "step": step, "dev_accuracy": acc})
    if not main:
        return TrainResult(acc, step, seconds, out / "adapter.safetensors", metrics_path, None)
    save_training_checkpoint(ckpt_path, model, opt, step, cfg, history)
    adapter_path = model.save_adapter(out / "adapter.safetensors", adapter=cfg.adapter_name, extra_metadata={
        "training": cfg.to_dict(), "dev_accuracy": acc, "steps": step})
    plot = plot_history(history, out / "training.png", f"SST-2, bottleneck {cfg.bottleneck}")
    return TrainResult(acc, step, seconds, adapter_path, metrics_path, plot)


def _main_thread():
    import threading

    return threading.current_thread() is threading.main_thread()
