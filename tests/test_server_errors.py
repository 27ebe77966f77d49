"""The HTTP server's refusals and failures, each one JSON line {"error": ...} with its status: 422 naming the
field, 401 without the API key, 413 over the body limit, 503 with a full queue, 504 past the timeout, 500 when
the engine fails."""
import json
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from codefusion.server.app import create_app
from codefusion.server.requests import Limits

from conftest import Failing
from server_helpers import STEPS, Server, Slow, _events, _post, cf  # noqa: F401 (cf: a pytest fixture, found by name)


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


@pytest.mark.parametrize("argv", [["--max-wait-ms", "nan"], ["--max-wait-ms", "-5"], ["--quiet-ms", "inf"],
                                  ["--timeout", "nan"], ["--max-batch", "0"]])
def test_serve_flags_out_of_range_are_one_line(argv, capsys):
    """Checked before the model loads; a nan --max-wait-ms passed `min(...) < 0` and the batcher never closed a
    batch (a busy loop)."""
    from codefusion.cli import main

    assert main(["serve", *argv]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: --max-batch, --max-queue, --replicas must be ≥ 1") and err.count("\n") == 1
