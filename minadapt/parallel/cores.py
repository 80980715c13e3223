"""Data parallelism on a CPU's cores: each core runs the whole model on its own share of the batch.

A sentence never looks at another one (attention stays inside a sentence), so a batch of B
sentences can be cut into n shards that run forward and backward independently. The mean loss over
the batch is the shard losses weighted by their share, L = sum_s (B_s / B) L_s, so each shard's
backward starts from dL/dL_s = B_s / B and the gradients simply add up. This is the data
parallelism of multi-GPU training (DistributedDataParallel: one process per device, each its own
micro-batch, gradients summed), with cores for devices.

Why cut the batch rather than let BLAS use the cores: OpenBLAS threads only the matrix products.
Everything between them (GELU, softmax, LayerNorm, residual adds: a good share of a step, see
benchmarks/README.md's profile) would run on one core while the other waits. With shards every
line of the step runs on every core.

Why processes, not threads. NumPy releases Python's GIL inside each ufunc and matmul, so threads
do run shards side by side; but every NumPy call must take the GIL back to start and to return,
and a step makes thousands of calls, so with two busy threads the hand-overs add up
(benchmarks/README.md, "Shard workers are processes, not threads", times both). Processes share
no GIL. Shard 0 runs in the calling process; shards 1..n-1 in worker processes forked from it,
so each worker starts with the model already in its memory (the frozen backbone is never written,
so its pages stay shared with the parent). What changes between steps travels through shared
memory (`shared_empty`): the task's trainable parameters, which the parent writes and each worker
copies in before its shard, and one gradient slot per shard, which the caller sums. That is the packed trainable vector, the only thing a
data-parallel adapter step has to exchange: parallel/mpi.py, the same layer over MPI processes on
one machine or several, all-reduces it.

Shards are used on NumPy only (a GPU is one device), on Linux with OpenBLAS (its thread count can be
set to 1 while shards run; another BLAS would multiply threads), and for B >= 2.
$MINADAPT_THREADS sets the number of shards (default: the cores this process may run on).
"""
from __future__ import annotations

import mmap
import os
import signal
import traceback
import warnings
import weakref
from contextlib import contextmanager

import numpy as np

from ..packed import pack, unpack
from ..row_generators import RowGenerators

_OPENBLAS = []  # [found or None], looked up once
_INSIDE = [False]  # True while this process runs a shard (always, in a worker): shards do not nest


def cores() -> int:
    """The cores this process may run on (its CPU affinity), e.g. 2 on a 2-core machine."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def threads() -> int:
    """How many shards a batch is cut into on the CPU: $MINADAPT_THREADS, else cores()."""
    value = os.environ.get("MINADAPT_THREADS")
    if not value:
        return cores()
    if not value.strip().isdigit() or int(value) < 1:
        from ..errors import ConfigError

        raise ConfigError(f"MINADAPT_THREADS={value!r}: expected a whole number of threads, 1 or "
                          f"more (the shards a batch is cut into; unset: the {cores()} cores here)")
    return int(value)


def openblas():
    """The OpenBLAS NumPy loaded, as (library path, fn) with fn(name) -> that ctypes function
    (e.g. fn("set_num_threads")) under whichever symbol prefix this build uses; None for another
    BLAS, or where /proc/self/maps does not exist (not Linux)."""
    if not _OPENBLAS:
        _OPENBLAS.append(_find_openblas())
    return _OPENBLAS[0]


def _find_openblas():
    import ctypes

    try:
        with open("/proc/self/maps") as f:
            libs = sorted({line.split()[-1] for line in f if "openblas" in line.lower() and "/" in line})
    except OSError:
        return None
    for path in libs:
        try:
            lib = ctypes.CDLL(path)
        except OSError:
            continue
        for prefix, suffix in (("scipy_openblas_", "64_"), ("openblas_", "64_"), ("openblas_", "")):
            if hasattr(lib, f"{prefix}get_num_threads{suffix}"):
                return path, lambda name, lib=lib, pre=prefix, suf=suffix: getattr(lib, pre + name + suf)
    return None


@contextmanager
def one_blas_thread():
    """OpenBLAS at one thread inside the block, its thread count restored afterwards: each shard's
    products run single-threaded on its own core (OpenBLAS's threads would fight over the cores)."""
    blas = openblas()[1]
    before = blas("get_num_threads")()
    blas("set_num_threads")(1)
    try:
        yield
    finally:
        blas("set_num_threads")(before)


def shards(batch_size: int, xp=np) -> list[slice]:
    """The slices of the batch axis that run in parallel: threads() near-equal ones on NumPy with
    OpenBLAS, else one (the whole batch). Also one inside a running shard: shards do not nest."""
    n = min(threads(), batch_size)
    if xp is not np or n < 2 or openblas() is None or not hasattr(os, "fork") or _INSIDE[0]:
        return [slice(0, batch_size)]
    bounds = [batch_size * i // n for i in range(n + 1)]
    return [slice(a, b) for a, b in zip(bounds[:-1], bounds[1:])]


def child_rngs(rng, n: int) -> list:
    """n generators for n shards' dropout, seeded from `rng`'s own stream: the same parent state
    gives the same masks (a resumed run repeats them), and the parent moves on as it would after
    any draw. One shard uses `rng` itself."""
    if n == 1:
        return [rng]
    seeds = rng.integers(0, 2**63, size=n)
    return [np.random.default_rng(int(s)) for s in seeds]


# --- memory that forked workers share -------------------------------------------------------------
def shared_empty(shape, dtype) -> np.ndarray:
    """An uninitialised array in anonymous shared memory (mmap MAP_SHARED): a process forked later
    sees every change made to it, and its own changes are seen here. (Ordinary memory is copied on
    write after a fork: each process would go on with its own copy.)"""
    dtype = np.dtype(dtype)
    size = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    buffer = mmap.mmap(-1, max(size, 1))  # the array keeps the mapping alive, and frees it
    return np.frombuffer(buffer, dtype, count=size // dtype.itemsize).reshape(shape)


# --- the worker processes -------------------------------------------------------------------------
class WorkerError(RuntimeError):
    """A worker process died (killed, out of memory) while running a shard."""


class Workers:
    """n - 1 worker processes forked from this one; with the caller they run n shards at once.

    `map(target, fn, calls)` runs fn(target, *calls[i]) for shard i: shard 0 here,
    shard i >= 1 in worker i, whose `target` is its own forked copy of the object. Arguments and
    results travel pickled through a pipe, so they should be small (token ids, labels, losses,
    logits); each shard may also write into its row of `slots`, an (n, slot_size) array in shared
    memory, passed to the method as `slot=`. The workers know the target as it was at the fork:
    whoever changes it other than through shared memory must make new Workers (DataParallel's
    rule: one per task of a model as it stands)."""

    def __init__(self, target, n: int, slot_size: int = 0, dtype=np.float32):
        import multiprocessing

        self.n = n
        self.slots = shared_empty((n, slot_size), dtype)
        self._conns, self._procs = [], []
        context = multiprocessing.get_context("fork")
        for i in range(1, n):
            here, there = context.Pipe()
            proc = context.Process(target=_serve, args=(target, there, self.slots[i], [*self._conns, here]),
                                   name=f"minadapt-shard-{i}", daemon=True)
            with _quiet_fork():
                proc.start()
            there.close()
            self._conns.append(here)
            self._procs.append(proc)

    def map(self, target, fn, calls: list, slots: bool = False) -> list:
        """[fn(target, *args) for args in calls], shard 0 here, the others in the workers, all at
        once; with slots=True each also gets slot=its row of self.slots. `fn` is a function of the
        target's class (it travels to the workers by name, as pickle sends functions)."""
        assert 1 <= len(calls) <= self.n
        results, error = [None] * len(calls), None
        try:
            for conn, proc, args in zip(self._conns, self._procs, calls[1:]):
                try:
                    conn.send((fn, args, slots))
                except OSError:  # a broken pipe: the worker is gone
                    raise _died(proc) from None
            _INSIDE[0] = True
            try:
                with one_blas_thread():  # this process's products single-threaded, as the workers'
                    kwargs = {"slot": self.slots[0]} if slots else {}
                    results[0] = fn(target, *calls[0], **kwargs)
            except Exception as e:  # the workers' answers must still be read (below)
                error = e
            finally:
                _INSIDE[0] = False
            for i, conn in enumerate(self._conns[:len(calls) - 1], start=1):
                ok, value = _receive(conn, self._procs[i - 1])
                if ok:
                    results[i] = value
                elif error is None:
                    error = value
        except BaseException:  # Ctrl-C or a dead worker mid-exchange: the pipes are out of step
            self.close()
            raise
        if error is not None:
            raise error
        return results

    def close(self):
        """Stop the workers (they also stop by themselves when this process exits)."""
        for conn in self._conns:
            try:
                conn.send(None)
                conn.close()
            except OSError:
                pass
        for proc in self._procs:
            proc.join(timeout=5)
            if proc.is_alive():
                proc.kill()
                proc.join()
        self._conns, self._procs = [], []

    @property
    def pids(self) -> list[int]:
        """The worker processes' ids (none once closed)."""
        return [proc.pid for proc in self._procs]

    @property
    def alive(self) -> bool:
        return len(self._procs) == self.n - 1 and all(p.is_alive() for p in self._procs)


def _receive(conn, proc):
    try:
        status, value = conn.recv()
    except (EOFError, OSError):
        raise _died(proc) from None
    if status == "ok":
        return True, value
    error, text = value
    return False, _with_worker_traceback(error, text)


def _died(proc) -> WorkerError:
    proc.join(timeout=1)
    return WorkerError(f"shard worker process {proc.pid} died (exit code {proc.exitcode}); "
                       "MINADAPT_THREADS=1 runs each batch whole, in one process")


def _with_worker_traceback(error, text):
    try:
        error.add_note(f"in shard worker process:\n{text}")  # Python >= 3.11
    except AttributeError:
        pass
    return error


def _serve(target, conn, slot, parent_ends):
    """A worker's life: run the shard it is sent, send the result back, until told to stop (None)
    or until the parent is gone (the pipe reaches its end)."""
    for end in parent_ends:  # the parent's ends of this and the earlier workers' pipes: kept open
        end.close()  # here, they would hide the parent's exit (the pipe would never reach its end)
    # Ctrl-C in a terminal signals the whole process group. The parent decides when to stop (after
    # the step under way, see train.py), so a worker finishes what it was sent.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    openblas()[1]("set_num_threads")(1)
    _INSIDE[0] = True
    while True:
        try:
            message = conn.recv()
        except (EOFError, OSError):
            break
        if message is None:
            break
        fn, args, slots = message
        try:
            kwargs = {"slot": slot} if slots else {}
            reply = ("ok", fn(target, *args, **kwargs))
        except Exception as e:
            reply = ("error", (e, traceback.format_exc()))
        try:
            conn.send(reply)
        except Exception as e:  # a result that does not pickle
            conn.send(("error", (RuntimeError(f"shard result could not be sent: {e}"),
                                 traceback.format_exc())))
    os._exit(0)  # no atexit handlers, no flushing of the parent's copied buffers


@contextmanager
def _quiet_fork():
    """Around a fork: Python >= 3.12 warns that forking a multi-threaded process may deadlock the
    child (OpenBLAS keeps idle threads). The worker only runs NumPy code, single-threaded; OpenBLAS
    resets its thread pool in a forked child. And `tokenizers` prints a warning in a child forked
    after it has used its thread pool, unless TOKENIZERS_PARALLELISM is set; the worker never
    tokenises, so the child is told it is configured (the parent's setting is restored)."""
    before = os.environ.get("TOKENIZERS_PARALLELISM")
    os.environ["TOKENIZERS_PARALLELISM"] = before or "false"
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=r".*fork\(\) may lead to deadlocks",
                                    category=DeprecationWarning)
            yield
    finally:
        if before is None:
            os.environ.pop("TOKENIZERS_PARALLELISM", None)


# --- the data-parallel layer ----------------------------------------------------------------------
class DataParallel:
    """Model.loss_and_grads, logits and encode for one task, with each batch cut over the cores.

        dp = DataParallel(model, adapter="sst2")
        loss, logits, grads = dp.loss_and_grads(ids, mask, types, labels, train=True)
        dp.close()                                       # or use it as a context manager

    The results equal the model's own (up to the rounding of summing the shards' gradients). On
    the CPU, dropout draws each sentence's masks from its own generator (row_generators.py), so a
    training run's masks do not depend on the number of shards, nor on the processes of
    parallel/mpi.py: the same seed gives the same run on 1, 2 or 4 of either. Made for one task of a model as it stands: the task's
    parameters may change (they are sent to the workers before every call), but a model given
    another adapter, head or trainable set needs a new DataParallel. With one shard (one core, a
    GPU, a batch of one) everything runs here, in this process."""

    rank, world_size = 0, 1  # one process (mpi.MPIDataParallel: one of several)

    def __init__(self, model, adapter: str | None = None, n: int | None = None):
        self.model = model
        self.name = model.resolve(adapter)
        self.n = n or threads()
        self.names = sorted(model.trainable_names(self.name))
        self.shapes = {k: model.params[k].shape for k in self.names}
        self.size = sum(model.params[k].size for k in self.names)
        self._workers = None
        self._finalizer = None

    def _shards(self, batch_size):
        return shards(batch_size, self.model.xp) if self.n > 1 else [slice(0, batch_size)]

    def _pool(self) -> Workers:
        if self._workers is None or not self._workers.alive:
            self.close()
            self._params = shared_empty(max(self.size, 1), self.model.dtype)
            self._workers = Workers(_Shard(self.model, self.name, self._params, self.shapes),
                                    self.n, self.size, self.model.dtype)
            self._finalizer = weakref.finalize(self, self._workers.close)
        return self._workers

    def _map(self, fn, batch, extra, rng=None, slots=False):
        """Run fn (a _Shard function) over the shards of `batch` (a tuple of arrays, None kept), at once."""
        B = batch[0].shape[0]
        parts = self._shards(B)
        if rng is None:
            rngs = [None] * len(parts)
        elif self.model.xp is np:  # each sentence's masks from its own generator: any cut, one run
            rows = RowGenerators.draw(rng, B)
            rngs = [rows[s] for s in parts]
        else:  # a GPU: one shard, the generator itself
            rngs = child_rngs(rng, len(parts))
        calls = [(i > 0, *(None if a is None else a[s] for a in batch), (s.stop - s.start) / B, r,
                  *extra) for i, (s, r) in enumerate(zip(parts, rngs))]
        if len(parts) == 1:
            here = _Shard(self.model, self.name, None, self.shapes)
            slot = self.model.xp.empty(self.size, self.model.dtype) if slots else None
            return [fn(here, *calls[0], **({"slot": slot} if slots else {}))], slot
        workers = self._pool()
        if self.size:  # the task's parameters as they are now, for the workers to copy in
            pack(self.model.params, self.names, out=self._params)
        results = workers.map(_Shard(self.model, self.name, None, self.shapes), fn, calls, slots)
        return results, workers.slots[:len(parts)].sum(axis=0) if slots else None

    def loss_and_grads(self, input_ids, attention_mask, token_type_ids, labels, train=True, rng=None):
        """As Model.loss_and_grads for this task. Returns (loss, logits (B, C), grads)."""
        model = self.model
        batch = model.inputs(input_ids, attention_mask, token_type_ids, labels)
        rng = (rng if rng is not None else model.rng) if train else None
        results, vector = self._map(_Shard.loss_and_grads, batch, (train,), rng, slots=True)
        loss = sum(r[0] for r in results[1:]) + results[0][0]
        logits = results[0][1] if len(results) == 1 else model.xp.concatenate([r[1] for r in results])
        return loss, logits, unpack(vector, self.shapes) if self.size else {}

    def logits(self, input_ids, attention_mask, token_type_ids=None):
        """As Model.logits for this task."""
        results, _ = self._map(_Shard.logits, self.model.inputs(input_ids, attention_mask, token_type_ids), ())
        return results[0] if len(results) == 1 else self.model.xp.concatenate(results)

    def encode(self, input_ids, attention_mask, token_type_ids=None):
        """As Model.encode for this task."""
        results, _ = self._map(_Shard.encode, self.model.inputs(input_ids, attention_mask, token_type_ids), ())
        return results[0] if len(results) == 1 else self.model.xp.concatenate(results)

    def any_rank(self, flag: bool) -> bool:
        """`flag` itself: one process has no others to agree with (see MPIDataParallel)."""
        return bool(flag)

    @property
    def pids(self) -> list[int]:
        """The worker processes' ids ([] before the first sharded call)."""
        return self._workers.pids if self._workers is not None else []

    def close(self):
        """Stop the worker processes (a later call forks new ones)."""
        if self._finalizer is not None:
            self._finalizer()
        self._workers, self._finalizer = None, None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class _Shard:
    """What one shard runs: the model's call on its rows. In a worker (sync=True) the task's
    parameters are first copied in from the shared vector the parent wrote."""

    def __init__(self, model, name, shared, shapes):
        self.model, self.name, self.shared, self.shapes = model, name, shared, shapes

    def _sync(self, sync):
        if sync and self.shapes:
            for k, v in unpack(self.shared, self.shapes).items():
                self.model.params[k][...] = v

    def loss_and_grads(self, sync, ids, mask, types, labels, weight, rng, train, slot):
        """Writes weight * the gradients into `slot` (packed in sorted name order); returns
        (weight * loss, logits): the shards' weighted losses and gradients add up to the batch's."""
        self._sync(sync)
        loss, logits, grads = self.model.loss_and_grads(ids, mask, types, labels, adapter=self.name,
                                                        train=train, rng=rng)
        if grads:
            pack(grads, sorted(grads), out=slot)
            slot *= slot.dtype.type(weight)
        return loss * weight, logits

    def logits(self, sync, ids, mask, types, weight, rng):
        self._sync(sync)
        return self.model.logits(ids, mask, types, adapter=self.name)

    def encode(self, sync, ids, mask, types, weight, rng):
        self._sync(sync)
        return self.model.encode(ids, mask, types, adapter=self.name)
