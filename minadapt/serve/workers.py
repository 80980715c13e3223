"""`serve --workers N`: N processes answering on one socket, forked after the model is loaded.

Forking after loading shares the frozen weights between the workers: each child sees the parent's
pages copy-on-write, and nothing writes to a frozen weight, so the pages stay shared (gc.freeze()
keeps the collector from touching the objects the parent made). What a worker adds of its own is
its activations, workspaces and Python heap (benchmarks/README.md measures it). The kernel spreads
new connections over the workers, which all accept on the socket the parent bound.

Each worker is a whole server (app, model thread, uvicorn); the parent only watches: SIGTERM or
Ctrl-C to the parent is passed to every worker as SIGTERM (workers ignore SIGINT, so a Ctrl-C
reaching the whole process group stops each one once), and a worker that dies is forked again.
Each worker should use cores / N BLAS threads (OPENBLAS_NUM_THREADS / OMP_NUM_THREADS) so the N
do not fight over the same cores.
"""
from __future__ import annotations

import gc
import os
import signal
import sys
import time

from .server import SHUTDOWN_S, serve

RESTART_PAUSE_S = 1.0  # a worker that dies is forked again after this, at the earliest


def _child(make_server, i: int) -> int:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)  # not the parent's handler, until serve() sets its own
    try:
        server = make_server()
        return serve(server, out=sys.stderr, name=f"minadapt serve [worker {i}]",
                     signals=(signal.SIGTERM,))
    except BaseException:
        import traceback
        traceback.print_exc()
        return 1


def _fork(make_server, i: int) -> int:
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            code = _child(make_server, i)
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(code)
    return pid


def run_workers(make_server, n: int, url: str, out=None) -> int:
    """Fork n workers, each serving `make_server()` (called in the child, so each has its own model
    thread and event loop), and watch them until SIGTERM / SIGINT; 0 when all stopped cleanly."""
    stopping = []

    def on_signal(signum, frame):
        if not stopping:
            print(f"minadapt serve: {signal.Signals(signum).name}: stopping {n} workers",
                  file=sys.stderr, flush=True)
        stopping.append(signum)
        for pid in workers:
            try:
                os.kill(pid, signal.SIGTERM if len(stopping) == 1 else signal.SIGKILL)
            except ProcessLookupError:
                pass

    gc.freeze()  # the objects made so far stay where they are: their pages stay shared
    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    workers: dict[int, int] = {}  # pid -> worker number
    try:
        for i in range(n):
            workers[_fork(make_server, i)] = i
        print(f"minadapt serve: listening on {url} with {n} workers (POST /predict, GET /tasks, "
              "GET /health; Ctrl-C stops)", file=out or sys.stdout, flush=True)
        codes = {}
        deadline = None
        while workers:
            if stopping and deadline is None:
                deadline = time.monotonic() + SHUTDOWN_S + 5
            if deadline is not None and time.monotonic() > deadline:
                for pid in workers:
                    os.kill(pid, signal.SIGKILL)
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                break
            if pid == 0:
                time.sleep(0.1)
                continue
            i = workers.pop(pid, None)
            if i is None:
                continue
            code = os.waitstatus_to_exitcode(status)
            if stopping:
                codes[i] = code
            else:
                print(f"minadapt serve: worker {i} (pid {pid}) ended with status {code}: "
                      "starting it again", file=sys.stderr, flush=True)
                time.sleep(RESTART_PAUSE_S)
                workers[_fork(make_server, i)] = i
    finally:
        for s, h in previous.items():
            signal.signal(s, h)
        gc.unfreeze()
    bad = {i: c for i, c in codes.items() if c != 0}
    print(f"minadapt serve: {n} workers stopped" + (f" ({len(bad)} not cleanly: {bad})" if bad else ""),
          file=sys.stderr, flush=True)
    return 0 if not bad else 1
