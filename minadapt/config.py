"""BERT's configuration, read from a HuggingFace `config.json`.

Only the fields the maths needs are kept; each has the meaning it has in transformers' BertConfig.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields
from pathlib import Path

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

    REQUIRED = ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads",
                "intermediate_size")

    @property
    def head_size(self) -> int:
        return self.hidden_size // self.num_attention_heads

    @classmethod
    def from_dict(cls, d: dict, source: str = "config") -> "BertConfig":
        missing = [k for k in cls.REQUIRED if k not in d]
        if missing:
            raise ConfigError(f"{source}: missing required field(s) {', '.join(missing)} "
                              f"(a BERT config.json needs {', '.join(cls.REQUIRED)})")
        known = {f.name for f in fields(cls)}
        cfg = cls(**{k: v for k, v in d.items() if k in known})
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
