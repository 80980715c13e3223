"""SST-2 (GLUE): find it, read it, and cut it into batches.

GLUE ships SST-2 as two TSV files, `train.tsv` (67,349 rows) and `dev.tsv` (872 rows):

    sentence<TAB>label
    it 's a charming and often affecting journey . <TAB>1
    unflinchingly bleak and desperate <TAB>0

Sentences are lower-cased and PTB-tokenised, with a trailing space before the tab (dropped here);
labels are 0 (negative) or 1 (positive). GLUE's test split has no labels and is not used.

Where the files are looked for (`find_sst2`), in order:
  1. the `data_dir` argument (the CLI's `--data-dir`);
  2. `$MINADAPT_DATA/sst2`, when the environment variable is set;
  3. `<cache>/sst2` (see `minadapt.io.hub.default_cache_dir`), downloaded from GLUE when missing.
A place that was named explicitly (1 or 2) and lacks the files is an error, not a reason to look
further: a typo in a path should not quietly start a download somewhere else.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from minadapt.errors import DataError, MinadaptError
from minadapt.tasks.batching import bucketed_batches, sequential_batches  # noqa: F401 (lessons import them here)

HEADER = "sentence\tlabel"
FILES = ("train.tsv", "dev.tsv")
LABEL_NAMES = ("negative", "positive")  # label 0, label 1: what an adapter trained here predicts
ENV_VAR = "MINADAPT_DATA"


# --- reading ---------------------------------------------------------------------------------------
def _shorten(text: str, limit: int = 60) -> str:
    """repr() of `text`, cut to `limit` characters, for error messages."""
    return repr(text if len(text) <= limit else text[:limit] + "...")


def read_tsv(path: str | Path) -> tuple[list[str], np.ndarray]:
    """Read one GLUE SST-2 TSV file.

    Inputs:
    - path: a file whose first line is `sentence<TAB>label`, then one `sentence<TAB>label` per line.

    Returns a tuple of:
    - sentences: list of N str, with the space GLUE leaves before the tab stripped
    - labels: int64 array of shape (N,), each 0 or 1

    Raises DataError naming the file, the 1-based line and what was expected and found, for: a
    missing file, a file that is not UTF-8, an empty file, a wrong header, a line without exactly one
    tab, an empty sentence, a label other than 0 or 1, a file with a header and no examples.
    Accepts CRLF line ends and a UTF-8 byte-order mark (what spreadsheet programs write).
    """
    path = Path(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise DataError(f"{path}: no such file (expected a GLUE SST-2 TSV file)") from None
    except OSError as e:
        raise DataError(f"{path}: cannot read: {e.strerror or e}") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        line = raw[: e.start].count(b"\n") + 1
        raise DataError(
            f"{path}:{line}: expected UTF-8 text, found the byte {raw[e.start:e.start + 1]!r} "
            f"(re-save the file as UTF-8)"
        ) from None
    if not text.strip():
        raise DataError(f"{path}:1: expected the header {HEADER!r}, found an empty file")
    text = text.removeprefix("\ufeff")

    # Split on "\n" only: str.splitlines() would also split on characters such as \x1c or \u2028,
    # which may sit inside a sentence and would then shift every later line number.
    lines = text.split("\n")
    if lines[-1] == "":  # the newline that ends the last line
        lines.pop()
    lines = [line.removesuffix("\r") for line in lines]

    if lines[0] != HEADER:
        raise DataError(f"{path}:1: expected the header {HEADER!r}, found {_shorten(lines[0])}")
    if len(lines) == 1:
        raise DataError(f"{path}:2: expected examples after the header, found none")

    sentences: list[str] = []
    labels = np.empty(len(lines) - 1, dtype=np.int64)
    for i, line in enumerate(lines[1:]):
        lineno = i + 2
        n_tabs = line.count("\t")
        if n_tabs != 1:
            raise DataError(
                f"{path}:{lineno}: expected 'sentence<TAB>label' (one tab), "
                f"found {n_tabs} tabs in {_shorten(line)}"
            )
        sentence, label = line.split("\t")
        sentence = sentence.rstrip()
        if not sentence:
            raise DataError(f"{path}:{lineno}: expected a sentence before the tab, found nothing")
        if label not in ("0", "1"):
            raise DataError(f"{path}:{lineno}: expected the label 0 or 1, found {_shorten(label)}")
        sentences.append(sentence)
        labels[i] = int(label)
    return sentences, labels


# --- finding ---------------------------------------------------------------------------------------
def _missing(folder: Path) -> list[str]:
    """The names in FILES that `folder` lacks (all of them when it is not a folder)."""
    return [name for name in FILES if not (folder / name).is_file()]


def _not_found(looked: list[tuple[Path, list[str]]], why: str = "") -> DataError:
    """A DataError listing every place looked (and what each lacked) and the ways to fix it."""
    places = "\n".join(f"  - {folder}  (lacks {', '.join(lacks)})" for folder, lacks in looked)
    return DataError(
        f"SST-2 not found{why}. Looked in:\n{places}\n"
        f"Fix it in one of these ways:\n"
        f"  - pass --data-dir DIR (data_dir=DIR), a folder holding train.tsv and dev.tsv;\n"
        f"  - set {ENV_VAR}=DIR so that DIR/sst2 holds them;\n"
        f"  - download GLUE's SST-2.zip and unzip train.tsv and dev.tsv into one of these folders;\n"
        f"  - or, with neither of the first two set, let minadapt download it into its cache "
        f"(download=True; needs internet)."
    )


def find_sst2(data_dir: str | Path | None = None, download: bool = True) -> Path:
    """The folder holding SST-2's train.tsv and dev.tsv.

    Looks, in order, in `data_dir`; else `$MINADAPT_DATA/sst2` when MINADAPT_DATA is set; else
    `default_cache_dir()/sst2`, which `minadapt.io.hub.fetch_sst2` fills from GLUE when it is missing and
    `download` is true. `data_dir` may also be the folder *above* the data: `DIR/sst2` and `DIR/SST-2`
    (the name inside GLUE's zip) are tried too.

    Raises DataError listing every place looked and how to fix it when the files are not found (or
    the download fails).
    """
    looked: list[tuple[Path, list[str]]] = []

    def first_complete(candidates: list[Path]) -> Path | None:
        for folder in candidates:
            lacks = _missing(folder)
            if not lacks:
                return folder
            looked.append((folder, lacks))
        return None

    if data_dir is not None:
        base = Path(data_dir).expanduser()
        found = first_complete([base, base / "sst2", base / "SST-2"])
        if found is None:
            raise _not_found(looked, f" in data_dir {str(base)!r}")
        return found

    env = os.environ.get(ENV_VAR)
    if env:
        found = first_complete([Path(env).expanduser() / "sst2"])
        if found is None:
            where = f" under ${ENV_VAR}={env}"
            if not Path(env).expanduser().is_absolute():  # read from *this* process's directory,
                # which for a notebook (pytest runs them in lessons/) is not the shell's
                where += (f", a relative path, read from {Path.cwd()}; an absolute one works "
                          "from anywhere")
            raise _not_found(looked, where)
        return found

    from minadapt.io import hub  # lazily: reading local files needs no network code

    cache = hub.default_cache_dir() / "sst2"
    found = first_complete([cache])
    if found is not None:
        return found
    if not download:
        raise _not_found(looked, " (and downloading is off)")
    try:
        folder = Path(hub.fetch_sst2(cache))
    except (OSError, MinadaptError, hub.DownloadError) as e:  # no network, a bad zip, ...
        raise _not_found(looked, f", and downloading it failed: {e}") from e
    lacks = _missing(folder)
    if lacks:
        looked.append((folder, lacks))
        raise _not_found(looked, ": the download did not produce the files")
    return folder


def load_sst2(
    data_dir: str | Path | None = None, download: bool = True
) -> dict[str, tuple[list[str], np.ndarray]]:
    """{"train": (sentences, labels), "dev": (sentences, labels)}, found as `find_sst2` does."""
    folder = find_sst2(data_dir, download=download)
    return {"train": read_tsv(folder / "train.tsv"), "dev": read_tsv(folder / "dev.tsv")}
