"""Write the lesson notebooks from their Python sources, with empty outputs; optionally run them.

    python lessons/_build.py                      # lessons/_src/lNN_*.py -> lessons/NN_*.ipynb
    python lessons/_build.py --run                # ... then execute each (from lessons/), print times
    python lessons/_build.py --run --figures DIR  # ... and save each figure (PNG) and executed copy
    python lessons/_build.py --run 03             # only the lessons whose file name contains "03"

The .ipynb files are what readers open and what CI executes (`pytest --nbmake lessons`); they are
committed without outputs. Edit the sources, not the notebooks, and rebuild.

Exercises: lessons/_src/eNN_*.py -> lessons/exercises/NN_*.ipynb, each marked region of a stub cell
(the solution, in the source) replaced by `raise NotImplementedError`. The solved version is never
written: tests/test_exercises.py builds it to fill the stubs, and `--run` executes it.
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
    "01_adapters_in_five_minutes.ipynb": "l01_adapters_in_five_minutes",
    "02_linear_gelu_layernorm.ipynb": "l02_linear_gelu_layernorm",
    "03_attention.ipynb": "l03_attention",
    "04_bert_encoder.ipynb": "l04_bert_encoder",
    "05_adapter.ipynb": "l05_adapter",
    "06_training_sst2.ipynb": "l06_training_sst2",
    "07_frozen_backbone.ipynb": "l07_frozen_backbone",
    "08_gpu_with_cupy.ipynb": "l08_gpu_with_cupy",
    "09_many_tasks.ipynb": "l09_many_tasks",
    "10_adapters_lora_full_probe.ipynb": "l10_alternatives",
}
EXERCISES = {  # exercise notebook, under lessons/ -> its source module in lessons/_src/
    "exercises/01_linear_gelu_layernorm.ipynb": "e01_linear_gelu_layernorm",
    "exercises/02_softmax_attention.ipynb": "e02_softmax_attention",
    "exercises/03_adapter_layer.ipynb": "e03_adapter_layer",
    "exercises/04_head_adamw.ipynb": "e04_head_adamw",
}


def build(name: str, module: str, solved: bool = False) -> nbformat.NotebookNode:
    """The notebook `name` from its source. An exercise (a name under exercises/) has its stubs
    unsolved unless solved=True."""
    sys.path.insert(0, str(LESSONS))
    src = importlib.import_module(f"_src.{module}")
    from _src.cells import YOUR_CODE, unsolved

    nb = nbformat.v4.new_notebook()
    nb.cells = copy.deepcopy(src.CELLS)  # shared cells (SETUP, WEIGHTS) must not carry one run's outputs
    if name in EXERCISES and not solved:
        for cell in nb.cells:
            if cell.cell_type == "code" and YOUR_CODE in cell.source:
                cell.source = unsolved(cell.source)
    nb.metadata = {
        "kernelspec": {"display_name": "Python 3", "language": "python", "name": "python3"},
        "language_info": {"name": "python"},
    }
    prefix = ("e" if name in EXERCISES else "") + pathlib.Path(name).name[:2]
    for i, cell in enumerate(nb.cells):  # stable ids: rebuilding an unchanged lesson changes nothing
        cell["id"] = f"{prefix}-{i:03d}"
    nbformat.validate(nb)
    return nb


def run(nb: nbformat.NotebookNode, figures: pathlib.Path | None, stem: str,
        where: pathlib.Path = LESSONS) -> float:
    from nbclient import NotebookClient

    t0 = time.perf_counter()
    NotebookClient(nb, timeout=600, kernel_name="python3",
                   resources={"metadata": {"path": str(where)}}).execute()
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
    for name, module in {**SOURCES, **EXERCISES}.items():
        if args.only and not any(o in name for o in args.only):
            continue
        nb = build(name, module)
        nbformat.write(nb, LESSONS / name)
        line = f"wrote {name}"
        if args.run:  # an exercise runs solved, from its own folder
            where = (LESSONS / name).parent
            stem = name.removesuffix(".ipynb").replace("/", "_")
            seconds = run(build(name, module, solved=True), args.figures, stem, where)
            total += seconds
            line += f"   ran in {seconds:5.1f} s"
        print(line, flush=True)
    if args.run:
        print(f"total {total:.1f} s")


if __name__ == "__main__":
    main()
