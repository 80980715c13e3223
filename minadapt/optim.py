"""AdamW, the learning-rate schedule, and gradient clipping: what turns gradients into new weights.

All three follow PyTorch/HuggingFace exactly (torch.optim.AdamW, get_linear_schedule_with_warmup,
torch.nn.utils.clip_grad_norm_), so a run here can be compared step by step with one there.
Parameters and gradients are flat dicts `name -> array` (NumPy or CuPy), as everywhere in minadapt.
"""
from __future__ import annotations

import math
from typing import Callable

import numpy as np

from minadapt.backend import get_xp, to_numpy
from minadapt.packed import packed_offsets


def default_no_decay(name: str) -> bool:
    """Biases and LayerNorm parameters get no weight decay (BERT's recipe, and HF's)."""
    return name.endswith("bias") or "LayerNorm" in name


class AdamW:
    """Adam with decoupled weight decay (Loshchilov & Hutter, 2019), as torch.optim.AdamW does it.

    For each parameter p with gradient g, at its step t = 1, 2, ...:

        p <- p - lr * wd * p                          (decay; skipped for no_decay names)
        m <- b1 * m + (1 - b1) * g                    (first moment: running mean of g)
        v <- b2 * v + (1 - b2) * g * g                (second moment: running mean of g^2)
        m_hat = m / (1 - b1^t),  v_hat = v / (1 - b2^t)   (undo the bias of starting m, v at 0)
        p <- p - lr * m_hat / (sqrt(v_hat) + eps)

    Why "decoupled": L2 regularisation adds wd * p to the gradient, and Adam then divides that by
    sqrt(v_hat) like the rest of g, so weights with large gradients are barely pulled towards 0 and
    weights with tiny gradients are pulled hard. Decoupled decay shrinks every weight by the same
    factor (1 - lr * wd) outside the adaptive step, which is what "weight decay" was meant to mean
    and generalises better with Adam.

    Like torch, each parameter counts its own steps: one that got no gradient in some step (it is
    left out of `grads`) is left alone and keeps its own bias correction.

    The update is in place: `step` writes into the arrays of the `params` dict it is given, and keeps
    m, v and one scratch buffer in the parameters' dtype and device. No per-step allocations.

    When the parameters are views that tile one vector (`Model` packs its trainable parameters so),
    m and v are laid out the same way and a step that updates every parameter is one pass of
    whole-vector operations: the same arithmetic, element for element, in ~15 operations instead of
    ~15 per array (packed.py says why that matters on a GPU).
    """

    def __init__(
        self,
        params: dict,
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0.01,
        no_decay: Callable[[str], bool] = default_no_decay,
    ):
        self.names = list(params)  # the parameters this optimiser owns
        self.lr, self.betas, self.eps, self.weight_decay = lr, tuple(betas), eps, weight_decay
        self.decay = {name: not no_decay(name) for name in self.names}
        self.t = {name: 0 for name in self.names}  # steps taken, per parameter
        self._packed = packed_offsets(params)
        self._arrays = dict(params)  # the arrays a whole-vector step writes through
        if self._packed is not None:
            vector, offsets = self._packed
            xp = get_xp(vector)
            self._m_vec, self._v_vec = xp.zeros_like(vector), xp.zeros_like(vector)
            self._decay_vec = xp.zeros(vector.shape, dtype=bool)
            self.m, self.v = {}, {}
            for name, p in params.items():
                span = slice(offsets[name], offsets[name] + p.size)
                self.m[name] = self._m_vec[span].reshape(p.shape)
                self.v[name] = self._v_vec[span].reshape(p.shape)
                self._decay_vec[span] = self.decay[name]
        else:
            self.m = {name: get_xp(p).zeros_like(p) for name, p in params.items()}
            self.v = {name: get_xp(p).zeros_like(p) for name, p in params.items()}
        # One flat scratch buffer per (array module, dtype), as large as the largest parameter
        # (or the packed vector); each update borrows a view of it shaped like what it updates.
        self._scratch = {}
        for p in [*params.values(), *(self._packed[:1] if self._packed else [])]:
            key = (get_xp(p).__name__, p.dtype.str)
            if key not in self._scratch or self._scratch[key].size < p.size:
                self._scratch[key] = get_xp(p).empty(p.size, dtype=p.dtype)

    def _work(self, p):
        """A scratch array shaped like p (a view into the shared buffer; valid until the next call)."""
        return self._scratch[(get_xp(p).__name__, p.dtype.str)][: p.size].reshape(p.shape)

    def step(self, params: dict, grads: dict, lr: float | None = None) -> None:
        """Update `params[name]` in place for every name in `grads` (lr: this step's rate, else self.lr)."""
        lr = self.lr if lr is None else lr
        for name in grads:
            if name not in self.t:
                raise KeyError(f"AdamW.step: gradient for {name!r}, which this optimiser does not own")
        if self._whole_vector_step_possible(params, grads):
            vector, offsets = self._packed
            for name in self.names:
                self.t[name] += 1
            g = packed_offsets(grads)
            g = g[0] if g is not None and g[1] == offsets else \
                get_xp(vector).concatenate([grads[n].reshape(-1) for n in sorted(offsets, key=offsets.get)])
            decay = None
            if self.weight_decay:
                f = vector.dtype.type(1.0 - lr * self.weight_decay)  # the per-array path's factor
                decay = get_xp(vector).where(self._decay_vec, f, vector.dtype.type(1.0))
            self._update(vector, g, self._m_vec, self._v_vec, self._work(vector), self.t[self.names[0]],
                         lr, decay)
            return
        for name, g in grads.items():
            p = params[name]
            self.t[name] += 1
            decay = 1.0 - lr * self.weight_decay if self.weight_decay and self.decay[name] else None
            self._update(p, g, self.m[name], self.v[name], self._work(p), self.t[name], lr, decay)

    def _whole_vector_step_possible(self, params, grads) -> bool:
        """Packed parameters, all of them given a gradient, all at the same step count."""
        return (self._packed is not None and len(grads) == len(self.names)
                and all(params[n] is self._arrays[n] for n in self.names)
                and len(set(self.t.values())) == 1)

    def _update(self, p, g, m, v, tmp, t, lr, decay):
        """One AdamW update of p (an array, or the whole packed vector) in place; tmp: scratch."""
        xp = get_xp(p)
        b1, b2 = self.betas
        # p <- p - lr * wd * p    (decay: the factor 1 - lr * wd, or an array of such factors)
        if decay is not None:
            p *= decay
        # m <- b1 m + (1 - b1) g
        m *= b1
        xp.multiply(g, 1.0 - b1, out=tmp)
        m += tmp
        # v <- b2 v + (1 - b2) g^2
        v *= b2
        xp.multiply(g, g, out=tmp)
        tmp *= 1.0 - b2
        v += tmp
        # p <- p - lr m_hat / (sqrt(v_hat) + eps), written as torch does:
        #      p - (lr / (1 - b1^t)) m / (sqrt(v) / sqrt(1 - b2^t) + eps)
        xp.sqrt(v, out=tmp)
        tmp /= math.sqrt(1.0 - b2**t)
        tmp += self.eps
        xp.divide(m, tmp, out=tmp)
        tmp *= lr / (1.0 - b1**t)
        p -= tmp

    def state_dict(self) -> dict:
        """{"step": {name: int}, "m": {name: ndarray}, "v": {name: ndarray}}: NumPy copies, for checkpoints."""
        return {
            "step": dict(self.t),
            "m": {name: to_numpy(a).copy() for name, a in self.m.items()},
            "v": {name: to_numpy(a).copy() for name, a in self.v.items()},
        }

    def load_state_dict(self, state: dict, params: dict) -> None:
        """Resume from `state_dict()`: m and v are copied to the dtype and device of `params[name]`.

        Raises ValueError when the names or shapes differ from this optimiser's parameters.
        """
        for part in ("step", "m", "v"):
            if set(state[part]) != set(self.names):
                extra = sorted(set(state[part]) - set(self.names))
                lacking = sorted(set(self.names) - set(state[part]))
                raise ValueError(
                    f"optimiser state {part!r} does not match the parameters: "
                    f"unexpected {extra[:5]}, missing {lacking[:5]}"
                )
        for name in self.names:
            p = params[name]
            for part, buffers in (("m", self.m), ("v", self.v)):
                saved = state[part][name]
                if tuple(saved.shape) != tuple(p.shape):
                    raise ValueError(
                        f"optimiser state {part}[{name!r}] has shape {tuple(saved.shape)}, "
                        f"the parameter has {tuple(p.shape)}"
                    )
                buffers[name][...] = get_xp(p).asarray(saved, dtype=p.dtype)  # in place: packed views stay
            self.t[name] = int(state["step"][name])


def lr_schedule(step: int, total_steps: int, warmup_steps: int, base_lr: float) -> float:
    """Learning rate at `step`: linear warm-up from 0 to base_lr, then linear decay to 0.

        factor = step / warmup_steps                                   if step < warmup_steps
                 max(0, (total_steps - step) / (total_steps - warmup_steps))   otherwise

    (HuggingFace's get_linear_schedule_with_warmup; `step` counts from 0, the first update.)
    Warm-up keeps Adam's first steps small while its v estimate is still noisy.
    """
    if step < warmup_steps:
        return base_lr * step / max(1, warmup_steps)
    return base_lr * max(0.0, (total_steps - step) / max(1, total_steps - warmup_steps))


def clip_grad_norm(grads: dict, max_norm: float) -> float:
    """Scale all gradients together, in place, so that their global L2 norm is at most max_norm.

        norm = sqrt(sum over every array g, every element: g^2)    (accumulated in float64)
        if norm > max_norm: g <- g * max_norm / (norm + 1e-6)      (for every g)

    As torch.nn.utils.clip_grad_norm_: one factor for all, so the update keeps its direction.
    Returns the norm before clipping as a Python float (worth logging). When it is inf or nan the
    gradients are left as they are, and the caller should skip the step.
    """
    # The per-array sums stay on the array's device, and one float() reads the total: on a GPU that
    # is one host sync per step instead of one per gradient array.
    packed = packed_offsets(grads)
    arrays = [packed[0]] if packed is not None else list(grads.values())  # one vector, if packed
    total = 0.0
    for g in arrays:
        total = total + get_xp(g).sum(get_xp(g).square(g), dtype=np.float64)
    norm = math.sqrt(float(total))
    scale = max_norm / (norm + 1e-6)
    if math.isfinite(norm) and scale < 1.0:  # norm > max_norm (up to the 1e-6)
        for g in arrays:
            g *= scale
    return norm
