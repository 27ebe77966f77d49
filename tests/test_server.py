"""The HTTP server and its dynamic batching, on loopback with the tiny trained checkpoint."""
import json
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
import uvicorn

from codefusion import CodeFusion, GenerationConfig
from codefusion.bench.serve import _free_port
from codefusion.server.app import Limits, create_app
from codefusion.server.batcher import DynamicBatcher, QueueFull

from conftest import Failing

STEPS = 4


@pytest.fixture(scope="module")
def cf(overfit_dir):
    return CodeFusion.from_pretrained(overfit_dir, backend="torch")


class Slow:
    """The engine behind a gate: each batch waits ``delay`` seconds first (in the worker thread)."""

    def __init__(self, cf, delay: float):
        self.cf, self.delay = cf, delay
        self.batches: list[int] = []
        self.taken = 0  # requests handed to the engine so far, counted before the delay

    def __getattr__(self, name):  # the rest the app reads (cfg, backend, resolve, healthz fields): the engine's
        return getattr(self.cf, name)

    def generate_many(self, requests, on_trace=None):
        self.taken += len(requests)
        time.sleep(self.delay)
        self.batches.append(len(requests))
        return self.cf.generate_many(requests, on_trace)


class Server:
    """uvicorn in a thread on a free loopback port."""

    def __init__(self, app):
        self.port = _free_port()
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        while not self.server.started:
            time.sleep(0.01)
        self.url = f"http://127.0.0.1:{self.port}"

    def stop(self):
        self.server.should_exit = True
        self.thread.join(30)


def _post(url, body, headers=None, **kw):
    """JSON with ASCII escapes, as most clients send it (a lone surrogate travels as \\ud800)."""
    return httpx.post(url + "/v1/generate", content=json.dumps(body), timeout=60,
                      headers={"content-type": "application/json", **(headers or {})}, **kw)


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


def test_requests_with_other_steps_are_batched_apart(cf):
    slow = Slow(cf, 0.2)
    batcher = DynamicBatcher(slow, max_batch=64, max_wait_ms=100, quiet_ms=None)
    futures = [batcher.submit(["list all files"], GenerationConfig(steps=s, seed=i)) for i, s in
               enumerate([STEPS, STEPS + 1, STEPS, STEPS + 1])]
    outs = [f.result(30) for f in futures]
    batcher.close()
    assert sorted(slow.batches) == [2, 2] and [o.timings["steps"] for o in outs] == [STEPS, STEPS + 1] * 2


def test_the_window_closes_once_arrivals_stop(cf):
    """Quiet rule: a job 10 ms after the first joins its batch; one 600 ms later (past the 150 ms quiet gap,
    long before the 5 s window) runs in the next batch. Requests in other languages share a batch."""
    slow = Slow(cf, 0.05)
    batcher = DynamicBatcher(slow, max_batch=64, max_wait_ms=5000, quiet_ms=150)
    first = batcher.submit(["list all files"], GenerationConfig(steps=STEPS))
    time.sleep(0.01)
    second = batcher.submit(["sum a list"], GenerationConfig(steps=STEPS, lang="python", seed=4))
    time.sleep(0.6)
    third = batcher.submit(["pwd"], GenerationConfig(steps=STEPS))
    for f in (first, second, third):
        f.result(30)
    batcher.close()
    assert slow.batches == [2, 1]


def test_a_full_queue_answers_503_with_retry_after(cf):
    slow = Slow(cf, 0.5)
    app = create_app(slow, max_batch=1, max_wait_ms=0, max_queue=1)
    server = Server(app)
    body = {"prompts": ["list all files"], "steps": STEPS}
    try:
        with ThreadPoolExecutor(4) as pool:
            responses = list(pool.map(lambda _: _post(server.url, body), range(4)))
    finally:
        server.stop()
    codes = sorted(r.status_code for r in responses)
    assert codes.count(200) >= 1 and codes.count(503) >= 1 and set(codes) <= {200, 503}
    busy = next(r for r in responses if r.status_code == 503)
    assert busy.headers["retry-after"] == "1" and "queue is full" in busy.json()["error"]


def test_jobs_queued_during_a_batch_wait_for_the_clients_it_answers(cf):
    """Closed-loop clients: B queues while batch A runs; A's clients come back 20 ms after A ends. The
    worker's window opens when it is free, so B and the returning clients run as one batch."""
    slow = Slow(cf, 0.3)
    batcher = DynamicBatcher(slow, max_batch=64, max_wait_ms=150, quiet_ms=None)
    config = GenerationConfig(steps=STEPS)
    a = [batcher.submit([f"a{i}"], config) for i in range(3)]
    time.sleep(0.2)  # A is running; B arrives and its own 150 ms pass before A ends
    b = [batcher.submit([f"b{i}"], config) for i in range(3)]
    for f in a:
        f.result(30)
    time.sleep(0.02)
    c = [batcher.submit([f"c{i}"], config) for i in range(3)]
    for f in b + c:
        f.result(30)
    batcher.close()
    assert slow.batches == [3, 6]


def test_batcher_refuses_when_full(cf):
    batcher = DynamicBatcher(Slow(cf, 0.3), max_batch=1, max_wait_ms=0, max_queue=1)
    first = batcher.submit(["a"], GenerationConfig(steps=STEPS))
    time.sleep(0.05)  # the worker has taken the first job
    batcher.submit(["b"], GenerationConfig(steps=STEPS))
    with pytest.raises(QueueFull, match="queue is full"):
        batcher.submit(["c"], GenerationConfig(steps=STEPS))
    first.result(30)
    batcher.close()


def test_timeout_answers_504(cf):
    server = Server(create_app(Slow(cf, 1.0), limits=Limits(timeout_s=0.2)))
    try:
        resp = _post(server.url, {"prompts": ["list all files"], "steps": STEPS})
    finally:
        server.stop()
    assert resp.status_code == 504 and "within 0.2 s" in resp.json()["error"]


@pytest.mark.parametrize("body, status, message", [
    ({"prompts": ["x"], "steps": 0}, 422, "steps must be an integer in 1..1200"),
    ({"prompts": ["x"], "solver": "euler"}, 422, "unknown solver 'euler'"),
    ({"prompts": ["x"], "lang": "rust"}, 422, "unknown language 'rust'"),
    ({"prompts": ["   "]}, 422, "prompt 0 is empty"),
    ({"prompts": ["x"], "num_samples": 99}, 422, "num_samples: at most 16"),
    ({"prompts": ["x" * 3000]}, 422, "prompts[0]: longer than 2000"),
    ({"prompts": []}, 422, "prompts"),
    ({"prompts": ["x"], "steps": "many"}, 422, "steps"),
    ({"prompts": ["x"], "num_sample": 4}, 422, "num_sample: unknown field (did you mean num_samples?)"),
    ({"prompts": ["x"], "temperature": 4}, 422, "temperature: unknown field; the fields are prompts, lang"),
    ({"prompts": ["x"], "steps": True}, 422, "steps: Input should be a valid integer, got true"),
    ({"prompts": ["x"], "steps": "3"}, 422, "steps: Input should be a valid integer"),
    ({"prompts": ["x"], "seed": 1.0}, 422, "seed: Input should be a valid integer"),
    ({"prompts": ["x"], "clamp": 1}, 422, "clamp: Input should be a valid boolean or Input should be a valid string"),
    ({"prompts": ["x", 3]}, 422, "prompts[1]: Input should be a valid string"),
    ({"prompts": ["\ud800"]}, 422, "prompt 0 is not valid Unicode (a lone surrogate at character 0)"),
    ({"prompts": ["x"] * 5, "num_samples": 16}, 422, "80 rows; this server runs at most 64 in one batch"),
    ([1, 2], 422, "the body must be a JSON object"),
])
def test_bad_input_names_the_field(cf, body, status, message):
    server = Server(create_app(cf))
    try:
        resp = _post(server.url, body)
    finally:
        server.stop()
    assert resp.status_code == status and message in resp.json()["error"], resp.text
    assert list(resp.json()) == ["error"] and "\n" not in resp.json()["error"]


def test_malformed_json_and_chunked_bodies_over_the_limit(cf):
    """Errors FastAPI raises before the handler keep the one shape, {"error": one line}; a chunked upload
    declares no Content-Length, so the limit is counted as the body streams in. /metrics counts them all."""
    server = Server(create_app(cf, limits=Limits(max_body_bytes=2000)))
    body = json.dumps({"prompts": ["list files"], "steps": STEPS, "lang": "bash" + " " * 3000}).encode()
    try:
        broken = httpx.post(server.url + "/v1/generate", content=b'{"prompts": [', timeout=60,
                            headers={"content-type": "application/json"})
        chunked = httpx.post(server.url + "/v1/generate", content=iter([body[:1000], body[1000:]]), timeout=60,
                             headers={"content-type": "application/json"})
        small = httpx.post(server.url + "/v1/generate", timeout=60, headers={"content-type": "application/json"},
                           content=iter([json.dumps({"prompts": ["list files"], "steps": STEPS}).encode()]))
        metrics = httpx.get(server.url + "/metrics").text
    finally:
        server.stop()
    assert broken.status_code == 422 and broken.json()["error"].startswith("the body is not valid JSON")
    assert chunked.request.headers.get("transfer-encoding") == "chunked"
    assert chunked.status_code == 413 and chunked.json() == {"error": "request body is over 2000 bytes, the limit"}
    assert small.status_code == 200
    for status in ("413", "422", "200"):
        assert f'codefusion_requests_total{{status="{status}"}} 1.0' in metrics


def test_an_engine_failure_is_a_json_500_for_that_request_only(cf):
    server = Server(create_app(Failing(cf), max_wait_ms=200, quiet_ms=None))
    try:
        with ThreadPoolExecutor(2) as pool:
            bad = pool.submit(_post, server.url, {"prompts": ["boom"], "steps": STEPS})
            good = pool.submit(_post, server.url, {"prompts": ["list all files"], "steps": STEPS})
            bad, good = bad.result(), good.result()
        stream = httpx.post(server.url + "/v1/generate/stream", json={"prompts": ["boom"], "steps": STEPS},
                            timeout=60)
        metrics = httpx.get(server.url + "/metrics").text
    finally:
        server.stop()
    assert good.status_code == 200 and good.json()["texts"]
    assert bad.status_code == 500 and bad.json() == {"error": "the engine failed on this request: RuntimeError: kaboom"}
    assert _events(stream.text) == [("error", {"status": 500, "error": "the engine failed on this request: "
                                                                        "RuntimeError: kaboom"})]
    assert 'codefusion_requests_total{status="500"} 2.0' in metrics


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


def test_a_request_cancelled_while_queued_does_not_stop_the_worker(cf):
    """A handler that times out cancels its queued job; the worker used to die on it (set_exception on a
    cancelled future) and every later request hung until its own timeout."""
    batcher = DynamicBatcher(Slow(cf, 0.3), max_wait_ms=0)
    running = batcher.submit(["list all files"], GenerationConfig(steps=STEPS))
    time.sleep(0.1)  # the worker holds the first job
    queued = batcher.submit(["list all files"], GenerationConfig(steps=STEPS + 1))
    assert queued.cancel()
    running.result(30)
    later = batcher.submit(["count lines"], GenerationConfig(steps=STEPS)).result(30)
    assert later.texts and batcher.alive()
    batcher.close()
    assert not batcher.alive()


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


def test_timed_out_requests_free_their_queue_slots(cf):
    """Requests answered 504 while queued leave the queue: /healthz reports no depth and a new request is not
    refused as if the queue were full (it was: two timed-out jobs held both slots)."""
    slow = Slow(cf, 2.0)
    server = Server(create_app(slow, max_batch=1, max_wait_ms=0, max_queue=2, limits=Limits(timeout_s=0.4)))
    try:
        with ThreadPoolExecutor(3) as pool:
            codes = list(pool.map(lambda i: _post(server.url, {"prompts": ["a"], "steps": STEPS + i}).status_code,
                                  range(3)))
        depth = httpx.get(server.url + "/healthz").json()["queue_depth"]
        fresh = _post(server.url, {"prompts": ["x"], "steps": STEPS})
    finally:
        server.stop()
    assert codes == [504] * 3 and depth == 0
    assert fresh.status_code == 504, fresh.text  # queued behind the busy worker, not 503 "the queue is full"
    assert slow.taken == 1


class TraceThenFail:
    """An engine that streams steps 2 and 4 of every request, then fails a batch of more than one (as an
    out-of-memory would) and answers a lone request."""

    def __init__(self):
        self.batches = []

    def generate_many(self, requests, on_trace=None):
        self.batches.append(len(requests))
        for step in (2, 4):
            for r in range(len(requests)):
                on_trace(r, {"step": step, "timestep": 0, "texts": [[f"request {r}"]]})
        if len(requests) > 1:
            raise RuntimeError("out of memory (stand-in)")
        return ["answer"]


def test_a_batch_rerun_one_job_at_a_time_streams_each_step_once():
    engine = TraceThenFail()
    batcher = DynamicBatcher(engine, max_batch=8, max_wait_ms=300, quiet_ms=None)
    seen = [[], []]
    futures = [batcher.submit([f"p{k}"], GenerationConfig(steps=4, trace_steps=(2, 4)), on_trace=seen[k].append)
               for k in range(2)]
    assert [f.result(30) for f in futures] == ["answer", "answer"]
    batcher.close()
    assert engine.batches == [2, 1, 1]  # the batch failed; each job ran again alone and streamed again
    assert [[e["step"] for e in s] for s in seen] == [[2, 4], [2, 4]]


def test_api_key_and_body_limit(cf):
    server = Server(create_app(cf, api_key="s3cret", limits=Limits(max_body_bytes=200)))
    try:
        denied = _post(server.url, {"prompts": ["list files"], "steps": STEPS})
        allowed = _post(server.url, {"prompts": ["list files"], "steps": STEPS}, headers={"X-API-Key": "s3cret"})
        big = _post(server.url, {"prompts": ["x" * 500]}, headers={"X-API-Key": "s3cret"})
        health = httpx.get(server.url + "/healthz").json()
        docs = httpx.get(server.url + "/openapi.json").json()
    finally:
        server.stop()
    assert denied.status_code == 401 and allowed.status_code == 200 and big.status_code == 413
    assert health["status"] == "ok" and health["backend"] == "torch" and "/v1/generate" in docs["paths"]
    assert health["clamp"] == "none"  # the fixture's checkpoint names no default sampler
    assert health["length_quantile"] == cf.length_quantile == 0.9


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


def _events(text: str) -> list[tuple[str, dict]]:
    out = []
    for block in text.strip().split("\n\n"):
        lines = dict(line.split(": ", 1) for line in block.splitlines())
        out.append((lines["event"], json.loads(lines["data"])))
    return out


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


def test_the_worker_loop_can_run_on_the_callers_thread(cf):
    """own_thread=False (what `codefusion serve` does with its main thread): serve_forever() runs the jobs
    on the calling thread and returns once close() has drained the queue."""
    batcher = DynamicBatcher(cf, max_wait_ms=5, own_thread=False)
    config = GenerationConfig(steps=STEPS, seed=3)
    answers = []

    def client():
        answers.append(batcher.submit(["list all files"], config).result(30))
        batcher.close()
    thread = threading.Thread(target=client)
    thread.start()
    batcher.serve_forever()
    thread.join(30)
    assert batcher.worker is threading.current_thread() and batcher.stopped.is_set()
    assert answers[0].texts == cf.generate(["list all files"], config).texts


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
