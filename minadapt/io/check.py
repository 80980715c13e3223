"""Check a minadapt adapter file before anything is built from it.

An adapter file's metadata says what to build (a bottleneck of 64, a head of 5 labels, LoRA of
rank 8), and building allocates. So the file is checked first, from its header alone (the 8-byte
length and the JSON header; no tensor is read):

  * the header: a JSON object within the file; each tensor a float dtype (F16, BF16, F32, F64:
    integers or booleans would load and give garbage), a shape, and byte offsets that match the
    shape and lie inside the file;
  * the metadata: every required key present and valid JSON, every field of the right type and in
    its range (check_metadata);
  * the shapes the metadata implies against the tensors' headers: adapter_down (m, H), adapter_up
    (H, m), lora_A (r, H), lora_B (H, r), the head's output (num_labels, H), a backbone tensor its
    checkpoint shape. So a `bottleneck: 20000` written into a small file's metadata is refused
    here, before 1.5 GB are allocated for it.

Each failure is one WeightsError line naming the file, the key or tensor, what was found and what
was expected. The key set (which tensors the task needs) is still checked where the task is built.
"""
from __future__ import annotations

import json
import math
import os
import struct
from pathlib import Path

from ..errors import WeightsError

FLOAT_DTYPES = {"F16": 2, "BF16": 2, "F32": 4, "F64": 8}
MAX_HEADER = 100 << 20  # bytes: safetensors' own limit
REQUIRED = ("format", "backbone", "adapter", "head")  # lora and full_finetuning came later
MAX_LABELS = 100_000


def read_header(path) -> tuple[dict, dict]:
    """({tensor: (dtype, shape)}, metadata) of a safetensors file, checked, without its tensors."""
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"{path}: no such file")
    try:
        size = os.path.getsize(path)
        with open(path, "rb") as f:
            head = f.read(8)
            if len(head) < 8:
                raise WeightsError(f"{path}: not a readable safetensors file ({size} bytes, shorter "
                                   "than its 8-byte header length)")
            (n,) = struct.unpack("<Q", head)
            if n > MAX_HEADER or n > size - 8:
                raise WeightsError(f"{path}: not a readable safetensors file (its header length {n:,} does not "
                                   f"fit in its {size:,} bytes; truncated or corrupt?)")
            raw = f.read(n)
    except OSError as e:
        raise WeightsError(f"{path}: cannot read: {e.strerror or e}") from None
    try:
        header = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise WeightsError(f"{path}: not a readable safetensors file (its header is not JSON)") from None
    if not isinstance(header, dict):
        raise WeightsError(f"{path}: not a readable safetensors file (its header is not a JSON object)")
    meta = header.pop("__metadata__", None) or {}
    if not isinstance(meta, dict) or not all(isinstance(v, str) for v in meta.values()):
        raise WeightsError(f"{path}: its metadata is not a map of strings")
    data = size - 8 - n
    tensors = {}
    for name, entry in header.items():
        where = f"{path}: tensor {name[:100]!r}"
        if not isinstance(entry, dict):
            raise WeightsError(f"{where}: its header entry is not an object")
        dtype, shape, offsets = entry.get("dtype"), entry.get("shape"), entry.get("data_offsets")
        if dtype not in FLOAT_DTYPES:
            raise WeightsError(f"{where} has dtype {str(dtype)[:20]}: adapter files hold float "
                               f"tensors only ({', '.join(FLOAT_DTYPES)})")
        if not (isinstance(shape, list) and all(type(d) is int and d >= 0 for d in shape)):
            raise WeightsError(f"{where}: its shape {str(shape)[:60]} is not a list of sizes")
        if not (isinstance(offsets, list) and len(offsets) == 2 and all(type(o) is int for o in offsets)
                and 0 <= offsets[0] <= offsets[1] <= data):
            raise WeightsError(f"{where}: its byte offsets {str(offsets)[:60]} lie outside the "
                               f"file's {data:,} bytes of data (truncated?)")
        if offsets[1] - offsets[0] != math.prod(shape) * FLOAT_DTYPES[dtype]:
            raise WeightsError(f"{where}: shape {tuple(shape)} of {dtype} needs "
                               f"{math.prod(shape) * FLOAT_DTYPES[dtype]:,} bytes, its offsets "
                               f"give {offsets[1] - offsets[0]:,}")
        tensors[name] = (dtype, tuple(shape))
    return tensors, meta


# --- the metadata ---------------------------------------------------------------------------------
def _int(x, low, high):
    return type(x) is int and low <= x <= high


def _number(x, low, high, high_open=False):
    return (type(x) in (int, float) and math.isfinite(x) and low <= x
            and (x < high if high_open else x <= high))


def _fields(path, key, value: dict, rules: dict, optional=()) -> None:
    """Each field of `value` (metadata `key`) passes its rule: (test, what was expected)."""
    if not isinstance(value, dict):
        raise WeightsError(f"{path}: metadata {key!r} is {type(value).__name__}, expected an object")
    for field, (test, expected) in rules.items():
        if field not in value:
            if field in optional:
                continue
            raise WeightsError(f"{path}: metadata {key!r} has no {field!r} ({expected})")
        if not test(value[field]):
            raise WeightsError(f"{path}: metadata {key}.{field} is {json.dumps(value[field])[:60]}, "
                               f"expected {expected}")


def check_metadata(path, meta: dict, hidden: int, expected_format: str) -> dict:
    """The metadata's JSON values, parsed and checked: {"backbone", "adapter", "head", "lora",
    "full_finetuning"} (None / False when absent)."""
    from ..nn.adapter import NON_LINEARITIES

    if meta.get("format") != expected_format:
        raise WeightsError(f"{path}: not a minadapt adapter file (its metadata has no "
                           f"format={expected_format!r}; found {str(meta.get('format'))[:40]!r})")
    for key in REQUIRED:
        if key not in meta:
            raise WeightsError(f"{path}: its metadata has no {key!r} (a minadapt adapter file has: "
                               f"{', '.join(REQUIRED)}); was it written by minadapt?")
    out = {}
    for key, default in (("backbone", None), ("adapter", None), ("head", None), ("lora", None),
                         ("full_finetuning", False)):
        try:
            out[key] = json.loads(meta[key]) if key in meta else default
        except (ValueError, RecursionError):
            raise WeightsError(f"{path}: metadata {key!r} is not JSON: {meta[key][:60]!r}") from None
    name = lambda x: isinstance(x, str) and 0 < len(x) <= 200  # noqa: E731
    _fields(path, "backbone", out["backbone"], {
        "name": (lambda x: x is None or isinstance(x, str), "a string or null"),
        "hidden_size": (lambda x: _int(x, 1, 1 << 16), "a whole number"),
        "sha256": (lambda x: x is None or isinstance(x, str), "a string or null")})
    if out["adapter"] is not None:
        _fields(path, "adapter", out["adapter"], {
            "name": (name, "a task name"),
            "bottleneck": (lambda x: _int(x, 1, 16 * hidden), f"a whole number from 1 to {16 * hidden}"),
            "non_linearity": (lambda x: x in NON_LINEARITIES, f"one of {', '.join(NON_LINEARITIES)}"),
            "train_layer_norms": (lambda x: isinstance(x, bool), "true or false"),
            "init_std": (lambda x: _number(x, 0, 1e3), "a number >= 0"),
            "architecture": (lambda x: isinstance(x, str), "a string"),
            "init": (lambda x: isinstance(x, str), "a string")}, optional=("architecture", "init"))
    if out["head"] is not None:
        h = out["head"]
        _fields(path, "head", h, {
            "name": (name, "a task name"),
            "num_labels": (lambda x: _int(x, 1, MAX_LABELS), f"a whole number from 1 to {MAX_LABELS}"),
            "dropout": (lambda x: _number(x, 0, 1, high_open=True), "a number, 0 <= p < 1"),
            "labels": (lambda x: x is None or (isinstance(x, list) and len(x) == h.get("num_labels")
                                               and all(isinstance(s, (str, int)) for s in x)),
                       "null or one name per label"),
            "regression": (lambda x: isinstance(x, bool), "true or false")},
            optional=("labels", "regression"))
    if out["lora"] is not None:
        _fields(path, "lora", out["lora"], {
            "name": (name, "a task name"),
            "r": (lambda x: _int(x, 1, hidden), f"a whole number from 1 to {hidden}"),
            "alpha": (lambda x: _number(x, 0, 1e6) and x > 0, "a number > 0"),
            "dropout": (lambda x: _number(x, 0, 1, high_open=True), "a number, 0 <= p < 1"),
            "targets": (lambda x: isinstance(x, list) and x and all(isinstance(t, str) for t in x),
                        "a list of projection names")})
    if not isinstance(out["full_finetuning"], bool):
        raise WeightsError(f"{path}: metadata full_finetuning is {meta['full_finetuning'][:20]}, "
                           "expected true or false")
    names = {x["name"] for x in (out["adapter"], out["lora"], out["head"]) if x}
    if not names:
        raise WeightsError(f"{path}: holds neither an adapter nor a head")
    if len(names) > 1:
        raise WeightsError(f"{path}: its adapter, LoRA and head name different tasks: "
                           f"{', '.join(sorted(names))}")
    return out


# --- the shapes the metadata implies ---------------------------------------------------------------
def implied_shape(tensor: str, parsed: dict, cfg) -> tuple | None:
    """The shape `parsed` metadata implies for `tensor`, or None where it implies none."""
    from .weights import expected_shapes

    # the file's own hidden size: a file for another backbone is consistent in itself, and the
    # backbone check (Model.load_adapter) says which backbone it was made for
    H, a, lo, h = parsed["backbone"]["hidden_size"], parsed["adapter"], parsed["lora"], parsed["head"]
    if a and ".adapter_down." in tensor:
        return (a["bottleneck"], H) if tensor.endswith("weight") else (a["bottleneck"],)
    if a and ".adapter_up." in tensor:
        return (H, a["bottleneck"]) if tensor.endswith("weight") else (H,)
    if lo and ".lora_A." in tensor:
        return (lo["r"], H)
    if lo and ".lora_B." in tensor:
        return (H, lo["r"])
    if h and tensor.startswith(f"heads.{h['name']}."):
        out = 1 if h.get("regression") else h["num_labels"]
        last = tensor.split(".")[-2] == "4"  # heads.NAME.4: the output layer (heads.py)
        if tensor.endswith("weight"):
            return (out, H) if last else (H, H)
        return (out,) if last else (H,)
    return expected_shapes(cfg).get(tensor) if H == cfg.hidden_size else None


def check_adapter_file(path, cfg, expected_format: str | None = None) -> dict:
    """Check minadapt adapter file `path` against model config `cfg` (header, metadata, implied
    shapes; see the module's docstring), reading no tensor; returns the parsed metadata."""
    if expected_format is None:
        from .minadapt_file import FORMAT as expected_format
    tensors, meta = read_header(path)
    parsed = check_metadata(path, meta, cfg.hidden_size, expected_format)
    H = parsed["backbone"]["hidden_size"]
    needs = {"adapter": ".adapter_down.", "lora": ".lora_A.", "head": f"heads."}
    for key, mark in needs.items():
        if parsed[key] and not any(mark in t for t in tensors):
            raise WeightsError(f"{path}: its metadata has {key!r} but no {mark.strip('.')} tensor")
    bound = max(H, cfg.hidden_size, cfg.intermediate_size, cfg.vocab_size, cfg.max_position_embeddings,
                MAX_LABELS)
    for name, (_, shape) in tensors.items():
        want = implied_shape(name, parsed, cfg)
        if want is not None and shape != want:
            raise WeightsError(f"{path}: tensor {name[:100]!r} has shape {shape}, but its metadata "
                               f"implies {want}")
        if want is None and any(d > bound for d in shape):
            raise WeightsError(f"{path}: tensor {name[:100]!r} has shape {shape}, larger than "
                               "anything this model holds")
    return parsed
