"""Reading a task's files: CSV, TSV and JSON Lines, into texts, optional pairs and labels.

Three formats, chosen by the task (for your own files, by the extension):

- **TSV** (`.tsv`): one example per line, fields separated by tabs, a header line naming the columns
  (unless the task lists the columns itself: GLUE's CoLA has no header). Quotes are *not* special
  (Python's `csv.QUOTE_NONE`): GLUE's sentences contain unbalanced quotes such as `" the film`, and a
  CSV reader would swallow lines until the next quote. A tab can therefore never occur in a field.
- **CSV** (`.csv`): RFC 4180 as spreadsheets write it, header first; a field in double quotes may
  hold commas, quotes (doubled: `""`) and line breaks. Line numbers in errors are those of the line
  where the example starts.
- **JSON Lines** (`.jsonl`): one JSON object per line (`{"text": "...", "label": "pos"}`); blank
  lines are skipped. A label may be a string or a number; a regression target must be a number
  (or a string holding one).

Every file must be UTF-8 (a byte-order mark and CRLF line ends are accepted). Anything wrong is a
`DataError` naming the file, the 1-based line, the column where it can, and what was expected.
Texts are stripped of surrounding white space (GLUE leaves a space before SST-2's tab) and must not
be empty.
"""
from __future__ import annotations

import csv
import io
import json
import math
from pathlib import Path
from typing import NamedTuple

import numpy as np

from minadapt.errors import DataError

FORMATS = {".csv": "csv", ".tsv": "tsv", ".jsonl": "jsonl"}


class Examples(NamedTuple):
    """One split of a task, N examples."""
    texts: list[str]  # N texts (the first text of a pair)
    pairs: list[str] | None  # N second texts, or None for a single-text task
    labels: np.ndarray  # (N,) int64 indices into Task.labels, or float64 targets for regression

    def head(self, n: int) -> "Examples":
        """The first n examples."""
        return Examples(self.texts[:n], None if self.pairs is None else self.pairs[:n], self.labels[:n])

    def where(self, mask) -> "Examples":
        """The examples where the boolean array `mask` (N,) is true, in file order."""
        idx = np.flatnonzero(mask)
        return Examples([self.texts[i] for i in idx],
                        None if self.pairs is None else [self.pairs[i] for i in idx], self.labels[idx])


def _shorten(value, limit: int = 60) -> str:
    """repr() of a value, cut to `limit` characters, for error messages."""
    text = value if isinstance(value, str) else json.dumps(value)
    return repr(text if len(text) <= limit else text[:limit] + "...")


def format_of(path: str | Path) -> str:
    """'csv', 'tsv' or 'jsonl' from a file name's extension; DataError for anything else."""
    suffix = Path(path).suffix.lower()
    if suffix not in FORMATS:
        raise DataError(f"{path}: cannot tell the format from the extension {suffix or '(none)'!r}; "
                        f"expected one of {', '.join(FORMATS)}")
    return FORMATS[suffix]


# --- bytes to text ---------------------------------------------------------------------------------
def read_text(path: Path) -> str:
    """The whole file as text, with a byte-order mark removed; DataError when it is missing, binary,
    compressed, not UTF-8 or empty."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise DataError(f"{path}: no such file") from None
    except OSError as e:
        raise DataError(f"{path}: cannot read: {e.strerror or e}") from None
    if raw.startswith(b"\x1f\x8b"):
        raise DataError(f"{path}:1: expected a text file, found gzip-compressed bytes "
                        f"(decompress it first: gunzip)")
    if raw.startswith(b"PK\x03\x04"):
        raise DataError(f"{path}:1: expected a text file, found a zip archive (unzip it first)")
    if b"\x00" in raw:
        at = raw.index(b"\x00")
        line = raw[:at].count(b"\n") + 1
        raise DataError(f"{path}:{line}: expected a text file, found a NUL byte: this is a binary "
                        f"file")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        line = raw[: e.start].count(b"\n") + 1
        column = e.start - (raw.rfind(b"\n", 0, e.start) + 1) + 1
        raise DataError(f"{path}:{line}:{column}: expected UTF-8 text, found the byte "
                        f"{raw[e.start:e.start + 1]!r} (re-save the file as UTF-8)") from None
    text = text.removeprefix("\ufeff")
    if not text.strip():
        raise DataError(f"{path}:1: expected a header or examples, found an empty file")
    return text


# --- text to rows ----------------------------------------------------------------------------------
def read_rows(path: str | Path, fmt: str, columns: tuple[str, ...] | None = None
              ) -> tuple[list[str], list[tuple[int, dict]]]:
    """Read a CSV, TSV or JSONL file into rows.

    Inputs:
    - path: the file
    - fmt: 'csv', 'tsv' or 'jsonl'
    - columns: for a CSV/TSV file without a header line, the names of its columns in order

    Returns a tuple of:
    - the column names: the header's, `columns`, or for JSONL those of the first object
    - a list of (line, row): the 1-based line where each example starts, and a dict column -> value
      (str for CSV and TSV; any JSON value for JSONL)
    """
    path = Path(path)
    text = read_text(path)
    if fmt == "jsonl":
        return _jsonl_rows(path, text)
    if fmt == "tsv":
        # Split on "\n" only: str.splitlines() would also split on \x1c or \u2028, which may sit
        # inside a sentence and would then shift every later line number.
        lines = text.split("\n")
        if lines[-1] == "":
            lines.pop()
        records = [(i + 1, line.removesuffix("\r").split("\t")) for i, line in enumerate(lines)]
        what = "tabs"
    elif fmt == "csv":
        records = _csv_records(path, text)
        what = "commas"
    else:
        raise ValueError(f"unknown format {fmt!r}; expected csv, tsv or jsonl")

    sep = "\t" if fmt == "tsv" else ","
    if columns is None:
        header_line, header = records[0]
        records = records[1:]
        if len(set(header)) != len(header) or any(not name.strip() for name in header):
            raise DataError(f"{path}:{header_line}: expected a header of distinct column names, "
                            f"found {_shorten(sep.join(header))}")
    else:
        header = list(columns)
    if not records:
        raise DataError(f"{path}:2: expected examples after the header, found none")
    rows = []
    for line, fields in records:
        if len(fields) != len(header):
            raise DataError(
                f"{path}:{line}: expected {len(header)} fields ({', '.join(header)}) separated by "
                f"{what}, found {len(fields)} in {_shorten(sep.join(fields))}")
        rows.append((line, dict(zip(header, fields))))
    return header, rows


def _csv_records(path: Path, text: str) -> list[tuple[int, list[str]]]:
    """(first line, fields) of each CSV record; a blank line between records is skipped."""
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    records = []
    end = 0  # the line the previous record ended on
    while True:
        try:
            fields = next(reader)
        except StopIteration:
            return records
        except csv.Error as e:
            raise DataError(f"{path}:{end + 1}: malformed CSV ({e}); a field holding commas, "
                            f"quotes or line breaks must be in double quotes, with each quote "
                            f"inside it doubled (\"\")") from None
        start, end = end + 1, reader.line_num
        if fields:
            records.append((start, fields))


def _jsonl_rows(path: Path, text: str) -> tuple[list[str], list[tuple[int, dict]]]:
    rows = []
    for i, line in enumerate(text.split("\n")):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as e:
            raise DataError(f"{path}:{i + 1}:{e.colno}: expected one JSON object per line: "
                            f"{e.msg}") from None
        if not isinstance(obj, dict):
            raise DataError(f"{path}:{i + 1}: expected a JSON object {{\"column\": value, ...}}, "
                            f"found {_shorten(obj)}")
        rows.append((i + 1, obj))
    return list(rows[0][1]), rows


# --- rows to examples ------------------------------------------------------------------------------
def check_columns(path, found: list[str], wanted: list[str]) -> None:
    """DataError naming the first of `wanted` that is not among the `found` columns."""
    for column in wanted:
        if column not in found:
            raise DataError(f"{path}:1: no column {column!r}; the columns found: "
                            f"{', '.join(map(repr, found))}")


def _text(path, line, row, column) -> str:
    if column not in row:  # only in JSONL, where each line has its own keys
        raise DataError(f"{path}:{line}: no key {column!r}; the keys found: "
                        f"{', '.join(map(repr, row))}")
    value = row[column]
    if not isinstance(value, str):
        raise DataError(f"{path}:{line}: column {column!r}: expected text (a string), "
                        f"found {_shorten(value)}")
    value = value.strip()
    if not value:
        raise DataError(f"{path}:{line}: column {column!r}: expected text, found nothing")
    return value


def label_string(path, line, row, column) -> str:
    """A class label as a string: JSON numbers 1 and 1.0 both give '1'."""
    if column not in row:
        raise DataError(f"{path}:{line}: no key {column!r}; the keys found: "
                        f"{', '.join(map(repr, row))}")
    value = row[column]
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise DataError(f"{path}:{line}: column {column!r}: expected a label (a string or a "
                        f"number), found {_shorten(value)}")
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    value = str(value).strip()
    if not value:
        raise DataError(f"{path}:{line}: column {column!r}: expected a label, found nothing")
    return value


def _target(path, line, row, column) -> float:
    if column not in row:
        raise DataError(f"{path}:{line}: no key {column!r}; the keys found: "
                        f"{', '.join(map(repr, row))}")
    value = row[column]
    try:
        if isinstance(value, bool):
            raise TypeError
        number = float(value.strip() if isinstance(value, str) else value)
    except (TypeError, ValueError):
        number = None
    if number is None or not math.isfinite(number):
        raise DataError(f"{path}:{line}: column {column!r}: expected a real number "
                        f"(a regression target), found {_shorten(value)}")
    return number


def read_examples(task, path: str | Path) -> Examples:
    """Read one split file of `task` (a `minadapt.tasks.Task`) into Examples."""
    header, rows = read_rows(path, task.format, task.columns)
    wanted = [task.text_column] + ([task.text_pair_column] if task.text_pair_column else [])
    if task.format != "jsonl":
        check_columns(path, header, wanted + [task.label_column])
    texts = [_text(path, line, row, task.text_column) for line, row in rows]
    pairs = None
    if task.text_pair_column:
        pairs = [_text(path, line, row, task.text_pair_column) for line, row in rows]
    if task.regression:
        labels = np.array([_target(path, line, row, task.label_column) for line, row in rows],
                          dtype=np.float64)
        return Examples(texts, pairs, labels)
    index = {label: i for i, label in enumerate(task.labels)}
    labels = np.empty(len(rows), dtype=np.int64)
    for k, (line, row) in enumerate(rows):
        label = label_string(path, line, row, task.label_column)
        if label not in index:
            known = ", ".join(map(repr, task.labels))
            where = f" (collected from {task.files[0][1]})" if task.folder is None else ""
            raise DataError(f"{path}:{line}: column {task.label_column!r}: the label "
                            f"{_shorten(label)} is not one of the task's labels{where}: {known}")
        labels[k] = index[label]
    return Examples(texts, pairs, labels)


def collect_labels(path: str | Path, fmt: str, label_column: str) -> tuple[str, ...]:
    """The distinct labels of a file's label column, sorted: as numbers when they all are integers
    (so '2' comes before '10'), else as strings. Sorted, not in order of appearance, so the same
    labels always get the same indices whatever the order of the rows."""
    header, rows = read_rows(path, fmt)
    if fmt != "jsonl":
        check_columns(path, header, [label_column])
    labels = {label_string(path, line, row, label_column) for line, row in rows}
    if all(_is_int(label) for label in labels):
        return tuple(sorted(labels, key=int))
    return tuple(sorted(labels))


def _is_int(text: str) -> bool:
    try:
        int(text)
    except ValueError:
        return False
    return True
