"""Lesson 9: many tasks on one frozen backbone: two adapters side by side, swapped per call, nothing
forgotten, the memory they cost, files, the server, and what a trained adapter changes per layer."""
from .cells import SETUP, WEIGHTS, code, md

# OpenBLAS reads its settings once, when NumPy is first imported, so this runs before SETUP.
THREADS = code(r'''
# Before NumPy is imported: let OpenBLAS's idle worker threads sleep after a moment instead of
# spinning (lesson 6 says why; benchmarks/README.md has the measurements).
import os

if "OPENBLAS_THREAD_TIMEOUT" not in os.environ:  # a value you set yourself wins
    os.environ["OPENBLAS_THREAD_TIMEOUT"] = "1"
''')

CELLS = [
md(r'''
# Lesson 9 — Many tasks on one backbone

An adapter is small because the backbone is shared. This lesson makes that concrete: one frozen
all-MiniLM-L6-v2 backbone, and beside it two tasks, each an adapter plus a classification head:

* **sst2**: is a snippet of a film review positive or negative (2 labels; lesson 6);
* **bbc**: which of five topics a BBC News article is about (business, entertainment, politics,
  sports, tech).

1. both tasks as `minadapt.tasks` reads them;
2. train the SST-2 adapter, then the BBC one *on the same model*, briefly (a few dozen steps);
3. **nothing forgotten**: training the second changes neither the first's outputs nor the backbone,
   bit for bit;
4. every call names its task (`adapter=NAME`): one batch, two answers;
5. the memory: the backbone once, and what each further task adds;
6. two small files, reloaded into a fresh model;
7. the server: one process, both tasks, HTTP;
8. what a trained adapter changes: per layer, the size of its correction against the hidden state
   it is added to.

Every claim below is checked by an `assert` in the cell that shows it.
'''),
THREADS,
SETUP,
WEIGHTS,
md(r'''
## 1. Two tasks

A task is data, not code (`minadapt/tasks/task.py`): where its files are, which columns hold the text
and the label, what the labels are called, and which metrics score it. `load_task` finds the files
under `$MINADAPT_DATA/<task>` (CI sets it to the shared data folder), else in minadapt's cache,
and reads them into `Examples(texts, pairs, labels)`, the labels as class indices.
'''),
code(r'''
import json
import tempfile
import time

import minadapt
from minadapt.tasks import Examples, get_task, load_task
from minadapt.train import TrainConfig, softmax, train

TASKS = {"sst2": get_task("sst2"), "bbc": get_task("bbc-news")}
data = {name: load_task(task) for name, task in TASKS.items()}
for name, task in TASKS.items():
    tr, dv = data[name]["train"], data[name]["dev"]
    counts = np.bincount(tr.labels, minlength=len(task.names))
    print(f"{name}: {len(tr.texts):,} train / {len(dv.texts):,} dev examples, labels {task.names}, "
          f"metrics {task.metrics}")
    print(f"      train examples per label {counts.tolist()}; the largest class is {counts.max() / counts.sum():.0%}")
    print(f"      e.g. [{task.names[tr.labels[0]]}] {tr.texts[0][:110]}")
'''),
md(r'''
A BBC article is a few hundred words; its title and first sentence usually name the topic, so this
lesson reads only its first 48 tokens (`max_length`), which keeps each step cheap. SST-2's phrases
are shorter than that anyway.

## 2. Train one task, then the other, on one model

`minadapt.train.train(cfg, model=model, data=...)` is the loop of lesson 6. Given a model, it adds
the adapter and head named `cfg.adapter_name` to it, beside whatever the model already holds,
and trains exactly that task's parameters (`model.trainable_names(name)`). Both runs are short: a
few dozen steps on a subset, and the dev score on the first few hundred dev examples, enough to be
clearly above chance, not to be good.

Before the second run starts we keep a copy of every backbone array and of the SST-2 task's
parameters, and the SST-2 logits on a fixed batch of dev sentences: section 3 compares against them.
'''),
code(r'''
model = minadapt.load_model(WEIGHTS, dtype="float32")
runs = tempfile.TemporaryDirectory()  # train() writes its metrics, plot and adapter file here
SETTINGS = dict(options={"bottleneck": 16}, batch_size=16, max_length=48, eval_every=0)  # both runs
STEPS = {"sst2": 60, "bbc": 40}
SUBSET = {"sst2": 2000, "bbc": 800}  # the first N training examples
DEV = 300  # the first N dev examples are scored


def dev_subset(examples, n=DEV):
    return Examples(examples.texts[:n], None, examples.labels[:n])


def run(name):
    cfg = TrainConfig(task=TASKS[name].name, adapter_name=name, out=f"{runs.name}/{name}",
                      max_steps=STEPS[name], train_subset=SUBSET[name], **SETTINGS)
    result = train(cfg, model=model, data={"train": data[name]["train"], "dev": dev_subset(data[name]["dev"])},
                   progress=False)
    chance = np.bincount(data[name]["dev"].labels[:DEV]).max() / DEV  # always answering the largest class
    print(f"{name}: {result.steps} steps, dev {result.dev_metrics} "
          f"(the largest class alone: {chance:.1%})")
    assert result.dev_metrics["accuracy"] > chance + 0.15, "clearly above chance"
    return result


results = {"sst2": run("sst2")}

backbone_names = [k for k in model.params if k.startswith(("embeddings.", "encoder."))
                  and ".adapters." not in k]
backbone_before = {k: model.params[k].copy() for k in backbone_names}
sst2_before = {k: model.params[k].copy() for k in model.trainable_names("sst2")}
probe = model.tokenizer.encode(data["sst2"]["dev"].texts[:32])  # a fixed batch, tokenised once
sst2_logits_before = model.logits(*probe, adapter="sst2")

results["bbc"] = run("bbc")
print("the model holds:", model.names())
'''),
md(r'''
## 3. Nothing forgotten

Fine-tuning a whole network on task B moves the weights task A relied on, and A gets worse:
*catastrophic forgetting*. Here that cannot happen, by construction: B's gradients are computed for
B's own parameters only (`loss_and_grads` returns exactly `trainable_names("bbc")`), and AdamW
updates only the arrays it was given. So after the BBC run the backbone and every SST-2 parameter
must be **bit-identical** to what they were, and so must SST-2's logits:
'''),
code(r'''
assert set(model.trainable_names("sst2")).isdisjoint(model.trainable_names("bbc"))
assert all(np.array_equal(model.params[k], v) for k, v in backbone_before.items())
assert all(np.array_equal(model.params[k], v) for k, v in sst2_before.items())
sst2_logits_after = model.logits(*probe, adapter="sst2")
assert np.array_equal(sst2_logits_after, sst2_logits_before)
n_backbone = sum(v.size for v in backbone_before.values())
print(f"backbone: {len(backbone_before)} arrays, {n_backbone:,} numbers, bit-identical after training bbc")
print(f"sst2: {len(sst2_before)} arrays bit-identical; its logits on {len(probe.input_ids)} dev sentences bit-identical")
print("largest change of any sst2 logit:", float(np.abs(sst2_logits_after - sst2_logits_before).max()))
'''),
md(r'''
## 4. Every call names its task

The model holds two tasks, so a call must say which one it runs: `adapter="sst2"` routes the
batch through SST-2's adapters and head, `adapter="bbc"` through BBC's. There is no "active adapter"
that an earlier call switched on; a call that does not say is refused (`ConfigError`), because the
model could only guess.
'''),
code(r'''
from minadapt.errors import ConfigError

texts = ["shares in the carmaker fell sharply after it cut its profit forecast for the year .",
         "the band 's new album is a joyous , beautifully produced return to form .",
         "the minister said the election would be held in may .",
         "a dull , lifeless match that the home side never looked like winning .",
         "the new phone 's software is clumsy and its battery life is poor ."]
batch = model.tokenizer.encode(texts)
answers = {name: softmax(model.logits(*batch, adapter=name)) for name in TASKS}
print(f"{'sst2':>18s} {'bbc':>20s}")
for i, text in enumerate(texts):
    cells = [f"{TASKS[n].names[int(p[i].argmax())]:>13s} {p[i].max():4.0%}" for n, p in answers.items()]
    print(" ".join(cells), "  ", text[:60])

try:
    model.logits(*batch)
    raise AssertionError("a call without adapter= must be refused when two tasks are held")
except ConfigError as e:
    print("\nwithout adapter=:", e)
'''),
md(r'''
Each task answers its own question about every text: the sentiment head has no notion of topics
and the topic head none of sentiment; a few dozen steps are enough for plainly worded texts. The
same backbone computation (the frozen weights) serves both.

## 5. The memory: the backbone once, each task a little

From the arrays themselves: the bytes of the backbone (`nbytes` of every frozen array; Q, K and V
are views into one fused matrix per layer, so each byte counts once), and the bytes of each task's
adapters and head.
'''),
code(r'''
backbone_bytes = sum(model.params[k].nbytes for k in backbone_names)
fused_bytes = sum(w.nbytes + b.nbytes for w, b in model.qkv)
qkv_bytes = sum(model.params[k].nbytes for k in backbone_names if ".attention.self." in k)
assert qkv_bytes == fused_bytes  # the q/k/v entries are views of the fused matrices, not copies
task_bytes = {}
for name in TASKS:
    names = model.trainable_names(name)
    adapters = sum(model.params[k].nbytes for k in names if ".adapters." in k)
    head = sum(model.params[k].nbytes for k in names if k.startswith("heads."))
    assert adapters + head == sum(model.params[k].nbytes for k in names)
    task_bytes[name] = adapters + head
    print(f"{name:5s} adapters {adapters / 1e6:5.2f} MB + head {head / 1e6:5.2f} MB = "
          f"{task_bytes[name] / 1e6:5.2f} MB, {task_bytes[name] / backbone_bytes:.1%} of the backbone")
print(f"backbone {backbone_bytes / 1e6:.1f} MB ({model.dtype})")
per_task = np.mean(list(task_bytes.values()))
print(f"{'tasks':>5s} {'one backbone + N tasks':>23s} {'N fine-tuned copies':>20s}")
for n in (1, 2, 10, 100):
    shared = backbone_bytes + n * per_task
    print(f"{n:5d} {shared / 1e6:20.1f} MB {n * backbone_bytes / 1e6:17.1f} MB")
assert per_task < 0.02 * backbone_bytes
'''),
md(r'''
The parameters are the part of the memory that grows with the number of tasks. A running
process holds more than its parameters: the interpreter and its libraries, and the activations of
the batch it is running, which do not grow with the number of tasks held (a call runs one task).
`benchmarks/many_adapters.py` measures the process's resident memory as it loads one task after
another. The repository commits such a measurement in `benchmarks/README.md` (with its command and
machine); the cell below prints it from there, and any JSON result under `benchmarks/results/`.
'''),
code(r'''
measured = sorted((ROOT / "benchmarks" / "results").glob("many_adapters*.json"))
if measured:
    for path in measured:
        result = json.loads(path.read_text())
        print(f"{path.relative_to(ROOT)}: command {result.get('command')!r}, machine {result.get('machine')!r}")
        for row in result.get("rows", []):
            print("  ", row)
readme = (ROOT / "benchmarks" / "README.md").read_text().split("\n")
heading = next(i for i, line in enumerate(readme) if line.startswith("**Memory of N tasks in one process**"))
section = next(i for i in range(heading, 0, -1) if readme[i].startswith("## "))
end = next(i for i in range(heading + 3, len(readme)) if readme[i - 1].startswith("|") and not readme[i].startswith("|"))
print("benchmarks/README.md:\n")
print("\n".join(readme[section:section + 3] + readme[heading:end]))
print("\nmeasure it on your machine with:  python benchmarks/many_adapters.py --tasks 5")
'''),
md(r'''
## 6. Two small files, one fresh model

`save_adapter(path, adapter=NAME)` writes one task's parameters and configs (lesson 6). A fresh
model, loading the backbone once and then both files, must answer exactly as the trained one does.
'''),
code(r'''
files = {name: model.save_adapter(f"{runs.name}/{name}.safetensors", adapter=name) for name in TASKS}
checkpoint_bytes = (WEIGHTS / "model.safetensors").stat().st_size
for name, path in files.items():
    print(f"{path.name:18s} {path.stat().st_size / 1e6:5.2f} MB  (the backbone's file: {checkpoint_bytes / 1e6:.1f} MB)")

fresh = minadapt.load_model(WEIGHTS, dtype="float32")
loaded = [fresh.load_adapter(path) for path in files.values()]
assert sorted(loaded) == sorted(TASKS), loaded
for name in TASKS:
    same = np.array_equal(fresh.logits(*batch, adapter=name), model.logits(*batch, adapter=name))
    assert same, name
    print(f"{name}: the fresh model's logits == the trained model's, bit for bit")
'''),
md(r'''
## 7. The server: one process, both tasks

`minadapt serve --adapter sst2.safetensors --adapter bbc.safetensors` holds one backbone and every
adapter it is given. Each `POST /predict` names the task it asks (`{"task": ..., "texts": [...]}`);
requests for different tasks are answered by the same process. Here the server runs inside this
notebook, on `127.0.0.1` and a free port (port 0 asks the system for one), the way
`tests/test_serve.py` runs it: `make_server` binds it, a thread runs `serve_forever`, and
`close()` stops it.
'''),
code(r'''
import threading
import urllib.request

from minadapt.serve import make_server

server = make_server(fresh, "127.0.0.1", 0)
threading.Thread(target=server.serve_forever, daemon=True).start()


def ask(path, body=None):
    data_ = json.dumps(body).encode() if body is not None else None
    with urllib.request.urlopen(urllib.request.Request(server.url + path, data=data_), timeout=60) as r:
        return json.loads(r.read())


try:
    print("GET /tasks ->", json.dumps(ask("/tasks")))
    both = {}
    for name in TASKS:
        body = {"task": name, "texts": texts[:2]}
        both[name] = ask("/predict", body)
        print(f"\nPOST /predict {json.dumps(body)}\n->", json.dumps(both[name], indent=1)[:700])
finally:
    server.close()

for name, answer in both.items():  # the server's probabilities are the model's softmax
    expected = softmax(fresh.logits(*fresh.tokenizer.encode(texts[:2]), adapter=name))
    got = np.array([[p["probabilities"][label] for label in TASKS[name].names] for p in answer["predictions"]])
    assert np.allclose(got, expected, atol=1e-5), name
print("\nserver answers == softmax(model.logits(..., adapter=NAME)); server closed")
'''),
md(r'''
## 8. What a trained adapter changes

Where does an adapter act, and how strongly? Each Houlsby adapter adds a **correction**
$A(u) = f(u\,W_\text{down}^\top + b_\text{down})\,W_\text{up}^\top + b_\text{up}$ to the sum its
sub-layer was about to normalise (`bert.py`):

$$h = \text{LayerNorm}_1\big(\underbrace{a + x}_{\text{the hidden state}} + A_\text{attn}(a)\big),
\qquad \text{out} = \text{LayerNorm}_2\big(o + h + A_\text{ffn}(o)\big).$$

We measure, per layer and for both of its adapters, $\lVert A(u)\rVert / \lVert \text{sum}\rVert$
for each real token (padding left out), and average over the tokens of a few dev sentences.

How to get $u$ and the sum without copying the layer's code: run the encoder one layer at a time
with the **reference ops** and the task's adapter (`bert.Run`), and read the layer's cache. Each
adapter's cache keeps its input $u$ (its down-projection's linear cache keeps `x`, because $W_\text{down}$
trains); then `minadapt.nn.adapter.forward(u, ..., skip=False)` gives $A(u)$ from the model's own
parameters. The residual inputs are the layer's input $x$ and $h$; we recompute $h$ from its
equation, and check our reading by recomputing the layer's output the same way.
'''),
code(r'''
from minadapt import bert, ops
from minadapt.nn import adapter as adapter_op
from minadapt.nn import attention, layernorm

SITES = ("attention.output", "output")  # Houlsby's two adapters: after attention, after the FFN


def correction_ratios(model, name, batch):
    """(L, 2): per layer and site, the mean over real tokens of ||A(u)|| / ||o + res||."""
    P, cfg, a = model.params, model.cfg, model.adapters[name]
    run = bert.Run(ops=ops.reference(), adapter=a)  # evaluation mode: no dropout
    act = adapter_op.NON_LINEARITIES[a.non_linearity]
    ids, mask, types = batch
    real = mask.astype(bool)  # (B, T)
    x, _ = bert.embeddings_forward(P, cfg, ids, types, run)
    bias = attention.mask_bias(mask, x.dtype)
    ratios = np.zeros((cfg.num_hidden_layers, len(SITES)))
    for i in range(cfg.num_hidden_layers):
        out, cache = bert.layer_forward(P, i, x, bias, model.qkv[i], cfg, run)
        res = x  # the attention sub-layer's residual input is the layer's input
        for j, (where, site) in enumerate(zip(SITES, (cache.rest.site1, cache.rest.site2))):
            u = site.adapter.down.x.reshape(x.shape)  # the adapter's input: the sub-layer's output
            prefix = bert.adapter_prefix(i, where, name)
            d, _ = adapter_op.forward(u, *(P[prefix + k] for k in bert.ADAPTER_KEYS), act=act, skip=False)
            s = u + res  # the hidden state the correction is added to
            ratios[i, j] = np.mean(np.linalg.norm(d, axis=-1)[real] / np.linalg.norm(s, axis=-1)[real])
            ln = bert.layer_norm_prefix(i, where, a)
            res, _ = layernorm.forward(s + d, P[ln + "weight"], P[ln + "bias"], cfg.layer_norm_eps)
        assert np.allclose(res, out, atol=1e-5), "our reading of the layer reproduces its output"
        x = out
    return ratios


# 16 dev examples of each task, read by its own adapter (an untrained one reads SST-2's)
sentences = {name: model.tokenizer.encode(data[name]["dev"].texts[:16]) for name in TASKS}
model.add_adapter("untrained", bottleneck=16)  # a fresh adapter: W_up = 0, the exact identity
ratios = {name: correction_ratios(model, name, sentences[name]) for name in TASKS}
ratios["untrained"] = correction_ratios(model, "untrained", sentences["sst2"])
model.remove("untrained")
assert np.all(ratios["untrained"] == 0.0)
for name in TASKS:
    assert np.all(ratios[name] > 0) and ratios[name].max() < 0.2  # a correction, not a replacement
    assert ratios[name][:, 0].mean() > ratios[name][:, 1].mean()  # after attention: the larger ones
    print(name, "||A(u)|| / ||hidden||, per layer (rows: after attention, after the FFN):")
    print(np.array2string(ratios[name].T, precision=3))
'''),
code(r'''
fig, axes = plt.subplots(1, 2, figsize=(12, 3.6), sharey=True)
layers = np.arange(model.cfg.num_hidden_layers)
for ax, name in zip(axes, ("sst2", "bbc")):
    for j, (where, label) in enumerate(zip(SITES, ("after attention", "after the feed-forward"))):
        ax.bar(layers + (j - 0.5) * 0.38, 100 * ratios[name][:, j], width=0.38, label=label)
    ax.set_xticks(layers)
    ax.set_xlabel("layer")
    ax.set_title(f"{name}: {results[name].steps} training steps, bottleneck "
                 f"{model.adapters[name].bottleneck}; 16 of its dev examples", fontsize=10)
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=8)
axes[0].set_ylabel("||adapter's correction|| / ||hidden state|| (%)")
plt.tight_layout()
plt.show()
'''),
md(r'''
What the bars show:

* An untrained adapter's correction is **exactly zero** in every layer (asserted above): with
  $W_\text{up} = 0$ and $b_\text{up} = 0$ it starts as the identity (lesson 5). Every bar is what
  training put there.
* After a few dozen steps the corrections range from one or two percent to about a tenth of the
  hidden state they are added to (all under 20%, asserted): the adapters steer the pretrained
  computation, they do not replace it.
* In both tasks the adapters after attention make larger corrections, on average over the layers,
  than those after the feed-forward block (asserted), and the sizes vary from layer to layer. The
  printed arrays hold this run's numbers; a longer run grows the corrections further.

## Summary

* One frozen backbone holds any number of tasks; here each costs under 2% of the backbone's bytes.
* Each call names its task (`adapter=NAME`); training one task leaves the backbone and every other
  task bit-identical, so nothing is forgotten.
* A task travels as one small file, and `minadapt serve` answers for all of them from one process.

**Next:** lesson 10 puts the bottleneck adapter beside the other ways to adapt the same backbone:
a probe, Pfeiffer's single adapter, LoRA and full fine-tuning.
'''),
md(r'''
## Check your understanding

1. Training the second task leaves the first task's logits bit-identical. Why is that guaranteed, not just likely?
2. Why does one process serve many tasks for little more memory than one?

<details><summary>Answers</summary>

1. The second task's trainable set holds only its own adapter and head; the backbone and the first task's arrays are never handed to its optimiser, so no byte of them is written.
2. The backbone is held once; each task adds only its adapter and head, a small file's worth of numbers.
</details>
'''),
]
