"""The listening socket, uvicorn around the app, and a clean stop.

`make_server(model, host, port)` binds the socket (a real backlog), starts the model thread and
returns a `PredictServer`; `serve_forever()` answers until `close()` (from another thread) or, under
`serve()`, SIGTERM / Ctrl-C. Stopping: the socket stops accepting, idle and half-sent connections
are closed at once, bodies still arriving get 503, requests already with the model are answered
(for up to `shutdown_timeout` seconds), then the model thread ends.
"""
from __future__ import annotations

import asyncio
import contextlib
import errno
import functools
import logging
import signal
import socket
import sys
import threading

import uvicorn

from ..errors import ServeError, WeightsError
from .app import MAX_BODY, MAX_TEXTS, WAIT_S, App
from .batcher import MAX_BATCH, Batcher
from .connections import GuardedH11, Limits
from .tasks import task_infos

BACKLOG = 2048  # connections the kernel queues before accept (socketserver's default was 5)
KEEP_ALIVE_S = 5.0  # an idle kept-alive connection is closed after this
SHUTDOWN_S = 30.0  # how long a stop waits for requests already with the model


def bind(host: str, port: int, backlog: int = BACKLOG) -> socket.socket:
    """A listening TCP socket on host:port, or a ServeError saying why not."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # old connections in TIME_WAIT
    try:
        sock.bind((host, port))
        sock.listen(backlog)
    except OSError as e:
        sock.close()
        raise ServeError(_bind_message((host, port), e)) from None
    sock.set_inheritable(True)
    return sock


def _bind_message(address, e: OSError) -> str:
    where = f"{address[0]}:{address[1]}"
    if e.errno == errno.EADDRINUSE:
        return f"{where} is in use (another server?): stop it or pick another --port"
    if e.errno == errno.EADDRNOTAVAIL:
        return f"{where}: {address[0]} is not an address of this machine (try --host 127.0.0.1)"
    if e.errno in (errno.EACCES, errno.EPERM):
        return f"{where}: not allowed to listen there (ports below 1024 need privileges; try --port 8000)"
    if isinstance(e, socket.gaierror):
        return f"{where}: unknown host {address[0]!r}"
    return f"cannot listen on {where}: {e.strerror or e}"


class _Uvicorn(uvicorn.Server):
    """uvicorn's server, with our signal handling (serve() sets should_exit) rather than its own,
    which re-raises the signal after stopping (exit status -15, not 0), and the app told first."""

    def __init__(self, config, app: App):
        super().__init__(config)
        self.minadapt_app = app

    @contextlib.contextmanager
    def capture_signals(self):
        yield

    async def shutdown(self, sockets=None):
        self.minadapt_app.stop()
        await super().shutdown(sockets)


class PredictServer:
    """A bound socket, the app, its model thread; serve_forever() runs uvicorn in this thread."""

    def __init__(self, sock: socket.socket, model, tasks: dict, max_batch=MAX_BATCH,
                 max_texts=MAX_TEXTS, max_body=MAX_BODY, limits: Limits = Limits(),
                 keep_alive=KEEP_ALIVE_S, shutdown_timeout=SHUTDOWN_S, log_requests=False,
                 wait_s=WAIT_S):
        self.socket, self.model, self.tasks = sock, model, tasks
        self.server_address = sock.getsockname()
        self.batcher = Batcher(model, max_batch)
        self.app = App(model, tasks, self.batcher, limits, max_texts, max_body, wait_s)
        config = uvicorn.Config(
            self.app, lifespan="off", loop="asyncio", http=functools.partial(GuardedH11, limits=limits),
            ws="none", server_header=False, headers=[("server", "minadapt")],
            timeout_keep_alive=keep_alive, timeout_graceful_shutdown=shutdown_timeout,
            h11_max_incomplete_event_size=limits.max_head, access_log=log_requests, log_config=None)
        for name in ("uvicorn.error", "uvicorn.access"):  # what a client sent is not a server error
            logging.getLogger(name).setLevel(logging.INFO if log_requests else logging.ERROR)
        self.uvicorn = _Uvicorn(config, self.app)
        self._done = threading.Event()
        self._running = False

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"

    @property
    def requests_served(self) -> int:
        return self.app.requests_served

    def serve_forever(self):
        """Answer until close() or stop(); then the socket is closed."""
        self._running = True
        try:
            asyncio.run(self.uvicorn.serve(sockets=[self.socket]))
        finally:
            self._done.set()

    def stop(self):
        """Begin stopping (safe from a signal handler); a second call stops without waiting."""
        if self.uvicorn.should_exit:
            self.uvicorn.force_exit = True
        self.uvicorn.should_exit = True

    def close(self):
        """Stop: no new connection, answer those under way, close the socket, end the model thread.
        Call from another thread than serve_forever's (or after it returned)."""
        self.stop()
        if self._running:
            self._done.wait()
        self.socket.close()
        self.batcher.stop()


def make_server(model, host: str = "127.0.0.1", port: int = 8000, max_batch: int = MAX_BATCH,
                max_texts: int = MAX_TEXTS, max_body: int = MAX_BODY, log_requests: bool = False,
                paths: dict | None = None, sock: socket.socket | None = None, **kw) -> PredictServer:
    """A PredictServer bound to host:port (port 0: a free one, see `.server_address`) for every task
    `model` holds, its model thread started; call serve_forever() to answer and close() to stop.
    paths: task -> the file it came from (for error messages); sock: an already bound socket.
    ServeError when it cannot bind. kw: limits, keep_alive, shutdown_timeout, wait_s."""
    from ..train import need_tokenizer

    need_tokenizer(model)
    tasks = task_infos(model, paths)
    if not tasks:
        raise WeightsError("the model holds no task: load an adapter file first")
    sock = sock or bind(host, port)
    return PredictServer(sock, model, tasks, max_batch, max_texts, max_body,
                         log_requests=log_requests, **kw)


def serve(server: PredictServer, out=None, name: str = "minadapt serve",
          signals=(signal.SIGINT, signal.SIGTERM)) -> int:
    """Answer requests until SIGTERM or SIGINT (Ctrl-C), then stop cleanly; returns 0. Run it in
    the main thread (signal handlers can only be set there). A second signal stops at once."""
    received = []

    def on_signal(signum, frame):
        received.append(signal.Signals(signum).name)
        if len(received) == 1:
            print(f"{name}: {received[0]}: answering the requests under way, then stopping",
                  file=sys.stderr, flush=True)
        server.stop()

    previous = {s: signal.signal(s, on_signal) for s in signals}
    print(f"{name}: listening on {server.url} (POST /predict, GET /tasks, GET /health; "
          "Ctrl-C stops)", file=out or sys.stdout, flush=True)
    try:
        server.serve_forever()
        server.close()
    finally:
        for s, h in previous.items():
            signal.signal(s, h)
    print(f"{name}: stopped after {server.requests_served} answered requests "
          f"({server.batcher.forwards} forwards)", file=sys.stderr, flush=True)
    return 0
