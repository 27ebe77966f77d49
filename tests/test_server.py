"""The HTTP server on loopback with the tiny trained checkpoint: many clients at once, streams, clients that
leave, shutdown, and `codefusion serve` (the engine on the main thread). Its error answers are in
test_server_errors.py, the batcher on its own in test_server_batcher.py."""
import json
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from codefusion import GenerationConfig
from codefusion.bench.serve import _free_port
from codefusion.server.app import create_app

from server_helpers import STEPS, Server, Slow, _events, _post, cf  # noqa: F401 (cf: a pytest fixture, found by name)


def test_concurrent_clients_each_get_their_own_answer_once(cf):
    server = Server(create_app(cf, max_batch=32, max_wait_ms=20))
    prompts = ["list all files", "find txt files", "count lines in a.txt", "show disk usage"]
    jobs = [(c, r) for c in range(50) for r in range(4)]  # 50 clients × 4 requests

    def client(c):
        answers = []
        with httpx.Client(timeout=60) as http:
            for r in range(4):
                body = {"prompts": [prompts[(c + r) % 4]], "steps": STEPS, "seed": (c * 4 + r) % 7, "num_samples": 1 + r % 2}
                answers.append(((c, r), http.post(server.url + "/v1/generate", json=body)))
        return answers

    try:
        with ThreadPoolExecutor(50) as pool:
            results = [a for answers in pool.map(client, range(50)) for a in answers]
        metrics = httpx.get(server.url + "/metrics").text
    finally:
        server.stop()
    assert sorted(k for k, _ in results) == jobs  # every request answered exactly once
    expected = {}
    for (c, r), resp in results:
        assert resp.status_code == 200, resp.text
        got = resp.json()
        key = (prompts[(c + r) % 4], (c * 4 + r) % 7, 1 + r % 2)
        if key not in expected:
            expected[key] = cf.generate([key[0]], GenerationConfig(steps=STEPS, seed=key[1], num_samples=key[2]))
        assert got["texts"] == expected[key].texts and got["seed"] == key[1]
    assert 'codefusion_requests_total{status="200"} 200.0' in metrics
    batches = float(next(x for x in metrics.splitlines() if x.startswith("codefusion_batch_requests_count")).split()[1])
    assert batches < 200  # requests were merged: fewer batches than requests


def test_a_stream_whose_client_leaves_is_still_counted(cf):
    """The client hangs up after the first trace event, while its job runs: counted once, as 499, when it ends."""
    server = Server(create_app(Slow(cf, 0.3)))
    try:
        body = {"prompts": ["list all files"], "steps": STEPS, "trace_steps": [1, STEPS]}
        with httpx.stream("POST", server.url + "/v1/generate/stream", json=body, timeout=60) as resp:
            next(resp.iter_lines())  # the first line of the first event, then the client hangs up
        deadline, metrics = time.monotonic() + 30, ""
        while 'codefusion_requests_total{status="499"} 1.0' not in metrics and time.monotonic() < deadline:
            time.sleep(0.05)
            metrics = httpx.get(server.url + "/metrics").text
    finally:
        server.stop()
    assert 'codefusion_requests_total{status="499"} 1.0' in metrics and 'status="200"' not in metrics


def _post_and_leave(port: int, path: str, body: dict) -> None:
    """A client that sends its request and closes the connection without waiting for the answer."""
    data = json.dumps(body).encode()
    with socket.create_connection(("127.0.0.1", port)) as s:
        s.sendall(f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                  f"Content-Length: {len(data)}\r\n\r\n".encode() + data)
        time.sleep(0.1)


def _wait_for(condition, what: str, seconds: float = 30):
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, what
        time.sleep(0.02)


def test_a_request_whose_client_left_is_not_run(cf):
    """Clients that send a request and hang up while it queues (both endpoints): their jobs leave the queue and
    never reach the engine, which would otherwise run them for nobody; each counts as a 499."""
    slow = Slow(cf, 1.0)
    server = Server(create_app(slow, max_batch=1, max_wait_ms=0))
    try:
        with ThreadPoolExecutor(1) as pool:
            busy = pool.submit(_post, server.url, {"prompts": ["list all files"], "steps": STEPS})
            _wait_for(lambda: slow.taken == 1, "the first request did not reach the engine")
            _post_and_leave(server.port, "/v1/generate", {"prompts": ["count lines"], "steps": STEPS})
            _post_and_leave(server.port, "/v1/generate/stream", {"prompts": ["pwd"], "steps": STEPS,
                                                                  "trace_steps": [1]})
            _wait_for(lambda: httpx.get(server.url + "/healthz").json()["queue_depth"] == 0,
                      "the jobs of the clients that left are still queued")
            assert busy.result().status_code == 200
        time.sleep(0.3)  # the worker is free: a job left in the queue would be taken now
        metrics = httpx.get(server.url + "/metrics").text
    finally:
        server.stop()
    assert slow.taken == 1
    assert 'codefusion_requests_total{status="499"} 2.0' in metrics


def test_shutdown_finishes_requests_in_flight(cf):
    slow = Slow(cf, 0.4)
    server = Server(create_app(slow, max_batch=2, max_wait_ms=0))
    body = {"prompts": ["list all files"], "steps": STEPS}
    with ThreadPoolExecutor(4) as pool:
        pending = [pool.submit(_post, server.url, {**body, "seed": i}) for i in range(4)]
        deadline = time.monotonic() + 30  # all four queued or running before the stop, however loaded the machine
        while slow.taken + httpx.get(server.url + "/healthz").json()["queue_depth"] < 4:
            assert time.monotonic() < deadline, "the four requests did not reach the server in 30 s"
            time.sleep(0.01)
        server.stop()
        responses = [p.result() for p in pending]
    assert [r.status_code for r in responses] == [200] * 4
    assert [r.json()["seed"] for r in responses] == [0, 1, 2, 3]
    assert json.loads(responses[0].text)["timings"]["steps"] == STEPS


def test_stream_sends_each_trace_step_then_the_result(cf):
    """Two clients batched together, each streaming its own trace: every trace event arrives in step order
    before the result, equals the trace inside the result, and the result equals the non-streamed answer.
    A plain 100 ms window (no quiet gap): on a loaded machine the second client can arrive > 10 ms late."""
    server = Server(create_app(Slow(cf, 0.2), max_batch=8, max_wait_ms=100, quiet_ms=None))
    bodies = [{"prompts": ["list all files"], "steps": STEPS, "seed": 1, "trace_steps": [1, 3]},
              {"prompts": ["find txt files", "sum a list"], "steps": STEPS, "seed": 2, "num_samples": 2,
               "trace_steps": [1, 3]}]
    try:
        with ThreadPoolExecutor(2) as pool:
            streamed = list(pool.map(lambda b: httpx.post(server.url + "/v1/generate/stream", json=b, timeout=60),
                                     bodies))
        plain = [_post(server.url, b).json() for b in bodies]
        refused = httpx.post(server.url + "/v1/generate/stream", json={"prompts": ["x"], "steps": 0}, timeout=60)
        metrics = httpx.get(server.url + "/metrics").text
    finally:
        server.stop()
    for resp, body, expect in zip(streamed, bodies, plain):
        assert resp.status_code == 200 and resp.headers["content-type"].startswith("text/event-stream")
        events = _events(resp.text)
        assert [e for e, _ in events] == ["trace", "trace", "result"]
        traces, (_, result) = [d for _, d in events[:2]], events[2]
        assert [t["step"] for t in traces] == [1, 3] and traces == result["trace"]
        assert len(traces[0]["texts"]) == len(body["prompts"])
        assert all(len(per_prompt) == body.get("num_samples", 1) for per_prompt in traces[0]["texts"])
        assert result == {**expect, "timings": result["timings"]}
    assert refused.status_code == 422 and "steps" in refused.json()["error"]
    assert 'codefusion_batch_requests_count 3.0' in metrics  # the two streams ran as one batch


def test_codefusion_serve_runs_the_engine_on_the_main_thread_and_stops_on_sigterm(cf):
    """What `codefusion serve` runs: uvicorn on a thread, the batcher loop here; SIGTERM drains and returns."""
    import os
    import signal

    from codefusion.server.app import serve_on_main_thread
    app = create_app(cf, max_wait_ms=5, own_worker=False)
    port = _free_port()
    url, answers = f"http://127.0.0.1:{port}", []

    def client():
        for _ in range(600):
            try:
                httpx.get(url + "/healthz", timeout=1)
                break
            except httpx.HTTPError:
                time.sleep(0.05)
        answers.append(_post(url, {"prompts": ["list all files"], "steps": STEPS}))
        os.kill(os.getpid(), signal.SIGTERM)
    saved = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    thread = threading.Thread(target=client)
    thread.start()
    try:
        serve_on_main_thread(app, "127.0.0.1", port, graceful_s=10)
    finally:
        for sig, handler in saved.items():
            signal.signal(sig, handler)
    thread.join(30)
    assert answers[0].status_code == 200 and answers[0].json()["texts"]
    assert app.state.batcher.worker is threading.main_thread() and app.state.batcher.stopped.is_set()


def test_codefusion_serve_on_a_busy_port_fails_in_one_line(cf):
    import signal

    from codefusion.errors import CodeFusionError
    from codefusion.server.app import serve_on_main_thread
    saved = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        try:
            with pytest.raises(CodeFusionError, match="did not start on 127.0.0.1"):
                serve_on_main_thread(create_app(cf, own_worker=False), "127.0.0.1", port, graceful_s=5)
        finally:
            for sig, handler in saved.items():
                signal.signal(sig, handler)


def test_sigterm_while_serve_loads_leaves_no_temporary_export(overfit_dir, tmp_path):
    """`codefusion serve --backend onnxruntime` exports the model to a temporary folder as it loads; SIGTERM
    then (a process manager stopping it) used to kill the process on the spot and leave that folder behind.
    Now SIGTERM ends any command like Ctrl-C: the folder is removed, exit status 143, one line."""
    import os
    import signal
    import subprocess
    import sys

    pytest.importorskip("onnxruntime")
    env = {**os.environ, "TMPDIR": str(tmp_path)}
    proc = subprocess.Popen([sys.executable, "-m", "codefusion", "serve", "--model", str(overfit_dir), "--backend",
                             "onnxruntime", "--dtype", "float32", "--port", str(_free_port())],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        _wait_for(lambda: any(tmp_path.glob("codefusion-ort-*/*")) or proc.poll() is not None,
                  "the onnxruntime export did not start", seconds=120)
        assert proc.poll() is None, proc.stderr.read()
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert proc.returncode == 143, err
    assert err.strip().splitlines()[-1] == "terminated"
    assert not list(tmp_path.glob("codefusion-ort-*"))
