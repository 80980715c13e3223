"""Lesson 10: the bottleneck adapter against its alternatives (a probe, Pfeiffer, LoRA, full
fine-tuning) as one trainer sees them; why LoRA merges into W and a bottleneck adapter cannot."""
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
# Lesson 10 — Adapters, LoRA, full fine-tuning and a probe

The Houlsby adapter (lessons 5–9) is one way to adapt a frozen backbone to a task. The model holds
four others, and to the training loop they all look the same: a task is a set of trainable
parameter names, `loss_and_grads(..., adapter=NAME)` returns gradients for exactly those, and AdamW
updates them. What differs is *which* parameters train and where they sit:

| method | `model.` call | what trains |
| --- | --- | --- |
| probe | `add_probe(name, num_labels)` | the head alone, on the frozen [CLS] features |
| Houlsby | `add_adapter(name, bottleneck=m)` | two bottleneck adapters per layer, and the head |
| Pfeiffer | `add_adapter(name, architecture="pfeiffer")` | one bottleneck adapter per layer (after the feed-forward block), and the head |
| LoRA | `add_lora(name, r, alpha)` | a rank-$r$ update $\frac{\alpha}{r} B A$ of the query and value weights, and the head |
| full fine-tuning | `add_full_finetuning(name, num_labels)` | every weight of the backbone, and the head |

1. the five tasks on the model, and their trainable parameters, counted;
2. one training loop for all of them, a short live run on BBC News, and its table and plot;
3. **why LoRA merges into $W$ and a bottleneck adapter cannot**, shown with numbers;
4. the full comparison of `minadapt compare`, from its committed results.
'''),
THREADS,
SETUP,
WEIGHTS,
md(r'''
## 1. Five ways to adapt one backbone

Probe, Houlsby, Pfeiffer and LoRA tasks leave the backbone frozen, so one model holds all four
side by side (lesson 9). Full fine-tuning trains the backbone itself, the one every other task
would share, so the model refuses to put it beside another task: it gets a model of its own.
'''),
code(r'''
import json
import time

import minadapt
from minadapt.errors import ConfigError
from minadapt.tasks import Examples, get_task, load_task

TASK = get_task("bbc-news")
C = len(TASK.names)  # 5 topics
R, ALPHA, M = 8, 16, 16  # LoRA's rank and alpha; the Houlsby bottleneck

model = minadapt.load_model(WEIGHTS, dtype="float32")
model.add_probe("probe", num_labels=C)
model.add_adapter("houlsby", bottleneck=M)
model.add_classification_head("houlsby", num_labels=C)
model.add_adapter("pfeiffer", architecture="pfeiffer")  # its default bottleneck: H / 16
model.add_classification_head("pfeiffer", num_labels=C)
model.add_lora("lora", r=R, alpha=ALPHA)  # on query and value, PEFT's default targets
model.add_classification_head("lora", num_labels=C)

try:
    model.add_full_finetuning("full", num_labels=C)
    raise AssertionError("full fine-tuning beside other tasks must be refused")
except ConfigError as e:
    print("refused:", e)
full = minadapt.load_model(WEIGHTS, dtype="float32")
full.add_full_finetuning("full", num_labels=C)

METHODS = {"probe": model, "houlsby": model, "pfeiffer": model, "lora": model, "full": full}
for name, m in METHODS.items():
    assert m.method(name) == name
print({name: m.method(name) for name, m in METHODS.items()})
'''),
md(r'''
**How many parameters each trains.** Counted from the arrays (`trainable_names`), and checked
against the formulas, with $H = 384$, $L = 6$ layers, $C = 5$ labels:

* head: $H\cdot H + H + C\cdot H + C$ (a dense layer on [CLS], tanh, the output layer: `heads.py`);
* a bottleneck adapter of width $m$: $2mH + m + H$; Houlsby has $2L$ of them, Pfeiffer $L$;
* LoRA of rank $r$ on a $H \times H$ weight: $A$ is $r \times H$, $B$ is $H \times r$, so $2rH$;
  two targets (query, value) per layer;
* full fine-tuning: the whole backbone, embeddings included, plus the head.
'''),
code(r'''
H, L = model.cfg.hidden_size, model.cfg.num_hidden_layers
backbone = sum(v.size for k, v in full.params.items() if k.startswith(("embeddings.", "encoder.")))
head = H * H + H + C * H + C
pfeiffer_m = model.adapters["pfeiffer"].bottleneck
formula = {"probe": head,
           "houlsby": 2 * L * (2 * M * H + M + H) + head,
           "pfeiffer": L * (2 * pfeiffer_m * H + pfeiffer_m + H) + head,
           "lora": L * 2 * (2 * R * H) + head,
           "full": backbone + head}
size = {"probe": "", "houlsby": f"m={M}", "pfeiffer": f"m={pfeiffer_m}", "lora": f"r={R}, alpha={ALPHA}", "full": ""}
counts = {}
print(f"{'method':9s} {'size':14s} {'trainable':>11s} {'of the backbone':>16s} {'float32 bytes':>14s}")
for name, m in METHODS.items():
    counts[name] = sum(m.params[k].size for k in m.trainable_names(name))
    assert counts[name] == formula[name], (name, counts[name], formula[name])
    print(f"{name:9s} {size[name]:14s} {counts[name]:11,} {counts[name] / backbone:16.2%} {4 * counts[name]:14,}")
    if name != "full":
        assert counts[name] / backbone < 0.015  # under one and a half percent of the backbone
print(f"backbone: {backbone:,} parameters")
'''),
md(r'''
At these sizes every method but full fine-tuning trains under one and a half percent of the
backbone (asserted), and the
head (about 150,000 parameters) is a good share of that: the probe is *only* the head. Full
fine-tuning trains everything, and a task then costs a whole copy of the model.

## 2. One trainer for all five

The loop of lesson 6, written once. Nothing in it knows which method it trains: the task's name
selects the parameters (`trainable_names`), and `loss_and_grads` runs the backward only as far
down as the lowest trainable parameter (nowhere into the encoder for the probe, into the
embeddings for full fine-tuning). Every method sees the same batches in the same order, from the
same seed, for the same number of steps. The peak learning rate is each method's usual one: the
same $2\cdot10^{-3}$ for the probe, the adapters and LoRA, and a much smaller one for full
fine-tuning, whose every step moves the pretrained weights themselves.

The run is short, to keep this notebook quick: BBC News, the first 800 training articles read to
their first 32 tokens (title and first sentence), 24 steps of 16, scored on the first 200 dev
articles.
'''),
code(r'''
from minadapt import optim
from minadapt.tasks import bucketed_batches
from minadapt.train import encode_examples, evaluate_task

SUBSET, DEV, STEPS, BATCH, MAX_LENGTH, SEED = 800, 200, 24, 16, 32, 0
LR = {"probe": 2e-3, "houlsby": 2e-3, "pfeiffer": 2e-3, "lora": 2e-3, "full": 1e-4}
data = load_task(TASK)
train_set = Examples(data["train"].texts[:SUBSET], None, data["train"].labels[:SUBSET])
dev_set = Examples(data["dev"].texts[:DEV], None, data["dev"].labels[:DEV])
for m in (model, full):
    m.tokenizer.set_max_length(MAX_LENGTH)
train_ids, _, train_len = encode_examples(model.tokenizer, train_set)
dev_ids, dev_types, _ = encode_examples(model.tokenizer, dev_set)
batches = bucketed_batches(train_len, BATCH, np.random.default_rng(SEED))[:STEPS]


def train_briefly(model, name, lr):
    """STEPS steps of AdamW on task `name`'s trainable parameters; returns (losses, seconds)."""
    trainable = model.trainable_names(name)
    opt = optim.AdamW({k: model.params[k] for k in trainable}, lr=lr, weight_decay=0.01)
    model.rng = np.random.default_rng(SEED)  # the same dropout masks' generator for every method
    losses, t0 = [], time.perf_counter()
    for step, idx in enumerate(batches):
        b = model.tokenizer.pad([train_ids[i] for i in idx])
        loss, _, grads = model.loss_and_grads(b.input_ids, b.attention_mask, b.token_type_ids,
                                              train_set.labels[idx], adapter=name, train=True)
        assert set(grads) == trainable
        optim.clip_grad_norm(grads, max_norm=1.0)
        opt.step(model.params, grads, optim.lr_schedule(step, STEPS, int(0.1 * STEPS), lr))
        losses.append(float(loss))
    return losses, time.perf_counter() - t0


chance = np.bincount(dev_set.labels).max() / DEV  # always answering the largest class
live = {}
for name, m in METHODS.items():
    losses, seconds = train_briefly(m, name, LR[name])
    metrics, _ = evaluate_task(m, TASK, dev_ids, dev_types, dev_set.labels, adapter=name)
    live[name] = dict(losses=losses, seconds=seconds, **metrics)
    print(f"{name:9s} loss {losses[0]:.3f} -> {np.mean(losses[-4:]):.3f}   dev accuracy {metrics['accuracy']:.1%}, "
          f"F1 {metrics['f1_macro']:.3f}   ({seconds / STEPS:.2f} s a step, here, now)")
    assert metrics["accuracy"] > chance + 0.15, f"{name}: clearly above chance ({chance:.0%})"
'''),
code(r'''
fig, axes = plt.subplots(1, 2, figsize=(13, 4))
for name, r in live.items():
    axes[0].plot(r["losses"], label=name)
    axes[1].scatter(counts[name], 100 * r["accuracy"], s=50, label=f"{name} {size[name]}")
axes[0].set_xlabel("step")
axes[0].set_ylabel("training loss (one batch of 16)")
axes[0].set_title(f"BBC News: {STEPS} steps, the same batches for each")
axes[0].legend(fontsize=8)
axes[1].set_xscale("log")
axes[1].axhline(100 * chance, color="grey", ls=":", label="the largest class alone")
axes[1].set_xlabel("trainable parameters (log scale)")
axes[1].set_ylabel(f"dev accuracy (%), {DEV} articles")
axes[1].set_title("after this short run")
axes[1].set_ylim(0, 100)
axes[1].legend(fontsize=8, loc="lower left")
for ax in axes:
    ax.grid(alpha=0.3)
plt.tight_layout()
plt.show()

final = {name: float(np.mean(r["losses"][-4:])) for name, r in live.items()}  # the last 4 batches' mean
print("training loss over the last 4 steps:", {k: round(v, 3) for k, v in final.items()})
assert max(final["houlsby"], final["pfeiffer"], final["lora"]) < final["probe"]
'''),
md(r'''
A run of 24 steps ranks nothing: it shows that the same loop trains every method, and each
clearly beyond chance (asserted). BBC topics are easy enough that even the probe, which can only
re-read the pretrained [CLS] vector, gets most articles right. The two adapters and LoRA, which
change what the encoder computes, bring the training loss down further than the probe does
(asserted above). Full fine-tuning moves 22 million weights at a rate twenty times smaller: so
few steps suit it least. For the methods compared properly (whole training sets, several sizes
each, on SST-2 and BBC News) see section 4.

## 3. Why LoRA merges into W and a bottleneck adapter cannot

**LoRA is linear in its input.** On the query projection of a layer, with $s = \alpha / r$:

$$q = x W^\top + b + s\,x A^\top B^\top = x\,\big(W + s\,B A\big)^\top + b .$$

The update $sBA$ is an $H \times H$ matrix like $W$ itself, so it can be added to $W$ once, after
training, and the layer is a plain linear layer again: `nn.lora.merged_weight(W, A, B, s)`. First the
identity itself, on the trained LoRA of layer 0 and random inputs, in float64:
'''),
code(r'''
from minadapt import bert, ops
from minadapt.nn import lora

s = model.loras["lora"].scale
a_name, b_name = bert.lora_names(0, "query", "lora")
W = model.params["encoder.layer.0.attention.self.query.weight"].astype(np.float64)
A, B = model.params[a_name].astype(np.float64), model.params[b_name].astype(np.float64)
x = np.random.default_rng(0).standard_normal((5, H))
unmerged = x @ W.T + s * (x @ A.T) @ B.T
merged_w = lora.merged_weight(W, A, B, s)
err = np.abs(x @ merged_w.T - unmerged).max()
print(f"s = alpha / r = {s}; B A has rank {np.linalg.matrix_rank(B @ A)} (r = {R}), |B| = {np.abs(B).max():.2e}")
print(f"max |x W'^T - (x W^T + s x A^T B^T)| = {err:.1e}")
assert err < 1e-12
'''),
md(r'''
`model.merge_lora("lora")` does that for every target of every layer and returns a **new model**:
its backbone has $W' = W + sBA$ in place of $W$, it holds the task's head as a probe, and it holds
no LoRA at all, so it runs the bare backbone's code, at the bare backbone's cost. (A new model,
because merging changes the backbone, and the other tasks on `model` share it: `model` is left as
it was.) Its logits must be the LoRA model's, up to float32 rounding:
'''),
code(r'''
merged = model.merge_lora("lora")
assert merged.loras == {} and merged.names() == ["lora"] and merged.method("lora") == "probe"
batch = model.tokenizer.encode(data["dev"].texts[DEV:DEV + 32])
z_lora = model.logits(*batch, adapter="lora")
z_merged = merged.logits(*batch, adapter="lora")
diff = np.abs(z_merged - z_lora).max()
print(f"merged model: methods {[merged.method(n) for n in merged.names()]}, LoRAs held {merged.loras}")
print(f"max |logits(merged) - logits(LoRA)| over {len(z_lora)} dev articles: {diff:.1e} (logits up to {np.abs(z_lora).max():.1f})")
assert np.allclose(z_merged, z_lora, atol=1e-5)
assert np.array_equal(model.params["encoder.layer.0.attention.self.query.weight"], W.astype(np.float32))
print("and the shared model's query weight is untouched")
'''),
md(r'''
**A bottleneck adapter is not linear.** Its correction is
$A(u) = f(u\,W_\text{down}^\top + b_\text{down})\,W_\text{up}^\top + b_\text{up}$, with the
non-linearity $f$ (swish) *between* the two projections. Were $f$ the identity, $A$ would be the
affine map $u \mapsto u\,(W_\text{up} W_\text{down})^\top + \text{const}$ and could be folded into the
dense layer before it, as LoRA is. With $f$ there, no single matrix does it.

To see it in numbers, collect the adapter's real inputs $u$ and outputs $A(u)$ at every site, over
every real token of 64 dev articles, and fit the *best* affine map $u \mapsto u M + c$ to them by
least squares (`np.linalg.lstsq`, in float64, with many more tokens than the $H + 1$ unknowns per
output). What it cannot explain is the residual, relative to how much the output varies:

$$\rho = \frac{\lVert A(U) - (U M + c)\rVert}{\lVert A(U) - \overline{A(U)}\rVert} .$$

The same fit for LoRA's query term $s\,x A^\top B^\top$ against the layer's input $x$ must leave
nothing but float32 rounding. Inputs come from a reference-ops forward pass and its caches, as in
lesson 9; the outputs are computed with the library's own `nn.adapter.forward` and
`nn.lora.delta_forward`.
'''),
code(r'''
from minadapt.nn import adapter as adapter_op


def affine_residual(u, y):
    """rho: the part of y (N, O) that no affine map of u (N, D) explains, fitted in float64."""
    u1 = np.c_[u.astype(np.float64), np.ones(len(u))]
    coef, *_ = np.linalg.lstsq(u1, y.astype(np.float64), rcond=None)
    return np.linalg.norm(y - u1 @ coef) / np.linalg.norm(y - y.mean(axis=0))


texts = data["dev"].texts[DEV:DEV + 64]
ids, mask, types = model.tokenizer.encode(texts)
real = mask.reshape(-1).astype(bool)  # (B T,): real tokens, not padding
print(f"{real.sum()} real tokens, {H + 1} unknowns per output")

z_abs = []  # |z| = |u W_down^T + b_down|, the non-linearity's inputs, at every site
rho = {"houlsby, after attention": [], "houlsby, after the FFN": [], "lora, query": [], "lora, value": []}
P, a = model.params, model.adapters["houlsby"]
run = bert.Run(ops=ops.reference(), adapter=a)  # evaluation mode; caches keep each adapter's input
_, cache = bert.encoder_forward(P, model.qkv, model.cfg, ids, mask, types, run)
for i, layer in enumerate(cache.layers):
    for where, site, key in (("attention.output", layer.rest.site1, "houlsby, after attention"),
                             ("output", layer.rest.site2, "houlsby, after the FFN")):
        u = site.adapter.down.x[real]  # (N, H): the adapter's input
        prefix = bert.adapter_prefix(i, where, "houlsby")
        d, _ = adapter_op.forward(u, *(P[prefix + k] for k in bert.ADAPTER_KEYS),
                                  act=adapter_op.NON_LINEARITIES[a.non_linearity], skip=False)
        rho[key].append(affine_residual(u, d))
        z_abs.append(np.abs(u @ P[prefix + "adapter_down.0.weight"].T + P[prefix + "adapter_down.0.bias"]).ravel())

run = bert.Run(ops=ops.reference(), lora=model.loras["lora"])
_, cache = bert.encoder_forward(P, model.qkv, model.cfg, ids, mask, types, run)
for i, layer in enumerate(cache.layers):
    for _, target, c in layer.lora:  # one per LoRA target: (slice, "query" or "value", its cache)
        x_in = c.xd[real]  # (N, H): the layer's input (dropout is off)
        delta, _ = lora.delta_forward(x_in, *(P[n] for n in bert.lora_names(i, target, "lora")), s)
        rho[f"lora, {target}"].append(affine_residual(x_in, delta))

for key, values in rho.items():
    print(f"{key:25s} rho per layer: " + "  ".join(f"{v:.1e}" for v in values))
assert max(rho["lora, query"] + rho["lora, value"]) < 1e-5
assert min(rho["houlsby, after attention"] + rho["houlsby, after the FFN"]) > 1e-3
z_abs = np.concatenate(z_abs)
print(f"|z| at the adapters' non-linearity: median {np.median(z_abs):.2f}, 99th percentile "
      f"{np.percentile(z_abs, 99):.2f}, largest {z_abs.max():.2f}")
assert np.median(z_abs) < 0.5  # mostly where swish is close to its tangent z / 2
ratio = min(rho["houlsby, after attention"] + rho["houlsby, after the FFN"]) / max(rho["lora, query"] + rho["lora, value"])
print(f"the adapter's smallest rho is {ratio:.0e} times LoRA's largest")
assert ratio > 1e3
'''),
code(r'''
fig, ax = plt.subplots(figsize=(10, 3.6))
layers = np.arange(L)
for j, (key, values) in enumerate(rho.items()):
    ax.bar(layers + (j - 1.5) * 0.2, values, width=0.2, label=key)
ax.set_yscale("log")
ax.set_xticks(layers)
ax.set_xlabel("layer")
ax.set_ylabel("rho: unexplained by any affine map")
ax.set_title("the best linear fit: exact for LoRA (float32 rounding), not for a bottleneck adapter")
ax.set_ylim(1e-8, 1)
ax.legend(fontsize=8, ncol=4, loc="center")
ax.grid(axis="y", alpha=0.3)
plt.tight_layout()
plt.show()
'''),
md(r'''
LoRA's residual is float32 rounding, some $10^{-7}$ of its output: a matrix *is* the update, and
merging it loses nothing. The adapter's is four or five orders of magnitude larger. Not large
yet, and that is instructive too: swish is $f(z) = z\,\sigma(z) = \tfrac z2 + \tfrac{z^2}{4} + O(z^4)$,
nearly linear while the pre-activations $z$ stay small, as they mostly do after a short run from
the near-identity init (half of them have $|z|$ below 0.5, asserted; the printed percentiles show
the tail that reaches the curved part). Training moves $W_\text{down}$ and the inputs reach the curved part of $f$,
which is where the adapter's extra expressiveness comes from; any matrix folded into $W$ would
then be an approximation that changes the model's answers, not a merge.

So the trade-off: a merged LoRA costs nothing at inference, but one merged model serves one
task. Unmerged adapters (and unmerged LoRAs) cost a little compute per call and let one backbone
serve every task at once (lesson 9).

## 4. The full comparison: `minadapt compare`

The live run above is one seed at one learning rate for a few dozen steps: it shows the machinery,
not which method is better. `minadapt compare TASK` asks that question the way an experimenter
would. Every configuration trains on the same data, budget and batch size, each in its own
process. A few learning rates are tried on the first seed, and the one with the best score on a
slice *held out of the training data* runs the other seeds. Each run keeps its best step on that
slice: the dev score is reported, never chosen on. A TF-IDF + logistic regression row
(`--baseline`) shows where a classical model stands on the same split.

It writes a table (JSON, Markdown) and a plot to `benchmarks/results/compare_TASK*.*`, with the
command that made them and the machine they ran on. Those numbers depend on the machine and the run,
so they come from the committed files, never from this text. There are two per task: adapters against
full fine-tuning over three seeds, and the whole family at one seed.
'''),
code(r'''
import math

from minadapt.compare import describe_settings


def show_comparison(path):
    # One compare file: its command and machine, then a row per configuration (minadapt/compare.py):
    # the dev metric's mean and standard deviation over seeds, and the lr validation chose.
    result = json.loads(path.read_text())
    machine, settings = result["machine"], result["settings"]
    print(f"{path.relative_to(ROOT)}  ({result['date']})")
    print(f"  command: {result['command']}")
    print(f"  machine: {machine['model_name']}, CPU family {machine['cpu_family']} model {machine['model']}, "
          f"{machine['cores']} cores")
    print(f"  {describe_settings(result)}")
    metric = result["runs"][0]["dev_metric"]
    print(f"  {'run':>16s} {'trainable':>11s} {'%':>6s} {'lr':>7s}   {'dev ' + metric + ', mean ± std (seeds)':<30s}"
          f"{'s / run':>8s}")
    for run in result["runs"]:
        cell = f"{100 * run['dev_score']:.2f} ± {100 * run['dev_std']:.2f} ({len(run['seeds'])})"
        print(f"  {run['config']:>16s} {run['trainable_params']:>11,} {run['share_pct']:>6.2f} {run['lr']:>7.0e}   "
              f"{cell:<30s}{run['train_s']:>8.0f}")
    for run in result["runs"]:  # the learning rates tried on the first seed, and their validation
        if len(run["lr_validation"]) > 1:
            tried = ", ".join(f"{float(lr):.0e} {100 * v:.2f}%" for lr, v in run["lr_validation"].items())
            print(f"  {run['config']:>16s} lr chosen on the held-out slice of: {tried}")
    base = result.get("baseline")
    if base:
        cell = f"{100 * base['dev_score']:.2f} (deterministic)"
        print(f"  {base['config']:>16s} {base['trainable_params']:>11,} {'-':>6s} {'C=' + format(base['C'], 'g'):>7s}   "
              f"{cell:<30s}{base['train_s']:>8.0f}")
    fig, ax = plt.subplots(figsize=(7, 4))
    for run in result["runs"]:
        ax.errorbar(run["trainable_params"], 100 * run["dev_score"], yerr=100 * run["dev_std"],
                    fmt="o", capsize=3, label=run["config"])
    if base:
        ax.axhline(100 * base["dev_score"], color="grey", linestyle="-.", label="TF-IDF + logistic regression")
    ax.set_xscale("log")
    ax.set_xlabel("trainable parameters (log scale)")
    ax.set_ylabel(f"dev {metric} (%), mean ± std")
    ax.set_title(f"{result['task']}: {settings['steps']} steps of {settings['batch_size']}, seeds "
                 f"{settings['seeds']}", fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    plt.tight_layout()
    plt.show()
    return result


def adapter_gap(result):
    # The best adapter (every method but full fine-tuning and the probe) against full fine-tuning:
    # the gap in points, and in standard errors of the difference when both have several seeds.
    full = [r for r in result["runs"] if r["method"] == "full"]
    adapters = [r for r in result["runs"] if r["method"] not in ("full", "probe")]
    if not full or not adapters:
        return
    full, best = full[0], max(adapters, key=lambda r: r["dev_score"])
    gap = 100 * (full["dev_score"] - best["dev_score"])
    se = 100 * math.sqrt(full["dev_std"] ** 2 / len(full["seeds"]) + best["dev_std"] ** 2 / len(best["seeds"]))
    tail = f", {gap / se:+.1f} standard errors of the difference" if min(len(full["seeds"]), len(best["seeds"])) > 1 else ""
    print(f"  full fine-tuning minus the best adapter ({best['config']}): {gap:+.2f} points{tail}\n")


for name in ("sst2", "sst2_family", "bbc-news", "bbc-news_family"):
    path = ROOT / "benchmarks" / "results" / f"compare_{name}.json"
    if path.is_file():
        adapter_gap(show_comparison(path))
    else:
        print(f"{path.relative_to(ROOT)} is not committed yet: make it with  minadapt compare {name.split('_')[0]}")
'''),
md(r'''
Read each table with its spread. A difference under about two standard errors of the difference
(printed under each table) is one that another three seeds could reverse. The family tables have one
seed each: they rank the methods roughly, not finely. Training seconds are per run on the machine
named: compare them within one file, never across machines.
'''),
md(r'''
## Summary

* Probe, Houlsby, Pfeiffer, LoRA and full fine-tuning are, to the trainer, five sets of trainable
  names; the same loop trains each (`loss_and_grads(..., adapter=NAME)`, clip, AdamW).
* At the sizes here the first four train under one and a half percent of the backbone's
  parameters; full fine-tuning trains all of them, and needs a model of its own.
* LoRA's update is linear, $W + \frac{\alpha}{r}BA$, so `merge_lora` folds it into the weights and
  the merged model answers as the LoRA one does at the bare backbone's cost. A bottleneck adapter
  has a non-linearity between its projections: no matrix equals it, so it stays a computation of
  its own. Kept apart from the backbone, adapters (and unmerged LoRAs) let one backbone serve many
  tasks at once (lesson 9).
'''),
md(r'''
## Check your understanding

1. Why can a trained LoRA be merged into $W$, and a bottleneck adapter not?
2. Order the methods by how many parameters they train: probe, bottleneck adapter, LoRA, full fine-tuning.

<details><summary>Answers</summary>

1. LoRA's change is linear, $x(W + sBA)^\top$; the adapter has a non-linearity between its projections, which no matrix reproduces.
2. The probe trains only the head, full fine-tuning every weight; the adapter and LoRA sit in between (the lesson prints their counts for the settings it uses).
</details>
'''),
]
