"""The ASGI app: routes, the checks on every request, and JSON for every answer.

    POST /predict  {"task": "sst2", "texts": [...]}  (or "pairs": [[a, b], ...])
    GET  /tasks    the tasks, their labels, and whether they are regression
    GET  /health   {"status": "ok", "tasks": [...]}

A request the client must fix gets a 4xx and {"error": "..."}: 400 a body that is not a JSON object
of task and texts (or pairs) of strings (malformed JSON, nesting too deep, an integer too long, a
lone surrogate), 404 an unknown path or task, 405 a wrong method (with Allow), 408 a body slower
than its deadline, 411 a POST with neither Content-Length nor chunked encoding, 413 a body over
max_body bytes or over max_texts texts. 503 says the model did not answer in time or the server is
stopping; 500 is kept for a bug, and its traceback is logged.
"""
from __future__ import annotations

import asyncio
import json
import logging
import sys
import traceback
from dataclasses import dataclass

import numpy as np
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response

from .batcher import Batcher, Request as Job
from .connections import Limits

log = logging.getLogger("minadapt.serve")

MAX_TEXTS = 256  # texts (or pairs) per request
MAX_BODY = 1 << 20  # bytes per request body (1 MiB)
WAIT_S = 300.0  # a request whose answer has not come back by then gets 503
ROUTES = {"/predict": ("POST",), "/tasks": ("GET", "HEAD"), "/health": ("GET", "HEAD")}
FIELDS = ("task", "texts", "pairs")


@dataclass(frozen=True)
class TaskInfo:
    name: str
    labels: tuple | None  # label names in logit order; None for a regression task
    regression: bool


class BadRequest(Exception):
    """A request the client must fix: answered with `status` and {"error": message}."""

    def __init__(self, status: int, message: str, headers: dict | None = None):
        super().__init__(message)
        self.status, self.headers = status, headers or {}


def reply(status: int, payload: dict, headers: dict | None = None) -> Response:
    # ensure_ascii: a lone surrogate echoed in a message still encodes
    return Response(json.dumps(payload), status, headers, media_type="application/json")


def _kind(value) -> str:
    """How a JSON value reads in an error message: 'a number (5)', 'null', 'an object'."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return f"a boolean ({json.dumps(value)})"
    if isinstance(value, (int, float)):
        text = repr(value) if not isinstance(value, int) or abs(value) < 10 ** 30 else "a long integer"
        return f"a number ({text})"
    if isinstance(value, str):
        return "a string"
    return "a list" if isinstance(value, list) else "an object"


def _check_unicode(text: str, where: str) -> None:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as e:
        raise BadRequest(400, f"{where} holds a lone surrogate ({text[e.start]!r} at character "
                         f"{e.start}): not valid Unicode") from None


class App:
    """The ASGI callable: `model`'s `tasks` (task_infos), answered through one Batcher."""

    def __init__(self, model, tasks: dict, batcher: Batcher, limits: Limits = Limits(),
                 max_texts: int = MAX_TEXTS, max_body: int = MAX_BODY, wait_s: float = WAIT_S):
        self.model, self.tasks, self.batcher, self.limits = model, tasks, batcher, limits
        self.max_texts, self.max_body, self.wait_s = max_texts, max_body, wait_s
        self.requests_served = 0  # 200 answers so far
        self.stopping: asyncio.Event | None = None  # made in the serving loop

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":  # lifespan is off; websockets are not spoken
            return
        if self.stopping is None:
            self.stopping = asyncio.Event()
        request = Request(scope, receive)
        try:
            response = await self.route(request)
        except BadRequest as e:
            response = reply(e.status, {"error": str(e)}, e.headers)
        except ClientDisconnect:  # the client left before its body was read: nobody to answer
            return
        except Exception as e:  # a bug, or the model failed: logged, and the client told
            traceback.print_exc(file=sys.stderr)
            response = reply(500, {"error": f"internal error: {type(e).__name__}"})
        if response.status_code == 200:
            self.requests_served += 1
        await response(scope, receive, send)

    def stop(self):
        """The server is stopping: bodies still arriving are not waited for (503)."""
        if self.stopping is not None:
            self.stopping.set()

    async def route(self, request: Request) -> Response:
        path, method = request.url.path, request.method
        if path not in ROUTES:
            raise BadRequest(404, f"no such path {path[:200]!r} (this server has: POST /predict, "
                             "GET /tasks, GET /health)")
        if method not in ROUTES[path]:
            raise BadRequest(405, f"{method[:20]} {path}: use {' or '.join(ROUTES[path][:1])}",
                             {"allow": ", ".join(ROUTES[path])})
        if path == "/health":
            return reply(200, {"status": "ok", "tasks": list(self.tasks)})
        if path == "/tasks":
            return reply(200, {"tasks": [{"name": t.name, "labels": list(t.labels) if t.labels else None,
                                          "regression": t.regression} for t in self.tasks.values()]})
        return reply(200, await self.predict(await self.body(request)))

    # --- the body ---------------------------------------------------------------------------------
    async def body(self, request: Request) -> dict:
        """The request's JSON object, read within body_timeout and max_body bytes."""
        length = request.headers.get("content-length")
        chunked = "chunked" in request.headers.get("transfer-encoding", "").lower()
        if length is None and not chunked:
            raise BadRequest(411, "send the body with a Content-Length header (or chunked)")
        raw = await self._read(request, int(length) if length is not None else None)
        try:
            body = json.loads(raw.decode("utf-8"))
        except UnicodeDecodeError as e:
            raise BadRequest(400, f"body is not JSON: not UTF-8 ({e.reason} at byte {e.start})") from None
        except json.JSONDecodeError as e:
            raise BadRequest(400, f"body is not JSON: {e}") from None
        except RecursionError:
            raise BadRequest(400, "body is not JSON this server reads: nested too deep") from None
        except ValueError as e:  # an integer of more than 4300 digits
            raise BadRequest(400, f"body is not JSON this server reads: {str(e)[:120]}") from None
        if not isinstance(body, dict):
            raise BadRequest(400, f"body is {_kind(body)}, expected a JSON object such as "
                             '{"task": "...", "texts": ["..."]}')
        return body

    async def _read(self, request: Request, length: int | None) -> bytes:
        too_big = BadRequest(413, f"body of {length if length is not None else 'more than ' + str(self.max_body)} "
                             f"bytes: at most {self.max_body} (send fewer texts per request)",
                             {"connection": "close"})
        expect = request.headers.get("expect", "").lower() == "100-continue"
        if length is not None and length > self.max_body and (expect or length > 16 * self.max_body):
            raise too_big  # not read (a client that asked 100-continue has not sent it): closed
        drain = length is not None and length > self.max_body  # read and drop it, so a client
        #                                                       still sending reads the 413

        async def read():
            chunks, size = [], 0
            async for chunk in request.stream():
                size += len(chunk)
                if not drain:
                    chunks.append(chunk)
                    if size > self.max_body:
                        return None
            return b"".join(chunks)

        reader = asyncio.ensure_future(read())
        stop = asyncio.ensure_future(self.stopping.wait())
        try:
            await asyncio.wait({reader, stop}, timeout=self.limits.body_timeout,
                               return_when=asyncio.FIRST_COMPLETED)
        finally:
            stop.cancel()
        if not reader.done():
            reader.cancel()
            if self.stopping.is_set():
                raise BadRequest(503, "the server is stopping: send the request again",
                                 {"connection": "close", "retry-after": "1"})
            raise BadRequest(408, f"the body did not arrive within {self.limits.body_timeout:g} s",
                             {"connection": "close"})
        raw = reader.result()
        if drain or raw is None:
            raise too_big
        if length is not None and len(raw) != length:
            raise BadRequest(400, f"body of {len(raw)} bytes, but Content-Length said {length}",
                             {"connection": "close"})
        return raw

    # --- /predict ---------------------------------------------------------------------------------
    async def predict(self, body: dict) -> dict:
        """The answer to a /predict body (checked here; BadRequest for what the client must fix)."""
        unknown = sorted(set(body) - set(FIELDS))
        if unknown:
            raise BadRequest(400, f"unknown field {unknown[0][:60]!r} (a /predict body has: "
                             f"{', '.join(FIELDS)})")
        name = self._task(body.get("task"))
        texts, pairs = self._texts(body)
        outputs = await self._run(name, texts, pairs)
        return {"task": name, "predictions": predictions(self.tasks[name], outputs)}

    async def _run(self, task, texts, pairs) -> np.ndarray:
        loop = asyncio.get_running_loop()
        future = loop.create_future()

        def on_done(outputs, error):  # in the model thread
            def settle():
                if not future.done():
                    future.set_exception(error) if error else future.set_result(outputs)
            loop.call_soon_threadsafe(settle)

        job = Job(task, texts, pairs, on_done)
        self.batcher.submit(job)
        try:
            return await asyncio.wait_for(asyncio.shield(future), self.wait_s)
        except asyncio.TimeoutError:
            job.cancelled = True
            raise BadRequest(503, f"the model did not answer within {self.wait_s:g} s: the "
                             "server is overloaded", {"retry-after": "5"}) from None
        except asyncio.CancelledError:
            job.cancelled = True
            raise

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
            _check_unicode(name, "'task'")
            raise BadRequest(404, f"no task {name[:100]!r} (this server holds: {known})")
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
                _check_unicode(t, f"texts[{i}]")
            return items, None
        for i, p in enumerate(items):
            if not (isinstance(p, list) and len(p) == 2 and all(isinstance(t, str) for t in p)):
                raise BadRequest(400, f"pairs[{i}] is {_kind(p)}"
                                 f"{f' of {len(p)} items' if isinstance(p, list) else ''}, "
                                 "expected a list of two strings [text, text]")
            for j, t in enumerate(p):
                _check_unicode(t, f"pairs[{i}][{j}]")
        return [p[0] for p in items], [p[1] for p in items]


def predictions(task: TaskInfo, outputs: np.ndarray) -> list[dict]:
    """Each row's JSON: {"label", "probability", "probabilities"}, or {"score"} for regression."""
    if task.regression:
        return [{"score": float(row[0])} for row in outputs]
    out = []
    for p in outputs:
        k = int(p.argmax())
        out.append({"label": task.labels[k], "probability": float(p[k]),
                    "probabilities": dict(zip(task.labels, map(float, p)))})
    return out
