"""compare.png, two panels with one marker and colour per method (in the order of
minadapt.methods.METHODS), each point a configuration's mean dev metric over its seeds with an
error bar of one standard deviation:
    left   against trainable parameters (log scale), a vertical line at 1% of the backbone's;
    right  against training time (seconds in train steps, mean over seeds): what depth buys.
A method's width sweep is a line through its points, each labelled by its swept value; its depth
sweep (adapters in the top K layers) a dashed line, labelled "top K", that ends at the same width in
every layer. The TF-IDF baseline, when
there is one, is a horizontal grey line in both. A bare Figure (no pyplot): no display is needed."""
from __future__ import annotations

import io
from itertools import cycle

from .io.weights import atomic_write

COLOURS = ("tab:gray", "tab:blue", "tab:green", "tab:orange", "tab:red", "tab:purple", "tab:brown",
           "tab:pink", "tab:olive", "tab:cyan")
MARKERS = ("o", "s", "^", "D", "*", "v", "P", "X", "h", "<")


def style() -> dict:
    """method -> (colour, marker, label prefix of a point's swept value, e.g. "r=")."""
    from .methods import METHODS

    out = {}
    for m, colour, marker in zip(METHODS.values(), cycle(COLOURS), cycle(MARKERS)):
        field = m.sweep[0] if m.sweep else ""
        out[m.name] = (colour, marker, (field if len(field) <= 2 else field[0]) + "=" if field else "")
    return out


def _panel(ax, rows, x_key, scale):
    for method, (colour, marker, prefix) in style().items():
        mine = [r for r in rows if r["method"] == method]
        if not mine:
            continue
        full_depth = sorted((r for r in mine if r.get("layers") is None), key=lambda r: r["trainable_params"])
        depth = [r for r in mine if r.get("layers") is not None]
        if depth:  # the dashed line ends at the same width in every layer (its own label already)
            depth += [r for r in full_depth if r["size"] == depth[0]["size"]]
        depth = sorted(depth, key=lambda r: r[x_key])
        for group, line, label in ((full_depth, "-", method), (depth, "--", None)):
            if not group:
                continue
            x = [r[x_key] for r in group]
            y = [scale * r["dev_score"] for r in group]
            ax.errorbar(x, y, yerr=[scale * r.get("dev_std", 0.0) for r in group], marker=marker,
                        color=colour, linestyle=line if len(group) > 1 else "none", capsize=3,
                        markersize=11 if marker == "*" else 7, label=label)
            for r, xi, yi in zip(group, x, y):
                if group is depth and r.get("layers") is None:
                    continue  # labelled by its width, as a point of the width sweep
                text = f"top {r['layers']}" if r.get("layers") is not None else (
                    f"{prefix}{r['size']}" if r["size"] is not None else "")
                if text:
                    ax.annotate(text, (xi, yi), textcoords="offset points", xytext=(4, 6),
                                fontsize=8, color=colour)


def plot(rows: list[dict], header: dict, path, baseline: dict | None = None):
    from matplotlib.figure import Figure
    from matplotlib.ticker import NullFormatter

    from .compare import describe_settings

    metric = rows[0]["dev_metric"]
    scale = 1 if metric in ("pearson", "spearman", "matthews") else 100
    fig = Figure(figsize=(13, 5.5))
    left, right = fig.subplots(1, 2, sharey=True)
    _panel(left, rows, "trainable_params", scale)
    _panel(right, rows, "train_s", scale)
    one_percent = header["backbone_params"] / 100
    left.axvline(one_percent, color="black", linestyle=":", linewidth=1)
    left.annotate("1% of the backbone", (one_percent, 0.02), xycoords=("data", "axes fraction"),
                  xytext=(4, 0), textcoords="offset points", fontsize=8)
    left.set_xlabel("trainable parameters (the method's + the head's; full: the whole model + head)")
    right.set_xlabel("training time, s (train steps only; mean over seeds)")
    for ax in (left, right):
        ax.set_xscale("log")
        ax.xaxis.set_minor_formatter(NullFormatter())  # powers of ten only: a narrow range stays legible
        ax.grid(True, which="major", alpha=0.3)
        if baseline:
            ax.axhline(scale * baseline["dev_score"], color="grey", linestyle="-.", linewidth=1,
                       label=f"TF-IDF + logistic regression")
    left.set_ylabel(f"dev {metric}" + (" (%)" if scale == 100 else "") + ", mean ± std over seeds")
    left.legend(loc="best", fontsize=8)
    fig.suptitle(f"{header['task']}: {describe_settings(header)}", fontsize=9)
    fig.tight_layout()
    png = io.BytesIO()  # written whole or not at all: a full disk leaves the last plot
    fig.savefig(png, format="png", dpi=100)
    atomic_write(path, png.getvalue())
    return path
