"""A training run's folder: its lock, its checkpoint, and stopping cleanly on a signal.

Everything a run needs to continue lives in `OUT/checkpoint.safetensors`: the trainable
parameters, AdamW's moments, the step, the state of the dropout generator and the metrics so far.
The order of the batches is not stored: epoch e's order is drawn from a generator seeded with
(seed, e), so a resumed run recomputes it. That is why `--resume` ends with exactly the numbers of
a run that was never interrupted.

Ctrl-C (or SIGTERM) lets the step under way finish, then the loop saves a checkpoint and exits
(`stop_requests`); a second Ctrl-C stops at once, keeping the last saved checkpoint. Stopping
mid-step would leave a half-drawn dropout generator, or a half-applied AdamW update.
"""
from __future__ import annotations

import json
import os
import signal
import sys
import threading
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from .backend import to_device
from .errors import ConfigError, MinadaptError
from .io.weights import check_finite, read_safetensors, save_tensors

FORMAT = "minadapt-checkpoint/1"


# --- the checkpoint --------------------------------------------------------------------------------
def save_training_checkpoint(path, model, opt, step, cfg, history):
    state = opt.state_dict()
    tensors = {f"param/{k}": v for k, v in model.adapter_state(cfg.adapter_name).items()}
    check_finite(tensors, f"{path} (not written: the parameters in memory are not finite)")
    tensors.update({f"adam_m/{k}": v for k, v in state["m"].items()})
    tensors.update({f"adam_v/{k}": v for k, v in state["v"].items()})
    meta = {"format": FORMAT, "step": str(step), "config": json.dumps(cfg.to_dict()),
            "adam_step": json.dumps(state["step"]), "rng": json.dumps(rng_state(model.rng)),
            "history": json.dumps(history)}
    save_tensors(path, tensors, meta)


def load_training_checkpoint(path, model, opt, cfg):
    tensors, meta = read_safetensors(path)
    check_finite(tensors, path)
    if meta.get("format") != FORMAT:
        raise MinadaptError(f"{path}: not a minadapt training checkpoint")
    saved = json.loads(meta["config"])
    fields = type(cfg).__dataclass_fields__  # a checkpoint from before a field existed had its default
    changed = [k for k in cfg.RESUME_KEYS if saved.get(k, fields[k].default) != getattr(cfg, k)]
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


# --- the output folder and its lock ----------------------------------------------------------------
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


# --- interruption ----------------------------------------------------------------------------------
class Interrupted(Exception):
    """Raised inside the loop after the step during which Ctrl-C or SIGTERM arrived, so the run can
    save and stop cleanly; hard=True: a second signal, raised wherever the loop was."""

    def __init__(self, hard: bool = False):
        super().__init__("interrupted")
        self.hard = hard


@contextmanager
def stop_requests(say=None):
    """Within it, Ctrl-C and SIGTERM do not stop the program: they are recorded in the list it
    yields, which the loop checks after each step. A second signal raises Interrupted(hard=True)
    at once. say(signal name): what to tell the user at the first one. Outside the main thread
    (where signals cannot be caught) the list stays empty."""
    requested = []

    def on_signal(signum, frame):
        if requested:  # the second one: stop now, mid-step
            raise Interrupted(hard=True)
        requested.append(signum)
        if say is not None:
            say(signal.Signals(signum).name)

    handled = (signal.SIGINT, signal.SIGTERM)
    main = threading.current_thread() is threading.main_thread()
    old = [signal.signal(s, on_signal) for s in handled] if main else None
    try:
        yield requested
    finally:
        if old is not None:
            for s, handler in zip(handled, old):
                signal.signal(s, handler)
