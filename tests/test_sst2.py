"""SST-2 reading (good and bad files), where the data is looked for, and batching."""
import os
import sys
from pathlib import Path

import numpy as np
import pytest

import minadapt
import minadapt.io
from minadapt.tasks.sst2 import bucketed_batches, find_sst2, load_sst2, read_tsv, sequential_batches
from minadapt.errors import DataError, MinadaptError

GOOD = "sentence\tlabel\nit 's a charming journey . \t1\nunflinchingly bleak \t0\nnaïve fun \t1\n"


@pytest.fixture(autouse=True)
def no_data_env(monkeypatch):
    """Each test starts without $MINADAPT_DATA, whatever the developer's shell has."""
    monkeypatch.delenv("MINADAPT_DATA", raising=False)


def write(path: Path, content) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    (path.write_bytes if isinstance(content, bytes) else path.write_text)(content)
    return path


def make_sst2(folder: Path, n_train: int = 3) -> Path:
    """A tiny SST-2 folder: n_train training rows and 2 dev rows."""
    rows = "".join(f"sentence number {i} \t{i % 2}\n" for i in range(n_train))
    write(folder / "train.tsv", "sentence\tlabel\n" + rows)
    write(folder / "dev.tsv", "sentence\tlabel\ngood \t1\nbad \t0\n")
    return folder


# --- read_tsv --------------------------------------------------------------------------------------
def test_read_good_file(tmp_path):
    sentences, labels = read_tsv(write(tmp_path / "train.tsv", GOOD))
    assert sentences == ["it 's a charming journey .", "unflinchingly bleak", "naïve fun"]
    assert labels.dtype == np.int64
    assert labels.tolist() == [1, 0, 1]


def test_read_accepts_crlf_bom_and_no_final_newline(tmp_path):
    content = ("\ufeff" + GOOD.rstrip("\n")).replace("\n", "\r\n").encode("utf-8")
    sentences, labels = read_tsv(write(tmp_path / "train.tsv", content))
    assert sentences == ["it 's a charming journey .", "unflinchingly bleak", "naïve fun"]
    assert labels.tolist() == [1, 0, 1]


@pytest.mark.parametrize(
    "content, line, words",
    [
        (b"", 1, ["header", "empty file"]),
        (b"text\tlabel\nfine \t1\n", 1, ["header", "'text\\tlabel'"]),
        (b"sentence,label\nfine,1\n", 1, ["header", "'sentence,label'"]),
        (b"sentence\tlabel\n", 2, ["examples", "none"]),
        (b"sentence\tlabel\nfine \t1\nno tab here 1\n", 3, ["one tab", "0 tabs", "no tab here"]),
        (b"sentence\tlabel\nfine \t1\ntwo\ttabs \t1\n", 3, ["one tab", "2 tabs"]),
        (b"sentence\tlabel\nfine \t1\n\nafter blank \t0\n", 3, ["one tab", "0 tabs"]),
        (b"sentence\tlabel\nfine \t1\nbad label \t2\n", 3, ["0 or 1", "'2'"]),
        (b"sentence\tlabel\nfine \t1\nbad label \tpositive\n", 3, ["0 or 1", "'positive'"]),
        (b"sentence\tlabel\nfine \t1\nno label \t\n", 3, ["0 or 1", "''"]),
        (b"sentence\tlabel\nfine \t1\n \t0\n", 3, ["sentence", "nothing"]),
        (b"sentence\tlabel\nfine \t1\nca\xf1on \t0\n", 3, ["UTF-8", "\\xf1"]),  # Latin-1 'ñ'
    ],
)
def test_read_bad_file_names_file_and_line(tmp_path, content, line, words):
    path = write(tmp_path / "bad.tsv", content)
    with pytest.raises(DataError) as e:
        read_tsv(path)
    message = str(e.value)
    assert f"{path}:{line}:" in message
    for word in words:
        assert word in message


def test_read_missing_file(tmp_path):
    with pytest.raises(DataError, match="nope.tsv: no such file"):
        read_tsv(tmp_path / "nope.tsv")


def test_data_error_is_a_minadapt_error():
    assert issubclass(DataError, MinadaptError)


def _real_sst2_dir():
    candidates = [Path("/work/shared/data/sst2")]
    if os.environ.get("MINADAPT_DATA"):
        candidates.insert(0, Path(os.environ["MINADAPT_DATA"]) / "sst2")
    return next((c for c in candidates if (c / "dev.tsv").is_file()), None)


REAL = _real_sst2_dir()


@pytest.mark.skipif(REAL is None, reason="real SST-2 not present (/work/shared/data/sst2 or $MINADAPT_DATA/sst2)")
def test_read_real_dev():
    sentences, labels = read_tsv(REAL / "dev.tsv")
    assert len(sentences) == len(labels) == 872
    assert set(labels.tolist()) == {0, 1}
    assert sentences[0] == "it 's a charming and often affecting journey ."
    assert all(s == s.strip() and s for s in sentences)


# --- find_sst2 / load_sst2 -------------------------------------------------------------------------
def test_find_uses_argument_first(tmp_path, monkeypatch):
    arg = make_sst2(tmp_path / "arg")
    monkeypatch.setenv("MINADAPT_DATA", str(make_sst2(tmp_path / "env" / "sst2").parent))
    assert find_sst2(arg) == arg
    assert find_sst2(str(arg)) == arg


def test_find_accepts_parent_folder(tmp_path):
    make_sst2(tmp_path / "glue" / "SST-2")
    assert find_sst2(tmp_path / "glue") == tmp_path / "glue" / "SST-2"


def test_find_uses_env_var_before_cache(tmp_path, monkeypatch, fake_hub):
    folder = make_sst2(tmp_path / "env" / "sst2")
    make_sst2(fake_hub.cache / "sst2")
    monkeypatch.setenv("MINADAPT_DATA", str(tmp_path / "env"))
    assert find_sst2() == folder


def test_find_bad_argument_lists_places_and_fixes(tmp_path):
    write(tmp_path / "half" / "train.tsv", GOOD)  # dev.tsv missing
    with pytest.raises(DataError) as e:
        find_sst2(tmp_path / "half")
    message = str(e.value)
    for place in ("half", "half/sst2", "half/SST-2"):
        assert f"{tmp_path / place}  (lacks" in message
    assert "(lacks dev.tsv)" in message
    assert "--data-dir" in message and "MINADAPT_DATA" in message and "SST-2.zip" in message


def test_find_bad_env_var_is_an_error_not_a_download(tmp_path, monkeypatch, fake_hub):
    monkeypatch.setenv("MINADAPT_DATA", str(tmp_path / "typo"))
    with pytest.raises(DataError, match="MINADAPT_DATA") as e:
        find_sst2()
    assert str(tmp_path / "typo" / "sst2") in str(e.value)
    assert fake_hub.calls == []


def test_find_relative_env_var_says_where_it_was_read_from(tmp_path, monkeypatch, fake_hub):
    """A relative $MINADAPT_DATA is read from the current directory, which for a notebook is not
    the shell's: the error names that directory and suggests an absolute path."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MINADAPT_DATA", "../elsewhere")
    with pytest.raises(DataError, match="relative path") as e:
        find_sst2()
    assert str(tmp_path) in str(e.value) and "absolute" in str(e.value)
    assert fake_hub.calls == []


@pytest.fixture
def fake_hub(tmp_path, monkeypatch):
    """minadapt.io.hub with its cache in tmp_path and a fetch_sst2 that writes a tiny data set."""
    hub = pytest.importorskip("minadapt.io.hub")

    class Fake:
        cache = tmp_path / "cache"
        calls = []

    def fake_fetch(dest_dir, url=None, progress=True):
        Fake.calls.append(Path(dest_dir))
        return make_sst2(Path(dest_dir), n_train=5)

    monkeypatch.setattr(hub, "default_cache_dir", lambda: Fake.cache)
    monkeypatch.setattr(hub, "fetch_sst2", fake_fetch)
    return Fake


def test_find_downloads_into_cache_once(fake_hub):
    folder = find_sst2()
    assert folder == fake_hub.cache / "sst2"
    assert fake_hub.calls == [folder]
    assert find_sst2() == folder  # now cached: no second download
    assert len(fake_hub.calls) == 1
    data = load_sst2()
    assert len(data["train"][0]) == 5 and data["dev"][1].tolist() == [1, 0]


def test_find_without_download_says_where_it_looked(fake_hub):
    with pytest.raises(DataError, match="downloading is off") as e:
        find_sst2(download=False)
    assert str(fake_hub.cache / "sst2") in str(e.value)
    assert fake_hub.calls == []


@pytest.mark.parametrize("error", ["OSError", "DownloadError"])
def test_find_failed_download_is_a_data_error(fake_hub, monkeypatch, error):
    from minadapt.io import hub

    exc = OSError if error == "OSError" else hub.DownloadError

    def offline(dest_dir, url=None, progress=True):
        raise exc("Network is unreachable")

    monkeypatch.setattr(hub, "fetch_sst2", offline)
    with pytest.raises(DataError, match="downloading it failed: Network is unreachable") as e:
        find_sst2()
    assert "--data-dir" in str(e.value) and str(fake_hub.cache / "sst2") in str(e.value)


def test_load_sst2_reads_both_splits(tmp_path):
    data = load_sst2(make_sst2(tmp_path / "d", n_train=4))
    assert set(data) == {"train", "dev"}
    assert data["train"][0][3] == "sentence number 3"
    assert data["train"][1].tolist() == [0, 1, 0, 1]


def test_given_folder_needs_no_hub(tmp_path, monkeypatch):
    # reading files the user named must work even where the download code cannot be imported
    monkeypatch.setitem(sys.modules, "minadapt.io.hub", None)  # makes `from minadapt.io import hub` fail
    monkeypatch.delattr(minadapt.io, "hub", raising=False)
    folder = make_sst2(tmp_path / "d")
    assert find_sst2(folder) == folder
    with pytest.raises(ImportError):
        find_sst2()  # proves the patch bites: the cache step does import hub


# --- batching --------------------------------------------------------------------------------------
def lengths_for_test(n=1000, seed=0):
    return np.random.default_rng(seed).integers(3, 60, size=n)


def test_bucketed_batches_cover_every_index_once():
    lengths = lengths_for_test(1003)
    batches = bucketed_batches(lengths, 32, np.random.default_rng(1), pool_batches=5)
    flat = np.concatenate(batches)
    assert np.array_equal(np.sort(flat), np.arange(1003))
    sizes = sorted(len(b) for b in batches)
    assert sizes[1:] == [32] * (len(batches) - 1) and sizes[0] == 1003 % 32


def test_bucketed_batches_have_small_length_spread():
    lengths = lengths_for_test(3200)
    rng = np.random.default_rng(2)
    bucketed = bucketed_batches(lengths, 32, rng, pool_batches=20)
    random = np.array_split(rng.permutation(len(lengths)), 100)

    def mean_spread(batches):
        return np.mean([lengths[b].max() - lengths[b].min() for b in batches])

    assert mean_spread(bucketed) < 0.2 * mean_spread(random)
    # ... and padding to each batch's longest row costs little more than the real tokens
    padded = sum(lengths[b].max() * len(b) for b in bucketed)
    assert padded < 1.1 * lengths.sum()


def test_bucketed_batches_are_shuffled_not_sorted():
    lengths = lengths_for_test(3200)
    # one pool holding everything: the batches come out sorted by length unless the list is shuffled
    batches = bucketed_batches(lengths, 32, np.random.default_rng(3), pool_batches=100)
    maxima = [lengths[b].max() for b in batches]
    assert maxima != sorted(maxima)
    descents = sum(a > b for a, b in zip(maxima, maxima[1:]))
    assert 25 < descents < 75  # about half, as in a random order


def test_bucketed_batches_deterministic_per_seed():
    lengths = lengths_for_test()
    a = bucketed_batches(lengths, 16, np.random.default_rng(7))
    b = bucketed_batches(lengths, 16, np.random.default_rng(7))
    c = bucketed_batches(lengths, 16, np.random.default_rng(8))
    assert all(np.array_equal(x, y) for x, y in zip(a, b)) and len(a) == len(b)
    assert not all(np.array_equal(x, y) for x, y in zip(a, c))
    # not only the order of the batches: which examples share a batch changes with the seed too
    assert {frozenset(x.tolist()) for x in a} != {frozenset(x.tolist()) for x in c}


def test_sequential_batches_in_order_and_by_length():
    assert [b.tolist() for b in sequential_batches(5, 2)] == [[0, 1], [2, 3], [4]]
    lengths = np.array([5, 1, 4, 2, 3])
    batches = sequential_batches(5, 2, lengths)
    assert [b.tolist() for b in batches] == [[1, 3], [4, 2], [0]]
    # results put back by index land where they belong
    out = np.empty(5, dtype=lengths.dtype)
    for idx in batches:
        out[idx] = lengths[idx]
    assert np.array_equal(out, lengths)
