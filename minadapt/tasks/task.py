"""What a task is, as data: where its examples are, how to read them, what the labels mean, and
how predictions are scored. The training loop reads a `Task`; it never branches on a task's name.

Built-in tasks (`TASKS`, `get_task(name)`):

    name      format  text / pair columns     label column  labels (index: name)             metrics
    sst2      TSV     sentence                label         0 negative, 1 positive           accuracy
    bbc-news  CSV     text                    label         business, entertainment,         accuracy,
                                                            politics, sports, tech           f1_macro
    cola      TSV*    sentence                label         0 unacceptable, 1 acceptable     matthews, accuracy
    mrpc      TSV     #1 String / #2 String   Quality       0 not_equivalent, 1 equivalent   f1, accuracy
    rte       TSV     sentence1 / sentence2   label         entailment, not_entailment       accuracy
    qnli      TSV     question / sentence     label         entailment, not_entailment       accuracy
    stsb      TSV     sentence1 / sentence2   score         a real number in [0, 5]          pearson, spearman

    * CoLA's TSV has no header line: its 4 columns are named here (source, label, original_label,
      sentence).

The first metric is the one reported and used to pick the best checkpoint. Each task reads
`train.tsv` (`.csv`) and `dev.tsv` (`.csv`); GLUE's test splits have no public labels.

What was checked against real files: sst2 (equal to `minadapt.tasks.sst2.read_tsv` on GLUE's
files) and bbc-news (the local copy's README counts). The GLUE layouts of CoLA, MRPC, RTE, QNLI and
STS-B and their URLs are written from GLUE's documentation and download script (download_glue_data.py)
without access to the files themselves; a line with more or fewer tabs than the header is reported,
not guessed at, so a layout that differs shows up as a clear error naming the line.

Your own data is a Task too: `task_from_files(train_file, dev_file, ...)` (the CLI's `--train-file`,
`--dev-file`, `--text-column`, `--text-pair-column`, `--label-column`).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from minadapt.errors import DataError
from minadapt.tasks.metrics import METRICS
from minadapt.tasks.read import collect_labels, format_of

GLUE_URL = "https://dl.fbaipublicfiles.com/glue/data/{}.zip"
# GLUE's own download script (download_glue_data.py) does not ship MRPC as a zip: it fetches
# Microsoft's training file (here from SentEval's mirror) and the list of the (#1 ID, #2 ID) pairs
# that GLUE moved to dev, and splits the file itself. `minadapt.tasks.load` does the same.
MRPC_TRAIN_URL = "https://dl.fbaipublicfiles.com/senteval/senteval_data/msr_paraphrase_train.txt"
MRPC_DEV_IDS_URL = "https://dl.fbaipublicfiles.com/glue/data/mrpc_dev_ids.tsv"
SST2_SHA256 = {"train.tsv": "48eac26399f8456935f81dd9e3a745c1430adb6c62e233ccfe22db4a0d15d1d1",
               "dev.tsv": "54a9c12c77e402fc14d6a66a506f24d999f596b0176eb777c972cccc2f9cc4b0"}


@dataclass(frozen=True)
class Task:
    """One classification or regression task: its files, their columns, its labels, its metrics."""
    name: str  # the registry key; also a good default name for the task's adapter and head
    format: str  # "tsv", "csv" or "jsonl": how every split file is read (see minadapt.tasks.read)
    text_column: str  # the column holding the text (the first text of a pair)
    label_column: str  # the column holding the label (or the regression target)
    labels: tuple[str, ...]  # each class label as written in the files; its position is its index.
    #                          () for regression
    metrics: tuple[str, ...]  # names in minadapt.tasks.metrics.METRICS; the first is the one reported
    text_pair_column: str | None = None  # the column holding the second text, for pair tasks
    label_names: tuple[str, ...] = ()  # readable names, one per label; () means the labels themselves
    regression: bool = False  # the label is a real number (one output, MSE loss), not a class
    files: tuple[tuple[str, str], ...] = (("train", "train.tsv"), ("dev", "dev.tsv"))  # (split, file);
    #                          file names inside the data folder, or paths when `folder` is None
    columns: tuple[str, ...] | None = None  # for files without a header line: the columns, in order
    folder: str | None = None  # folder under --data-dir / $MINADAPT_DATA / the cache; None: `files`
    #                            are paths to the user's own files
    archive_folder: str | None = None  # the folder inside the downloaded zip ("SST-2" in SST-2.zip)
    urls: tuple[str, ...] = ()  # where the files can be downloaded from, as `fetch` says
    fetch: str | None = None  # "glue-zip" (urls[0] is a zip), "glue-mrpc" (see MRPC_TRAIN_URL), None
    sha256: tuple[tuple[str, str], ...] = ()  # (file, expected sha256) checked after a download
    source: str = ""  # where the data comes from (a paper, a page), for people

    def __post_init__(self):
        if self.format not in ("csv", "tsv", "jsonl"):
            raise ValueError(f"task {self.name!r}: format must be csv, tsv or jsonl, got {self.format!r}")
        unknown = [m for m in self.metrics if m not in METRICS]
        if not self.metrics or unknown:
            raise ValueError(f"task {self.name!r}: unknown metrics {unknown} (known: {', '.join(METRICS)})")
        if self.regression and self.labels:
            raise ValueError(f"task {self.name!r}: a regression task has no class labels")
        if not self.regression and len(self.labels) < 2:
            raise ValueError(f"task {self.name!r}: a classification task needs at least 2 labels, "
                             f"got {self.labels}")
        if self.label_names and len(self.label_names) != len(self.labels):
            raise ValueError(f"task {self.name!r}: {len(self.label_names)} label_names for "
                             f"{len(self.labels)} labels")
        if self.fetch not in (None, "glue-zip", "glue-mrpc"):
            raise ValueError(f"task {self.name!r}: unknown fetch {self.fetch!r}")

    @property
    def names(self) -> tuple[str, ...]:
        """Readable label names, one per class index (() for regression)."""
        return self.label_names or self.labels

    @property
    def num_outputs(self) -> int:
        """Outputs of the task's head: one per class, or 1 for regression."""
        return 1 if self.regression else len(self.labels)

    @property
    def split_files(self) -> dict[str, str]:
        """{"train": file, "dev": file}."""
        return dict(self.files)

    @property
    def url(self) -> str | None:
        """The main download URL (GLUE's zip), or None where the data cannot be downloaded."""
        return self.urls[0] if self.urls else None


def _glue(name, folder, text, label, labels, metrics, pair=None, label_names=(), columns=None,
          regression=False, urls=None, fetch="glue-zip", sha256=None, source="") -> Task:
    return Task(name=name, format="tsv", text_column=text, text_pair_column=pair, label_column=label,
                labels=labels, label_names=label_names, metrics=metrics, regression=regression,
                columns=columns, folder=name, archive_folder=folder,
                urls=urls or (GLUE_URL.format(folder),), fetch=fetch, sha256=tuple((sha256 or {}).items()),
                source=f"GLUE (Wang et al., 2019), https://gluebenchmark.com; {source}")


TASKS: dict[str, Task] = {t.name: t for t in [
    _glue("sst2", "SST-2", "sentence", "label", ("0", "1"), ("accuracy",),
          label_names=("negative", "positive"), sha256=SST2_SHA256,
          source="Stanford Sentiment Treebank (Socher et al., 2013): movie-review sentences"),
    Task(name="bbc-news", format="csv", text_column="text", label_column="label",
         labels=("business", "entertainment", "politics", "sports", "tech"),
         metrics=("accuracy", "f1_macro"), files=(("train", "train.csv"), ("dev", "dev.csv")),
         folder="bbc-news",
         source="BBC News, 2,225 articles in 5 topics (Greene and Cunningham, ICML 2006), "
                "distributed by University College Dublin as bbc-fulltext.zip "
                "(http://mlg.ucd.ie/datasets/bbc.html), one text file per article; minadapt reads "
                "a CSV made from it (columns text,label; train.csv and dev.csv), so it cannot "
                "download it: point --data-dir or $MINADAPT_DATA at such a folder"),
    # CoLA's train.tsv and dev.tsv have no header. Columns: the source of the sentence (a
    # linguistics publication's code, e.g. gj04), the label, the author's original mark ("*" for
    # unacceptable, else empty) and the sentence.
    _glue("cola", "CoLA", "sentence", "label", ("0", "1"), ("matthews", "accuracy"),
          label_names=("unacceptable", "acceptable"),
          columns=("source", "label", "original_label", "sentence"),
          source="Corpus of Linguistic Acceptability (Warstadt et al., 2019)"),
    _glue("mrpc", "MRPC", "#1 String", "Quality", ("0", "1"), ("f1", "accuracy"),
          pair="#2 String", label_names=("not_equivalent", "equivalent"),
          urls=(MRPC_TRAIN_URL, MRPC_DEV_IDS_URL), fetch="glue-mrpc",
          source="Microsoft Research Paraphrase Corpus (Dolan and Brockett, 2005); header "
                 "'Quality #1 ID #2 ID #1 String #2 String'"),
    _glue("rte", "RTE", "sentence1", "label", ("entailment", "not_entailment"), ("accuracy",),
          pair="sentence2", source="Recognizing Textual Entailment 1, 2, 3 and 5; header "
                                   "'index sentence1 sentence2 label'"),
    _glue("qnli", "QNLI", "question", "label", ("entailment", "not_entailment"), ("accuracy",),
          pair="sentence", source="Question NLI, from SQuAD (Rajpurkar et al., 2016); header "
                                  "'index question sentence label'"),
    # STS-B's header has 10 columns: index genre filename year old_index source1 source2
    # sentence1 sentence2 score.
    _glue("stsb", "STS-B", "sentence1", "score", (), ("pearson", "spearman"), pair="sentence2",
          regression=True, source="Semantic Textual Similarity Benchmark (Cer et al., 2017): "
                                  "similarity from 0 to 5"),
]}


def get_task(name: str) -> Task:
    """The built-in task called `name` (a few spellings accepted: SST-2, STS-B, bbc_news)."""
    key = name.lower().replace("-", "").replace("_", "")
    for task in TASKS.values():
        if task.name.replace("-", "") == key:
            return task
    raise DataError(f"unknown task {name!r}; the built-in tasks: {', '.join(TASKS)} "
                    f"(or give your own files with --train-file and --dev-file)")


def task_from_files(train_file: str | Path, dev_file: str | Path, text_column: str = "text",
                    text_pair_column: str | None = None, label_column: str = "label",
                    regression: bool = False, name: str = "custom",
                    metrics: tuple[str, ...] | None = None,
                    labels: tuple[str, ...] | None = None) -> Task:
    """A Task for your own CSV, TSV or JSONL files (the format from the train file's extension; the
    dev file must have the same one).

    The labels are collected from the training file's label column, sorted (as numbers when they are
    all integers); a dev label not among them is an error when the dev file is read. With
    `regression`, the label column must hold real numbers. Metrics, unless given: accuracy and F1
    (binary, class index 1 positive) for 2 classes, accuracy and macro F1 for more, Pearson and
    Spearman for regression.

    Reads the training file once to collect the labels (`load_task` reads it again), unless `labels`
    are given (an adapter file stores them: evaluating it needs its dev file only, and `train_file`
    may then be None or gone).
    """
    stored = labels is not None or train_file is None  # the dev file stands alone
    fmt = format_of(dev_file if stored else train_file)
    if not stored and format_of(dev_file) != fmt:
        raise DataError(f"{dev_file}: the dev file must have the same format as the train file "
                        f"{train_file} ({fmt})")
    if labels is not None or regression:
        labels = () if regression else tuple(labels)
    else:
        labels = collect_labels(Path(train_file), fmt, label_column)
        if len(labels) < 2:
            raise DataError(f"{train_file}: column {label_column!r} holds one label only "
                            f"({labels[0]!r}); a classifier needs at least two (for a real-valued "
                            f"target, declare the task regression)")
    if metrics is None:
        metrics = (("pearson", "spearman") if regression
                   else ("accuracy", "f1") if len(labels) == 2 else ("accuracy", "f1_macro"))
    return Task(name=name, format=fmt, text_column=text_column, text_pair_column=text_pair_column,
                label_column=label_column, labels=labels, metrics=tuple(metrics),
                regression=regression,
                files=(("train", str(train_file)), ("dev", str(dev_file))), folder=None,
                source=f"your files {train_file} and {dev_file}")
