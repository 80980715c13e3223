"""`pytest --nbmake lessons` executes the lessons; the exercise notebooks are left out, since their
stubs are unfilled on purpose. tests/test_exercises.py runs them filled: with the solutions, and
with typical mistakes that must be diagnosed."""
collect_ignore = ["exercises"]
