"""What a way of adapting the backbone declares, in one place: `Method` and its `Option`s.

A method is one file in this folder (bottleneck.py, lora.py, full.py, probe.py, ...). The command
line, the training loop, `compare` and the file formats read the table `minadapt.methods.METHODS`;
none of them names a method. Adding one is a new file here, an entry in METHODS, and its tests.

A method's config is a frozen dataclass whose first field is `name` (the task it belongs to; it is
part of parameter names) and whose other fields are its options, each with its default. The config
checks itself in `__post_init__` (ConfigError naming the field), so a bad value is refused the same
way from Python, from the command line and from a file's metadata.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Callable

from ..errors import ConfigError


@dataclass(frozen=True)
class Option:
    """A setting of one or more methods, as `minadapt train --FIELD` takes it."""
    field: str  # the config field it sets: "bottleneck" (the flag is --bottleneck)
    type: Callable  # parses the option's text (argparse `type`), e.g. config.positive_int
    help: str  # what it does, for --help
    metavar: str | None = None
    choices: tuple | None = None  # the allowed values, where they are a short list
    flag_only: bool = False  # a switch (--train-layer-norms): present means True
    flag_name: str | None = None  # the flag, where it is not --FIELD (LoRA's r is --lora-rank)

    @property
    def flag(self) -> str:
        return self.flag_name or "--" + self.field.replace("_", "-")


@dataclass(frozen=True)
class Method:
    """One way of adapting the backbone for a task (its head is added beside it, by every method)."""
    name: str  # what --method takes: "houlsby"
    summary: str  # what trains, one line (train --help lists them)
    default_lr: float  # AdamW's peak learning rate when --lr is not given
    config: type | None = None  # its config dataclass (None: no settings: full, probe)
    options: tuple = ()  # the Options it takes (their fields are config fields)
    add: Callable | None = None  # add(model, name, config, seed): its parameters for task `name`;
    #                              called after the task's head exists (full fine-tuning needs it)
    sweep: tuple = ()  # what `compare` varies: (field, default values, its compare option or
    #                    None when the values are fixed), or () for one run
    run_field: str | None = None  # the bert.Run field its config goes in (None: the encoder runs
    #                               as the bare backbone, as for full fine-tuning and the probe)
    file_key: str | None = None  # the metadata key a minadapt file keeps its config under
    trains_backbone: bool = False  # it changes weights every task shares: alone on its model
    merge: Callable | None = None  # merge(model, name) -> a new Model with it folded in, if it can
    fixed: tuple = ()  # ((field, value), ...): config fields this method sets itself, e.g. where
    #                    "pfeiffer" puts its adapter

    def make_config(self, name: str, options: dict | None = None):
        """Its config for task `name` from `options` ({field: value}; None values mean the default).
        An option another method takes is a ConfigError naming the methods that do."""
        options = {k: v for k, v in (options or {}).items() if v is not None}
        foreign = sorted(set(options) - {o.field for o in self.options})
        if foreign:
            from . import METHODS

            k = foreign[0]
            takers = [m.name for m in METHODS.values() if k in {o.field for o in m.options}]
            who = f"only method {' or '.join(takers)} uses it" if takers else "no method takes it"
            raise ConfigError(f"option {k!r}: {who} (this run: method {self.name})")
        for o in self.options:  # the rule the command line applies (config.Number), in the same words
            if o.field in options and hasattr(o.type, "check"):
                o.type.check(o.field, options[o.field])
        return self.config(name=name, **options, **dict(self.fixed)) if self.config else None

    def describe(self, config) -> str:
        """The settings a plot title or a table row names, e.g. "bottleneck 64"; "" for none."""
        if config is None or not self.sweep:
            return ""
        field = self.sweep[0]
        return f"{field.replace('_', ' ')} {getattr(config, field)}"

    def config_dict(self, config) -> dict | None:
        """Its config as a dict (what a file stores); None without one."""
        return dataclasses.asdict(config) if config is not None else None
