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
  3. `<cache>/sst2` (see `minadapt.hub.default_cache_dir`), downloaded from GLUE when missing.
A place that was named explicitly (1 or 2) and lacks the files is an error, not a reason to look
further: a typo in a path should not quietly start a download somewhere else.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from minadapt.errors import DataError, MinadaptError

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
    `default_cache_dir()/sst2`, which `minadapt.hub.fetch_sst2` fills from GLUE when it is missing and
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

    from minadapt import hub  # lazily: reading local files needs no network code

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


# --- batching --------------------------------------------------------------------------------------
def bucketed_batches(
    lengths: np.ndarray, batch_size: int, rng: np.random.Generator, pool_batches: int = 200
) -> list[np.ndarray]:
    """One epoch of training batches: similar lengths inside a batch, random order between them.

    Each batch is padded to its longest row, and the encoder's cost grows with that padded length
    (linearly in the dense layers, quadratically in attention). A random batch of SST-2 (sentence
    lengths 3 to ~60 tokens) is mostly padding; sorting the whole set by length would remove it but
    makes every batch's content predictable and the epoch a march from short to long sentences.
    The middle way, as in fairseq and AllenNLP's bucket iterators:

      1. shuffle all indices;
      2. cut them into pools of `pool_batches * batch_size`;
      3. sort each pool by length and cut it into batches of `batch_size`;
      4. shuffle the list of batches.

    Inputs:
    - lengths: int array of shape (N,), the length of each example (tokens, or any proxy for them)
    - batch_size: rows per batch; only the last batch of the last pool may be smaller
    - rng: the generator that draws both shuffles; the same state gives the same batches
    - pool_batches: batches per pool: 1 is a plain random split, N/batch_size a global sort. The
      larger the pool, the closer neighbours in length are, so the less padding: on SST-2's
      training set (batch 32) 4.6% of the tokens a step computes are padding with pools of 50
      batches, 2.4% with 100, 1.25% with 200 (the default: ~10 pools an epoch, each of 6,400
      sentences drawn at random) and 0.7% with 400

    Returns a list of int arrays of indices into `lengths`; together they hold each index once.
    """
    lengths = np.asarray(lengths)
    if lengths.ndim != 1:
        raise ValueError(f"lengths must be 1-D, got shape {lengths.shape}")
    if batch_size < 1 or pool_batches < 1:
        raise ValueError(f"batch_size and pool_batches must be >= 1, got {batch_size}, {pool_batches}")
    perm = rng.permutation(len(lengths))
    pool_size = pool_batches * batch_size
    batches = []
    for start in range(0, len(perm), pool_size):
        pool = perm[start : start + pool_size]
        pool = pool[np.argsort(lengths[pool], kind="stable")]  # short to long
        batches.extend(pool[i : i + batch_size] for i in range(0, len(pool), batch_size))
    order = rng.permutation(len(batches))
    return [batches[i] for i in order]


def sequential_batches(n: int, batch_size: int, lengths: np.ndarray | None = None) -> list[np.ndarray]:
    """Batches for evaluation: every index in 0..n-1 once, in a fixed order.

    Without `lengths`, in order: [0..b-1], [b..2b-1], ... With `lengths` (shape (n,)), the indices are
    sorted by length first, so each batch pads little (the same saving as `bucketed_batches`, with
    no randomness). Either way each batch is an array of indices, so a caller puts results back in
    place with `out[idx] = batch_result`.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if lengths is None:
        order = np.arange(n)
    else:
        lengths = np.asarray(lengths)
        if lengths.shape != (n,):
            raise ValueError(f"lengths must have shape ({n},), got {lengths.shape}")
        order = np.argsort(lengths, kind="stable")
    return [order[i : i + batch_size] for i in range(0, n, batch_size)]
