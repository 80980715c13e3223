"""The backend switch, without a GPU: device and dtype resolution, erf, and the rule that layer
maths takes its array module from its input (no `np.` inside an op's forward or backward)."""
import ast
import inspect
import math

import numpy as np
import pytest

from minadapt import backend, nn
from minadapt.fast import numerics


def test_resolve_device(monkeypatch):
    monkeypatch.delenv("MINADAPT_DEVICE", raising=False)
    assert backend.resolve_device(None) == "cpu"
    assert backend.resolve_device("cuda") == "gpu"
    monkeypatch.setenv("MINADAPT_DEVICE", "gpu")
    assert backend.resolve_device(None) == "gpu"
    with pytest.raises(ValueError, match="unknown device"):
        backend.resolve_device("tpu")


def test_resolve_dtype():
    assert backend.resolve_dtype("float32") == np.float32
    assert backend.resolve_dtype(np.float64) == np.float64
    with pytest.raises(ValueError):
        backend.resolve_dtype("float16")


def test_erf_float32_and_float64():
    x = np.linspace(-7, 7, 20001)
    exact = np.array([math.erf(v) for v in x])
    assert np.abs(backend.erf(x) - exact).max() == 0  # exact, element by element
    assert np.abs(numerics.erf(x) - exact).max() == 0
    assert np.abs(numerics.erf(x.astype(np.float32)) - exact).max() < 5e-7  # the rational form


def test_normal_cdf_float32_and_float64():
    """Phi with erf's constants folded in: the same accuracy as erf itself, both tails included."""
    x = np.linspace(-8, 8, 4001)
    exact = np.array([0.5 * (1 + math.erf(v / math.sqrt(2))) for v in x])
    assert np.abs(numerics.normal_cdf(x) - exact).max() < 1e-15
    got = numerics.normal_cdf(x.astype(np.float32))
    assert got.dtype == np.float32
    assert np.abs(got - exact).max() < 3e-7


def test_blockwise_covers_every_row():
    x = np.arange(3 * 5000 * 7, dtype=np.float64).reshape(3 * 5000, 7)
    y = np.zeros_like(x)
    numerics.blockwise(lambda a, b: np.multiply(a, 2, out=b), x, y)
    assert np.array_equal(y, 2 * x)


def test_reference_ops_have_no_device_branches():
    """minadapt.nn is the plain reference: no CuPy, no CUDA kernels, no blockwise loops."""
    for name in nn.__all__:
        src = inspect.getsource(getattr(nn, name))
        for word in ("cupy", "cuda", "blockwise", "numerics"):
            assert word not in src, f"nn/{name}.py mentions {word}"


def test_importing_minadapt_changes_nothing_in_the_process():
    """No environment variable set and no malloc setting made by `import minadapt` (the CLI asks)."""
    import subprocess
    import sys

    code = ("import os; before = dict(os.environ); import minadapt, minadapt.model, minadapt.train; "
            "print(sorted(set(os.environ.items()) ^ set(before.items())))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def test_ops_take_their_array_module_from_the_input():
    """Forward and backward code in minadapt.nn never names NumPy: the same lines run on CuPy."""
    for name in nn.__all__:
        module = getattr(nn, name)
        for fn_name in [f for f in ("forward", "backward", "update") if hasattr(module, f)]:
            src = inspect.getsource(getattr(module, fn_name))
            names = {n.value.id for n in ast.walk(ast.parse(src))
                     if isinstance(n, ast.Attribute) and isinstance(n.value, ast.Name)}
            assert "np" not in names and "numpy" not in names, f"{name}.{fn_name} uses np."


def test_gpu_request_without_cupy_is_a_clear_error():
    if backend.gpu_available():
        pytest.skip("a GPU is present")
    try:
        import cupy  # noqa: F401
    except ImportError:
        with pytest.raises(RuntimeError, match="pip install 'minadapt\\[gpu\\]'"):
            backend.xp_for("gpu")


def test_row_sums():
    """x @ 1 as row sums (and means, with scale = 1/n), for stacked arrays too."""
    x = np.random.default_rng(0).normal(size=(2, 3, 5, 7))
    np.testing.assert_allclose(numerics.row_sums(x), x.sum(axis=-1, keepdims=True), rtol=1e-13)
    np.testing.assert_allclose(numerics.row_sums(x, 1 / 7), x.mean(axis=-1, keepdims=True), rtol=1e-13)
    assert numerics.row_sums(x.astype(np.float32)).dtype == np.float32
