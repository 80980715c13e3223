"""Write the lesson notebooks from their Python sources, with empty outputs; optionally run them.

    python lessons/_build.py                      # lessons/_src/lNN_*.py -> lessons/NN_*.ipynb
    python lessons/_build.py --run                # ... then execute each (from lessons/), keep its
                                                  #     outputs in the notebook, print times
    python lessons/_build.py --run --figures DIR  # ... and save each figure as a PNG too
    python lessons/_build.py --run 03             # only the lessons whose file name contains "03"

The .ipynb files are what readers open and what CI executes (`pytest --nbmake lessons`). A lesson
is committed with the outputs of one run top to bottom, so that a reader browsing the repository
sees its tables and figures: edit the source, then rebuild with --run. Without --run a notebook
keeps its outputs only while no code cell changed (markdown edits keep them); otherwise they are
dropped, since they would no longer be what the code prints, and tests/test_lessons_sync.py says
which lesson to run.

Exercises: lessons/_src/eNN_*.py -> lessons/exercises/NN_*.ipynb, each marked region of a stub cell
(the solution, in the source) replaced by `raise NotImplementedError`. The solved version is never
written: tests/test_exercises.py builds it to fill the stubs, and `--run` executes it. Exercises
are committed without outputs: they are the learner's to run.
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
    "00_bert_primer.ipynb": "l00_bert_primer",
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
    "11_prompt_prefix_ia3.ipynb": "l11_family",
    "12_composing_adapters.ipynb": "l12_composition",
    "appendix_a_fast_ops.ipynb": "a1_fast_ops",  # optional: the speed material of lesson 2
}
EXERCISES = {  # exercise notebook, under lessons/ -> its source module in lessons/_src/
    "exercises/01_linear_gelu_layernorm.ipynb": "e01_linear_gelu_layernorm",
    "exercises/02_softmax_attention.ipynb": "e02_softmax_attention",
    "exercises/03_adapter_layer.ipynb": "e03_adapter_layer",
    "exercises/04_head_adamw.ipynb": "e04_head_adamw",
    "exercises/05_prefix_gradient.ipynb": "e05_prefix_gradient",
    "exercises/06_embedding_lora.ipynb": "e06_embedding_lora",
    "exercises/07_capstone_your_ops_train_bert.ipynb": "e07_capstone",
}
SOLVED = LESSONS / "exercises" / ".solved"  # where the exercises run solved (ignored by git)


def solved_folder() -> pathlib.Path:
    """Write every exercise, solved, into exercises/.solved/ and return that folder: an exercise runs
    solved from there, so the capstone's `%run 01_...ipynb` finds the solved siblings."""
    SOLVED.mkdir(exist_ok=True)
    for name, module in EXERCISES.items():
        nbformat.write(build(name, module, solved=True), SOLVED / pathlib.Path(name).name)
    return SOLVED


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


def code_of(nb) -> list[str]:
    return [c.source for c in nb.cells if c.cell_type == "code"]


def keep_outputs(nb: nbformat.NotebookNode, path: pathlib.Path) -> bool:
    """Copy the outputs of the notebook at `path` into `nb` (built from the source) when its code
    cells are unchanged, so that a markdown edit needs no rerun. Returns whether it did."""
    if not path.exists():
        return False
    old = nbformat.read(path, as_version=4)
    if code_of(old) != code_of(nb):
        return False
    olds = iter(c for c in old.cells if c.cell_type == "code")
    for cell in nb.cells:
        if cell.cell_type == "code":
            was = next(olds)
            cell.outputs, cell.execution_count = was.outputs, was.execution_count
    return True


def run(nb: nbformat.NotebookNode, figures: pathlib.Path | None, stem: str,
        where: pathlib.Path = LESSONS, timeout: int = 600) -> float:
    """Execute `nb` in a kernel from the folder `where`, keeping its outputs; `timeout` seconds per
    cell. Returns the seconds it took."""
    from nbclient import NotebookClient

    metadata = copy.deepcopy(nb.metadata)
    t0 = time.perf_counter()
    NotebookClient(nb, timeout=timeout, kernel_name="python3", record_timing=False,
                   resources={"metadata": {"path": str(where)}}).execute()
    seconds = time.perf_counter() - t0
    nb.metadata = metadata  # the kernel's version details would change the file on every run
    if figures is not None:
        figures.mkdir(parents=True, exist_ok=True)
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
        line = f"wrote {name}"
        if args.run:  # an exercise runs solved, beside its solved siblings, and is written unsolved
            where = solved_folder() if name in EXERCISES else LESSONS
            stem = name.removesuffix(".ipynb").replace("/", "_")
            executed = build(name, module, solved=True)
            seconds = run(executed, args.figures, stem, where, timeout=3600 if name in EXERCISES else 600)
            if name in SOURCES:
                nb = executed
            total += seconds
            line += f"   ran in {seconds:5.1f} s"
        elif name in SOURCES:
            kept = keep_outputs(nb, LESSONS / name)
            line += "   (outputs kept)" if kept else "   (no outputs: run it with --run)"
        nbformat.write(nb, LESSONS / name)
        print(line, flush=True)
    if args.run:
        print(f"total {total:.1f} s")


if __name__ == "__main__":
    main()
