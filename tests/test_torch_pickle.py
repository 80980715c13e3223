"""Torch `.bin` files read without torch: tensors as torch wrote them (tests/make_torch_pickle_fixtures.py),
AdapterHub's default save loading to AdapterHub's logits, and pickles that would run code refused
before anything runs."""
import io
import os
import pickle
import zipfile
from pathlib import Path

import numpy as np
import pytest

import minadapt
from minadapt.cli import main
from minadapt.errors import WeightsError
from minadapt.io.torch_pickle import load_torch_bin
from minadapt.io.weights import read_safetensors

from tiny import tiny_model

FIXTURES = Path(__file__).parent / "fixtures"


@pytest.mark.parametrize("layout", ["zip", "legacy"])
def test_reads_what_torch_save_wrote(layout):
    got = load_torch_bin(FIXTURES / "torch_pickle" / f"{layout}.bin")
    want = read_safetensors(FIXTURES / "torch_pickle" / "expected.safetensors")[0]
    assert list(got) == ["f32", "f32_t", "f16", "bf16", "f64", "i64_offset", "bool", "shared_a",
                         "shared_b", "param"]
    for k, v in want.items():
        assert got[k].dtype == v.dtype and got[k].shape == v.shape, k
        assert np.array_equal(got[k], v), k
        assert got[k].flags.c_contiguous and got[k].flags.writeable, k


def test_adapterhub_default_save_loads_to_adapterhubs_logits(checkpoint_dir):
    ref = read_safetensors(FIXTURES / "methods.safetensors")[0]
    model = minadapt.load_model(checkpoint_dir, dtype="float32")
    directory = FIXTURES / "adapterhub_houlsby_bin"
    assert not list(directory.glob("*.safetensors"))
    assert model.load_adapter(directory) == "hb"
    logits = model.logits(ref["inputs.input_ids"], ref["inputs.attention_mask"],
                          ref["inputs.token_type_ids"], adapter="hb")
    assert np.abs(logits - ref["ah_houlsby.logits"]).max() < 1e-5


class _RunsCode:
    """Pickles as `os.system(...)`: what a malicious .bin holds."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def _as_torch_zip(path, obj):
    """A zip laid out as torch.save's, with `obj` as its data.pkl."""
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("archive/data.pkl", pickle.dumps(obj, protocol=2))
        z.writestr("archive/byteorder", "little")
        z.writestr("archive/version", "3\n")


def _evil_adapterhub_dir(tmp_path, layout):
    """An AdapterHub directory whose pytorch_adapter.bin would run `touch MARKER` if unpickled."""
    marker = tmp_path / "ran"
    evil = {"encoder.weight": _RunsCode(marker)}
    path = tmp_path / "pytorch_adapter.bin"
    if layout == "zip":
        _as_torch_zip(path, evil)
    else:
        path.write_bytes(pickle.dumps(evil, protocol=2))
    d = tmp_path / "ah"
    d.mkdir()
    (d / "adapter_config.json").write_text((FIXTURES / "adapterhub_houlsby" / "adapter_config.json").read_text())
    path.rename(d / "pytorch_adapter.bin")
    return d, marker


@pytest.mark.parametrize("layout", ["zip", "plain"])
def test_a_pickle_that_would_run_code_is_refused(tmp_path, layout):
    d, marker = _evil_adapterhub_dir(tmp_path, layout)
    with pytest.raises(WeightsError, match=r"refuses the pickle global (posix|os)\.system.*run"):
        load_torch_bin(d / "pytorch_adapter.bin")
    with pytest.raises(WeightsError, match=r"pytorch_adapter.bin: refuses the pickle global"):
        tiny_model(hidden_size=384, num_attention_heads=12).load_adapter(d)
    assert not marker.exists()


def test_cli_refuses_a_foreign_global_in_one_line(tmp_path, capsys, checkpoint_dir):
    d, marker = _evil_adapterhub_dir(tmp_path, "zip")
    code = main(["predict", "--weights", str(checkpoint_dir), "--adapter", str(d), "a text"])
    err = capsys.readouterr().err
    assert code != 0 and "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    assert "pytorch_adapter.bin" in err and "system" in err
    assert not marker.exists()


@pytest.mark.parametrize("payload,says", [
    (b"", "not a readable torch .bin"),
    (b"\x80\x02 garbage", "not a readable torch .bin"),
    (pickle.dumps([1, 2, 3], protocol=2), "neither a zip nor a legacy"),
])
def test_damaged_files_say_so(tmp_path, payload, says):
    path = tmp_path / "x.bin"
    path.write_bytes(payload)
    with pytest.raises(WeightsError, match=says):
        load_torch_bin(path)


def test_a_truncated_zip_storage_and_a_non_dict_are_refused(tmp_path):
    src = zipfile.ZipFile(FIXTURES / "torch_pickle" / "zip.bin")
    path = tmp_path / "short.bin"
    with zipfile.ZipFile(path, "w") as z:
        for n in src.namelist():
            data = src.read(n)
            z.writestr(n, data[:3] if n.endswith("/data/0") else data)
    with pytest.raises(WeightsError, match="short.bin.*storage 0"):
        load_torch_bin(path)
    _as_torch_zip(tmp_path / "list.bin", [1, 2])
    with pytest.raises(WeightsError, match="list.bin.*not a dict of tensors"):
        load_torch_bin(tmp_path / "list.bin")


def test_a_checkpoint_with_only_pytorch_model_bin_loads_to_torchs_hidden_states():
    ref = read_safetensors(FIXTURES / "torch_pickle" / "tiny_bert.safetensors")[0]
    folder = FIXTURES / "torch_pickle" / "tiny_bert"
    assert not (folder / "model.safetensors").exists()
    model = minadapt.load_model(folder, dtype="float64")
    assert model.backbone["path"].endswith("pytorch_model.bin")
    h = model.encode(ref["input_ids"], ref["attention_mask"], ref["token_type_ids"])
    mask = ref["attention_mask"].astype(bool)  # padded positions are not compared
    assert np.abs(h - ref["last_hidden_state"])[mask].max() < 1e-10
