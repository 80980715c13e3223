"""The benchmark's report: the table, the SST-2 epoch estimate and floor, and the printed summary."""
from __future__ import annotations

from blas import format_blas
from profiling import format_profile

from minadapt.errors import MinadaptError


def memory_key(report_or_device) -> str:
    """Which peak memory a run is compared on: GPU memory for --device gpu, else host RSS."""
    device = report_or_device if isinstance(report_or_device, str) else \
        report_or_device["config"].get("device")
    return "peak_gpu_mb" if device == "gpu" else "peak_rss_mb"


def interpolate(x: float, xs: list, ys: list) -> float:
    """Piecewise-linear through (xs, ys) (xs increasing), extended linearly past both ends; with a
    single point, proportional to x. Never below a tenth of the smallest y."""
    if len(xs) == 1:
        return ys[0] * x / xs[0]
    i = 1
    while i < len(xs) - 1 and x > xs[i]:
        i += 1
    x0, x1, y0, y1 = xs[i - 1], xs[i], ys[i - 1], ys[i]
    return max(y0 + (y1 - y0) * (x - x0) / (x1 - x0), 0.1 * min(ys))


def epoch_estimate(step_ms: dict, lengths, batch_size: int, seed: int = 0) -> dict:
    """Seconds for one epoch of length-bucketed batches (as `minadapt train` draws them), each
    step's time interpolated from `step_ms` {L: median ms} at the batch's padded length, scaled by
    the batch's size. An estimate: it assumes the time depends only on (rows, padded length)."""
    import numpy as np

    from minadapt.tasks.batching import bucketed_batches

    lengths = np.asarray(lengths)
    xs = sorted(step_ms)
    ys = [step_ms[x] for x in xs]
    batches = bucketed_batches(lengths, batch_size, np.random.default_rng(seed))
    padded = np.array([lengths[b].max() for b in batches])
    ms = sum(interpolate(int(p), xs, ys) * len(b) / batch_size for p, b in zip(padded, batches))
    return {"steps": len(batches), "seconds": round(ms / 1e3, 3),
            "mean_padded_len": round(float(padded.mean()), 1),
            "mean_len": round(float(lengths.mean()), 1),
            # batches whose time is extrapolated, not interpolated
            "extrapolated": round(float(((padded < xs[0]) | (padded > xs[-1])).mean()), 3)}


def epoch_report(report: dict, lengths, batch_size: int) -> dict:
    """{"epoch_estimate": {impl: epoch_estimate of its measured steps}}, and with --blas also
    "epoch_floor": the same epoch with each step taking only its matrix products' time at the BLAS
    ceiling (the "step floor" per L). A step cannot be faster than its own products, so when the
    floor alone is above a target, no saving outside the products reaches it on this machine."""
    out: dict = {"epoch_estimate": {}}
    for impl in ("minadapt", "torch"):
        step_ms = {row["L"]: row[impl]["train_ms"]["median"] for row in report["rows"] if row.get(impl)}
        if step_ms:
            out["epoch_estimate"][impl] = epoch_estimate(step_ms, lengths, batch_size)
    if report.get("blas"):
        floor_ms = {x["L"]: x["floor_ms"] for x in report["blas"]["lengths"]}
        out["epoch_floor"] = epoch_estimate(floor_ms, lengths, batch_size)
    return out


def sst2_lengths(weights, data_dir):
    """Token lengths of SST-2's training sentences, or None when the data or tokenizer is absent."""
    from minadapt.tasks.sst2 import find_sst2, read_tsv
    from minadapt.tokenizer import Tokenizer

    try:
        tok = Tokenizer(weights)
        sentences, _ = read_tsv(find_sst2(data_dir, download=False) / "train.tsv")
    except MinadaptError:
        return None
    return [len(ids) for ids in tok.ids(sentences)]


def _ms(s) -> str:
    return "-" if not s else f"{s['median']:.1f} [{s['min']:.0f}-{s['max']:.0f}]"


def _num(x, fmt="{:.1f}") -> str:
    return "-" if x is None else fmt.format(x)


TABLE_COLUMNS = [("L", 4), ("train ms [min-max]", 22), ("fwd/bwd/opt ms", 17), ("infer ms", 20),
                 ("RSS MB", 7), ("GFLOP/s", 7), ("torch train", 22), ("torch infer", 20),
                 ("torch RSS", 9), ("ratio tr/inf/rss", 17), ("others", 9)]


def format_table(rows: list[dict], mem: str = "peak_rss_mb") -> str:
    """The results as fixed-width columns, one line per length (rows as in the JSON's "rows");
    `mem`: the peak-memory field shown ("peak_rss_mb", or "peak_gpu_mb" for GPU runs)."""
    def line(cells):
        return " | ".join(str(c).rjust(w) for c, (_, w) in zip(cells, TABLE_COLUMNS))

    names = [name for name, _ in TABLE_COLUMNS]
    if mem == "peak_gpu_mb":
        names = [n.replace("RSS", "GPU").replace("rss", "mem") for n in names]
    out = [line(names), "-+-".join("-" * w for _, w in TABLE_COLUMNS)]
    for row in rows:
        a, t, r = row["minadapt"], row.get("torch"), row.get("ratio") or {}
        split = "-"
        if a.get("fwd_ms") and a.get("bwd_ms"):
            split = "/".join(f"{a[k]['median']:.0f}" for k in ("fwd_ms", "bwd_ms", "opt_ms"))
        ratios = "-" if not t else "/".join(_num(r.get(k), "{:.2f}") for k in ("train", "infer", "rss"))
        others = "/".join(_num(x.get("process", {}).get("others_cores"), "{:.1f}") for x in (a, t) if x)
        out.append(line([row["L"], _ms(a["train_ms"]), split, _ms(a["infer_ms"]),
                         _num(a.get(mem), "{:.0f}"),
                         _num((a.get("gflops_per_s") or {}).get("train"), "{:.0f}"),
                         _ms(t and t["train_ms"]), _ms(t and t["infer_ms"]),
                         _num(t and t.get(mem), "{:.0f}"), ratios, others]))
    return "\n".join(out)


def floor_shares(report: dict) -> list[dict]:
    """Per L with both a BLAS floor and a PyTorch row: each floor as a share of PyTorch's median
    time, train and inference. A ratio target r (minadapt / torch <= r) can only be met if this
    share is below r, and the gap r - share is all the time left, as a share of PyTorch's step, for
    everything that is not a matrix product (GELU, softmax, LayerNorm, dropout, AdamW, Python)."""
    floors = {x["L"]: x for x in (report.get("blas") or {}).get("lengths", [])}
    out = []
    for row in report["rows"]:
        t, f = row.get("torch"), floors.get(row["L"])
        if not t or not f:
            continue
        share = {"train": f["floor_ms"] / t["train_ms"]["median"]}
        if "infer_floor_ms" in f:
            share["infer"] = f["infer_floor_ms"] / t["infer_ms"]["median"]
        out.append({"L": row["L"], **{k: round(v, 3) for k, v in share.items()}})
    return out


def format_floor_shares(shares: list[dict]) -> str:
    cells = ", ".join(f"L={s['L']} {s['train']:.2f}/{_num(s.get('infer'), '{:.2f}')}" for s in shares)
    return ("floor / torch (train/infer): the products alone as a share of PyTorch's time, so the "
            "lowest ratio a NumPy step with these products could reach: " + cells)


def format_epoch_floor(floor: dict, estimate: dict) -> str:
    line = (f"epoch floor: {floor['seconds'] / 60:.1f} min ({floor['seconds']:.0f} s) = the same "
            f"{floor['steps']} batches, each step only its matrix products at the ceiling above "
            "(no GELU, softmax, LayerNorm, optimiser or Python). A step is never faster than its "
            "products")
    if estimate.get("minadapt"):
        share = floor["seconds"] / estimate["minadapt"]["seconds"]
        line += f"; they are {100 * share:.0f}% of minadapt's estimated epoch"
    return line


def print_report(report: dict) -> str:
    m, c = report["machine"], report["config"]
    rows = report["rows"]
    a0 = rows[0]["minadapt"]
    lines = [f"benchmarks/harness.py: B={c['batch_size']}, float32, ops={c.get('ops', 'fast')}, "
             f"{c['threads']} threads, {c['warmup']} warm-up + {c['steps']} timed steps, median [min-max]"
             + (f"; {c['rounds']} rounds (median of round medians; ratio = median of the rounds' "
                "ratios)" if c.get("rounds", 1) > 1 else ""),
             f"machine: {m['cpu']}, {m.get('simd', '?')}, {m['cores']} cores, numpy {m['numpy']}, "
             f"BLAS {a0.get('blas', {}).get('corename', '?')} x{a0.get('blas', {}).get('threads', '?')}, "
             f"python {m['python']}; load average {m['load_start']} at start, {m['load_end']} at end", ""]
    if a0.get("gpu"):
        lines.append(f"GPU: {a0['gpu']} (ratio rss = peak GPU memory held: CuPy's pool vs "
                     "torch.cuda.max_memory_reserved)")
    lines.append(format_table(rows, memory_key(report)))
    if any(r.get("torch") for r in rows):
        t0 = next(r["torch"] for r in rows if r.get("torch"))
        lines.append(f"torch {t0.get('torch_version')}, transformers {t0.get('transformers_version')}, "
                     f"adapters {t0.get('adapters_version')}; ratio = minadapt / torch (below 1: minadapt "
                     "is faster or smaller); only ratios from one run count")
    lines.append("fwd = inside Model._forward (this process's shard); bwd = rest of "
                 "DataParallel.loss_and_grads; opt = clip_grad_norm + "
                 "AdamW. GFLOP/s = the step's matmul FLOPs / median train time. FLOPs per step: "
                 + ", ".join(f"L={r['L']} {r['minadapt']['flops']['train'] / 1e9:.1f}G" for r in rows))
    lines.append("others = cores kept busy by other processes while minadapt/torch ran (average)")
    disturbed = [f"{impl} L={r['L']}" for r in rows for impl in ("minadapt", "torch")
                 if r.get(impl) and (r[impl].get("process", {}).get("others_cores") or 0) > 0.1]
    if disturbed:
        lines.append(f"WARNING: other processes used the CPU during {', '.join(disturbed)}: "
                     "those timings (and their ratios) are disturbed; rerun on a quiet machine")
    if report.get("epoch_estimate"):
        est = report["epoch_estimate"]
        first = next(iter(est.values()))
        parts = [f"{impl} {e['seconds'] / 60:.1f} min" for impl, e in est.items()]
        lines.append(f"\nepoch estimate (SST-2 train, {first['steps']} length-bucketed batches of "
                     f"{c['batch_size']}, mean padded length {first['mean_padded_len']}, step time "
                     f"interpolated from the measured lengths; an ESTIMATE, not a measurement): "
                     + ", ".join(parts))
        if first["extrapolated"] > 0.2:
            lines.append(f"  {100 * first['extrapolated']:.0f}% of these batches lie outside the "
                         "measured lengths, so their times are extrapolated; measure short lengths "
                         "too (--lengths 8,16,32,64) for a better estimate")
    for part, fmt in (("profile", format_profile), ("blas", format_blas)):
        if report.get(part):
            lines += ["", fmt(report[part])]
            others = report[part].get("process", {}).get("others_cores")
            if others is not None and others > 0.1:
                lines.append(f"WARNING: other processes kept {others:.1f} cores busy meanwhile: "
                             "these numbers are disturbed")
    if report.get("epoch_floor"):
        lines.append(format_epoch_floor(report["epoch_floor"], report.get("epoch_estimate", {})))
    shares = floor_shares(report)
    if shares:
        lines.append(format_floor_shares(shares))
    return "\n".join(lines)
