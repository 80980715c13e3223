"""Lesson 0: what BERT is, for a reader who has not met it: tokens and WordPiece, [CLS] and [SEP],
token types, pretraining (MLM, NSP), MiniLM and all-MiniLM-L6-v2, and one layer's forward and
backward graph with its adapters."""
from .cells import SETUP, WEIGHTS, code, md

Q = "'" * 3

CELLS = [
md(r'''
# Lesson 0 — A BERT primer

The rest of the course builds a BERT encoder and trains adapters on it. This lesson says what BERT
*is*, for a reader who knows Python and calculus (and perhaps "Let's build GPT") but has not met it:
what its input looks like, how it was pretrained, which checkpoint we use, and the picture of one
layer, forward and backward, that lessons 2–5 fill in. Nothing here trains; it runs in seconds.

**BERT in one paragraph** (Devlin et al., 2019, "BERT: Pre-training of Deep Bidirectional
Transformers"). A GPT is a Transformer *decoder*: each token attends only to the tokens before it,
and it is trained to predict the next token. BERT is a Transformer *encoder*: every token attends
to every other token, left and right, and it is trained to fill in blanks. It does not generate
text; it turns a sentence into one vector per token, each informed by the whole sentence, and a
small head on top of those vectors solves a task (sentiment, topic, entailment...). That is what
"fine-tuning BERT" means, and what adapters make cheap.
'''),
SETUP,
WEIGHTS,
md(r'''
## 1. Tokens: WordPiece

BERT reads integer ids from a fixed vocabulary of word pieces. Common words are one piece; a rare
word is split into pieces, the later ones marked `##` (they continue a word rather than start one).
The tokenizer lower-cases first (this checkpoint is "uncased"). The vocabulary's size and a few
examples, from the checkpoint's own files:
'''),
code(r'''
import json

from minadapt.tokenizer import Tokenizer

tok = Tokenizer(WEIGHTS)
config = json.loads((WEIGHTS / "config.json").read_text())
print("vocabulary size:", config["vocab_size"])
for text in ["The film is wonderful.", "An unwatchably pretentious mess.", "minadapt tokenizes WordPiece"]:
    print(f"{text!r:36} -> {tok.tokens(text)}")
'''),
md(r'''
The split is greedy, longest piece first, from the left: that is all WordPiece does at reading
time. (How the vocabulary was chosen, from a corpus, is a separate step that happened once.)

## 2. [CLS], [SEP] and token types

Every input starts with `[CLS]` and ends with `[SEP]`. A *pair* of texts (a question and a passage,
two sentences to compare) is joined with a `[SEP]` between them, and each token carries a **token
type**: 0 for the first text, 1 for the second. BERT adds a learned vector per type to each token's
embedding (lesson 4), so the model can tell the two texts apart. `[CLS]` ("classification") is the
position whose final vector a classification head reads: during pretraining it was trained to sum
up the input (next section). `[PAD]` (id 0) fills short sentences in a batch up to the longest; the
attention mask keeps every token from attending to it (lesson 3).
'''),
code(r'''
one = tok.encode(["The film is wonderful."])
pair = tok.encode(["Is the film good?"], ["The film is wonderful."])
print("one text: ", tok.tokens("The film is wonderful."))
print("  ids:    ", one.input_ids[0].tolist())
print("a pair:   ", tok.tokens("Is the film good?", "The film is wonderful."))
print("  types:  ", pair.token_type_ids[0].tolist())
batch = tok.encode(["The film is wonderful.", "Dull."])
print("a batch, padded:\n  ids ", batch.input_ids.tolist(), "\n  mask", batch.attention_mask.tolist())
'''),
md(r'''
## 3. How BERT was pretrained

BERT learnt from unlabelled text with two self-made tasks, both of which need no human labels:

* **Masked language modelling (MLM).** Some of the input tokens are hidden (replaced by `[MASK]`,
  by a random token, or left as they are, so that the model cannot rely on seeing `[MASK]`), and the
  model predicts the original token at each hidden position from the tokens on *both* sides. The
  BERT paper hides 15% of the tokens. This is where "bidirectional" comes from: a GPT's next-token
  task can only look left.
* **Next sentence prediction (NSP).** Given a pair `[CLS] A [SEP] B [SEP]`, predict from the `[CLS]`
  vector whether B really followed A in the text or was drawn at random. This is why `[CLS]` and
  the token types exist. (Later work, RoBERTa among it, found NSP adds little and dropped it.)

After pretraining the MLM and NSP heads are thrown away; the encoder's weights are what is kept,
and what we load.

## 4. MiniLM and all-MiniLM-L6-v2

The original BERT-base has 12 layers, 768-wide vectors, 110 million parameters. **MiniLM** (Wang et
al., 2020) is a family of small BERT-shaped models trained by *distillation*: a small student learns
to reproduce a large pretrained teacher's self-attention (the attention distributions and the
relations between values in its last layer), rather than learning from text alone.
**all-MiniLM-L6-v2** (from the sentence-transformers project) starts from a 6-layer MiniLM and was
then trained on a very large set of sentence pairs with a contrastive objective, so that similar
sentences get nearby vectors. It is the checkpoint this course loads: small enough to train on a
laptop CPU, good enough to reach useful accuracy with adapters. Its shape, from its config:
'''),
code(r'''
from minadapt.io.weights import read_safetensors

params, _ = read_safetensors(WEIGHTS / "model.safetensors")
n = sum(v.size for v in params.values())
print(f"{config['num_hidden_layers']} layers, hidden size {config['hidden_size']}, "
      f"{config['num_attention_heads']} attention heads of {config['hidden_size'] // config['num_attention_heads']}, "
      f"feed-forward width {config['intermediate_size']}, up to {config['max_position_embeddings']} positions")
print(f"{n / 1e6:.1f} million parameters in {len(params)} arrays; "
      f"the word-embedding table alone: {params['embeddings.word_embeddings.weight'].size / 1e6:.1f} million "
      f"({params['embeddings.word_embeddings.weight'].size / n:.0%})")
print("the activation:", config["hidden_act"], "(the exact erf GELU: lesson 2)")
'''),
md(r'''
## 5. One layer, forward and backward, with its adapters

A BERT layer is two sub-layers, each ending in a residual sum and a LayerNorm. Houlsby adapters sit
at the end of each sub-layer, before the residual sum. Forward, top to bottom (x is `(B, T, H)`):

```
 x ──┬───────────────────────────────────────────────┐
     │                                               │ (residual)
     ├─► Linear Q|K|V ─► attention(q, k, v, mask) ─► Linear ─► a ──┬──────────┐
     │                                                             │          │
     │                                                   adapter: down ─► swish ─► up
     │                                                             │          │
     └────────────────────────────────────────────► ( x + a + A(a) ) ─► LayerNorm ─► h
 h ──┬───────────────────────────────────────────────┐
     │                                               │ (residual)
     ├─► Linear (H -> 4H) ─► GELU ─► Linear (4H -> H) ─► o ──┬──────────┐
     │                                                       │          │
     │                                             adapter: down ─► swish ─► up
     │                                                       │          │
     └──────────────────────────────────────────► ( h + o + A(o) ) ─► LayerNorm ─► out
```

Backward is the same graph read bottom to top, every arrow reversed, each box replaced by its
backward (`backward(dout, cache)`), and every **fork** in the forward (a value used twice) becomes a
**sum** of the gradients that come back along its branches:

```
 dout ─► LayerNorm.backward ─► ds2 ──┬──────────────► dh  (the residual branch: + ds2)
                                     ├──────────────► do  (o used directly: + ds2)
                                     └─► adapter.backward ─► do  (+ dA), dW_down, dW_up  ← trained
 do ─► Linear.backward ─► GELU.backward ─► Linear.backward ─► dh  (+ the residual's ds2)
 dh ─► LayerNorm.backward ─► ds1 ──┬──────────────► dx  (the residual branch: + ds1)
                                   ├──────────────► da
                                   └─► adapter.backward ─► da (+ dA), dW_down, dW_up     ← trained
 da ─► Linear.backward ─► attention.backward ─► Linear Q|K|V.backward ─► dx  (+ ds1)
```

Every `Linear` here is frozen: its backward computes `dx` only, never `dW`. Only the adapters (and
the head, on top of the last layer) get parameter gradients. Exercise 3 asks you to write exactly
this backward; lessons 2–5 derive each box.

## Check your understanding

1. Why can BERT not generate text the way GPT does?
2. A sentence pair has 7 tokens in the first text and 5 in the second (word pieces). How many
   positions does BERT see, and how many have token type 1?
3. Which vector does a classification head read, and which pretraining task trained it for that?
4. In the backward picture, why is `ds2` added into `dh`?

<details><summary>Answers</summary>

1. Every token attends to both sides, and it was trained to fill blanks, not to predict the next
   token from the left only: there is no left-to-right factorisation to sample from.
2. 7 + 5 + 3 = 15: `[CLS]`, the 7, `[SEP]`, the 5, `[SEP]`. Type 1 marks the second text and its
   `[SEP]`: 6 positions.
3. The final vector of `[CLS]`; next sentence prediction was decided from it.
4. `h` is used twice in the forward (as the feed-forward input and in the residual sum `h + o + A(o)`),
   so its gradient is the sum of what comes back along both uses.
</details>
'''),
]
