"""`pytest --nbmake lessons` executes the lessons; the exercise notebooks are left out, since their
stubs are unfilled on purpose. tests/test_exercises.py runs them filled: with the solutions, and
with typical mistakes that must be diagnosed.

Every notebook is marked `slow`, so the quick tier, `pytest -m "not slow"`, leaves them out; plain
`pytest` (the README's command, and CI) still executes them all."""
import pytest

collect_ignore = ["exercises"]


def pytest_collection_modifyitems(items):
    for item in items:
        if item.path.suffix == ".ipynb":
            item.add_marker(pytest.mark.slow)
