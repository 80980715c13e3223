"""Data sets: reading them (with errors that point at the line) and cutting them into batches."""
from minadapt.data.sst2 import (
    bucketed_batches,
    find_sst2,
    load_sst2,
    read_tsv,
    sequential_batches,
)

__all__ = ["bucketed_batches", "find_sst2", "load_sst2", "read_tsv", "sequential_batches"]
