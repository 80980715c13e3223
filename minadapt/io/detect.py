"""Which format a saved adapter is in, from what the path holds."""
from __future__ import annotations

import json
from pathlib import Path

from ..errors import WeightsError


def detect_format(path) -> str:
    """"minadapt" for a file (minadapt's .safetensors), and for a directory, from its
    adapter_config.json: "peft" (it has `peft_type`) or "adapterhub" (it has `config` and
    `model_class`). Raises WeightsError naming what was found otherwise."""
    path = Path(path)
    if path.is_file():
        return "minadapt"
    if not path.is_dir():
        raise WeightsError(f"{path}: no such adapter file or directory")
    config = path / "adapter_config.json"
    if not config.is_file():
        raise WeightsError(f"{path}: a directory without adapter_config.json is neither an AdapterHub "
                           f"nor a PEFT adapter (it holds: {', '.join(sorted(p.name for p in path.iterdir())) or 'nothing'})")
    d = read_json(config)
    if "peft_type" in d:
        return "peft"
    if "config" in d and "model_class" in d:
        return "adapterhub"
    raise WeightsError(f"{config}: neither PEFT's (no peft_type) nor AdapterHub's (no config and "
                       "model_class) adapter_config.json")


def read_json(path: Path) -> dict:
    try:
        d = json.loads(Path(path).read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise WeightsError(f"{path}: line {e.lineno}: not valid JSON ({e.msg})") from None
    if not isinstance(d, dict):
        raise WeightsError(f"{path}: expected a JSON object, found {type(d).__name__}")
    return d


def read_tensors(directory: Path, name: str, bin_name: str) -> tuple[Path, dict]:
    """(path, {key: array}) of directory/name (safetensors), else of directory/bin_name (a torch
    pickle, read without torch and without running code: see torch_pickle.py); WeightsError when
    neither is there."""
    from .torch_pickle import load_torch_bin
    from .weights import read_safetensors

    path = directory / name
    if path.is_file():
        return path, read_safetensors(path)[0]
    if (directory / bin_name).is_file():
        return directory / bin_name, load_torch_bin(directory / bin_name)
    raise WeightsError(f"{directory}: no {name} (nor {bin_name})")
