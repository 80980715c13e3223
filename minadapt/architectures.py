"""The BERT family as data: what RoBERTa, XLM-R, DistilBERT and ELECTRA change, and nothing else.

All five run the same layer equations (bert.py). What differs between them is data:

    model_type    prefix         names                 positions      token types  LayerNorm eps
    bert          bert.          BERT's                0, 1, 2, ...   yes          config
    roberta       roberta.       BERT's                p+1, p+2, ...  yes (one)    config
    xlm-roberta   roberta.       BERT's                p+1, p+2, ...  yes (one)    config
    distilbert    distilbert.    transformer.layer.*   0, 1, 2, ...   none         1e-12, fixed
    electra       electra.       BERT's                0, 1, 2, ...   yes          config

(p = pad_token_id: RoBERTa numbers the positions of real tokens from the padding index on, so the
first token reads row p + 1 of the position table.) Two differences are maths, and bert.py has them
as code: ELECTRA's embeddings are E wide and a linear `embeddings_project` (E -> H; minadapt's
`embeddings.project`) follows them when E != H; DistilBERT's attention output has no dropout.

Inside minadapt every parameter has BERT's bare-model name (`encoder.layer.3.output.dense.weight`),
whichever architecture it came from. `theirs(name)` gives an architecture's name for one of ours
(the base model's, without the `prefix` that task models and AdapterHub put before it), `ours(name)`
the other way. Loading a checkpoint and reading or writing AdapterHub's and PEFT's files rename
through this one table, and adapters sit where AdapterHub puts them in every architecture (after the
attention output and after the feed-forward output, before each residual LayerNorm: DistilBERT's
`attention_adapters` and `output_adapters` are those two places).
"""
from __future__ import annotations

from dataclasses import dataclass, field

PROJECTION = "embeddings.project."  # ELECTRA's E -> H linear, in minadapt's name
# Early checkpoints ported from TensorFlow (bert-base-uncased among them) call LayerNorm's gain and
# bias gamma and beta; transformers renames them at load, and so does `ours`.
LEGACY_SUFFIXES = {"LayerNorm.gamma": "LayerNorm.weight", "LayerNorm.beta": "LayerNorm.bias"}


@dataclass(frozen=True)
class Architecture:
    model_type: str  # config.json's model_type
    prefix: str  # the base model's attribute in task models and AdapterHub files ("roberta.")
    adapter_model_class: str  # AdapterHub's model class for it (its adapter_config.json says so)
    base_model_class: str  # transformers' base model class (PEFT's adapter_config.json names it)
    layers: str = "encoder.layer."  # where the layers are: "transformer.layer." in DistilBERT
    layer_names: dict = field(default_factory=dict)  # ours -> theirs after `{layers}{i}.`, where they differ
    other_names: dict = field(default_factory=dict)  # our other names -> theirs, where they differ
    config_names: dict = field(default_factory=dict)  # their config.json field -> BertConfig's
    fixed: dict = field(default_factory=dict)  # BertConfig fields this architecture fixes (not read)
    positions_after_pad: bool = False  # RoBERTa: position of token t is pad_token_id + 1 + t
    attention_output_dropout: bool = True  # dropout on the attention output projection (not DistilBERT)
    ignored: tuple = ()  # checkpoint keys that are not the encoder's: pooler, pre-training heads
    lora_targets: dict = field(default_factory=lambda: {"query": "query", "key": "key", "value": "value"})

    def theirs(self, name: str) -> str:
        """This architecture's name for minadapt's parameter `name` (without `prefix`)."""
        if name.startswith("encoder.layer."):
            i, rest = name[len("encoder.layer."):].split(".", 1)
            for part in sorted(self.layer_names, key=len, reverse=True):  # attention.output.dense. first
                if rest.startswith(part):
                    rest = self.layer_names[part] + rest[len(part):]
                    break
            return f"{self.layers}{i}.{rest}"
        for ours, theirs in self.other_names.items():
            if name.startswith(ours):
                return theirs + name[len(ours):]
        return name

    def ours(self, name: str) -> str:
        """minadapt's name for this architecture's parameter `name` (a `prefix` on it is dropped)."""
        if name.startswith(self.prefix):
            name = name[len(self.prefix):]
        for old, new in LEGACY_SUFFIXES.items():
            if name.endswith(old):
                name = name[:-len(old)] + new
        if name.startswith(self.layers):
            i, rest = name[len(self.layers):].split(".", 1)
            inverse = {v: k for k, v in self.layer_names.items()}
            for part in sorted(inverse, key=len, reverse=True):
                if rest.startswith(part):
                    rest = inverse[part] + rest[len(part):]
                    break
            return f"encoder.layer.{i}.{rest}"
        for ours, theirs in self.other_names.items():
            if name.startswith(theirs):
                return ours + name[len(theirs):]
        return name


_BERT_IGNORED = ("pooler.", "embeddings.position_ids", "cls.")
_ROBERTA_IGNORED = ("pooler.", "embeddings.position_ids", "lm_head.")

ARCHITECTURES = {a.model_type: a for a in (
    Architecture("bert", "bert.", "BertAdapterModel", "BertModel", ignored=_BERT_IGNORED),
    Architecture("roberta", "roberta.", "RobertaAdapterModel", "RobertaModel", positions_after_pad=True,
                 ignored=_ROBERTA_IGNORED),
    Architecture("xlm-roberta", "roberta.", "XLMRobertaAdapterModel", "XLMRobertaModel",
                 positions_after_pad=True, ignored=_ROBERTA_IGNORED),
    Architecture(
        "distilbert", "distilbert.", "DistilBertAdapterModel", "DistilBertModel", layers="transformer.layer.",
        layer_names={
            "attention.self.query.": "attention.q_lin.", "attention.self.key.": "attention.k_lin.",
            "attention.self.value.": "attention.v_lin.", "attention.output.dense.": "attention.out_lin.",
            "attention.output.LayerNorm.": "sa_layer_norm.",
            "attention.output.adapters.": "attention_adapters.adapters.",
            "intermediate.dense.": "ffn.lin1.", "output.dense.": "ffn.lin2.",
            "output.LayerNorm.": "output_layer_norm.", "output.adapters.": "output_adapters.adapters.",
        },
        config_names={"dim": "hidden_size", "hidden_dim": "intermediate_size", "n_layers": "num_hidden_layers",
                      "n_heads": "num_attention_heads", "dropout": "hidden_dropout_prob",
                      "attention_dropout": "attention_probs_dropout_prob", "activation": "hidden_act"},
        fixed={"type_vocab_size": 0, "layer_norm_eps": 1e-12},  # no token types; eps hard-coded
        attention_output_dropout=False,
        ignored=("embeddings.position_ids", "vocab_transform.", "vocab_layer_norm.", "vocab_projector.",
                 "pre_classifier.", "classifier."),
        lora_targets={"query": "q_lin", "key": "k_lin", "value": "v_lin"},
    ),
    Architecture("electra", "electra.", "ElectraAdapterModel", "ElectraModel",
                 other_names={PROJECTION: "embeddings_project."},
                 ignored=("embeddings.position_ids", "discriminator_predictions.", "generator_predictions.",
                          "generator_lm_head.")),
)}
SUPPORTED = tuple(ARCHITECTURES)
