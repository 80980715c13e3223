"""The command line: --help, bad input gives one clear message (no traceback), and the
train -> eval -> predict round trip on a tiny slice of data."""
import json
import shutil
import subprocess
import sys

import numpy as np
import pytest

from minadapt.cli import main


def run(argv, capsys):
    code = main(argv)
    out, err = capsys.readouterr()
    return code, out, err


def test_help_teaches(capsys):
    with pytest.raises(SystemExit) as e:
        main(["train", "--help"])
    out = capsys.readouterr().out
    assert e.value.code == 0
    for flag in ("--bottleneck", "--epochs", "--max-steps", "--lr", "--batch-size", "--seed",
                 "--device", "--out", "--resume", "--data-dir"):
        assert flag in out
    assert "(default: 64)" in out


def test_console_script_entry_point():
    r = subprocess.run([sys.executable, "-m", "minadapt.cli", "--help"], capture_output=True, text=True)
    assert r.returncode == 0 and "train" in r.stdout and "examples:" in r.stdout


@pytest.fixture
def broken_checkpoint(tmp_path, checkpoint_dir):
    """A copy of the real checkpoint folder that each test damages in its own way."""
    d = tmp_path / "ckpt"
    d.mkdir()
    for f in ("config.json", "tokenizer.json", "vocab.txt"):
        shutil.copy(checkpoint_dir / f, d / f)
    (d / "model.safetensors").symlink_to(checkpoint_dir / "model.safetensors")
    return d


def _info(d, capsys):
    return run(["predict", "--adapter", "nothing.safetensors", "--weights", str(d), "hi"], capsys)


def test_info_shows_the_model_and_the_cores(checkpoint_dir, capsys, monkeypatch):
    monkeypatch.setenv("MINADAPT_THREADS", "1")
    code, out, _ = run(["info", str(checkpoint_dir)], capsys)
    assert code == 0 and '"num_hidden_layers": 6' in out and "encoder parameters: 22,565,376" in out
    assert "a batch of 32 on the CPU runs whole, on one shard" in out


def test_missing_weights_dir(tmp_path, capsys):
    code, _, err = _info(tmp_path / "nope", capsys)
    assert code == 2 and "no such checkpoint folder" in err and "nope" in err
    assert "Traceback" not in err


def test_config_without_required_field(broken_checkpoint, capsys):
    cfg = json.loads((broken_checkpoint / "config.json").read_text())
    del cfg["num_attention_heads"]
    (broken_checkpoint / "config.json").write_text(json.dumps(cfg))
    code, _, err = _info(broken_checkpoint, capsys)
    assert code == 2 and "config.json" in err and "num_attention_heads" in err


def test_config_not_json(broken_checkpoint, capsys):
    (broken_checkpoint / "config.json").write_text('{"hidden_size": 384,\n oops}')
    code, _, err = _info(broken_checkpoint, capsys)
    assert code == 2 and "line 2" in err


def _rewrite(d, checkpoint_dir, edit):
    from minadapt.io.weights import read_safetensors, save_tensors

    tensors, meta = read_safetensors(checkpoint_dir / "model.safetensors")
    edit(tensors)
    (d / "model.safetensors").unlink()
    save_tensors(d / "model.safetensors", tensors, meta)


def test_wrong_shape(broken_checkpoint, checkpoint_dir, capsys):
    def edit(t):
        t["encoder.layer.2.intermediate.dense.weight"] = np.zeros((1536, 380), np.float32)

    _rewrite(broken_checkpoint, checkpoint_dir, edit)
    code, _, err = _info(broken_checkpoint, capsys)
    assert code == 2
    assert "encoder.layer.2.intermediate.dense.weight" in err and "(1536, 380)" in err
    assert "(1536, 384)" in err and "model.safetensors" in err


def test_missing_key(broken_checkpoint, checkpoint_dir, capsys):
    _rewrite(broken_checkpoint, checkpoint_dir, lambda t: t.pop("encoder.layer.5.output.dense.bias"))
    code, _, err = _info(broken_checkpoint, capsys)
    assert code == 2 and "missing key 'encoder.layer.5.output.dense.bias'" in err


def test_bert_prefix_and_no_pooler_load(broken_checkpoint, checkpoint_dir):
    import minadapt

    def edit(t):
        for k in list(t):
            v = t.pop(k)
            if not k.startswith("pooler."):
                t["bert." + k] = v

    _rewrite(broken_checkpoint, checkpoint_dir, edit)
    a = minadapt.load_model(broken_checkpoint)
    b = minadapt.load_model(checkpoint_dir)
    assert all(np.array_equal(a.params[k], b.params[k]) for k in b.params)


def test_truncated_file(broken_checkpoint, checkpoint_dir, capsys):
    (broken_checkpoint / "model.safetensors").unlink()
    data = (checkpoint_dir / "model.safetensors").read_bytes()
    (broken_checkpoint / "model.safetensors").write_bytes(data[: len(data) // 3])
    code, _, err = _info(broken_checkpoint, capsys)
    assert code == 2 and "model.safetensors" in err and "truncated" in err


def test_train_without_data_says_where_it_looked(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("MINADAPT_DATA", raising=False)
    code, _, err = run(["train", "sst2", "--data-dir", str(tmp_path / "nodata"), "--out",
                        str(tmp_path / "o")], capsys)
    assert code == 2 and "nodata" in err and "Traceback" not in err


def test_train_eval_predict_round_trip(tmp_path, capsys, monkeypatch, checkpoint_dir):
    data = tmp_path / "sst2"
    data.mkdir()
    rows = ["a gorgeous , witty movie\t1", "dull and lifeless\t0", "i loved it\t1", "a mess\t0"] * 4
    for split in ("train", "dev"):
        (data / f"{split}.tsv").write_text("sentence\tlabel\n" + "\n".join(rows) + "\n")
    out = tmp_path / "run"
    common = ["--weights", str(checkpoint_dir)]
    code, stdout, _ = run(["train", "sst2", "--data-dir", str(data), "--out", str(out),
                           "--max-steps", "4", "--batch-size", "4", "--bottleneck", "4", *common],
                          capsys)
    assert code == 0 and "dev accuracy" in stdout
    adapter = out / "adapter.safetensors"
    code, stdout, _ = run(["eval", "--adapter", str(adapter), "--data-dir", str(data), *common], capsys)
    assert code == 0 and "/16)" in stdout
    code, stdout, _ = run(["predict", "--adapter", str(adapter), "great fun", "so boring", *common],
                          capsys)
    lines = stdout.strip().splitlines()
    assert code == 0 and len(lines) == 2
    label, prob, text = lines[0].split("\t")
    assert label in ("positive", "negative") and 0.5 <= float(prob) <= 1 and text == "great fun"
    monkeypatch.setattr("sys.stdin", __import__("io").StringIO("first line\n\nsecond line\n"))
    code, stdout, _ = run(["predict", "--adapter", str(adapter), *common], capsys)
    assert [l.split("\t")[2] for l in stdout.strip().splitlines()] == ["first line", "second line"]
    code, _, err = run(["predict", "--adapter", str(tmp_path / "missing.safetensors"), "x", *common],
                       capsys)
    assert code == 2 and "missing.safetensors" in err
