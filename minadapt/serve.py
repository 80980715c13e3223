"""`minadapt serve`: one backbone and every given adapter behind a small HTTP server.

    minadapt serve --adapter runs/sst2/adapter.safetensors --adapter runs/topic/adapter.safetensors

    POST /predict  {"task": "sst2", "texts": ["a gorgeous film", ...]}        (or "pairs": [[a, b], ...])
               ->  {"task": "sst2", "predictions": [{"label": "positive", "probability": 0.97,
                                                      "probabilities": {"negative": 0.03, "positive": 0.97}}, ...]}
                   a regression task (STS-B) answers {"score": 3.1} per text instead
    GET  /tasks    {"tasks": [{"name": "sst2", "labels": ["negative", "positive"], "regression": false}, ...]}
    GET  /health   {"status": "ok", "tasks": ["sst2", "topic"]}

`task` may be left out when the server holds one task. A bad request gets a 4xx status and
{"error": "..."} saying what was wrong, and the server goes on serving: 400 a body that is not a
JSON object of task and texts (or pairs) of strings, 404 an unknown path or task, 405 a wrong
method, 411 no Content-Length, 413 a body over 1 MiB or over 256 texts. Each connection carries one
request (HTTP/1.0), so shutting down never waits on an idle kept-alive connection.

How a request runs. The HTTP threads (one per connection, `ThreadingHTTPServer`) read and check the
JSON and tokenise the texts, then hand them to the one model thread (`Batcher`) and wait. The model
is called from that thread only: its parameters and generator are not guarded for two callers, and
NumPy's BLAS already spreads one matmul over the cores. Requests that arrive while a forward runs
wait in a queue; the model thread then takes every waiting request for the oldest request's task
(up to --max-batch texts), sorts their texts by length, pads each batch to its own longest text, runs
one `model.logits` per batch and gives each request its own rows. So eight clients asking at once
cost two forwards, not eight, and a task never waits behind more than one batch of another.

The probabilities are softmax(logits), computed as `minadapt predict` computes them.
SIGTERM or Ctrl-C stops the server: no new connection is accepted, the requests under way are
answered, the socket is closed and the process exits 0.
"""
from __future__ import annotations

import argparse
import errno
import ipaddress
import json
import queue
import re
import signal
import socket
import sys
import threading
import traceback
from dataclasses import dataclass, field
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np

from .errors import MinadaptError, ServeError, WeightsError
from .predict import check_pairs

MAX_TEXTS = 256  # texts (or pairs) per request
MAX_BODY = 1 << 20  # bytes per request body (1 MiB): more is refused with 413 unread
MAX_BATCH = 64  # texts per forward
WAIT_S = 300.0  # a request whose forward has not come back by then gets 503
ROUTES = {"/predict": ("POST",), "/tasks": ("GET",), "/health": ("GET",)}
FIELDS = ("task", "texts", "pairs")


# --- tasks: what each adapter answers --------------------------------------------------------------
@dataclass(frozen=True)
class TaskInfo:
    name: str
    labels: tuple | None  # label names in logit order; None for a regression task
    regression: bool


def label_names(model, name: str, path="adapter") -> tuple | None:
    """The names of task `name`'s labels: its file's 'labels' metadata (as `minadapt predict` reads
    it), else its head's label names, else "0", "1", ...; None for a regression head."""
    head = model.heads[name]
    if head.regression:
        return None
    meta = model.metadata.get(name, {})
    names = head.labels
    if "labels" in meta:
        try:
            names = json.loads(meta["labels"])
        except json.JSONDecodeError:
            raise WeightsError(f"{path}: its metadata 'labels' is not JSON: {meta['labels'][:60]!r}") from None
        if not isinstance(names, list) or len(names) != head.num_labels:
            raise WeightsError(f"{path}: its metadata names labels {names!r}, but its head has "
                               f"{head.num_labels}")
    if names is None:
        names = range(head.num_labels)
    return tuple(str(x) for x in names)


def task_infos(model, paths: dict | None = None) -> dict[str, TaskInfo]:
    """A TaskInfo per task the model holds; every task needs a head (a WeightsError names the file
    of one that has none)."""
    paths = paths or {}
    infos = {}
    for name in model.names():
        if name not in model.heads:
            raise WeightsError(f"{paths.get(name, name)}: has no classification head, so it cannot "
                               "label texts (was it saved before add_classification_head?)")
        infos[name] = TaskInfo(name, label_names(model, name, paths.get(name, name)),
                               model.heads[name].regression)
    return infos


# --- the model thread --------------------------------------------------------------------------------
@dataclass(eq=False)
class Job:
    """One request's texts, tokenised, waiting for the model thread."""
    task: str
    ids: list  # one int64 array of token ids per text
    types: list  # its token type ids (1 on the second text of a pair)
    done: threading.Event = field(default_factory=threading.Event)
    logits: np.ndarray | None = None  # (len(ids), C), filled by the model thread
    error: BaseException | None = None


class Batcher:
    """The one thread that calls the model. `run(task, ids, types)` -> logits (n, C), from any thread.

    Each turn it takes everything waiting in the queue, picks the oldest request's task, and runs
    every waiting request of that task (up to max_batch texts; a request alone may exceed it) as
    batches of at most max_batch texts, sorted by length. Requests for other tasks wait for the
    next turn, which starts at once."""

    _STOP = object()

    def __init__(self, model, max_batch: int = MAX_BATCH):
        from .backend import to_numpy

        self.model, self.max_batch, self.to_numpy = model, max_batch, to_numpy
        self.queue: queue.Queue = queue.Queue()
        self.forwards = 0  # model.logits calls so far
        self.thread = threading.Thread(target=self._loop, name="minadapt-model", daemon=True)
        self.thread.start()

    def run(self, task: str, ids: list, types: list, timeout: float = WAIT_S) -> np.ndarray:
        job = Job(task, ids, types)
        self.queue.put(job)
        if not job.done.wait(timeout):
            raise TimeoutError(f"the model did not answer within {timeout:.0f} s")
        if job.error is not None:
            raise job.error
        return job.logits

    def stop(self):
        """Answer what is queued, then end the model thread."""
        self.queue.put(self._STOP)
        self.thread.join()

    def _loop(self):
        waiting, stopping = [], False
        while waiting or not stopping:
            if not waiting:
                item = self.queue.get()  # sleep until a request comes
                if item is self._STOP:
                    return
                waiting.append(item)
            while True:  # and take everything that came meanwhile
                try:
                    item = self.queue.get_nowait()
                except queue.Empty:
                    break
                if item is self._STOP:
                    stopping = True
                else:
                    waiting.append(item)
            group, waiting = self._take(waiting)
            self._answer(group)

    def _take(self, waiting: list) -> tuple[list, list]:
        """The oldest job's task: its waiting jobs, oldest first, up to max_batch texts (the first
        always); and the rest."""
        task, group, rest, n = waiting[0].task, [], [], 0
        for job in waiting:
            if job.task == task and (not group or n + len(job.ids) <= self.max_batch):
                group.append(job)
                n += len(job.ids)
            else:
                rest.append(job)
        return group, rest

    def _answer(self, group: list):
        try:
            rows = [(j, r) for j, job in enumerate(group) for r in range(len(job.ids))]
            rows.sort(key=lambda jr: len(group[jr[0]].ids[jr[1]]))  # similar lengths pad little
            out = [None] * len(group)
            for start in range(0, len(rows), self.max_batch):
                chunk = rows[start:start + self.max_batch]
                b = self.model.tokenizer.pad([group[j].ids[r] for j, r in chunk],
                                             [group[j].types[r] for j, r in chunk])
                logits = self.to_numpy(self.model.logits(b.input_ids, b.attention_mask,
                                                         b.token_type_ids, adapter=group[0].task))
                self.forwards += 1
                for (j, r), row in zip(chunk, logits):
                    if out[j] is None:
                        out[j] = np.empty((len(group[j].ids), logits.shape[1]), logits.dtype)
                    out[j][r] = row
            for job, logits in zip(group, out):
                job.logits = logits
        except BaseException as e:  # the request gets a 500; the server goes on
            traceback.print_exc(file=sys.stderr)
            for job in group:
                job.error = e
        finally:
            for job in group:
                job.done.set()


# --- HTTP ----------------------------------------------------------------------------------------------
class BadRequest(Exception):
    """A request the client must fix: answered with `status` and {"error": message}."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


def _kind(value) -> str:
    """How a JSON value reads in an error message: 'a number (5)', 'null', 'an object'."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return f"a boolean ({json.dumps(value)})"
    if isinstance(value, (int, float)):
        return f"a number ({value!r})"
    if isinstance(value, str):
        return "a string"
    return "a list" if isinstance(value, list) else "an object"


class PredictServer(ThreadingHTTPServer):
    """The HTTP server: `model` with `tasks` (task_infos), one Batcher. Handler threads are joined
    on server_close(), so requests under way are answered before the socket goes."""

    daemon_threads = False  # server_close() waits for the requests under way
    block_on_close = True
    allow_reuse_address = True  # a restart may bind while old connections sit in TIME_WAIT

    def __init__(self, address, model, tasks: dict, max_batch=MAX_BATCH, max_texts=MAX_TEXTS,
                 max_body=MAX_BODY, log_requests=False):
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        try:
            super().__init__(address, Handler)
        except OSError as e:
            raise ServeError(_bind_message(address, e)) from None
        self.model, self.tasks = model, tasks
        self.max_texts, self.max_body, self.log_requests = max_texts, max_body, log_requests
        self.requests_served = 0  # 200 answers so far
        self._serving = False
        self._count_lock = threading.Lock()
        self.batcher = Batcher(model, max_batch)

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"

    def serve_forever(self, poll_interval=0.5):
        self._serving = True
        super().serve_forever(poll_interval)

    def close(self):
        """Stop: no new connection, answer those under way, close the socket, end the model thread.
        Call from another thread than serve_forever's (or after it returned)."""
        if self._serving:
            self.shutdown()
        self.server_close()
        self.batcher.stop()

    def predict(self, body: dict) -> dict:
        """The answer to a /predict body (checked here; BadRequest for what the client must fix)."""
        unknown = sorted(set(body) - set(FIELDS))
        if unknown:
            raise BadRequest(400, f"unknown field {unknown[0]!r} (a /predict body has: "
                             f"{', '.join(FIELDS)})")
        name = self._task(body.get("task"))
        texts, pairs = self._texts(body)
        check_pairs(self.model, name, pairs is not None, error=lambda m: BadRequest(400, m))
        ids, types = self.model.tokenizer.ids_and_types(texts, pairs)
        logits = self.batcher.run(name, ids, types)
        return {"task": name, "predictions": self._predictions(self.tasks[name], logits)}

    def _task(self, name) -> str:
        known = ", ".join(self.tasks)
        if name is None:
            if len(self.tasks) == 1:
                return next(iter(self.tasks))
            raise BadRequest(400, f"missing 'task': this server holds {len(self.tasks)} tasks "
                             f"({known}); say which")
        if not isinstance(name, str):
            raise BadRequest(400, f"'task' is {_kind(name)}, expected a task name ({known})")
        if name not in self.tasks:
            raise BadRequest(404, f"no task {name!r} (this server holds: {known})")
        return name

    def _texts(self, body: dict) -> tuple[list, list | None]:
        """(texts, pairs or None) from 'texts' or 'pairs', each checked."""
        if ("texts" in body) == ("pairs" in body):
            raise BadRequest(400, "give either 'texts' (a list of strings) or 'pairs' (a list of "
                             "[text, text] pairs)" + (", not both" if "texts" in body else ""))
        key = "texts" if "texts" in body else "pairs"
        items = body[key]
        if not isinstance(items, list):
            raise BadRequest(400, f"'{key}' is {_kind(items)}, expected a list")
        if not items:
            raise BadRequest(400, f"'{key}' is empty: nothing to predict")
        if len(items) > self.max_texts:
            raise BadRequest(413, f"'{key}' has {len(items)} items: at most {self.max_texts} per "
                             "request (send several requests)")
        if key == "texts":
            for i, t in enumerate(items):
                if not isinstance(t, str):
                    raise BadRequest(400, f"texts[{i}] is {_kind(t)}, expected a string")
            return items, None
        for i, p in enumerate(items):
            if not (isinstance(p, list) and len(p) == 2 and all(isinstance(t, str) for t in p)):
                raise BadRequest(400, f"pairs[{i}] is {_kind(p)}"
                                 f"{f' of {len(p)} items' if isinstance(p, list) else ''}, "
                                 "expected a list of two strings [text, text]")
        return [p[0] for p in items], [p[1] for p in items]

    @staticmethod
    def _predictions(task: TaskInfo, logits: np.ndarray) -> list[dict]:
        from .train import softmax

        if task.regression:
            return [{"score": float(row[0])} for row in logits]
        out = []
        for p in softmax(logits):  # row by row, as `minadapt predict` computes them
            k = int(p.argmax())
            out.append({"label": task.labels[k], "probability": float(p[k]),
                        "probabilities": dict(zip(task.labels, map(float, p)))})
        return out


def _bind_message(address, e: OSError) -> str:
    where = f"{address[0]}:{address[1]}"
    if e.errno == errno.EADDRINUSE:
        return f"{where} is in use (another server?): stop it or pick another --port"
    if e.errno == errno.EADDRNOTAVAIL:
        return f"{where}: {address[0]} is not an address of this machine (try --host 127.0.0.1)"
    if e.errno in (errno.EACCES, errno.EPERM):
        return f"{where}: not allowed to listen there (ports below 1024 need privileges; try --port 8000)"
    return f"cannot listen on {where}: {e.strerror or e}"


class Handler(BaseHTTPRequestHandler):
    server: PredictServer
    timeout = 30  # seconds a client may take to send its request: a stalled one cannot hold shutdown
    server_version = "minadapt-serve"

    def do_GET(self):
        self._route("GET")

    def do_POST(self):
        self._route("POST")

    def do_PUT(self):
        self._route("PUT")

    def do_DELETE(self):
        self._route("DELETE")

    def do_PATCH(self):
        self._route("PATCH")

    def do_HEAD(self):
        self._route("HEAD")

    def _route(self, method: str):
        path = self.path.split("?", 1)[0]
        try:
            if path not in ROUTES:
                raise BadRequest(404, f"no such path {path!r} (this server has: POST /predict, "
                                 "GET /tasks, GET /health)")
            if method not in ROUTES[path]:
                raise BadRequest(405, f"{method} {path}: use {' or '.join(ROUTES[path])}")
            if path == "/health":
                self._send(200, {"status": "ok", "tasks": list(self.server.tasks)})
            elif path == "/tasks":
                self._send(200, {"tasks": [{"name": t.name, "labels": list(t.labels) if t.labels else None,
                                            "regression": t.regression}
                                           for t in self.server.tasks.values()]})
            else:
                self._send(200, self.server.predict(self._body()))
        except BadRequest as e:
            self._send(e.status, {"error": str(e)}, allow=ROUTES.get(path) if e.status == 405 else None)
        except Exception as e:  # a bug, or the model failed: say so, keep serving
            traceback.print_exc(file=sys.stderr)
            status = 503 if isinstance(e, TimeoutError) else 500
            self._send(status, {"error": f"internal error: {type(e).__name__}: {e}"})

    def _body(self) -> dict:
        """The request's JSON object, read only when its declared length is within the limit."""
        length = self.headers.get("Content-Length")
        if self.headers.get("Transfer-Encoding") or length is None:
            raise BadRequest(411, "send the body with a Content-Length header (chunked bodies are "
                             "not read)")
        if not length.isdigit():
            raise BadRequest(400, f"Content-Length {length!r} is not a whole number")
        if int(length) > self.server.max_body:
            if int(length) <= 16 * self.server.max_body:  # read and drop it, so the client, still
                _drain(self.rfile, int(length))          # sending, reads the 413 (not a reset)
            self.close_connection = True
            raise BadRequest(413, f"body of {int(length)} bytes: at most {self.server.max_body} "
                             "(send fewer texts per request)")
        raw = self.rfile.read(int(length))
        try:
            body = json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise BadRequest(400, f"body is not JSON: {e}") from None
        if not isinstance(body, dict):
            raise BadRequest(400, f"body is {_kind(body)}, expected a JSON object such as "
                             '{"task": "...", "texts": ["..."]}')
        return body

    def _send(self, status: int, payload: dict, allow=None):
        data = json.dumps(payload).encode("utf-8")
        try:
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            if allow:
                self.send_header("Allow", ", ".join(allow))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(data)
        except ConnectionError:  # the client left before its answer: nothing to tell it
            self.close_connection = True
            return
        if status == 200:
            with self.server._count_lock:
                self.server.requests_served += 1

    def log_message(self, format, *args):
        if self.server.log_requests:
            super().log_message(format, *args)


def _drain(stream, n: int, chunk: int = 1 << 16):
    while n > 0:
        got = stream.read(min(chunk, n))
        if not got:
            return
        n -= len(got)


def make_server(model, host: str = "127.0.0.1", port: int = 8000, max_batch: int = MAX_BATCH,
                max_texts: int = MAX_TEXTS, max_body: int = MAX_BODY, log_requests: bool = False,
                paths: dict | None = None) -> PredictServer:
    """A PredictServer bound to host:port (port 0: a free one, see `.server_address`) for every task
    `model` holds, its model thread started; call serve_forever() to answer and close() to stop.
    paths: task -> the file it came from (for error messages). ServeError when it cannot bind."""
    from .train import need_tokenizer

    need_tokenizer(model)
    tasks = task_infos(model, paths)
    if not tasks:
        raise WeightsError("the model holds no task: load an adapter file first")
    return PredictServer((host, port), model, tasks, max_batch, max_texts, max_body, log_requests)


def serve(server: PredictServer, out=None) -> int:
    """Answer requests until SIGTERM or SIGINT (Ctrl-C), then stop cleanly; returns 0. Run it in
    the main thread (signal handlers can only be set there)."""
    stopped = threading.Event()
    received = []

    def on_signal(signum, frame):
        received.append(signal.Signals(signum).name)
        stopped.set()
        for s in (signal.SIGINT, signal.SIGTERM):  # a second one stops at once
            signal.signal(s, signal.SIG_DFL)

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    thread = threading.Thread(target=server.serve_forever, name="minadapt-http", daemon=True)
    thread.start()
    print(f"minadapt serve: listening on {server.url} (POST /predict, GET /tasks, GET /health; "
          "Ctrl-C stops)", file=out or sys.stdout, flush=True)
    try:
        while not stopped.wait(0.5):
            pass
        print(f"minadapt serve: {received[0]}: answering the requests under way, then stopping",
              file=sys.stderr, flush=True)
        server.close()
        thread.join()
    finally:
        for s, h in previous.items():
            if signal.getsignal(s) in (on_signal, signal.SIG_DFL):
                signal.signal(s, h)
    print(f"minadapt serve: stopped after {server.requests_served} answered requests "
          f"({server.batcher.forwards} forwards)", file=sys.stderr, flush=True)
    return 0


# --- the command ---------------------------------------------------------------------------------------
_HOSTNAME = re.compile(r"^(?=.{1,253}$)[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
                       r"(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$")


def host_type(text: str) -> str:
    """--host: an IPv4 or IPv6 address, or a host name (letters, digits, '-', '.')."""
    try:
        return str(ipaddress.ip_address(text))
    except ValueError:
        pass
    if not _HOSTNAME.match(text):
        raise argparse.ArgumentTypeError(f"expected an IP address (127.0.0.1, 0.0.0.0, ::1) or a "
                                         f"host name, got {text!r}")
    return text


def int_in(low: int, high: int):
    def parse(text: str) -> int:
        if not text.strip().isdigit() or not low <= int(text) <= high:
            raise argparse.ArgumentTypeError(f"expected a whole number from {low} to {high}, "
                                             f"got {text!r}")
        return int(text)
    return parse


def add_arguments(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """The options of `minadapt serve`, added to parser (or subparser) p."""
    p.description = (
        "Serve adapter files over HTTP: one backbone, every adapter beside it.\n\n"
        "  POST /predict  {\"task\": NAME, \"texts\": [...]}  (or \"pairs\": [[a, b], ...])\n"
        "                 each text's label and probabilities (a score for regression);\n"
        "                 \"task\" may be left out when one adapter is served\n"
        "  GET  /tasks    the tasks, their labels, and whether they are regression\n"
        "  GET  /health   {\"status\": \"ok\"}\n\n"
        "Requests for the same task that arrive together run as one batch. SIGTERM or\n"
        "Ctrl-C answers the requests under way, closes the socket and exits 0.")
    p.epilog = ("example:\n  minadapt serve --adapter runs/sst2/adapter.safetensors --port 8000\n"
                "  curl -s localhost:8000/predict -d '{\"texts\": [\"a gorgeous, witty film\"]}'")
    p.formatter_class = argparse.RawDescriptionHelpFormatter
    p.add_argument("--adapter", action="append", required=True, metavar="[NAME=]PATH",
                   help="an adapter file or AdapterHub/PEFT directory, loaded as task NAME "
                   "(default: the name it holds); give --adapter once per task")
    p.add_argument("--host", type=host_type, default="127.0.0.1",
                   help="address to listen on (default: 127.0.0.1, this machine only; 0.0.0.0: "
                   "every interface)")
    p.add_argument("--port", type=int_in(0, 65535), default=8000,
                   help="port to listen on (default: 8000; 0: any free port, printed at start)")
    p.add_argument("--max-batch", type=int_in(1, 4096), default=MAX_BATCH, metavar="N",
                   help=f"texts per forward: waiting requests for one task are batched up to it "
                   f"(default: {MAX_BATCH}); a request may send up to {MAX_TEXTS} texts")
    p.add_argument("--log-requests", action="store_true", help="print a line per request on stderr")
    p.add_argument("--model", "--model_name_or_path", "--weights", dest="weights", metavar="NAME_OR_PATH",
                   help="a checkpoint folder or a Hugging Face id (default: all-MiniLM-L6-v2)")
    p.add_argument("--device", choices=["cpu", "gpu"], default=None,
                   help="where the maths runs (default: $MINADAPT_DEVICE or cpu)")
    return p


def load(args, out=None):
    """The model with every --adapter file loaded, and its server bound (not yet serving)."""
    from .io.task_names import split_name
    from .model import load_model

    out = out or sys.stdout
    model = load_model(args.weights, device=args.device)
    paths = {}
    for spec in args.adapter:  # PATH, or NAME=PATH to load it as task NAME
        rename, path = split_name(spec)
        paths[model.load_adapter(path, name=rename)] = path
    server = make_server(model, args.host, args.port, args.max_batch, log_requests=args.log_requests,
                         paths=paths)
    print(f"minadapt serve: {len(server.tasks)} task{'s' if len(server.tasks) > 1 else ''} on "
          f"{model.backbone.get('name')} ({model.device}, {np.dtype(model.dtype).name}), at most "
          f"{args.max_batch} texts per forward", file=out)
    width = max(map(len, server.tasks))
    for t in server.tasks.values():
        what = "regression (a score)" if t.regression else f"{len(t.labels)} labels: {', '.join(t.labels)}"
        print(f"  {t.name:<{width}}  {what}  ({paths[t.name]})", file=out)
    return server


def main(args) -> int:
    """`minadapt serve`: load, listen, answer until SIGTERM or Ctrl-C; 0 after a clean stop."""
    return serve(load(args))


if __name__ == "__main__":  # `python -m minadapt.serve ...`, the same as `minadapt serve ...`
    parser = add_arguments(argparse.ArgumentParser(prog="minadapt serve"))
    arguments = parser.parse_args()
    try:
        sys.exit(main(arguments))
    except MinadaptError as e:
        print(f"minadapt serve: error: {e}", file=sys.stderr)
        sys.exit(1)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(130)
