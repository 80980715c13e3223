"""compare.png: each run's dev metric against its trainable parameters (log scale), one marker and
colour per method (in the order of minadapt.methods.METHODS); a method's sweep as a line through its
points, each point labelled by its swept value; a vertical line at 1% of the backbone's parameters.
A bare Figure (no pyplot): no display is needed."""
from __future__ import annotations

from itertools import cycle

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


def plot(rows: list[dict], header: dict, path):
    from matplotlib.figure import Figure
    from matplotlib.ticker import NullFormatter

    metric = rows[0]["dev_metric"]
    scale = 1 if metric in ("pearson", "spearman", "matthews") else 100
    fig = Figure(figsize=(8, 5))
    ax = fig.subplots()
    for method, (colour, marker, prefix) in style().items():
        mine = sorted((r for r in rows if r["method"] == method), key=lambda r: r["trainable_params"])
        if not mine:
            continue
        x = [r["trainable_params"] for r in mine]
        y = [scale * r["dev_score"] for r in mine]
        ax.plot(x, y, marker=marker, color=colour, linestyle="-" if len(mine) > 1 else "none",
                markersize=11 if marker == "*" else 7, label=method)
        for r, xi, yi in zip(mine, x, y):
            if r["size"] is not None:
                ax.annotate(f"{prefix}{r['size']}", (xi, yi), textcoords="offset points",
                            xytext=(4, 6), fontsize=8, color=colour)
    one_percent = header["backbone_params"] / 100
    ax.axvline(one_percent, color="black", linestyle=":", linewidth=1)
    ax.annotate("1% of the backbone", (one_percent, 0.02), xycoords=("data", "axes fraction"),
                xytext=(4, 0), textcoords="offset points", fontsize=8)
    ax.set_xscale("log")
    ax.xaxis.set_minor_formatter(NullFormatter())  # powers of ten only: a narrow range stays legible
    ax.set_xlabel("trainable parameters (the method's + the head's; full: the whole model + head)")
    ax.set_ylabel(f"dev {metric}" + (" (%)" if scale == 100 else ""))
    s = header["settings"]
    ax.set_title(f"{header['task']}: {s['steps']} steps of batch {s['batch_size']}, max length "
                 f"{s['max_length']}, seed {s['seed']}", fontsize=10)
    ax.grid(True, which="major", alpha=0.3)
    ax.legend(loc="best", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    return path
