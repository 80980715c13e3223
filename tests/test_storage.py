"""Saves survive a full disk, a read-only filesystem and a kill: `path` is always its old content or
all of the new one, errors are one line naming the file (exit 2 from the CLI), modes follow the
umask, and what a killed save left is removed by the next.

Storage faults are injected at each system call of a save (os.open, os.write, os.fsync,
os.replace): a real full tmpfs needs privileges the tests do not have.
"""
import errno
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from minadapt.errors import StorageError
from minadapt.io import weights
from minadapt.io.weights import TMP_INFIX, read_safetensors, remove_leftovers, save_tensors

REPO = Path(__file__).resolve().parents[1]
OLD = {"w": np.arange(6, dtype=np.float32).reshape(2, 3)}
NEW = {"w": np.ones((50, 50), np.float32), "b": np.zeros(50, np.float32)}


def leftovers(folder: Path) -> list:
    return sorted(p.name for p in folder.iterdir() if TMP_INFIX in p.name)


def test_a_save_writes_the_file_whole_with_the_umasks_mode(tmp_path):
    old = os.umask(0o022)
    try:
        save_tensors(tmp_path / "a.safetensors", NEW, {"k": "v"})
        os.umask(0o027)
        save_tensors(tmp_path / "b.safetensors", NEW, {})
    finally:
        os.umask(old)
    tensors, meta = read_safetensors(tmp_path / "a.safetensors")
    assert meta == {"k": "v"} and np.array_equal(tensors["w"], NEW["w"])
    assert (tmp_path / "a.safetensors").stat().st_mode & 0o777 == 0o644
    assert (tmp_path / "b.safetensors").stat().st_mode & 0o777 == 0o640
    assert leftovers(tmp_path) == []


def test_a_save_fsyncs_the_file_before_the_rename_and_the_folder_after(tmp_path, monkeypatch):
    calls = []
    real_fsync, real_replace = os.fsync, os.replace
    monkeypatch.setattr(os, "fsync", lambda fd: (calls.append(("fsync", os.readlink(f"/proc/self/fd/{fd}"))),
                                                 real_fsync(fd)))
    monkeypatch.setattr(os, "replace", lambda a, b: (calls.append(("replace", str(b))), real_replace(a, b)))
    save_tensors(tmp_path / "a.safetensors", NEW, {})
    assert [c[0] for c in calls] == ["fsync", "replace", "fsync"]
    assert TMP_INFIX in calls[0][1] and calls[1][1] == str(tmp_path / "a.safetensors")
    assert calls[2][1] == str(tmp_path)


FAULTS = [(call, code) for call in ("open", "write", "fsync", "replace")
          for code in (errno.ENOSPC, errno.EROFS, errno.EDQUOT)]


@pytest.mark.parametrize("call, code", FAULTS, ids=[f"{c}-{errno.errorcode[e]}" for c, e in FAULTS])
def test_a_storage_fault_at_any_call_keeps_the_last_good_file(tmp_path, monkeypatch, call, code):
    path = tmp_path / "adapter.safetensors"
    save_tensors(path, OLD, {"v": "old"})
    before = path.read_bytes()
    real = getattr(os, call)
    n = {"calls": 0}

    def fail(*args, **kw):
        n["calls"] += 1
        if call == "write" and n["calls"] == 1:  # half the bytes get through, then the disk is full
            fd, data = args
            return real(fd, data[:len(data) // 2])
        raise OSError(code, os.strerror(code))

    monkeypatch.setattr(os, call, fail)
    with pytest.raises(StorageError) as e:
        save_tensors(path, NEW, {"v": "new"})
    monkeypatch.undo()
    message = str(e.value)
    assert message.startswith(f"{path}: not saved: {os.strerror(code)}") and "\n" not in message
    assert "the previous file is kept" in message
    assert path.read_bytes() == before  # the last good file, untouched
    assert leftovers(tmp_path) == []


def test_a_safetensors_error_is_a_storage_error_naming_the_file(tmp_path):
    with pytest.raises(StorageError, match="x.safetensors: not saved"):
        save_tensors(tmp_path / "x.safetensors", {"w": np.zeros(3, dtype=object)}, {})


KILLED = """
import os, signal, sys
import numpy as np
from minadapt.io.weights import save_tensors
os.fsync = lambda fd: os.kill(os.getpid(), signal.SIGKILL)  # killed after writing, before the rename
save_tensors(sys.argv[1], {"w": np.ones(1000, np.float32)}, {})
"""


def test_a_killed_save_leaves_the_old_file_and_the_next_save_removes_its_leftover(tmp_path):
    path = tmp_path / "checkpoint.safetensors"
    save_tensors(path, OLD, {})
    before = path.read_bytes()
    r = subprocess.run([sys.executable, "-c", KILLED, str(path)], cwd=REPO)
    assert r.returncode == -signal.SIGKILL
    left = leftovers(tmp_path)
    assert len(left) == 1 and left[0].startswith(".checkpoint.safetensors.tmp-")
    assert path.read_bytes() == before
    save_tensors(tmp_path / "other.safetensors", OLD, {})  # any save in the folder cleans up
    assert leftovers(tmp_path) == []


def test_a_running_writers_temporary_file_is_not_removed(tmp_path):
    mine = tmp_path / f".a.safetensors{TMP_INFIX}{os.getpid()}-abcd"
    mine.write_bytes(b"x")
    assert remove_leftovers(tmp_path) == [] and mine.exists()


def test_a_full_disk_during_training_is_one_line_and_exit_2(checkpoint_dir, tmp_path, monkeypatch, capsys):
    """`minadapt train` whose checkpoint save meets a full disk: one line naming the file, exit
    code 2, no traceback, and no lock or temporary file left in --out."""
    from minadapt.cli import main

    data = tmp_path / "data" / "sst2"
    data.mkdir(parents=True)
    rows = ["a gorgeous , witty movie\t1", "dull and lifeless\t0", "i loved it\t1", "a mess\t0"] * 2
    for split in ("train", "dev"):
        (data / f"{split}.tsv").write_text("sentence\tlabel\n" + "\n".join(rows) + "\n")
    out = tmp_path / "out"

    def full(fd):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "fsync", full)
    code = main(["train", "sst2", "--data-dir", str(tmp_path / "data"), "--weights", str(checkpoint_dir),
                 "--out", str(out), "--max-steps", "1", "--batch-size", "4"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2, err
    assert err[-1].startswith("minadapt train: error: ") and str(out) in err[-1]
    assert "No space left on device" in err[-1] and "Traceback" not in "\n".join(err)
    assert leftovers(out) == [] and not (out / "train.lock").exists()


def test_a_filesystem_gone_read_only_reports_the_save_not_the_lock(checkpoint_dir, tmp_path, monkeypatch, capsys):
    """The save fails (EROFS), and then so does removing OUT/train.lock: the message is the save's."""
    import pathlib

    from minadapt.cli import main

    data = tmp_path / "data" / "sst2"
    data.mkdir(parents=True)
    rows = ["a gorgeous , witty movie\t1", "dull and lifeless\t0"] * 4
    for split in ("train", "dev"):
        (data / f"{split}.tsv").write_text("sentence\tlabel\n" + "\n".join(rows) + "\n")
    out = tmp_path / "out"
    real_unlink = pathlib.Path.unlink

    def read_only(fd):
        raise OSError(errno.EROFS, os.strerror(errno.EROFS))

    def unlink(self, missing_ok=False):
        if self.name == "train.lock":
            raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(self))
        return real_unlink(self, missing_ok=missing_ok)

    monkeypatch.setattr(os, "fsync", read_only)
    monkeypatch.setattr(pathlib.Path, "unlink", unlink)
    code = main(["train", "sst2", "--data-dir", str(tmp_path / "data"), "--weights", str(checkpoint_dir),
                 "--out", str(out), "--max-steps", "1", "--batch-size", "4"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2, err
    assert ": not saved: Read-only file system" in err[-1] and "train.lock" not in err[-1]


def test_a_full_disk_on_the_metrics_log_is_a_storage_error_naming_it(tmp_path, monkeypatch):
    """metrics.jsonl is appended to (the checkpoint holds the history, so --resume rewrites it
    whole): a failed append is a StorageError naming the file, not an OSError traceback."""
    log = tmp_path / "metrics.jsonl"
    weights.append_line(log, '{"step": 1}')

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(weights, "open", full, raising=False)
    with pytest.raises(StorageError, match="metrics.jsonl: not saved: No space left on device"):
        weights.append_line(log, '{"step": 2}')
    assert log.read_text() == '{"step": 1}\n'


def test_a_plot_meeting_a_full_disk_leaves_the_last_plot_whole(tmp_path, monkeypatch):
    from minadapt.train import plot_history

    history = [{"kind": "train", "step": 1, "loss": 0.7}, {"kind": "eval", "step": 1, "dev_score": 0.5}]
    png = plot_history(history, tmp_path / "training.png")
    before = png.read_bytes()
    monkeypatch.setattr(os, "fsync", lambda fd: (_ for _ in ()).throw(OSError(errno.ENOSPC, "No space")))
    with pytest.raises(StorageError, match="training.png"):
        plot_history(history + [{"kind": "eval", "step": 2, "dev_score": 0.6}], png)
    assert png.read_bytes() == before and leftovers(tmp_path) == []
