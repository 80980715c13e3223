"""Data parallelism, a layer above the model: the rows of a batch cut into shards that run at once.

    cores.py   on this machine's CPU cores: forked worker processes, gradients through shared memory
    mpi.py     over MPI ranks (`mpiexec -n N`), on one machine or several: one Allreduce a step

`runner(model, task)` is what the training loop and evaluation call: the model itself (`Direct`)
when there is one shard (one core, a GPU, MINADAPT_THREADS=1), else the batch cut over the cores
(cores.DataParallel) or over MPI ranks (mpi.MPIDataParallel). All three have the same calls.
"""
import numpy as np

from ..row_generators import RowGenerators
from .cores import DataParallel, openblas, shards, threads
from .mpi import abort, data_parallel, join_job, launched


class Direct:
    """One shard: the model's own calls for one task, in this process. Dropout draws each
    sentence's masks from its own generator (row_generators.py), as the shards do, so a run is the
    same on one shard as on several."""

    rank, world_size = 0, 1

    def __init__(self, model, adapter: str | None = None):
        self.model, self.name = model, model.resolve(adapter)

    def loss_and_grads(self, input_ids, attention_mask, token_type_ids, labels, train=True, rng=None):
        model = self.model
        rng = (rng if rng is not None else model.rng) if train else None
        if rng is not None and model.xp is np:
            rng = RowGenerators.draw(rng, len(input_ids))
        return model.loss_and_grads(input_ids, attention_mask, token_type_ids, labels,
                                    adapter=self.name, train=train, rng=rng)

    def logits(self, input_ids, attention_mask, token_type_ids=None):
        return self.model.logits(input_ids, attention_mask, token_type_ids, adapter=self.name)

    def any_rank(self, flag) -> bool:
        return bool(flag)

    def close(self):
        pass


def runner(model, adapter: str | None = None):
    """What runs task `adapter`'s batches: Direct with one shard, else the data-parallel layer."""
    if launched()[1] > 1 or (model.xp is np and threads() > 1):
        return data_parallel(model, adapter)
    return Direct(model, adapter)


__all__ = ["DataParallel", "Direct", "abort", "data_parallel", "join_job", "launched", "openblas",
           "runner", "shards", "threads"]
