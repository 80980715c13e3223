"""minadapt.progress, drawn into a StringIO with a fake clock."""
import io

import pytest

from minadapt import progress
from minadapt.progress import Progress


class TTY(io.StringIO):
    def isatty(self):
        return True


@pytest.fixture
def clock(monkeypatch):
    t = [0.0]
    monkeypatch.setattr(progress, "_now", lambda: t[0])
    return t


def test_line_format(clock):
    bar = Progress(1000, desc="train", file=io.StringIO())
    clock[0] = 12.2
    bar.update(430, loss=0.412345, step=7)
    assert bar.line() == "train  43% |████▎     | 430/1000 [00:12<00:16, 35.2 it/s] loss=0.4123 step=7"


def test_bytes_use_human_units(clock):
    bar = Progress(90_900_000, desc="model.safetensors", unit="B", file=io.StringIO())
    clock[0] = 10.0
    bar.update(30_300_000)
    assert bar.line() == "model.safetensors  33% |███▎      | 30.3/90.9 MB [00:10<00:20, 3.0 MB/s]"
    open_ended = Progress(None, unit="B", file=io.StringIO())
    clock[0] = 12.0
    open_ended.update(2_500)
    assert open_ended.line() == "2.5 KB [00:02, 1.2 KB/s]"


def test_not_a_tty_writes_few_plain_lines(clock):
    out = io.StringIO()
    with Progress(100, file=out) as bar:
        for i in range(100):
            clock[0] = i * 0.5  # 50 s in all: a line at 10, 20, 30, 40 s, then the final one
            bar.update(1)
    lines = out.getvalue().splitlines()
    assert len(lines) == 5 and "\r" not in out.getvalue()
    assert lines[-1].startswith("100% |██████████| 100/100")


def test_tty_redraws_in_place(clock):
    out = TTY()
    bar = Progress(3, file=out, min_interval=0.0)
    for i in range(3):
        clock[0] = i + 1.0
        bar.update(1, loss=10.0 ** -i)
    bar.set_postfix(lr=3e-4)
    bar.close()
    text = out.getvalue()
    assert text.endswith("\n") and text.count("\n") == 1
    assert text.count("\r") == 6  # first draw, three updates, set_postfix, close
    assert text.rsplit("\r", 1)[1].strip() == "100% |██████████| 3/3 [00:03<00:00, 1.0 it/s] loss=0.01 lr=0.0003"
