"""Finding a task's files (or downloading them) and loading its splits.

Where a built-in task's files are looked for (`find_task_data`), in order, as for SST-2:
  1. the `data_dir` argument (the CLI's `--data-dir`): that folder, or its sub-folder named after
     the task (`sst2`) or as in GLUE's zip (`SST-2`);
  2. `$MINADAPT_DATA/<task>` (e.g. `$MINADAPT_DATA/cola`), when the environment variable is set;
  3. `<cache>/<task>` (see `minadapt.io.hub.default_cache_dir`), downloaded when missing, for the tasks
     that say where from (GLUE's).
A place named explicitly (1 or 2) that lacks the files is an error, not a reason to look further.
Tasks made from your own files (`task_from_files`) are read from the paths they hold.
"""
from __future__ import annotations

import hashlib
import os
import zipfile
from pathlib import Path

import numpy as np

from minadapt.errors import DataError, MinadaptError
from minadapt.tasks.metrics import score
from minadapt.tasks.read import Examples, read_examples
from minadapt.tasks.task import Task, get_task

ENV_VAR = "MINADAPT_DATA"


def _task(task: str | Task) -> Task:
    return get_task(task) if isinstance(task, str) else task


def _missing(task: Task, folder: Path) -> list[str]:
    return [f for _, f in task.files if not (folder / f).is_file()]


def _not_found(task: Task, looked, why: str = "") -> DataError:
    places = "\n".join(f"  - {folder}  (lacks {', '.join(lacks)})" for folder, lacks in looked)
    files = " and ".join(f for _, f in task.files)
    fixes = [f"  - pass --data-dir DIR (data_dir=DIR), a folder holding {files};",
             f"  - set {ENV_VAR}=DIR so that DIR/{task.folder} holds them;"]
    if task.fetch:
        fixes.append(f"  - or, with neither set, let minadapt download them into its cache "
                     f"(download=True; needs internet) from {task.url}.")
    else:
        fixes.append(f"  - minadapt cannot download this task: {task.source}.")
    return DataError(f"{task.name}: data not found{why}. Looked in:\n{places}\n"
                     f"Fix it in one of these ways:\n" + "\n".join(fixes))


def find_task_data(task: str | Task, data_dir: str | Path | None = None, download: bool = True) -> Path:
    """The folder holding a built-in task's split files, found as the module docstring says.

    Raises DataError listing every place looked and how to fix it when the files are not found (or
    the download fails)."""
    task = _task(task)
    if task.folder is None:
        raise ValueError(f"task {task.name!r} reads the files it names; it has no data folder")
    looked: list[tuple[Path, list[str]]] = []

    def first_complete(candidates):
        for folder in candidates:
            lacks = _missing(task, folder)
            if not lacks:
                return folder
            looked.append((folder, lacks))
        return None

    if data_dir is not None:
        base = Path(data_dir).expanduser()
        names = dict.fromkeys([task.folder, task.archive_folder or task.folder])
        found = first_complete([base] + [base / n for n in names])
        if found is None:
            raise _not_found(task, looked, f" in data_dir {str(base)!r}")
        return found

    env = os.environ.get(ENV_VAR)
    if env:
        found = first_complete([Path(env).expanduser() / task.folder])
        if found is None:
            where = f" under ${ENV_VAR}={env}"
            if not Path(env).expanduser().is_absolute():
                where += (f", a relative path, read from {Path.cwd()}; an absolute one works "
                          "from anywhere")
            raise _not_found(task, looked, where)
        return found

    from minadapt.io import hub  # lazily: reading local files needs no network code

    cache = hub.default_cache_dir() / task.folder
    found = first_complete([cache])
    if found is not None:
        return found
    if not task.fetch:
        raise _not_found(task, looked)
    if not download:
        raise _not_found(task, looked, " (and downloading is off)")
    try:
        fetch_task(task, cache)
    except (OSError, MinadaptError) as e:  # no network, a bad zip, ...
        raise _not_found(task, looked, f", and downloading it failed: {e}") from e
    lacks = _missing(task, cache)
    if lacks:
        looked.append((cache, lacks))
        raise _not_found(task, looked, ": the download did not produce the files")
    return cache


# --- downloading -----------------------------------------------------------------------------------
def _cached_download(url: str, progress: bool) -> Path:
    """Download `url` once into the cache (one file per URL) and return the file's path."""
    from minadapt.io import hub

    digest = hashlib.sha256(url.encode()).hexdigest()[:12]
    path = hub.default_cache_dir() / f"{digest}-{url.rstrip('/').rsplit('/', 1)[-1]}"
    if not path.is_file():
        hub.download_file(url, path, progress=progress)
    return path


def fetch_task(task: Task, dest_dir: Path, progress: bool = True) -> Path:
    """Put `task`'s split files in `dest_dir`, downloading as `task.fetch` says, and return it.

    "glue-zip": urls[0] is a zip holding `<archive_folder>/train.tsv` and `dev.tsv` (GLUE's
    CoLA.zip, SST-2.zip, RTE.zip, QNLI.zip, STS-B.zip); the zip stays in the cache. Files listed in
    `task.sha256` are checked.

    "glue-mrpc": as GLUE's download_glue_data.py makes MRPC: urls[0] is Microsoft's
    msr_paraphrase_train.txt (header `Quality #1 ID #2 ID #1 String #2 String`), urls[1] a list of
    `#1 ID<TAB>#2 ID` rows; rows of the first whose ID pair is listed go to dev.tsv, the others to
    train.tsv, both under the original header. (GLUE's test.tsv comes from a third file and is not
    made here.)
    """
    from minadapt.io import hub

    dest_dir = Path(dest_dir)
    if task.fetch == "glue-zip":
        zip_path = _cached_download(task.urls[0], progress)
        sha = dict(task.sha256)
        try:
            with zipfile.ZipFile(zip_path) as archive:
                for _, f in task.files:
                    hub._extract(archive, f"{task.archive_folder}/{f}", dest_dir / f, sha.get(f),
                                 source=task.urls[0])
        except zipfile.BadZipFile:
            zip_path.unlink()
            raise hub.DownloadError(f"{task.urls[0]} did not give a zip file; the cached copy was "
                                    f"deleted, rerun to fetch it again") from None
        return dest_dir
    if task.fetch == "glue-mrpc":
        return _split_mrpc(_cached_download(task.urls[0], progress),
                           _cached_download(task.urls[1], progress), dest_dir)
    raise DataError(f"{task.name}: minadapt cannot download this task: {task.source}")


def _split_mrpc(train_txt: Path, dev_ids_tsv: Path, dest_dir: Path) -> Path:
    """GLUE's MRPC train/dev split, written as train.tsv and dev.tsv (each via a .part, renamed)."""
    dev_ids = {tuple(row.strip().split("\t")) for row in
               dev_ids_tsv.read_text(encoding="utf-8").split("\n") if row.strip()}
    lines = train_txt.read_text(encoding="utf-8").split("\n")
    header, train, dev = lines[0].rstrip("\r") + "\n", [], []
    for lineno, row in enumerate(lines[1:], start=2):
        if not row.strip():
            continue
        fields = row.strip().split("\t")
        if len(fields) != 5:
            raise DataError(f"{train_txt}:{lineno}: expected 5 tab-separated fields (Quality, #1 ID, "
                            f"#2 ID, #1 String, #2 String), found {len(fields)}")
        (dev if (fields[1], fields[2]) in dev_ids else train).append("\t".join(fields) + "\n")
    dest_dir.mkdir(parents=True, exist_ok=True)
    for name, rows in (("train.tsv", train), ("dev.tsv", dev)):
        part = dest_dir / (name + ".part")
        part.write_text(header + "".join(rows), encoding="utf-8")
        os.replace(part, dest_dir / name)
    return dest_dir


# --- loading and scoring ---------------------------------------------------------------------------
def load_task(task: str | Task, data_dir: str | Path | None = None, download: bool = True
              ) -> dict[str, Examples]:
    """{"train": Examples, "dev": Examples} for a built-in task (name or Task) or your own files.

    Each Examples holds texts (list of str), pairs (list of str, or None for single-text tasks) and
    labels ((N,) int64 indices into task.labels, or float64 targets for regression)."""
    task = _task(task)
    if task.folder is None:
        return {split: read_examples(task, Path(f)) for split, f in task.files}
    folder = find_task_data(task, data_dir, download)
    return {split: read_examples(task, folder / f) for split, f in task.files}


def predictions(task: Task, logits) -> np.ndarray:
    """What the metrics score, from the head's outputs (B, num_outputs): the argmax class (int64)
    for classification, the single output (float64) for regression."""
    logits = np.asarray(logits)
    if task.regression:
        return logits.reshape(len(logits), -1)[:, 0].astype(np.float64)
    return logits.argmax(axis=1).astype(np.int64)


def evaluate(task: Task, pred, gold) -> dict[str, float]:
    """{metric: value} for each of task.metrics, in order; the first is the one to report.
    pred: class indices or real numbers (see `predictions`); gold: Examples.labels."""
    return score(task.metrics, pred, gold, num_classes=None if task.regression else len(task.labels))
