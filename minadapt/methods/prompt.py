"""Prompt tuning (Lester et al., 2021), the method "prompt": n trained vectors in front of every
sentence's word embeddings, and nothing else in the backbone changes (nn/prompt.py).

    x = dropout(LayerNorm([P; W_word[ids]] + W_pos[0:n+T] + W_type[[0]*n; types]))

As PEFT's PromptTuningConfig on a sequence-classification BERT: the prompt goes in before the
position and type embeddings and the embedding LayerNorm, takes positions 0..n-1 and type 0, the
mask gains n ones, and the head reads row 0 (the first virtual token: BERT's pooler reads row 0
whatever sits there). The parameter is P (n, H), named as PEFT names it in memory:
prompt_encoder.{name}.embedding.weight. Every sequence is n rows longer in every layer, so
inference costs more, and it cannot be merged into the weights. The gradient reaches P through the
whole encoder and the embedding LayerNorm (Model.lowest_trainable_layer = -1).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .. import bert
from ..backend import to_numpy
from ..config import positive_int
from ..errors import ConfigError
from ..nn import prompt
from .base import Method, Option

INITS = ("random", "vocab")


@dataclass(frozen=True)
class PromptConfig:
    name: str  # used in parameter names: prompt_encoder.{name}.embedding.weight
    virtual_tokens: int = 20  # n, PEFT's num_virtual_tokens
    init: str = "random"  # "random": N(0, 1), PEFT's PromptTuningInit.RANDOM; "vocab": the word
    #                       embeddings of n random vocabulary ids (PEFT's SAMPLE_VOCAB)

    def __post_init__(self):
        if not (isinstance(self.virtual_tokens, int) and self.virtual_tokens >= 1):
            raise ConfigError(f"virtual_tokens={self.virtual_tokens!r}: expected a whole number, 1 or more")
        if self.init not in INITS:
            raise ConfigError(f"prompt init {self.init!r}: expected one of {', '.join(INITS)}")


def add(model, name: str, config: PromptConfig, seed: int = 0):
    n = config.virtual_tokens
    H = model.params["embeddings.word_embeddings.weight"].shape[1]  # the embeddings' width (ELECTRA: E)
    if n >= model.cfg.max_position_embeddings:
        raise ConfigError(f"virtual_tokens={n}: the checkpoint has {model.cfg.max_position_embeddings} "
                          "positions, and the sentence needs some")
    rng = np.random.default_rng(seed)
    if config.init == "vocab":
        words = to_numpy(model.params["embeddings.word_embeddings.weight"])
        table = words[rng.integers(0, words.shape[0], n)]
    else:
        table = prompt.init_params(n, H, rng, model.dtype)
    model.put({bert.prompt_name(name): table})
    model.add_trainable(name, [bert.prompt_name(name)])


VIRTUAL_TOKENS = Option("virtual_tokens", positive_int,
                        "n, how many trained positions go before every sentence (default: 20); "
                        "each sequence is n rows longer", metavar="N")

PROMPT = Method(
    "prompt", "n trained input vectors before every sentence's embeddings + the head",
    default_lr=3e-2, config=PromptConfig, add=add, run_field="prompt", file_key="prompt",
    options=(VIRTUAL_TOKENS,
             Option("init", str, "the prompt's start: random N(0, 1) (PEFT's default) or the "
                    "embeddings of random vocabulary words (default: random)", choices=INITS,
                    flag_name="--prompt-init")),
    sweep=("virtual_tokens", (20,), None))
