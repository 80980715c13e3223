"""The benchmark harness (benchmarks/*.py, run as `python benchmarks/harness.py`) and the small
`minadapt bench`: options, FLOP count, table, profile aggregation, epoch estimate, and both ends to
end on a tiny random checkpoint. No assertion here is about speed."""
import json
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from minadapt.parallel import cores as parallel
from minadapt.cli import build_parser
from minadapt.config import BertConfig
from minadapt.io.weights import save_tensors

from tiny import TINY, tiny_batch, tiny_model

REPO = Path(__file__).resolve().parents[1]
BENCHMARKS = REPO / "benchmarks"
sys.path.insert(0, str(BENCHMARKS))

import harness  # noqa: E402  (benchmarks/harness.py)
import blas  # noqa: E402
import subprocess_runs  # noqa: E402
import flops  # noqa: E402
import profiling  # noqa: E402
import report as rp  # noqa: E402


# --- options ---------------------------------------------------------------------------------------
def parse(*argv):
    return harness.build_parser().parse_args(list(argv))


def test_defaults():
    a = parse()
    assert a.lengths == [16, 32, 64, 128]
    assert (a.batch_size, a.warmup, a.steps, a.threads, a.rounds) == (32, 5, 20, 2, 1)
    assert a.compare == "none" and a.torch_python == sys.executable and a.json == "bench.json"
    assert not (a.profile or a.blas or a.worker) and a.wait_quiet == 0 and a.openblas_timeout == 0
    assert a.weights is None and a.device is None and a.ops == "fast"


def test_options():
    a = parse("--lengths", "64,16,16", "--compare", "torch", "--torch-python", "/x/python",
              "--steps", "3", "--warmup", "0", "--profile", "--blas", "--json", "out.json",
              "--data-dir", "d", "--rounds", "3", "--ops", "reference")
    assert a.lengths == [16, 64]  # sorted, duplicates dropped
    assert (a.compare, a.torch_python, a.steps, a.warmup, a.json) == ("torch", "/x/python", 3, 0, "out.json")
    assert a.profile and a.blas and a.data_dir == "d" and a.rounds == 3 and a.ops == "reference"


@pytest.mark.parametrize("argv", [["--lengths", "16,x"], ["--lengths", "0,16"], ["--lengths", ""],
                                  ["--steps", "0"], ["--warmup", "-1"], ["--compare", "jax"]])
def test_bad_options(argv, capsys):
    with pytest.raises(SystemExit) as e:
        parse(*argv)
    assert e.value.code == 2
    assert "harness.py" in capsys.readouterr().err
    with pytest.raises(SystemExit) as e:  # the small `minadapt bench` refuses the same
        build_parser().parse_args(["bench", *argv])
    assert e.value.code == 2


def test_small_bench_options():
    a = build_parser().parse_args(["bench"])
    assert a.lengths == [16, 32, 64, 128] and (a.batch_size, a.warmup, a.steps) == (32, 3, 10)
    assert a.ops == "fast" and a.weights is None and a.device is None
    assert build_parser().parse_args(["bench", "--lengths", "64, 8,8"]).lengths == [8, 64]


def test_runs_interleave():
    assert subprocess_runs.plan_runs([16, 32], "torch") == [("minadapt", 16), ("torch", 16),
                                                    ("minadapt", 32), ("torch", 32)]
    assert subprocess_runs.plan_runs([16, 32], "none") == [("minadapt", 16), ("minadapt", 32)]
    # rounds swap who goes first, length by length
    assert subprocess_runs.plan_runs([16, 32], "torch", rounds=3) == [
        ("minadapt", 16), ("torch", 16), ("torch", 16), ("minadapt", 16), ("minadapt", 16), ("torch", 16),
        ("minadapt", 32), ("torch", 32), ("torch", 32), ("minadapt", 32), ("minadapt", 32), ("torch", 32)]


def test_rounds_merge_and_pair():
    def res(train, lo, hi, rss):
        return {"train_ms": {"median": train, "min": lo, "max": hi}, "peak_rss_mb": rss, "seq_len": 16}

    ours = [res(100.0, 90, 130, 200), res(140.0, 120, 150, 210), res(110.0, 100, 120, 205)]
    theirs = [res(125.0, 110, 140, 500), res(140.0, 130, 170, 490), res(100.0, 95, 105, 510)]
    m = subprocess_runs.merge_rounds(ours)
    assert m["train_ms"] == {"median": 110.0, "min": 90, "max": 150}
    assert m["peak_rss_mb"] == 210 and m["seq_len"] == 16 and len(m["rounds"]) == 3
    assert subprocess_runs.merge_rounds(ours[:1]) is ours[0]  # one round: as it was
    # paired: the median of 0.8, 1.0 and 1.1 -- not 110 / 125 from the merged medians
    assert subprocess_runs.paired_ratio(ours, theirs, "train_ms") == 1.0
    assert subprocess_runs.paired_ratio(ours, [None, None, None], "train_ms") is None


def test_thread_env():
    env = subprocess_runs.thread_env(2, 0)
    assert env == {"MINADAPT_THREADS": "2", "OPENBLAS_NUM_THREADS": "2", "OMP_NUM_THREADS": "2",
                   "MKL_NUM_THREADS": "2"}
    assert subprocess_runs.thread_env(1, 4)["OPENBLAS_THREAD_TIMEOUT"] == "4"


# --- FLOPs -----------------------------------------------------------------------------------------
def test_flops_hand_count():
    # H=8, F=12, nh=2 (hs=4), 2 layers, adapters m=2, 2 labels; B=3, L=4, so N = B*L = 12 rows.
    cfg = BertConfig(**TINY)
    # layer 0, all 12 rows:
    #   fwd: qkv 2*12*8*24=4608, scores 2*(3*2)*4*4*4=768, context 768, attn out 2*12*8*8=1536,
    #        2 adapters x (down 2*12*8*2=384 + up 384) = 1536, ffn in 2*12*8*12=2304, ffn out 2304
    l0_fwd = 4608 + 768 + 768 + 1536 + 1536 + 2304 + 2304
    #   bwd: backward stops after the attention-output adapter (nothing below it trains): ffn out
    #        dx 2304, ffn in dx 2304, 2 adapters x 4 products (dx, dW of down and up) x 384
    l0_bwd = 2304 + 2304 + 2 * 4 * 384
    # layer 1 ([CLS] only: 3 rows after attention; keys and values never formed, cls_attention):
    #   fwd: q 2*3*8*8=384; u = q Wk_h 2*(3*2)*1*4*8=384, scores u x^T 2*3*(2*1)*8*4=384,
    #        z = a x 384, context z Wv_h^T 2*(3*2)*1*8*4=384; attn out 384,
    #        adapters 4*(2*3*8*2)=384, ffn in 2*3*8*12=576, ffn out 576
    l1_fwd = 384 + 4 * 384 + 384 + 384 + 576 + 576
    #   bwd: q dx 384, cls attention 6*384, attn out dx 384, adapters 8*96, ffn 2*576
    l1_bwd = 384 + 6 * 384 + 384 + 8 * 96 + 2 * 576
    # head: dense 2*3*8*8=384, out 2*3*8*2=96; backward: dx and dW of both
    head_fwd, head_bwd = 384 + 96, 2 * (384 + 96)
    fwd = l0_fwd + l1_fwd + head_fwd
    bwd = l0_bwd + l1_bwd + head_bwd
    assert (fwd, bwd) == (18144, 13632)
    f = flops.step_flops(cfg, B=3, L=4, bottleneck=2, num_labels=2)
    assert f == {"train": fwd + bwd, "train_fwd": fwd, "train_bwd": bwd, "infer": fwd}
    # the reference ops' last layer is a full one: more FLOPs, the same layer 0
    assert flops.step_flops(cfg, B=3, L=4, bottleneck=2, cls_only=False)["infer"] > fwd


def test_flops_real_config_shape():
    # all-MiniLM-L6-v2 at B=32: the dense layers grow linearly in L, attention quadratically
    cfg = BertConfig(vocab_size=30522, hidden_size=384, num_hidden_layers=6, num_attention_heads=12,
                     intermediate_size=1536)
    f64 = flops.step_flops(cfg, 32, 64)["train"]
    assert 70e9 < f64 < 90e9
    f128 = flops.step_flops(cfg, 32, 128)["train"]
    assert 2.0 < f128 / f64 < 2.3
    # the frozen backward (dx only, none in layer 0's attention) costs about as much as the forward
    f = flops.step_flops(cfg, 32, 64)
    assert 0.9 < f["train_bwd"] / f["train_fwd"] < 1.1


@pytest.mark.parametrize("threads", ["1", "2"])
def test_gemm_operands_match_shapes(monkeypatch, threads):
    """The BLAS ceiling times each product with the layout the step uses, cut into the step's
    shards; check the shards' parts make a result of the shape its FLOP count claims."""
    monkeypatch.setenv("MINADAPT_THREADS", threads)
    # 3 layers: layer 0's backward stops above its attention, layer 2 is the [CLS]-only one
    gemms = flops.step_gemms(BertConfig(**{**TINY, "num_hidden_layers": 3}), B=3, L=4, bottleneck=2)
    assert {g.expr for g in gemms} == {"x @ Wt", "x @ W.T", "dy @ W", "dy.T @ x", "a @ b", "a.T @ b",
                                       "a.T @ dc", "dc @ b", "a @ b.T", "a @ Wh", "a @ Wh.T", "dc @ Wh"}
    # frozen weights' forwards read the W^T copy, trainable ones (adapters, head) W itself
    assert {g.name for g in gemms if g.expr == "x @ W.T"} == {
        "adapter1 down", "adapter1 up", "adapter2 down", "adapter2 up", "head dense", "head out"}
    rng = np.random.default_rng(0)
    for g in gemms:
        parts = blas.gemm_operands(g, rng)()
        # rows (or sentences) are cut into shards; a dW is each shard's own, summed afterwards
        out = sum(parts) if g.expr == "dy.T @ x" else np.concatenate(parts)
        assert out.shape == (*g.batch, g.m, g.n), g
        assert out.dtype == np.float32
        if parallel.openblas() is not None:
            assert len(parts) == int(threads), g


def test_time_gemm_spreads_the_call_over_many_products():
    # a product far shorter than one call's fixed cost is timed many to a call, and the time
    # returned is per product
    calls = []

    def fn(reps=1):
        calls.append(reps)
        time.sleep(1e-3)  # the fixed cost of a call (hand-over to the threads)

    seconds = blas.time_gemm(fn, min_seconds=0.0, min_reps=3, min_call_seconds=0.1)
    assert calls[:2] == [1, 1] and len(calls) == 5  # a warm-up, the calibration, 3 timed calls
    assert 10 <= calls[-1] <= 100 and seconds < 1e-3 / 5
    # products ran in every shard, reps times each, the last results returned
    ran = []
    out = blas.on_cores(lambda s: ran.append(s) or s.start, [slice(0, 2), slice(2, 4)], reps=3)
    assert out == [0, 2] and len(ran) == 6


def test_time_ops_own_time_and_restore():
    """Each op gets its own time: the adapter's two linears count for linear.forward, not twice;
    and every patched function is put back as it was (a staticmethod stays one)."""
    import inspect

    from minadapt.fast.linear import Linear
    from minadapt.nn import adapter, linear, swish

    rng = np.random.default_rng(0)
    h = rng.normal(size=(4096, 16))  # big enough that rounding to 0.01 ms is small beside it
    w_down, b_down, w_up, b_up = rng.normal(size=(4, 16)), np.zeros(4), rng.normal(size=(16, 4)), np.zeros(16)
    before, static = linear.forward, inspect.getattr_static(Linear, "backward")
    ops = profiling.time_ops(lambda: adapter.forward(h, w_down, b_down, w_up, b_up, swish), steps=3)
    assert linear.forward is before and inspect.getattr_static(Linear, "backward") is static
    ms = ops["ms_per_step"]
    assert set(ms) >= {"nn/adapter.forward", "nn/linear.forward", "nn/swish.forward"}
    # own times never add up to more than the step (each figure is rounded to 0.01 ms)
    assert sum(ms.values()) <= ops["total_ms"] + 0.005 * (len(ms) + 1)


@pytest.mark.skipif(parallel.openblas() is None, reason="shards need OpenBLAS")
def test_time_ops_sees_this_processs_shard(monkeypatch):
    """A real model's step through DataParallel in two shards: the ops counted are this process's
    shard's (the worker's run beside them), so together they take less than the step's wall clock;
    the fast ops are the ones clocked, the [CLS]-only last layer among them."""
    model = tiny_model()
    model.add_adapter("a", bottleneck=3)
    model.add_classification_head("a")
    ids, mask, types, labels = tiny_batch(B=4)
    with parallel.DataParallel(model, adapter="a", n=2) as dp:
        ops = profiling.time_ops(lambda: dp.loss_and_grads(ids, mask, types, labels), steps=3)
    ms = ops["ms_per_step"]
    assert ms["fast/linear.forward"] > 0 and ms["fast/cls_attention.backward"] > 0
    assert ms["cores.pack"] > 0  # shard 0 packs its gradients into its slot
    assert sum(ms.values()) <= ops["total_ms"] + 0.005 * (len(ms) + 1)


# --- profile aggregation ---------------------------------------------------------------------------
def test_aggregate_profile():
    pkg = str(profiling.PACKAGE)
    lin = (pkg + "/nn/linear.py", 20, "forward")
    gelu = (pkg + "/fast/gelu.py", 10, "forward")
    erf = (pkg + "/backend.py", 100, "erf")  # a helper: counted in its caller
    npsum = ("~", 0, "<method 'sum' of 'numpy.ndarray' objects>")
    loop = (str(BENCHMARKS / "harness.py"), 1, "train_step")  # the benchmark itself: outside
    stats = {
        loop: (1, 1, 0.5, 10.0, {}),
        lin: (2, 2, 4.0, 4.0, {loop: (2, 2, 4.0, 4.0)}),
        gelu: (1, 1, 1.0, 4.0, {loop: (1, 1, 1.0, 4.0)}),
        erf: (1, 1, 2.0, 2.0, {gelu: (1, 1, 2.0, 2.0)}),
        # sum is called from gelu (1 s through that edge) and from linear (3 s)
        npsum: (2, 2, 1.0, 1.0, {gelu: (1, 1, 0.25, 0.25), lin: (1, 1, 0.75, 0.75)}),
    }
    agg = profiling.aggregate_profile(stats)
    own = {r["function"]: r["self_s"] for r in agg["functions"]}
    assert own == {"nn/linear.py:forward": 4.75, "fast/gelu.py:forward": 3.25,
                   "(outside minadapt)": 0.5}
    assert agg["total_s"] == pytest.approx(8.5)
    assert [r["function"] for r in agg["functions"]][0] == "nn/linear.py:forward"
    assert {r["file"]: r["share"] for r in agg["files"]}["fast/gelu.py"] == round(3.25 / 8.5, 4)


# --- epoch estimate --------------------------------------------------------------------------------
def test_interpolate():
    xs, ys = [16, 32, 64], [100.0, 200.0, 500.0]
    assert rp.interpolate(16, xs, ys) == 100
    assert rp.interpolate(48, xs, ys) == 350
    assert rp.interpolate(8, xs, ys) == 50  # extended along the first segment
    assert rp.interpolate(80, xs, ys) == 650  # and along the last
    assert rp.interpolate(1, xs, ys) == 10  # never below a tenth of the smallest time
    assert rp.interpolate(8, [16], [100.0]) == 50


def test_epoch_estimate():
    # 64 sentences of length 10 and 64 of length 20, batch 32, step time = L ms: the batches are cut
    # from length-sorted pools of 50 batches, so every batch holds one length
    lengths = np.array([10] * 64 + [20] * 64)
    est = rp.epoch_estimate({16: 16.0, 32: 32.0}, lengths, batch_size=32)
    assert est["steps"] == 4
    assert est["seconds"] == pytest.approx((2 * 10 + 2 * 20) / 1e3)
    assert est["mean_padded_len"] == 15.0
    assert est["extrapolated"] == 0.5  # the two batches of length 10 lie below L=16
    # a last, smaller batch costs in proportion to its rows
    est = rp.epoch_estimate({16: 16.0, 32: 32.0}, np.array([10] * 48), batch_size=32)
    assert est["seconds"] == pytest.approx((10 + 5) / 1e3)


def test_epoch_report_floor_from_blas():
    lengths = np.array([10] * 64 + [20] * 64)  # two batches of each length (see above)
    row = lambda L, ms: {"L": L, "minadapt": {"train_ms": timing(ms, ms, ms)}, "torch": None}  # noqa: E731
    report = {"rows": [row(16, 32.0), row(32, 64.0)]}
    out = rp.epoch_report(report, lengths, batch_size=32)
    assert set(out) == {"epoch_estimate"}  # no --blas, no floor
    assert out["epoch_estimate"]["minadapt"]["seconds"] == pytest.approx((2 * 20 + 2 * 40) / 1e3)
    report["blas"] = {"lengths": [{"L": 16, "floor_ms": 16.0}, {"L": 32, "floor_ms": 32.0}]}
    out = rp.epoch_report(report, lengths, batch_size=32)
    floor = out["epoch_floor"]  # each step at its products' time alone: half the measured here
    assert floor["seconds"] == pytest.approx((2 * 10 + 2 * 20) / 1e3) and floor["steps"] == 4
    text = rp.format_epoch_floor(floor, out["epoch_estimate"])
    assert text.startswith("epoch floor: 0.0 min (0 s)") and "50% of minadapt's estimated epoch" in text


def test_blas_worker_floors_add_up_the_products(tiny_checkpoint, monkeypatch):
    """Both floors are their products' times added up: with each product timed at 1 ns a FLOP,
    the training floor is the training step's FLOPs in ns and the inference floor the inference
    step's (its products are among the training step's, so none is timed twice)."""
    timed, real_operands = [], blas.gemm_operands

    def operands(g, rng):  # the product about to be timed: remember its FLOPs
        timed.append(g.flops)
        return real_operands(g, rng)

    monkeypatch.setattr(blas, "gemm_operands", operands)
    monkeypatch.setattr(blas, "time_gemm", lambda fn: 1e-9 * timed[-1])
    args = parse("--weights", str(tiny_checkpoint), "--lengths", "8,16", "--batch-size", "4")
    out = blas.run_blas_worker(args)
    cfg = BertConfig(**TINY)
    for x, L in zip(out["lengths"], (8, 16)):
        f = flops.step_flops(cfg, 4, L)
        assert x["floor_ms"] == pytest.approx(f["train"] * 1e-6, abs=0.06)
        assert x["infer_floor_ms"] == pytest.approx(f["infer"] * 1e-6, abs=0.06)
        assert 0 < x["infer_floor_ms"] < x["floor_ms"]
    assert len(timed) == sum(len(x["shapes"]) for x in out["lengths"])  # each shape once
    text = blas.format_blas(out)
    assert "inference floor (ms)" in text and "step floor (ms)" in text


def test_floor_shares():
    report = {"rows": [{"L": 16, "torch": {"train_ms": timing(200, 1, 1), "infer_ms": timing(100, 1, 1)}},
                       {"L": 32, "torch": None}],
              "blas": {"lengths": [{"L": 16, "floor_ms": 150.0, "infer_floor_ms": 85.0},
                                   {"L": 32, "floor_ms": 300.0, "infer_floor_ms": 170.0}]}}
    assert rp.floor_shares(report) == [{"L": 16, "train": 0.75, "infer": 0.85}]  # L=32: no torch
    assert "L=16 0.75/0.85" in rp.format_floor_shares(rp.floor_shares(report))
    assert rp.floor_shares({"rows": report["rows"]}) == []  # no --blas


# --- the table -------------------------------------------------------------------------------------
def timing(median, lo, hi):
    return {"median": median, "min": lo, "max": hi}


def fake_row(L, with_torch):
    a = {"train_ms": timing(250.5, 240, 260), "fwd_ms": timing(120, 115, 130),
         "bwd_ms": timing(125, 120, 130), "opt_ms": timing(3.2, 3, 4), "infer_ms": timing(99.9, 98, 120),
         "peak_rss_mb": 254.0, "gflops_per_s": {"train": 80.7}, "process": {"others_cores": 0.04}}
    t = None
    if with_torch:
        t = {"train_ms": timing(500.0, 490, 1510), "infer_ms": timing(50.0, 49, 51), "peak_rss_mb": 508.0,
             "process": {"others_cores": 1.26}}
    r = {"train": subprocess_runs.ratio(a, t, "train_ms"), "infer": subprocess_runs.ratio(a, t, "infer_ms"),
         "rss": subprocess_runs.ratio(a, t, "peak_rss_mb")} if t else None
    return {"L": L, "minadapt": a, "torch": t, "ratio": r}


def test_format_table():
    table = rp.format_table([fake_row(16, True), fake_row(128, False)])
    lines = table.splitlines()
    assert len(lines) == 4
    assert len({len(line) for line in lines}) == 1  # fixed-width columns
    header, _, with_torch, without = lines
    assert header.split("|")[0].strip() == "L"
    assert "250.5 [240-260]" in with_torch and "120/125/3" in with_torch and "99.9 [98-120]" in with_torch
    assert "500.0 [490-1510]" in with_torch and "0.50/2.00/0.50" in with_torch
    assert with_torch.endswith("0.0/1.3")  # cores other processes used during each run
    assert with_torch.split("|")[5].strip() == "81"  # GFLOP/s
    cells = [c.strip() for c in without.split("|")]
    assert cells[0] == "128" and cells[6:] == ["-", "-", "-", "-", "0.0"]


def test_ratio():
    assert subprocess_runs.ratio({"t": timing(3, 1, 5)}, {"t": timing(4, 1, 5)}, "t") == 0.75
    assert subprocess_runs.ratio({"rss": 300.0}, {"rss": 600.0}, "rss") == 0.5
    assert subprocess_runs.ratio({"t": None}, {"t": timing(4, 1, 5)}, "t") is None
    assert subprocess_runs.ratio({"t": timing(3, 1, 5)}, None, "t") is None


# --- end to end on a tiny random checkpoint --------------------------------------------------------
@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory):
    """config.json + model.safetensors of the 2-layer tests' BERT (no tokenizer: no epoch estimate)."""
    d = tmp_path_factory.mktemp("tiny_ckpt")
    model = tiny_model(dtype=np.float32)
    save_tensors(d / "model.safetensors", model.params, {})
    (d / "config.json").write_text(json.dumps(TINY))
    return d


def run_cli(*argv, cwd=None):
    """python benchmarks/harness.py ARGV, with the installed minadapt."""
    return subprocess.run([sys.executable, str(BENCHMARKS / "harness.py"), *map(str, argv)],
                          capture_output=True, text=True, cwd=cwd, timeout=120)


def test_small_minadapt_bench_runs(tiny_checkpoint):
    r = subprocess.run([sys.executable, "-m", "minadapt.cli", "bench", "--weights", str(tiny_checkpoint),
                        "--lengths", "8", "--steps", "1", "--warmup-steps", "0"],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    row = next(line for line in lines if line.split() and line.split()[0] == "8")
    assert len(row.split()) == 7  # L, train ms [min-max], sentences/s, infer ms [min-max], sentences/s
    assert float(row.split()[3]) > 0 and float(row.split()[6]) > 0
    assert "python benchmarks/harness.py" in r.stdout


def test_building_the_parser_imports_no_harness():
    code = ("import sys, minadapt.cli; p = minadapt.cli.build_parser(); "
            "p.parse_args(['bench', '--lengths', '8']); "
            "loaded = [m for m in sys.modules if m in ('minadapt.bench', 'bench', 'flops', 'blas', "
            "'profiling', 'compare', 'report')]; assert not loaded, loaded; "
            "assert 'benchmarks/harness.py' in p._subparsers._group_actions[0].choices['bench'].format_help()")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr


def test_worker_end_to_end(tiny_checkpoint):
    r = run_cli("--worker", "--weights", tiny_checkpoint, "--lengths", 8, "--batch-size", 4,
                "--steps", 3, "--warmup", 1)
    assert r.returncode == 0, r.stderr
    res = json.loads(r.stdout.strip().splitlines()[-1])
    assert (res["impl"], res["seq_len"], res["batch_size"], res["steps"]) == ("minadapt", 8, 4, 3)
    for key in ("train_ms", "fwd_ms", "bwd_ms", "opt_ms", "infer_ms"):
        s = res[key]
        assert 0 < s["min"] <= s["median"] <= s["max"], key
    # the parts are measured inside the same steps as the total
    assert res["fwd_ms"]["min"] + res["bwd_ms"]["min"] + res["opt_ms"]["min"] <= res["train_ms"]["max"] * 1.01
    assert res["peak_rss_mb"] > 10
    assert res["trainable_params"] == 2 * 2 * (2 * 8 * 64 + 64 + 8) + (8 * 8 + 8) + (2 * 8 + 2)
    assert res["flops"] == flops.step_flops(BertConfig(**TINY), 4, 8, 64, 2)
    assert np.isfinite(res["final_train_loss"])
    # what `minadapt train` runs: OpenBLAS's idle threads sleep at once
    assert res["env"].get("OPENBLAS_THREAD_TIMEOUT") == "1"


def test_worker_wants_one_length(tiny_checkpoint):
    r = run_cli("--worker", "--weights", tiny_checkpoint, "--lengths", "4,8", "--steps", 1)
    assert r.returncode == 1 and "one --lengths value" in r.stderr and "Traceback" not in r.stderr


FAKE_TORCH = '''#!{python}
"""Stands in for a python with torch: answers the import check, and for torch_step.py writes a
result that is always twice as slow (fixed numbers) and logs the order it was called in."""
import json, sys
if sys.argv[1] == "-c":
    sys.exit(0)
args = dict(zip(sys.argv[2::2], sys.argv[3::2]))
with open({log!r}, "a") as f:
    f.write("torch " + args["--seq-len"] + "\\n")
t = {{"median": 1000.0, "min": 900.0, "max": 1100.0}}
json.dump({{"impl": "torch", "seq_len": int(args["--seq-len"]), "train_ms": t, "fwd_ms": t,
           "bwd_ms": t, "opt_ms": t, "infer_ms": t, "peak_rss_mb": 1000.0}}, open(args["--json"], "w"))
'''


def fake_torch_python(tmp_path):
    """A stand-in for --torch-python that writes fixed numbers and logs its calls: (path, log)."""
    log = tmp_path / "calls.log"
    fake = tmp_path / "fake-python"
    fake.write_text(textwrap.dedent(FAKE_TORCH.format(python=sys.executable, log=str(log))))
    fake.chmod(0o755)
    return fake, log


def test_parent_end_to_end_with_fake_torch(tiny_checkpoint, tmp_path):
    fake, log = fake_torch_python(tmp_path)
    out = tmp_path / "b.json"
    r = run_cli("--weights", tiny_checkpoint, "--lengths", "4,8", "--batch-size", 2, "--steps", 1,
                "--warmup", 0, "--compare", "torch", "--torch-python", fake, "--json", out,
                "--data-dir", tmp_path / "no-data", "--profile", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert log.read_text().split("\n")[:2] == ["torch 4", "torch 8"]
    # the progress lines show the interleaving: minadapt 4, torch 4, minadapt 8, torch 8
    order = [line.split()[1:3] for line in r.stderr.splitlines() if line.endswith("...")
             and "L=" in line and "profile" not in line]
    assert "profile L=8" in r.stderr
    assert order == [["minadapt", "L=4"], ["torch", "L=4"], ["minadapt", "L=8"], ["torch", "L=8"]]
    report = json.loads(out.read_text())
    assert set(report) >= {"machine", "config", "rows", "profile"}
    assert report["machine"]["cores"] >= 1 and report["machine"]["numpy"] == np.__version__
    assert report["machine"]["simd"] not in ("", "?")  # which loops NumPy picked: AVX2, AVX-512...
    assert report["config"]["env"]["OPENBLAS_NUM_THREADS"] == "2" and report["config"]["ops"] == "fast"
    assert "epoch_estimate" not in report  # no data, no tokenizer: skipped quietly
    assert [row["L"] for row in report["rows"]] == [4, 8]
    for row in report["rows"]:
        a = row["minadapt"]
        assert a["seq_len"] == row["L"] and row["torch"]["seq_len"] == row["L"]
        assert row["ratio"]["train"] == round(a["train_ms"]["median"] / 1000.0, 3)
        assert row["ratio"]["rss"] == round(a["peak_rss_mb"] / 1000.0, 3)
        assert a["process"]["wall_s"] > 0 and a["process"]["others_cores"] >= 0
    prof = report["profile"]
    assert prof["seq_len"] == 8 and prof["total_s"] > 0
    assert prof["ops"]["train"]["ms_per_step"]["fast/linear.backward"] > 0
    assert "fast/linear.backward" not in prof["ops"]["infer"]["ms_per_step"]  # inference: forward only
    assert "wall clock per op" in r.stdout
    assert any(f["function"].startswith("nn/linear.py:") for f in prof["functions"])
    assert sum(f["share"] for f in prof["files"]) == pytest.approx(1, abs=0.01)
    # the printed table has a row per length, with torch's fixed numbers in it
    assert "1000.0 [900-1100]" in r.stdout and "profile:" in r.stdout


def test_parent_rounds(tiny_checkpoint, tmp_path):
    fake, _ = fake_torch_python(tmp_path)
    out = tmp_path / "b.json"
    r = run_cli("--weights", tiny_checkpoint, "--lengths", "4", "--batch-size", 2, "--steps", 1,
                "--warmup", 0, "--compare", "torch", "--torch-python", fake, "--json", out,
                "--rounds", 2, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    order = [line.split()[1] for line in r.stderr.splitlines() if line.endswith("...") and "L=" in line]
    assert order == ["minadapt", "torch", "torch", "minadapt"]
    row = json.loads(out.read_text())["rows"][0]
    rounds = row["minadapt"]["rounds"]
    assert len(rounds) == 2 and len(row["torch"]["rounds"]) == 2
    assert row["ratio"]["train"] == pytest.approx(
        sum(x["train_ms"]["median"] for x in rounds) / 2 / 1000.0, abs=1e-3)
    assert "2 rounds" in r.stdout


def test_compare_torch_without_torch(tmp_path, tiny_checkpoint):
    r = run_cli("--weights", tiny_checkpoint, "--lengths", 4, "--compare", "torch",
                "--torch-python", tmp_path / "nope", "--json", tmp_path / "b.json")
    assert r.returncode == 1 and "cannot run it" in r.stderr and "Traceback" not in r.stderr
    assert not (tmp_path / "b.json").exists()  # it stops before timing anything
