"""Lesson 8: the same code on a GPU with CuPy; runs top to bottom with or without one."""
from .cells import SETUP, WEIGHTS, code, md

CELLS = [
md(r'''
# Lesson 8 — The same code on a GPU, with CuPy

Nothing in `minadapt/nn/`, `minadapt/fast/` or `minadapt/bert.py` knows which device it runs on. Every op asks its
input for its array module (`xp = get_xp(x)`, lesson 1), and [CuPy](https://cupy.dev) provides a
`cupy` module with NumPy's names whose arrays live in GPU memory. So putting the model on a GPU means
putting its *arrays* there; the maths is unchanged.

This notebook runs everywhere. Its GPU cells run only where `backend.gpu_available()` is true
(CuPy installed *and* a CUDA device visible); elsewhere they say what would happen, and the figures
are drawn from CPU measurements. To run it on a GPU, install CuPy through the `gpu` extra
(`backend.xp_for("gpu")`'s error message, printed below where CuPy is missing, names the command).
'''),
SETUP,
code(r'''
import importlib.util
import time

import minadapt
from minadapt import backend, bert
from minadapt.nn import attention, gelu, layernorm, linear

GPU = backend.gpu_available()
print("CuPy installed:      ", importlib.util.find_spec("cupy") is not None)
print("GPU available:       ", GPU)
if GPU:
    import cupy

    props = cupy.cuda.runtime.getDeviceProperties(cupy.cuda.Device().id)
    print("device:              ", props["name"].decode(), f"({props['totalGlobalMem'] / 2**30:.0f} GiB)")
else:
    print("No GPU was found: the GPU cells below explain what they would do, and the figures use the CPU.")
'''),
md(r'''
## 1. Ops take their array module from their input

Call the same library functions with a NumPy array and, where there is a GPU, with a CuPy array.
The output lives where the input lived. The maths is written once, with NumPy names. What differs
between the two (the error function, a scatter-add, moving and synchronising arrays) lives in
`backend.py`; section 4 shows the one place where the GPU gets its own *code path* (the fast ops'
fused kernels), and why. The ops here are the reference ones of `minadapt/nn/`.
'''),
code(r'''
rng = np.random.default_rng(0)
x_np = rng.standard_normal((4, 8))
w_np = rng.standard_normal((5, 8))
for name, (y, _) in (("linear", linear.forward(x_np, w_np)), ("gelu", gelu.forward(x_np)),
                     ("layernorm", layernorm.forward(x_np, np.ones(8), np.zeros(8)))):
    print(f"{name:9s} on a NumPy input -> {type(y).__module__}.{type(y).__name__}")

if GPU:
    x_gpu, w_gpu = backend.to_device(x_np, "gpu"), backend.to_device(w_np, "gpu")
    for name, (y, _), ref in (("linear", linear.forward(x_gpu, w_gpu), linear.forward(x_np, w_np)[0]),
                              ("gelu", gelu.forward(x_gpu), gelu.forward(x_np)[0])):
        print(f"{name:9s} on a CuPy input  -> {type(y).__module__}.{type(y).__name__}, "
              f"max |GPU - CPU| = {float(np.abs(backend.to_numpy(y) - ref).max()):.1e}")
else:
    try:
        backend.xp_for("gpu")
    except RuntimeError as e:  # minadapt.errors.DeviceError: says what is missing and how to get it
        print(f"backend.xp_for('gpu') -> {type(e).__name__}: {e}")
'''),
md(r'''
## 2. The model on the GPU: one transfer at load, one per batch

`load_model(path, device="gpu")` reads the checkpoint on the host as usual; the `Model` constructor
then copies every array to the GPU once (`backend.to_device`) and fuses Q|K|V there. From then on,
each call copies only its *inputs* (token ids and mask: a few kilobytes) to the device, and the
caller copies back only what it asks for (`backend.to_numpy`): the logits, the loss, or here the
hidden states. Forward, backward and optimizer updates all stay on the device. The picture:
'''),
code(r'''
from matplotlib.patches import FancyBboxPatch

fig, ax = plt.subplots(figsize=(12, 4.2))
for x0, title, body, colour in ((0.0, "host: CPU + RAM (NumPy)",
                                 "model.safetensors on disk\n-> NumPy arrays (load_checkpoint)\n\ntokenizer -> input_ids,\nattention_mask (int64)\n\nprinting, plotting, saving",
                                 "#e8f1fa"),
                                (7.0, "device: GPU memory (CuPy)",
                                 "all 101 weights + adapters + head\n(fused Q|K|V per layer)\n\nembeddings, 6 layers, head, loss,\nbackward, AdamW updates\n\nno transfers inside a step",
                                 "#e9f7e9")):
    ax.add_patch(FancyBboxPatch((x0, 0), 4.0, 3.6, boxstyle="round,pad=0.05", fc=colour, ec="black"))
    ax.text(x0 + 2.0, 3.3, title, ha="center", weight="bold")
    ax.text(x0 + 2.0, 1.5, body, ha="center", va="center", fontsize=9)
transfers = ((2.6, "load_model(device='gpu'):\nevery parameter, ONCE\n(about 90 MB in float32)", 4.0, "C3"),
             (1.5, "each batch: input_ids,\nattention_mask (B × T int64:\n32 × 64 × 8 B = 16 KB each)", 1.6, "C0"),
             (0.4, "back, only when asked:\nto_numpy(loss, logits)", 1.2, "C2"))
for y, text, width, colour in transfers:
    start, end = (4.15, 6.85) if y > 0.9 else (6.85, 4.15)
    ax.annotate("", xy=(end, y), xytext=(start, y),
                arrowprops=dict(arrowstyle="-|>", lw=width, color=colour, mutation_scale=18))
    ax.text(5.5, y + 0.12, text, ha="center", va="bottom", fontsize=8, color=colour)
ax.set_xlim(-0.2, 11.2)  # the two boxes: host 0..4, device 7..11
ax.set_ylim(-0.2, 3.8)
ax.axis("off")
ax.set_title("Where data crosses the PCIe bus: once at load, then a few kilobytes per batch")
plt.show()
'''),
WEIGHTS,
code(r'''
cpu64 = minadapt.load_model(WEIGHTS, dtype="float64")  # float64: the comparison below is exact-ish
sentences = ["Hello world.", "A gripping, beautifully shot film.", "Okay."]
batch = cpu64.tokenizer.encode(sentences)
real = batch.attention_mask.astype(bool)
h_cpu = cpu64.encode(*batch)
print("CPU model:", cpu64.device, "| a weight is a", type(cpu64.params["embeddings.word_embeddings.weight"]))

if GPU:
    gpu64 = minadapt.load_model(WEIGHTS, dtype="float64", device="gpu")
    w = gpu64.params["embeddings.word_embeddings.weight"]
    print("GPU model:", gpu64.device, "| a weight is a", type(w), "on device", w.device)
    h_gpu = gpu64.encode(*batch)  # NumPy inputs are copied to the GPU inside encode
    print("encode returns a", type(h_gpu), "-> backend.to_numpy copies it back")
    diff = np.abs(backend.to_numpy(h_gpu) - h_cpu)[real]
    print(f"float64, GPU vs CPU, real tokens: max abs difference {diff.max():.1e}")
    del gpu64, w, h_gpu
else:
    print("On a GPU, load_model(WEIGHTS, dtype='float64', device='gpu') would hold every weight as a")
    print("cupy.ndarray, encode(...) would return a cupy.ndarray, and the float64 hidden states would")
    print("match this CPU run to about 1e-14: the same arithmetic, summed in a different order by cuBLAS.")
'''),
md(r'''
The device can also come from the environment: `resolve_device()` reads `$MINADAPT_DEVICE` when no
argument is given, and the command line takes `--device cpu|gpu`.

## 3. Timing a GPU: `backend.synchronize`

A CuPy call *queues* work on the GPU and returns at once. A timer around it measures how long it took
to launch the kernels, not to run them. `backend.synchronize(x)` waits until the queue is empty (for a
NumPy array it does nothing), so a correct timing is: synchronize, start the clock, run, synchronize,
stop. The first call of each kernel also includes its compilation, so warm up first.

Below: one encoder layer in float32 for a batch of 32 sentences of 64 tokens (the shape of the
committed benchmark), timed op by op with the ops a model runs (`model.ops`: the fast ones of
`minadapt/fast/`, the default), on the CPU and, where there is one, on the GPU.
'''),
code(r'''
def best_ms(fn, repeat=5):
    """Best wall time of fn() in milliseconds; synchronises on fn's output around each run."""
    backend.synchronize(fn())  # warm-up (and CuPy kernel compilation)
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = fn()
        backend.synchronize(out if not isinstance(out, tuple) else out[0])
        times.append(time.perf_counter() - t0)
    return 1000 * min(times)


def layer_ops(model, x, bias):
    """The ops of one encoder layer (layer 0, with adapters), as separately timeable calls."""
    P, cfg, ops = model.params, model.cfg, model.ops
    linear, attention, gelu, layernorm = ops.linear, ops.attention, ops.gelu, ops.layernorm
    swish = ops.non_linearities["swish"]
    p, a = "encoder.layer.0.", "adapters.bench."
    w_qkv, b_qkv = model.qkv[0]
    H = cfg.hidden_size
    qkv = linear.forward(x, w_qkv, b_qkv, frozen=True)[0]
    q, k, v = qkv[..., :H], qkv[..., H:2 * H], qkv[..., 2 * H:]
    c = attention.forward(q, k, v, bias, cfg.num_attention_heads)[0]
    f = linear.forward(x, P[p + "intermediate.dense.weight"], P[p + "intermediate.dense.bias"], frozen=True)[0]
    g = gelu.forward(f)[0]

    def adapters():
        for where in ("attention.output.", "output."):
            w = [P[p + where + a + k] for k in bert.ADAPTER_KEYS]
            out = ops.adapter.forward(x, *w, act=swish)[0]
        return out

    def norms():
        for ln in ("attention.output.LayerNorm.", "output.LayerNorm."):
            out = layernorm.forward(x + c, P[p + ln + "weight"], P[p + ln + "bias"])[0]
        return out

    return {
        "Q|K|V matmul": lambda: linear.forward(x, w_qkv, b_qkv, frozen=True)[0],
        "attention core": lambda: attention.forward(q, k, v, bias, cfg.num_attention_heads)[0],
        "attention out matmul": lambda: linear.forward(c, P[p + "attention.output.dense.weight"],
                                                       P[p + "attention.output.dense.bias"], frozen=True)[0],
        "FFN in matmul": lambda: linear.forward(x, P[p + "intermediate.dense.weight"],
                                                P[p + "intermediate.dense.bias"], frozen=True)[0],
        "GELU": lambda: gelu.forward(f)[0],
        "FFN out matmul": lambda: linear.forward(g, P[p + "output.dense.weight"], P[p + "output.dense.bias"],
                                                 frozen=True)[0],
        "2 adapters": adapters,
        "2 × (residual + LayerNorm)": norms,
        "whole layer (layer_forward)": lambda: bert.layer_forward(P, 0, x, bias, model.qkv[0], cfg,
                                                                  bert.Run(ops=ops, adapter=model.adapters["bench"]))[0],
    }


def measure(device):
    model = minadapt.load_model(WEIGHTS, dtype="float32", device=device).add_adapter("bench", bottleneck=64)
    ids = np.random.default_rng(0).integers(1000, 30000, size=(32, 64))
    mask = np.ones_like(ids)
    ids_d, mask_d = (backend.to_device(t, model.device) for t in (ids, mask))
    x, _ = bert.embeddings_forward(model.params, model.cfg, ids_d, model.xp.zeros_like(ids_d), bert.Run(ops=model.ops))
    bias = attention.mask_bias(mask_d, model.dtype)
    ops = layer_ops(model, x, bias)
    best = {name: np.inf for name in ops}
    for _ in range(3):  # rounds over all ops, keeping each op's best: less at the mercy of a busy moment
        for name, fn in ops.items():
            best[name] = min(best[name], best_ms(fn, repeat=3))
    return best


timings = {"CPU (NumPy)": measure("cpu")}
if GPU:
    timings["GPU (CuPy)"] = measure("gpu")
for device, t in timings.items():
    parts = sum(v for k, v in t.items() if not k.startswith("whole"))
    print(f"{device}: whole layer {t['whole layer (layer_forward)']:.2f} ms; sum of the parts {parts:.2f} ms")
'''),
code(r'''
names = [k for k in timings["CPU (NumPy)"] if not k.startswith("whole")]
fig, axes = plt.subplots(1, len(timings), figsize=(7 * len(timings), 3.8), squeeze=False)
for ax, (device, t) in zip(axes[0], timings.items()):
    values = np.array([t[k] for k in names])
    share = 100 * values / values.sum()
    colours = ["C0" if "matmul" in k else "C1" for k in names]
    ax.barh(names[::-1], values[::-1], color=colours[::-1])
    for i, (v, s) in enumerate(zip(values[::-1], share[::-1])):
        ax.text(v, i, f" {v:.2f} ms ({s:.0f}%)", va="center", fontsize=8)
    ax.set_xlim(0, values.max() * 1.35)
    ax.set_xlabel("milliseconds (best of 9 runs)")
    ax.set_title(f"{device}: one layer's forward, B=32, T=64, float32\nmatmuls blue, everything else orange",
                 fontsize=10)
plt.tight_layout()
plt.show()

cpu = timings["CPU (NumPy)"]
flops = {"FFN out matmul": 2 * 32 * 64 * 1536 * 384, "2 adapters": 2 * 2 * (2 * 32 * 64 * 384 * 64)}
for k, n in flops.items():
    print(f"{k:15s} {n / 1e9:.2f} GFLOP in {cpu[k]:.2f} ms = {n / 1e6 / cpu[k]:.0f} GFLOP/s")
print("(on an idle machine the adapters' small products run at a similar rate; if they are far slower,\n"
      " something else is using the cores: small matrix products suffer most when BLAS threads must wait)")
'''),
md(r'''
What to look at: on the CPU the four matrix products take most of the time, with the FFN's two
(each $2 \cdot N \cdot H \cdot F$ operations) the largest; GELU and the attention core (many small batched
products plus the softmax) come next; adapters are a sliver, because $m = 64 \ll H$. (The machine's
other work makes single timings noisy; compare shares, not milliseconds.) On a GPU every bar is much
shorter, and the elementwise ops and small products, limited by kernel launches and memory traffic
rather than arithmetic, take a larger share.

Finally, the asynchronous behaviour itself: a GPU forward pass timed without and with `synchronize`.
'''),
code(r'''
if GPU:
    g32 = minadapt.load_model(WEIGHTS, dtype="float32", device="gpu")
    ids = np.random.default_rng(1).integers(1000, 30000, size=(32, 64))
    mask = np.ones_like(ids)
    backend.synchronize(g32.encode(ids, mask))  # warm-up: kernels compile on first use
    t0 = time.perf_counter()
    h = g32.encode(ids, mask)
    t_queued = time.perf_counter() - t0
    backend.synchronize(h)
    t_done = time.perf_counter() - t0
    print(f"encode returned after {1000 * t_queued:.2f} ms (work queued); "
          f"finished after {1000 * t_done:.2f} ms (synchronized)")
else:
    t0 = time.perf_counter()
    h = cpu64.encode(*batch)
    backend.synchronize(h)  # a NumPy array: returns at once, NumPy is already done
    print(f"CPU: encode is synchronous; synchronize(numpy array) is a no-op ({1000 * (time.perf_counter() - t0):.0f} ms "
          "for 3 short sentences in float64)")
    print("On a GPU, the time until encode returns can be far shorter than the time until its result")
    print("exists: only a timer that ends with backend.synchronize measures the work.")
'''),
md(r'''
## 4. Launches, not FLOPs: what makes a GPU step fast

A training step at batch 32 and 64 tokens is about 82 GFLOP of matrix products. An H100 does that in
a couple of milliseconds even in plain float32. But every NumPy-style line is a separate GPU *kernel*,
and launching one costs 10-50 µs of Python, CuPy and driver time however little it computes. Written
as in the NumPy ops, one step is well over a thousand launches: the GPU mostly waits for the CPU.

Two changes removed most of them, both "doing less" rather than computing faster:

* **One vector of trainable parameters.** AdamW's update is elementwise, so it does not care how
  values are grouped into arrays. `Model` lays each task's adapter and head arrays end to end in one
  vector (`minadapt/packed.py`; `model.params[name]` are views into it) and hands out gradients the
  same way, so AdamW and gradient clipping are ~15 whole-vector operations a step instead of ~15 per
  array.
* **Fused kernels for the chains.** LayerNorm as written in `nn/layernorm.py` is eight launches (three
  of them reductions); softmax is seven; GELU and swish four or five each way. On a GPU, the fast ops
  of `minadapt/fast/` hand each of these chains to one kernel from `minadapt/fast/cuda_kernels.py`
  that does the same operations in the same order. The reference ops stay the specification:
  `tests/test_fast_ops.py` holds each fast op to its reference, and `tests/test_gpu.py` every op on
  CuPy to NumPy's result at 1e-10 in float64, at the model's own sizes.

The effect, from the GPU results the repository commits (`benchmarks/results/gpu_h100_unfused.json`,
a run before both changes, and `gpu_h100.json`, after; each also times PyTorch + AdapterHub on the
same GPU in the same run; `benchmarks/README.md` says how they were made):
'''),
code(r'''
import json

runs = {name: json.loads((ROOT / "benchmarks" / "results" / f).read_text())
        for name, f in (("minadapt, first version", "gpu_h100_unfused.json"),
                        ("minadapt, packed + fused", "gpu_h100.json"))}
Ls = [row["L"] for row in runs["minadapt, packed + fused"]["rows"]]
fig, ax = plt.subplots(figsize=(9, 4.6))
width = 0.27
for j, (name, run) in enumerate(runs.items()):
    rows = {row["L"]: row["minadapt"] for row in run["rows"]}
    bottom = np.zeros(len(Ls))
    for part, colour in (("fwd_ms", "C0"), ("bwd_ms", "C1"), ("opt_ms", "C2")):
        v = np.array([rows[L][part]["median"] for L in Ls])
        ax.bar(np.arange(len(Ls)) + (j - 1) * width, v, width, bottom=bottom, color=colour,
               alpha=0.45 if j == 0 else 1.0, edgecolor="black", linewidth=0.5,
               label=f"{part[:3]} ({name})")
        bottom += v
torch = np.array([row["torch"]["train_ms"]["median"] for row in runs["minadapt, packed + fused"]["rows"]])
ax.bar(np.arange(len(Ls)) + width, torch, width, color="0.6", edgecolor="black", linewidth=0.5,
       label="PyTorch + AdapterHub (whole step)")
ax.set_xticks(np.arange(len(Ls)), [f"L={L}" for L in Ls])
ax.set_ylabel("ms per training step (median)")
ax.set_title("H100, batch 32, float32: a step's time barely depends on L, so launches, not FLOPs, set it",
             fontsize=10)
ax.legend(fontsize=7, ncol=3, loc="upper center", bbox_to_anchor=(0.5, -0.1))
plt.tight_layout()
plt.show()
for L, row in zip(Ls, runs["minadapt, packed + fused"]["rows"]):
    old = next(r for r in runs["minadapt, first version"]["rows"] if r["L"] == L)["minadapt"]
    print(f"L={L:3d}: {old['train_ms']['median']:5.1f} ms -> {row['minadapt']['train_ms']['median']:5.1f} ms "
          f"(PyTorch {row['torch']['train_ms']['median']:5.1f} ms); optimizer {old['opt_ms']['median']:4.1f} -> "
          f"{row['minadapt']['opt_ms']['median']:3.1f} ms")
'''),
md(r'''
The optimizer's share and the whole step shrink several times over (the numbers above), while the
arithmetic did not change at all. On the CPU the same packing helps a little (fewer, larger loops),
and there are no fused kernels: each NumPy ufunc is still one pass over its array, and what the
fast ops do instead is cut the elementwise chains into cache-sized blocks (lesson 2), so that those
passes read the CPU's cache rather than main memory. The passes remain, which is where PyTorch's
fused C++ loops keep an edge on the CPU (lesson 7).

Summary: a GPU run of minadapt is the same Python lines with CuPy arrays. The model's arrays move to
the device once; batches cross as a few kilobytes of token ids; results come back only when asked;
timings must end with `backend.synchronize`; and on a GPU, speed comes from fewer launches.
'''),
]
