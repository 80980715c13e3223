"""Tasks as data: the built-in tasks' layouts, your own CSV/TSV/JSONL files, every bad-file error
(one DataError line naming file, line and column), finding and downloading data (from a local HTTP
server on 127.0.0.1), scoring, and batching pairs by length."""
import dataclasses
import gzip
import io
import threading
import zipfile
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest

from minadapt.tasks.sst2 import load_sst2, read_tsv
from minadapt.errors import DataError, MinadaptError
from minadapt.tasks import (TASKS, Task, bucketed_batches, evaluate, find_task_data, get_task,
                            load_task, predictions, read_examples, sequential_batches,
                            task_from_files)

SHARED = Path("/work/shared/data")


@pytest.fixture(autouse=True)
def isolated(tmp_path, monkeypatch):
    """No $MINADAPT_DATA from the developer's shell; the download cache in tmp_path."""
    monkeypatch.delenv("MINADAPT_DATA", raising=False)
    monkeypatch.setenv("MINADAPT_CACHE", str(tmp_path / "cache"))


def write(path: Path, content) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    (path.write_bytes if isinstance(content, bytes) else path.write_text)(content, **(
        {} if isinstance(content, bytes) else {"encoding": "utf-8"}))
    return path


def raises(fn, *words):
    """Call fn, expect a DataError, check that its message holds every word; return the message."""
    with pytest.raises(DataError) as e:
        fn()
    message = str(e.value)
    for word in words:
        assert word in message, (word, message)
    assert isinstance(e.value, MinadaptError)  # the CLI prints it without a traceback
    return message


# --- the registry ----------------------------------------------------------------------------------
def test_builtin_tasks():
    assert list(TASKS) == ["sst2", "bbc-news", "cola", "mrpc", "rte", "qnli", "stsb"]
    sst2, bbc, cola, mrpc, rte, qnli, stsb = TASKS.values()
    assert (sst2.text_column, sst2.label_column, sst2.names) == ("sentence", "label", ("negative", "positive"))
    assert sst2.url == "https://dl.fbaipublicfiles.com/glue/data/SST-2.zip"
    assert bbc.names == ("business", "entertainment", "politics", "sports", "tech")
    assert bbc.format == "csv" and bbc.split_files == {"train": "train.csv", "dev": "dev.csv"}
    assert bbc.url is None and "mlg.ucd.ie" in bbc.source
    assert cola.columns == ("source", "label", "original_label", "sentence")
    assert cola.metrics[0] == "matthews" and cola.names == ("unacceptable", "acceptable")
    assert cola.url == "https://dl.fbaipublicfiles.com/glue/data/CoLA.zip"
    assert (mrpc.text_column, mrpc.text_pair_column, mrpc.label_column) == ("#1 String", "#2 String", "Quality")
    assert mrpc.metrics == ("f1", "accuracy") and mrpc.fetch == "glue-mrpc"
    assert rte.labels == qnli.labels == ("entailment", "not_entailment")
    assert (qnli.text_column, qnli.text_pair_column) == ("question", "sentence")
    assert stsb.regression and stsb.labels == () and stsb.num_outputs == 1
    assert stsb.metrics == ("pearson", "spearman") and stsb.label_column == "score"
    assert stsb.url == "https://dl.fbaipublicfiles.com/glue/data/STS-B.zip"
    assert sst2.num_outputs == 2 and bbc.num_outputs == 5


def test_get_task_spellings_and_unknown():
    assert get_task("SST-2") is TASKS["sst2"] and get_task("STS-B") is TASKS["stsb"]
    assert get_task("bbc_news") is TASKS["bbc-news"]
    raises(lambda: get_task("mnli"), "unknown task 'mnli'", "sst2, bbc-news, cola", "--train-file")


def test_task_is_frozen_and_checked():
    with pytest.raises(dataclasses.FrozenInstanceError):
        TASKS["sst2"].name = "x"
    with pytest.raises(ValueError, match="unknown metrics"):
        dataclasses.replace(TASKS["sst2"], metrics=("bleu",))
    with pytest.raises(ValueError, match="at least 2 labels"):
        dataclasses.replace(TASKS["sst2"], labels=("0",), label_names=())
    assert hash(TASKS["cola"])  # usable as a dict key


# --- built-in layouts on small files ---------------------------------------------------------------
GLUE_FILES = {
    # CoLA: no header; source, label, original mark, sentence
    "cola": ("gj04\t1\t\tOur friends won't buy this analysis.\n"
             "gj04\t0\t*\tThey drank the pub.\n"),
    "mrpc": ("\ufeffQuality\t#1 ID\t#2 ID\t#1 String\t#2 String\n"
             "1\t702876\t702977\tAmrozi accused his brother .\tReferring to him , Amrozi accused .\n"
             "0\t2108705\t2108831\tYucaipa owned Dominick 's\tYucaipa bought Dominick 's\n"),
    "rte": ("index\tsentence1\tsentence2\tlabel\n"
            "0\tNo Weapons of Mass Destruction Found in Iraq Yet.\tWeapons Found in Iraq.\tnot_entailment\n"
            "1\tA place of \"sorrow .\tPope is buried.\tentailment\n"),  # an unbalanced quote
    "qnli": ("index\tquestion\tsentence\tlabel\n"
             "0\tWhen did it start?\tIt started in 1900.\tentailment\n"),
    "stsb": ("index\tgenre\tfilename\tyear\told_index\tsource1\tsource2\tsentence1\tsentence2\tscore\n"
             "0\tmain-captions\tMSRvid\t2012test\t0001\tnone\tnone\tA plane is taking off.\t"
             "An air plane is taking off.\t5.000\n"
             "1\tmain-captions\tMSRvid\t2012test\t0004\tnone\tnone\tA man is playing a flute.\t"
             "A man is playing a \"bamboo flute.\t3.800\n"),
}


def test_cola_has_no_header(tmp_path):
    ex = read_examples(TASKS["cola"], write(tmp_path / "dev.tsv", GLUE_FILES["cola"]))
    assert ex.texts == ["Our friends won't buy this analysis.", "They drank the pub."]
    assert ex.pairs is None and ex.labels.tolist() == [1, 0] and ex.labels.dtype == np.int64


def test_mrpc_pairs_and_bom(tmp_path):
    ex = read_examples(TASKS["mrpc"], write(tmp_path / "dev.tsv", GLUE_FILES["mrpc"]))
    assert ex.texts == ["Amrozi accused his brother .", "Yucaipa owned Dominick 's"]
    assert ex.pairs == ["Referring to him , Amrozi accused .", "Yucaipa bought Dominick 's"]
    assert ex.labels.tolist() == [1, 0]


def test_rte_and_qnli_text_labels_and_quotes_not_special(tmp_path):
    ex = read_examples(TASKS["rte"], write(tmp_path / "rte.tsv", GLUE_FILES["rte"]))
    assert ex.labels.tolist() == [1, 0]  # index into ("entailment", "not_entailment")
    assert ex.texts[1] == 'A place of "sorrow .'  # QUOTE_NONE: the quote is a character
    assert ex.pairs == ["Weapons Found in Iraq.", "Pope is buried."]
    ex = read_examples(TASKS["qnli"], write(tmp_path / "qnli.tsv", GLUE_FILES["qnli"]))
    assert (ex.texts, ex.pairs, ex.labels.tolist()) == (["When did it start?"], ["It started in 1900."], [0])


def test_stsb_is_regression(tmp_path):
    ex = read_examples(TASKS["stsb"], write(tmp_path / "dev.tsv", GLUE_FILES["stsb"]))
    assert ex.labels.dtype == np.float64 and ex.labels.tolist() == [5.0, 3.8]
    assert ex.pairs[1] == 'A man is playing a "bamboo flute.'


def test_rte_unknown_label_names_known_ones(tmp_path):
    path = write(tmp_path / "dev.tsv", "index\tsentence1\tsentence2\tlabel\n0\ta\tb\tcontradiction\n")
    raises(lambda: read_examples(TASKS["rte"], path), f"{path}:2:", "'label'", "'contradiction'",
           "'entailment', 'not_entailment'")


SST2_SMALL = "sentence\tlabel\nit 's a charming journey . \t1\nunflinchingly bleak \t0\nnaïve fun \t1\n"


def test_sst2_task_equals_read_tsv(tmp_path):
    path = write(tmp_path / "train.tsv", ("\ufeff" + SST2_SMALL).replace("\n", "\r\n"))
    ex = read_examples(TASKS["sst2"], path)
    sentences, labels = read_tsv(path)
    assert ex.texts == sentences and np.array_equal(ex.labels, labels) and ex.labels.dtype == labels.dtype


@pytest.mark.skipif(not (SHARED / "sst2" / "dev.tsv").is_file(), reason="no local SST-2")
def test_sst2_task_equals_load_sst2_on_real_data():
    new, old = load_task("sst2", SHARED), load_sst2(SHARED / "sst2")
    for split in ("train", "dev"):
        assert new[split].texts == old[split][0]
        assert np.array_equal(new[split].labels, old[split][1])
    assert len(new["dev"].texts) == 872 and new["dev"].pairs is None


@pytest.mark.skipif(not (SHARED / "bbc-news" / "dev.csv").is_file(), reason="no local BBC News")
def test_bbc_news_real_data(monkeypatch):
    monkeypatch.setenv("MINADAPT_DATA", str(SHARED))
    data = load_task("bbc-news")
    # per topic (train / dev), from the data's README
    assert np.bincount(data["train"].labels).tolist() == [408, 309, 334, 409, 321]
    assert np.bincount(data["dev"].labels).tolist() == [102, 77, 83, 102, 80]
    assert data["dev"].texts[0].startswith("European losses hit GM's profits.")


# --- your own files --------------------------------------------------------------------------------
def test_own_csv_quotes_commas_and_newlines(tmp_path):
    train = write(tmp_path / "train.csv", 'text,label\n"a, b",pos\n"he said ""hi""\nthen left",neg\nplain,pos\n')
    dev = write(tmp_path / "dev.csv", "text,label\nfine,neg\n")
    task = task_from_files(train, dev)
    assert task.labels == ("neg", "pos") and task.metrics == ("accuracy", "f1") and task.folder is None
    data = load_task(task)
    assert data["train"].texts == ["a, b", 'he said "hi"\nthen left', "plain"]
    assert data["train"].labels.tolist() == [1, 0, 1] and data["dev"].labels.tolist() == [0]


def test_own_tsv_pairs_and_numeric_labels_sorted_as_numbers(tmp_path):
    rows = "".join(f"q{i}\ts{i}\t{lab}\n" for i, lab in enumerate([10, 2, 1, 2]))
    train = write(tmp_path / "train.tsv", "question\tsentence\tclass\n" + rows)
    dev = write(tmp_path / "dev.tsv", "question\tsentence\tclass\nq\ts\t10\n")
    task = task_from_files(train, dev, text_column="question", text_pair_column="sentence",
                           label_column="class")
    assert task.labels == ("1", "2", "10") and task.metrics == ("accuracy", "f1_macro")
    data = load_task(task)
    assert data["train"].pairs == ["s0", "s1", "s2", "s3"]
    assert data["train"].labels.tolist() == [2, 1, 0, 1] and data["dev"].labels.tolist() == [2]


def test_labels_do_not_depend_on_row_order(tmp_path):
    a = task_from_files(write(tmp_path / "a.csv", "text,label\nx,b\ny,a\nz,c\n"), tmp_path / "a.csv")
    b = task_from_files(write(tmp_path / "b.csv", "text,label\nz,c\nx,a\ny,b\n"), tmp_path / "b.csv")
    assert a.labels == b.labels == ("a", "b", "c")


def test_own_jsonl_and_regression(tmp_path):
    train = write(tmp_path / "train.jsonl", '{"text": "good", "label": 1, "score": 4.5}\n\n'
                                            '{"text": "bad", "label": 0, "score": "1"}\n')
    dev = write(tmp_path / "dev.jsonl", '{"text": "ok", "label": 1.0, "score": 3}\n')
    task = task_from_files(train, dev)
    assert task.labels == ("0", "1")
    data = load_task(task)
    assert data["train"].labels.tolist() == [1, 0] and data["dev"].labels.tolist() == [1]
    reg = task_from_files(train, dev, label_column="score", regression=True)
    assert reg.regression and reg.metrics == ("pearson", "spearman")
    data = load_task(reg)
    assert data["train"].labels.dtype == np.float64 and data["train"].labels.tolist() == [4.5, 1.0]


def test_dev_label_unseen_in_training(tmp_path):
    train = write(tmp_path / "train.csv", "text,label\nx,sport\ny,tech\n")
    dev = write(tmp_path / "dev.csv", "text,label\nx,sport\ny,sprot\n")
    task = task_from_files(train, dev)
    raises(lambda: load_task(task), f"{dev}:3:", "'sprot'", "'sport', 'tech'", str(train))


def test_non_numeric_regression_label(tmp_path):
    train = write(tmp_path / "train.tsv", "text\tscore\na\t1.5\nb\thigh\n")
    task = task_from_files(train, train, label_column="score", regression=True)
    raises(lambda: load_task(task), f"{train}:3:", "'score'", "real number", "'high'")
    nan = write(tmp_path / "nan.tsv", "text\tscore\na\tnan\n")
    raises(lambda: load_task(task_from_files(nan, nan, label_column="score", regression=True)),
           f"{nan}:2:", "real number")


def test_one_label_only_and_format_checks(tmp_path):
    one = write(tmp_path / "one.csv", "text,label\na,x\nb,x\n")
    raises(lambda: task_from_files(one, one), "one label only", "regression")
    raises(lambda: task_from_files(one, write(tmp_path / "d.tsv", "text\tlabel\n")), "same format")
    raises(lambda: task_from_files(write(tmp_path / "t.txt", "x"), one), "extension '.txt'", ".jsonl")


# --- bad files: one line each, naming file, line, column ---------------------------------------------
BAD = [  # (file name, content, line, words in the message)
    ("t.csv", b'text,label\n"ok",a\n"bad"quote,b\n', 3, ["malformed CSV", "double quotes"]),
    ("t.csv", b'text,label\n"never closed,a\nx,b\n', 2, ["malformed CSV"]),
    ("t.csv", b"text,label\na,b\nc,d,e\n", 3, ["expected 2 fields (text, label)", "found 3"]),
    ("t.tsv", b"text\tlabel\na\tb\nno tab here\n", 3, ["expected 2 fields", "tabs", "found 1", "no tab here"]),
    ("t.tsv", b"text\tlabel\na\tb\n\nc\td\n", 3, ["expected 2 fields", "found 1"]),
    ("t.tsv", b"text\ttext\na\tb\n", 1, ["distinct column names"]),
    ("t.jsonl", b'{"text": "a", "label": "x"}\n{"text": "b", label: "y"}\n', 2, [":2:15:", "JSON object per line"]),  # col 15: the unquoted key
    ("t.jsonl", b'{"text": "a", "label": "x"}\n["b", "y"]\n', 2, ["expected a JSON object"]),
    ("t.jsonl", b'{"text": "a", "label": "x"}\n{"txt": "b", "label": "y"}\n', 2, ["no key 'text'", "'txt', 'label'"]),
    ("t.jsonl", b'{"text": "a", "label": "x"}\n{"text": 5, "label": "y"}\n', 2, ["column 'text'", "expected text", "5"]),
    ("t.jsonl", b'{"text": "a", "label": "x"}\n{"text": "b", "label": null}\n', 2, ["column 'label'", "null"]),
    ("t.csv", b"text,label\n  ,a\n", 2, ["column 'text'", "found nothing"]),
    ("t.csv", b"", 1, ["empty file"]),
    ("t.csv", b"  \n\n", 1, ["empty file"]),
    ("t.csv", b"text,label\n", 2, ["examples after the header", "none"]),
    ("t.csv", gzip.compress(b"text,label\na,b\n"), 1, ["gzip"]),
    ("t.csv", b"text,label\na,b\nc\x00d,e\n", 3, ["NUL byte", "binary"]),
    ("t.csv", b"text,label\na,b\nca\xf1on,e\n", 3, [":3:3:", "UTF-8", "\\xf1"]),
    ("t.tsv", b"PK\x03\x04rest", 1, ["zip archive"]),
]


@pytest.mark.parametrize("name, content, line, words", BAD)
def test_bad_file_one_clear_line(tmp_path, name, content, line, words):
    path = write(tmp_path / name, content)
    task = Task(name="t", format=name.split(".")[1], text_column="text", label_column="label",
                labels=("a", "b", "x", "y", "e"), metrics=("accuracy",))
    message = raises(lambda: read_examples(task, path), f"{path}:{line}:", *words)
    assert "Traceback" not in message and "\n" not in message


def test_missing_column_names_it_and_the_columns_found(tmp_path):
    path = write(tmp_path / "train.csv", "sentence,category\na,x\nb,y\n")
    raises(lambda: task_from_files(path, path), "no column 'label'", "'sentence', 'category'")
    raises(lambda: load_task(task_from_files(path, path, label_column="category")),
           "no column 'text'", "'sentence', 'category'")
    pair = task_from_files(path, path, text_column="sentence", label_column="category",
                           text_pair_column="hypothesis")
    raises(lambda: load_task(pair), "no column 'hypothesis'")


def test_missing_file(tmp_path):
    raises(lambda: task_from_files(tmp_path / "nope.csv", tmp_path / "nope.csv"), "nope.csv: no such file")


# --- finding the data ------------------------------------------------------------------------------
def glue_folder(folder: Path, name: str) -> Path:
    content = GLUE_FILES[name]
    write(folder / "train.tsv", content)
    write(folder / "dev.tsv", content)
    return folder


def test_find_in_data_dir_env_and_parent(tmp_path, monkeypatch):
    direct = glue_folder(tmp_path / "direct", "cola")
    assert find_task_data("cola", direct) == direct
    glue_folder(tmp_path / "glue" / "CoLA", "cola")  # the name inside GLUE's zip
    assert find_task_data("cola", tmp_path / "glue") == tmp_path / "glue" / "CoLA"
    env = glue_folder(tmp_path / "env" / "stsb", "stsb")
    monkeypatch.setenv("MINADAPT_DATA", str(tmp_path / "env"))
    assert find_task_data("stsb") == env
    assert load_task("stsb")["dev"].labels.tolist() == [5.0, 3.8]


def test_not_found_lists_places_and_fixes(tmp_path, monkeypatch):
    write(tmp_path / "half" / "train.tsv", GLUE_FILES["rte"])
    message = raises(lambda: find_task_data("rte", tmp_path / "half"), "rte: data not found",
                     "(lacks dev.tsv)", "--data-dir", "MINADAPT_DATA", "RTE.zip")
    for place in ("half", "half/rte", "half/RTE"):
        assert f"{tmp_path / place}  (lacks" in message
    monkeypatch.setenv("MINADAPT_DATA", str(tmp_path / "typo"))
    raises(lambda: load_task("rte"), "MINADAPT_DATA", str(tmp_path / "typo" / "rte"))
    assert not (tmp_path / "cache").exists()  # a named place that lacks the files is no reason to download


def test_bbc_news_cannot_be_downloaded(tmp_path):
    raises(lambda: find_task_data("bbc-news"), "cannot download", "bbc-fulltext.zip",
           str(tmp_path / "cache" / "bbc-news"))


# --- downloading, from a local server --------------------------------------------------------------
class Handler(SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def do_GET(self):
        self.server.requests.append(self.path)
        super().do_GET()


@pytest.fixture
def server(tmp_path, monkeypatch):
    from minadapt.io import hub

    monkeypatch.setattr(hub, "RETRY_PAUSE_S", 0.0)
    root = tmp_path / "served"
    root.mkdir()
    srv = ThreadingHTTPServer(("127.0.0.1", 0), partial(Handler, directory=str(root)))
    srv.daemon_threads, srv.root, srv.requests = True, root, []
    srv.url = f"http://127.0.0.1:{srv.server_address[1]}"
    thread = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.01}, daemon=True)
    thread.start()
    yield srv
    srv.shutdown()
    srv.server_close()


def glue_zip(folder: str, content: str) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as z:
        for f in ("train.tsv", "dev.tsv", "test.tsv"):
            z.writestr(f"{folder}/{f}", content)
    return buffer.getvalue()


def test_glue_zip_downloaded_once_into_the_cache(server, tmp_path):
    write(server.root / "CoLA.zip", glue_zip("CoLA", GLUE_FILES["cola"]))
    task = dataclasses.replace(get_task("cola"), urls=(f"{server.url}/CoLA.zip",))
    data = load_task(task)
    assert data["train"].labels.tolist() == [1, 0]
    assert find_task_data(task) == tmp_path / "cache" / "cola"
    assert server.requests == ["/CoLA.zip"]
    load_task(task)  # cached: no second request
    assert server.requests == ["/CoLA.zip"]


def test_glue_zip_checks_sha256(server):
    write(server.root / "SST-2.zip", glue_zip("SST-2", SST2_SMALL))
    task = dataclasses.replace(get_task("sst2"), urls=(f"{server.url}/SST-2.zip",))
    raises(lambda: load_task(task), "downloading it failed", "checksum mismatch")
    ok = dataclasses.replace(task, sha256=())
    assert load_task(ok)["dev"].texts[0] == "it 's a charming journey ."


def test_failed_or_disallowed_download(server):
    task = dataclasses.replace(get_task("qnli"), urls=(f"{server.url}/missing.zip",))
    raises(lambda: load_task(task), "downloading it failed", "404", "--data-dir")
    raises(lambda: load_task(task, download=False), "downloading is off")
    write(server.root / "QNLI.zip", b"not a zip")
    task = dataclasses.replace(task, urls=(f"{server.url}/QNLI.zip",))
    raises(lambda: load_task(task), "did not give a zip file")


def test_mrpc_split_as_glue_makes_it(server, tmp_path):
    write(server.root / "msr_paraphrase_train.txt", GLUE_FILES["mrpc"] +
          "1\t11\t12\tThird one .\tThe third .\n")
    write(server.root / "mrpc_dev_ids.tsv", "2108705\t2108831\n11\t12\n")
    task = dataclasses.replace(get_task("mrpc"), urls=(f"{server.url}/msr_paraphrase_train.txt",
                                                       f"{server.url}/mrpc_dev_ids.tsv"))
    data = load_task(task)
    assert data["train"].texts == ["Amrozi accused his brother ."]
    assert data["dev"].texts == ["Yucaipa owned Dominick 's", "Third one ."]
    assert data["dev"].pairs == ["Yucaipa bought Dominick 's", "The third ."]
    assert data["dev"].labels.tolist() == [0, 1]
    header = (tmp_path / "cache" / "mrpc" / "dev.tsv").read_text(encoding="utf-8").split("\n")[0]
    assert header.lstrip("\ufeff") == "Quality\t#1 ID\t#2 ID\t#1 String\t#2 String"


# --- scoring and batching --------------------------------------------------------------------------
def test_predictions_and_evaluate():
    logits = np.array([[0.1, 2.0], [3.0, -1.0], [0.0, 0.5]])
    pred = predictions(TASKS["mrpc"], logits)
    assert pred.tolist() == [1, 0, 1] and pred.dtype == np.int64
    scores = evaluate(TASKS["mrpc"], pred, np.array([1, 0, 0]))
    assert list(scores) == ["f1", "accuracy"] and scores["f1"] == pytest.approx(2 / 3)
    reg = predictions(TASKS["stsb"], np.array([[1.5], [2.5], [0.5]]))
    assert reg.dtype == np.float64 and reg.tolist() == [1.5, 2.5, 0.5]
    assert evaluate(TASKS["stsb"], reg, np.array([2.0, 3.0, 1.0])) == {"pearson": pytest.approx(1.0),
                                                                      "spearman": pytest.approx(1.0)}
    assert evaluate(TASKS["bbc-news"], [0, 1], [0, 1])["f1_macro"] == pytest.approx(2 / 5)  # 3 unseen classes


def test_bucketing_pairs_up_to_512_tokens(checkpoint_dir):
    from minadapt.tokenizer import Tokenizer

    tok = Tokenizer(checkpoint_dir, max_length=512)
    rng = np.random.default_rng(0)
    a = ["word " * int(n) for n in rng.integers(1, 400, 300)]
    b = ["other " * int(n) for n in rng.integers(1, 400, 300)]
    ids, types = tok.ids_and_types(a, b)
    lengths = np.array([len(i) for i in ids])
    assert lengths.max() == 512 and lengths.min() < 100
    batches = bucketed_batches(lengths, 16, np.random.default_rng(1), pool_batches=5)
    assert np.array_equal(np.sort(np.concatenate(batches)), np.arange(300))
    padded = sum(lengths[idx].max() * len(idx) for idx in batches)
    assert padded < 1.15 * lengths.sum()  # sorted pools: little padding even with lengths 5..512
    idx = batches[0]
    batch = tok.pad([ids[i] for i in idx], [types[i] for i in idx])
    assert batch.input_ids.shape == (len(idx), lengths[idx].max())
    assert np.array_equal(batch.token_type_ids.sum(1), [types[i].sum() for i in idx])
    assert sum(map(len, sequential_batches(300, 64, lengths))) == 300
