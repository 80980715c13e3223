"""`minadapt serve`: one backbone and every given adapter behind an HTTP server.

    minadapt serve --adapter runs/sst2/adapter.safetensors --adapter runs/topic/adapter.safetensors

    POST /predict  {"task": "sst2", "texts": ["a gorgeous film", ...]}        (or "pairs": [[a, b], ...])
               ->  {"task": "sst2", "predictions": [{"label": "positive", "probability": 0.97,
                                                      "probabilities": {"negative": 0.03, "positive": 0.97}}, ...]}
                   a regression task (STS-B) answers {"score": 3.1} per text instead
    GET  /tasks    {"tasks": [{"name": "sst2", "labels": ["negative", "positive"], "regression": false}, ...]}
    GET  /health   {"status": "ok", "tasks": ["sst2", "topic"]}

`task` may be left out when the server holds one task. Every error is {"error": "..."} with a 4xx
status (app.py lists them); 503 when the model is overloaded or the server is stopping.

The pieces, one file each:
    app.py          the ASGI app: routes, request checks, JSON answers, the body's deadline
    connections.py  uvicorn's HTTP/1.1 protocol plus a connection limit and a header deadline
    batcher.py      the one model thread and its fair batches; `answer`, the one model call
    server.py       the socket (a real backlog), uvicorn around the app, a clean stop
    workers.py      --workers N: processes forked after loading, sharing the frozen weights
    tasks.py        each task's labels

Why uvicorn + Starlette: uvicorn is the ASGI server most Python services run behind a load
balancer (HTTP/1.1 keep-alive, a listen backlog, graceful shutdown, h11's strict parser), and
Starlette's Request and Response are the small, plain layer over ASGI that reads a body as a
stream; the model runs in one thread off the event loop, so the loop only moves bytes.
"""
from __future__ import annotations

import argparse
import ipaddress
import re
import sys

import numpy as np

from ..errors import MinadaptError
from .app import MAX_BODY, MAX_TEXTS, WAIT_S, App, BadRequest, TaskInfo
from .batcher import MAX_BATCH, Batcher, answer
from .connections import Limits
from .server import BACKLOG, KEEP_ALIVE_S, SHUTDOWN_S, PredictServer, bind, make_server, serve
from .tasks import label_names, task_infos
from .workers import run_workers

__all__ = ["MAX_BATCH", "MAX_BODY", "MAX_TEXTS", "WAIT_S", "App", "BadRequest", "Batcher",
           "Limits", "PredictServer", "TaskInfo", "add_arguments", "answer", "bind", "label_names",
           "load", "main", "make_server", "serve", "task_infos"]


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


def seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not 0 < value <= 3600:
        raise argparse.ArgumentTypeError(f"expected seconds, more than 0 and at most 3600, got {text!r}")
    return value


def add_arguments(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """The options of `minadapt serve`, added to parser (or subparser) p."""
    p.description = (
        "Serve adapter files over HTTP: one backbone, every adapter beside it.\n\n"
        "  POST /predict  {\"task\": NAME, \"texts\": [...]}  (or \"pairs\": [[a, b], ...])\n"
        "                 each text's label and probabilities (a score for regression);\n"
        "                 \"task\" may be left out when one adapter is served\n"
        "  GET  /tasks    the tasks, their labels, and whether they are regression\n"
        "  GET  /health   {\"status\": \"ok\"}\n\n"
        "Requests that arrive together run as one batch of at most --max-batch texts; a large\n"
        "request is split, so a small one waits behind at most one batch. Every error is JSON\n"
        "with a 4xx status. SIGTERM or Ctrl-C answers the requests already with the model,\n"
        "closes idle and slow connections, and exits 0.")
    p.epilog = ("example:\n  minadapt serve --adapter runs/sst2/adapter.safetensors --port 8000\n"
                "  curl -s localhost:8000/predict -d '{\"texts\": [\"a gorgeous, witty film\"]}'")
    p.formatter_class = argparse.RawDescriptionHelpFormatter
    p.add_argument("--adapter", action="append", required=True, metavar="FILE",
                   help="an adapter .safetensors file; give --adapter once per task")
    p.add_argument("--host", type=host_type, default="127.0.0.1",
                   help="address to listen on (default: 127.0.0.1, this machine only; 0.0.0.0: "
                   "every interface)")
    p.add_argument("--port", type=int_in(0, 65535), default=8000,
                   help="port to listen on (default: 8000; 0: any free port, printed at start)")
    p.add_argument("--max-batch", type=int_in(1, 4096), default=MAX_BATCH, metavar="N",
                   help=f"texts per batch: the requests waiting share it "
                   f"(default: {MAX_BATCH}); a request may send up to {MAX_TEXTS} texts, split over "
                   "batches")
    p.add_argument("--workers", type=int_in(1, 256), default=1, metavar="N",
                   help="processes answering on the one port (default: 1), forked after loading so "
                   "they share the frozen weights; each adds its own activations and Python heap. "
                   "For a machine with more cores than one process uses: set OPENBLAS_NUM_THREADS "
                   "to cores / N")
    p.add_argument("--max-connections", type=int_in(1, 1 << 20), default=Limits.max_connections,
                   metavar="N", help="open connections per worker; the next gets 503 and is closed "
                   f"(default: {Limits.max_connections})")
    p.add_argument("--backlog", type=int_in(1, 1 << 16), default=BACKLOG, metavar="N",
                   help=f"connections the kernel queues before they are accepted (default: {BACKLOG})")
    p.add_argument("--header-timeout", type=seconds, default=Limits.header_timeout, metavar="S",
                   help="seconds a request's line and headers may take, from its first byte "
                   f"(default: {Limits.header_timeout:g}); a trickling client cannot extend it")
    p.add_argument("--body-timeout", type=seconds, default=Limits.body_timeout, metavar="S",
                   help=f"seconds a request's body may take after its headers (default: "
                   f"{Limits.body_timeout:g})")
    p.add_argument("--keep-alive", type=seconds, default=KEEP_ALIVE_S, metavar="S",
                   help=f"seconds an idle kept-alive connection stays open (default: {KEEP_ALIVE_S:g})")
    p.add_argument("--shutdown-timeout", type=seconds, default=SHUTDOWN_S, metavar="S",
                   help="on SIGTERM, seconds to finish the requests already with the model "
                   f"(default: {SHUTDOWN_S:g}); idle and slow clients are not waited for")
    p.add_argument("--log-requests", action="store_true", help="print a line per request on stderr")
    p.add_argument("--weights", metavar="DIR", help="checkpoint folder (default: "
                   "weights/all-MiniLM-L6-v2, downloaded when missing)")
    p.add_argument("--device", choices=["cpu", "gpu"], default=None,
                   help="where the maths runs (default: $MINADAPT_DEVICE or cpu)")
    return p


def load(args, out=None):
    """The model with every --adapter file loaded, its tasks, and the bound socket; and a function
    making the server (called once, or in each worker after the fork)."""
    from ..model import load_model
    from ..train import need_tokenizer

    out = out or sys.stdout
    model = load_model(args.weights, device=args.device)
    paths = {}
    for path in args.adapter:
        paths[model.load_adapter(path)] = path
    need_tokenizer(model)
    tasks = task_infos(model, paths)
    sock = bind(args.host, args.port, args.backlog)
    limits = Limits(max_connections=args.max_connections, header_timeout=args.header_timeout,
                    body_timeout=args.body_timeout)

    def make():
        return make_server(model, max_batch=args.max_batch, log_requests=args.log_requests,
                           paths=paths, sock=sock, limits=limits, keep_alive=args.keep_alive,
                           shutdown_timeout=args.shutdown_timeout)

    print(f"minadapt serve: {len(tasks)} task{'s' if len(tasks) > 1 else ''} on "
          f"{model.backbone.get('name')} ({model.device}, {np.dtype(model.dtype).name}), at most "
          f"{args.max_batch} texts per batch", file=out)
    width = max(map(len, tasks))
    for t in tasks.values():
        what = "regression (a score)" if t.regression else f"{len(t.labels)} labels: {', '.join(t.labels)}"
        print(f"  {t.name:<{width}}  {what}  ({paths[t.name]})", file=out)
    return make, sock


def main(args) -> int:
    """`minadapt serve`: load, listen, answer until SIGTERM or Ctrl-C; 0 after a clean stop."""
    make, sock = load(args)
    if getattr(args, "workers", 1) > 1:
        host, port = sock.getsockname()[:2]
        url = f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"
        return run_workers(make, args.workers, url)
    return serve(make())
