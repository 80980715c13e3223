"""The committed notebooks are what lessons/_build.py makes from lessons/_src: edit a source and
forget to rebuild, and this fails (run `python lessons/_build.py`)."""
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
