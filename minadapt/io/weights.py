"""Reading and writing parameters as safetensors files, keyed by HuggingFace names.

A safetensors file is an 8-byte header length, a JSON header (name -> dtype, shape, byte offsets,
plus a free-form `__metadata__` of strings), then the raw bytes. It cannot run code on load (unlike
a pickle), which is why checkpoints and minadapt's adapter files use it.

Checkpoints: a BERT, RoBERTa, XLM-R, DistilBERT or ELECTRA `model.safetensors` loads, with or
without the prefix (`bert.`, `roberta.`, ...) that task models (BertForSequenceClassification, ...)
put on the encoder's names, and with or without a pooler or pre-training head. Names are mapped to
minadapt's (BERT's) at load (architectures.py). Every expected key and shape is checked against the
config, so a wrong file fails here with a message naming the file, the key as the file spells it and
the two shapes, rather than somewhere inside a matmul.
"""
from __future__ import annotations

import errno
import os
import secrets
from pathlib import Path

import numpy as np

from ..architectures import ARCHITECTURES, PROJECTION
from ..config import BertConfig
from ..errors import StorageError, WeightsError

# Keys a BERT checkpoint may carry that the encoder does not use: the pooler (BertModel's tanh layer
# on [CLS], not used by adapter heads), the position_ids buffer, and pre-training heads (`cls.`).
# Each architecture lists its own (Architecture.ignored).
OPTIONAL_PREFIXES = ARCHITECTURES["bert"].ignored


def expected_shapes(cfg: BertConfig) -> dict[str, tuple]:
    """Every encoder parameter's minadapt name (BERT's) and shape (torch layout: Linear weights
    (out, in)). No token-type table where the model has no token types (DistilBERT); ELECTRA's
    embeddings are E wide, with a projection to H when E != H."""
    H, F = cfg.hidden_size, cfg.intermediate_size
    E = cfg.embedding_size or H
    shapes = {
        "embeddings.word_embeddings.weight": (cfg.vocab_size, E),
        "embeddings.position_embeddings.weight": (cfg.max_position_embeddings, E),
        "embeddings.token_type_embeddings.weight": (cfg.type_vocab_size, E),
        "embeddings.LayerNorm.weight": (E,),
        "embeddings.LayerNorm.bias": (E,),
    }
    if not cfg.type_vocab_size:
        del shapes["embeddings.token_type_embeddings.weight"]
    if E != H:
        shapes[PROJECTION + "weight"], shapes[PROJECTION + "bias"] = (H, E), (H,)
    for i in range(cfg.num_hidden_layers):
        p = f"encoder.layer.{i}."
        for name, shape in [
            ("attention.self.query", (H, H)), ("attention.self.key", (H, H)),
            ("attention.self.value", (H, H)), ("attention.output.dense", (H, H)),
            ("intermediate.dense", (F, H)), ("output.dense", (H, F)),
        ]:
            shapes[p + name + ".weight"] = shape
            shapes[p + name + ".bias"] = shape[:1]
        for ln in ("attention.output.LayerNorm", "output.LayerNorm"):
            shapes[p + ln + ".weight"] = (H,)
            shapes[p + ln + ".bias"] = (H,)
    return shapes


def read_safetensors(path: str | Path) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """All tensors of a safetensors file as NumPy arrays, and its metadata; clear errors for a
    missing, truncated or malformed file."""
    from safetensors import SafetensorError, safe_open

    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"{path}: no such file")
    try:
        with safe_open(str(path), framework="numpy") as f:
            tensors = {k: f.get_tensor(k) for k in f.keys()}
            metadata = dict(f.metadata() or {})
    except (SafetensorError, OSError, ValueError) as e:
        size = path.stat().st_size
        raise WeightsError(f"{path}: not a readable safetensors file ({size:,} bytes; truncated or "
                           f"corrupt? delete it and download again): {e}") from None
    return tensors, metadata


def check_finite(tensors: dict, path) -> None:
    """WeightsError naming `path` and the first tensor holding a NaN or an Inf, if any does.

    A file saved from a run that diverged loads without complaint and then predicts `nan` for
    every sentence; this check refuses it at the door instead. Integer tensors are always finite.
    """
    for name, value in tensors.items():
        value = np.asarray(value)
        if value.dtype.kind not in "fc" or np.isfinite(value).all():
            continue
        n_nan, n_inf = int(np.isnan(value).sum()), int(np.isinf(value).sum())
        found = ", ".join(f"{n:,} {what}" for n, what in ((n_nan, "NaN"), (n_inf, "Inf")) if n)
        raise WeightsError(f"{path}: tensor {name!r} holds {found} (of {value.size:,} values): it "
                           "was saved from a run that diverged, or the file is damaged")


def checkpoint_file(folder: str | Path) -> Path:
    """The weights file of a checkpoint folder: model.safetensors, else pytorch_model.bin (older
    hub repositories; read without torch by torch_pickle.py)."""
    folder = Path(folder)
    for name in ("model.safetensors", "pytorch_model.bin"):
        if (folder / name).is_file():
            return folder / name
    return folder / "model.safetensors"  # missing: read_safetensors names it


def load_checkpoint(path: str | Path, cfg: BertConfig, dtype=np.float32) -> dict[str, np.ndarray]:
    """A `model.safetensors` (or `pytorch_model.bin`) of `cfg`'s architecture as {minadapt name:
    array of `dtype`}, its names mapped to minadapt's (architectures.py) and every key and shape
    checked against `cfg`."""
    if Path(path).suffix == ".bin":
        from .torch_pickle import load_torch_bin

        tensors = load_torch_bin(path)
    else:
        tensors, _ = read_safetensors(path)
    check_finite(tensors, path)
    arch = cfg.arch
    params, key_of = {}, {}  # minadapt name -> array, and -> the file's own key (for messages)
    for key, value in tensors.items():
        bare = key[len(arch.prefix):] if key.startswith(arch.prefix) else key
        if bare.startswith(arch.ignored):
            continue  # the pooler, a pre-training head, the position_ids buffer
        name = arch.ours(bare)
        params[name], key_of[name] = value, key
    expected = expected_shapes(cfg)
    missing = [k for k in expected if k not in params]
    unexpected = sorted(set(params) - set(expected))
    if missing:
        hint = (f"; it has keys a {cfg.model_type} checkpoint does not, such as {key_of[unexpected[0]]!r}: "
                "is config.json's model_type the checkpoint's?" if unexpected else "")
        raise WeightsError(f"{path}: missing key {arch.theirs(missing[0])!r} (expected shape "
                           f"{expected[missing[0]]} for model_type {cfg.model_type!r})"
                           + (f" and {len(missing) - 1} more" if len(missing) > 1 else "") + hint)
    if unexpected:
        raise WeightsError(f"{path}: unexpected key {key_of[unexpected[0]]!r} with shape "
                           f"{tuple(params[unexpected[0]].shape)}: is this a {cfg.model_type} checkpoint "
                           "that matches its config.json (model_type and sizes)?")
    for name, shape in expected.items():
        if tuple(params[name].shape) != shape:
            raise WeightsError(f"{path}: key {key_of[name]!r} has shape {tuple(params[name].shape)}, "
                               f"expected {shape} from config.json")
    return {k: np.ascontiguousarray(v, dtype=dtype) for k, v in params.items()}


# Temporary files are named .<name>.tmp-<pid>-<random>, beside the file they will become: a rename
# is atomic only within one filesystem, and the pid says whether the writer can still be alive.
TMP_INFIX = ".tmp-"


def save_tensors(path: str | Path, tensors: dict, metadata: dict[str, str]) -> None:
    """Write NumPy arrays to `path` as safetensors, atomically and durably (see atomic_write)."""
    from safetensors import SafetensorError
    from safetensors.numpy import save

    try:
        data = save({k: np.ascontiguousarray(v) for k, v in tensors.items()}, metadata=metadata)
    except SafetensorError as e:  # not an OSError: said here, with the file's name
        raise StorageError(f"{path}: not saved: {e}") from None
    atomic_write(path, data)


def atomic_write(path: str | Path, data: bytes) -> None:
    """`data` into `path` so that `path` is always either its old content or all of `data`:

        write .<name>.tmp-<pid>-<random> in the same folder, fsync it, rename it over `path`,
        fsync the folder (so the rename itself survives a power cut)

    The file's mode follows the umask (0644 under the usual 022), as any new file's does.
    Leftovers of a writer that was killed (its pid gone) are removed first. A full disk, a quota,
    a read-only filesystem or a refused permission is a StorageError naming `path` and the cause;
    the old `path`, if any, is left as it was."""
    path = Path(path)
    folder = path.parent
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise _storage_error(path, e) from None
    remove_leftovers(folder)
    tmp = folder / f".{path.name}{TMP_INFIX}{os.getpid()}-{secrets.token_hex(4)}"
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)  # mode & ~umask
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
        _fsync_folder(folder)
    except OSError as e:
        try:
            tmp.unlink(missing_ok=True)
        except OSError:
            pass  # a read-only filesystem keeps it; the next run removes it
        raise _storage_error(path, e) from None


def _fsync_folder(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:  # a platform that cannot open folders (Windows): the rename is what it has
        return
    try:
        os.fsync(fd)
    except OSError as e:
        if e.errno not in (errno.EINVAL, errno.ENOTSUP):  # some filesystems cannot fsync a folder
            raise
    finally:
        os.close(fd)


def append_line(path: str | Path, line: str) -> None:
    """`line` and a newline at the end of a log file (metrics.jsonl). A full disk or a refused
    write is a StorageError naming `path`; a torn last line is possible there, so such a log must be
    one its writer can rewrite whole (the training loop rewrites metrics.jsonl from the checkpoint
    on --resume)."""
    path = Path(path)
    try:
        with open(path, "a") as f:
            f.write(line + "\n")
    except OSError as e:
        raise _storage_error(path, e) from None


def _storage_error(path: Path, e: OSError) -> StorageError:
    cause = e.strerror or str(e)
    if e.errno in (errno.ENOSPC, errno.EDQUOT):
        hint = "free some space"
    elif e.errno == errno.EROFS:
        hint = "the filesystem is read-only"
    elif e.errno in (errno.EACCES, errno.EPERM):
        hint = "no permission to write there"
    else:
        hint = "the storage failed"
    kept = "the previous file is kept" if path.exists() else "nothing was written"
    return StorageError(f"{path}: not saved: {cause} ({hint}; {kept})")


def remove_leftovers(folder: str | Path) -> list[Path]:
    """Remove the temporary files (see atomic_write) in `folder` whose writer is no longer running:
    what a save killed half way left. Returns what it removed."""
    removed = []
    try:
        names = os.listdir(folder)
    except OSError:
        return removed
    for name in names:
        if not name.startswith(".") or TMP_INFIX not in name:
            continue
        pid = name.rsplit(TMP_INFIX, 1)[1].split("-", 1)[0]
        if not pid.isdigit() or _alive(int(pid)):
            continue
        try:
            os.unlink(Path(folder) / name)
            removed.append(Path(folder) / name)
        except OSError:
            pass
    return removed


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True
