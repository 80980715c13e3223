"""Cell constructors shared by the lesson sources, and the cells every lesson starts with."""
import textwrap

import nbformat.v4 as nbf


def md(text: str):
    """A markdown cell (the text is dedented and stripped)."""
    return nbf.new_markdown_cell(textwrap.dedent(text).strip("\n"))


def code(text: str):
    """A code cell with no outputs (the text is dedented and stripped)."""
    return nbf.new_code_cell(textwrap.dedent(text).strip("\n"))


# Every lesson runs with lessons/ as its working directory (that is what nbmake does); this finds
# the repository root from there, or from anywhere below it, and imports minadapt from it.
SETUP = code('''
    # Setup: find the repository root (the folder holding pyproject.toml) and import from it.
    import pathlib
    import sys

    ROOT = pathlib.Path.cwd().resolve()
    while not (ROOT / "pyproject.toml").is_file():
        if ROOT == ROOT.parent:
            raise RuntimeError("run this notebook from inside the minadapt repository")
        ROOT = ROOT.parent
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))

    import matplotlib.pyplot as plt
    import numpy as np

    %matplotlib inline
    plt.rcParams["figure.dpi"] = 100
    np.set_printoptions(precision=4, suppress=False, linewidth=110)
''')

WEIGHTS = code('''
    # The pretrained checkpoint: weights/all-MiniLM-L6-v2 under the repository root.
    # ensure_checkpoint downloads it (about 90 MB, once) when it is not there yet.
    from minadapt.io.hub import ensure_checkpoint

    WEIGHTS = ROOT / "weights" / "all-MiniLM-L6-v2"
    if not (WEIGHTS / "model.safetensors").is_file():
        WEIGHTS = ensure_checkpoint(weights_dir=ROOT / "weights")
    print(WEIGHTS.relative_to(ROOT), sorted(p.name for p in WEIGHTS.iterdir()))
''')


# --- exercises: a stub cell holds the solution between these two lines; the exercise notebook
# has `raise NotImplementedError` there instead (lessons/_build.py, `unsolved`).
YOUR_CODE = "# ---- your code ----"
END_OF_YOUR_CODE = "# ---- end of your code ----"


def stub(text: str):
    """A code cell whose marked regions are what the learner writes (the solution, in the source)."""
    cell = code(text)
    assert YOUR_CODE in cell.source, "a stub cell needs at least one marked region"
    return cell


def unsolved(source: str) -> str:
    """The exercise version of a cell: each marked region's lines become one
    `raise NotImplementedError("<function>: ...")`, named after the function it sits in."""
    out, inside, function = [], False, "this cell"
    for line in source.split("\n"):
        stripped = line.strip()
        if stripped.startswith("def "):
            function = stripped[4:].split("(")[0]
        if stripped == YOUR_CODE:
            inside = True
            indent = line[: len(line) - len(line.lstrip())]
            out += [line, f'{indent}raise NotImplementedError("{function}: write it here")']
        elif stripped == END_OF_YOUR_CODE:
            inside = False
            out.append(line)
        elif not inside:
            out.append(line)
    assert not inside, "a marked region is not closed"
    return "\n".join(out)


# Lessons 7 and 8 read committed benchmark reports (benchmarks/results/*.json) and show each with
# the command that made it.
BENCH_COMMAND = code('''
    def bench_command(report):
        """The settings a benchmark report records (its "config"), written as the command line."""
        c = report["config"]
        flags = [("--device", c.get("device")), ("--compare", c.get("compare")), ("--ops", c.get("ops")),
                 ("--lengths", ",".join(map(str, c["lengths"]))), ("--batch-size", c["batch_size"]),
                 ("--warmup", c["warmup"]), ("--steps", c["steps"]), ("--rounds", c.get("rounds")),
                 ("--threads", c.get("threads"))]
        return "minadapt bench " + " ".join(f"{k} {v}" for k, v in flags if v is not None)
''')
