"""A task's name, chosen by the user: where it appears in parameter names, and how to change it.

A task's name is part of each of its parameters' names (AdapterHub's and PEFT's conventions):

    encoder.layer.{i}.{attention.output|output}.adapters.{name}.adapter_down.0.weight   adapters
    encoder.layer.{i}.{...}.adapters.{name}.LayerNorm.weight                            their LayerNorms
    encoder.layer.{i}.attention.self.{query|key|value}.lora_{A|B}.{name}.weight          LoRA
    heads.{name}.{1|4}.{weight|bias}                                                     the head

so two files that hold the same name cannot sit on one backbone until one is renamed, which is a
rename of those keys: `rename_task`. The command line names a task on load as `NAME=PATH`.
"""
from __future__ import annotations

import re

from ..errors import ConfigError

VALID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}")  # a dotted name would split a parameter name


def check_name(name: str, where: str = "task name") -> str:
    """`name` when it can name a task (letters, digits, `_` and `-`, at most 64), else ConfigError."""
    if not isinstance(name, str) or not VALID.fullmatch(name):
        raise ConfigError(f"{where}: expected a name of letters, digits, '_' and '-' (no dots or "
                          f"spaces), starting with a letter or digit, at most 64 characters; got {name!r}")
    return name


def rename_task(tensors: dict, old: str, new: str) -> dict:
    """`tensors` with task `old`'s name in each key replaced by `new` (keys of other tasks and of the
    backbone, as a full fine-tuning stores them, are left alone)."""
    if old == new:
        return dict(tensors)
    pattern = re.compile(rf"(^heads\.|\.adapters\.|\.lora_[AB]\.){re.escape(old)}(?=\.)")
    return {pattern.sub(lambda m: m.group(1) + new, k): v for k, v in tensors.items()}


def split_name(spec: str) -> tuple[str | None, str]:
    """`NAME=PATH` -> (NAME, PATH); a bare PATH -> (None, PATH). A path that itself holds `=` is
    taken whole when the part before the first `=` is not a valid name."""
    name, sep, path = spec.partition("=")
    if sep and VALID.fullmatch(name) and path:
        return name, path
    return None, spec
