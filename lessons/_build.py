"""Write the lesson notebooks from their Python sources, with empty outputs; optionally run them.

    python lessons/_build.py                      # lessons/_src/lNN_*.py -> lessons/NN_*.ipynb
    python lessons/_build.py --run                # ... then execute each (from lessons/), print times
    python lessons/_build.py --run --figures DIR  # ... and save each figure (PNG) and executed copy
    python lessons/_build.py --run 03             # only the lessons whose file name contains "03"

The .ipynb files are what readers open and what CI executes (`pytest --nbmake lessons`); they are
committed without outputs. Edit the sources, not the notebooks, and rebuild.
"""
from __future__ import annotations

import argparse
import base64
import copy
import importlib
import pathlib
import sys
import time

import nbformat

LESSONS = pathlib.Path(__file__).resolve().parent
SOURCES = {  # notebook file name -> source module in lessons/_src/
    "01_arrays_and_backends.ipynb": "l01_arrays_and_backends",
    "02_linear_gelu_layernorm.ipynb": "l02_linear_gelu_layernorm",
    "03_attention.ipynb": "l03_attention",
    "04_bert_encoder.ipynb": "l04_bert_encoder",
    "05_adapter.ipynb": "l05_adapter",
    "06_training_sst2.ipynb": "l06_training_sst2",
    "07_frozen_backbone.ipynb": "l07_frozen_backbone",
    "08_gpu_with_cupy.ipynb": "l08_gpu_with_cupy",
}


def build(name: str, module: str) -> nbformat.NotebookNode:
    sys.path.insert(0, str(LESSONS))
    src = importlib.import_module(f"_src.{module}")
    nb = nbformat.v4.new_notebook()
    nb.cells = copy.deepcopy(src.CELLS)  # shared cells (SETUP, WEIGHTS) must not carry one run's outputs
    nb.metadata = {
        "kernelspec": {"display_name": "Python 3", "language": "python", "name": "python3"},
        "language_info": {"name": "python"},
    }
    for i, cell in enumerate(nb.cells):  # stable ids: rebuilding an unchanged lesson changes nothing
        cell["id"] = f"{name[:2]}-{i:03d}"
    nbformat.validate(nb)
    return nb


def run(nb: nbformat.NotebookNode, figures: pathlib.Path | None, stem: str) -> float:
    from nbclient import NotebookClient

    t0 = time.perf_counter()
    NotebookClient(nb, timeout=600, kernel_name="python3",
                   resources={"metadata": {"path": str(LESSONS)}}).execute()
    seconds = time.perf_counter() - t0
    if figures is not None:
        figures.mkdir(parents=True, exist_ok=True)
        nbformat.write(nb, figures / f"{stem}.executed.ipynb")  # outputs kept, for reading
        n = 0
        for i, cell in enumerate(nb.cells):
            for out in cell.get("outputs", []):
                png = out.get("data", {}).get("image/png")
                if png:
                    n += 1
                    (figures / f"{stem}_cell{i:03d}_{n}.png").write_bytes(base64.b64decode(png))
    return seconds


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("only", nargs="*", help="build only notebooks whose name contains one of these")
    ap.add_argument("--run", action="store_true", help="execute each notebook after writing it")
    ap.add_argument("--figures", type=pathlib.Path, help="with --run: save figures here as PNG")
    args = ap.parse_args(argv)
    total = 0.0
    for name, module in SOURCES.items():
        if args.only and not any(o in name for o in args.only):
            continue
        nb = build(name, module)
        nbformat.write(nb, LESSONS / name)
        line = f"wrote {name}"
        if args.run:
            seconds = run(nb, args.figures, name.removesuffix(".ipynb"))
            total += seconds
            line += f"   ran in {seconds:5.1f} s"
        print(line, flush=True)
    if args.run:
        print(f"total {total:.1f} s")


if __name__ == "__main__":
    main()
