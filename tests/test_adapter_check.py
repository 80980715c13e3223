"""Adapter files are checked from their header before anything is built: each bad file is one
WeightsError line naming the file, and the model is left as it was, nothing allocated for it."""
import json
import struct

import numpy as np
import pytest

from minadapt.errors import WeightsError
from tests.tiny import tiny_model


def write_raw(path, header: dict, data: bytes, header_len: int | None = None):
    raw = json.dumps(header).encode()
    raw += b" " * (-len(raw) % 8)
    path.write_bytes(struct.pack("<Q", header_len if header_len is not None else len(raw)) + raw + data)


def read_raw(path):
    blob = path.read_bytes()
    (n,) = struct.unpack("<Q", blob[:8])
    return json.loads(blob[8:8 + n]), blob[8 + n:]


@pytest.fixture
def good(tmp_path):
    """A valid file holding a bottleneck adapter (m=3) and a 4-label head; one holding LoRA (r=2)."""
    m = tiny_model()
    m.add_adapter("a", bottleneck=3)
    m.add_classification_head("a", num_labels=4)
    m.add_lora("l", r=2)
    m.add_classification_head("l", num_labels=2)
    return m.save_adapter(tmp_path / "a.safetensors", adapter="a"), m.save_adapter(tmp_path / "l.safetensors", adapter="l")


def variant(path, out, meta=None, tensors=None, header_len=None, data=None):
    """`path` rewritten: meta(metadata dict) and tensors(header dict) edit them in place."""
    header, blob = read_raw(path)
    if meta:
        meta(header["__metadata__"])
    if tensors:
        tensors(header)
    write_raw(out, header, blob if data is None else data, header_len)
    return out


DOWN = "encoder.layer.0.attention.output.adapters.a.adapter_down.0.weight"


def set_json(key, field, value):
    def edit(meta):
        d = json.loads(meta[key])
        d[field] = value
        meta[key] = json.dumps(d)
    return edit


def to_dtype(name, dtype, size):
    def edit(header):
        e = header[name]
        e["dtype"] = dtype
        begin = e["data_offsets"][0]
        e["data_offsets"] = [begin, begin + int(np.prod(e["shape"])) * size]
    return edit


CASES = [  # (which file, edits, words the message must hold)
    ("a", dict(meta=set_json("adapter", "bottleneck", 100)), ("adapter_down.0.", "has shape (3", "implies (100")),
    ("a", dict(meta=set_json("adapter", "bottleneck", 20000)), ("adapter.bottleneck is 20000", "from 1 to 128")),
    ("a", dict(meta=set_json("adapter", "bottleneck", "3")), ("adapter.bottleneck", "whole number")),
    ("a", dict(meta=set_json("adapter", "non_linearity", "cube")), ("adapter.non_linearity", "swish")),
    ("a", dict(meta=set_json("head", "num_labels", 5)), ("heads.a.4.", "implies (5")),
    ("a", dict(meta=set_json("head", "num_labels", 0)), ("head.num_labels is 0",)),
    ("a", dict(meta=set_json("head", "dropout", 1.5)), ("head.dropout", "0 <= p < 1")),
    ("a", dict(meta=set_json("head", "labels", ["x"])), ("head.labels", "one name per label")),
    ("a", dict(meta=set_json("head", "name", "b")), ("name different tasks", "a, b")),
    ("a", dict(meta=lambda m: m.pop("backbone")), ("no 'backbone'",)),
    ("a", dict(meta=lambda m: m.update(adapter="{bottleneck: 3")), ("metadata 'adapter' is not JSON",)),
    ("a", dict(meta=lambda m: m.update(format="other/1")), ("not a minadapt adapter file",)),
    ("a", dict(meta=lambda m: m.update(adapter="null", head="null")), ("neither an adapter nor a head",)),
    ("a", dict(meta=set_json("backbone", "hidden_size", "big")), ("backbone.hidden_size",)),
    ("a", dict(tensors=to_dtype(DOWN, "I32", 4)), (DOWN, "dtype I32", "float tensors only")),
    ("a", dict(tensors=to_dtype(DOWN, "BOOL", 1)), ("dtype BOOL",)),
    ("a", dict(tensors=lambda h: h[DOWN].update(data_offsets=[0, 10 ** 9])), ("byte offsets", "outside")),
    ("a", dict(tensors=lambda h: h[DOWN].update(shape=[3, 9])), ("shape (3, 9)", "needs")),
    ("a", dict(tensors=lambda h: [h.pop(k) for k in list(h) if "adapter_down" in k]),
     ("metadata has 'adapter' but no adapter_down tensor",)),
    ("a", dict(header_len=10 ** 12), ("header length",)),
    ("a", dict(data=b""), ("outside",)),
    ("l", dict(meta=set_json("lora", "r", 4)), ("lora_A", "implies (4, 8)")),
    ("l", dict(meta=set_json("lora", "alpha", -1)), ("lora.alpha", "> 0")),
    ("l", dict(meta=set_json("lora", "targets", [])), ("lora.targets",)),
]


@pytest.mark.parametrize("which, edits, says", CASES, ids=[f"{c[0]}-{i}" for i, c in enumerate(CASES)])
def test_each_bad_adapter_file_is_one_line_and_nothing_is_built(good, tmp_path, which, edits, says, monkeypatch):
    src = good[0] if which == "a" else good[1]
    bad = variant(src, tmp_path / "bad.safetensors", **edits)
    model = tiny_model()
    for method in ("add_adapter", "add_lora", "add_classification_head", "add_full_finetuning"):
        monkeypatch.setattr(model, method, lambda *a, **k: pytest.fail("built before the file was checked"))
    with pytest.raises(WeightsError) as e:
        model.load_adapter(bad)
    message = str(e.value)
    assert message.startswith(str(bad)) and "\n" not in message
    for word in says:
        assert word in message, (word, message)
    assert model.names() == []


def test_the_good_files_load(good):
    model = tiny_model()
    assert [model.load_adapter(p) for p in good] == ["a", "l"]


def test_a_real_bottleneck_bomb_allocates_nothing(good, tmp_path):
    """`bottleneck: 20000`'s adapters would be 2 x 6 x 2 x 20000 x 384 floats on MiniLM; here it
    is refused before the first array is made (its tensors in the file are m=3)."""
    import tracemalloc

    bad = variant(good[0], tmp_path / "bomb.safetensors", meta=set_json("adapter", "bottleneck", 100))
    model = tiny_model()
    tracemalloc.start()
    with pytest.raises(WeightsError):
        model.load_adapter(bad)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < 1 << 20, peak
