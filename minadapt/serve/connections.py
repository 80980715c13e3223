"""What uvicorn's HTTP/1.1 protocol (h11) leaves to the operator: a connection limit, a header
deadline a trickling client cannot push back, and JSON for the errors it answers itself.

uvicorn arms a keep-alive timer between requests but none while a request's line and headers
arrive, so a client sending a header line every few seconds would hold its connection forever.
Here each request's head must be complete `header_timeout` seconds after its first byte (after
the connection opens, for the first); a connection silent that long is closed without a word, one
that sent part of a head gets 408. The body has its own deadline, kept by the app (app.py).

Errors that h11 finds before the app sees the request (a malformed request line or header, a head
longer than `max_head` bytes) are answered as JSON here, with the status h11 suggests (431 for a
head too long, 414 when it is the request line, 501 for an unknown Transfer-Encoding).
"""
from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from http import HTTPStatus

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

log = logging.getLogger("minadapt.serve")


@dataclass(frozen=True)
class Limits:
    max_connections: int = 1024  # open connections; the next one gets 503 and is closed
    header_timeout: float = 10.0  # seconds from a request's first byte to the end of its head
    body_timeout: float = 30.0  # seconds from the end of the head to the end of the body
    max_head: int = 16 * 1024  # bytes of request line and headers


def raw_json(status: int, message: str) -> bytes:
    """A whole HTTP/1.1 response, {"error": message}, closing the connection."""
    body = json.dumps({"error": message}).encode()
    head = (f"HTTP/1.1 {status} {HTTPStatus(status).phrase}\r\ncontent-type: application/json\r\n"
            f"content-length: {len(body)}\r\nconnection: close\r\nserver: minadapt\r\n")
    if status == 503:
        head += "retry-after: 1\r\n"
    return head.encode() + b"\r\n" + body


class _Connection(h11.Connection):
    """h11's connection, remembering the last protocol error (uvicorn drops it)."""
    last_error: h11.RemoteProtocolError | None = None

    def next_event(self):
        try:
            return super().next_event()
        except h11.RemoteProtocolError as e:
            self.last_error = e
            raise


class GuardedH11(H11Protocol):
    """uvicorn's H11Protocol with the limits above (Config(http=functools.partial(GuardedH11,
    limits=...)))."""

    def __init__(self, *args, limits: Limits, **kw):
        super().__init__(*args, **kw)
        self.limits = limits
        self.conn = _Connection(h11.SERVER, limits.max_head)
        self._head_deadline = None

    def connection_made(self, transport):
        super().connection_made(transport)
        if len(self.connections) > self.limits.max_connections:
            self._refuse(503, f"the server holds its limit of {self.limits.max_connections} open "
                         "connections: try again shortly")
            return
        self._arm()

    def data_received(self, data: bytes):
        if self.conn.their_state is h11.IDLE:
            if self._head_deadline is None:
                self._arm()  # a new request's first bytes: its head has header_timeout from now
            if self._head_too_long(data):
                return
        try:
            super().data_received(data)
        except Exception:  # a bug in the stack on odd input: say so, never hang
            log.exception("while reading a request")
            self._refuse(400, "malformed HTTP request")
            return
        if self.conn.their_state is not h11.IDLE:
            self._disarm()  # the head is complete: the app keeps the body's deadline

    def connection_lost(self, exc):
        self._disarm()
        super().connection_lost(exc)

    def send_400_response(self, msg: str):
        err = self.conn.last_error
        status = getattr(err, "error_status_hint", 400)
        if status == 431:
            buffered = self.conn.trailing_data[0]
            if b"\n" not in buffered:
                status, what = 414, f"request line longer than {self.limits.max_head} bytes"
            else:
                what = f"request line and headers longer than {self.limits.max_head} bytes"
        else:
            what = f"malformed HTTP request: {err}" if err else "malformed HTTP request"
        self._refuse(status, what)

    def _head_too_long(self, data: bytes) -> bool:
        """Refuse a head over max_head bytes (h11 checks only heads still incomplete, so a long one
        that arrives whole would pass): 414 when the request line alone is too long, else 431."""
        buffered = self.conn.trailing_data[0] + data
        end = buffered.find(b"\r\n\r\n")
        size = end if end >= 0 else len(buffered)
        if size <= self.limits.max_head:
            return False
        line = buffered.find(b"\n")
        if line < 0 or line > self.limits.max_head:
            self._refuse(414, f"request line longer than {self.limits.max_head} bytes")
        else:
            self._refuse(431, f"request line and headers longer than {self.limits.max_head} bytes")
        return True

    def _arm(self):
        self._disarm()
        self._head_deadline = self.loop.call_later(self.limits.header_timeout, self._head_late)

    def _disarm(self):
        if self._head_deadline is not None:
            self._head_deadline.cancel()
            self._head_deadline = None

    def _head_late(self):
        self._head_deadline = None
        if self.transport.is_closing() or self.conn.their_state is not h11.IDLE:
            return
        if self.conn.trailing_data[0]:
            self._refuse(408, f"the request line and headers did not arrive within "
                         f"{self.limits.header_timeout:g} s")
        else:  # an idle connection: close it quietly, as a keep-alive timeout does
            self.transport.close()

    def _refuse(self, status: int, message: str):
        self._disarm()
        if not self.transport.is_closing():
            self.transport.write(raw_json(status, message))
            self.transport.close()
