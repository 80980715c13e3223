"""The user's path, end to end, through the command line as a user types it: from their own files to
a server of several tasks.

  1. train three tasks from the user's own files, each with its own column names (CSV topics, JSONL
     pairs with LoRA, JSONL regression), plus SST-2 on a slice, each with --name, in one folder;
  2. one `predict` with all four and an AdapterHub directory (as task "hub"): one JSON line per
     input line, pairs to the pair task, single texts to the others, a blank line kept in place;
  3. `serve` with the same five answers what `predict` answered, and refuses the wrong shape;
  4. `eval` of each from another directory, with only its dev file;
  5. export to AdapterHub (bottleneck adapters) and PEFT (LoRA) and back: the same logits;
  6. the new bad inputs: one line, exit 2.

Runs a few training steps per task on two cores; $MINADAPT_DATA must hold sst2/ and bbc-news/.
"""
import json
import os
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest

import minadapt
from minadapt.cli import main

from user_path_data import write_user_files

FIXTURES = Path(__file__).parent / "fixtures"
DATA = Path(os.environ.get("MINADAPT_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))
QUICK = ["--max-steps", "3", "--batch-size", "8", "--max-length", "32", "--eval-every", "0"]

pytestmark = pytest.mark.skipif(not (DATA / "sst2").is_dir() or not (DATA / "bbc-news").is_dir(),
                                reason="needs $MINADAPT_DATA with sst2/ and bbc-news/")


def run(argv, capsys):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def close(a: dict, b: dict, tol=1e-5) -> bool:
    """Two predictions ({"label", "probability", "probabilities"} or {"score"}) agree."""
    if set(a) != set(b) or a.get("label") != b.get("label"):
        return False
    if "score" in a:
        return abs(a["score"] - b["score"]) <= tol
    return all(abs(a["probabilities"][k] - b["probabilities"][k]) <= tol for k in a["probabilities"])


def one_clear_line(argv, capsys, says):
    code, _, err = run(argv, capsys)
    assert code == 2 and "Traceback" not in err, err
    lines = [l for l in err.strip().splitlines() if l.startswith("minadapt")]
    assert len(lines) == 1 and all(s in lines[0] for s in says), err


@pytest.fixture(scope="module")
def trained(tmp_path_factory, checkpoint_dir):
    """The user's folder after step 1: their files under mine/, the four runs under work/runs/."""
    root = tmp_path_factory.mktemp("user")
    mine = write_user_files(DATA, root / "mine")
    work = root / "work"
    work.mkdir()
    model = ["--model", checkpoint_dir]
    own = Path("..") / "mine"  # relative paths, as a user types them from work/
    commands = {
        "news": ["--train-file", own / "news" / "train.csv", "--dev-file", own / "news" / "dev.csv",
                 "--text-column", "article", "--label-column", "topic"],
        "para": ["--train-file", own / "para" / "train.jsonl", "--dev-file", own / "para" / "dev.jsonl",
                 "--text-column", "first", "--text-pair-column", "second", "--label-column", "relation",
                 "--method", "lora"],
        "stars": ["--train-file", own / "stars" / "train.jsonl", "--dev-file", own / "stars" / "dev.jsonl",
                  "--text-column", "review", "--label-column", "stars", "--regression"],
        "sst2": ["sst2", "--data-dir", DATA / "sst2", "--train-subset", "200"],
    }
    cwd = os.getcwd()
    os.chdir(work)  # runs/NAME lands here, as in a user's project folder
    try:
        for name, argv in commands.items():
            code = main([str(a) for a in ["train", *argv, "--name", name, *model, *QUICK]])
            assert code == 0, name
    finally:
        os.chdir(cwd)
    runs = {name: work / "runs" / name / "adapter.safetensors" for name in commands}
    assert all(p.is_file() for p in runs.values())
    return root, mine, runs


INPUT = ["shares fell sharply on the stock market", "a gorgeous , witty film",
         "the film was great\tthe film was great", "", "the band released a new album",
         "a dull film\tstocks rallied today"]


def test_one_predict_runs_every_task_on_the_lines_it_reads(trained, checkpoint_dir, capsys, tmp_path):
    root, mine, runs = trained
    (tmp_path / "in.txt").write_text("\n".join(INPUT) + "\n")
    adapters = [a for name, path in runs.items() for a in ("--adapter", path)]
    adapters += ["--adapter", f"hub={FIXTURES / 'adapterhub_houlsby'}"]
    code, _, err = run(["predict", *adapters, "--model", checkpoint_dir, "--format", "jsonl",
                        "--input", tmp_path / "in.txt", "--output", tmp_path / "out.jsonl"], capsys)
    assert code == 0, err
    records = [json.loads(l) for l in (tmp_path / "out.jsonl").read_text().splitlines()]
    assert [r["line"] for r in records] == list(range(1, len(INPUT) + 1))  # one per input line
    assert records[3] == {"line": 4, "error": "blank line"} and "line 4 is blank" in err
    for r, line in zip(records, INPUT):
        if not line:
            continue
        pair = "\t" in line
        # the pair task reads the pairs, the single-text tasks the rest; "hub" (an AdapterHub
        # directory, which cannot say) reads both
        assert set(r["predictions"]) == ({"para", "hub"} if pair else {"news", "stars", "sst2", "hub"})
        assert (r.get("text_pair") is not None) == pair
        for name, p in r["predictions"].items():
            if name == "stars":
                assert set(p) == {"score"}
            else:
                assert abs(sum(p["probabilities"].values()) - 1) < 1e-6
                assert p["label"] == max(p["probabilities"], key=p["probabilities"].get)
    assert set(records[0]["predictions"]["news"]["probabilities"]) == \
        {"business", "entertainment", "politics", "sports", "tech"}
    assert set(records[2]["predictions"]["para"]["probabilities"]) == {"other", "same"}
    # each task alone answers what it answered among the five
    code, out, _ = run(["predict", "--adapter", runs["news"], "--model", checkpoint_dir, "--format",
                        "jsonl", INPUT[0]], capsys)
    assert close(json.loads(out)["predictions"]["news"], records[0]["predictions"]["news"])


def test_serve_answers_what_predict_answers(trained, checkpoint_dir, capsys, tmp_path):
    root, mine, runs = trained
    (tmp_path / "in.txt").write_text("\n".join(INPUT) + "\n")
    adapters = [a for name, path in runs.items() for a in ("--adapter", path)]
    adapters += ["--adapter", f"hub={FIXTURES / 'adapterhub_houlsby'}"]
    code, _, err = run(["predict", *adapters, "--model", checkpoint_dir, "--format", "jsonl",
                        "--input", tmp_path / "in.txt", "--output", tmp_path / "out.jsonl"], capsys)
    assert code == 0, err
    records = {r["line"]: r for r in map(json.loads, (tmp_path / "out.jsonl").read_text().splitlines())}
    server = subprocess.Popen([sys.executable, "-m", "minadapt", "serve", *map(str, adapters), "--model",
                               str(checkpoint_dir), "--port", "0"], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True)
    try:
        url = None
        for line in server.stdout:
            if "listening on" in line:
                url = line.split("listening on ")[1].split()[0]
                break
        assert url, server.stderr.read()

        def ask(body):
            req = urllib.request.Request(url + "/predict", json.dumps(body).encode())
            try:
                with urllib.request.urlopen(req, timeout=60) as r:
                    return r.status, json.loads(r.read())
            except urllib.error.HTTPError as e:
                return e.code, json.loads(e.read())

        singles = [i + 1 for i, l in enumerate(INPUT) if l and "\t" not in l]
        pairs = [i + 1 for i, l in enumerate(INPUT) if "\t" in l]
        for task, lines in (("news", singles), ("stars", singles), ("sst2", singles), ("hub", singles),
                            ("para", pairs), ("hub", pairs)):
            body = {"task": task}
            if lines is pairs:
                body["pairs"] = [INPUT[i - 1].split("\t") for i in lines]
            else:
                body["texts"] = [INPUT[i - 1] for i in lines]
            status, answer = ask(body)
            assert status == 200, answer
            for i, got in zip(lines, answer["predictions"]):
                assert close(got, records[i]["predictions"][task]), (task, i, got)
        status, answer = ask({"task": "para", "texts": ["one text"]})
        assert status == 400 and "reads text pairs" in answer["error"]
        status, answer = ask({"task": "news", "pairs": [["a", "b"]]})
        assert status == 400 and "reads single texts" in answer["error"]
    finally:
        server.terminate()
        server.wait(timeout=30)


def test_eval_from_another_directory_with_only_the_dev_file(trained, checkpoint_dir, capsys,
                                                            tmp_path, monkeypatch):
    root, mine, runs = trained
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)  # the training files' relative paths do not resolve from here
    dev = {"news": mine["news"] / "dev.csv", "para": mine["para"] / "dev.jsonl",
           "stars": mine["stars"] / "dev.jsonl"}
    for name, f in dev.items():
        code, out, err = run(["eval", "--adapter", runs[name], "--dev-file", f, "--model", checkpoint_dir], capsys)
        assert code == 0 and out.startswith(f"{name} dev "), err
        stored = json.loads(minadapt.io.weights.read_safetensors(runs[name])[1]["dev_metrics"])
        first = next(iter(stored))
        assert f"{first} " in out  # the same metric as the run reported ...
        shown = out.split(f"{first} ")[1].split()[0].rstrip(",%")
        value = float(shown) / (100 if first not in ("pearson", "spearman") else 1)
        assert value == pytest.approx(stored[first], abs=1e-4)  # ... and the same value
    code, out, err = run(["eval", "--adapter", runs["sst2"], "--data-dir", DATA / "sst2", "--model",
                          checkpoint_dir], capsys)
    assert code == 0 and out.startswith("sst2 dev accuracy") and "/872)" in out, err
    # without --dev-file, the stored relative path is not found from here: one line saying so
    one_clear_line(["eval", "--adapter", runs["news"], "--model", checkpoint_dir], capsys,
                   ("is not there", "--dev-file"))


def test_export_to_adapterhub_and_peft_and_back(trained, checkpoint_dir, capsys, tmp_path):
    root, mine, runs = trained
    model = minadapt.load_model(checkpoint_dir)
    ids, mask, types = model.tokenizer.pad(*model.tokenizer.ids_and_types(
        ["stocks rallied today", "a dull film"], ["the market rose", "a boring movie"]))
    for name, fmt in (("news", "adapterhub"), ("sst2", "adapterhub"), ("para", "peft")):
        out = tmp_path / f"{name}-{fmt}"
        code, _, err = run(["export", runs[name], "--format", fmt, "--out", out, "--model", checkpoint_dir], capsys)
        assert code == 0, err
        assert (out / "adapter_config.json").is_file() and (out / "minadapt_task.json").is_file()
        back = tmp_path / f"{name}-back.safetensors"
        code, _, err = run(["export", f"{name}2={out}", "--format", "minadapt", "--out", back,
                            "--model", checkpoint_dir], capsys)
        assert code == 0, err
        m = minadapt.load_model(checkpoint_dir)
        m.load_adapter(runs[name])
        m.load_adapter(out, name=f"{name}_dir")
        m.load_adapter(back)
        want = m.logits(ids, mask, types, adapter=name)
        for other in (f"{name}_dir", f"{name}2"):
            assert np.allclose(m.logits(ids, mask, types, adapter=other), want, atol=1e-6), (name, other)
        assert m.metadata[f"{name}2"]["task"] and json.loads(m.metadata[f"{name}2"]["task"])["name"] in (name + "2", "sst2")


def test_new_bad_inputs_are_one_clear_line(trained, checkpoint_dir, capsys, tmp_path, monkeypatch):
    root, mine, runs = trained
    model = ["--model", checkpoint_dir]
    # a pair for a single-text task, a single text for a pair task
    one_clear_line(["predict", "--adapter", runs["news"], *model, "one\ttwo"], capsys,
                   ("'news' reads single texts", "got a pair"))
    one_clear_line(["predict", "--adapter", runs["para"], *model, "one text"], capsys,
                   ("'para' reads text pairs", "got a single text"))
    # two tasks with one name: says how to rename
    one_clear_line(["predict", "--adapter", runs["news"], "--adapter", runs["news"], *model, "x"], capsys,
                   ("already holds a task named 'news'", "--adapter NEWNAME="))
    code, out, _ = run(["predict", "--adapter", runs["news"], "--adapter", f"news2={runs['news']}", *model,
                        "x"], capsys)
    assert code == 0 and [l.split("\t")[0] for l in out.strip().split("\n")] == ["news", "news2"]
    # a name that would break parameter names
    one_clear_line(["train", "--train-file", mine["news"] / "train.csv", "--dev-file",
                    mine["news"] / "dev.csv", "--name", "my.news", *model, *QUICK], capsys, ("--name", "'my.news'"))
    # only blank lines
    (tmp_path / "blank.txt").write_text("\n \n")
    code, _, err = run(["predict", "--adapter", runs["news"], *model, "--input", tmp_path / "blank.txt"], capsys)
    assert code == 2 and "nothing to predict" in err
    # an unknown model name with the hub out of reach
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf"))
    one_clear_line(["predict", "--adapter", runs["news"], "--model", "nobody/no-such-bert", "x"], capsys,
                   ("'nobody/no-such-bert'", "cannot be reached"))


def test_compare_takes_the_data_options_train_takes(trained, checkpoint_dir, capsys, tmp_path):
    root, mine, runs = trained
    data = ["--train-file", mine["para"] / "train.jsonl", "--dev-file", mine["para"] / "dev.jsonl",
            "--text-column", "first", "--text-pair-column", "second", "--label-column", "relation",
            "--max-length", "32", "--train-subset", "40"]
    out = tmp_path / "cmp"
    code, stdout, err = run(["compare", *data, "--methods", "probe", "--max-steps", "2", "--batch-size",
                             "8", "--seeds", "1", "--lr-factors", "1", "--evals", "1",
                             "--model", checkpoint_dir, "--out", out], capsys)
    assert code == 0, err
    specs = [json.loads(s.read_text()) for s in out.rglob("spec.json")]
    assert specs, list(out.rglob("*"))
    for option, value in zip(data[::2], data[1::2]):  # every one reaches each run's training
        field = option[2:].replace("-", "_")
        assert all(str(s["train"][field]) == str(value) for s in specs), (option, specs[0]["train"])
    assert json.loads((out / "compare.json").read_text())["runs"][0]["dev_score"] is not None
