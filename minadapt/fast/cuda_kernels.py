"""Fused GPU kernels for the elementwise and row-wise chains of minadapt.nn (CuPy only).

Why these exist: on a GPU, a training step of this model is bound by *launches*, not arithmetic.
At batch 32 the step's matmuls take a few milliseconds on an H100, but every NumPy-style line
(`s -= s.max(...)`, `xp.exp(s, out=s)`, ...) is a separate kernel, and each costs 10-50 us of
Python, CuPy and driver time to launch however little it computes. LayerNorm written as in
nn/layernorm.py is eight launches (three of them reductions); here it is one. The same for
softmax, GELU and swish, forward and backward.

The NumPy code in minadapt.nn is the specification: each kernel below does the same operations in
the same order, and tests/test_gpu.py holds every op on CuPy to NumPy's result at 1e-10 in float64.
Arithmetic is in the arrays' own dtype (float32 or float64), as NumPy's is.

The row kernels use one thread block per row (a row of H = 384 hidden values, or of Tk attention
scores) and reduce across it with warp shuffles.
"""
from __future__ import annotations

import functools

import numpy as np

_ROW_THREADS = 128  # 4 warps: 3 values a thread at H = 384

_ROW_CODE = r"""
template <typename T> __device__ T lowest();  // the most negative finite value
template <> __device__ float lowest<float>() { return -3.402823466e+38f; }
template <> __device__ double lowest<double>() { return -1.7976931348623157e+308; }

template <typename T> __device__ T warp_sum(T v) {
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffff, v, o);
    return v;
}
template <typename T> __device__ T warp_max(T v) {
    for (int o = 16; o > 0; o >>= 1) v = max(v, __shfl_xor_sync(0xffffffff, v, o));
    return v;
}
// Sum (or max) over the block; every thread gets the result. shm: one slot per warp.
template <typename T> __device__ T block_sum(T v, T* shm) {
    v = warp_sum(v);
    if (threadIdx.x % 32 == 0) shm[threadIdx.x / 32] = v;
    __syncthreads();
    T r = 0;
    for (int w = 0; w < blockDim.x / 32; w++) r += shm[w];
    __syncthreads();
    return r;
}
template <typename T> __device__ T block_max(T v, T* shm) {
    v = warp_max(v);
    if (threadIdx.x % 32 == 0) shm[threadIdx.x / 32] = v;
    __syncthreads();
    T r = shm[0];
    for (int w = 1; w < blockDim.x / 32; w++) r = max(r, shm[w]);
    __syncthreads();
    return r;
}

// LayerNorm forward, one row per block (nn/layernorm.py: mu, xhat = x - mu, var = mean(xhat^2),
// rstd = 1 / sqrt(var + eps), xhat *= rstd, y = gamma * xhat + beta).
template <typename T>
__global__ void layernorm_forward(const T* x, const T* gamma, const T* beta, double eps, int H,
                                  T* xhat, T* rstd, T* y) {
    __shared__ T shm[32];
    const long row = blockIdx.x;
    const T* xr = x + row * H;
    T s = 0;
    for (int i = threadIdx.x; i < H; i += blockDim.x) s += xr[i];
    const T mu = block_sum(s, shm) / T(H);
    T s2 = 0;
    for (int i = threadIdx.x; i < H; i += blockDim.x) { T d = xr[i] - mu; s2 += d * d; }
    const T var = block_sum(s2, shm) / T(H);
    const T r = T(1) / sqrt(var + T(eps));
    for (int i = threadIdx.x; i < H; i += blockDim.x) {
        T xh = (xr[i] - mu) * r;
        xhat[row * H + i] = xh;
        y[row * H + i] = xh * gamma[i] + beta[i];
    }
    if (threadIdx.x == 0) rstd[row] = r;
}

// LayerNorm backward: g = dy * gamma; dx = rstd * (g - mean(g) - xhat * mean(g * xhat)).
template <typename T>
__global__ void layernorm_backward(const T* dy, const T* xhat, const T* rstd, const T* gamma,
                                   int H, T* dx) {
    __shared__ T shm[32];
    const long row = blockIdx.x;
    T sg = 0, sgx = 0;
    for (int i = threadIdx.x; i < H; i += blockDim.x) {
        T g = dy[row * H + i] * gamma[i];
        sg += g;
        sgx += g * xhat[row * H + i];
    }
    const T mean_g = block_sum(sg, shm) / T(H);
    const T mean_gx = block_sum(sgx, shm) / T(H);
    const T r = rstd[row];
    for (int i = threadIdx.x; i < H; i += blockDim.x) {
        T g = dy[row * H + i] * gamma[i];
        dx[row * H + i] = ((g - mean_g) - xhat[row * H + i] * mean_gx) * r;
    }
}

// Softmax of scaled, masked scores, in place, one row of Tk keys per block (nn/attention.py):
// s = s * scale + bias; s -= max(s); s = exp(s); s /= sum(s). (nn/attention.py passes scale = 1:
// its q arrives already divided by sqrt(hs).) bias holds one row per sentence,
// and a sentence owns rows_per_bias consecutive rows (its heads x queries).
template <typename T>
__global__ void softmax_forward(T* s, const T* bias, T scale, int Tk, int rows_per_bias) {
    __shared__ T shm[32];
    const long row = blockIdx.x;
    T* sr = s + row * Tk;
    const T* br = bias + (row / rows_per_bias) * Tk;
    T m = lowest<T>();
    for (int i = threadIdx.x; i < Tk; i += blockDim.x) {
        T v = sr[i] * scale + br[i];
        sr[i] = v;
        m = max(m, v);
    }
    m = block_max(m, shm);
    T z = 0;
    for (int i = threadIdx.x; i < Tk; i += blockDim.x) { T e = exp(sr[i] - m); sr[i] = e; z += e; }
    z = block_sum(z, shm);
    for (int i = threadIdx.x; i < Tk; i += blockDim.x) sr[i] /= z;
}

// Softmax backward, in place on da: da = (da - sum(da * a)) * a * scale.
template <typename T>
__global__ void softmax_backward(const T* a, T* da, T scale, int Tk) {
    __shared__ T shm[32];
    const long row = blockIdx.x;
    T s = 0;
    for (int i = threadIdx.x; i < Tk; i += blockDim.x) s += da[row * Tk + i] * a[row * Tk + i];
    s = block_sum(s, shm);
    for (int i = threadIdx.x; i < Tk; i += blockDim.x) {
        long j = row * Tk + i;
        da[j] = (da[j] - s) * a[j] * scale;
    }
}
"""

_KERNELS = ("layernorm_forward", "layernorm_backward", "softmax_forward", "softmax_backward")


@functools.cache
def _row_module():
    import cupy

    names = [f"{k}<{t}>" for k in _KERNELS for t in ("float", "double")]
    return cupy.RawModule(code=_ROW_CODE, options=("--std=c++14",), name_expressions=names)


def _row_kernel(name, dtype):
    return _row_module().get_function(f"{name}<{'float' if dtype == np.float32 else 'double'}>")


def _launch(name, rows, dtype, args):
    if rows:
        _row_kernel(name, dtype)((rows,), (_ROW_THREADS,), args)


def layernorm_forward(x, gamma, beta, eps):
    """(y, xhat, rstd) for x (..., H): nn/layernorm.forward's maths in one launch."""
    import cupy

    H = x.shape[-1]
    x = cupy.ascontiguousarray(x)
    xhat, y = cupy.empty_like(x), cupy.empty_like(x)
    rows = x.size // H
    rstd = cupy.empty((rows, 1), x.dtype)
    _launch("layernorm_forward", rows, x.dtype,
            (x, cupy.ascontiguousarray(gamma), cupy.ascontiguousarray(beta), np.float64(eps),
             np.int32(H), xhat, rstd, y))
    return y, xhat, rstd


def layernorm_backward(dy, xhat, rstd, gamma):
    """dx for nn/layernorm.backward, in one launch."""
    import cupy

    H = dy.shape[-1]
    dy = cupy.ascontiguousarray(dy)
    dx = cupy.empty_like(dy)
    _launch("layernorm_backward", dy.size // H, dy.dtype,
            (dy, cupy.ascontiguousarray(xhat), rstd, cupy.ascontiguousarray(gamma), np.int32(H), dx))
    return dx


def softmax_forward(s, bias, scale):
    """In place: s (B, nh, Tq, Tk) <- softmax(s * scale + bias), bias (B, 1, 1, Tk)."""
    import cupy

    B, nh, Tq, Tk = s.shape
    assert s.flags.c_contiguous
    bias = cupy.ascontiguousarray(cupy.broadcast_to(bias, (B, 1, 1, Tk)), dtype=s.dtype)
    _launch("softmax_forward", s.size // Tk, s.dtype,
            (s, bias, s.dtype.type(scale), np.int32(Tk), np.int32(nh * Tq)))


def softmax_backward(a, da, scale):
    """In place: da <- a * (da - sum_j da_j a_j) * scale."""
    Tk = a.shape[-1]
    assert a.flags.c_contiguous and da.flags.c_contiguous
    _launch("softmax_backward", a.size // Tk, a.dtype, (a, da, a.dtype.type(scale), np.int32(Tk)))


# --- elementwise chains: one ElementwiseKernel each -----------------------------------------------
@functools.cache
def _elementwise(name):
    import cupy

    # the same expressions as nn/gelu.py and nn/swish.py; T is the arrays' dtype
    kernels = {
        "gelu_forward": ("T x", "T y, T cdf",
                         "cdf = (erf(x * (T)0.70710678118654752440) + (T)1) * (T)0.5; y = x * cdf"),
        "gelu_backward": ("T x, T cdf, T dy", "T dx",
                          "dx = (exp(x * x * (T)-0.5) * (T)0.39894228040143267794 * x + cdf) * dy"),
        "swish_forward": ("T x", "T y, T s", "s = (T)1 / ((T)1 + exp(-x)); y = x * s"),
        "swish_backward": ("T x, T s, T dy", "T dx", "dx = dy * (s * ((T)1 + x * ((T)1 - s)))"),
        "dropout_forward": ("float32 u, T x, float32 p, T inv_keep", "T y, T scale",
                            "scale = u >= p ? inv_keep : (T)0; y = x * scale"),
    }
    args_in, args_out, body = kernels[name]
    return cupy.ElementwiseKernel(args_in, args_out, body, "minadapt_" + name)


def elementwise(name, *args):
    """Run one of the fused elementwise kernels above: gelu_forward(x) -> (y, cdf), ..."""
    return _elementwise(name)(*args)
