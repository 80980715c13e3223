"""Exercise 7, the capstone: the learner's own functions from exercises 1-4 run the pretrained BERT
and train an adapter on SST-2 past 80% dev accuracy, with the learner's AdamW and schedule."""
from .cells import SETUP, WEIGHTS, code, md

CELLS = [
md(r'''
# Exercise 7 — Capstone: your code trains BERT

Everything you wrote in exercises 1–4 now replaces the library's maths inside the real pretrained
all-MiniLM-L6-v2 (lesson 0 introduces it), frozen: every linear layer (Q|K|V, the
attention output, the feed-forward block, the adapters' projections, the head), GELU, every
LayerNorm, softmax and attention with its padding mask, your bottleneck adapter, dropout and the
cross-entropy loss, forward and backward. The training loop below is yours too: your `adamw_step`
updates each trainable array and your `lr_schedule` sets its rate. What is left of the library is
the wiring (`minadapt/bert.py` calls the ops in a layer's order), the tokenizer and embedding
lookup, and `tanh` in the head.

There is nothing new to write here: run it. If one of your functions is wrong in a way the small
checks missed, the message names your function and line.
'''),
SETUP,
md(r'''
## 1. Your functions

`%run` executes your exercise notebooks here, from this folder, so their functions (and their
checks, which must all print `pass`) land in this notebook. Exercise 3 loads the checkpoint once in
float64 for its last check; that takes a little while.
'''),
code(r'''
%run 01_linear_gelu_layernorm.ipynb
%run 02_softmax_attention.ipynb
%run 03_adapter_layer.ipynb
%run 04_head_adamw.ipynb
'''),
md(r'''
## 2. The model on your ops

`learner.ops(globals())` picks your functions by their exercise names and wraps each in what
`bert.py` calls (your linear sees `(N, D)` rows and bert.py has `(B, T, D)`; your attention takes
split heads). The wrappers check every shape your functions return before the library uses it.
Two honest differences from the library's ops: your linear backward computes $\bar W$ for frozen
weights too (then it is dropped), and your attention has no dropout on its probabilities.
'''),
WEIGHTS,
code(r'''
import os
import time

from minadapt import learner, load_model
from minadapt.optim import default_no_decay
from minadapt.tasks import load_task
from minadapt.tasks.batching import bucketed_batches, sequential_batches

mine = learner.ops(globals())
model = load_model(WEIGHTS, ops=mine)  # float32, your ops
model.add_adapter("sst2", bottleneck=64).add_classification_head("sst2", 2)
names = sorted(model.trainable_names("sst2"))
print(f"ops: {model.ops.name}; {len(names)} trainable arrays, "
      f"{sum(model.params[k].size for k in names):,} numbers")
'''),
md(r'''
## 3. The data

SST-2: film-review snippets labelled negative (0) or positive (1). `load_task` reads it from
`$MINADAPT_DATA/sst2` (or the cache, downloading it once); set the folder here if yours is elsewhere.
Training snippets are cut at `MAX_LEN` tokens, batches of 32 have similar lengths (lesson 6 says
why), and we train on the first `SUBSET` snippets of the training set; the cell prints the counts.
'''),
code(r'''
# os.environ["MINADAPT_DATA"] = "/path/to/data"   # a folder holding sst2/, if it is not found
data = load_task("sst2")
train, dev = data["train"], data["dev"]
tok = model.tokenizer
SUBSET, MAX_LEN = 4800, 64
train_ids = [ids[:MAX_LEN - 1] + ids[-1:] if len(ids) > MAX_LEN else ids for ids in tok.ids(train.texts[:SUBSET])]
dev_ids = tok.ids(dev.texts)
batches = bucketed_batches(np.array([len(s) for s in train_ids]), 32, np.random.default_rng(0))
print(f"{len(train_ids):,} training snippets (at most {MAX_LEN} tokens) in {len(batches)} batches of up to 32; "
      f"{len(dev_ids)} dev sentences")


def dev_accuracy():
    """Accuracy on the whole dev set, in batches sorted by length (evaluation: no dropout)."""
    correct = 0
    for idx in sequential_batches(len(dev_ids), 128, np.array([len(s) for s in dev_ids])):
        b = tok.pad([dev_ids[i] for i in idx])
        logits = model.logits(b.input_ids, b.attention_mask, b.token_type_ids, adapter="sst2")
        correct += int((logits.argmax(axis=1) == dev.labels[idx]).sum())
    return correct / len(dev_ids)
'''),
md(r'''
## 4. Training, with your AdamW and your schedule

One step: your forward and backward through the whole model (`loss_and_grads`), then your
`adamw_step` on each trainable array, at the rate your `lr_schedule` gives (a warm-up of a tenth of
the steps, then linear decay). Weight decay 0.01, except biases and LayerNorm parameters (BERT's
recipe). The backbone is never handed to the optimiser.
'''),
code(r'''
STEPS, LR = 120, 2e-3
state = {k: (np.zeros_like(model.params[k]), np.zeros_like(model.params[k])) for k in names}
frozen_name = "encoder.layer.3.intermediate.dense.weight"
frozen_before = model.params[frozen_name].copy()
losses, t0 = [], time.perf_counter()
for step in range(STEPS):
    idx = batches[step % len(batches)]
    b = tok.pad([train_ids[i] for i in idx])
    loss, _, grads = model.loss_and_grads(b.input_ids, b.attention_mask, b.token_type_ids,
                                          train.labels[idx], adapter="sst2", train=True)
    lr = lr_schedule(step, STEPS, STEPS // 10, LR)
    for k in names:
        wd = 0.0 if default_no_decay(k) else 0.01
        p, m, v = adamw_step(model.params[k], grads[k], *state[k], step + 1, lr, (0.9, 0.999), 1e-8, wd)
        model.params[k][...] = p  # into the model's own array
        state[k] = (m, v)
    losses.append(float(loss))
    if step % 25 == 0 or step == STEPS - 1:
        print(f"step {step:3d}  loss {np.mean(losses[-25:]):.3f}  {time.perf_counter() - t0:5.0f} s", flush=True)
train_s = time.perf_counter() - t0
t1 = time.perf_counter()
acc = dev_accuracy()
print(f"dev accuracy after {STEPS} steps on your ops: {acc:.1%} "
      f"(training {train_s:.0f} s, evaluating {time.perf_counter() - t1:.0f} s on this machine)")
print("the frozen backbone is bit-identical:", np.array_equal(model.params[frozen_name], frozen_before))
assert acc > 0.80, f"dev accuracy {acc:.1%}: not past 80%"
'''),
code(r'''
fig, ax = plt.subplots(figsize=(8, 3))
ax.plot(losses, color="lightgrey", label="loss of each batch")
ax.plot(np.arange(9, STEPS), np.convolve(losses, np.ones(10) / 10, "valid"), color="C0", label="mean of the last 10")
ax.axhline(np.log(2), color="grey", ls=":", label="ln 2: a coin toss")
ax.set_xlabel("step (32 snippets each)")
ax.set_ylabel("cross-entropy")
ax.set_title("your ops, your AdamW: training the adapters and the head")
ax.legend(fontsize=8)
ax.grid(alpha=0.3)
plt.show()
'''),
md(r'''
## 5. What your model says

`model.logits` runs your forward ops in evaluation mode; your cross-entropy's softmax is not in
that path, so the probabilities come from a plain one here. Is the third prediction right? (It is
praise, said as a double negative.)
'''),
code(r'''
texts = ["a gripping , beautifully shot film with a terrific cast .",
         "the plot never comes together and the jokes fall flat .",
         "not bad at all ."]
z = model.logits(*tok.encode(texts), adapter="sst2")
p = np.exp(z - z.max(axis=1, keepdims=True))
p /= p.sum(axis=1, keepdims=True)
for t, row in zip(texts, p):
    print(f"{['negative', 'positive'][int(row.argmax())]:8s} {row.max():6.1%}   {t}")
'''),
md(r'''
## Where to go from here

- Swap one of your ops back for the library's (`model.ops.gelu = minadapt.nn.gelu`) and time a step:
  which of yours is slowest, and why (lesson 2's appendix on the fast ops has the answers)?
- Train with `bottleneck=8`: how much accuracy do 8 numbers per adapter keep?
- Your LoRA pair (exercise 6) is one more op: `minadapt/nn/lora.py` is what bert.py calls for it.
'''),
]
