"""Appendix A (optional): the fast twins of lesson 2's ops and of attention (lesson 3), and how they compute the same numbers
faster (float32 erf by a rational approximation, Horner's rule, cache-sized blocks, W^T copies)."""
from .cells import SETUP, code, md

CELLS = [
md(r'''
# Appendix A — The fast ops (optional)

Lesson 2 derives the reference ops of `minadapt/nn/`, the plainest NumPy that states the maths,
and the code the exercises ask you to write. Training runs faster twins from `minadapt/fast/`, each
tested equal to its reference. Nothing in the main line depends on this appendix: it is for the
reader who wants to know where the time goes on a CPU (lesson 7, also optional, measures it).
'''),
SETUP,
code(r'''
from minadapt import backend, gradcheck
from minadapt.fast import numerics
from minadapt.nn import attention, dropout, gelu, layernorm, linear, swish

rng = np.random.default_rng(0)
big = np.ones((1000, 1000))
'''),
md(r'''
Lesson 2's GELU is the *reference*, the one the lessons read. Training runs its fast twin,
[fast/gelu.py](../minadapt/fast/gelu.py), which computes the same numbers with less memory traffic: each step of
$\bar y\,(\Phi + x\varphi)$ is done in place on one fresh output array, the rows are cut into
blocks that stay in the CPU's cache (`numerics.blockwise`), and in float32 $\Phi$ comes from a
rational approximation instead of `math.erf` element by element (below). On an array of millions
of elements a dozen whole-array passes cost far more than the arithmetic, which is why it is
worth having; `tests/test_fast_ops.py` checks it against this file, forward and backward, and so
does section 2 below.
'''),
md(r'''
## 1. erf in float32
The exact form needs erf, which NumPy lacks. `backend.erf`, which the reference GELU calls, runs
`math.erf` element by element (exact, and slow: one Python-level call per element). The fast ops use
`minadapt/fast/numerics.py` instead: in float32, a rational approximation
$\operatorname{erf}(x) \approx x\,P(x^2)/Q(x^2)$ on $[-4, 4]$ (the one Eigen and XLA use). The fast
GELU calls `numerics.normal_cdf`, the same $P/Q$ with the $x/\sqrt2$, the $+1$ and the $/2$ of
$\Phi(x) = (1+\operatorname{erf}(x/\sqrt2))/2$ folded into its coefficients: three passes over a
large array fewer. Both polynomials are also divided by $Q$'s leading coefficient, so that $Q$'s
first Horner step is a single addition $x^2 + b_1$. Every multiply and every add of Horner's rule
is one NumPy call that reads and writes the whole array: that count, not the arithmetic, is what
the fast GELU costs ([fast/numerics.py](../minadapt/fast/numerics.py)). How close is the
approximation, in units of float32's own resolution?
'''),
code(r'''
x32 = np.linspace(-5, 5, 100_001, dtype=np.float32)
err = np.abs(numerics.erf(x32).astype(np.float64) - backend.erf(x32.astype(np.float64)))
print(f"float32 erf (fast/numerics.py): max abs error {err.max():.1e}, "
      f"i.e. {err.max() / np.spacing(np.float32(1)):.1f} float32 ulps near 1")
from minadapt.fast import gelu as fast_gelu

g32, _ = fast_gelu.forward(x32)  # the fast op, float32
g64, _ = gelu.forward(x32.astype(np.float64))  # the reference, float64
print(f"fast float32 GELU vs reference float64 GELU: max abs difference {np.abs(g32 - g64).max():.1e}")
'''),
md(r'''
## 2. The fast versions, checked against lesson 2's

Every op of lesson 2 is the reference: the plainest NumPy that states the maths, the code the exercises
ask you to write. Training runs faster twins from `minadapt/fast/`, which must compute the same
numbers. What each changes, and why:

* [fast/linear.py](../minadapt/fast/linear.py): a frozen weight's forward multiplies by a
  contiguous copy of $W^\top$, made once. BLAS first copies its second operand into blocks, and
  from the transposed view `W.T` that copy is a strided gather; a frozen weight is a constant, so
  the copy never goes stale. The backward is the reference's.
* [fast/gelu.py](../minadapt/fast/gelu.py): the same formulas computed in place on one fresh
  output, in row blocks that stay in the CPU's cache, and in float32 $\Phi$ from the rational
  approximation above. An elementwise op costs its passes over memory, not its arithmetic.
* [fast/swish.py](../minadapt/fast/swish.py): on the CPU, the reference's formulas; on a GPU, one
  fused kernel instead of five launches (lesson 8).
* [fast/layernorm.py](../minadapt/fast/layernorm.py): the same formulas, in row blocks, for the
  same reason: each formula makes several passes over a row.
* [fast/dropout.py](../minadapt/fast/dropout.py): the mask from 16 random bits per element, cheaper
  to draw than a float; its masks differ from the reference's, so it is checked by what dropout
  must do (drop about $p$, keep the mean, use the same mask backward) rather than element by element.

The check, in float64, forward and backward:
'''),
code(r'''
import importlib

fast = {name: importlib.import_module(f"minadapt.fast.{name}") for name in ("gelu", "swish", "layernorm", "dropout")}
from minadapt.fast.linear import Linear

x5 = rng.standard_normal((3, 7, 300)) * 2  # (B, T, H): several of the fast ops' row blocks
dy5 = rng.standard_normal(x5.shape)
w5, b5 = rng.standard_normal((20, 300)), rng.standard_normal(20)
g5, beta5 = 1 + 0.3 * rng.standard_normal(300), 0.1 * rng.standard_normal(300)
dyl5 = rng.standard_normal((3, 7, 20))
pairs = {
    "linear (frozen)": (lambda: Linear().forward(x5, w5, b5, frozen=True), lambda: linear.forward(x5, w5, b5, frozen=True),
                        Linear.backward, linear.backward, dyl5),
    "gelu": (lambda: fast["gelu"].forward(x5), lambda: gelu.forward(x5), fast["gelu"].backward, gelu.backward, dy5),
    "swish": (lambda: fast["swish"].forward(x5), lambda: swish.forward(x5), fast["swish"].backward, swish.backward, dy5),
    "layernorm": (lambda: fast["layernorm"].forward(x5, g5, beta5, trainable=True),
                  lambda: layernorm.forward(x5, g5, beta5, trainable=True),
                  fast["layernorm"].backward, layernorm.backward, dy5),
}
for name, (fast_fwd, ref_fwd, fast_bwd, ref_bwd, d) in pairs.items():
    (y_f, c_f), (y_r, c_r) = fast_fwd(), ref_fwd()
    err_b = max(gradcheck.rel_error(a, b) for a, b in zip(fast_bwd(d, c_f), ref_bwd(d, c_r)) if a is not None)
    print(f"fast {name:16s} vs reference: forward {gradcheck.rel_error(y_f, y_r):.0e}, backward {err_b:.0e}")
    assert gradcheck.rel_error(y_f, y_r) < 1e-12 and err_b < 1e-12

kept, c_drop = fast["dropout"].forward(big, 0.1, np.random.default_rng(0))
(back,) = fast["dropout"].backward(big, c_drop)
print(f"fast dropout p=0.1: {np.mean(kept == 0):.3f} dropped, mean {kept.mean():.4f}; backward uses the same "
      f"mask: {np.array_equal(back, kept)}; identity at evaluation: {fast['dropout'].forward(big, 0.1, train=False)[0] is big}")
'''),
md(r'''
## 3. Attention's fast twin

Training does not run lesson 3's `nn/attention.py` but its twin
[fast/attention.py](../minadapt/fast/attention.py), which computes the same numbers (`tests/test_fast_ops.py` checks it against this one, forward and
backward, on padded inputs) and changes only how the work is laid out:

* The `(B, nh, Tq, Tk)` scores are turned into probabilities *in place*, one block of sentences at a
  time (`numerics.blockwise`), so the array stays in the CPU's cache; in training the same pass
  draws that block's dropout mask.
* The max-shift uses each *head's* maximum rather than each row's (any shift gives the same
  softmax, and one maximum over a whole matrix is much cheaper than many over short rows), falling
  back to row maxima when a row would underflow; the row sums come from a matrix-vector product
  `s @ 1`, which BLAS does faster than NumPy's reduction over short rows (`numerics.row_sums`).
* $q$ is divided by $\sqrt{hs}$ while it is copied into a contiguous per-head layout, so the larger
  scores array never needs a scaling pass; contiguous copies also make the many small matrix
  products faster.
* The backward goes through dropout and softmax in one step without the mask: every term of the
  Jacobian formula multiplies $\bar a_j$ by $a_j$, and $a_j\,\text{mask}_j/(1-p) = \tilde a_j$, so
  with $t = \bar{\tilde a} \odot \tilde a$, $\;\bar s = t - a \sum_j t_j$.

None of this changes lesson 3's maths; the reference is the one to read and to write yourself.
The check: on a padded batch in float64, the fast op's context and its three gradients against the reference's.
'''),
code(r'''
import importlib

fast_attention = importlib.import_module("minadapt.fast.attention")
mask_f = np.ones((3, 9))
mask_f[1, 6:] = 0  # sentence 1: three [PAD]
mask_f[2, 2:] = 0  # sentence 2: seven [PAD]
bias_f = attention.mask_bias(mask_f, np.float64)
qf, kf, vf, dcf = (rng.standard_normal((3, 9, 24)) for _ in range(4))
c_ref, cache_ref = attention.forward(qf, kf, vf, bias_f, 4)
c_fast, cache_fast = fast_attention.forward(qf, kf, vf, bias_f, 4)
print(f"context: rel_error {gradcheck.rel_error(c_fast, c_ref):.0e}")
for name, a, b in zip(("dq", "dk", "dv"), fast_attention.backward(dcf, cache_fast), attention.backward(dcf, cache_ref)):
    print(f"{name}: rel_error {gradcheck.rel_error(a, b):.0e}")
    assert gradcheck.rel_error(a, b) < 1e-12
assert gradcheck.rel_error(c_fast, c_ref) < 1e-12
'''),
]
