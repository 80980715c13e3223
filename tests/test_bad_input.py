"""Nonsense never trains silently: every bad option, file and number ends in one clear message and
exit code 1 (2 for argparse's usage errors), never a traceback and never a "successful" run.

CASES is the table: one row per bad input, run through `minadapt.cli.main` in-process. To cover a
new option or command, add a row; `test_every_option_and_command_is_in_the_table` fails until you do.
"""
import errno
import json
import re
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pytest

from minadapt.io import hub
from minadapt.cli import COMMANDS, build_parser, main
from minadapt.config import Number
from minadapt.errors import ConfigError, WeightsError
from minadapt.checkpoints import LOCK_NAME, out_lock
from minadapt.train import TrainConfig, train
from minadapt.io.weights import read_safetensors, save_tensors
from tests.test_hub import FILES, fake_ckpt, serve, server, sha  # noqa: F401 (fixtures)

ROWS = ["a gorgeous , witty movie\t1", "dull and lifeless\t0", "i loved it\t1", "a mess\t0"] * 2


class Case(NamedTuple):
    argv: str  # the command line; {name} is replaced by the path of fixture `places[name]`
    by: str  # who refuses it: "argparse" (usage, then an error line) or "minadapt" (one line);
    #          the exit code is 2 either way
    says: tuple  # what the message must name (the option, the file, the tensor, ...)
    one_line: bool = True  # False: the first line says what is wrong, more lines list where it looked


T = "train sst2 --data-dir {data} --weights {ckpt} --out {out} --max-steps 1 "
C = "compare sst2 --data-dir {data} --weights {ckpt} --out {out} --max-steps 1 "
CASES = [
    # --- train: numbers (argparse types, exit 2) ---
    Case(T + "--lr -1", "argparse", ("--lr", "> 0", "'-1'")),
    Case(T + "--lr nan", "argparse", ("--lr", "'nan'")),
    Case(T + "--lr inf", "argparse", ("--lr", "'inf'")),
    Case(T + "--lr fast", "argparse", ("--lr", "'fast'")),
    Case(T + "--epochs 0", "argparse", ("--epochs", "> 0")),
    Case(T + "--epochs -1", "argparse", ("--epochs",)),
    Case(T + "--epochs nan", "argparse", ("--epochs",)),
    Case(T + "--max-steps 0", "argparse", ("--max-steps", ">= 1")),
    Case(T + "--max-steps 2.5", "argparse", ("--max-steps", "integer")),
    Case(T + "--warmup 2", "argparse", ("--warmup", "from 0 to 1")),
    Case(T + "--warmup -0.1", "argparse", ("--warmup",)),
    Case(T + "--weight-decay -1", "argparse", ("--weight-decay", ">= 0")),
    Case(T + "--weight-decay nan", "argparse", ("--weight-decay",)),
    Case(T + "--batch-size 0", "argparse", ("--batch-size", ">= 1")),
    Case(T + "--batch-size -3", "argparse", ("--batch-size",)),
    Case(T + "--bottleneck 0", "argparse", ("--bottleneck", ">= 1")),
    Case(T + "--seed -1", "argparse", ("--seed", ">= 0")),
    Case(T + "--eval-every -1", "argparse", ("--eval-every", ">= 0")),
    Case(T + "--log-every 0", "argparse", ("--log-every", ">= 1")),
    Case(T + "--train-subset 0", "argparse", ("--train-subset", ">= 1")),
    Case(T + "--non-linearity tanh", "argparse", ("--non-linearity", "tanh")),
    Case(T + "--device tpu", "argparse", ("--device", "tpu")),
    Case(T + "--max-length 2", "argparse", ("--max-length", "from 3 to 512")),
    Case(T + "--max-length 600", "argparse", ("--max-length",)),
    Case(T + "--method adapters", "argparse", ("--method", "adapters")),
    Case(T + "--lora-rank 0", "argparse", ("--lora-rank", ">= 1")),
    Case(T + "--adapter-layers 0", "argparse", ("--adapter-layers", "'0'")),
    Case(T + "--adapter-layers 9", "minadapt", ("adapter_layers 9", "only 6 layers")),
    Case(T + "--lora-alpha 0", "argparse", ("--lora-alpha", "> 0")),
    Case(T + "--lora-dropout 1", "argparse", ("--lora-dropout", "from 0 to 0.99")),
    Case(T + "--preset paper", "argparse", ("--preset", "houlsby-paper")),
    Case(T + "--keep first", "argparse", ("--keep", "first")),
    Case(T + "--early-stopping-patience 0", "argparse", ("--early-stopping-patience", ">= 1")),
    Case(T + "--name a.b", "minadapt", ("--name", "'a.b'", "letters, digits")),
    Case(T + "--validation-file {nowhere}", "minadapt", ("nowhere",)),
    Case("export {adapter} --format onnx --out {out}", "argparse", ("--format", "onnx")),
    Case("export {adapter} --format adapterhub --out {out} --device tpu", "argparse", ("--device", "tpu")),
    Case("export {adapter} --format peft --out {out}", "minadapt", ("not LoRA",)),
    Case("predict --adapter {adapter} --format yaml hi", "argparse", ("--format", "yaml")),
    Case("predict --adapter {adapter} --batch-size 0 hi", "argparse", ("--batch-size", ">= 1")),
    Case("predict --adapter {adapter} --input {nowhere}", "minadapt", ("nowhere", "no such file")),
    Case("predict --adapter {adapter} --adapter {adapter} hi", "minadapt",
         ("already holds a task named 'sst2'", "--adapter NEWNAME=")),
    Case(T + "--method prompt --virtual-tokens 0", "argparse", ("--virtual-tokens", ">= 1")),
    Case(T + "--method prompt --prompt-init text", "argparse", ("--prompt-init", "text")),
    Case(T + "--method prefix --prefix-width 0", "argparse", ("--prefix-width", ">= 1")),
    # --- train: options another method uses (exit 1, before anything is loaded) ---
    Case(T + "--lora-rank 4", "minadapt", ("--lora-rank", "only --method lora", "--method houlsby")),
    Case(T + "--method houlsby --lora-alpha 8", "minadapt", ("--lora-alpha", "only --method lora")),
    Case(T + "--method pfeiffer --lora-dropout 0.2", "minadapt", ("--lora-dropout", "--method pfeiffer")),
    Case(T + "--method lora --bottleneck 16", "minadapt", ("--bottleneck", "houlsby or pfeiffer", "--method lora")),
    Case(T + "--method probe --non-linearity relu", "minadapt", ("--non-linearity", "--method probe")),
    Case(T + "--method full --train-layer-norms", "minadapt", ("--train-layer-norms", "--method full")),
    Case(T + "--method pfeiffer --preset houlsby-paper", "minadapt", ("--preset", "only --method houlsby")),
    Case(T + "--method lora --virtual-tokens 8", "minadapt", ("--virtual-tokens", "prompt or prefix", "--method lora")),
    Case(T + "--method prompt --prefix-projection", "minadapt", ("--prefix-projection", "only --method prefix")),
    Case(T + "--preset houlsby-paper --non-linearity relu", "minadapt", ("preset 'houlsby-paper'",
                                                                "non_linearity")),
    # --- train --fuse: the adapters to fuse (exit 1) ---
    Case(T + "--fuse {nowhere}.safetensors {adapter}", "minadapt",
         ("{nowhere}.safetensors", "no such adapter file or directory")),
    Case(T + "--fuse {adapter}", "minadapt", ("fusion 'sst2-fusion'", "2 or more different adapters")),
    Case(T + "--fuse {adapter} {other_backbone}", "minadapt",
         ("{other_backbone}", "made for backbone tiny", "hidden 8", "hidden 384")),
    Case(T + "--method houlsby --fuse {adapter} {three_labels}", "minadapt",
         ("--fuse", "only --method fusion", "--method houlsby")),
    Case(T + "--method fusion", "minadapt", ("name the adapters to fuse", "--fuse")),
    Case("eval --adapter {fusion} --with {adapter} --data-dir {data} --weights {ckpt}", "minadapt",
         ("fuses adapters sst2, nli", "nli (sha256", "is missing")),
    Case("predict --adapter {fusion} --weights {ckpt} hello", "minadapt",
         ("fuses adapters sst2, nli", "sst2 (sha256", "is missing", "nli (sha256", "load them first")),
    Case("serve --adapter {three_labels} --port 70000", "argparse", ("--port", "from 0 to 65535")),
    Case("serve --adapter {three_labels} --host bad_host!", "argparse", ("--host",)),
    Case("serve --adapter {three_labels} --max-batch 0", "argparse", ("--max-batch",)),
    Case("serve --adapter {three_labels} --device tpu", "argparse", ("--device", "tpu")),
    Case("serve --adapter {three_labels} --workers 0", "argparse", ("--workers", "from 1 to 256")),
    Case("serve --adapter {three_labels} --max-connections 0", "argparse", ("--max-connections",)),
    Case("serve --adapter {three_labels} --backlog x", "argparse", ("--backlog",)),
    Case("serve --adapter {three_labels} --header-timeout 0", "argparse", ("--header-timeout", "more than 0")),
    Case("serve --adapter {three_labels} --body-timeout nan", "argparse", ("--body-timeout",)),
    Case("serve --adapter {three_labels} --keep-alive -1", "argparse", ("--keep-alive",)),
    Case("serve --adapter {three_labels} --shutdown-timeout 1e9", "argparse", ("--shutdown-timeout", "3600")),
    Case("serve --adapter {three_labels} --log-requests --port x", "argparse", ("--port",)),
    Case("serve --adapter {three_labels}.missing --weights {ckpt}", "minadapt",
         ("{three_labels}.missing", "no such adapter file or directory")),
    Case("train mnli", "argparse", ("task", "mnli")),
    Case("train", "minadapt", ("name a task", "--train-file")),
    Case("train sst2 --train-file {a_file} --dev-file {a_file}", "minadapt", ("not both",)),
    Case("train --train-file {a_file}", "minadapt", ("train_file and dev_file",)),
    Case("predict --adapter {three_labels} --task other --weights {ckpt} hello", "minadapt",
         ("--task other", "not among")),
    # --- train: files and folders (exit 1, before any model is loaded) ---
    Case("train sst2 --data-dir {data} --weights {ckpt} --out {a_file}", "minadapt",
         ("{a_file}", "is a file", "--out")),
    Case("train sst2 --data-dir {data} --weights {ckpt} --out {a_file}/sub", "minadapt",
         ("{a_file}/sub", "--out", "Not a directory")),
    Case("train sst2 --data-dir {data} --weights {ckpt} --out /proc/minadapt-out", "minadapt",
         ("/proc/minadapt-out", "--out")),
    Case("train sst2 --data-dir {data} --weights {ckpt} --out {busy_out}", "minadapt",
         ("{busy_out}", "another training run", f"pid {os.getppid()}", LOCK_NAME)),
    Case(T + "--resume", "minadapt", ("--resume", "no checkpoint", "checkpoint.safetensors")),
    Case(T.replace("{ckpt}", "{no_tokenizer}"), "minadapt", ("{no_tokenizer}", "tokenizer.json")),
    Case(T.replace("{ckpt}", "{nowhere}"), "minadapt", ("{nowhere}", "no such checkpoint folder")),
    Case(T.replace("{data}", "{nowhere}"), "minadapt", ("{nowhere}",), one_line=False),
    Case(T.replace("{data}", "{bad_data}"), "minadapt", ("train.tsv:3", "label")),
    # --- eval: an adapter that does not fit, or is damaged ---
    Case("eval --adapter {nan_adapter} --data-dir {data} --weights {ckpt}", "minadapt",
         ("{nan_adapter}", "'heads.sst2.4.bias'", "NaN")),
    Case("eval --adapter {inf_adapter} --data-dir {data} --weights {ckpt}", "minadapt",
         ("{inf_adapter}", "Inf")),
    Case("eval --adapter {three_labels} --data-dir {data} --weights {ckpt}", "minadapt",
         ("{three_labels}", "3 labels", "neg, neutral, pos", "sst2 has 2 labels")),
    Case("eval --adapter {other_names} --data-dir {data} --weights {ckpt}", "minadapt",
         ("{other_names}", "yes, no", "negative, positive")),
    Case("eval --adapter {nowhere}.safetensors --data-dir {data} --weights {ckpt}", "minadapt",
         ("{nowhere}.safetensors", "no such adapter file or directory")),
    Case("eval --adapter {a_file} --data-dir {data} --weights {ckpt}", "minadapt",
         ("{a_file}", "not a readable safetensors file")),
    Case("eval --adapter {adapter} --data-dir {data} --weights {no_tokenizer}", "minadapt",
         ("{no_tokenizer}", "tokenizer.json")),
    Case("eval --adapter {adapter} --data-dir {nowhere} --weights {ckpt}", "minadapt", ("{nowhere}",),
         one_line=False),
    Case("eval --data-dir {data}", "argparse", ("--adapter",)),
    Case("eval --adapter {adapter} --device tpu", "argparse", ("--device", "tpu")),
    # --- predict ---
    Case("predict --adapter {nan_adapter} --weights {ckpt} hello", "minadapt",
         ("{nan_adapter}", "'heads.sst2.4.bias'")),
    Case("predict --adapter {nowhere}.safetensors --weights {ckpt} hello", "minadapt",
         ("{nowhere}.safetensors", "no such adapter file or directory")),
    Case("predict --adapter {adapter} --weights {no_tokenizer} hello", "minadapt", ("tokenizer.json",)),
    Case("predict --adapter {adapter} --device tpu hello", "argparse", ("--device", "tpu")),
    # --- compare: its options' types (exit 2), then tasks and folders (exit 1) ---
    Case(C + "--methods probe,adapters", "argparse", ("--methods", "'probe,adapters'")),
    Case(C + "--methods ,", "argparse", ("--methods",)),
    Case(C + "--bottlenecks 8,0", "argparse", ("--bottlenecks", "'8,0'")),
    Case(C + "--lora-ranks x", "argparse", ("--lora-ranks", "'x'")),
    Case(C + "--adapter-layers 0", "argparse", ("--adapter-layers", "'0'")),
    Case(C + "--epochs 0", "argparse", ("--epochs",)),
    Case(C + "--seeds 0", "argparse", ("--seeds", ">= 1")),
    Case(C + "--lr-factors 1,-2", "argparse", ("--lr-factors", "'1,-2'")),
    Case(C + "--lrs adapters=1e-3", "argparse", ("--lrs", "'adapters=1e-3'")),
    Case(C + "--validation-size 0", "argparse", ("--validation-size", ">= 1")),
    Case(C + "--validation-size 99", "minadapt", ("validation size 99", "the training set has")),
    Case(C + "--split-seed -1", "argparse", ("--split-seed",)),
    Case(C + "--evals 0", "argparse", ("--evals", ">= 1")),
    Case(C + "--max-steps 0", "argparse", ("--max-steps", ">= 1")),
    Case(C + "--batch-size 0", "argparse", ("--batch-size", ">= 1")),
    Case(C + "--seed -1", "argparse", ("--seed",)),
    Case(C + "--max-length 2", "argparse", ("--max-length", "from 3 to 512")),
    Case(C + "--train-subset 0", "argparse", ("--train-subset",)),
    Case(C + "--device tpu", "argparse", ("--device", "tpu")),
    Case("compare mnli", "argparse", ("task", "mnli")),
    Case("compare", "minadapt", ("name a task", "--train-file")),
    Case("compare sst2 --train-file {a_file} --dev-file {a_file}", "minadapt", ("not both",)),
    Case("compare --train-file {a_file}", "minadapt", ("--train-file and --dev-file", "give both")),
    Case("compare sst2 --data-dir {data} --weights {ckpt} --out {a_file}", "minadapt", ("{a_file}", "is a file")),
    Case("compare sst2 --data-dir {data} --weights {nowhere} --out {out}", "minadapt", ("{nowhere}", "config.json")),
    # --- download, info ---
    Case("download bert-huge", "minadapt", ("'bert-huge'", "cannot be reached")),  # offline_hub below
    Case("predict --model nobody/bert-huge --adapter {adapter} hi", "minadapt",
         ("'nobody/bert-huge'", "cannot be reached")),
    Case("info {nowhere}", "minadapt", ("{nowhere}", "config.json")),
    Case("info {a_file}", "minadapt", ("{a_file}", "not a readable safetensors file")),
    Case("predict --adapter {adapter} --weights {nan_ckpt} hello", "minadapt",
         ("{nan_ckpt}/model.safetensors", "'embeddings.LayerNorm.bias'", "NaN")),
    # --- bench: its options' own types ---
    Case("bench --batch-size 0", "argparse", ("--batch-size",)),
    Case("bench --lengths 0,16", "argparse", ("--lengths",)),
    Case("bench --lengths x", "argparse", ("--lengths",)),
    Case("bench --batch-size x", "argparse", ("--batch-size",)),
    Case("bench --warmup-steps -1", "argparse", ("--warmup-steps",)),
    Case("bench --steps 0", "argparse", ("--steps",)),
    Case("bench --ops plain", "argparse", ("--ops",)),
    Case("bench --device tpu", "argparse", ("--device",)),
]


# --------------------------------------------------------------------------- the bad inputs

@pytest.fixture(autouse=True)
def offline_hub(monkeypatch, tmp_path):
    """The hub unreachable (nothing listens on port 1) and an empty Hugging Face cache, so a model
    name fails the same way on every machine; tests that serve a hub set HF_ENDPOINT themselves."""
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf-cache"))


@pytest.fixture(scope="module")
def places(tmp_path_factory, checkpoint_dir):
    """Every path a row of CASES can name: good data and adapters, and the damaged ones."""
    root = tmp_path_factory.mktemp("bad")
    p = {"ckpt": checkpoint_dir, "nowhere": root / "nowhere", "out": root / "out"}
    p["data"] = _tsv_folder(root / "data", ROWS)
    p["bad_data"] = _tsv_folder(root / "bad_data", [ROWS[0], "a film\tmaybe"])
    p["a_file"] = root / "a_file.txt"
    p["a_file"].write_text("not a folder, not a safetensors file\n")
    p["busy_out"] = root / "busy"
    p["busy_out"].mkdir()
    (p["busy_out"] / LOCK_NAME).write_text(f"{os.getppid()}\n")  # our parent: a live process
    p["no_tokenizer"] = root / "no_tokenizer"
    _copy_checkpoint(checkpoint_dir, p["no_tokenizer"], without="tokenizer.json")

    r = train(TrainConfig(data_dir=str(p["data"]), weights=str(checkpoint_dir), out=str(root / "run"),
                          max_steps=1, batch_size=4, options={"bottleneck": 2}, eval_every=0), progress=False)
    p["adapter"] = r.adapter_path
    tensors, meta = read_safetensors(r.adapter_path)
    for name, value in (("nan_adapter", np.nan), ("inf_adapter", -np.inf)):
        bad = {k: v.copy() for k, v in tensors.items()}
        bad["heads.sst2.4.bias"][1] = value
        p[name] = root / f"{name}.safetensors"
        save_tensors(p[name], bad, meta)
    p["other_names"] = root / "other_names.safetensors"
    save_tensors(p["other_names"], tensors, {**meta, "labels": json.dumps(["yes", "no"])})

    import minadapt

    m = minadapt.load_model(checkpoint_dir)
    m.add_adapter("nli", bottleneck=2)
    m.add_classification_head("nli", num_labels=3)
    p["three_labels"] = m.save_adapter(root / "three_labels.safetensors",
                                       extra_metadata={"labels": ["neg", "neutral", "pos"]})
    f = minadapt.load_model(checkpoint_dir)  # sst2 and nli, fused: a fusion file that needs both
    f.add_classification_head("both", num_labels=2)
    f.add("both", "fusion", fuse=(str(p["adapter"]), str(p["three_labels"])))
    p["fusion"] = f.save_adapter(root / "fusion.safetensors", adapter="both")
    from tests.tiny import tiny_model
    tiny = tiny_model(dtype=np.float32)
    tiny.backbone = {"name": "tiny", "sha256": "0" * 64}
    tiny.add_adapter("sst2", bottleneck=2)
    tiny.add_classification_head("sst2")
    p["other_backbone"] = tiny.save_adapter(root / "other_backbone.safetensors")
    p["nan_ckpt"] = root / "nan_ckpt"
    _copy_checkpoint(checkpoint_dir, p["nan_ckpt"], without="model.safetensors")
    weights, wmeta = read_safetensors(checkpoint_dir / "model.safetensors")
    weights["embeddings.LayerNorm.bias"][7] = np.nan
    save_tensors(p["nan_ckpt"] / "model.safetensors", weights, wmeta)
    return p


def _tsv_folder(folder, rows):
    folder.mkdir()
    for split in ("train", "dev"):
        (folder / f"{split}.tsv").write_text("sentence\tlabel\n" + "\n".join(rows) + "\n")
    return folder


def _copy_checkpoint(src, dest, without):
    dest.mkdir()
    for f in ("config.json", "tokenizer.json", "vocab.txt", "model.safetensors"):
        if f == without:
            continue
        if f == "model.safetensors":
            (dest / f).symlink_to(src / f)
        else:
            shutil.copy(src / f, dest / f)


def run_cli(argv, capsys):
    """`minadapt ARGV` in this process: (exit code, stdout, stderr); argparse's exit is caught."""
    try:
        code = main(argv)
    except SystemExit as e:
        code = e.code
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize("case", CASES, ids=[c.argv.replace(T, "train ") for c in CASES])
def test_bad_input_is_one_clear_message(case, places, capsys):
    fill = lambda s: s.format(**{k: str(v) for k, v in places.items()})
    code, out, err = run_cli(fill(case.argv).split(), capsys)
    assert code == 2, (code, err)
    assert "Traceback" not in err
    for needle in case.says:
        assert fill(needle) in err, f"{fill(needle)!r} not in {err!r}"
    lines = err.strip().splitlines()
    if case.by == "minadapt":  # minadapt's own: one line (a few for "not found, looked in: ...")
        assert lines[0].startswith(f"minadapt {case.argv.split()[0]}: error: "), err
        assert len(lines) == 1 or not case.one_line, err
    else:  # argparse's: usage, then one error line
        assert lines[-1].startswith("minadapt ") and "error: " in lines[-1], err
    assert "dev accuracy" not in out  # nothing trained or evaluated


def test_every_option_and_command_is_in_the_table():
    """Each command has rows in CASES, and every option that takes a number (or any typed value)
    has a validating type (never bare int/float) and at least one row giving it a bad value."""
    parser = build_parser()
    commands = parser._subparsers._group_actions[0].choices
    assert set(commands) == set(COMMANDS)
    covered = {c.argv.split()[0] for c in CASES}
    assert set(COMMANDS) <= covered, f"commands without a row in CASES: {set(COMMANDS) - covered}"
    for name, sub in commands.items():
        bad_values = {tok for c in CASES if c.argv.split()[0] == name
                      for tok in c.argv.replace(T, "").split() if tok.startswith("--")}
        for action in sub._actions:
            if not action.option_strings or action.nargs == 0 or action.option_strings[0] == "--help":
                continue
            assert action.type not in (int, float), f"{name} {action.option_strings[0]}: bare {action.type}"
            numeric_default = isinstance(action.default, (int, float)) and not isinstance(action.default, bool)
            assert not (numeric_default and action.type is None), \
                f"{name} {action.option_strings[0]}: a numeric default but no type (it would be a string)"
            if action.type is not None or action.choices is not None:
                assert action.option_strings[0] in bad_values, \
                    f"`minadapt {name} {action.option_strings[0]}` has no row in CASES"


def test_train_options_use_the_config_rules():
    """The CLI and TrainConfig apply the same rule to the same number."""
    sub = build_parser()._subparsers._group_actions[0].choices["train"]
    types = {a.dest: a.type for a in sub._actions}
    for field, rule in TrainConfig.RULES.items():
        if field in types:
            assert types[field] is rule, field


# --------------------------------------------------------------------------- the library API

BAD_CONFIG = [("lr", -1.0), ("lr", float("nan")), ("lr", 0.0), ("epochs", 0), ("epochs", float("inf")),
              ("max_steps", 0), ("max_steps", 2.5), ("warmup", 2.0), ("weight_decay", -1.0),
              ("batch_size", 0), ("batch_size", -3), ("batch_size", True),
              ("seed", -1), ("eval_every", -1), ("log_every", 0), ("train_subset", 0),
              ("max_grad_norm", 0.0), ("max_grad_norm", float("nan")), ("lr", "0.1"),
              ("max_length", 2), ("max_length", 513), ("device", "tpu"), ("method", "adapters"),
              ("early_stopping_patience", 0), ("keep", "first"), ("adapter_name", "a.b")]
# a method's options are its config's: (method, option, bad value, what the message says)
BAD_OPTIONS = [("houlsby", "bottleneck", 0, "bottleneck: expected"),
               ("houlsby", "non_linearity", "tanh", "non_linearity 'tanh': expected"),
               ("houlsby", "preset", "paper", "preset 'paper': expected"),
               ("lora", "r", 0, "r: expected"), ("lora", "r", 2.0, "r: expected"),
               ("lora", "alpha", 0.0, "alpha: expected"), ("lora", "alpha", float("inf"), "alpha: expected"),
               ("lora", "dropout", 1.0, "dropout: expected"), ("lora", "dropout", -0.1, "dropout: expected"),
               ("lora", "bottleneck", 8, "option 'bottleneck': only method houlsby or pfeiffer uses it")]


@pytest.mark.parametrize("field,value", BAD_CONFIG)
def test_train_config_refuses_nonsense(field, value):
    with pytest.raises(ConfigError, match=f"TrainConfig.{field}: expected"):
        TrainConfig(**{field: value})


@pytest.mark.parametrize("method,option,value,says", BAD_OPTIONS)
def test_train_config_refuses_bad_method_options(method, option, value, says):
    with pytest.raises(ConfigError, match=f"TrainConfig.options: {re.escape(says)}"):
        TrainConfig(method=method, options={option: value})


def test_train_config_accepts_sensible_values():
    TrainConfig(lr=1e-4, epochs=0.5, max_steps=None, warmup=0.0, weight_decay=0, batch_size=np.int64(8),
                seed=0, eval_every=0, train_subset=None)
    TrainConfig(warmup=1.0, max_steps=1, train_subset=1)
    assert sorted(TrainConfig.RULES) == sorted(
        {f for f, _ in BAD_CONFIG} - {"device", "method", "keep", "adapter_name"}), "a rule without a bad case"


def test_number_rule_as_argparse_type():
    import argparse

    rule = Number(float, low=0, low_open=True)
    assert rule("0.5") == 0.5
    for text in ("0", "-1", "nan", "inf", "x"):
        with pytest.raises(argparse.ArgumentTypeError, match="> 0"):
            rule(text)


# --------------------------------------------------------------------------- --out

@pytest.mark.parametrize("bad", ["a_file", "proc"])
def test_out_is_checked_before_anything_is_loaded(bad, places, capsys, monkeypatch):
    def refuse(*a, **k):
        raise AssertionError("loaded before --out was checked")

    monkeypatch.setattr("minadapt.model.load_model", refuse)
    monkeypatch.setattr("minadapt.tasks.sst2.load_sst2", refuse)
    out = places["a_file"] if bad == "a_file" else "/proc/minadapt-out"
    code, _, err = run_cli(["train", "sst2", "--out", str(out)], capsys)
    assert code == 2 and str(out) in err


def test_second_run_on_the_same_out_is_refused(places, tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    with out_lock(out) as lock:  # a run in progress (this process)
        assert lock.read_text().strip() == str(os.getpid())
        code, _, err = run_cli((T + "--bottleneck 2").format(
            data=places["data"], ckpt=places["ckpt"], out=out).split(), capsys)
        assert code == 2 and f"pid {os.getpid()}" in err and "another training run" in err
        assert lock.is_file()  # the refused run left the first run's lock alone
    assert not lock.exists()  # removed at exit
    assert sorted(p.name for p in out.iterdir()) == []  # the refused run wrote nothing


def test_stale_lock_from_a_dead_process_is_taken_over(places, tmp_path, capsys):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    out = tmp_path / "out"
    out.mkdir()
    (out / LOCK_NAME).write_text(f"{dead.pid}\n")
    code, stdout, err = run_cli((T + "--bottleneck 2 --batch-size 4").format(
        data=places["data"], ckpt=places["ckpt"], out=out).split(), capsys)
    assert code == 0 and "dev accuracy" in stdout
    assert f"pid {dead.pid} is not running" in err
    assert not (out / LOCK_NAME).exists()


# --------------------------------------------------------------------------- a diverging run

def _poison(monkeypatch, at_call, what):
    """Make the `at_call`-th Model.loss_and_grads return a NaN loss, or an Inf gradient."""
    from minadapt.model import Model

    original, calls = Model.loss_and_grads, []

    def poisoned(self, *a, **k):
        loss, logits, grads = original(self, *a, **k)
        calls.append(1)
        if len(calls) == at_call:
            if what == "loss":
                loss = loss * np.nan
            else:
                grads[sorted(grads)[0]][...] = np.inf  # in place: the arrays may share one buffer
        return loss, logits, grads

    monkeypatch.setattr(Model, "loss_and_grads", poisoned)


@pytest.mark.parametrize("what", ["loss", "gradient"])
def test_nan_stops_training_keeps_the_last_good_checkpoint_and_resumes(what, places, tmp_path,
                                                                      capsys, monkeypatch):
    argv = (f"train sst2 --data-dir {places['data']} --weights {places['ckpt']} --out {{out}} "
            "--max-steps 6 --eval-every 2 --batch-size 4 --bottleneck 2 --lr 0.01 --seed 3")
    code, _, _ = run_cli(argv.format(out=tmp_path / "straight").split(), capsys)
    assert code == 0

    out = tmp_path / "run"
    with monkeypatch.context() as m:
        _poison(m, at_call=5, what=what)
        code, stdout, err = run_cli(argv.format(out=out).split(), capsys)
    last = err.strip().splitlines()[-1]  # after the progress bar's lines
    assert code == 2 and "Traceback" not in err and last.startswith("minadapt train: error: ")
    assert "training stopped at step 5/6" in last and "not both finite" in last and "--lr" in last
    assert f"{out / 'checkpoint.safetensors'} (step 4)" in last and "--resume" in last
    assert ("loss is nan" if what == "loss" else "gradient norm inf") in last
    tensors, meta = read_safetensors(out / "checkpoint.safetensors")
    assert meta["step"] == "4" and all(np.isfinite(v).all() for v in tensors.values())
    assert not (out / "adapter.safetensors").exists() and not (out / LOCK_NAME).exists()

    code, stdout, err = run_cli((argv + " --resume").format(out=out).split(), capsys)
    assert code == 0 and "after 6 steps" in stdout
    a, _ = read_safetensors(tmp_path / "straight" / "adapter.safetensors")
    b, _ = read_safetensors(out / "adapter.safetensors")
    assert all(np.array_equal(a[k], b[k]) for k in a)  # as if it had never stopped


def test_nan_before_any_checkpoint_says_so(places, tmp_path, capsys, monkeypatch):
    _poison(monkeypatch, at_call=1, what="loss")
    code, _, err = run_cli((T + "--bottleneck 2").format(
        data=places["data"], ckpt=places["ckpt"], out=tmp_path / "o").split(), capsys)
    assert code == 2 and "step 1/1" in err and "no checkpoint was saved" in err


def test_checkpoint_with_nan_is_never_written(places, tmp_path):
    import minadapt
    from minadapt.optim import AdamW
    from minadapt.checkpoints import save_training_checkpoint

    m = minadapt.load_model(places["ckpt"])
    m.add_adapter("sst2", bottleneck=2)
    m.add_classification_head("sst2")
    opt = AdamW({k: m.params[k] for k in m.trainable})
    name = sorted(m.trainable)[0]
    m.params[name].flat[0] = np.nan
    with pytest.raises(WeightsError, match=name):
        save_training_checkpoint(tmp_path / "c.safetensors", m, opt, 1, TrainConfig(), [])
    assert not (tmp_path / "c.safetensors").exists()


# --------------------------------------------------------------------------- download repairs

def test_download_repairs_damaged_files(server, tmp_path, fake_ckpt, monkeypatch, capsys):
    for f, d in FILES.items():
        serve(server, f"org/tiny/resolve/main/{f}", d)
    monkeypatch.setattr(hub, "CHECKPOINTS", {"tiny": {**fake_ckpt, "sizes": {
        f: len(d) for f, d in FILES.items()}}})
    monkeypatch.setenv("HF_ENDPOINT", server.url)
    folder = tmp_path / "tiny"
    folder.mkdir()
    for f, d in FILES.items():
        (folder / f).write_bytes(d)
    (folder / "model.safetensors").write_bytes(FILES["model.safetensors"][:100])  # truncated
    (folder / "vocab.txt").write_bytes(FILES["vocab.txt"].upper())  # same size, other bytes
    code, out, err = run_cli(["download", "tiny", "--weights-dir", str(tmp_path)], capsys)
    assert code == 0 and "Traceback" not in err
    assert "model.safetensors: 100 bytes, expected 10,000" in err and "vocab.txt: sha256" in err
    assert all((folder / f).read_bytes() == d for f, d in FILES.items())
    assert sorted(p for p, _ in server.requests) == ["/org/tiny/resolve/main/model.safetensors",
                                                     "/org/tiny/resolve/main/vocab.txt"]
    server.requests.clear()  # now all good: checked, and nothing fetched
    code, out, err = run_cli(["download", "tiny", "--weights-dir", str(tmp_path)], capsys)
    assert code == 0 and server.requests == [] and err == ""


def test_download_that_cannot_repair_says_so(tmp_path, fake_ckpt, monkeypatch, capsys):
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:1")
    monkeypatch.setattr(hub.subprocess, "run",
                        lambda cmd, *a, **k: subprocess.CompletedProcess(cmd, 1))
    folder = tmp_path / "tiny"
    folder.mkdir()
    for f, d in FILES.items():
        (folder / f).write_bytes(d)
    (folder / "config.json").write_bytes(b"{}")
    code, _, err = run_cli(["download", "tiny", "--weights-dir", str(tmp_path)], capsys)
    assert code == 2 and "Traceback" not in err and "config.json" in err
    assert (folder / "config.json").read_bytes() == b"{}"  # left as it was: nothing better arrived


# --------------------------------------------------------------------------- a real process

@pytest.mark.parametrize("argv,code", [(["train", "sst2", "--batch-size", "0"], 2),
                                       (["info", "/nonexistent/minadapt"], 2)])
def test_real_process_has_no_traceback(argv, code):
    r = subprocess.run([sys.executable, "-m", "minadapt.cli", *argv], capture_output=True, text=True)
    assert r.returncode == code and "Traceback" not in r.stderr and r.stderr.strip()


# --------------------------------------------------------------------------- the machine's errors

@pytest.mark.parametrize("error,says,exit_code", [
    (MemoryError(), "out of memory", 1),  # the machine's limit, not the input's fault
    (OSError(errno.ENOSPC, "No space left on device", "/runs/x/metrics.jsonl"),
     "/runs/x/metrics.jsonl: No space left on device", 2),
])
def test_machine_errors_are_one_line(error, says, exit_code, capsys, monkeypatch):
    def fail(*a, **k):
        raise error

    monkeypatch.setattr("minadapt.train.train", fail)
    code, _, err = run_cli(["train", "sst2"], capsys)
    assert code == exit_code and err.startswith(f"minadapt train: error: {says}")
    assert len(err.strip().splitlines()) == 1


def test_other_os_errors_keep_their_traceback(monkeypatch):
    """A FileNotFoundError escaping a command is a bug in minadapt: it is not dressed up."""
    def fail(*a, **k):
        raise FileNotFoundError(errno.ENOENT, "No such file or directory", "/tmp/where")

    monkeypatch.setattr("minadapt.train.train", fail)
    with pytest.raises(FileNotFoundError):
        main(["train", "sst2"])
