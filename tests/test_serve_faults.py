"""`minadapt serve` under faults: every bad request the stack sees gets a JSON 4xx (never a 500 or
an HTML page), slow clients cannot hold a connection or the shutdown, the connection limit answers
503, and batches are fair (a small request waits behind at most one batch).

HTTP is spoken over raw sockets here (urllib would refuse to send most of these requests).
"""
import json
import os
import signal
import socket
import threading
import time
from collections import deque

import numpy as np
import pytest

from minadapt.model import load_model
from minadapt.serve import Limits, make_server
from minadapt.serve.batcher import Batcher, Request, take_batch
from tests.test_serve import make_adapters, run_serve, wait_listening


@pytest.fixture(scope="module")
def model(checkpoint_dir, tmp_path_factory):
    paths, _ = make_adapters(checkpoint_dir, tmp_path_factory.mktemp("adapters"))
    m = load_model(checkpoint_dir)
    for p in paths.values():
        m.load_adapter(p)
    m.test_paths = paths
    return m


def start(model, **kw):
    server = make_server(model, "127.0.0.1", 0, **kw)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


@pytest.fixture(scope="module")
def server(model):
    s = start(model, limits=Limits(header_timeout=1.0, body_timeout=1.0, max_head=16 * 1024))
    yield s
    s.close()


def exchange(server, data: bytes, timeout=10, half_close=False):
    """(status, headers, body bytes) of the server's answer to raw `data`; status None when the
    server closed without answering."""
    with socket.create_connection(server.server_address[:2], timeout=timeout) as s:
        s.sendall(data)
        if half_close:
            s.shutdown(socket.SHUT_WR)
        raw = b""
        try:
            while chunk := s.recv(65536):
                raw += chunk
        except (ConnectionResetError, socket.timeout):
            pass
    if not raw:
        return None, {}, b""
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, v in (line.split(":", 1) for line in lines[1:])}
    return int(lines[0].split()[1]), headers, body


def post(body: bytes, extra: bytes = b"") -> bytes:
    return (b"POST /predict HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Type: application/json\r\n"
            + extra + b"Content-Length: %d\r\n\r\n" % len(body) + body)


def get(path: bytes = b"/health", extra: bytes = b"", method=b"GET") -> bytes:
    return method + b" " + path + b" HTTP/1.1\r\nHost: x\r\nConnection: close\r\n" + extra + b"\r\n"


BAD = [  # (raw request, status, words the JSON error must hold)
    (post(b"[" * 100_000 + b"]" * 100_000), 400, ("nested too deep",)),
    (post(b'{"task": "sst2", "texts": ["ok", "\\ud800"]}'), 400, ("texts[1]", "lone surrogate")),
    (post(b'{"task": "sst2", "pairs": [["ok", "a \\udfff"]]}'), 400, ("pairs[0][1]", "lone surrogate")),
    (post(b'{"task": "\\ud800", "texts": ["ok"]}'), 400, ("'task'", "lone surrogate")),
    (post(b'{"task": ' + b"7" * 5000 + b', "texts": ["ok"]}'), 400, ("not JSON this server reads",)),
    (post(b'{"task": 1' + b"0" * 4000 + b', "texts": ["ok"]}'), 400, ("'task'", "a long integer")),
    (b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Length: \xc2\xb2\r\n\r\n{}", 400, ("malformed HTTP request",)),
    (b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\n{}", 400, ("malformed",)),
    (b"POST /predict HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\n\r\n{}", 501, ("malformed",)),
    (b"GARBAGE\r\n\r\n", 400, ("malformed HTTP request",)),
    (get(method=b"BREW"), 405, ("BREW /health", "GET")),
    (get(method=b"OPTIONS", path=b"/predict"), 405, ("OPTIONS /predict", "POST")),
    (get(b"/" + b"a" * 70_000), 414, ("request line longer than 16384 bytes",)),
    (get(extra=b"".join(b"X-H%d: %s\r\n" % (i, b"v" * 100) for i in range(200))), 431, ("headers longer",)),
    (get(b"/\xc3\xa9t\xc3\xa9"), 400, ("malformed",)),
    (b"POST /predict HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 2000000\r\n\r\n",
     413, ("2000000 bytes", "at most 1048576")),
]


@pytest.mark.parametrize("raw, status, says", BAD, ids=[f"{b[1]}-{i}" for i, b in enumerate(BAD)])
def test_bad_requests_get_json_4xx(server, raw, status, says):
    got, headers, body = exchange(server, raw)
    assert got == status, body[:300]
    assert headers["content-type"] == "application/json"
    answer = json.loads(body)
    assert set(answer) == {"error"}
    for word in says:
        assert word in answer["error"], (word, answer["error"])
    assert exchange(server, get())[0] == 200  # and the server goes on


def test_many_headers_are_fine_and_the_server_header_names_no_version(server):
    got, headers, body = exchange(server, get(extra=b"".join(b"X-H%d: v\r\n" % i for i in range(200))))
    assert got == 200 and json.loads(body)["status"] == "ok"
    assert headers["server"] == "minadapt"


def test_keep_alive_carries_several_requests(server):
    with socket.create_connection(server.server_address[:2], timeout=10) as s:
        f = s.makefile("rb")
        for _ in range(3):
            s.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
            assert f.readline().startswith(b"HTTP/1.1 200")
            length = 0
            while (line := f.readline()) != b"\r\n":
                if line.lower().startswith(b"content-length:"):
                    length = int(line.split(b":")[1])
            assert json.loads(f.read(length))["status"] == "ok"


def test_a_trickling_header_cannot_extend_its_deadline(server):
    """A header line every 0.3 s: the 1 s deadline counts from the first byte, so 408 at ~1 s."""
    t0 = time.monotonic()
    with socket.create_connection(server.server_address[:2], timeout=10) as s:
        s.sendall(b"GET /health HTTP/1.1\r\n")
        raw = b""
        try:
            for i in range(30):
                s.sendall(b"X-Slow-%d: a\r\n" % i)
                time.sleep(0.3)
        except (BrokenPipeError, ConnectionResetError):
            pass
        try:
            while chunk := s.recv(4096):
                raw += chunk
        except ConnectionResetError:
            pass
    took = time.monotonic() - t0
    assert took < 3, took
    assert raw.startswith(b"HTTP/1.1 408") and b"did not arrive within 1 s" in raw, raw[:200]


def test_an_idle_connection_is_closed_quietly(server):
    with socket.create_connection(server.server_address[:2], timeout=10) as s:
        t0 = time.monotonic()
        assert s.recv(100) == b""  # closed, nothing said
        assert time.monotonic() - t0 < 3


def test_a_body_shorter_than_its_content_length_gets_408_not_a_503_after_30_s(server):
    t0 = time.monotonic()
    got, _, body = exchange(server, post(b'{"texts": ["a"]}')[:-4])
    assert got == 408 and "body did not arrive within 1 s" in json.loads(body)["error"]
    assert time.monotonic() - t0 < 3


def test_a_short_body_then_half_close_is_never_answered_200(server):
    got, _, body = exchange(server, post(b'{"task": "sst2", "texts": ["a"]}')[:-6], half_close=True)
    assert got != 200, body


def test_past_the_connection_limit_a_new_connection_gets_503(model):
    s = start(model, limits=Limits(max_connections=3, header_timeout=5))
    held = []
    try:
        for _ in range(3):
            held.append(socket.create_connection(s.server_address[:2], timeout=10))
        time.sleep(0.2)  # accepted
        got, headers, body = exchange(s, get())
        assert got == 503 and "limit of 3 open connections" in json.loads(body)["error"]
        assert headers["retry-after"] == "1"
        for c in held:
            c.close()
        time.sleep(0.2)
        assert exchange(s, get())[0] == 200
    finally:
        for c in held:
            c.close()
        s.close()


def test_sigterm_exits_within_5_s_whatever_idle_and_slow_clients_hold(model, checkpoint_dir):
    """100 idle sockets, 10 trickling headers, 5 bodies stalled half way, and one request with the
    model when SIGTERM comes: that one is answered, and the process exits 0 in under 5 s."""
    proc = run_serve(checkpoint_dir, [model.test_paths["sst2"]], "--header-timeout", "30",
                     "--body-timeout", "30")
    sockets, stop = [], threading.Event()
    try:
        url, _lines = wait_listening(proc)
        host, port = url.rsplit("/", 1)[-1].rsplit(":", 1)
        addr = (host, int(port))
        for _ in range(100):
            sockets.append(socket.create_connection(addr, timeout=10))

        def trickle():
            with socket.create_connection(addr, timeout=10) as c:
                c.sendall(b"GET /health HTTP/1.1\r\n")
                while not stop.wait(0.2):
                    try:
                        c.sendall(b"X-A: b\r\n")
                    except OSError:
                        return

        threads = [threading.Thread(target=trickle, daemon=True) for _ in range(10)]
        for t in threads:
            t.start()
        for _ in range(5):
            c = socket.create_connection(addr, timeout=10)
            c.sendall(post(b'{"texts": ["a", "b"]}')[:-5])
            sockets.append(c)
        time.sleep(0.5)
        answer = {}

        def busy():  # with the model when SIGTERM comes
            body = json.dumps({"texts": ["a long sentence about a film " * 4] * 32}).encode()
            with socket.create_connection(addr, timeout=60) as c:
                c.sendall(post(body))
                answer["raw"] = c.makefile("rb").read()

        b = threading.Thread(target=busy)
        b.start()
        time.sleep(0.2)
        t0 = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=30)
        took = time.monotonic() - t0
        b.join(30)
    finally:
        stop.set()
        for c in sockets:
            c.close()
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err
    assert took < 5, (took, err)
    assert answer["raw"].startswith(b"HTTP/1.1 200"), answer["raw"][:300]
    assert "Traceback" not in err


# --- fairness -------------------------------------------------------------------------------------
def requests(*sizes, task="a"):
    return [Request(task, [f"t{i}"] * n, None, lambda o, e: None) for i, n in enumerate(sizes)]


def test_take_batch_caps_splits_and_gives_every_request_its_share():
    waiting = deque(requests(256, 256, 3))
    rows = take_batch(waiting, 64)
    assert len(rows) == 64
    per = {id(r): sum(1 for q, _ in rows if q is r) for r in requests_in(rows)}
    big1, big2 = list(waiting)
    assert sorted(per.values()) == [3, 30, 31]  # 64 shared: the small one whole, the rest split
    assert len(waiting) == 2  # the small request is all taken
    assert [q.taken for q in waiting] == [31, 30] or [q.taken for q in waiting] == [30, 31]
    seen = {}
    while waiting:  # every row exactly once, in order within each request
        for q, i in take_batch(waiting, 64):
            seen.setdefault(id(q), []).append(i)
    assert all(v == list(range(v[0], v[0] + len(v))) for v in seen.values())
    assert big1.taken == big2.taken == 256


def requests_in(rows):
    return list(dict.fromkeys(q for q, _ in rows))


def test_a_small_request_waits_behind_at_most_one_batch():
    """Four 256-text requests for task a, then one text for task b: b is in the next batch."""
    gate, batches = threading.Event(), []

    def run(model, rows):
        if not batches:
            gate.wait(10)  # hold the first batch until everything is queued
        batches.append([(q.task, i) for q, i in rows])
        for q, i in rows:
            if q.outputs is None:
                q.outputs = np.zeros((len(q), 2))
            q.answered += 1

    b = Batcher(None, max_batch=64, run=run)
    done = {}
    try:
        reqs = requests(256, 256, 256, 256, task="a") + requests(1, task="b")
        for n, r in enumerate(reqs):
            r.on_done = lambda o, e, n=n: done.setdefault(n, len(batches))
            b.submit(r)
            time.sleep(0.01)
        gate.set()
        deadline = time.monotonic() + 10
        while len(done) < 5 and time.monotonic() < deadline:
            time.sleep(0.01)
    finally:
        gate.set()
        b.stop()
    assert all(len(x) <= 64 for x in batches)
    assert done[4] <= 2, (done, [len(x) for x in batches])  # the one under way, then its own
    assert sum(map(len, batches)) == 4 * 256 + 1


def test_200_simultaneous_health_checks_all_answer(server):
    """socketserver's listen queue of 5 reset or timed these out; a backlog of 2048 queues them."""
    results = []

    def one():
        try:
            results.append(exchange(server, get(), timeout=30)[0])
        except OSError as e:
            results.append(type(e).__name__)

    threads = [threading.Thread(target=one) for _ in range(200)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert results == [200] * 200, {r: results.count(r) for r in set(map(str, results))}


def test_a_bug_is_a_logged_500_in_json_and_serving_goes_on(server, monkeypatch, capsys):
    def broken(model, rows):
        raise ZeroDivisionError("a bug")

    monkeypatch.setattr(server.batcher, "_run", broken)
    got, _, body = exchange(server, post(b'{"task": "sst2", "texts": ["ok"]}'))
    assert got == 500 and json.loads(body) == {"error": "internal error: ZeroDivisionError"}
    assert "ZeroDivisionError: a bug" in capsys.readouterr().err  # the traceback, for the operator
    monkeypatch.undo()
    assert exchange(server, post(b'{"task": "sst2", "texts": ["ok"]}'))[0] == 200


def children(pid):
    with open(f"/proc/{pid}/task/{pid}/children") as f:
        return [int(x) for x in f.read().split()]


def test_workers_answer_on_one_port_are_restarted_and_stop_on_sigterm(model, checkpoint_dir):
    proc = run_serve(checkpoint_dir, [model.test_paths["sst2"]], "--workers", "2")
    try:
        url, lines = wait_listening(proc)
        assert "with 2 workers" in lines[-1]
        host, port = url.rsplit("/", 1)[-1].rsplit(":", 1)
        addr = (host, int(port))
        body = b'{"texts": ["a gorgeous , witty film"]}'

        def ask():
            with socket.create_connection(addr, timeout=60) as c:
                c.sendall(post(body))
                return c.makefile("rb").read()

        assert all(ask().startswith(b"HTTP/1.1 200") for _ in range(4))
        workers = children(proc.pid)
        assert len(workers) == 2
        os.kill(workers[0], signal.SIGKILL)  # a worker dies: it is forked again
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and (len(children(proc.pid)) < 2 or workers[0] in children(proc.pid)):
            time.sleep(0.1)
        assert len(children(proc.pid)) == 2 and workers[0] not in children(proc.pid)
        assert all(ask().startswith(b"HTTP/1.1 200") for _ in range(4))
        t0 = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=30)
        assert time.monotonic() - t0 < 5
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err
    assert "starting it again" in err and "2 workers stopped" in err and "Traceback" not in err
