"""Data-parallel training over MPI (minadapt/parallel/mpi.py), with `mpiexec` from the `mpich` wheel.

mpiexec -n 1, 2 and 4 at the same global batch and seed give the same losses and dev accuracy (to
float32 rounding: the masks are drawn per sentence); a checkpoint written with N ranks resumes
with any other number; a rank that is killed or fails ends the job within seconds, with a message;
Ctrl-C on mpiexec saves a checkpoint. MPI comes from wheels: the session installs `mpi4py` and
`mpich` into this Python when they are missing (skipping, with the reason, when pip cannot).
"""
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from minadapt.parallel.mpi import launched, rows
from minadapt.row_generators import RowGenerators

REPO = Path(__file__).resolve().parents[1]
MPIEXEC = Path(sys.executable).parent / "mpiexec"

SENTENCES = ["a gorgeous , witty , seductive movie .", "dull and lifeless", "the best film of the year",
             "an utter waste of time", "charming and funny", "painfully boring", "i loved it",
             "it 's a mess", "warm , moving and wise", "flat , tired and predictable",
             "a triumph of style over substance", "one of the year 's most satisfying films"] * 4
LABELS = [1, 0, 1, 0, 1, 0, 1, 0, 1, 0, 0, 1] * 4

# What each rank runs: train() on the tiny data, rank 0 writing every step's loss to OUT/losses.json.
DRIVER = textwrap.dedent("""
    import dataclasses, json, os, signal, sys, time
    import numpy as np
    import minadapt
    from minadapt.checkpoints import Interrupted
    from minadapt.train import TrainConfig, train
    from minadapt.parallel.mpi import launched

    args = json.loads(sys.argv[1])
    rank = launched()[0]
    data = {"train": (args["sentences"], np.array(args["labels"])),
            "dev": (args["sentences"][:20], np.array(args["labels"][:20]))}
    model = minadapt.load_model(args["weights"])
    if args.get("no_dropout"):
        model.cfg = dataclasses.replace(model.cfg, hidden_dropout_prob=0.0,
                                        attention_probs_dropout_prob=0.0)
    losses = []

    def callback(step, loss):
        losses.append(loss)
        if step == args.get("started_at") and rank == 0:
            open(os.path.join(args["out"], "started"), "w").close()
        if step == args.get("kill_at") and rank == args.get("kill_rank", 1):
            os.kill(os.getpid(), signal.SIGKILL)
        if step == args.get("fail_at") and rank == 1:
            raise RuntimeError("rank 1 fails on purpose")
        if step == args.get("stop_at"):
            raise Interrupted()  # as Ctrl-C after this step, on every rank
        time.sleep(args.get("sleep", 0))

    cfg = TrainConfig(out=args["out"], max_steps=args["steps"], batch_size=8, options={"bottleneck": 8},
                      eval_every=0, lr=1e-2, seed=3)
    r = train(cfg, model=model, data=data, callback=callback, resume=args.get("resume", False),
              progress=False)
    if rank == 0:
        with open(os.path.join(args["out"], "losses.json"), "w") as f:
            json.dump({"losses": losses, "dev_accuracy": r.dev_accuracy, "steps": r.steps}, f)
""")


@pytest.fixture(scope="session")
def mpiexec():
    """mpiexec beside this Python, with mpi4py importable; installed from wheels when missing."""
    def ready():
        ok = subprocess.run([sys.executable, "-c", "import mpi4py.MPI"], capture_output=True)
        return MPIEXEC.is_file() and ok.returncode == 0

    if not ready():
        r = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "mpi4py", "mpich"],
                           capture_output=True, text=True)
        if r.returncode != 0 or not ready():
            pytest.skip(f"MPI could not be installed from wheels (pip install mpi4py mpich): "
                        f"{(r.stderr or r.stdout).strip()[-300:]}")
    return MPIEXEC


def _run(mpiexec, n, tmp_path, name, checkpoint_dir, timeout=120, **args):
    """Train with n ranks (n=0: plain python, no mpiexec); returns (completed process, losses.json)."""
    out = tmp_path / name
    out.mkdir(exist_ok=True)
    args = {"sentences": SENTENCES, "labels": LABELS, "weights": str(checkpoint_dir),
            "out": str(out), "steps": 4, **args}
    script = tmp_path / "driver.py"
    script.write_text(DRIVER)
    command = [sys.executable, str(script), json.dumps(args)]
    if n:
        command = [str(mpiexec), "-n", str(n), *command]
    env = {**os.environ, "MPLBACKEND": "Agg"}
    p = subprocess.run(command, capture_output=True, text=True, timeout=timeout, env=env, cwd=REPO)
    result = out / "losses.json"
    return p, json.loads(result.read_text()) if result.is_file() else None


def test_launched_reads_the_launchers_environment(monkeypatch):
    for k in ("PMI_RANK", "PMI_SIZE", "OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_SIZE", "PMIX_RANK",
              "PMIX_SIZE"):
        monkeypatch.delenv(k, raising=False)
    assert launched() == (0, 1)
    monkeypatch.setenv("OMPI_COMM_WORLD_SIZE", "4")
    monkeypatch.setenv("OMPI_COMM_WORLD_RANK", "2")
    assert launched() == (2, 4)


def test_rows_cover_the_batch_in_rank_order():
    for B, n in ((32, 2), (32, 3), (5, 4), (3, 4)):
        parts = [rows(B, r, n) for r in range(n)]
        assert parts[0].start == 0 and parts[-1].stop == B
        assert all(a.stop == b.start for a, b in zip(parts, parts[1:]))


def test_row_generators_draw_the_same_rows_however_the_batch_is_cut():
    """A sentence's mask does not depend on the rows beside it: drawn whole, or in two parts."""
    from minadapt.fast.numerics import keep_mask

    whole = RowGenerators.draw(np.random.default_rng(9), 6)
    a, b = RowGenerators.draw(np.random.default_rng(9), 6, slice(0, 2)), \
        RowGenerators.draw(np.random.default_rng(9), 6, slice(2, 6))
    for shape in ((6, 3, 5), (6, 7)):
        m_whole, _ = keep_mask(whole, shape, 0.1)
        m_a, _ = keep_mask(a, (2, *shape[1:]), 0.1)
        m_b, _ = keep_mask(b, (4, *shape[1:]), 0.1)
        np.testing.assert_array_equal(m_whole, np.concatenate([m_a, m_b]))
        np.testing.assert_array_equal(whole.random(shape), np.concatenate([a.random((2, *shape[1:])),
                                                                           b.random((4, *shape[1:]))]))


@pytest.mark.slow
def test_mpi_ranks_train_as_one_process(mpiexec, tmp_path, checkpoint_dir):
    """The same losses, step by step, and the same dev accuracy with 1 process and 2 and 4 ranks:
    to float32 rounding with dropout on, to ~1e-6 with it off."""
    runs = {}
    for n in (0, 2, 4):
        p, result = _run(mpiexec, n, tmp_path, f"n{n}", checkpoint_dir)
        assert p.returncode == 0 and result, p.stdout + p.stderr
        runs[n] = result
    for n in (2, 4):
        np.testing.assert_allclose(runs[n]["losses"], runs[0]["losses"], rtol=2e-5)
        assert runs[n]["dev_accuracy"] == runs[0]["dev_accuracy"]
    assert len(set(runs[0]["losses"])) == 4
    p1, off1 = _run(mpiexec, 0, tmp_path, "off1", checkpoint_dir, no_dropout=True)
    p2, off2 = _run(mpiexec, 2, tmp_path, "off2", checkpoint_dir, no_dropout=True)
    assert off1 and off2, p1.stderr + p2.stderr
    np.testing.assert_allclose(off2["losses"], off1["losses"], rtol=0, atol=1e-6)


@pytest.mark.slow
def test_checkpoints_resume_across_rank_counts(mpiexec, tmp_path, checkpoint_dir):
    """Stopped after step 2 with 2 ranks, resumed with 1 process: the losses of a straight run of
    1 process; and stopped with 1, resumed with 2."""
    p, straight = _run(mpiexec, 0, tmp_path, "straight", checkpoint_dir)
    assert straight, p.stderr
    for first, then in ((2, 0), (0, 2)):
        name = f"from{first}to{then}"
        p, _ = _run(mpiexec, first, tmp_path, name, checkpoint_dir, stop_at=2)
        assert p.returncode == 0 and (tmp_path / name / "checkpoint.safetensors").is_file(), p.stderr
        p, resumed = _run(mpiexec, then, tmp_path, name, checkpoint_dir, resume=True)
        assert p.returncode == 0 and resumed, p.stdout + p.stderr
        np.testing.assert_allclose(resumed["losses"], straight["losses"][2:], rtol=2e-5)
        assert resumed["dev_accuracy"] == straight["dev_accuracy"]


@pytest.mark.slow
@pytest.mark.parametrize("how", ["killed", "fails"])
def test_a_rank_that_dies_ends_the_job(mpiexec, tmp_path, checkpoint_dir, how):
    """Rank 1 killed (SIGKILL) or failing with an exception at step 2 of 200: mpiexec ends the
    job within seconds, with a message, instead of rank 0 waiting for it forever."""
    fault = {"kill_at": 2} if how == "killed" else {"fail_at": 2}
    t0 = time.perf_counter()
    p, result = _run(mpiexec, 2, tmp_path, how, checkpoint_dir, steps=200, timeout=60, **fault)
    seconds = time.perf_counter() - t0
    assert p.returncode != 0 and result is None
    text = p.stdout + p.stderr
    if how == "killed":  # the only message there can be is mpiexec's own, about the dead process
        assert "BAD TERMINATION" in text or "APPLICATION TERMINATED" in text, text
    else:  # the rank's own traceback is the message; mpiexec's banner about the Abort that
        # follows it is printed by the aborting process as it is torn down, and is not always
        # forwarded (seen missing once in CI), so it is not what a user relies on
        assert "rank 1 fails on purpose" in text, text
    assert seconds < 40, seconds  # 200 steps would take far longer


@pytest.mark.slow
def test_an_out_folder_in_use_ends_every_rank(mpiexec, tmp_path, checkpoint_dir):
    """OUT/train.lock held by a live process: rank 0 refuses, and the job ends with its message
    (rank 1, which never takes the lock, must not wait for rank 0 forever)."""
    out = tmp_path / "busy"
    out.mkdir()
    (out / "train.lock").write_text(str(os.getpid()))  # this pytest process: alive
    t0 = time.perf_counter()
    p, result = _run(mpiexec, 2, tmp_path, "busy", checkpoint_dir, timeout=60)
    assert p.returncode != 0 and result is None
    assert "is using it" in p.stdout + p.stderr, p.stdout + p.stderr
    assert time.perf_counter() - t0 < 40


@pytest.mark.slow
def test_ctrl_c_on_mpiexec_saves_a_checkpoint(mpiexec, tmp_path, checkpoint_dir):
    """SIGINT to mpiexec reaches every rank; they stop after the same step and rank 0 saves."""
    out = tmp_path / "ctrlc"
    out.mkdir()
    args = {"sentences": SENTENCES, "labels": LABELS, "weights": str(checkpoint_dir),
            "out": str(out), "steps": 200, "started_at": 1, "sleep": 0.05}
    script = tmp_path / "driver.py"
    script.write_text(DRIVER)
    proc = subprocess.Popen([str(mpiexec), "-n", "2", sys.executable, str(script), json.dumps(args)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO,
                            env={**os.environ, "MPLBACKEND": "Agg"})
    try:
        deadline = time.time() + 60
        while not (out / "started").exists() and time.time() < deadline and proc.poll() is None:
            time.sleep(0.1)
        assert (out / "started").exists(), proc.communicate(timeout=10)
        proc.send_signal(signal.SIGINT)
        stdout, stderr = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert "interrupted after step" in stdout, stdout + stderr
    assert stdout.count("interrupted after step") == 1  # rank 0 alone reports
    assert (out / "checkpoint.safetensors").is_file()


@pytest.mark.slow
def test_the_command_under_mpiexec(mpiexec, tmp_path, checkpoint_dir):
    """`mpiexec -n 2 minadapt train`: rank 0 alone reports and writes; an error (here --resume
    with no checkpoint, seen by every rank) ends the job with the message, not a hang."""
    data = tmp_path / "sst2"
    data.mkdir()
    for split, n in (("train", 48), ("dev", 12)):
        lines = [f"{s}\t{y}" for s, y in zip(SENTENCES[:n], LABELS[:n])]
        (data / f"{split}.tsv").write_text("sentence\tlabel\n" + "\n".join(lines) + "\n")
    command = [str(mpiexec), "-n", "2", sys.executable, "-m", "minadapt.cli", "train", "sst2",
               "--data-dir", str(data), "--weights", str(checkpoint_dir), "--out", str(tmp_path / "run"),
               "--max-steps", "3", "--batch-size", "8", "--bottleneck", "8", "--eval-every", "0"]
    env = {**os.environ, "MPLBACKEND": "Agg"}
    p = subprocess.run(command, capture_output=True, text=True, timeout=120, env=env, cwd=REPO)
    assert p.returncode == 0, p.stdout + p.stderr
    assert p.stdout.count("dev accuracy") == 1 and p.stdout.count("resuming") == 0
    assert (tmp_path / "run" / "adapter.safetensors").is_file()
    t0 = time.perf_counter()
    p = subprocess.run([*command[:-1], "0", "--resume", "--out", str(tmp_path / "none")],
                       capture_output=True, text=True, timeout=60, env=env, cwd=REPO)
    assert p.returncode != 0 and "--resume: no checkpoint" in p.stderr, p.stdout + p.stderr
    assert time.perf_counter() - t0 < 30
