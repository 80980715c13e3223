"""Adapters that compose: a small tree of blocks that the encoder walks at each adapter site.

Dimensions: R = rows at a site (batch, or a group of its rows, x tokens), H = hidden, N = children.

An adapter site ends a sub-layer (bert.sublayer_end_forward): o is the sub-layer's output, res its
input, and the site returns LayerNorm(h + res), where h is o carried through the adapters. Every
block is a function h -> h' (AdapterHub's composition blocks, read as maths):

    adapter a    h' = h + A_a(u(h))        u(h) = h (Houlsby) or LayerNorm(h + res) (Pfeiffer)
    Stack(a, b)  h' = b(a(h))               one adapter's output into the next (MAD-X: language, task)
    Fuse(a, b)   h' = Fusion(u(h), [A_a(u(h)), A_b(u(h))], residual h)      nn/fusion.py
    Average(a, b, weights w)  h' = (1/N) sum_n w_n n(h)      AdapterHub's mean of the weighted
                 outputs: with weights that sum to 1 this is 1/N of their weighted sum, so the
                 sub-layer's output itself is scaled by 1/N. That is what AdapterHub computes
                 (`BottleneckLayer.mean`), and what the tests hold it to.
and the site is  out = LayerNorm(block(o) + res).

Rows(groups): one block per group of rows, the mixed batch: the backbone's layers run once over
all rows, and at each site every group's block runs on its own rows only (a slice when the rows are
contiguous, so no copy). A row of the batch gives what it gives run alone. Parallel (one text
through several tasks, `parallel_logits`) is Rows over the batch repeated once per task: AdapterHub
repeats it at the first adapter layer, here the embeddings run per copy too (a table look-up, the
only work below the lowest adapter when adapters sit in every layer); the numbers are the same.

Backward is each block's forward read backwards; where a Pfeiffer adapter reads LayerNorm(h + res),
the gradient also reaches res, so every backward returns (dh, dres or None).
"""
from __future__ import annotations

from typing import NamedTuple

import numpy as np

from . import bert
from .backend import get_xp
from .errors import ConfigError
from .nn import fusion


# --- the blocks -----------------------------------------------------------------------------------
class Block:
    """A composition of adapters; bert.sublayer_end_forward hands a site to `site_forward`."""
    children: tuple = ()

    def leaves(self):
        """The adapters (AdapterConfig) in this tree, left to right."""
        for c in self.children:
            yield from (c.leaves() if isinstance(c, Block) else (c,))

    def site_forward(self, o, res, params, i, where, cfg, run):
        return site_forward(self, o, res, params, i, where, cfg, run)

    def site_backward(self, dout, cache, i, where, run, grads):
        return site_backward(dout, cache, i, where, run, grads)


class Stack(Block):
    """h' = c_N(... c_1(h)): each child reads what the one before it wrote."""

    def __init__(self, *children):
        _check_children(self, children, (Fuse, Average))
        self.children = tuple(children)

    def __repr__(self):
        return f"Stack({', '.join(map(_name, self.children))})"


class Fuse(Block):
    """AdapterFusion over adapters (frozen, of one architecture); its layers are named
    encoder.layer.{i}.{site}.adapter_fusion_layer.{a,b,...}.* as AdapterHub names them."""

    def __init__(self, *children, value=True):
        _check_children(self, children, ())
        if len(children) < 2:
            raise ConfigError(f"Fuse needs 2 or more adapters, got {len(children)}")
        self.children = tuple(children)
        self.value = value  # False: AdapterHub's "static" fusion, without the value matrix

    @property
    def name(self) -> str:
        return ",".join(c.name for c in self.children)

    def __repr__(self):
        return f"Fuse({self.name})"


class Average(Block):
    """h' = (1/N) sum_n w_n c_n(h), weights normalised to sum to 1 (AdapterHub's Average)."""

    def __init__(self, *children, weights=None):
        _check_children(self, children, ())
        if weights is None:
            weights = [1.0] * len(children)
        if len(weights) != len(children) or sum(weights) == 0:
            raise ConfigError(f"Average: {len(weights)} weights for {len(children)} adapters "
                              "(expected one each, not summing to 0)")
        self.children = tuple(children)
        self.weights = tuple(w / sum(weights) for w in weights)

    def __repr__(self):
        return f"Average({', '.join(map(_name, self.children))}; weights {self.weights})"


class Rows(Block):
    """One block per group of rows: groups = [(block or adapter or None, row indices), ...];
    None: those rows run the bare backbone at every site (a probe's task)."""

    def __init__(self, groups, trainable=None):
        self.groups = tuple((b, _as_slice(idx)) for b, idx in groups)
        self.children = tuple(b for b, _ in self.groups if b is not None)
        # per group, the names its task trains (None: the run's): a task that runs an adapter
        # frozen (a language adapter under Stack) gives it no gradient even where another task
        # in the batch trains it
        self.trainable = tuple(trainable) if trainable is not None else (None,) * len(self.groups)

    def __repr__(self):
        return f"Rows({', '.join(_name(b) for b, _ in self.groups)})"


def _name(b):
    return repr(b) if isinstance(b, Block) else (b.name if b is not None else "none")


def _check_children(block, children, nested):
    """AdapterHub's allowed nestings, narrowed to what these equations define."""
    for c in children:
        if isinstance(c, Block) and not isinstance(c, nested):
            raise ConfigError(f"{type(block).__name__} cannot hold {type(c).__name__} "
                              f"(it holds adapters{', ' if nested else ''}"
                              f"{', '.join(t.__name__ for t in nested)})")
        if not isinstance(c, Block) and not hasattr(c, "architecture"):
            raise ConfigError(f"{type(block).__name__}: {c!r} is not a bottleneck adapter")
        if not isinstance(c, Block) and c.train_layer_norms:
            raise ConfigError(f"adapter {c.name!r} trains its own LayerNorms: it runs alone or in a "
                              f"mixed batch, not inside {type(block).__name__}")
    if isinstance(block, (Fuse, Average)):
        archs = {c.architecture for c in children}
        if len(archs) > 1:
            raise ConfigError(f"{type(block).__name__} of adapters of different architectures "
                              f"({', '.join(sorted(archs))}): they sit at different sites")


def _as_slice(idx):
    """Row indices -> a slice when they are one contiguous run (a view, not a copy)."""
    if isinstance(idx, slice):
        return idx
    idx = [int(r) for r in idx]
    if idx and idx == list(range(idx[0], idx[-1] + 1)):
        return slice(idx[0], idx[-1] + 1)
    return idx


# --- one adapter, and what it reads ---------------------------------------------------------------
def _add(grads, name, g):
    """A parameter used by several groups (a language adapter under two tasks) sums its gradients."""
    grads[name] = grads[name] + g if name in grads else g


def _read_forward(leaf, h, res, params, i, where, cfg, run):
    """u(h): what the adapter reads (bert.ADAPTER_READS)."""
    if bert.ADAPTER_READS[leaf.architecture] == "sublayer":
        return h, None
    return bert._ln_forward(h + res, params, bert.layer_norm_prefix(i, where), cfg, run)


def _read_backward(du, ln, i, where, run, grads):
    """Returns (dh, dres or None)."""
    if ln is None:
        return du, None
    d = bert._ln_backward(du, ln, bert.layer_norm_prefix(i, where), run, grads)
    return d, d  # u = LayerNorm(h + res)


def _bottleneck_forward(leaf, u, params, i, where, run):
    """A(u) without its skip connection."""
    prefix = bert.adapter_prefix(i, where, leaf.name)
    w = [params[prefix + k] for k in bert.ADAPTER_KEYS]
    return run.ops.adapter.forward(u, *w, run.ops.non_linearities[leaf.non_linearity], skip=False)


def _bottleneck_backward(dy, cache, leaf, i, where, run, grads, frozen=False):
    prefix = bert.adapter_prefix(i, where, leaf.name)
    du, *dparams = run.ops.adapter.backward(dy, cache)
    if not frozen and prefix + bert.ADAPTER_KEYS[0] in run.trainable:  # a frozen one owes no dW
        for k, g in zip(bert.ADAPTER_KEYS, dparams):
            _add(grads, prefix + k, g)
    return du


def _sits_here(block, where):
    return any(where in bert.ADAPTER_SITES[a.architecture] for a in
               (block.leaves() if isinstance(block, Block) else (block,)))


# --- a block, h -> h' ------------------------------------------------------------------------------
class ApplyCache(NamedTuple):
    kind: str
    block: object
    parts: tuple


def apply_forward(block, h, res, params, i, where, cfg, run):
    """h' = block(h) at site `where` of layer i (see the module docstring). Returns (h', cache)."""
    if not _sits_here(block, where) or (not isinstance(block, Block) and
                                        i not in block.layers(cfg.num_hidden_layers)):
        return h, ApplyCache("identity", block, ())  # (adapter_layers: a layer without this adapter)
    if not isinstance(block, Block):  # an adapter: h' = h + A(u(h))
        u, ln = _read_forward(block, h, res, params, i, where, cfg, run)
        d, c = _bottleneck_forward(block, u, params, i, where, run)
        return h + d, ApplyCache("adapter", block, (ln, c))
    if isinstance(block, Stack):
        caches = []
        for child in block.children:
            h, c = apply_forward(child, h, res, params, i, where, cfg, run)
            caches.append(c)
        return h, ApplyCache("stack", block, tuple(caches))
    if isinstance(block, Fuse):  # query u(h), keys and values the adapters' A_n(u(h)), residual h
        xp = get_xp(h)
        u, ln = _read_forward(block.children[-1], h, res, params, i, where, cfg, run)
        ups, caches = zip(*(_bottleneck_forward(a, u, params, i, where, run) for a in block.children))
        p = fusion_prefix(i, where, block)
        frozen = p + "query.weight" not in run.trainable
        y, fc = fusion.forward(u, xp.stack(ups, axis=-2), h, *(params.get(p + k) for k in fusion.KEYS),
                               p_drop=cfg.attention_probs_dropout_prob, rng=run.rng, train=run.train,
                               dropout=run.ops.dropout, frozen=frozen)
        return y, ApplyCache("fuse", block, (ln, caches, fc))
    if isinstance(block, Average):  # h' = sum_n (w_n / N) c_n(h)
        outs, caches = zip(*(apply_forward(c, h, res, params, i, where, cfg, run) for c in block.children))
        n = len(outs)
        y = sum((w / n) * o for w, o in zip(block.weights, outs))
        return y, ApplyCache("average", block, caches)
    raise ConfigError(f"{block!r} cannot sit inside another block here")


def apply_backward(dy, cache: ApplyCache, i, where, run, grads):
    """Backward of apply_forward: returns (dh, dres or None)."""
    block = cache.block
    if cache.kind == "identity":
        return dy, None
    if cache.kind == "adapter":  # h' = h + A(u(h))
        ln, c = cache.parts
        du = _bottleneck_backward(dy, c, block, i, where, run, grads)
        dh, dres = _read_backward(du, ln, i, where, run, grads)
        return dy + dh, dres
    if cache.kind == "stack":  # the children in reverse
        dres = None
        for child_cache in reversed(cache.parts):
            dy, d = apply_backward(dy, child_cache, i, where, run, grads)
            dres = _sum(dres, d)
        return dy, dres
    if cache.kind == "fuse":
        ln, caches, fc = cache.parts
        dq, dups, dh, *dparams = fusion.backward(dy, fc)
        if dparams[0] is not None:
            p = fusion_prefix(i, where, block)
            for k, g in zip(fusion.KEYS, dparams):
                if g is not None:
                    _add(grads, p + k, g)
        du = dq  # u is the query and every adapter's input
        for n, (a, c) in enumerate(zip(block.children, caches)):
            # Fuse's adapters stay frozen (AdapterHub's train_adapter_fusion)
            du = du + _bottleneck_backward(dups[..., n, :], c, a, i, where, run, grads, frozen=True)
        dh_u, dres = _read_backward(du, ln, i, where, run, grads)
        return dh + dh_u, dres
    if cache.kind == "average":
        n = len(cache.parts)
        dh, dres = None, None
        for w, c in zip(block.weights, cache.parts):
            d, r = apply_backward((w / n) * dy, c, i, where, run, grads)
            dh, dres = _sum(dh, d), _sum(dres, r)
        return dh, dres
    raise AssertionError(cache.kind)


def _sum(a, b):
    return b if a is None else (a if b is None else a + b)


def fusion_prefix(i: int, where: str, fuse: Fuse) -> str:
    """AdapterHub's names: encoder.layer.{i}.{where}.adapter_fusion_layer.{a,b}."""
    return f"encoder.layer.{i}.{where}.adapter_fusion_layer.{fuse.name}."


# --- a site: out = LayerNorm(block(o) + res), per group of rows ----------------------------------
class SiteCache(NamedTuple):
    groups: tuple  # (rows, ApplyCache or None, the group's Run or None for the site's) per group
    lns: tuple  # (rows or None for all, LayerNorm prefix, LayerNorm cache)


def _ln_prefix(block, i, where):
    """A lone adapter that trains its own LayerNorms uses them; everything else the layer's."""
    if block is not None and not isinstance(block, Block):
        return bert.layer_norm_prefix(i, where, block)
    return bert.layer_norm_prefix(i, where)


def site_forward(block, o, res, params, i, where, cfg, run):
    """o, res (B, T', H) -> out (B, T', H): every group's block on its rows, then the LayerNorms
    (one call over the whole batch when every group uses the layer's own)."""
    xp = get_xp(o)
    groups = block.groups if isinstance(block, Rows) else ((block, slice(None)),)
    group_trainable = block.trainable if isinstance(block, Rows) else (None,)
    if len(groups) == 1 and groups[0][1] == slice(None):
        h = o
    else:
        h = xp.array(o, copy=True)  # rows of probe groups keep o
    caches = []
    with _group_products(o, len(groups)):
        for (b, rows), names in zip(groups, group_trainable):
            if b is None or not _sits_here(b, where):
                caches.append((rows, None, None))
                continue
            group_run = run if names is None else run._replace(trainable=names)
            hb, c = apply_forward(b, o[rows], res[rows], params, i, where, cfg, group_run)
            if rows == slice(None):
                h = hb
            else:
                h[rows] = hb
            caches.append((rows, c, None if names is None else group_run))
    s = h + res
    prefixes = {}
    for b, rows in groups:
        prefixes.setdefault(_ln_prefix(b, i, where), []).append(rows)
    if len(prefixes) == 1:
        (prefix,) = prefixes
        out, ln = bert._ln_forward(s, params, prefix, cfg, run)
        return out, SiteCache(tuple(caches), ((None, prefix, ln),))
    out = xp.empty_like(s)
    lns = []
    for prefix, rows_list in prefixes.items():
        rows = _union(rows_list)
        out[rows], ln = bert._ln_forward(s[rows], params, prefix, cfg, run)
        lns.append((rows, prefix, ln))
    return out, SiteCache(tuple(caches), tuple(lns))


def _union(rows_list):
    idx = []
    for r in rows_list:
        idx.extend(range(r.start, r.stop) if isinstance(r, slice) else r)
    return sorted(idx)


def site_backward(dout, cache: SiteCache, i, where, run, grads):
    """Backward of site_forward: returns (do, dres)."""
    xp = get_xp(dout)
    # out = LayerNorm(s), s = h + res: the sum's gradient goes to both
    if cache.lns[0][0] is None:
        _, prefix, ln = cache.lns[0]
        ds = bert._ln_backward(dout, ln, prefix, run, grads)
    else:
        ds = xp.empty_like(dout)
        for rows, prefix, ln in cache.lns:
            ds[rows] = bert._ln_backward(dout[rows], ln, prefix, run, grads)
    # h = block(o), group by group; probe groups' rows pass ds through
    if len(cache.groups) == 1 and cache.groups[0][0] == slice(None):
        _, c, group_run = cache.groups[0]
        if c is None:
            return ds, ds
        do, dres = apply_backward(ds, c, i, where, group_run or run, grads)
        return do, ds if dres is None else ds + dres
    do = xp.array(ds, copy=True)
    dres = ds
    with _group_products(ds, len(cache.groups)):
        for rows, c, group_run in cache.groups:
            if c is None:
                continue
            do_rows, dres_rows = apply_backward(ds[rows], c, i, where, group_run or run, grads)
            do[rows] = do_rows
            if dres_rows is not None:
                if dres is ds:
                    dres = xp.array(ds, copy=True)
                dres[rows] += dres_rows
    return do, dres


def _group_products(x, n_groups):
    """Several groups make several small products per site instead of one: OpenBLAS's threads
    cost more to wake for each than they save on a few rows, more so on a busy machine, so the
    groups run on one BLAS thread (the encoder's large products keep them all). A no-op for one
    group, on CuPy, and for another BLAS."""
    from contextlib import nullcontext

    if n_groups < 2 or get_xp(x) is not np:
        return nullcontext()
    from .parallel.cores import one_blas_thread, openblas

    return one_blas_thread() if openblas() is not None else nullcontext()


# --- a batch: the encoder once, each group's head on its rows ------------------------------------
def run_groups(model, input_ids, attention_mask, token_type_ids, groups, labels=None, train=False,
               rng=None, trainable=frozenset(), lowest=0):
    """groups: [(block, head name, rows), ...]: the rows' adapters (an adapter, a Block, or None)
    and the head that reads their [CLS]. The backbone's matmuls run once over the batch.
    labels=None: returns [logits (n_g, C_g) per group]. Otherwise also the loss, the sum over the
    groups of each one's mean loss (so each group's gradients are those of its rows run alone),
    and the gradients of `trainable` down to layer `lowest` (None: heads only): (loss, [logits], grads).
    trainable: one set of names for every group, or a list of one set per group (each task's own,
    so an adapter one task trains and another runs frozen gets only the first one's gradient)."""
    from . import heads
    from .nn import loss as cross_entropy, mse

    groups = [(b, head, _as_slice(rows)) for b, head, rows in groups]
    per_group = isinstance(trainable, (list, tuple))
    if len(groups) == 1 and groups[0][2] == slice(0, len(input_ids)):
        groups[0] = groups[0][:2] + (slice(None),)  # every row: the block alone, no Rows
    if len(groups) == 1 and groups[0][2] == slice(None):
        block = groups[0][0]
    else:
        block = Rows([(b, rows) for b, _, rows in groups],
                     [frozenset(t) for t in trainable] if per_group else None)
    if per_group:
        trainable = set().union(*trainable)
    grad = labels is not None
    run = bert.Run(ops=model.ops if grad else model.inference_ops, train=train,
                   rng=rng if train else None, adapter=block, trainable=frozenset(trainable))
    h, enc_cache = bert.encoder_forward(model.params, model.qkv, model.cfg, input_ids, attention_mask,
                                        token_type_ids, run, cls_only=True)
    cls = h[:, 0]  # (B, H)
    outs = []
    for _, head, rows in groups:
        hc = model.heads[head]
        outs.append(heads.forward(cls[rows], model.params, head, hc.dropout, run.rng, run.train,
                                  run.ops.dropout))
    logits = [lg for lg, _ in outs]
    if not grad:
        return logits
    xp = get_xp(cls)
    loss, dcls, grads = 0.0, xp.zeros_like(cls), {}
    for (_, head, rows), (lg, head_cache) in zip(groups, outs):
        loss_op = mse if model.heads[head].regression else cross_entropy
        y = labels[rows] if loss_op is mse else labels[rows].astype(int)
        l, loss_cache = loss_op.forward(lg, y)
        loss = loss + l
        (dlg,) = loss_op.backward(1.0, loss_cache)
        dc, head_grads = heads.backward(dlg, head_cache, head, run.ops.dropout)
        dcls[rows] += dc
        grads.update(head_grads)
    if lowest is None:  # only heads train (probes): nothing below them owes a gradient
        return loss, logits, grads
    dh = xp.zeros(h.shape, cls.dtype)  # only [CLS] reaches the heads
    dh[:, 0] = dcls
    _, enc_grads = bert.encoder_backward(dh, enc_cache, run, lowest)
    grads.update(enc_grads)
    return loss, logits, grads


# --- parameter averaging ---------------------------------------------------------------------------
def average_adapter(model, name: str, adapters, weights=None, seed: int = 0):
    """A new adapter `name` whose every parameter is the weighted sum of those of `adapters`
    (AdapterHub's average_adapter, "linear": weights normalised to sum to 1). The adapters must
    have one shape and one architecture; heads are not averaged (add one, as AdapterHub does).
    Returns the new adapter's config."""
    from dataclasses import replace

    configs = []
    for a in adapters:
        if a not in model.adapters:
            raise ConfigError(f"average_adapter: no adapter {a!r} in this model "
                              f"(it holds {', '.join(sorted(model.adapters)) or 'none'})")
        configs.append(model.adapters[a])
    if not configs:
        raise ConfigError("average_adapter: no adapters to average")
    shape = lambda c: (c.bottleneck, c.non_linearity, c.architecture, c.train_layer_norms)  # noqa: E731
    for c in configs[1:]:
        if shape(c) != shape(configs[0]):
            raise ConfigError(f"average_adapter: {configs[0].name!r} and {c.name!r} differ "
                              f"(bottleneck, non-linearity, architecture, LayerNorms: "
                              f"{shape(configs[0])} against {shape(c)})")
    weights = [1.0] * len(configs) if weights is None else [float(w) for w in weights]
    if len(weights) != len(configs) or sum(weights) == 0:
        raise ConfigError(f"average_adapter: {len(weights)} weights for {len(configs)} adapters")
    weights = [w / sum(weights) for w in weights]
    c0 = configs[0]
    model.add_adapter(name, bottleneck=c0.bottleneck, non_linearity=c0.non_linearity, seed=seed,
                      train_layer_norms=c0.train_layer_norms, architecture=c0.architecture)
    averaged = {}
    for k in model.trainable_names(name):
        src = [k.replace(f".adapters.{name}.", f".adapters.{c.name}.") for c in configs]
        averaged[k] = sum(w * model.params[s] for w, s in zip(weights, src))
    model.put(averaged)
    return model.adapters[name]


# --- a task per row: what Model.logits and Model.loss_and_grads run for adapter=[...] ------------
def task_block(model, name, row=None):
    """What task `name` runs at the adapter sites: its adapter, its composition (a fusion task),
    or None (a probe: a head on the bare backbone)."""
    where = f"row {row}: " if row is not None else ""
    how = model.methods.get(name)
    if how is None:
        if name in model.heads:
            return None
        held = ", ".join(model.names()) or "none"
        raise ConfigError(f"{where}no task named {name!r} (this model holds: {held})")
    if hasattr(how.config, "site_forward"):  # a composition: fusion
        return how.config.block
    if how.method.run_field == "adapter" and not how.method.trains_backbone:
        return how.config
    if how.method.run_field is None and not how.method.trains_backbone:
        return None
    raise ConfigError(f"{where}task {name!r} adapts the backbone by {how.method.name}; a batch of "
                      "several tasks runs bottleneck adapters, their compositions and probes")


def task_groups(model, tasks, batch_size):
    """tasks: one task name per row -> [(task, block, rows)], tasks in order of first appearance."""
    tasks = list(tasks)
    if len(tasks) != batch_size:
        raise ConfigError(f"adapter=[...] names {len(tasks)} tasks for a batch of {batch_size} rows "
                          "(expected one per row)")
    rows = {}
    for r, t in enumerate(tasks):
        if not isinstance(t, str):
            raise ConfigError(f"row {r}: task {t!r} is not a name")
        if t not in rows:
            task_block(model, t, r)  # unknown tasks fail here, naming their first row
        rows.setdefault(t, []).append(r)
    return [(t, task_block(model, t), r) for t, r in rows.items()]


def logits_per_task(model, input_ids, attention_mask, token_type_ids, tasks):
    """Evaluation of a batch with one task per row: {task: logits (rows of that task, C_task)},
    each task's rows in batch order."""
    ids, mask, types = model.inputs(input_ids, attention_mask, token_type_ids)
    groups = task_groups(model, tasks, len(ids))
    logits = run_groups(model, ids, mask, types, [(b, t, r) for t, b, r in groups])
    return {t: lg for (t, _, _), lg in zip(groups, logits)}


def loss_and_grads_per_task(model, input_ids, attention_mask, token_type_ids, labels, tasks,
                            train=True, rng=None):
    """One step of several tasks: the loss is the sum of each task's mean loss over its rows, so
    each task's gradients are those of its rows run alone. Returns (loss, {task: logits}, grads)."""
    ids, mask, types, labels = model.inputs(input_ids, attention_mask, token_type_ids, labels)
    groups = task_groups(model, tasks, len(ids))
    lows = [model.lowest_trainable_layer(t) for t, _, _ in groups]
    lows = [x for x in lows if x is not None]
    loss, logits, grads = run_groups(model, ids, mask, types, [(b, t, r) for t, b, r in groups],
                                     labels, train=train, rng=(rng if rng is not None else model.rng),
                                     trainable=[model.trainable_names(t) for t, _, _ in groups],
                                     lowest=min(lows) if lows else None)
    return loss, {t: lg for (t, _, _), lg in zip(groups, logits)}, grads


def parallel_logits(model, input_ids, attention_mask, token_type_ids, tasks):
    """AdapterHub's Parallel: every text through each of `tasks`, in one forward over the batch
    repeated once per task. Returns {task: logits (B, C_task)}."""
    ids, mask, types = model.inputs(input_ids, attention_mask, token_type_ids)
    xp, n = get_xp(ids), len(tasks)
    if types is None:
        types = xp.zeros_like(ids)
    B = len(ids)
    groups = [(task_block(model, t), t, slice(j * B, (j + 1) * B)) for j, t in enumerate(tasks)]
    logits = run_groups(model, xp.concatenate([ids] * n), xp.concatenate([mask] * n),
                        xp.concatenate([types] * n), groups)
    return dict(zip(tasks, logits))


# --- looking inside ------------------------------------------------------------------------------
def fusion_attention(model, name, input_ids, attention_mask, token_type_ids=None) -> dict:
    """AdapterFusion's weights over the adapters at every site of fusion task `name`, in evaluation
    mode: {(layer, site): p (B, T, N)}, N in the order the task fuses them (AdapterHub's
    output_adapter_fusion_attentions)."""
    ids, mask, types = model.inputs(input_ids, attention_mask, token_type_ids)
    run = model._run(model.resolve(name), False, grad=False)
    _, cache = bert.encoder_forward(model.params, model.qkv, model.cfg, ids, mask, types, run)
    out = {}
    for i, layer in enumerate(cache.layers):
        for where, site in (("attention.output", layer.rest.site1), ("output", layer.rest.site2)):
            if site.reads != "composed":
                continue
            for _, c, _ in site.adapter.groups:
                if c is not None and c.kind == "fuse":
                    out[(i, where)] = c.parts[2].p
    return out
