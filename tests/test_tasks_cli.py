"""Many tasks from the command line: your own files (CSV, TSV, JSONL, pairs, regression), label
names stored in the adapter file, several adapters in one `predict`, `eval` on an adapter's own
task, and a new task that never changes an old one."""
import json
import os
from pathlib import Path

import numpy as np
import pytest

import minadapt
from minadapt.cli import main
from minadapt.train import TrainConfig, train

BBC = Path(os.environ.get("MINADAPT_DATA", Path(__file__).resolve().parents[2] / "shared" / "data")) / "bbc-news"
QUICK = ["--max-steps", "3", "--batch-size", "4", "--eval-every", "0", "--log-every", "1"]


def run(argv, capsys):
    code = main(argv)
    out, err = capsys.readouterr()
    return code, out, err


def _write(path, rows, fmt):
    """rows: list of dicts with the same keys."""
    if fmt == "jsonl":
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
        return path
    sep = "," if fmt == "csv" else "\t"
    keys = list(rows[0])
    lines = [sep.join(keys)] + [sep.join(str(r[k]) for k in keys) for r in rows]
    path.write_text("\n".join(lines) + "\n")
    return path


TOPICS = [("the match ended in a late goal", "sport"), ("shares fell on weak profits", "business"),
          ("the band released a new album", "music"), ("the striker signed a new contract", "sport"),
          ("the bank raised interest rates", "business"), ("the singer won an award", "music")]


@pytest.mark.parametrize("fmt", ["csv", "tsv", "jsonl"])
def test_train_on_your_own_files_then_predict_label_names(tmp_path, checkpoint_dir, capsys, fmt):
    rows = [{"text": t, "topic": y} for t, y in TOPICS]
    train_file = _write(tmp_path / f"train.{fmt}", rows, fmt)
    dev_file = _write(tmp_path / f"dev.{fmt}", rows[:3], fmt)
    out = tmp_path / "run"
    code, stdout, err = run(["train", "--train-file", str(train_file), "--dev-file", str(dev_file),
                             "--label-column", "topic", "--weights", str(checkpoint_dir),
                             "--out", str(out), *QUICK], capsys)
    assert code == 0, err
    assert "dev accuracy" in stdout and "f1_macro" in stdout  # three classes: accuracy and macro F1
    adapter = out / "adapter.safetensors"
    code, stdout, err = run(["predict", "--adapter", str(adapter), "--weights", str(checkpoint_dir),
                             "a goal in the last minute"], capsys)
    assert code == 0, err
    label, prob, text = stdout.strip().split("\t")
    assert label in {"business", "music", "sport"} and 0 < float(prob) <= 1
    code, stdout, err = run(["eval", "--adapter", str(adapter), "--weights", str(checkpoint_dir)], capsys)
    assert code == 0 and stdout.startswith("custom dev accuracy") and "/3)" in stdout, err


def test_pairs_and_regression_from_your_own_files(tmp_path, checkpoint_dir, capsys):
    rows = [{"a": "a man plays guitar", "b": "a person plays music", "score": 3.8},
            {"a": "a cat sleeps", "b": "the stock market fell", "score": 0.2},
            {"a": "two dogs run", "b": "dogs are running", "score": 4.5},
            {"a": "a woman cooks", "b": "a plane lands", "score": 0.0}]
    train_file = _write(tmp_path / "train.tsv", rows, "tsv")
    out = tmp_path / "sts"
    code, stdout, err = run(["train", "--train-file", str(train_file), "--dev-file", str(train_file),
                             "--text-column", "a", "--text-pair-column", "b", "--label-column", "score",
                             "--regression", "--weights", str(checkpoint_dir), "--out", str(out),
                             *QUICK], capsys)
    assert code == 0, err
    assert "dev pearson" in stdout and "spearman" in stdout
    code, stdout, err = run(["predict", "--adapter", str(out / "adapter.safetensors"), "--weights",
                             str(checkpoint_dir), "a dog runs\tdogs running"], capsys)
    assert code == 0, err
    score, first, second = stdout.rstrip("\n").split("\t")
    assert float(score) == float(score) and (first, second) == ("a dog runs", "dogs running")


def _two_adapters(tmp_path, checkpoint_dir, capsys):
    rows = [{"text": t, "label": y} for t, y in TOPICS]
    paths = []
    for name, labels in (("topics", None), ("mood", ["happy", "sad"])):
        data = rows if labels is None else [{"text": t, "label": labels[i % 2]} for i, (t, _) in enumerate(TOPICS)]
        f = _write(tmp_path / f"{name}.csv", data, "csv")
        out = tmp_path / name
        code, _, err = run(["train", "--train-file", str(f), "--dev-file", str(f), "--weights",
                            str(checkpoint_dir), "--out", str(out), *QUICK], capsys)
        assert code == 0, err
        paths.append(out / "adapter.safetensors")
    return paths


def test_predict_with_several_adapters_names_each_task(tmp_path, checkpoint_dir, capsys):
    a, b = _two_adapters(tmp_path, checkpoint_dir, capsys)
    # both files' tasks are called "custom": predict refuses to mix them up
    code, _, err = run(["predict", "--adapter", str(a), "--adapter", str(b), "--weights",
                        str(checkpoint_dir), "hello"], capsys)
    assert code == 2 and "already holds a task named 'custom'" in err


def test_predict_runs_every_task_on_one_backbone(tmp_path, checkpoint_dir, capsys):
    """Two adapters with their own names: every text gets one line per task, each equal to what
    that adapter alone prints."""
    model = minadapt.load_model(checkpoint_dir)
    model.add_adapter("topics", bottleneck=8, seed=1)
    model.add_classification_head("topics", num_labels=3, labels=["business", "music", "sport"], seed=1)
    model.add_adapter("mood", bottleneck=4, seed=2)
    model.add_classification_head("mood", num_labels=2, labels=["happy", "sad"], seed=2)
    rng = np.random.default_rng(0)
    for name in ("topics", "mood"):
        for k in model.trainable_names(name):
            model.params[k][...] = 0.05 * rng.standard_normal(model.params[k].shape)
    a = model.save_adapter(tmp_path / "topics.safetensors", adapter="topics")
    b = model.save_adapter(tmp_path / "mood.safetensors", adapter="mood")
    texts = ["shares fell", "a great song"]
    code, both, err = run(["predict", "--adapter", str(a), "--adapter", str(b), "--weights",
                           str(checkpoint_dir), *texts], capsys)
    assert code == 0, err
    lines = both.strip().split("\n")
    assert [line.split("\t")[0] for line in lines] == ["topics", "topics", "mood", "mood"]
    for path, name in ((a, "topics"), (b, "mood")):
        code, alone, _ = run(["predict", "--adapter", str(path), "--weights", str(checkpoint_dir), *texts], capsys)
        assert [name + "\t" + line for line in alone.strip().split("\n")] == \
            [line for line in lines if line.startswith(name + "\t")]
    code, only, _ = run(["predict", "--adapter", str(a), "--adapter", str(b), "--task", "mood",
                         "--weights", str(checkpoint_dir), *texts], capsys)
    assert code == 0 and len(only.strip().split("\n")) == 2
    assert all(line.split("\t")[0] in ("happy", "sad") for line in only.strip().split("\n"))


def test_eval_refuses_another_task(tmp_path, checkpoint_dir, capsys):
    rows = [{"text": t, "label": y} for t, y in TOPICS]
    f = _write(tmp_path / "t.csv", rows, "csv")
    out = tmp_path / "run"
    assert run(["train", "--train-file", str(f), "--dev-file", str(f), "--weights", str(checkpoint_dir),
                "--out", str(out), *QUICK], capsys)[0] == 0
    code, _, err = run(["eval", "--adapter", str(out / "adapter.safetensors"), "--task", "sst2",
                        "--weights", str(checkpoint_dir)], capsys)
    assert code == 2 and "trained on task 'custom', not 'sst2'" in err


@pytest.mark.slow  # two runs, each evaluated on the whole BBC News dev split (long articles)
@pytest.mark.skipif(not (BBC / "train.csv").is_file(), reason="no bbc-news data (../shared/data)")
def test_your_own_files_give_what_the_built_in_task_gives(tmp_path, checkpoint_dir):
    """`train --train-file bbc-news/train.csv --dev-file .../dev.csv` is `train bbc-news` with the
    same seed: the same losses and the same adapter, number for number."""
    common = dict(weights=str(checkpoint_dir), max_steps=3, batch_size=4, eval_every=0, log_every=1,
                  train_subset=24)
    builtin = train(TrainConfig(task="bbc-news", data_dir=str(BBC), out=str(tmp_path / "a"), **common),
                    progress=False)
    own = train(TrainConfig(train_file=str(BBC / "train.csv"), dev_file=str(BBC / "dev.csv"),
                            adapter_name="bbc-news", out=str(tmp_path / "b"), **common), progress=False)
    losses = [[json.loads(line).get("loss") for line in open(r.metrics_path)] for r in (builtin, own)]
    assert losses[0] == losses[1]
    assert builtin.dev_metrics == own.dev_metrics
    from minadapt.io.weights import read_safetensors

    ta, _ = read_safetensors(builtin.adapter_path)
    tb, _ = read_safetensors(own.adapter_path)
    assert set(ta) == set(tb) and all(np.array_equal(ta[k], tb[k]) for k in ta)


def test_a_new_task_never_changes_an_old_one(tmp_path, checkpoint_dir):
    """Training task B on a model that holds task A leaves A's parameters and logits bit-identical."""
    model = minadapt.load_model(checkpoint_dir)
    model.add_adapter("a", bottleneck=8, seed=3)
    model.add_classification_head("a", num_labels=2, seed=3)
    rng = np.random.default_rng(1)
    for k in model.trainable_names("a"):
        model.params[k][...] = 0.05 * rng.standard_normal(model.params[k].shape)
    before = {k: model.params[k].copy() for k in model.trainable_names("a")}
    b = model.tokenizer.encode(["a gripping film", "dull"])
    logits = model.logits(*b, adapter="a")
    data = {"train": ([t for t, _ in TOPICS], np.array([0, 1, 0, 0, 1, 0])),
            "dev": ([t for t, _ in TOPICS[:2]], np.array([0, 1]))}
    train(TrainConfig(out=str(tmp_path / "b"), adapter_name="b", max_steps=3,
                      batch_size=4, eval_every=0, options={"train_layer_norms": True}), model=model, data=data,
          progress=False)
    assert set(model.names()) == {"a", "b"}
    assert all(np.array_equal(model.params[k], v) for k, v in before.items())
    assert np.array_equal(model.logits(*b, adapter="a"), logits)
