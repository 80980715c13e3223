"""Data parallelism over MPI processes, on one machine or several: `mpiexec -n N minadapt train ...`.

Each of the N processes (ranks) holds the whole model and takes its rows of every global batch:
rank r computes rows [B r / N, B (r+1) / N). As in parallel/cores.py, the batch's mean loss is the
ranks' losses weighted by their share, L = sum_r (B_r / B) L_r, so each rank's gradients are
weighted by B_r / B and one Allreduce (a sum) gives every rank the batch's gradient. Every rank
then takes the same clipping and the same AdamW step on the same numbers, so their parameters
stay identical without ever being sent. What crosses the wire each step is the task's packed
trainable vector (packed.py): for Houlsby adapters of bottleneck 64 on MiniLM-L6 and a 2-label
head, about 0.74 M float32s, 3 MB; the frozen backbone (22 M) never moves.

Results do not depend on N: dropout draws each sentence's masks from its own generator, seeded
from (the run's generator, the step, the global row) (row_generators.py); a checkpoint holds no
trace of N. Rank 0 alone prints and writes files (train.py asks `dp.rank`); evaluation splits the
rows the same way and gathers the logits on every rank.

    dp = data_parallel(model, adapter="sst2")     # MPIDataParallel under mpiexec -n N > 1,
                                                  # else parallel.DataParallel (the CPU's cores)
    loss, logits, grads = dp.loss_and_grads(ids, mask, types, labels, train=True)

One rank per core: a rank runs its rows in its own process (no shards inside it) with OpenBLAS
at (cores of the machine) / (ranks on it) threads.

Faults. A rank that dies (killed, out of memory) makes mpiexec end the others (MPI's errors are
fatal; MPICH's mpiexec prints "BAD TERMINATION ... KILLED BY SIGNAL"). A rank that fails with
an error would leave the others waiting in their next Allreduce, and itself waiting in
MPI_Finalize: so an error on any rank aborts the whole job (`abort`, and an excepthook for
uncaught exceptions). Ctrl-C on mpiexec reaches every rank; they agree (`any_rank`) to stop after
the same step, and rank 0 saves the checkpoint.

A rank that stops answering (SIGSTOP, a hung driver, a lost machine) neither dies nor fails: the
others would wait in their next collective forever. So every collective here is nonblocking, and
a rank waits for it at most MINADAPT_MPI_TIMEOUT seconds (default 60; longer than any step's
imbalance between ranks), then says so and aborts the job (mpiexec ends every rank, the stopped
one too). While a rank waits it runs Python's signal handlers (a blocking MPI call would not), and
once SIGINT or SIGTERM has come the wait is cut to SIGNAL_GRACE_S: Ctrl-C on a job with a stuck
rank ends it within seconds.
"""
from __future__ import annotations

import os
import signal
import sys
import time

import numpy as np

from ..packed import pack, unpack
from ..row_generators import RowGenerators

# (rank, size) as each MPI implementation's launcher tells its processes, read without MPI itself
_ENV = (("PMI_RANK", "PMI_SIZE"),  # MPICH (hydra), Intel MPI
        ("OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_SIZE"),  # Open MPI
        ("PMIX_RANK", "PMIX_SIZE"))  # PMIx launchers (srun --mpi=pmix)


TIMEOUT_S = 60.0  # default of MINADAPT_MPI_TIMEOUT: seconds a rank waits in one collective
SIGNAL_GRACE_S = 10.0  # after SIGINT / SIGTERM, seconds a rank still waits for the others


def collective_timeout() -> float:
    """MINADAPT_MPI_TIMEOUT (seconds, > 0), or TIMEOUT_S."""
    text = os.environ.get("MINADAPT_MPI_TIMEOUT", "")
    if not text:
        return TIMEOUT_S
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not 0 < value < float("inf"):
        from ..errors import ConfigError

        raise ConfigError(f"MINADAPT_MPI_TIMEOUT={text!r}: expected seconds, a number > 0")
    return value


def wait(request, comm, what: str, timeout: float | None = None) -> None:
    """Wait for nonblocking MPI `request`; after `timeout` seconds (MINADAPT_MPI_TIMEOUT), or
    SIGNAL_GRACE_S after a SIGINT / SIGTERM, say which rank gave up waiting and abort the job."""
    timeout = collective_timeout() if timeout is None else timeout
    start = time.monotonic()
    signalled = []
    previous = {}
    if _main_thread():  # note a signal, then let the handler in place do what it does
        def note(signum, frame):
            signalled.append(time.monotonic())
            handler = previous[signum]
            if callable(handler):
                handler(signum, frame)
            elif handler == signal.SIG_DFL and signum == signal.SIGINT:
                raise KeyboardInterrupt
        for s in (signal.SIGINT, signal.SIGTERM):
            previous[s] = signal.signal(s, note)
    try:
        pause = 0.0
        while not request.Test():
            now = time.monotonic()
            late = now - start > timeout
            if signalled and now - signalled[0] > SIGNAL_GRACE_S:
                late, timeout = True, SIGNAL_GRACE_S
            if late:
                print(f"minadapt: rank {comm.Get_rank()} of {comm.Get_size()}: no answer from the "
                      f"other ranks in {what} within {timeout:g} s (a rank stopped, hung or lost): "
                      "ending the job (MINADAPT_MPI_TIMEOUT sets the limit)",
                      file=sys.stderr, flush=True)
                _let_mpiexec_forward_output()
                comm.Abort(3)
            time.sleep(pause)  # a short spin, then at most 2 ms between tests
            pause = min(0.002, pause + 0.0001)
    finally:
        for s, h in previous.items():
            signal.signal(s, h)


def _main_thread() -> bool:
    import threading

    return threading.current_thread() is threading.main_thread()


def launched() -> tuple[int, int]:
    """(rank, size) from the environment mpiexec gives its processes; (0, 1) when not under MPI.
    mpi4py is not imported: a plain run never loads MPI."""
    for rank, size in _ENV:
        if os.environ.get(size):
            return int(os.environ.get(rank, 0)), int(os.environ[size])
    return 0, 1


def data_parallel(model, adapter: str | None = None):
    """The data-parallel runner for this process: MPIDataParallel (NCCLDataParallel for a model on
    a GPU) when started by mpiexec with more than one process, else parallel.DataParallel (the
    batch cut over this machine's cores)."""
    if launched()[1] > 1:
        return MPIDataParallel(model, adapter) if model.xp is np else NCCLDataParallel(model, adapter)
    from .cores import DataParallel

    return DataParallel(model, adapter=adapter)


def _mpi():
    try:
        from mpi4py import MPI
    except ImportError:
        from ..errors import ConfigError

        raise ConfigError("started by mpiexec with several processes, but mpi4py is not installed: "
                          "pip install 'minadapt[mpi]'") from None
    return MPI


def join_job():
    """Start MPI in this rank and make an uncaught exception end the whole job. Called before
    anything that can fail on one rank alone (the --out lock, reading data): a rank that failed
    before MPI started would leave the others waiting for it in MPI_Init."""
    _abort_on_uncaught_exceptions(_mpi().COMM_WORLD)


def rows(batch_size: int, rank: int, size: int) -> slice:
    """Rank `rank`'s rows of a global batch: near-equal contiguous slices, in rank order."""
    return slice(batch_size * rank // size, batch_size * (rank + 1) // size)


class MPIDataParallel:
    """parallel.DataParallel's interface (loss_and_grads, logits, encode, close, a context
    manager) over the processes of an MPI communicator (default: all of them). Every rank calls
    every method with the same global batch; each computes its rows, and every rank gets the
    whole result."""

    def __init__(self, model, adapter: str | None = None, comm=None):
        MPI = _mpi()
        self.MPI = MPI
        self.comm = comm if comm is not None else MPI.COMM_WORLD
        self.rank, self.world_size = self.comm.Get_rank(), self.comm.Get_size()
        self.model = model
        self.name = model.resolve(adapter)
        self.names = sorted(model.trainable_names(self.name))
        self.shapes = {k: model.params[k].shape for k in self.names}
        self.size = sum(model.params[k].size for k in self.names)
        if model.xp is not np:
            from ..errors import ConfigError

            raise ConfigError("MPIDataParallel runs on the CPU; on GPUs use NCCLDataParallel")
        _blas_threads_per_rank(self.comm)
        _abort_on_uncaught_exceptions(self.comm)

    def _rows(self, batch_size):
        return rows(batch_size, self.rank, self.world_size)

    def loss_and_grads(self, input_ids, attention_mask, token_type_ids, labels, train=True, rng=None):
        """As Model.loss_and_grads for this task, the batch split over the ranks. Returns (loss,
        logits (B, C), grads), the same on every rank."""
        model = self.model
        ids, mask, types, labels = model.inputs(input_ids, attention_mask, token_type_ids, labels)
        B, C, P = ids.shape[0], model.heads[self.name].num_labels, self.size
        s = self._rows(B)
        rng = (rng if rng is not None else model.rng) if train else None
        row_rng = RowGenerators.draw(rng, B, s) if train else None  # every rank draws all B seeds
        # one vector, one Allreduce: [gradients (P) | loss (1) | logits (B C), zero off our rows]
        buffer = np.zeros(P + 1 + B * C, model.dtype)
        if s.stop > s.start:
            loss, logits, grads = model.loss_and_grads(ids[s], mask[s], types[s], labels[s],
                                                       adapter=self.name, train=train, rng=row_rng)
            weight = model.dtype.type((s.stop - s.start) / B)
            if P:
                pack(grads, self.names, out=buffer[:P])
                buffer[:P] *= weight
            buffer[P] = loss * weight
            buffer[P + 1 + s.start * C:P + 1 + s.stop * C] = logits.reshape(-1)
        wait(self.comm.Iallreduce(self.MPI.IN_PLACE, buffer, op=self.MPI.SUM), self.comm,
             "the gradients' Allreduce")
        grads = unpack(buffer[:P], self.shapes) if P else {}
        return buffer[P].copy(), buffer[P + 1:].reshape(B, C), grads

    def _gathered(self, method, input_ids, attention_mask, token_type_ids):
        """getattr(model, method) on this rank's rows, the rows of all ranks gathered on each."""
        model = self.model
        ids, mask, types = model.inputs(input_ids, attention_mask, token_type_ids)
        B = ids.shape[0]
        s = self._rows(B)
        part = getattr(model, method)(ids[s], mask[s], None if types is None else types[s],
                                      adapter=self.name) if s.stop > s.start else None
        mine = np.zeros(4, np.int64)  # [has rows, dims of a row, its sizes (at most 2)]
        if part is not None:
            mine[0], mine[1] = 1, part.ndim - 1
            mine[2:1 + part.ndim] = part.shape[1:]
        shapes = np.empty((self.world_size, 4), np.int64)  # every rank's, so one with no rows learns it
        wait(self.comm.Iallgather(mine, shapes), self.comm, f"{method}'s row shapes")
        r = next(r for r in shapes if r[0])
        row_shape = tuple(int(d) for d in r[2:2 + r[1]])
        if part is None:
            part = np.empty((0, *row_shape), model.dtype)
        per_row = int(np.prod(row_shape))
        counts = [(rows(B, r, self.world_size).stop - rows(B, r, self.world_size).start) * per_row
                  for r in range(self.world_size)]
        out = np.empty((B, *row_shape), model.dtype)
        wait(self.comm.Iallgatherv(np.ascontiguousarray(part), [out, counts]), self.comm,
             f"{method}'s Allgatherv")
        return out

    def logits(self, input_ids, attention_mask, token_type_ids=None):
        """As Model.logits for this task; every rank gets all B rows."""
        return self._gathered("logits", input_ids, attention_mask, token_type_ids)

    def encode(self, input_ids, attention_mask, token_type_ids=None):
        """As Model.encode for this task; every rank gets all B rows."""
        return self._gathered("encode", input_ids, attention_mask, token_type_ids)

    def any_rank(self, flag: bool) -> bool:
        """True on every rank when `flag` is true on any (e.g. a Ctrl-C seen by one rank first):
        all ranks stop after the same step."""
        flags = np.array([int(bool(flag))], np.int64)
        wait(self.comm.Iallreduce(self.MPI.IN_PLACE, flags, op=self.MPI.MAX), self.comm,
             "the agreement to stop")
        return bool(flags[0])

    def close(self):
        """Nothing to stop: the ranks live as long as the job."""

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def _blas_threads_per_rank(comm):
    """OpenBLAS at (this process's cores) / (ranks on this machine) threads, at least 1: ranks on
    one machine would otherwise each start a thread per core and fight over them."""
    from .cores import cores, openblas

    blas = openblas()
    if blas is None:
        return
    local = comm.Split_type(_mpi().COMM_TYPE_SHARED)
    blas[1]("set_num_threads")(max(1, cores() // local.Get_size()))
    local.Free()


def _abort_on_uncaught_exceptions(comm):
    """An uncaught exception on one rank ends the job (the others would wait for it forever)."""
    previous = sys.excepthook
    if getattr(previous, "_minadapt_abort", False):
        return

    def hook(kind, value, tb):
        previous(kind, value, tb)
        _let_mpiexec_forward_output()
        comm.Abort(1)

    hook._minadapt_abort = True
    sys.excepthook = hook


def abort(code: int = 1):
    """Under mpiexec with several processes: end the whole job with `code` (after a rank's own
    error, which the other ranks cannot see); elsewhere nothing."""
    if launched()[1] > 1:
        try:
            MPI = _mpi()  # started here when the error came before MPI did
        except Exception:
            return
        _let_mpiexec_forward_output()
        MPI.COMM_WORLD.Abort(code)


def _let_mpiexec_forward_output():
    """Flush, and give mpiexec a moment to pass this rank's last lines on: Abort tears the job
    down at once, and MPICH's mpiexec can drop what it had not yet forwarded (the error message)."""
    sys.stdout.flush()
    sys.stderr.flush()
    time.sleep(0.5)


# --- GPUs: the same layer over NCCL ---------------------------------------------------------------
class NCCLDataParallel(MPIDataParallel):
    """MPIDataParallel with one GPU per rank and the gradients summed by NCCL (cupy.cuda.nccl) on
    the device; MPI only starts the ranks and hands out NCCL's id. Rank r uses GPU r mod (GPUs
    on its machine). Dropout on a GPU draws one generator's masks per rank (per-row generators
    would cost a kernel launch per sentence), so unlike the CPU layer a run depends on N.
    NEVER RUN: written without a GPU at hand."""

    def __init__(self, model, adapter: str | None = None, comm=None):
        import cupy
        from cupy.cuda import nccl

        MPI = _mpi()
        self.MPI, self.cupy = MPI, cupy
        self.comm = comm if comm is not None else MPI.COMM_WORLD
        self.rank, self.world_size = self.comm.Get_rank(), self.comm.Get_size()
        cupy.cuda.Device(self.rank % cupy.cuda.runtime.getDeviceCount()).use()
        self.model = model
        self.name = model.resolve(adapter)
        self.names = sorted(model.trainable_names(self.name))
        self.shapes = {k: model.params[k].shape for k in self.names}
        self.size = sum(model.params[k].size for k in self.names)
        uid = self.comm.bcast(nccl.get_unique_id() if self.rank == 0 else None, root=0)
        self.nccl = nccl.NcclCommunicator(self.world_size, uid, self.rank)
        self._sum = nccl.NCCL_SUM
        self._type = {np.dtype(np.float32): nccl.NCCL_FLOAT32, np.dtype(np.float64): nccl.NCCL_FLOAT64}[
            np.dtype(model.dtype)]
        _abort_on_uncaught_exceptions(self.comm)

    def loss_and_grads(self, input_ids, attention_mask, token_type_ids, labels, train=True, rng=None):
        model, xp = self.model, self.cupy
        ids, mask, types, labels = model.inputs(input_ids, attention_mask, token_type_ids, labels)
        B, C, P = ids.shape[0], model.heads[self.name].num_labels, self.size
        s = self._rows(B)
        rng = (rng if rng is not None else model.rng) if train else None
        buffer = xp.zeros(P + 1 + B * C, model.dtype)
        if s.stop > s.start:
            loss, logits, grads = model.loss_and_grads(ids[s], mask[s], types[s], labels[s],
                                                       adapter=self.name, train=train, rng=rng)
            weight = (s.stop - s.start) / B
            if P:
                pack(grads, self.names, out=buffer[:P])
                buffer[:P] *= weight
            buffer[P] = loss * weight
            buffer[P + 1 + s.start * C:P + 1 + s.stop * C] = logits.reshape(-1)
        stream = xp.cuda.get_current_stream()
        self.nccl.allReduce(buffer.data.ptr, buffer.data.ptr, buffer.size, self._type, self._sum,
                            stream.ptr)
        stream.synchronize()
        grads = unpack(buffer[:P], self.shapes) if P else {}
        return buffer[P].copy(), buffer[P + 1:].reshape(B, C), grads

    def _gathered(self, method, input_ids, attention_mask, token_type_ids):
        """Each rank's rows, summed into zeros by NCCL (an all-gather would need equal counts)."""
        model, xp = self.model, self.cupy
        ids, mask, types = model.inputs(input_ids, attention_mask, token_type_ids)
        B = ids.shape[0]
        s = self._rows(B)
        part = getattr(model, method)(ids[:1], mask[:1], None if types is None else types[:1],
                                      adapter=self.name) if s.stop == s.start else \
            getattr(model, method)(ids[s], mask[s], None if types is None else types[s],
                                   adapter=self.name)
        out = xp.zeros((B, *part.shape[1:]), model.dtype)
        if s.stop > s.start:
            out[s] = part
        stream = xp.cuda.get_current_stream()
        self.nccl.allReduce(out.data.ptr, out.data.ptr, out.size, self._type, self._sum, stream.ptr)
        stream.synchronize()
        return out
