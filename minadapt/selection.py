"""Which step of a run to keep, chosen honestly: on a validation set that is not the dev set.

The dev set is what a run reports. Choosing the step whose *dev* score is highest and then reporting
that score would report the maximum of several noisy measurements, an optimistic figure. So the
choice is made on a separate validation set: `--validation-file`, else a held-out slice of the
training data (`holdout`, drawn once from the seed and never trained on). At every evaluation the
run scores both; `Keeper` remembers the step with the best validation score (ties: the earlier),
and with a patience of N stops the run after N evaluations without improvement (early stopping).

The kept step's parameters are written to OUT/adapter.safetensors as soon as it is found, so a run
that is stopped or crashes still leaves its best state, and `--resume` finds the best score so far
again in metrics.jsonl (the `validation_score` of its eval lines).
"""
from __future__ import annotations

import numpy as np

VALIDATION_FRACTION, VALIDATION_MAX = 10, 1000  # a tenth of the training examples, at most 1,000
HOLDOUT_MIN_TRAIN = 200  # below this many, `minadapt train` holds nothing out: the last step is kept


def validation_size(n_train: int) -> int:
    """How many training examples are held out by default: a tenth, at most 1,000 (enough to rank
    steps and learning rates; each evaluation costs a forward pass over them)."""
    return max(1, min(VALIDATION_MAX, n_train // VALIDATION_FRACTION))


def holdout(examples, size: int | None = None, seed: int = 0):
    """(the rest, the held-out slice), both in file order: `size` examples (None: validation_size,
    or no slice at all below HOLDOUT_MIN_TRAIN examples) drawn by `seed`.

    `minadapt train` and every run of `minadapt compare` draw the same slice (seed 0 unless
    `compare --split-seed`), whatever the training seed: the seeds of a configuration are scored
    on one validation set, and a default `train` run is the compare run of the same settings."""
    n = len(examples.labels)
    if size is None:
        if n < HOLDOUT_MIN_TRAIN:
            return examples, None
        size = validation_size(n)
    if not 1 <= size < n:
        from .errors import ConfigError

        raise ConfigError(f"validation size {size}: expected 1 to {n - 1} (the training set has {n} examples)")
    chosen = np.zeros(n, bool)
    chosen[np.random.default_rng(seed).permutation(n)[:size]] = True
    return examples.where(~chosen), examples.where(chosen)


class Keeper:
    """The best step so far by validation score, and whether to stop early.

    keep: "best" (keep the best-validating step) or "last"; patience: stop after this many
    evaluations in a row without a better validation score (None: never stop early)."""

    def __init__(self, keep: str = "best", patience: int | None = None, history=()):
        self.keep, self.patience = keep, patience
        self.best = None  # the eval record of the best step so far
        self.since_best = 0  # evaluations since the best one
        for record in history:  # resuming: the best so far is in metrics.jsonl
            if record.get("kind") == "eval" and "validation_score" in record:
                self.update(record)

    def update(self, record: dict) -> bool:
        """Take one eval record (with `validation_score`); True when it is the new best."""
        if self.best is None or record["validation_score"] > self.best["validation_score"]:
            self.best, self.since_best = record, 0
            return True
        self.since_best += 1
        return False

    @property
    def stop(self) -> bool:
        """True when `patience` evaluations in a row brought no better validation score."""
        return self.patience is not None and self.since_best >= self.patience


def describe(record: dict | None) -> str:
    """'step 2000: validation accuracy 88.10%, dev accuracy 87.50%' for an eval record."""
    if record is None:
        return "nothing"

    def pct(metric, v):
        return f"{v:.4f}" if metric in ("pearson", "spearman", "matthews") else f"{100 * v:.2f}%"

    parts = [f"step {record['step']}"]
    if "validation_score" in record:
        parts.append(f"validation {record['dev_metric']} {pct(record['dev_metric'], record['validation_score'])}")
    parts.append(f"dev {record['dev_metric']} {pct(record['dev_metric'], record['dev_score'])}")
    return parts[0] + ": " + ", ".join(parts[1:])
