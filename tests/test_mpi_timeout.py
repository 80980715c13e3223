"""A rank that stops answering (SIGSTOP) ends an MPI job within a bounded time, with a message:
the others wait in a collective at most MINADAPT_MPI_TIMEOUT seconds; Ctrl-C on mpiexec ends it
within seconds whatever the stopped rank does. The job is tests/test_mpi.py's tiny training."""
import json
import os
import signal
import subprocess
import sys
import time

import pytest

from minadapt.errors import ConfigError
from minadapt.parallel.mpi import collective_timeout
from tests.test_mpi import DRIVER, LABELS, REPO, SENTENCES, mpiexec  # noqa: F401 (fixture)

# rank 1 stops itself (SIGSTOP) after step `stop_at`: it neither dies nor fails, it stops answering
STOPPING = DRIVER.replace('''    if step == args.get("stop_at"):''', '''    if step == args.get("sigstop_at") and rank == 1:
        os.kill(os.getpid(), signal.SIGSTOP)
    if step == args.get("stop_at"):''')
assert STOPPING != DRIVER


def start(mpiexec, tmp_path, checkpoint_dir, timeout_s):
    out = tmp_path / "out"
    out.mkdir()
    args = {"sentences": SENTENCES, "labels": LABELS, "weights": str(checkpoint_dir),
            "out": str(out), "steps": 200, "sigstop_at": 2, "started_at": 1}
    script = tmp_path / "driver.py"
    script.write_text(STOPPING)
    env = {**os.environ, "MPLBACKEND": "Agg", "MINADAPT_MPI_TIMEOUT": str(timeout_s)}
    proc = subprocess.Popen([str(mpiexec), "-n", "2", sys.executable, str(script), json.dumps(args)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO,
                            env=env, start_new_session=True)
    deadline = time.time() + 90
    while not (out / "started").exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.1)
    return proc, out


def finish(proc, timeout):
    try:
        return proc.communicate(timeout=timeout)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()


@pytest.mark.slow
def test_a_stopped_rank_ends_the_job_after_the_collective_timeout(mpiexec, tmp_path, checkpoint_dir):
    proc, out = start(mpiexec, tmp_path, checkpoint_dir, timeout_s=5)
    t0 = time.perf_counter()
    stdout, stderr = finish(proc, 60)
    seconds = time.perf_counter() - t0
    assert proc.returncode != 0
    assert "rank 0 of 2: no answer from the other ranks" in stderr, stdout + stderr
    assert "within 5 s" in stderr and "MINADAPT_MPI_TIMEOUT" in stderr
    assert seconds < 30, seconds  # 5 s of waiting, the steps before, and mpiexec's teardown


@pytest.mark.slow
def test_ctrl_c_ends_a_job_with_a_stopped_rank_within_seconds(mpiexec, tmp_path, checkpoint_dir):
    proc, out = start(mpiexec, tmp_path, checkpoint_dir, timeout_s=600)
    time.sleep(3)  # rank 1 has stopped; rank 0 waits for it
    t0 = time.perf_counter()
    proc.send_signal(signal.SIGINT)
    stdout, stderr = finish(proc, 60)
    seconds = time.perf_counter() - t0
    assert proc.returncode != 0
    assert seconds < 15, (seconds, stdout + stderr)
    assert "no answer from the other ranks" in stderr and "within 10 s" in stderr, stdout + stderr


@pytest.mark.parametrize("value, want", [("", 60.0), ("2.5", 2.5)])
def test_the_timeout_comes_from_the_environment(monkeypatch, value, want):
    monkeypatch.setenv("MINADAPT_MPI_TIMEOUT", value)
    assert collective_timeout() == want


@pytest.mark.parametrize("value", ["0", "-1", "soon", "inf", "nan"])
def test_a_bad_timeout_is_one_clear_error(monkeypatch, value):
    monkeypatch.setenv("MINADAPT_MPI_TIMEOUT", value)
    with pytest.raises(ConfigError, match="MINADAPT_MPI_TIMEOUT"):
        collective_timeout()
