"""`minadapt compare TASK`: the ways of adapting one backbone, side by side.

Every configuration (a linear probe, Houlsby adapters at each bottleneck of the sweep, a Pfeiffer
adapter, LoRA at each rank, full fine-tuning) trains on the same data, with the same seed, step
budget, batch size and evaluation, as `python -m minadapt train ... --out OUT/<config>`: one child
process each, so that its peak resident memory is its own. That peak comes from os.wait4, which
returns the rusage of that one child (ru_maxrss, in KiB on Linux: the largest of the child and the
shard workers it forked and waited for); getrusage(RUSAGE_CHILDREN) would be the largest over every
child so far. Linux keeps a high-water mark across exec, so a child's ru_maxrss is never below
the resident memory of the process that started it: compare itself loads no model and stays small
(its own peak is in compare.json, "compare_peak_rss_mb": the floor under every run's figure).
From each run's folder come its trainable parameters (the numbers in its
adapter.safetensors: adapter + head, or for full fine-tuning the whole model + head), the file's
size and the dev metric (metrics.jsonl's last evaluation).

After every finished run OUT/compare.json, OUT/compare.md and OUT/compare.png are written again, so
Ctrl-C (which the running child also gets: it saves a checkpoint and stops) keeps what finished. A
run's folder holding result.json is finished: the same command again skips it and says so.
"""
from __future__ import annotations

import argparse
import datetime
import json
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
class Run:
    method: str  # a name in minadapt.methods.METHODS
    size: int | None = None  # the value of the method's swept setting (Method.sweep); None: none

    @property
    def name(self) -> str:
        return self.method if self.size is None else f"{self.method}-{self.size}"

    def options(self) -> list[str]:
        """The `minadapt train` options that select this configuration."""
        method = methods.get(self.method)
        if self.size is None:
            return ["--method", self.method]
        flag = next(o.flag for o in method.options if o.field == method.sweep[0])
        return ["--method", self.method, flag, str(self.size)]


def sweeps() -> dict[str, list[str]]:
    """compare's sweep options ("--bottlenecks") -> the methods whose swept values they give."""
    found = {}
    for m in methods.METHODS.values():
        if m.sweep and m.sweep[2]:
            found.setdefault(m.sweep[2], []).append(m.name)
    return found


def plan(method_names, values: dict) -> list[Run]:
    """The configurations, in the order of `method_names`: one run per value of a method's swept
    setting (values: sweep option -> the values given, else the method's defaults), else one."""
    runs = []
    for name in method_names:
        m = methods.get(name)
        if not m.sweep:
            runs.append(Run(name))
            continue
        field, defaults, flag = m.sweep
        runs += [Run(name, v) for v in (values.get(flag) or defaults)]
    return runs


# --- argparse types -------------------------------------------------------------------------------
def positive_ints(text: str) -> list[int]:
    """'8,16,32' -> [8, 16, 32] (sorted, each once)."""
    parts = [v.strip() for v in text.split(",") if v.strip()]
    if not parts or not all(v.isdigit() and int(v) >= 1 for v in parts):
        raise argparse.ArgumentTypeError(f"expected comma-separated whole numbers >= 1, got {text!r}")
    return sorted({int(v) for v in parts})


def method_list(text: str) -> list[str]:
    """'probe,lora' -> ['probe', 'lora'] (each once, in the order given)."""
    parts = [v.strip() for v in text.split(",") if v.strip()]
    bad = [v for v in parts if v not in methods.METHODS]
    if not parts or bad:
        raise argparse.ArgumentTypeError(f"expected some of {','.join(methods.METHODS)} "
                                         f"(comma-separated), got {text!r}")
    return list(dict.fromkeys(parts))


# --- one run --------------------------------------------------------------------------------------
def train_argv(run: Run, args, folder: Path) -> list[str]:
    """The child's command line: `python -m minadapt train` with the shared settings."""
    argv = [sys.executable, "-m", "minadapt", "train"] + ([args.task] if args.task else [])
    argv += run.options() + ["--max-steps", str(args.steps), "--batch-size", str(args.batch_size),
                             "--seed", str(args.seed), "--max-length", str(args.max_length),
                             "--eval-every", "0", "--out", str(folder)]
    for option, value in (("--train-subset", args.train_subset), ("--weights", args.weights),
                          ("--data-dir", args.data_dir), ("--train-file", args.train_file),
                          ("--dev-file", args.dev_file), ("--device", args.device)):
        if value is not None:
            argv += [option, str(value)]
    return argv


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


def collect(run: Run, folder: Path, wall_s: float, peak_kib: int, backbone: int) -> dict:
    """What compare reports of one finished run, read from its folder."""
    from .io.weights import read_safetensors

    adapter = folder / "adapter.safetensors"
    tensors, _ = read_safetensors(adapter)
    params = sum(int(v.size) for v in tensors.values())
    records = [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines()]
    last_eval = [r for r in records if r["kind"] == "eval"][-1]
    last_train = [r for r in records if r["kind"] == "train"][-1]
    return {"config": run.name, "method": run.method, "size": run.size, "trainable_params": params,
            "share_pct": 100.0 * params / backbone, "file_bytes": adapter.stat().st_size,
            "dev_metric": last_eval["dev_metric"], "dev_score": last_eval["dev_score"],
            "dev": last_eval["dev"], "steps": last_eval["step"], "train_s": last_train["elapsed_s"],
            "wall_s": wall_s, "peak_rss_mb": peak_kib * 1024 / 1e6, "folder": str(folder)}


# --- the table, the JSON and the plot -------------------------------------------------------------
def _score(row) -> str:
    v = row["dev_score"]
    return f"{v:.4f}" if row["dev_metric"] in ("pearson", "spearman", "matthews") else f"{100 * v:.2f}%"


def table_header(metric: str) -> str:
    return (f"| run | trainable params | % of backbone | file | dev {metric} | train time | peak RSS |\n"
            "| --- | ---: | ---: | ---: | ---: | ---: | ---: |")


def table_row(row) -> str:
    return (f"| {row['config']} | {row['trainable_params']:,} | {row['share_pct']:.2f}% | "
            f"{row['file_bytes'] / 1e6:.2f} MB | {_score(row)} | {row['train_s']:.0f} s | "
            f"{row['peak_rss_mb']:.0f} MB |")


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


def write_outputs(out: Path, header: dict, rows: list[dict]):
    """OUT/compare.json, OUT/compare.md and OUT/compare.png from the runs finished so far."""
    peak = own_peak_rss_mb()
    (out / "compare.json").write_text(json.dumps({**header, "compare_peak_rss_mb": peak, "runs": rows},
                                                 indent=2) + "\n")
    metric = rows[0]["dev_metric"] if rows else "metric"
    s = header["settings"]
    lines = [f"`{header['command']}`", "",
             f"{header['task']}: {s['steps']} steps of batch {s['batch_size']}, max length "
             f"{s['max_length']}, seed {s['seed']}; backbone {header['backbone_params']:,} parameters. "
             f"{header['machine'].get('model_name', '?')}, {header['date']}.", "",
             table_header(metric)] + [table_row(r) for r in rows]
    (out / "compare.md").write_text("\n".join(lines) + "\n")
    if rows:
        from .compare_plot import plot

        plot(rows, header, out / "compare.png")


def sweep_dest(flag: str) -> str:
    """"--lora-ranks" -> "lora_ranks" (the argparse name, and the key in compare.json's settings)."""
    return flag.lstrip("-").replace("-", "_")


def _settings(argv: list[str]) -> list[str]:
    """A run's train options without its --out folder: a compare folder moved elsewhere still skips."""
    i = argv.index("--out") if "--out" in argv else len(argv)
    return argv[:i] + argv[i + 2:]


def _metric(task: str) -> str:
    """The first metric of a built-in task (the table's dev column), before any run has finished."""
    from .tasks import TASKS

    return TASKS[task].metrics[0] if task in TASKS else "metric"


# --- the command ----------------------------------------------------------------------------------
def backbone_params(weights) -> int:
    """The number of parameters in the checkpoint (embeddings and encoder), from its config."""
    import numpy as np

    from .config import BertConfig
    from .io.weights import expected_shapes

    if weights is None:
        from .io.hub import ensure_checkpoint

        weights = ensure_checkpoint()
    config = Path(weights) / "config.json"
    if not config.is_file():
        raise ConfigError(f"{weights}: no config.json in this checkpoint folder")
    return sum(int(np.prod(s)) for s in expected_shapes(BertConfig.from_json(config)).values())


def main(args, argv: list[str]) -> int:
    """Train every configuration that has no finished result yet; print a row per run as it ends."""
    from .checkpoints import prepare_out

    own = args.train_file is not None or args.dev_file is not None
    if args.task is None and not own:
        raise ConfigError("name a task (sst2, bbc-news, ...) or give your own data with --train-file "
                          "and --dev-file")
    if args.task is not None and own:
        raise ConfigError(f"give a task ({args.task}) or --train-file/--dev-file, not both")
    if own and (args.train_file is None or args.dev_file is None):
        raise ConfigError("--train-file and --dev-file: give both")
    task = args.task or "custom"
    out = prepare_out(args.out or f"runs/compare-{task}")
    values = {flag: getattr(args, sweep_dest(flag)) for flag in sweeps()}
    runs = plan(args.methods, values)
    header = {"command": shlex.join(["minadapt", *argv]), "task": task,
              "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
              "machine": machine(), "minadapt_commit": git_commit(),
              "settings": {"steps": args.steps, "batch_size": args.batch_size, "seed": args.seed,
                           "max_length": args.max_length, "train_subset": args.train_subset,
                           "methods": args.methods, "runs": [r.name for r in runs],
                           **{sweep_dest(f): v for f, v in values.items()}},
              "backbone_params": backbone_params(args.weights)}
    print(f"compare {task}: {len(runs)} runs of {args.steps} steps (batch {args.batch_size}, seed "
          f"{args.seed}, max length {args.max_length}) in {out}/", flush=True)
    commands = {run.name: train_argv(run, args, out / run.name) for run in runs}
    finished = {}  # run name -> its row, for the runs whose folder holds result.json
    for run in runs:
        done = out / run.name / RESULT
        if done.is_file():
            row = json.loads(done.read_text())
            if _settings(row.get("train_argv", [])) != _settings(commands[run.name][1:]):
                raise ConfigError(f"{done.parent}: finished with other settings "
                                  f"({shlex.join(row.get('train_argv', []))}); give another --out, "
                                  "or delete that folder to train it again")
            finished[run.name] = row
    print(table_header(next(iter(finished.values()))["dev_metric"] if finished else _metric(task)))
    for name, row in finished.items():
        print(table_row(row) + "  (finished earlier, skipped)", flush=True)
    for run in runs:
        if run.name in finished:
            continue
        folder = out / run.name
        folder.mkdir(exist_ok=True)
        try:
            code, wall, peak = run_child(commands[run.name], folder / "train.log")
        except KeyboardInterrupt:
            print(f"interrupted during {run.name}; the {len(finished)} finished runs are in "
                  f"{out}/compare.md (the same command again continues)", file=sys.stderr)
            return 130
        if code != 0:
            log = (folder / "train.log").read_text(errors="replace").strip().splitlines()
            raise MinadaptError(f"{run.name}: `minadapt train` failed (exit {code}): "
                                f"{log[-1] if log else 'no output'} (see {folder / 'train.log'})")
        row = collect(run, folder, wall, peak, header["backbone_params"])
        row["train_argv"] = commands[run.name][1:]  # what a rerun must match to skip it
        (folder / RESULT).write_text(json.dumps(row, indent=2) + "\n")
        finished[run.name] = row
        print(table_row(row), flush=True)
        write_outputs(out, header, [finished[r.name] for r in runs if r.name in finished])
    if finished:  # (also when every run had finished before)
        write_outputs(out, header, [finished[r.name] for r in runs if r.name in finished])
    print(f"table {out / 'compare.md'}\njson  {out / 'compare.json'}\nplot  {out / 'compare.png'}")
    return 0
