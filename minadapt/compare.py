"""`minadapt compare TASK`: the ways of adapting one backbone, side by side, at a converged budget,
over several seeds, each with its learning rate chosen on data the reported dev set is not.

    configurations  every --methods method at each value of its swept setting (Method.sweep), and
                    with --adapter-layers each bottleneck method at each depth (top K layers)
    held out        --validation-size training examples (the same for every run and the baseline):
                    each run trains on the rest, evaluates them --evals times and keeps its best
                    step (compare_run.py); the dev set is evaluated once, at that step
    learning rate   per method, a few (--lr-factors times its default, or --lrs): each trains on
                    the first seed; the best validation score wins and trains the other seeds
                    (a tie: the method's default, when it is among the tied)
    the row         the mean and standard deviation of the dev metric over the seeds (--seeds),
                    which lr won (and each one's validation score), trainable parameters, file
                    size, training time (train steps only), peak resident memory
    --baseline      a TF-IDF + logistic regression row on the same split (baseline.py)

Each run is one child process (`python -m minadapt.compare_run OUT/<config>/lr<lr>-s<seed>/spec.json`),
so that its peak resident memory is its own. That peak comes from os.wait4, which returns the
rusage of that one child (ru_maxrss, in KiB on Linux); getrusage(RUSAGE_CHILDREN) would be the
largest over every child so far. Linux keeps a high-water mark across exec, so a child's ru_maxrss
is never below the resident memory of the process that started it: compare itself loads no model
(only the data, to size the split) and stays small (its own peak is in compare.json,
"compare_peak_rss_mb": the floor under every run's figure).

After every finished configuration OUT/compare.json, OUT/compare.md and OUT/compare.png are
written again, so Ctrl-C keeps what finished. A run's folder holding result.json is finished: the
same command again skips it and says so; other settings in the same folder are refused.
compare.json keeps a row per configuration in "runs" (dev_score: the mean over seeds), every run
in "seed_runs", and the baseline in "baseline".
"""
from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import shlex
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from . import methods
from .errors import ConfigError, MinadaptError

RESULT = "result.json"  # in a run's folder: the run finished, and what compare measured of it


@dataclass(frozen=True)
class Config:
    """One configuration of the table: a method at one value of its swept setting (`size`), and
    for bottleneck adapters at a depth (`layers`: adapters in the top K layers; None: all)."""
    method: str  # a name in minadapt.methods.METHODS
    size: int | None = None  # the value of the method's swept setting (Method.sweep); None: none
    layers: int | None = None

    @property
    def name(self) -> str:
        name = self.method if self.size is None else f"{self.method}-{self.size}"
        return name if self.layers is None else f"{name}-top{self.layers}"

    def options(self) -> dict:
        """The method's options ({field: value}) that select this configuration."""
        method = methods.get(self.method)
        options = {} if self.size is None else {method.sweep[0]: self.size}
        return options if self.layers is None else {**options, "adapter_layers": self.layers}


@dataclass(frozen=True)
class Job:
    """One training run: a configuration at one learning rate and seed."""
    config: Config
    lr: float
    seed: int

    @property
    def folder(self) -> str:  # OUT/<config>/lr<lr>-s<seed>
        return f"{self.config.name}/lr{self.lr:g}-s{self.seed}"


def sweeps() -> dict[str, list[str]]:
    """compare's sweep options ("--bottlenecks") -> the methods whose swept values they give."""
    found = {}
    for m in methods.METHODS.values():
        if m.sweep and m.sweep[2]:
            found.setdefault(m.sweep[2], []).append(m.name)
    return found


def plan(method_names, values: dict, depths=(), num_layers: int | None = None) -> list[Config]:
    """The configurations, in the order of `method_names`: one per value of a method's swept
    setting (values: sweep option -> the values given, else the method's defaults), else one; then,
    for each method that takes adapter_layers, one per depth K in `depths` at its default size
    (K = num_layers is the plain configuration, not planned twice)."""
    configs = []
    for name in method_names:
        m = methods.get(name)
        if not m.sweep:
            configs.append(Config(name))
            continue
        field, defaults, flag = m.sweep
        configs += [Config(name, v) for v in (values.get(flag) or defaults)]
    for name in method_names:
        m = methods.get(name)
        if depths and "adapter_layers" in {o.field for o in m.options}:
            size = getattr(m.make_config("x"), m.sweep[0]) if m.sweep else None
            for k in depths:
                c = Config(name, size, None if k == num_layers else k)
                if c not in configs:
                    configs.append(c)
    return configs


def learning_rates(method: str, factors, given: dict) -> list[float]:
    """The learning rates tried for `method`: those --lrs gives it, else its default_lr times each
    factor (0.5, 1, 2 by default)."""
    if method in given:
        return given[method]
    return sorted({float(f"{methods.get(method).default_lr * f:.3g}") for f in factors})


# --- argparse types -------------------------------------------------------------------------------
def positive_ints(text: str) -> list[int]:
    """'8,16,32' -> [8, 16, 32] (sorted, each once)."""
    parts = [v.strip() for v in text.split(",") if v.strip()]
    if not parts or not all(v.isdigit() and int(v) >= 1 for v in parts):
        raise argparse.ArgumentTypeError(f"expected comma-separated whole numbers >= 1, got {text!r}")
    return sorted({int(v) for v in parts})


def positive_floats(text: str) -> list[float]:
    """'0.5,1,2' -> [0.5, 1.0, 2.0] (each > 0 and finite)."""
    try:
        values = [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        values = []
    if not values or not all(math.isfinite(v) and v > 0 for v in values):
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers > 0, got {text!r}")
    return values


def method_lrs(text: str) -> tuple[str, list[float]]:
    """'full=2e-5,5e-5' -> ('full', [2e-05, 5e-05])."""
    method, _, lrs = text.partition("=")
    if method.strip() not in methods.METHODS or not lrs:
        raise argparse.ArgumentTypeError(f"expected METHOD=LR,LR,... with METHOD one of "
                                         f"{','.join(methods.METHODS)}, got {text!r}")
    return method.strip(), sorted(set(positive_floats(lrs)))


def sweep_dest(flag: str) -> str:
    """"--lora-ranks" -> "lora_ranks" (the argparse name, and the key in compare.json's settings)."""
    return flag.lstrip("-").replace("-", "_")


def method_list(text: str) -> list[str]:
    """'probe,lora' -> ['probe', 'lora'] (each once, in the order given)."""
    parts = [v.strip() for v in text.split(",") if v.strip()]
    bad = [v for v in parts if v not in methods.METHODS]
    if not parts or bad:
        raise argparse.ArgumentTypeError(f"expected some of {','.join(methods.METHODS)} "
                                         f"(comma-separated), got {text!r}")
    return list(dict.fromkeys(parts))


# --- one run ---
def spec(job: Job, args, out: Path, validation_size: int) -> dict:
    """What the child (compare_run.py) runs: TrainConfig's fields, the held-out slice, evaluations."""
    train = {**data_fields(args), "max_length": args.max_length, "weights": args.weights,
             "out": str(out / job.folder), "method": job.config.method,
             "options": job.config.options(), "epochs": args.epochs, "max_steps": args.steps,
             "batch_size": args.batch_size, "lr": job.lr, "eval_every": 0, "seed": job.seed,
             "device": args.device}
    return {"train": train, "validation_size": validation_size, "split_seed": args.split_seed,
            "evals": args.evals}


def _same_settings(a: dict, b: dict) -> bool:
    """Two specs alike but for where their folder is: a compare folder moved elsewhere still skips."""
    strip = lambda s: {**s, "train": {k: v for k, v in s["train"].items() if k != "out"}}  # noqa: E731
    return strip(a) == strip(b)


def run_child(argv: list[str], log: Path) -> tuple[int, float, int]:
    """Run `argv` with its output in `log`. Returns (exit code, wall seconds, peak RSS in KiB).
    The child imports this minadapt (PYTHONPATH), whatever the interpreter has installed."""
    env = dict(os.environ)
    here = str(Path(__file__).resolve().parents[1])
    env["PYTHONPATH"] = os.pathsep.join([here] + [p for p in [env.get("PYTHONPATH")] if p])
    with open(log, "w") as f:
        t0 = time.perf_counter()
        child = subprocess.Popen(argv, stdout=f, stderr=subprocess.STDOUT, env=env)
        try:
            _, status, usage = os.wait4(child.pid, 0)
        except KeyboardInterrupt:  # Ctrl-C reached the child too: let it save its checkpoint
            os.wait4(child.pid, 0)
            child.returncode = -2
            raise
        child.returncode = os.waitstatus_to_exitcode(status)  # reaped here: Popen must not wait
    return child.returncode, time.perf_counter() - t0, usage.ru_maxrss


def count_params(path: Path) -> int:
    """The numbers in a safetensors file, from its header alone (8 bytes of length, then JSON):
    reading the tensors of a fully fine-tuned model would put it in compare's own memory."""
    with open(path, "rb") as f:
        header = json.loads(f.read(int.from_bytes(f.read(8), "little")))
    return sum(math.prod(t["shape"]) for k, t in header.items() if k != "__metadata__")


def collect(job: Job, folder: Path, wall_s: float, peak_kib: int, backbone: int) -> dict:
    """What compare reports of one finished run, read from its folder."""
    adapter = folder / "adapter.safetensors"
    params = count_params(adapter)
    records = [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines()]
    kept = [r for r in records if r["kind"] == "eval"][-1]
    c = job.config
    return {"config": c.name, "method": c.method, "size": c.size, "layers": c.layers, "lr": job.lr,
            "seed": job.seed, "trainable_params": params, "share_pct": 100.0 * params / backbone,
            "file_bytes": adapter.stat().st_size, "dev_metric": kept["dev_metric"],
            "dev_score": kept["dev_score"], "dev": kept["dev"],
            "validation_score": kept["validation_score"], "steps": kept["total_steps"],
            "kept_step": kept["kept_step"], "train_s": kept["seconds_training"], "wall_s": wall_s,
            "peak_rss_mb": peak_kib * 1024 / 1e6, "folder": str(folder)}


def choose_lr(rows: list[dict], default: float | None = None) -> float:
    """The learning rate whose first-seed run has the best validation score. A tie says nothing
    about which is better (BBC News' 178 held-out articles tied three learning rates), so it goes
    to the method's `default` when that is among the tied (the run `minadapt train` makes), else
    to the smaller."""
    best = max(r["validation_score"] for r in rows)
    tied = [r["lr"] for r in rows if r["validation_score"] == best]
    return default if default in tied else min(tied)


def summarise(config: Config, rows: list[dict], lr_rows: list[dict]) -> dict:
    """A configuration's row: the mean and standard deviation of the dev metric over its seeds at
    the chosen learning rate (`rows`), which learning rate won and each one's validation score."""
    import statistics

    scores = [r["dev_score"] for r in rows]
    first = rows[0]
    return {"config": config.name, "method": config.method, "size": config.size,
            "layers": config.layers, "trainable_params": first["trainable_params"],
            "share_pct": first["share_pct"], "file_bytes": first["file_bytes"],
            "dev_metric": first["dev_metric"], "dev_score": statistics.fmean(scores),
            "dev_std": statistics.stdev(scores) if len(scores) > 1 else 0.0, "dev_scores": scores,
            "seeds": [r["seed"] for r in rows], "lr": first["lr"],
            "lr_validation": {f"{r['lr']:g}": r["validation_score"] for r in lr_rows},
            "steps": first["steps"], "kept_steps": [r["kept_step"] for r in rows],
            "train_s": statistics.fmean(r["train_s"] for r in rows),
            "peak_rss_mb": max(r["peak_rss_mb"] for r in rows)}


def machine() -> dict:
    """The CPU, as lscpu names it (family, model, model name), and the cores this process may use."""
    from .parallel.cores import cores

    info = {}
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        out = ""
    for line in out.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("CPU family", "Model", "Model name"):
            info[key.strip().lower().replace(" ", "_")] = value.strip()
    info["cores"] = cores()
    return info


def git_commit() -> str | None:
    """The commit of the minadapt checkout this runs from ("+dirty" with uncommitted changes)."""
    repo = Path(__file__).resolve().parents[1]
    try:
        head = subprocess.run(["git", "-C", str(repo), "rev-parse", "HEAD"], capture_output=True,
                              text=True, timeout=10)
        dirty = subprocess.run(["git", "-C", str(repo), "status", "--porcelain", "--", "minadapt"],
                               capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return head.stdout.strip() + ("+dirty" if dirty else "") if head.returncode == 0 else None


def own_peak_rss_mb() -> float | None:
    """This process's peak resident memory since its exec (VmHWM; ru_maxrss would include its
    parent's, for the reason in the module docstring)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024 / 1e6  # kB
    except OSError:
        pass
    return None


def _score(row, key="dev_score") -> str:
    v = row[key]
    return f"{v:.4f}" if row["dev_metric"] in ("pearson", "spearman", "matthews") else f"{100 * v:.2f}%"


def _spread(row) -> str:
    """'91.20% ± 0.31 (3)': mean ± standard deviation over the seeds (in points), how many."""
    pct = row["dev_metric"] not in ("pearson", "spearman", "matthews")
    std = f"{100 * row['dev_std']:.2f}" if pct else f"{row['dev_std']:.4f}"
    return f"{_score(row)} ± {std} ({len(row['dev_scores'])})"


def table_header(metric: str) -> str:
    return (f"| run | trainable params | % of backbone | file | lr (validation of each) | dev {metric}, "
            "mean ± std (seeds) | train time | peak RSS |\n"
            "| --- | ---: | ---: | ---: | --- | ---: | ---: | ---: |")


def table_row(row) -> str:
    tried = ", ".join(f"{lr}: {_score({**row, 'v': v}, 'v')}" for lr, v in row["lr_validation"].items())
    lr = f"**{row['lr']:g}** ({tried})" if len(row["lr_validation"]) > 1 else f"{row['lr']:g}"
    return (f"| {row['config']} | {row['trainable_params']:,} | {row['share_pct']:.2f}% | "
            f"{row['file_bytes'] / 1e6:.2f} MB | {lr} | {_spread(row)} | {row['train_s']:.0f} s | "
            f"{row['peak_rss_mb']:.0f} MB |")


def baseline_row(b) -> str:
    return (f"| {b['config']} (C={b['C']:g}) | {b['trainable_params']:,} | - | - | - | "
            f"{_score(b)} (deterministic) | {b['train_s']:.0f} s | - |")


def run_line(row) -> str:
    """A finished run, as compare prints it."""
    return (f"  {row['config']} lr {row['lr']:g} seed {row['seed']}: validation "
            f"{_score(row, 'validation_score')} (step {row['kept_step']}/{row['steps']}), dev "
            f"{_score(row)}, {row['train_s']:.0f} s")


def describe_settings(header) -> str:
    s = header["settings"]
    budget = (f"{s['steps']} steps" if s["max_steps"] is not None else
              f"{s['epochs']:g} epochs ({s['steps']} steps)" if s["epochs"] is not None else
              f"the default length ({s['steps']} steps)")
    return (f"{budget} of batch {s['batch_size']}, max length {s['max_length']}, "
            f"seeds {','.join(map(str, s['seeds']))}; the step kept and the lr chosen on "
            f"{s['validation_size']} held-out training examples, not on dev")


def write_outputs(out: Path, header: dict, rows: list[dict], seed_runs: list[dict], baseline=None):
    """OUT/compare.json, OUT/compare.md and OUT/compare.png from the configurations finished so far
    (`rows`, one per configuration; `seed_runs`, every run)."""
    peak = own_peak_rss_mb()
    (out / "compare.json").write_text(json.dumps(
        {**header, "compare_peak_rss_mb": peak, "runs": rows, "baseline": baseline,
         "seed_runs": seed_runs}, indent=2) + "\n")
    metric = rows[0]["dev_metric"] if rows else (baseline or {}).get("dev_metric", "metric")
    lines = [f"`{header['command']}`", "",
             f"{header['task']}: {describe_settings(header)}; backbone {header['backbone_params']:,} "
             f"parameters. {header['machine'].get('model_name', '?')}, {header['date']}.", "",
             table_header(metric)] + [table_row(r) for r in rows]
    if baseline:
        lines.append(baseline_row(baseline))
    (out / "compare.md").write_text("\n".join(lines) + "\n")
    if rows:
        from .compare_plot import plot

        plot(rows, header, out / "compare.png", baseline)


# --- the command ----------------------------------------------------------------------------------
def backbone_params(weights) -> tuple[int, int]:
    """(the number of parameters in the checkpoint (embeddings and encoder), its layers), from its
    config."""
    import numpy as np

    from .config import BertConfig
    from .io.weights import expected_shapes

    if weights is None:
        from .io.hub import ensure_checkpoint

        weights = ensure_checkpoint()
    config = Path(weights) / "config.json"
    if not config.is_file():
        raise ConfigError(f"{weights}: no config.json in this checkpoint folder")
    cfg = BertConfig.from_json(config)
    return sum(int(np.prod(s)) for s in expected_shapes(cfg).values()), cfg.num_hidden_layers


def add_arguments(c):
    """compare's options (cli.py makes the parser and its help text)."""
    from .cli import _common, add_data_options
    from .methods import METHODS
    from .train import TrainConfig

    d, rule = TrainConfig(), TrainConfig.RULES  # an option takes its field's rule as its type
    add_data_options(c)  # the same as train's
    c.add_argument("--methods", type=method_list,
                   default=",".join(m.name for m in METHODS.values() if m.compare),
                   metavar="M,M,...", help="which methods: " + ", ".join(METHODS))
    for flag, takers in sweeps().items():
        m = METHODS[takers[0]]
        c.add_argument(flag, type=positive_ints, dest=sweep_dest(flag),
                       default=",".join(map(str, m.sweep[1])), metavar="V,V,...",
                       help=f"the {m.sweep[0]} values of {' and '.join(takers)} to sweep")
    c.add_argument("--adapter-layers", type=positive_ints, default=None, metavar="K,K,...",
                   help="also train each bottleneck method (at its default width) with adapters in "
                   "the top K layers only, for each K (e.g. 1,2,3,6): accuracy against training time")
    c.add_argument("--epochs", "--num_train_epochs", dest="epochs", type=rule["epochs"], default=None,
                   help="passes over the training data of every run (less the held-out validation "
                   f"slice) (default: `minadapt train`'s, {d.DEFAULT_EPOCHS:g} and at least "
                   f"{d.DEFAULT_MIN_STEPS} steps: a default run of each configuration is its run here)")
    c.add_argument("--max-steps", "--max_steps", "--steps", dest="steps", type=rule["max_steps"],
                   default=None, help="training steps of every run, instead of --epochs")
    c.add_argument("--batch-size", "--per_device_train_batch_size", dest="batch_size",
                   type=rule["batch_size"], default=d.batch_size, help="sentences per step")
    c.add_argument("--seeds", type=rule["max_steps"], default=3, metavar="N",
                   help="runs per configuration, with seeds SEED, SEED+1, ...: the table gives their "
                   "mean and standard deviation")
    c.add_argument("--seed", type=rule["seed"], default=d.seed, help="the first seed")
    c.add_argument("--lr-factors", type=positive_floats, default="0.5,1,2", metavar="F,F,...",
                   help="the learning rates tried: each method's default times each factor; the one "
                   "with the best validation score on the first seed runs the other seeds (a tie: "
                   "the method's default lr)")
    c.add_argument("--lrs", type=method_lrs, action="append", default=[], metavar="METHOD=LR,LR",
                   help="the learning rates tried for one method, instead of --lr-factors "
                   "(repeat for others), e.g. --lrs full=2e-5,5e-5 (default: none)")
    c.add_argument("--validation-size", type=rule["max_steps"], default=None, metavar="N",
                   help="training examples held out to choose the step kept and the lr (default: a "
                   "tenth of the training set, at most 1000); the dev set chooses nothing")
    c.add_argument("--split-seed", type=rule["seed"], default=0, help="which examples are held out "
                   "(the same for every run and the baseline)")
    c.add_argument("--evals", type=rule["max_steps"], default=10, help="validation evaluations per "
                   "run; the best of them is the step kept")
    c.add_argument("--baseline", action="store_true", help="add a TF-IDF + logistic regression row "
                   "on the same split (needs scikit-learn: pip install 'minadapt[baseline]')")
    c.add_argument("--out", "--output_dir", dest="out", default=None,
                   help="output folder (default: runs/compare-TASK)")
    _common(c)


def data_fields(args) -> dict:
    """TrainConfig's fields that say which data a run reads."""
    return {"task": args.task or "custom", "data_dir": args.data_dir, "train_file": args.train_file,
            "dev_file": args.dev_file, "text_column": args.text_column,
            "text_pair_column": args.text_pair_column, "label_column": args.label_column,
            "regression": args.regression, "train_subset": args.train_subset}


def prepare(args, out: Path) -> dict:
    """The training set's size, the held-out slice's and the baseline's row (compare_run.prepare),
    from a child process: compare itself never holds the data (its memory would floor every run's)."""
    want = {"train": data_fields(args), "validation_size": args.validation_size,
            "split_seed": args.split_seed, "baseline": args.baseline}
    (out / "prepare.json").write_text(json.dumps(want, indent=2) + "\n")
    code, _, _ = run_child([sys.executable, "-m", "minadapt.compare_run", "--prepare",
                            str(out / "prepare.json"), str(out / "data.json")], out / "prepare.log")
    log = (out / "prepare.log").read_text(errors="replace").strip().splitlines()
    if code != 0:
        raise MinadaptError(log[-1].removeprefix("error: ") if log else f"reading the data failed (exit {code})")
    for line in log:  # the baseline's one line when it was skipped
        print(line)
    return json.loads((out / "data.json").read_text())


def main(args, argv: list[str]) -> int:
    """Train every configuration that has no finished result yet; print a row per configuration."""
    from .checkpoints import prepare_out

    own = args.train_file is not None or args.dev_file is not None
    if args.task is None and not own:
        raise ConfigError("name a task (sst2, bbc-news, ...) or give your own data with --train-file "
                          "and --dev-file")
    if args.task is not None and own:
        raise ConfigError(f"give a task ({args.task}) or --train-file/--dev-file, not both")
    if own and (args.train_file is None or args.dev_file is None):
        raise ConfigError("--train-file and --dev-file: give both")
    if getattr(args, "validation_file", None) is not None:
        raise ConfigError("--validation-file: compare holds out its own validation slice from the "
                          "training data, the same for every run (--validation-size, --split-seed)")
    from .train import name_from_file

    task_name = args.task or name_from_file(args.train_file)
    out = prepare_out(args.out or f"runs/compare-{task_name}")
    data = prepare(args, out)
    validation_size, baseline = data["validation_size"], data["baseline"]
    from .train import TrainConfig  # the length rule `minadapt train` uses, and each run's child

    steps = TrainConfig(epochs=args.epochs, max_steps=args.steps).total_steps(
        math.ceil((data["train_size"] - validation_size) / args.batch_size))
    backbone, num_layers = backbone_params(args.weights)
    values = {flag: getattr(args, sweep_dest(flag)) for flag in sweeps()}
    configs = plan(args.methods, values, args.adapter_layers or (), num_layers)
    seeds = [args.seed + i for i in range(args.seeds)]
    given = dict(args.lrs)
    lrs = {m: learning_rates(m, args.lr_factors, given) for m in args.methods}
    header = {"command": shlex.join(["minadapt", *argv]), "task": task_name,
              "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
              "machine": machine(), "minadapt_commit": git_commit(),
              "settings": {"steps": steps, "epochs": args.epochs, "max_steps": args.steps,
                           "batch_size": args.batch_size, "seed": args.seed, "seeds": seeds,
                           "lrs": lrs, "validation_size": validation_size,
                           "split_seed": args.split_seed, "evals": args.evals,
                           "max_length": args.max_length, "train_subset": args.train_subset,
                           "methods": args.methods, "adapter_layers": args.adapter_layers,
                           "runs": [c.name for c in configs],
                           **{sweep_dest(f): v for f, v in values.items()}},
              "backbone_params": backbone}
    n_jobs = sum(len(lrs[c.method]) + len(seeds) - 1 for c in configs)
    print(f"compare {task_name}: {len(configs)} configurations, up to {n_jobs} runs of {steps} steps "
          f"(batch {args.batch_size}, seeds {','.join(map(str, seeds))}, max length "
          f"{args.max_length}); {validation_size} training examples held out for validation; in "
          f"{out}/", flush=True)
    if baseline is not None:
        print(f"baseline {baseline['config']}: dev {_score(baseline)} (C={baseline['C']:g}, "
                  f"{baseline['train_s']:.0f} s)", flush=True)
    rows, seed_runs = [], []

    def run_job(job: Job) -> dict:
        folder = out / job.folder
        want = spec(job, args, out, validation_size)
        done = folder / RESULT
        if done.is_file():
            row = json.loads(done.read_text())
            if not _same_settings(row.get("spec", {}), want):
                raise ConfigError(f"{folder}: finished with other settings; give another --out, or "
                                  "delete that folder to train it again")
            print(run_line(row) + "  (finished earlier, skipped)", flush=True)
        else:
            folder.mkdir(parents=True, exist_ok=True)
            (folder / "spec.json").write_text(json.dumps(want, indent=2) + "\n")
            code, wall, peak = run_child([sys.executable, "-m", "minadapt.compare_run",
                                          str(folder / "spec.json")], folder / "train.log")
            if code != 0:
                log = (folder / "train.log").read_text(errors="replace").strip().splitlines()
                raise MinadaptError(f"{job.folder}: the run failed (exit {code}): "
                                    f"{log[-1] if log else 'no output'} (see {folder / 'train.log'})")
            row = {**collect(job, folder, wall, peak, backbone), "spec": want}
            (folder / RESULT).write_text(json.dumps(row, indent=2) + "\n")
            print(run_line(row), flush=True)
        seed_runs.append({k: v for k, v in row.items() if k != "spec"})
        return row

    try:
        for config in configs:
            first = [run_job(Job(config, lr, seeds[0])) for lr in lrs[config.method]]
            lr = choose_lr(first, methods.get(config.method).default_lr)
            chosen = [r for r in first if r["lr"] == lr]
            chosen += [run_job(Job(config, lr, s)) for s in seeds[1:]]
            rows.append(summarise(config, chosen, first))
            print(table_header(rows[-1]["dev_metric"]) if len(rows) == 1 else "", end="")
            print(("\n" if len(rows) == 1 else "") + table_row(rows[-1]), flush=True)
            write_outputs(out, header, rows, seed_runs, baseline)
    except KeyboardInterrupt:
        print(f"interrupted; the {len(rows)} finished configurations are in {out}/compare.md (the "
              "same command again continues)", file=sys.stderr)
        return 130
    if not rows and baseline:
        write_outputs(out, header, rows, seed_runs, baseline)
    print(f"table {out / 'compare.md'}\njson  {out / 'compare.json'}\nplot  {out / 'compare.png'}")
    return 0
