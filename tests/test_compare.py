"""`minadapt train --method M` for every method (trains, saves, reloads to the same numbers), and
`minadapt compare`: one row per configuration with sane fields, json/md/png written, peak memory
per child, finished runs skipped on a rerun, Ctrl-C keeps what finished."""
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import minadapt
from minadapt import compare
from minadapt.backend import to_numpy
from minadapt.cli import main
from minadapt.config import BertConfig
from minadapt.errors import ConfigError
from minadapt.methods import METHODS
from minadapt.train import TrainConfig, train
from minadapt.io.weights import expected_shapes, read_safetensors

REPO = Path(__file__).resolve().parents[1]
ROWS = ["a gorgeous , witty movie\t1", "dull and lifeless\t0", "i loved it\t1", "a mess\t0",
        "a fine , moving film\t1", "boring from start to end\t0"]


def run(argv, capsys):
    code = main(argv)
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    folder = tmp_path_factory.mktemp("sst2")
    for split in ("train", "dev"):
        (folder / f"{split}.tsv").write_text("sentence\tlabel\n" + "\n".join(ROWS) + "\n")
    return folder


def _backbone_count(checkpoint_dir):
    cfg = BertConfig.from_json(checkpoint_dir / "config.json")
    return sum(int(np.prod(s)) for s in expected_shapes(cfg).values())


# --- train --method ---------------------------------------------------------------------------------
@pytest.mark.parametrize("method", ["houlsby", "pfeiffer", "lora", "full", "probe"])
def test_each_method_trains_saves_and_reloads(method, data, checkpoint_dir, tmp_path, capsys):
    """A few steps change only the method's parameters; the file reloads (another process's way:
    a fresh model) to the same logits, and `minadapt eval` gives the dev metric training reported."""
    model = minadapt.load_model(checkpoint_dir)
    before = {k: to_numpy(v).copy() for k, v in model.params.items()}
    options = {"bottleneck": 4} if method in ("houlsby", "pfeiffer") else (
        {"r": 2} if method == "lora" else {})
    cfg = TrainConfig(method=method, data_dir=str(data), out=str(tmp_path / method), max_steps=3,
                      batch_size=4, max_length=16, eval_every=0, options=options)
    r = train(cfg, model=model, progress=False)
    assert model.method("sst2") == method
    trainable = model.trainable_names("sst2")
    moved = {k for k in before if not np.array_equal(before[k], to_numpy(model.params[k]))}
    assert bool(moved) == (method == "full") and moved <= trainable  # only full moves the backbone
    own = trainable - set(before)  # the method's own parameters, beside the backbone
    assert own and all(k.startswith("heads.") for k in own) == (method in ("probe", "full"))

    fresh = minadapt.load_model(checkpoint_dir)
    assert fresh.load_adapter(r.adapter_path) == "sst2" and fresh.method("sst2") == method
    b = model.tokenizer.encode([row.split("\t")[0] for row in ROWS])
    np.testing.assert_allclose(to_numpy(fresh.logits(*b, adapter="sst2")),
                               to_numpy(model.logits(*b, adapter="sst2")), rtol=1e-5, atol=1e-6)
    code, out, err = run(["eval", "--adapter", str(r.adapter_path), "--data-dir", str(data),
                          "--weights", str(checkpoint_dir)], capsys)
    assert code == 0, err
    assert f"accuracy {100 * r.dev_metrics['accuracy']:.2f}%" in out


@pytest.mark.parametrize("options,expect", [
    (["--method", "lora", "--lora-rank", "2", "--lora-alpha", "4", "--lora-dropout", "0"],
     ("lora", {"r": 2, "alpha": 4.0, "dropout": 0.0})),
    (["--method", "pfeiffer", "--bottleneck", "4"], ("adapter", {"architecture": "pfeiffer", "bottleneck": 4})),
    (["--preset", "houlsby-paper", "--bottleneck", "2"],
     ("adapter", {"architecture": "houlsby", "non_linearity": "gelu_tanh", "train_layer_norms": True})),
    (["--method", "probe"], ("adapter", None)),
])
def test_train_options_reach_the_file(options, expect, data, checkpoint_dir, tmp_path, capsys):
    out = tmp_path / "run"
    code, stdout, err = run(["train", "sst2", "--data-dir", str(data), "--weights", str(checkpoint_dir),
                             "--out", str(out), "--max-steps", "1", "--batch-size", "4",
                             "--max-length", "16", "--eval-every", "0", *options], capsys)
    assert code == 0, err
    meta = read_safetensors(out / "adapter.safetensors")[1]
    key, fields = expect
    saved = json.loads(meta[key])
    if fields is None:
        assert saved is None
    else:
        assert {k: saved[k] for k in fields} == fields
    method = options[options.index("--method") + 1] if "--method" in options else "houlsby"
    assert json.loads(meta["training"])["method"] == method


def test_help_has_a_line_per_method(capsys):
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    out = capsys.readouterr().out
    for method in METHODS.values():
        assert f"  {method.name:<9} {method.summary}" in out
    for flag in ("--method", "--lora-rank", "--lora-alpha", "--lora-dropout", "--preset"):
        assert flag in out


def test_config_refuses_an_option_of_another_method():
    with pytest.raises(ConfigError, match="'bottleneck': only method houlsby or pfeiffer uses it"):
        TrainConfig(method="lora", options={"bottleneck": 16})
    with pytest.raises(ConfigError, match="'r': only method lora uses it"):
        TrainConfig(options={"r": 4})
    assert TrainConfig(method="full").lr == METHODS["full"].default_lr < TrainConfig().lr


# --- compare ----------------------------------------------------------------------------------------
def _compare_argv(data, checkpoint_dir, out, *more):
    # full first: a peak taken over all children (RUSAGE_CHILDREN) would then give probe full's
    return ["compare", "sst2", "--data-dir", str(data), "--weights", str(checkpoint_dir), "--out",
            str(out), "--methods", "full,probe,houlsby", "--bottlenecks", "2", "--steps", "2",
            "--batch-size", "4", "--max-length", "16", "--seeds", "1", "--lr-factors", "1",
            "--evals", "2", *more]


@pytest.fixture(scope="module")
def compared(data, checkpoint_dir, tmp_path_factory):
    """One real compare (full, probe, houlsby-2; one seed, one lr): its folder and stdout."""
    out = tmp_path_factory.mktemp("compare") / "out"
    # its own process, as from a shell: a child's ru_maxrss starts at its parent's resident memory
    # (kept across exec), and this test process may hold several models by now
    r = subprocess.run([sys.executable, "-m", "minadapt", *_compare_argv(data, checkpoint_dir, out)],
                       capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(REPO)})
    assert r.returncode == 0, r.stderr
    assert r.stdout.count("| probe | 148,610 |") == 1 and "compare.png" in r.stdout
    return out


def test_compare_writes_a_row_per_run(compared, checkpoint_dir):
    report = json.loads((compared / "compare.json").read_text())
    rows = {r["config"]: r for r in report["runs"]}
    assert list(rows) == ["full", "probe", "houlsby-2"]
    backbone = _backbone_count(checkpoint_dir)
    assert report["backbone_params"] == backbone
    probe, houlsby, full = rows["probe"], rows["houlsby-2"], rows["full"]
    assert 0 < probe["trainable_params"] < houlsby["trainable_params"] < full["trainable_params"]
    assert full["trainable_params"] - probe["trainable_params"] == backbone  # the backbone + the same head
    # houlsby-2: 12 adapters of 2*2*H + 2 + H, beside the head
    assert houlsby["trainable_params"] - probe["trainable_params"] == 12 * (2 * 2 * 384 + 2 + 384)
    runs = {r["config"]: r for r in report["seed_runs"]}
    for r in rows.values():
        assert r["share_pct"] == pytest.approx(100 * r["trainable_params"] / backbone)
        one = runs[r["config"]]
        adapter = Path(one["folder"]) / "adapter.safetensors"
        assert r["file_bytes"] == adapter.stat().st_size > 4 * r["trainable_params"]
        assert r["steps"] == 2 and r["dev_metric"] == "accuracy" and 0 <= r["dev_score"] <= 1
        assert r["dev_scores"] == [one["dev_score"]] and r["dev_std"] == 0 and r["seeds"] == [0]
        assert 0 < r["train_s"] < one["wall_s"] and r["peak_rss_mb"] > 50
        assert r["lr"] == METHODS[r["method"]].default_lr and one["kept_step"] in (1, 2)
    # each child's own peak: full fine-tuning (AdamW moments for the whole model) above the probe's
    assert full["peak_rss_mb"] > probe["peak_rss_mb"] + 150
    assert report["compare_peak_rss_mb"] < probe["peak_rss_mb"]  # the floor under them
    assert report["command"].startswith("minadapt compare sst2 --data-dir")
    assert {"model_name", "cpu_family", "model"} <= set(report["machine"])
    assert report["settings"]["steps"] == 2 and report["date"].endswith("UTC")
    assert report["settings"]["validation_size"] == 1 and report["baseline"] is None
    md = (compared / "compare.md").read_text().splitlines()
    table = [line for line in md if line.startswith("| ")]
    assert len(table) == 2 + 3 and any(line.startswith("| probe | 148,610 | 0.66% |") for line in table)
    assert "not on dev" in md[2]
    assert (compared / "compare.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_the_step_kept_is_the_best_on_validation(compared):
    """metrics.jsonl: a validation record per evaluation; the eval record names the best of them
    (ties: the earlier), and the adapter file holds that step's parameters."""
    folder = compared / "houlsby-2" / "lr0.002-s0"
    records = [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines()]
    val = [r for r in records if r["kind"] == "validation"]
    kept = [r for r in records if r["kind"] == "eval"]
    assert [r["step"] for r in val] == [1, 2] and len(kept) == 1
    best = max(val, key=lambda r: (r["validation_score"], -r["step"]))
    assert kept[0]["kept_step"] == kept[0]["step"] == best["step"]
    _, meta = read_safetensors(folder / "adapter.safetensors")
    assert json.loads(meta["compare"])["kept_step"] == best["step"]


def test_holdout_is_the_same_slice_and_never_dev(data):
    from minadapt.selection import holdout, validation_size
    from minadapt.tasks import load_task

    train_set = load_task("sst2", data)["train"]
    rest, val = holdout(train_set, 2, 0)
    again, val2 = holdout(train_set, 2, 0)
    assert val.texts == val2.texts and len(rest.texts) == 4 and not set(val.texts) & set(rest.texts)
    assert sorted(rest.texts + val.texts) == sorted(train_set.texts)
    assert validation_size(67349) == 1000 and validation_size(1781) == 178
    with pytest.raises(ConfigError, match="validation size 6"):
        holdout(train_set, 6, 0)


def test_lr_is_chosen_on_validation_and_rows_summarise_seeds():
    c = compare.Config("houlsby", 64)
    first = [{"lr": 1e-3, "validation_score": 0.90, "dev_score": 0.95, "seed": 0},
             {"lr": 2e-3, "validation_score": 0.92, "dev_score": 0.80, "seed": 0},
             {"lr": 4e-3, "validation_score": 0.92, "dev_score": 0.99, "seed": 0}]
    assert compare.choose_lr(first) == 2e-3  # validation decides (ties: the smaller lr), never dev
    assert compare.choose_lr(first, default=4e-3) == 4e-3  # a tie goes to the method's default
    assert compare.choose_lr(first, default=1e-3) == 2e-3  # ... when the default is among the tied
    common = {"trainable_params": 10, "share_pct": 1.0, "file_bytes": 40, "dev_metric": "accuracy",
              "steps": 5, "kept_step": 5, "train_s": 2.0, "peak_rss_mb": 100.0}
    rows = [{**first[1], **common}, {**common, "lr": 2e-3, "seed": 1, "dev_score": 0.84,
                                     "validation_score": 0.9}]
    row = compare.summarise(c, rows, [{**r, **common} for r in first])
    assert row["dev_score"] == pytest.approx(0.82) and row["dev_std"] == pytest.approx(0.02 * 2 ** 0.5)
    assert row["lr"] == 2e-3 and row["seeds"] == [0, 1] and set(row["lr_validation"]) == {"0.001", "0.002", "0.004"}
    assert "**0.002**" in compare.table_row(row) and "82.00% ± 2.83 (2)" in compare.table_row(row)


def test_rerun_skips_finished_runs(compared, data, checkpoint_dir, tmp_path, capsys, monkeypatch):
    out = tmp_path / "out"
    shutil.copytree(compared, out)
    (out / "probe" / "lr0.002-s0" / compare.RESULT).unlink()  # as if the probe had not finished
    calls = []
    real = compare.run_child
    monkeypatch.setattr(compare, "run_child", lambda argv, log: calls.append(argv) or real(argv, log))
    code, stdout, err = run(_compare_argv(data, checkpoint_dir, out), capsys)
    assert code == 0, err
    runs = [a for a in calls if "--prepare" not in a]
    assert [json.loads(Path(a[-1]).read_text())["train"]["method"] for a in runs] == ["probe"]
    assert stdout.count("(finished earlier, skipped)") == 2
    assert len(json.loads((out / "compare.json").read_text())["runs"]) == 3
    # other settings in the same folder: refused, not mixed into one table
    code, stdout, err = run(_compare_argv(data, checkpoint_dir, out, "--max-length", "12"), capsys)
    assert code == 2 and "finished with other settings" in err and len(err.strip().splitlines()) == 1


def test_interrupted_compare_keeps_what_finished(data, checkpoint_dir, tmp_path, capsys, monkeypatch):
    out = tmp_path / "out"
    real, calls = compare.run_child, []

    def ctrl_c_on_the_second(argv, log):  # of the runs; the first call reads the data
        calls.append(argv)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real(argv, log)

    monkeypatch.setattr(compare, "run_child", ctrl_c_on_the_second)
    argv = _compare_argv(data, checkpoint_dir, out)
    argv[argv.index("full,probe,houlsby")] = "probe,houlsby"
    code, stdout, err = run(argv, capsys)
    assert code == 130 and "interrupted" in err
    assert [r["config"] for r in json.loads((out / "compare.json").read_text())["runs"]] == ["probe"]
    monkeypatch.setattr(compare, "run_child", real)
    code, stdout, err = run(argv, capsys)
    assert code == 0 and "| probe |" in stdout and "skipped" in stdout
    assert [r["config"] for r in json.loads((out / "compare.json").read_text())["runs"]] == \
        ["probe", "houlsby-2"]


def test_plan_and_lists():
    configs = compare.plan(["probe", "houlsby", "pfeiffer", "lora", "full"],
                           {"--bottlenecks": [8, 16], "--lora-ranks": [4]}, depths=[1, 6], num_layers=6)
    assert [c.name for c in configs] == ["probe", "houlsby-8", "houlsby-16", "pfeiffer-64", "lora-4",
                                         "full", "houlsby-64-top1", "houlsby-64", "pfeiffer-64-top1"]
    assert configs[4].options() == {"r": 4}
    assert configs[-1].options() == {"bottleneck": 64, "adapter_layers": 1}
    assert compare.Job(configs[1], 2e-3, 1).folder == "houlsby-8/lr0.002-s1"
    assert compare.learning_rates("full", [0.5, 1, 2], {}) == [5e-5, 1e-4, 2e-4]
    assert compare.learning_rates("full", [1], {"full": [3e-5]}) == [3e-5]
    assert compare.method_lrs("full=5e-5,2e-5") == ("full", [2e-5, 5e-5])
    assert compare.positive_ints("64,8,8") == [8, 64]
    assert compare.method_list("lora,probe,lora") == ["lora", "probe"]
    for bad in ("nope=1e-3", "full=", "full=-1"):
        with pytest.raises(Exception, match="expected"):
            compare.method_lrs(bad)


def test_baseline_row(data):
    pytest.importorskip("sklearn")
    from minadapt.baseline import tfidf_logreg
    from minadapt.selection import holdout
    from minadapt.tasks import get_task, load_task

    task = get_task("sst2")
    d = load_task(task, data)
    rest, val = holdout(d["train"], 2, 0)
    row = tfidf_logreg(task, rest, val, d["dev"])
    assert row["config"] == "tfidf-logreg" and row["dev_metric"] == "accuracy" and 0 <= row["dev_score"] <= 1
    assert row["C"] in (1.0, 10.0, 100.0) and row["trainable_params"] == row["features"] + 1
    assert "C=" in compare.baseline_row(row)


def test_plot_with_depth_rows_error_bars_and_the_baseline(tmp_path):
    from minadapt.compare_plot import plot

    common = {"dev_metric": "accuracy", "size": 64, "dev_std": 0.01, "dev_scores": [0.9, 0.92]}
    rows = [{**common, "config": "houlsby-64", "method": "houlsby", "layers": None,
             "trainable_params": 743810, "dev_score": 0.91, "train_s": 100.0},
            {**common, "config": "houlsby-64-top2", "method": "houlsby", "layers": 2,
             "trainable_params": 300000, "dev_score": 0.89, "train_s": 40.0},
            {**common, "config": "probe", "method": "probe", "layers": None, "size": None,
             "trainable_params": 148610, "dev_score": 0.7, "train_s": 20.0}]
    header = {"task": "t", "backbone_params": 22565376,
              "settings": {"epochs": 3.0, "max_steps": None, "steps": 90, "batch_size": 32,
                           "max_length": 128, "seeds": [0, 1], "validation_size": 100}}
    path = plot(rows, header, tmp_path / "c.png", {"dev_score": 0.95})
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_a_default_train_run_is_the_compare_run_of_the_same_settings(checkpoint_dir, tmp_path):
    """`minadapt train` with its default evaluations and held-out slice trains, keeps and scores
    exactly what `minadapt compare`'s run of the same settings does: compare's seeds of the default
    settings are evidence for the default run itself."""
    from minadapt import compare_run
    from minadapt.selection import validation_size

    words = ["good", "bad", "fine", "dull", "moving", "boring", "witty", "a mess", "loved", "hated"]
    rows = [f"{words[i % 10]} {words[(i * 7) % 10]} film {i}\t{int(i % 10 in (0, 2, 4, 6, 8))}" for i in range(240)]
    folder = tmp_path / "sst2"
    folder.mkdir()
    (folder / "train.tsv").write_text("sentence\tlabel\n" + "\n".join(rows) + "\n")
    (folder / "dev.tsv").write_text("sentence\tlabel\n" + "\n".join(rows[::12]) + "\n")
    settings = dict(data_dir=str(tmp_path), weights=str(checkpoint_dir), max_steps=20, batch_size=8,
                    max_length=16, options={"bottleneck": 4}, lr=1e-2, seed=1)
    r = train(TrainConfig(**settings, out=str(tmp_path / "train")), progress=False)
    spec = {"train": {**TrainConfig(**settings, out=str(tmp_path / "compare"), eval_every=0).to_dict()},
            "validation_size": validation_size(240), "split_seed": 0, "evals": 10}
    record = compare_run.run(spec)
    assert r.kept["step"] == record["kept_step"] and r.kept["validation_score"] == record["validation_score"]
    assert r.dev_metrics == record["dev"]
    mine, theirs = (read_safetensors(p / "adapter.safetensors")[0] for p in (tmp_path / "train", tmp_path / "compare"))
    assert mine.keys() == theirs.keys() and all(np.array_equal(mine[k], theirs[k]) for k in mine)
