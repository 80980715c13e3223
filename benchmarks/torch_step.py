"""PyTorch + AdapterHub side of ``python benchmarks/harness.py --compare torch``.

Times one adapter-training step and one inference forward of the same model minadapt trains:
all-MiniLM-L6-v2 (BERT, 6 layers, hidden 384) loaded from the local folder, AdapterHub
``DoubleSeqBnConfig(reduction_factor=6)`` (Houlsby: two bottleneck-64 swish adapters per layer),
a 2-label classification head (2 layers, tanh), ``train_adapter`` (only adapters + head train),
AdamW(lr=1e-3) over the trainable parameters, float32, CPU. Attention runs as PyTorch's fused
``scaled_dot_product_attention`` (transformers' default for BERT, ``ATTENTION`` below).

Usage::

    python benchmarks/torch_step.py --seq-len 64 --batch-size 32 --warmup 5 --steps 20 \
        --weights weights/all-MiniLM-L6-v2 --threads 2 --json OUT.json

Inputs are random token ids from the ordinary vocabulary ([1000, 30000): never [PAD]/[SEP]/...)
with [CLS] (101) first, as minadapt's side draws them; attention_mask all ones, so every row has ``seq-len`` real tokens; random labels; fixed seed.

Training step (train mode, dropout on), each phase timed with ``time.perf_counter``::

    fwd:  optimizer.zero_grad(set_to_none=True); loss = model(..., labels=labels).loss
    bwd:  loss.backward()
    opt:  clip_grad_norm_(params, max_grad_norm); optimizer.step()

(minadapt's step clips the global gradient norm to 1.0 too, as `minadapt train` does.)

``warmup`` untimed steps, then ``steps`` timed ones. Peak RSS (``ru_maxrss``, KB on Linux) is read
right after the training steps. Then inference (eval mode, ``torch.inference_mode()``, forward
only) with the same warm-up/timed counts. The JSON written::

    {"impl": "torch", "torch_version", "transformers_version", "adapters_version", "threads",
     "batch_size", "seq_len", "warmup", "steps", "max_grad_norm",
     "train_ms"/"fwd_ms"/"bwd_ms"/"opt_ms"/"infer_ms": {"median", "min", "max"},
     "peak_rss_mb", "peak_rss_after_infer_mb", "trainable_params"}
"""

from __future__ import annotations

import argparse
import json
import logging
import resource
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
ATTENTION = "sdpa"


def stats(xs_s: list[float]) -> dict[str, float]:
    ms = [x * 1e3 for x in xs_s]
    return {"median": round(statistics.median(ms), 3), "min": round(min(ms), 3), "max": round(max(ms), 3)}


def peak_rss_mb() -> float:
    # ru_maxrss is in kilobytes on Linux (bytes on macOS)
    kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    if sys.platform == "darwin":
        kb /= 1024
    return round(kb / 1024, 1)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description="PyTorch/AdapterHub adapter-training step benchmark")
    ap.add_argument("--seq-len", type=int, default=64)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--weights", type=Path, default=REPO / "weights" / "all-MiniLM-L6-v2")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--max-grad-norm", type=float, default=1.0,
                    help="clip the gradients' global norm to this before each step (0: no clipping)")
    ap.add_argument("--json", type=Path, default=None, help="write the results here")
    ap.add_argument("--device", choices=["cpu", "cuda"], default="cpu",
                    help="cuda: the same step in PyTorch on the GPU (synchronised around timers)")
    args = ap.parse_args(argv)
    if args.steps < 1 or args.warmup < 0:
        ap.error("--steps must be >= 1 and --warmup >= 0")

    try:
        import torch
        import transformers
        import adapters
        from adapters import BertAdapterModel, DoubleSeqBnConfig
    except ImportError as e:  # the `ref` extra is not installed
        print(f"torch_step: needs the 'ref' extra (torch, transformers, adapters): {e}", file=sys.stderr)
        return 3

    torch.set_num_threads(args.threads)
    transformers.logging.set_verbosity_error()
    logging.getLogger("adapters").setLevel(logging.ERROR)  # "adapters available but none activated"
    if not (args.weights / "model.safetensors").is_file():
        print(f"torch_step: no checkpoint at {args.weights}", file=sys.stderr)
        return 2

    torch.manual_seed(args.seed)
    # "sdpa": transformers' default for BERT, and PyTorch's fastest attention here (one fused
    # scaled_dot_product_attention call per layer; AdapterHub wraps it as
    # BertSdpaSelfAttentionWithAdapters). "eager" (matmul, softmax, matmul) was 4-7% slower at
    # inference on this 2-core machine, so comparing against it would flatter minadapt.
    model = BertAdapterModel.from_pretrained(str(args.weights), attn_implementation=ATTENTION,
                                             torch_dtype=torch.float32)
    model.add_adapter("sst2", config=DoubleSeqBnConfig(reduction_factor=6))
    model.add_classification_head("sst2", num_labels=2)
    model.train_adapter("sst2")
    # train_adapter() only puts the base model in train mode; the head keeps from_pretrained's eval
    # mode, so switch the whole model explicitly (dropout on everywhere, as in minadapt's training).
    model.train()
    dev = torch.device(args.device)
    model.to(dev)
    # CUDA work is asynchronous: wait for it before every clock read, or the timers measure launches
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
    params = [p for p in model.parameters() if p.requires_grad]
    n_trainable = sum(p.numel() for p in params)
    opt = torch.optim.AdamW(params, lr=1e-3)

    B, L = args.batch_size, args.seq_len
    g = torch.Generator().manual_seed(args.seed)
    # ids 1000.. are ordinary wordpieces in the BERT uncased vocab ([PAD]=0, [unusedN], [UNK]=100,
    # [CLS]=101, [SEP]=102, [MASK]=103 all lie below 1000)
    ids = torch.randint(1000, min(30000, model.config.vocab_size), (B, L), generator=g, dtype=torch.int64)
    ids[:, 0] = 101  # [CLS]
    mask = torch.ones(B, L, dtype=torch.int64)
    types = torch.zeros(B, L, dtype=torch.int64)
    labels = torch.randint(0, 2, (B,), generator=g, dtype=torch.int64)
    ids, mask, types, labels = (t.to(dev) for t in (ids, mask, types, labels))

    fwd, bwd, stp, tot = [], [], [], []
    for i in range(args.warmup + args.steps):
        sync()
        t0 = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        loss = model(input_ids=ids, attention_mask=mask, token_type_ids=types, labels=labels).loss
        sync()
        t1 = time.perf_counter()
        loss.backward()
        sync()
        t2 = time.perf_counter()
        if args.max_grad_norm > 0:
            torch.nn.utils.clip_grad_norm_(params, args.max_grad_norm)
        opt.step()
        sync()
        t3 = time.perf_counter()
        if i >= args.warmup:
            fwd.append(t1 - t0)
            bwd.append(t2 - t1)
            stp.append(t3 - t2)
            tot.append(t3 - t0)
    rss_train = peak_rss_mb()
    gpu_mb = torch.cuda.max_memory_reserved() / 2**20 if dev.type == "cuda" else None
    final_loss = float(loss.detach())

    model.eval()
    inf = []
    with torch.inference_mode():
        for i in range(args.warmup + args.steps):
            sync()
            t0 = time.perf_counter()
            logits = model(input_ids=ids, attention_mask=mask, token_type_ids=types).logits
            sync()
            t1 = time.perf_counter()
            if i >= args.warmup:
                inf.append(t1 - t0)
    assert logits.shape == (B, 2)

    res = {
        "impl": "torch",
        "torch_version": torch.__version__,
        "transformers_version": transformers.__version__,
        "adapters_version": adapters.__version__,
        "attention": model.config._attn_implementation,
        "threads": args.threads,
        "batch_size": B,
        "seq_len": L,
        "warmup": args.warmup,
        "steps": args.steps,
        "max_grad_norm": args.max_grad_norm,
        "train_ms": stats(tot),
        "fwd_ms": stats(fwd),
        "bwd_ms": stats(bwd),
        "opt_ms": stats(stp),
        "infer_ms": stats(inf),
        "peak_rss_mb": rss_train,
        "peak_rss_after_infer_mb": peak_rss_mb(),
        "peak_gpu_mb": gpu_mb,
        "trainable_params": n_trainable,
        "final_train_loss": final_loss,  # same batch every step, so it falls towards 0
    }
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(res, indent=2) + "\n")
    print(f"torch {torch.__version__} B={B} L={L} threads={args.threads}: "
          f"train {res['train_ms']['median']:.1f} ms/step (fwd {res['fwd_ms']['median']:.1f}, "
          f"bwd {res['bwd_ms']['median']:.1f}, opt {res['opt_ms']['median']:.1f}), "
          f"infer {res['infer_ms']['median']:.1f} ms/batch, peak RSS {rss_train:.0f} MB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
