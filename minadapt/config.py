"""BERT's configuration, read from a HuggingFace `config.json`.

Only the fields the maths needs are kept; each has the meaning it has in transformers' BertConfig.
`model_type` says which member of the BERT family the checkpoint is (architectures.py: bert,
roberta, xlm-roberta, distilbert, electra); any other is refused, since running it as BERT would
give wrong numbers without a word. A config.json without `model_type` is read as BERT's.
"""
from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, fields
from numbers import Integral, Real
from pathlib import Path

from .architectures import ARCHITECTURES, SUPPORTED, Architecture
from .errors import ConfigError


@dataclass(frozen=True)
class BertConfig:
    vocab_size: int  # V: rows of the word-embedding table
    hidden_size: int  # H: width of every token vector between layers
    num_hidden_layers: int  # number of encoder layers
    num_attention_heads: int  # nh: H is split into nh heads of hs = H / nh
    intermediate_size: int  # F: width of the feed-forward block (usually 4 H)
    max_position_embeddings: int = 512  # longest sequence the position table covers
    type_vocab_size: int = 2  # segment ids (sentence A / B)
    layer_norm_eps: float = 1e-12  # added to the variance inside every LayerNorm
    hidden_dropout_prob: float = 0.1  # dropout after embeddings, attention output and FFN
    attention_probs_dropout_prob: float = 0.1  # dropout on the attention probabilities
    hidden_act: str = "gelu"  # the FFN non-linearity; minadapt implements BERT's exact "gelu"
    model_type: str = "bert"  # which architecture (architectures.ARCHITECTURES)
    embedding_size: int | None = None  # E, ELECTRA's embedding width (None: E = H, no projection)
    pad_token_id: int = 0  # RoBERTa counts positions from it (architectures.py)

    REQUIRED = ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads",
                "intermediate_size")

    @property
    def head_size(self) -> int:
        return self.hidden_size // self.num_attention_heads

    @property
    def arch(self) -> Architecture:
        return ARCHITECTURES[self.model_type]

    @property
    def position_offset(self) -> int:
        """Row of the position table that the first token reads: pad_token_id + 1 in RoBERTa."""
        return self.pad_token_id + 1 if self.arch.positions_after_pad else 0

    @property
    def max_tokens(self) -> int:
        """The longest input the position table covers (RoBERTa's 514 rows hold 512 tokens)."""
        return self.max_position_embeddings - self.position_offset

    @property
    def attention_output_dropout_prob(self) -> float:
        return self.hidden_dropout_prob if self.arch.attention_output_dropout else 0.0

    @classmethod
    def from_dict(cls, d: dict, source: str = "config") -> "BertConfig":
        model_type = d.get("model_type", "bert")
        if not isinstance(model_type, str) or model_type not in ARCHITECTURES:
            raise ConfigError(f"{source}: model_type {model_type!r} is not supported; minadapt runs "
                              f"{', '.join(SUPPORTED)}")
        arch = ARCHITECTURES[model_type]
        theirs = {v: k for k, v in arch.config_names.items()}  # BertConfig field -> their name
        missing = [theirs.get(k, k) for k in cls.REQUIRED if theirs.get(k, k) not in d]
        if missing:
            needed = ", ".join(theirs.get(k, k) for k in cls.REQUIRED)
            raise ConfigError(f"{source}: missing required field(s) {', '.join(missing)} "
                              f"(a {model_type} config.json needs {needed})")
        if d.get("position_embedding_type", "absolute") != "absolute":
            raise ConfigError(f"{source}: position_embedding_type {d['position_embedding_type']!r}; "
                              "minadapt implements 'absolute' position embeddings only")
        d = {arch.config_names.get(k, k): v for k, v in d.items()}
        d.update(arch.fixed, model_type=model_type)
        if d.get("embedding_size") == d["hidden_size"]:
            d["embedding_size"] = None  # ELECTRA without a projection
        known = {f.name for f in fields(cls)}
        cfg = cls(**{k: v for k, v in d.items() if k in known and v is not None})
        if cfg.hidden_act not in ("gelu",):
            raise ConfigError(f"{source}: hidden_act is {cfg.hidden_act!r}; minadapt implements "
                              "BERT's exact erf GELU ('gelu') only")
        if cfg.hidden_size % cfg.num_attention_heads:
            raise ConfigError(f"{source}: hidden_size {cfg.hidden_size} is not divisible by "
                              f"num_attention_heads {cfg.num_attention_heads}")
        return cfg

    @classmethod
    def from_json(cls, path: str | Path) -> "BertConfig":
        path = Path(path)
        try:
            d = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ConfigError(f"{path}: no such file (a checkpoint folder needs config.json)") from None
        except json.JSONDecodeError as e:
            raise ConfigError(f"{path}: line {e.lineno}: not valid JSON ({e.msg})") from None
        if not isinstance(d, dict):
            raise ConfigError(f"{path}: expected a JSON object, found {type(d).__name__}")
        return cls.from_dict(d, source=str(path))

    def to_dict(self) -> dict:
        return asdict(self)


# --- numeric settings: one rule, checked by the CLI's argparse and by the config dataclasses ------
@dataclass(frozen=True)
class Number:
    """A rule for a numeric setting: an int or a finite float within bounds.

    The same object serves both places a number enters: as an argparse `type` (`Number(...)(text)`
    parses the option's text, and argparse prefixes its message with the option's name) and in a
    config dataclass's `__post_init__` (`rule.check(name, value)` raises ConfigError naming the field).
    So `minadapt train --lr -1` and `TrainConfig(lr=-1)` fail for the same reason, in the same words.
    """
    kind: type  # int or float
    low: float | None = None  # smallest allowed value (None: no bound)
    high: float | None = None  # largest allowed value
    low_open: bool = False  # True: `low` itself is not allowed (lr > 0, not lr >= 0)

    def describe(self) -> str:
        what = "an integer" if self.kind is int else "a finite number"
        if self.low is not None and self.high is not None:
            return f"{what} from {self.low:g} to {self.high:g}"
        if self.low is not None:
            return f"{what} {'>' if self.low_open else '>='} {self.low:g}"
        if self.high is not None:
            return f"{what} <= {self.high:g}"
        return what

    def fits(self, value) -> bool:
        """True when `value` is of the right kind (bools are not numbers here) and in range."""
        if isinstance(value, bool) or not isinstance(value, Integral if self.kind is int else Real):
            return False
        if not math.isfinite(value):
            return False
        if self.low is not None and (value < self.low or (self.low_open and value == self.low)):
            return False
        return self.high is None or value <= self.high

    def check(self, name: str, value, optional: bool = False):
        """`value` if it fits, else ConfigError naming `name`; `optional`: None is allowed too."""
        if (optional and value is None) or self.fits(value):
            return value
        none = " or None" if optional else ""
        raise ConfigError(f"{name}: expected {self.describe()}{none}, got {value!r}")

    def __call__(self, text: str):
        """argparse `type`: the option's text as a number, or ArgumentTypeError."""
        import argparse

        try:
            value = self.kind(text)
        except ValueError:
            value = None
        if value is None or not self.fits(value):
            raise argparse.ArgumentTypeError(f"expected {self.describe()}, got {text!r}")
        return value


positive_int = Number(int, low=1)  # counts of things: batch size, bottleneck width, steps
non_negative_int = Number(int, low=0)  # seeds, "0 means never" intervals
fraction = Number(float, low=0.0, high=1.0)  # shares of something: warm-up, dropout


def finite_float(min: float | None = None, strict: bool = False, max: float | None = None) -> Number:
    """A finite float >= min (> min when `strict`) and <= max: `finite_float(min=0, strict=True)`."""
    return Number(float, low=min, high=max, low_open=strict)
