"""`minadapt serve`: the answers equal the model's, concurrent requests share forwards, bad requests
get a 4xx and a JSON error without stopping the server, and SIGTERM/Ctrl-C stop it cleanly.

The server runs in-process on an ephemeral port (127.0.0.1:0) with three adapters on the real
checkpoint (a 2-label, a 5-label and a regression task, random and untrained: only the plumbing is
under test); the signal tests run `python -m minadapt.serve` in a subprocess.
"""
import argparse
import io
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest

from minadapt.errors import ServeError
from minadapt.model import load_model
from minadapt.serve import MAX_TEXTS, add_arguments, make_server, serve
from minadapt.predict import softmax

REPO = Path(__file__).resolve().parents[1]
TASKS = {"sst2": ["negative", "positive"], "topic": ["world", "sports", "business", "sci", "arts"],
         "sts": None}
TEXTS = ["a gorgeous , witty film", "dull and lifeless", "it is long, very long, and in the end it "
         "says nothing at all about anyone", "ok"]
PAIRS = [["a man plays a guitar", "someone plays music"], ["the cat sleeps", "stocks fell sharply"]]


def make_adapters(checkpoint_dir, folder: Path) -> tuple:
    """Three adapter files, their weights moved off the identity so each task answers differently;
    and the model that made them (the reference: it holds the same three tasks)."""
    model = load_model(checkpoint_dir)
    rng = np.random.default_rng(0)
    paths = {}
    for name, labels in TASKS.items():
        model.add_adapter(name, bottleneck=8)
        model.add_classification_head(name, num_labels=len(labels or [0]), labels=labels,
                                       regression=labels is None)
        for k in model.trainable_names(name):
            model.params[k][...] += rng.normal(0, 0.05, model.params[k].shape).astype(model.dtype)
        paths[name] = model.save_adapter(folder / f"{name}.safetensors", adapter=name)
    return paths, model


@pytest.fixture(scope="module")
def adapters(checkpoint_dir, tmp_path_factory):
    return make_adapters(checkpoint_dir, tmp_path_factory.mktemp("adapters"))


def start(model, **kw):
    server = make_server(model, "127.0.0.1", 0, **kw)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


@pytest.fixture(scope="module")
def server(checkpoint_dir, adapters):
    paths, _ = adapters
    model = load_model(checkpoint_dir)
    for p in paths.values():
        model.load_adapter(p)
    s = start(model, max_batch=16)
    yield s
    s.close()


def call(server, path, body=None, method=None, raw: bytes | None = None, timeout=30):
    """(status, decoded JSON) of one request to the server."""
    data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
    req = urllib.request.Request(server.url + path, data=data, method=method)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def expected(model, task, texts, pairs=None):
    """What the model itself says for these texts, one batch: softmax of its logits, or its score."""
    b = model.tokenizer.encode(texts, pairs)
    logits = model.logits(b.input_ids, b.attention_mask, b.token_type_ids, adapter=task)
    return logits[:, 0] if model.heads[task].regression else softmax(logits)


def test_tasks_and_health(server):
    assert call(server, "/health") == (200, {"status": "ok", "tasks": ["sst2", "sts", "topic"]})
    status, body = call(server, "/tasks")
    assert status == 200
    assert body == {"tasks": [{"name": "sst2", "labels": TASKS["sst2"], "regression": False},
                              {"name": "sts", "labels": None, "regression": True},
                              {"name": "topic", "labels": TASKS["topic"], "regression": False}]}


@pytest.mark.parametrize("task", ["sst2", "topic"])
@pytest.mark.parametrize("with_pairs", [False, True])
def test_predict_equals_the_models_probabilities(server, adapters, task, with_pairs):
    _, reference = adapters
    body = {"task": task, "pairs": PAIRS} if with_pairs else {"task": task, "texts": TEXTS}
    status, answer = call(server, "/predict", body)
    assert status == 200 and answer["task"] == task
    want = (expected(reference, task, [a for a, _ in PAIRS], [b for _, b in PAIRS]) if with_pairs
            else expected(reference, task, TEXTS))
    assert len(answer["predictions"]) == len(want)
    for got, p in zip(answer["predictions"], want):
        assert list(got["probabilities"]) == TASKS[task]  # every label, in the head's order
        np.testing.assert_allclose(list(got["probabilities"].values()), p, rtol=0, atol=1e-5)
        k = int(np.argmax(list(got["probabilities"].values())))
        assert got["label"] == TASKS[task][k] and got["probability"] == got["probabilities"][got["label"]]
    # a different task on the same texts answers differently: each request runs its own adapter
    other = "topic" if task == "sst2" else "sst2"
    assert call(server, "/predict", {**body, "task": other})[1]["predictions"] != answer["predictions"]


def test_regression_answers_a_score(server, adapters):
    _, reference = adapters
    status, answer = call(server, "/predict", {"task": "sts", "pairs": PAIRS})
    assert status == 200
    assert [set(p) for p in answer["predictions"]] == [{"score"}] * len(PAIRS)
    np.testing.assert_allclose([p["score"] for p in answer["predictions"]],
                               expected(reference, "sts", *map(list, zip(*PAIRS))), atol=1e-5)


def test_task_may_be_left_out_with_one_adapter(checkpoint_dir, adapters):
    paths, reference = adapters
    model = load_model(checkpoint_dir)
    model.load_adapter(paths["topic"])
    one = start(model)
    try:
        status, answer = call(one, "/predict", {"texts": TEXTS[:2]})
        assert status == 200 and answer["task"] == "topic"
        np.testing.assert_allclose([list(p["probabilities"].values()) for p in answer["predictions"]],
                                   expected(reference, "topic", TEXTS[:2]), atol=1e-5)
    finally:
        one.close()


def test_concurrent_requests_for_one_task_share_forwards(server, adapters):
    """8 clients at once: the first request's forward is held until the other 7 wait in the queue,
    so they all run as one batch: 2 forwards for 8 requests, each answered its own rows."""
    _, reference = adapters
    model, batcher = server.model, server.batcher
    forwards, real = [], model.logits

    def counting_logits(*args, **kw):
        forwards.append(len(args[0]))
        if len(forwards) == 1:  # hold the first forward until the other requests are queued
            deadline = time.monotonic() + 10
            while len(batcher.waiting) < 7 and time.monotonic() < deadline:
                time.sleep(0.005)
        return real(*args, **kw)

    model.logits = counting_logits
    answers = [None] * 8
    try:
        def client(i):
            answers[i] = call(server, "/predict", {"task": "sst2", "texts": [TEXTS[i % 4]] * (1 + i % 2)})

        threads = [threading.Thread(target=client, args=(i,)) for i in range(8)]
        threads[0].start()  # the first request's forward starts (and is held) before the others
        deadline = time.monotonic() + 10  # leave, else all eight can queue before the batcher
        while not forwards and time.monotonic() < deadline:  # wakes, one forward of 12
            time.sleep(0.005)
        for t in threads[1:]:
            t.start()
        for t in threads:
            t.join(30)
    finally:
        del model.logits  # the class's method again
    assert len(forwards) < 8, forwards
    assert forwards == [forwards[0], 12 - forwards[0]]  # 12 texts in all: one alone, then the rest
    want = expected(reference, "sst2", TEXTS)
    for i, (status, answer) in enumerate(answers):
        assert status == 200 and len(answer["predictions"]) == 1 + i % 2
        for got in answer["predictions"]:
            np.testing.assert_allclose(list(got["probabilities"].values()), want[i % 4], atol=1e-5)


def test_concurrent_requests_for_several_tasks_share_one_forward(server, adapters):
    """Requests for different tasks that arrive together run as one forward (a task per row,
    issue 33), each answered as its task alone answers it."""
    _, reference = adapters
    model, batcher = server.model, server.batcher
    calls, real = [], model.logits

    def counting_logits(*args, **kw):
        calls.append(kw.get("adapter"))
        if len(calls) == 1:  # hold the first forward until the other requests are queued
            deadline = time.monotonic() + 10
            while len(batcher.waiting) < 5 and time.monotonic() < deadline:
                time.sleep(0.005)
        return real(*args, **kw)

    model.logits = counting_logits
    bodies = [{"task": ("sst2", "topic", "sts")[i % 3], **({"pairs": PAIRS[:2]} if i % 3 == 2 else
                                                           {"texts": TEXTS[:1 + i % 2]})} for i in range(6)]
    answers = [None] * 6
    batches_before = batcher.batches
    try:
        def client(i):
            answers[i] = call(server, "/predict", bodies[i])

        threads = [threading.Thread(target=client, args=(i,)) for i in range(6)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
    finally:
        del model.logits
    # Which requests the first batch catches depends on the threads' timing; whatever it is, a
    # batch runs its single texts (sst2 and topic together) as one forward and the sts pairs as
    # another: never a forward per task.
    batches = batcher.batches - batches_before
    assert all(isinstance(c, list) for c in calls), calls
    assert len(calls) <= 2 * batches and batches < 6, (calls, batches)
    assert all(set(c) <= {"sst2", "topic"} or set(c) == {"sts"} for c in calls), calls
    assert any({"sst2", "topic"} <= set(c) for c in calls), calls  # the two tasks did share one
    for body, (status, answer) in zip(bodies, answers):
        assert status == 200
        if body["task"] == "sts":
            want = expected(reference, "sts", *map(list, zip(*body["pairs"])))
            np.testing.assert_allclose([p["score"] for p in answer["predictions"]], want, atol=1e-5)
        else:
            want = expected(reference, body["task"], body["texts"])
            np.testing.assert_allclose([list(p["probabilities"].values()) for p in answer["predictions"]],
                                       want, atol=1e-5)


def test_a_request_over_max_batch_runs_as_several_forwards(server, adapters):
    _, reference = adapters
    texts = [f"{t} {i}" for i in range(10) for t in TEXTS]  # 40 texts, max_batch 16: 3 forwards
    before = server.batcher.forwards
    status, answer = call(server, "/predict", {"task": "topic", "texts": texts})
    assert status == 200 and server.batcher.forwards - before == 3
    np.testing.assert_allclose([list(p["probabilities"].values()) for p in answer["predictions"]],
                               expected(reference, "topic", texts), atol=1e-5)


BAD = [  # (method, path, body (bytes or JSON-able), status, words the error must hold)
    ("POST", "/predict", b"{not json", 400, ("not JSON",)),
    ("POST", "/predict", b"\xff\xfe", 400, ("not JSON",)),
    ("POST", "/predict", [1, 2], 400, ("a list", "JSON object")),
    ("POST", "/predict", "text", 400, ("a string", "JSON object")),
    ("POST", "/predict", {"texts": ["a"]}, 400, ("missing 'task'", "sst2", "topic")),
    ("POST", "/predict", {"task": "nope", "texts": ["a"]}, 404, ("'nope'", "sst2, sts, topic")),
    ("POST", "/predict", {"task": 3, "texts": ["a"]}, 400, ("'task'", "a number")),
    ("POST", "/predict", {"task": "sst2"}, 400, ("'texts'", "'pairs'")),
    ("POST", "/predict", {"task": "sst2", "texts": ["a"], "pairs": [["a", "b"]]}, 400, ("not both",)),
    ("POST", "/predict", {"task": "sst2", "text": ["a"]}, 400, ("unknown field 'text'",)),
    ("POST", "/predict", {"task": "sst2", "texts": []}, 400, ("'texts' is empty",)),
    ("POST", "/predict", {"task": "sst2", "texts": "a film"}, 400, ("'texts'", "a string", "a list")),
    ("POST", "/predict", {"task": "sst2", "texts": ["ok", 5]}, 400, ("texts[1]", "a number")),
    ("POST", "/predict", {"task": "sst2", "texts": ["ok", None]}, 400, ("texts[1]", "null")),
    ("POST", "/predict", {"task": "sst2", "texts": ["a"] * (MAX_TEXTS + 1)}, 413,
     (f"{MAX_TEXTS + 1} items", f"at most {MAX_TEXTS}")),
    ("POST", "/predict", {"task": "sst2", "pairs": [["a", "b"], ["a"]]}, 400, ("pairs[1]", "1 items", "two strings")),
    ("POST", "/predict", {"task": "sst2", "pairs": [["a", 2]]}, 400, ("pairs[0]", "two strings")),
    ("POST", "/predict", {"task": "sst2", "pairs": ["a b"]}, 400, ("pairs[0]", "a string")),
    ("POST", "/predict", b"x" * ((1 << 20) + 1), 413, ("1048577 bytes", "at most 1048576")),
    ("GET", "/predict", None, 405, ("GET /predict", "POST")),
    ("POST", "/tasks", {}, 405, ("POST /tasks", "GET")),
    ("DELETE", "/health", None, 405, ("DELETE /health", "GET")),
    ("GET", "/nope", None, 404, ("'/nope'", "/predict", "/tasks", "/health")),
    ("POST", "/", {}, 404, ("'/'",)),
]


@pytest.mark.parametrize("method, path, body, status, says", BAD, ids=[f"{b[3]}-{i}" for i, b in enumerate(BAD)])
def test_bad_requests_get_a_4xx_and_json_error_and_serving_goes_on(server, method, path, body, status, says):
    raw = body if isinstance(body, bytes) else None
    got, answer = call(server, path, None if raw is not None else body, method=method, raw=raw)
    assert got == status, answer
    assert set(answer) == {"error"}
    for word in says:
        assert word in answer["error"], (word, answer["error"])
    assert call(server, "/health")[0] == 200


def test_a_post_without_content_length_gets_411_and_a_chunked_one_is_read(server):
    host, port = server.server_address[:2]
    with socket.create_connection((host, port), timeout=10) as s:
        s.sendall(b"POST /predict HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        reply = s.makefile("rb").read().decode()
    assert reply.startswith("HTTP/1.1 411") and "Content-Length" in reply.split("\r\n\r\n", 1)[1]
    body = json.dumps({"task": "sst2", "texts": ["ok"]}).encode()
    with socket.create_connection((host, port), timeout=30) as s:
        s.sendall(b"POST /predict HTTP/1.1\r\nHost: x\r\nConnection: close\r\nTransfer-Encoding: "
                  b"chunked\r\n\r\n" + b"%x\r\n" % len(body) + body + b"\r\n0\r\n\r\n")
        reply = s.makefile("rb").read().decode()
    assert reply.startswith("HTTP/1.1 200") and '"label"' in reply
    assert call(server, "/health")[0] == 200


def test_port_in_use_is_a_serve_error(server):
    with pytest.raises(ServeError, match=rf"127.0.0.1:{server.server_address[1]} is in use"):
        make_server(server.model, "127.0.0.1", server.server_address[1])


def parse(argv):
    return add_arguments(argparse.ArgumentParser(prog="minadapt serve")).parse_args(argv)


@pytest.mark.parametrize("argv, says", [
    ("--port 0x50", "--port"), ("--port 65536", "from 0 to 65535"), ("--port -1", "--port"),
    ("--host not_a_host!", "--host"), ("--host 300.1.1.1.1.", "--host"),
    ("--max-batch 0", "--max-batch"), ("--max-batch two", "--max-batch"),
    ("--device tpu", "--device"), ("", "--adapter"),
])
def test_bad_options_are_refused_by_argparse_in_one_line(argv, says, capsys):
    with pytest.raises(SystemExit) as e:
        parse((argv + " --adapter a.safetensors").split() if argv else [])
    assert e.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert says in err[-1] and err[-1].startswith("minadapt serve: error:")


def test_good_options_parse():
    a = parse("--adapter a --adapter b --host ::1 --port 0 --max-batch 8".split())
    assert (a.adapter, a.host, a.port, a.max_batch) == (["a", "b"], "::1", 0, 8)
    assert parse(["--adapter", "a", "--host", "localhost"]).host == "localhost"


def run_serve(weights, paths, *extra):
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    argv = [sys.executable, "-m", "minadapt.serve", "--weights", str(weights), "--port", "0", *extra]
    for p in paths:
        argv += ["--adapter", str(p)]
    return subprocess.Popen(argv, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)


def wait_listening(proc, timeout=60) -> str:
    """The URL from the startup line (reading stdout until it comes)."""
    deadline = time.monotonic() + timeout
    lines = []
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        lines.append(line)
        if "listening on " in line:
            return line.split("listening on ", 1)[1].split()[0], lines
    proc.kill()
    raise AssertionError(f"no 'listening on' line: {lines} {proc.stderr.read()}")


def test_sigterm_answers_the_request_under_way_then_closes_the_socket(checkpoint_dir, adapters, capsys):
    """serve() in this (the main) thread; the request's forward is held at a gate while SIGTERM
    comes, so it is under way for certain: it is answered, then serve() returns 0."""
    paths, _ = adapters
    model = load_model(checkpoint_dir)
    model.load_adapter(paths["sst2"])
    server = make_server(model, "127.0.0.1", 0)
    gate, entered, result = threading.Event(), threading.Event(), {}
    real = model.logits

    def gated_logits(*args, **kw):
        entered.set()
        gate.wait(30)
        return real(*args, **kw)

    def client():  # queued in the socket's backlog until serve() accepts it
        result["answer"] = call(server, "/predict", {"texts": TEXTS}, timeout=120)

    def conductor():
        if entered.wait(60):  # serve() is running (its handlers set) and the forward is under way
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(1.0)
        result["while_held"] = dict(result)
        gate.set()

    model.logits = gated_logits
    before = signal.getsignal(signal.SIGTERM)
    threads = [threading.Thread(target=f, daemon=True) for f in (client, conductor)]
    for t in threads:
        t.start()
    assert serve(server, out=io.StringIO()) == 0
    for t in threads:
        t.join(60)
    assert result["while_held"] == {}  # serve() was still waiting for it
    status, answer = result["answer"]
    assert status == 200 and len(answer["predictions"]) == len(TEXTS)
    err = capsys.readouterr().err
    assert "SIGTERM: answering the requests under way" in err
    assert "stopped after 1 answered requests (1 forwards)" in err
    assert signal.getsignal(signal.SIGTERM) is before  # the handler serve() replaced is back
    with pytest.raises(OSError):  # the socket is closed
        urllib.request.urlopen(server.url + "/health", timeout=5)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_stops_the_command_cleanly_with_exit_0(checkpoint_dir, adapters, sig):
    paths, _ = adapters
    proc = run_serve(checkpoint_dir, [paths["sst2"], paths["topic"]])
    try:
        url, startup = wait_listening(proc)
        assert any("sst2" in line and "negative, positive" in line for line in startup)
        assert any("topic" in line and "5 labels" in line for line in startup)
        req = urllib.request.Request(url + "/predict", json.dumps({"task": "topic", "texts": TEXTS}).encode())
        with urllib.request.urlopen(req, timeout=120) as r:
            assert r.status == 200 and len(json.loads(r.read())["predictions"]) == len(TEXTS)
        proc.send_signal(sig)
        out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err
    assert f"{sig.name}: answering the requests under way" in err
    assert "stopped after 1 answered requests (1 forwards)" in err
    assert "Traceback" not in err
    with pytest.raises(OSError):  # the socket is closed
        urllib.request.urlopen(url + "/health", timeout=5)


def test_port_in_use_exits_2_with_one_line(checkpoint_dir, adapters):
    paths, _ = adapters
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        proc = subprocess.run([sys.executable, "-m", "minadapt.serve", "--adapter", str(paths["sst2"]),
                               "--weights", str(checkpoint_dir), "--port", str(port)], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        f"minadapt serve: error: 127.0.0.1:{port} is in use (another server?): stop it or pick another --port"]
