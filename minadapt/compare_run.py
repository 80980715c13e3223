"""One run of `minadapt compare`, in its own process: `python -m minadapt.compare_run SPEC.json`.

The reported dev set must not choose anything, so the run holds out a slice of the training data
(`selection.holdout`: the same slice for every run, the baseline and a default `minadapt train`
run) and trains on the rest:

    every `every` steps      validation metrics; the best step so far keeps a copy of the
                             trainable parameters (ties keep the earlier step)
    at the end               the best step's parameters back into the model, then the dev metrics
                             once, the adapter file (that step's parameters) and an eval record

`python -m minadapt.compare_run --prepare SPEC.json OUT.json` is the step before (prepare): the
data's size and the baseline.

The loop is train.py's own helpers (set_up, train_step, log); its `dev` is the validation slice.
SPEC.json (compare writes it) holds {"train": TrainConfig's fields, "validation_size": N,
"split_seed": S, "evals": E}. metrics.jsonl gets the train records, a "validation" record per
evaluation, and one "eval" record: the dev metrics at the step kept, with its `seconds_training`
(the time inside train steps, evaluations left out).
"""
from __future__ import annotations

import json
import math
import sys
from pathlib import Path

from .selection import holdout, validation_size


def split(spec: dict):
    """(cfg, task, data, the training set's size, the slice's size, the rest, the held-out slice):
    the run's data as `spec` names it, less the held-out slice (the same for prepare and every run)."""
    from .tasks import load_task
    from .train import TrainConfig, as_examples

    cfg = TrainConfig(**spec["train"])
    task = cfg.resolve_task()
    data = load_task(task, cfg.data_dir)
    train = as_examples(data["train"])
    if cfg.train_subset:
        train = train.head(cfg.train_subset)
    size = spec["validation_size"] or validation_size(len(train.labels))
    return (cfg, task, data, len(train.labels), size, *holdout(train, size, spec["split_seed"]))


def prepare(spec: dict) -> dict:
    """What compare needs of the data before any run, in a child process of its own so that compare
    itself stays small (see compare.py): the training set's size, the held-out slice's, and the
    TF-IDF baseline's row when spec["baseline"]. spec: {"train": TrainConfig's data fields,
    "validation_size": N or None, "split_seed": S, "baseline": bool}."""
    from .train import as_examples

    _, task, data, n_train, size, rest, validation = split(spec)
    baseline = None
    if spec["baseline"]:
        from .baseline import tfidf_logreg

        baseline = tfidf_logreg(task, rest, validation, as_examples(data["dev"]))
    return {"train_size": n_train, "validation_size": size, "baseline": baseline}


def run(spec: dict) -> dict:
    """Train as `spec` says; returns the eval record of the step kept."""
    from .backend import to_numpy
    from .checkpoints import out_lock, prepare_out
    from .model import load_model
    from .predict import encode_examples, evaluate
    from .selection import Keeper
    from .train import _eval_record, as_examples, dev_metrics, log, set_up, task_record, train_step

    cfg, task, data, _, _, train_set, validation = split(spec)
    out = prepare_out(cfg.out)
    with out_lock(out):
        model = load_model(cfg.weights, dtype="float32", device=cfg.device, seed=cfg.seed)
        r = set_up(cfg.__class__(**{**spec["train"], "train_subset": None}), model,
                   {"train": train_set, "dev": validation})
        every = max(1, math.ceil(r.total / spec["evals"]))
        names = sorted(model.trainable_names(cfg.adapter_name))
        keeper, kept = Keeper("best"), None  # the best validation record; its parameters, on the host
        while r.step < r.total:
            train_step(r)
            if r.step % every == 0 or r.step == r.total:
                vm = dev_metrics(r)  # r.dev is the validation slice
                first = next(iter(vm))
                record = {"kind": "validation", "step": r.step, "validation": vm, "metric": first,
                          "validation_score": vm[first], "seconds_training": r.seconds_training}
                log(r, record)
                if keeper.update(record):  # a better score (ties keep the earlier step)
                    kept = {k: to_numpy(model.params[k]).copy() for k in names}
        model.put(kept)
        kept_step, kept_score = keeper.best["step"], keeper.best["validation_score"]
        dev = as_examples(data["dev"])
        ids, types, _ = encode_examples(model.tokenizer, dev)
        metrics = evaluate(model, task, ids, types, dev.labels, cfg.adapter_name, r.runner)[0]
        r.runner.close()
        record = {**_eval_record(kept_step, metrics), "kept_step": kept_step, "total_steps": r.total,
                  "validation_score": kept_score, "seconds_training": r.seconds_training}
        log(r, record)
        model.save_adapter(out / "adapter.safetensors", adapter=cfg.adapter_name, extra_metadata={
            "training": cfg.to_dict(), "task": task_record(task, cfg), "dev_metrics": metrics,
            "dev_accuracy": metrics.get("accuracy", float("nan")), "steps": kept_step,
            "labels": list(model.heads[cfg.adapter_name].labels or []) or None,
            "compare": {"kept_step": kept_step, "validation_score": kept_score,
                        "validation_size": spec["validation_size"], "split_seed": spec["split_seed"]}})
    return record


def main(argv=None) -> int:
    from .errors import MinadaptError

    argv = sys.argv[1:] if argv is None else argv
    try:
        if argv[0] == "--prepare":  # --prepare SPEC.json OUT.json
            result = prepare(json.loads(Path(argv[1]).read_text()))
            Path(argv[2]).write_text(json.dumps(result, indent=2) + "\n")
            return 0
        record = run(json.loads(Path(argv[0]).read_text()))
    except MinadaptError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    print(f"kept step {record['kept_step']}/{record['total_steps']} (validation "
          f"{record['validation_score']:.4f}): dev {record['dev_metric']} {record['dev_score']:.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
