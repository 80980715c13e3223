"""Small random BERT-family checkpoints and the reference numbers of transformers, AdapterHub and PEFT.

Usage (needs torch, transformers, adapters, peft, the `ref` extra; minadapt never imports them)::

    MINADAPT_DATA=/path/to/data python tests/make_family_fixtures.py

For each architecture in ARCHS it writes ``tests/fixtures/family/<arch>/``, a checkpoint folder as a
user would have it (``config.json``, ``model.safetensors`` in float32, ``tokenizer.json``), made by
transformers from a random initialisation (no download):

- the tokenizer is trained here on the first 300 SST-2 training sentences with ``tokenizers``:
  WordPiece for BERT, DistilBERT and ELECTRA, byte-level BPE for RoBERTa, a SentencePiece-style
  unigram for XLM-R, each with its model's post-processor (``<s> a </s></s> b </s>`` for the last two);
- the weights are transformers' own initialisation made larger (every tensor replaced by
  ``randn * 0.1``, LayerNorm gains ``1 + randn * 0.1``, ``torch.manual_seed(0)``), so that a wrong
  offset or name shows; the folder is saved by the class a user's checkpoint comes from (a base
  model, or a pre-training model whose names carry a prefix and a head minadapt skips).

and ``tests/fixtures/family/<arch>.reference.safetensors``, float64, eval mode:

``single.*``, ``pair.*``    ``input_ids``, ``attention_mask``, ``token_type_ids`` (transformers'
    tokenizer class for the model, from the tokenizer.json; DistilBERT's gives a pair's second text
    type 1, which its model never reads) and
    ``last_hidden_state`` of the base model, for SENTENCES and for PAIRS.
``houlsby.*``, ``pfeiffer.*``    AdapterHub's ``<Model>AdapterModel`` with ``DoubleSeqBnConfig`` /
    ``SeqBnConfig`` (reduction factor 4: bottleneck 8, swish / relu) named "hb" / "pf" and a
    2-label classification head; every trainable parameter replaced by ``randn * 0.05``
    (``torch.manual_seed(1)``); ``param.<AdapterHub name>``, ``grad.<AdapterHub name>`` (mean
    cross-entropy on LABELS), ``logits``, ``loss``, on the single texts. The same adapters are saved
    by AdapterHub as ``<arch>.adapterhub_houlsby/`` and ``<arch>.adapterhub_pfeiffer/``.
``lora.*``    PEFT's LoRA (r 4, alpha 8, no dropout) on the query and value projections of the base
    model (``q_lin``/``v_lin`` in DistilBERT), A and B ``randn * 0.05`` (``torch.manual_seed(2)``),
    and AdapterHub's head shape written out in torch (``heads.lora.1``, ``heads.lora.4``) on [CLS];
    ``param.<PEFT name>``, ``grad.<PEFT name>``, ``logits``, ``loss``. PEFT's saved directory is
    ``<arch>.peft_lora/``.

tokenizers' WordPiece and unigram trainers are not bit-reproducible from run to run, so a rerun
writes other vocabularies and numbers; the tests read everything they compare from the files.
"""
from __future__ import annotations

import argparse
import logging
import os
import shutil
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
OUT = REPO / "tests" / "fixtures" / "family"
SENTENCES = ["Hello world.", "The movie was surprisingly good!", "I would not recommend it to anyone."]
PAIRS = ["A film.", "It was fine, really.", "No."]
LABELS = [1, 1, 0]
# hidden 32, 4 heads, 2 layers, FFN 48; positions for 130 tokens (minadapt's default max_length is 128)
SIZES = dict(hidden_size=32, num_attention_heads=4, num_hidden_layers=2, intermediate_size=48)
ARCHS = ("bert", "roberta", "xlm-roberta", "distilbert", "electra")
WORDPIECE_SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
ROBERTA_SPECIALS = ["<s>", "<pad>", "</s>", "<unk>", "<mask>"]


def corpus(n=300):
    data = Path(os.environ.get("MINADAPT_DATA", REPO.parent / "shared" / "data")) / "sst2" / "train.tsv"
    lines = data.read_text(encoding="utf-8").splitlines()[1:n + 1]
    return [line.split("\t")[0] for line in lines] + SENTENCES + PAIRS


def train_tokenizer(kind: str):
    """A tiny tokenizers.Tokenizer of `kind` (wordpiece, bpe, unigram) with its model's framing."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers

    texts = corpus()
    if kind == "wordpiece":
        tk = Tokenizer(models.WordPiece(unk_token="[UNK]"))
        tk.normalizer = normalizers.BertNormalizer(lowercase=True)
        tk.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
        tk.decoder = decoders.WordPiece()
        tk.train_from_iterator(texts, trainers.WordPieceTrainer(vocab_size=300, special_tokens=WORDPIECE_SPECIALS))
        cls, sep = tk.token_to_id("[CLS]"), tk.token_to_id("[SEP]")
        tk.post_processor = processors.TemplateProcessing(
            single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1",
            special_tokens=[("[CLS]", cls), ("[SEP]", sep)])
    elif kind == "bpe":
        tk = Tokenizer(models.BPE())
        tk.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tk.decoder = decoders.ByteLevel()
        tk.train_from_iterator(texts, trainers.BpeTrainer(
            vocab_size=360, special_tokens=ROBERTA_SPECIALS, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
        tk.post_processor = processors.RobertaProcessing(("</s>", 2), ("<s>", 0), trim_offsets=True,
                                                         add_prefix_space=False)
    else:  # XLM-R: SentencePiece unigram, "▁" marking word starts
        tk = Tokenizer(models.Unigram())
        tk.normalizer = normalizers.NFKC()
        tk.pre_tokenizer = pre_tokenizers.Metaspace()
        tk.decoder = decoders.Metaspace()
        tk.train_from_iterator(texts, trainers.UnigramTrainer(
            vocab_size=300, special_tokens=ROBERTA_SPECIALS[:4], unk_token="<unk>"))
        tk.add_special_tokens(["<mask>"])
        tk.post_processor = processors.TemplateProcessing(
            single="<s> $A </s>", pair="<s> $A </s> </s> $B </s>", special_tokens=[("<s>", 0), ("</s>", 2)])
    return tk


def build(arch: str, vocab_size: int, pad: int):
    """(model to save, base model class, AdapterHub model class, transformers tokenizer class)."""
    import transformers as tf
    from adapters import (BertAdapterModel, DistilBertAdapterModel, ElectraAdapterModel,
                          RobertaAdapterModel, XLMRobertaAdapterModel)

    common = dict(vocab_size=vocab_size, pad_token_id=pad, hidden_dropout_prob=0.1,
                  attention_probs_dropout_prob=0.1)
    if arch == "bert":  # not MiniLM's shape: BERT of another size, 2 token types
        cfg = tf.BertConfig(**SIZES, max_position_embeddings=130, **common)
        return tf.BertModel(cfg), tf.BertModel, BertAdapterModel, tf.BertTokenizerFast
    if arch == "roberta":  # positions 2..41 after the padding index 1
        cfg = tf.RobertaConfig(**SIZES, max_position_embeddings=132, type_vocab_size=1, layer_norm_eps=1e-5,
                               bos_token_id=0, eos_token_id=2, **common)
        return tf.RobertaModel(cfg), tf.RobertaModel, RobertaAdapterModel, tf.RobertaTokenizerFast
    if arch == "xlm-roberta":  # saved as the masked-LM model: `roberta.` names and an lm_head
        cfg = tf.XLMRobertaConfig(**SIZES, max_position_embeddings=132, type_vocab_size=1, layer_norm_eps=1e-5,
                                  bos_token_id=0, eos_token_id=2, **common)
        return (tf.XLMRobertaForMaskedLM(cfg), tf.XLMRobertaModel, XLMRobertaAdapterModel,
                tf.XLMRobertaTokenizerFast)
    if arch == "distilbert":
        cfg = tf.DistilBertConfig(dim=32, n_heads=4, n_layers=2, hidden_dim=48, max_position_embeddings=130,
                                  vocab_size=vocab_size, pad_token_id=pad, dropout=0.1, attention_dropout=0.1)
        return tf.DistilBertModel(cfg), tf.DistilBertModel, DistilBertAdapterModel, tf.DistilBertTokenizerFast
    # ELECTRA's discriminator as pre-trained: `electra.` names, embeddings 16 wide projected to 32
    cfg = tf.ElectraConfig(**SIZES, embedding_size=16, max_position_embeddings=130, **common)
    return tf.ElectraForPreTraining(cfg), tf.ElectraModel, ElectraAdapterModel, tf.ElectraTokenizerFast


def randomise(model, seed=0):
    import torch

    torch.manual_seed(seed)
    with torch.no_grad():
        for n, p in model.named_parameters():
            if "LayerNorm.weight" in n or "layer_norm.weight" in n:
                p.copy_(1 + 0.1 * torch.randn(p.shape))
            else:
                p.copy_(0.1 * torch.randn(p.shape))


def inputs(hf_tok, texts, pairs=None):
    enc = hf_tok(texts, pairs, padding=True, return_tensors="np", return_token_type_ids=True)
    return {"input_ids": enc["input_ids"].astype(np.int64), "attention_mask": enc["attention_mask"].astype(np.int64),
            "token_type_ids": enc["token_type_ids"].astype(np.int64)}


def model_kwargs(arch, batch):
    import torch

    kw = {k: torch.from_numpy(v) for k, v in batch.items()}
    if arch == "distilbert":
        kw.pop("token_type_ids")
    return kw


def make(arch: str, out: Path) -> dict:
    import torch
    import torch.nn.functional as F
    from adapters import DoubleSeqBnConfig, SeqBnConfig
    from peft import LoraConfig, get_peft_model

    folder = out / arch
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    kind = {"roberta": "bpe", "xlm-roberta": "unigram"}.get(arch, "wordpiece")
    tk = train_tokenizer(kind)
    pad = tk.token_to_id("[PAD]" if kind == "wordpiece" else "<pad>")
    model, base_class, adapter_class, tok_class = build(arch, tk.get_vocab_size(), pad)
    randomise(model)
    model.save_pretrained(folder, safe_serialization=True)
    tk.save(str(folder / "tokenizer.json"))
    specials = ({"unk_token": "[UNK]", "sep_token": "[SEP]", "pad_token": "[PAD]", "cls_token": "[CLS]",
                 "mask_token": "[MASK]"} if kind == "wordpiece" else
                {"bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>", "sep_token": "</s>",
                 "pad_token": "<pad>", "cls_token": "<s>", "mask_token": "<mask>"})
    hf_tok = tok_class(tokenizer_file=str(folder / "tokenizer.json"), **specials)
    ref = {}
    single, pair = inputs(hf_tok, SENTENCES), inputs(hf_tok, SENTENCES, PAIRS)
    labels = torch.tensor(LABELS)

    # ---- the encoder, float64 --------------------------------------------------------------------
    base = base_class.from_pretrained(folder, attn_implementation="eager").to(torch.float64).eval()
    for key, batch in (("single", single), ("pair", pair)):
        ref.update({f"{key}.{k}": v for k, v in batch.items()})
        with torch.no_grad():
            ref[f"{key}.last_hidden_state"] = base(**model_kwargs(arch, batch)).last_hidden_state.numpy().copy()

    # ---- AdapterHub: Houlsby and Pfeiffer, float64 ------------------------------------------------
    for key, name, config in (("houlsby", "hb", DoubleSeqBnConfig(reduction_factor=4)),
                              ("pfeiffer", "pf", SeqBnConfig(reduction_factor=4))):
        m = adapter_class.from_pretrained(folder, attn_implementation="eager")
        m.config.name_or_path = f"tiny-{arch}"  # what adapter_config.json records as model_name
        m.add_adapter(name, config=config)
        m.add_classification_head(name, num_labels=2)
        m.train_adapter(name)
        # (a head AdapterHub made from a pre-training checkpoint's own head is left out: it is unused)
        trainable = [(n, p) for n, p in m.named_parameters() if p.requires_grad and f".{name}." in n]
        torch.manual_seed(1)
        with torch.no_grad():
            for _, p in trainable:
                p.copy_(torch.randn(p.shape) * 0.05)
        m = m.to(torch.float64).eval()
        res = m(**model_kwargs(arch, single), labels=labels)
        res.loss.backward()
        for n, p in trainable:
            ref[f"{key}.param.{n}"] = p.detach().numpy().copy()
            ref[f"{key}.grad.{n}"] = p.grad.numpy().copy()
        ref[f"{key}.logits"] = res.logits.detach().numpy().copy()
        ref[f"{key}.loss"] = np.asarray(res.loss.item(), np.float64).reshape(())
        d = out / f"{arch}.adapterhub_{key}"
        shutil.rmtree(d, ignore_errors=True)
        m.save_adapter(str(d), name, use_safetensors=True)

    # ---- PEFT's LoRA on the query and value projections, float64 ---------------------------------
    targets = ["q_lin", "v_lin"] if arch == "distilbert" else ["query", "value"]
    base = base_class.from_pretrained(folder, attn_implementation="eager")
    base.config.name_or_path = f"tiny-{arch}"
    pm = get_peft_model(base, LoraConfig(target_modules=targets, r=4, lora_alpha=8, lora_dropout=0.0))
    lora = [(n, p) for n, p in pm.named_parameters() if p.requires_grad]
    assert lora and all("lora_" in n for n, _ in lora)
    H = SIZES["hidden_size"]
    torch.manual_seed(2)
    head = {k: torch.randn(s) * 0.05 for k, s in (("heads.lora.1.weight", (H, H)), ("heads.lora.1.bias", (H,)),
                                                    ("heads.lora.4.weight", (2, H)), ("heads.lora.4.bias", (2,)))}
    with torch.no_grad():
        for _, p in lora:
            p.copy_(torch.randn(p.shape) * 0.05)
    pm = pm.to(torch.float64).eval()
    head = {k: v.double().requires_grad_() for k, v in head.items()}
    h = pm(**model_kwargs(arch, single)).last_hidden_state
    z = torch.tanh(h[:, 0] @ head["heads.lora.1.weight"].T + head["heads.lora.1.bias"])
    logits = z @ head["heads.lora.4.weight"].T + head["heads.lora.4.bias"]
    loss = F.cross_entropy(logits, labels)
    loss.backward()
    for n, p in [*lora, *head.items()]:
        ref[f"lora.param.{n}"] = p.detach().numpy().copy()
        ref[f"lora.grad.{n}"] = p.grad.numpy().copy()
    ref["lora.logits"] = logits.detach().numpy().copy()
    ref["lora.loss"] = np.asarray(loss.item(), np.float64).reshape(())
    d = out / f"{arch}.peft_lora"
    shutil.rmtree(d, ignore_errors=True)
    pm.peft_config["default"].base_model_name_or_path = f"tiny-{arch}"
    pm.save_pretrained(str(d), safe_serialization=True)
    (d / "README.md").unlink(missing_ok=True)  # PEFT's model-card template
    print(f"{arch}: vocab {tk.get_vocab_size()}, houlsby loss {ref['houlsby.loss']:.6f}, "
          f"lora loss {ref['lora.loss']:.6f}")
    return ref


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", type=Path, default=OUT)
    ap.add_argument("--archs", default=",".join(ARCHS))
    args = ap.parse_args(argv)

    os.environ["HF_HUB_OFFLINE"] = "1"  # everything is made here: never ask the hub
    import torch
    import transformers
    from safetensors.numpy import save_file

    torch.set_num_threads(2)
    transformers.logging.set_verbosity_error()
    logging.getLogger("adapters").setLevel(logging.ERROR)
    args.out.mkdir(parents=True, exist_ok=True)
    for arch in args.archs.split(","):
        ref = {k: np.require(v, requirements="C") for k, v in make(arch, args.out).items()}
        save_file(ref, str(args.out / f"{arch}.reference.safetensors"),
                  metadata={"generator": "tests/make_family_fixtures.py", "sentences": str(SENTENCES),
                            "pairs": str(PAIRS), "labels": str(LABELS),
                            "versions": f"torch {torch.__version__}, transformers {transformers.__version__}"})
    return 0


if __name__ == "__main__":
    sys.exit(main())
