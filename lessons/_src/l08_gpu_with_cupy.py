"""Lesson 8: the same code on a GPU with CuPy; runs top to bottom with or without one."""
from .cells import BENCH_COMMAND, SETUP, WEIGHTS, code, md

CELLS = [
md(r'''
# Lesson 8 — The same code on a GPU, with CuPy

Nothing in `minadapt/nn/`, `minadapt/fast/` or `minadapt/bert.py` knows which device it runs on. Every op asks its
input for its array module (`xp = get_xp(x)`, section 1), and [CuPy](https://cupy.dev) provides a
`cupy` module with NumPy's names whose arrays live in GPU memory. So putting the model on a GPU means
putting its *arrays* there; the maths is unchanged.

This notebook runs everywhere. Its GPU cells run only where `backend.gpu_available()` is true
(CuPy installed *and* a CUDA device visible); elsewhere they say what would happen, and they check
the same things on the CPU. The GPU figure of section 4 is read from the benchmark results the
repository commits, which name the command and the machine that made them. To run it on a GPU, install CuPy through the `gpu` extra
(`backend.xp_for("gpu")`'s error message, printed below where CuPy is missing, names the command).
'''),
SETUP,
code(r'''
import importlib.util
import time

import minadapt
from minadapt import backend
from minadapt.nn import gelu, layernorm, linear

GPU = backend.gpu_available()
print("CuPy installed:      ", importlib.util.find_spec("cupy") is not None)
print("GPU available:       ", GPU)
if GPU:
    import cupy

    props = cupy.cuda.runtime.getDeviceProperties(cupy.cuda.Device().id)
    print("device:              ", props["name"].decode(), f"({props['totalGlobalMem'] / 2**30:.0f} GiB)")
else:
    print("No GPU was found: the GPU cells below say what they would do, and check the same on the CPU.")
'''),
md(r'''
## 1. Ops take their array module from their input

A NumPy array lives in the computer's main memory and NumPy's functions run on the CPU. CuPy is a
NumPy look-alike for NVIDIA GPUs: a `cupy.ndarray` lives in GPU memory, `cupy.exp(x)` launches a
CUDA kernel, `a @ b` calls cuBLAS. The *names* are the same, so a line such as `xp.exp(x)` runs on
either device, provided `xp` is the module that `x` belongs to. `minadapt/backend.py` holds the few
helpers this needs, and is the only file of the maths that knows two array libraries exist:

| function | what it does |
|---|---|
| `get_xp(x)` | the array module of `x`: `numpy`, or `cupy` for a CuPy array |
| `resolve_device(d)` | `"cpu"` or `"gpu"` from an argument, else `$MINADAPT_DEVICE`, else `"cpu"` |
| `xp_for(device)` | the module for a device (importing CuPy only when asked for the GPU) |
| `gpu_available()` | `True` when CuPy imports *and* sees a CUDA device |
| `to_device`, `to_numpy` | the only places where data crosses between host and GPU |
| `synchronize(x)` | wait until the GPU has finished the work queued for `x` (section 3) |
| `erf` | the one function of the maths that NumPy lacks and CuPy has (below) |
| `resolve_dtype` | the precision policy: float32 or float64, nothing else |
'''),
code(r'''
import inspect

x = np.arange(6, dtype=np.float32).reshape(2, 3)
print("get_xp(a NumPy array) is numpy:", backend.get_xp(x) is np)
print("resolve_device()       ->", backend.resolve_device(), "  (no argument: $MINADAPT_DEVICE or 'cpu')")
print("resolve_device('cuda') ->", backend.resolve_device("cuda"))
print("xp_for('cpu') is numpy:", backend.xp_for("cpu") is np)
for d in ("float32", np.float64):
    print(f"resolve_dtype({d!r}) ->", backend.resolve_dtype(d))
for bad, fn in (("tpu", backend.resolve_device), ("float16", backend.resolve_dtype)):
    try:
        fn(bad)
    except ValueError as e:
        print(f"{fn.__name__}({bad!r}) -> ValueError:", e)
'''),
md(r'''
Here is what an op looks like from the inside. Read the reference `swish.forward` (the adapter's
default non-linearity, $y = x\,\sigma(x)$): it asks its input for `xp` and writes `xp.exp`.
Arithmetic operators (`+`, `*`, `/`, `@`) need no `xp` at all, because NumPy and CuPy arrays both
define them. There is no `if device == ...` anywhere in `minadapt/nn/`.
'''),
code(r'''
from minadapt.nn import swish

print(inspect.getsource(swish.forward))
'''),
md(r'''
The one thing the two libraries do differently in the maths is the **error function** that BERT's
exact GELU needs (lesson 2): NumPy has no `erf`, CuPy has one in `cupyx.scipy.special`. So
`backend.erf` is the one place in the maths with a device branch: on NumPy it runs `math.erf`
element by element (exact, and slow, which is fine for the reference ops and for float64 checks),
on CuPy the library's exact kernel. The rest of `backend.py` is machinery: moving arrays,
synchronising, and a scatter-add for the embedding's backward.

Now the same library functions (the reference ones of `minadapt/nn/`), called with a NumPy array
and, where there is a GPU, with a CuPy array. The output lives where the input lived:
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
stop. The first call of each kernel also includes its compilation, so warm up first. A GPU forward
pass timed without and with `synchronize`:
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
    h = cpu64.encode(*batch)  # NumPy: the work is done when the call returns
    backend.synchronize(h)  # a NumPy array: returns at once
    print("CPU: encode is synchronous, and synchronize(a NumPy array) is a no-op.")
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
  vector ([packed.py](../minadapt/packed.py); `model.params[name]` are views into it) and hands out gradients the
  same way, so AdamW and gradient clipping are ~15 whole-vector operations a step instead of ~15 per
  array.
* **Fused kernels for the chains.** LayerNorm as written in the reference
  [nn/layernorm.py](../minadapt/nn/layernorm.py) is eight launches (three of them reductions);
  softmax is seven; GELU and swish four or five each way. On a GPU, the fast ops of `minadapt/fast/`
  hand each of these chains to one kernel from
  [fast/cuda_kernels.py](../minadapt/fast/cuda_kernels.py) that does the same operations in the
  same order (its source quotes the reference's expressions). The reference ops stay the
  specification: `tests/test_fast_ops.py` holds each fast op to its reference, and
  `tests/test_gpu.py` every op on CuPy to NumPy's result at 1e-10 in float64, at the model's own sizes.

The check, here: each fast op against its reference op of `minadapt/nn/`, forward and backward, in
float64, on the GPU where there is one (the fused kernels) and otherwise on the CPU (the fast ops'
blockwise CPU path, lesson 2):
'''),
code(r'''
import importlib

from minadapt import gradcheck, nn

device = "gpu" if GPU else "cpu"
on = lambda a: backend.to_device(a, device)
rng = np.random.default_rng(0)
x, dy = on(rng.standard_normal((4, 16, 384))), on(rng.standard_normal((4, 16, 384)))
gamma, beta = on(1 + 0.1 * rng.standard_normal(384)), on(0.1 * rng.standard_normal(384))
q, k, v, dc = (on(rng.standard_normal((4, 16, 384))) for _ in range(4))
mask = np.ones((4, 16))
mask[1, -5:] = 0  # a padded sentence
bias = nn.attention.mask_bias(on(mask), np.float64)
pairs = {
    "layernorm": (lambda op: op.forward(x, gamma, beta), lambda op, c: op.backward(dy, c)),
    "gelu": (lambda op: op.forward(x), lambda op, c: op.backward(dy, c)),
    "swish": (lambda op: op.forward(x), lambda op, c: op.backward(dy, c)),
    "attention": (lambda op: op.forward(q, k, v, bias, 12), lambda op, c: op.backward(dc, c)),
}
for name, (fwd, bwd) in pairs.items():
    ref_op, fast_op = getattr(nn, name), importlib.import_module(f"minadapt.fast.{name}")
    (y_ref, c_ref), (y_fast, c_fast) = fwd(ref_op), fwd(fast_op)
    err_y = gradcheck.rel_error(backend.to_numpy(y_fast), backend.to_numpy(y_ref))
    err_d = max(gradcheck.rel_error(backend.to_numpy(a), backend.to_numpy(b))
                for a, b in zip(bwd(fast_op, c_fast), bwd(ref_op, c_ref)) if a is not None)
    print(f"{device}: fast.{name:9s} vs nn.{name:9s}  forward {err_y:.0e}  backward {err_d:.0e}")
    assert err_y < 1e-10 and err_d < 1e-10
'''),
md(r'''
The effect of both changes, from the GPU results the repository commits
(`benchmarks/results/gpu_h100_unfused.json`, a run before both changes, and `gpu_h100.json`, after;
each also times PyTorch + AdapterHub on the same GPU in the same run). Both were measured on an
earlier version of the code than the one this lesson imports (before the redesign that split the
methods into `minadapt/methods/`); they are the record of those runs, not a measurement of today's
code, and have not been re-measured since. Each file records the
machine it ran on and the settings it ran with, printed below as the `minadapt bench` command they
stand for; `benchmarks/README.md` says how each was made:
'''),
BENCH_COMMAND,
code(r'''
import json


def bench_machine(report):
    """The machine a benchmark report was measured on, from its "machine" (and the GPU's name)."""
    m, gpu = report["machine"], report["rows"][0]["minadapt"].get("gpu")
    return "; ".join(filter(None, [gpu, f"{m['cpu']}, {m['usable_cores']} cores",
                                   f"NumPy {m['numpy']}, Python {m['python']}"]))


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
gpu_name = runs["minadapt, packed + fused"]["rows"][0]["minadapt"]["gpu"]
ax.set_title(f"{gpu_name}, batch 32, float32: a step's time barely depends on L", fontsize=10)
ax.legend(fontsize=7, ncol=3, loc="upper center", bbox_to_anchor=(0.5, -0.1))
plt.tight_layout()
plt.show()
for (name, run), f in zip(runs.items(), ("gpu_h100_unfused.json", "gpu_h100.json")):
    print(f"{f} ({name}):\n    command: {bench_command(run)}\n    machine: {bench_machine(run)}")
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
