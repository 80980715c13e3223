"""The committed notebooks are what lessons/_build.py makes from lessons/_src: edit a source and
forget to rebuild, and this fails (run `python lessons/_build.py --run NN`). The lessons carry the
outputs of one run, so that a reader browsing the repository sees every figure; the exercises none."""
import importlib.util
from pathlib import Path

import nbformat
import pytest

LESSONS = Path(__file__).resolve().parents[1] / "lessons"
spec = importlib.util.spec_from_file_location("lessons_build", LESSONS / "_build.py")
_build = importlib.util.module_from_spec(spec)
spec.loader.exec_module(_build)


SOURCES = {**_build.SOURCES, **_build.EXERCISES}  # the lessons and the (unsolved) exercises


@pytest.mark.parametrize("name", sorted(SOURCES))
def test_notebook_matches_its_source(name):
    built = _build.build(name, SOURCES[name])
    committed = nbformat.read(LESSONS / name, as_version=4)
    assert [(c.cell_type, c.source) for c in committed.cells] == \
        [(c.cell_type, c.source) for c in built.cells], f"{name} is stale: run python lessons/_build.py"


@pytest.mark.parametrize("name", sorted(_build.SOURCES))
def test_lesson_is_committed_with_the_outputs_of_one_run(name):
    """A reader browsing lessons/ sees what each lesson prints and draws: every code cell ran, in
    order, in one kernel (execution counts 1, 2, 3, ...), and none ended in an error."""
    committed = nbformat.read(LESSONS / name, as_version=4)
    code = [c for c in committed.cells if c.cell_type == "code"]
    counts = [c.execution_count for c in code]
    assert counts == list(range(1, len(code) + 1)), \
        f"{name} has no outputs of a whole run: run python lessons/_build.py --run {name[:2]}"
    errors = [o for c in code for o in c.outputs if o.output_type == "error"]
    assert not errors, f"{name} was committed with an error: {errors[0].ename}"


@pytest.mark.parametrize("name", sorted(_build.EXERCISES))
def test_exercise_is_committed_without_outputs(name):
    """An exercise is the learner's to run: no outputs (they would show NotImplementedError)."""
    committed = nbformat.read(LESSONS / name, as_version=4)
    assert all(not c.outputs and c.execution_count is None
               for c in committed.cells if c.cell_type == "code"), name
