"""Data parallelism, a layer above the model: the rows of a batch cut into shards that run at once.

    cores.py   on this machine's CPU cores: forked worker processes, gradients through shared memory
    mpi.py     over MPI ranks (`mpiexec -n N`), on one machine or several: one Allreduce a step

`data_parallel(model, adapter)` picks: MPI ranks when launched under mpiexec, else the cores.
With one shard (one core, or a GPU) the training loop calls the model directly (train.py).
"""
from .cores import DataParallel, openblas, shards, threads
from .mpi import abort, data_parallel, join_job, launched

__all__ = ["DataParallel", "abort", "data_parallel", "join_job", "launched", "openblas",
           "shards", "threads"]
