"""The ways of adapting a frozen backbone for a task, one file each; `METHODS` is the table that the
command line, the training loop, `compare` and the file formats read.

    probe.py       the head alone
    bottleneck.py  bottleneck adapters: "houlsby" (two per layer) and "pfeiffer" (one per layer)
    lora.py        low-rank updates of the query and value weights
    full.py        every backbone weight
    prompt.py      n trained vectors before every sentence (prompt tuning)
    prefix.py      n trained keys and values before every attention's own (prefix tuning)
    ia3.py         a learned scale per channel of keys, values and the output projections' inputs

Each declares a `Method` (base.py): its config, how it adds its parameters, its options and
default learning rate, what `compare` sweeps, how a file stores it. A new method is a new file here
and a line below.
"""
from ..errors import ConfigError
from .base import Method, Option
from .bottleneck import HOULSBY, PFEIFFER, AdapterConfig
from .full import FULL
from .ia3 import IA3, IA3Config
from .lora import LORA, LoraConfig
from .prefix import PREFIX, PrefixConfig
from .probe import PROBE
from .prompt import PROMPT, PromptConfig

METHODS: dict[str, Method] = {m.name: m for m in (PROBE, HOULSBY, PFEIFFER, LORA, FULL,
                                                        PROMPT, PREFIX, IA3)}


def get(name: str) -> Method:
    """The method called `name`, or a ConfigError listing them."""
    if name not in METHODS:
        raise ConfigError(f"method {name!r}: expected one of {', '.join(METHODS)}")
    return METHODS[name]


def all_options() -> dict[str, tuple[Option, list[str]]]:
    """Every method option once, by flag: (the Option, the methods that take it)."""
    found: dict[str, tuple[Option, list[str]]] = {}
    for m in METHODS.values():
        for o in m.options:
            found.setdefault(o.flag, (o, []))[1].append(m.name)
    return found


__all__ = ["METHODS", "Method", "Option", "AdapterConfig", "LoraConfig", "PromptConfig", "PrefixConfig",
           "IA3Config", "get", "all_options"]
