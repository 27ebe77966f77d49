"""``codefusion serve``: the HTTP JSON API (FastAPI) over one DynamicBatcher.

    POST /v1/generate   {"prompts": [...], "lang", "steps", "solver", "num_samples", "seed", "max_length",
                         "early_exit", "eta", "clamp", "trace_steps"} → the object `generate --json` prints
    POST /v1/generate/stream   the same body → server-sent events: one `trace` event per entry of
                        trace_steps as the loop reaches it ({"step", "timestep", "texts"}: the code
                        emerging from noise), then one `result` event (the /v1/generate object) or
                        one `error` event ({"status", "error"})
    GET  /healthz       {"status": "ok", ...}
    GET  /metrics       Prometheus text: requests by status, latency histogram, batch sizes, queue depth, steps
    GET  /docs          OpenAPI (FastAPI's)

Every error is one JSON object {"error": "<one line>"}: 422 names the field that is wrong (unknown fields
and values of the wrong JSON type included: "steps": "3" or true is refused, not converted), 401
without the API key (when one is set), 413 for a body over the size limit (declared or streamed), 503 +
Retry-After when the queue is full or the server drains, 504 when the request outlives its timeout, 500
when the engine fails on a request it accepted. /metrics counts every /v1/ response by status, and 499 for
a request whose client left before its answer (a job still queued then is withdrawn, not run).
"""
from __future__ import annotations

import asyncio
import json
import time
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response, StreamingResponse
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from starlette.exceptions import HTTPException as StarletteHTTPException

from ..errors import CodeFusionError
from .asgi import BodyLimit, _client_gone
from .batcher import DynamicBatcher, QueueFull, ShuttingDown
from .requests import GenerateRequest, Limits, _error, _validate, refusal, validation_message


class Metrics:
    def __init__(self):
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter("codefusion_requests", "HTTP generate requests by status", ["status"], registry=r)
        self.latency = Histogram("codefusion_request_seconds", "generate latency", registry=r,
                                 buckets=(.01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60, 120))
        self.batch_rows = Histogram("codefusion_batch_rows", "rows (prompts × samples) per denoising batch",
                                    registry=r, buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256))
        self.batch_requests = Histogram("codefusion_batch_requests", "requests merged per batch", registry=r,
                                        buckets=(1, 2, 4, 8, 16, 32, 64))
        self.steps = Counter("codefusion_steps", "denoising steps run", registry=r)
        self.queue = Gauge("codefusion_queue_depth", "requests waiting for a batch", registry=r)

    def on_batch(self, rows: int, requests: int, steps: int | None, seconds: float) -> None:
        self.batch_rows.observe(rows)
        self.batch_requests.observe(requests)
        self.steps.inc(steps or 0)


def serve_on_main_thread(app: FastAPI, host: str, port: int, graceful_s: int = 120) -> None:
    """uvicorn on a background thread, the batcher's worker loop on this (the main) thread, which loaded
    the model: see batcher.py for why. SIGINT / SIGTERM stop uvicorn, whose shutdown drains the batcher."""
    import signal
    import threading

    import uvicorn

    server = uvicorn.Server(uvicorn.Config(app, host=host, port=port, log_level="info",
                                           timeout_graceful_shutdown=graceful_s))

    def run_http():
        try:
            server.run()
        except SystemExit:  # uvicorn exits on a failed start (port in use); the main thread reports it
            pass
        finally:  # and must not be left waiting for jobs
            app.state.batcher.close()
    http = threading.Thread(target=run_http, name="codefusion-http")

    def stop(signum, frame):
        server.should_exit = True
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, stop)
    http.start()
    app.state.batcher.serve_forever()  # returns once uvicorn's shutdown has closed and drained it
    http.join()
    if not server.started:
        raise CodeFusionError(f"the HTTP server did not start on {host}:{port} (is the port in use?)")


def _sse(event: str, data: dict) -> str:
    return f"event: {event}\ndata: {json.dumps(data)}\n\n"


def create_app(cf, max_batch: int = 64, max_wait_ms: float = 50.0, max_queue: int = 256, api_key: str | None = None,
               limits: Limits = Limits(), own_worker: bool = True, quiet_ms: float = 10.0) -> FastAPI:
    """``own_worker=False``: the caller runs ``app.state.batcher.serve_forever()`` on its own thread
    (``codefusion serve`` runs it on the main thread, uvicorn on another)."""
    metrics = Metrics()
    batcher = DynamicBatcher(cf, max_batch, max_wait_ms, max_queue, limits.timeout_s, metrics.on_batch, own_worker,
                             quiet_ms)

    @asynccontextmanager
    async def lifespan(app):
        yield
        await asyncio.to_thread(batcher.close)  # graceful: queued and running requests finish first

    app = FastAPI(title="CodeFusion", description="Diffusion models for code generation", lifespan=lifespan)
    app.state.batcher, app.state.metrics = batcher, metrics

    @app.exception_handler(RequestValidationError)
    async def invalid_body(request: Request, exc: RequestValidationError):
        return _error(422, validation_message(exc.errors()))

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException):
        return _error(exc.status_code, str(exc.detail), getattr(exc, "headers", None))

    app.add_middleware(BodyLimit, limit=limits.max_body_bytes)  # inside guard (added after): its 413s are counted

    @app.middleware("http")
    async def guard(request: Request, call_next):
        response = await _guarded(request, call_next)
        if request.url.path.startswith("/v1/") and not getattr(request.state, "counts_itself", False):
            metrics.requests.labels(str(response.status_code)).inc()
        return response

    async def _guarded(request: Request, call_next):
        guarded = api_key if request.url.path.startswith("/v1/") else None  # /healthz, /metrics, /docs stay open
        return refusal(request.headers, guarded, limits.max_body_bytes) or await call_next(request)

    def submit(req: GenerateRequest, on_trace=None):
        """→ the job's Future, or the error response when the request is refused before it queues."""
        try:
            prompts, config = _validate(req, cf, limits)
            rows = len(prompts) * config.num_samples
            if rows > batcher.max_batch:
                raise CodeFusionError(f"prompts × num_samples = {rows} rows; this server runs at most "
                                      f"{batcher.max_batch} in one batch: split the request")
            future = batcher.submit(prompts, config, on_trace=on_trace)
        except (QueueFull, ShuttingDown) as e:
            return _error(503, str(e), {"Retry-After": str(limits.retry_after_s)})
        except CodeFusionError as e:
            return _error(422, str(e))
        metrics.queue.set(batcher.depth())
        return future

    async def outcome(future, t0: float, request: Request | None = None) -> tuple[int, dict]:
        """Wait for the job → (HTTP status, body). A job whose client has left (``request``'s connection
        closed) or whose timeout passed leaves the queue if it is still there."""
        waiting = asyncio.wrap_future(future)
        waiting.add_done_callback(lambda f: f.cancelled() or f.exception())  # an answer nobody waits for any more
        gone = asyncio.ensure_future(_client_gone(request)) if request is not None else None
        watch, left_us = {waiting, gone} - {None}, False
        deadline = time.monotonic() + limits.timeout_s
        try:
            while not waiting.done() and not left_us and (left := deadline - time.monotonic()) > 0:
                await asyncio.wait(watch, timeout=left, return_when=asyncio.FIRST_COMPLETED)
                if gone is not None and gone.done():
                    left_us = not gone.cancelled() and gone.exception() is None
                    watch.discard(gone)  # a receive that failed tells nothing: wait on for the answer
        finally:
            if gone is not None:
                gone.cancel()
        try:
            if not waiting.done():
                batcher.withdraw(future)
                if left_us:
                    return 499, {"error": "the client closed the connection before the answer"}
                return 504, {"error": f"the request did not finish within {limits.timeout_s:g} s"}
            if waiting.cancelled():  # withdrawn by the stream below when its client left
                return 499, {"error": "the client closed the connection before the answer"}
            out = waiting.result()
        except TimeoutError:  # the worker found it past its deadline in the queue
            return 504, {"error": f"the request did not finish within {limits.timeout_s:g} s"}
        except CodeFusionError as e:
            return 422, {"error": str(e)}
        except Exception as e:  # noqa: BLE001 — an engine failure is a JSON 500 (and a stream's error event)
            detail = f": {str(e).splitlines()[0]}" if str(e) else ""
            return 500, {"error": f"the engine failed on this request: {type(e).__name__}{detail}"}
        metrics.latency.observe(time.perf_counter() - t0)
        return 200, out.to_json()

    @app.post("/v1/generate")
    async def generate(req: GenerateRequest, request: Request):
        t0 = time.perf_counter()
        future = submit(req)
        if isinstance(future, Response):
            return future
        status, body = await outcome(future, t0, request)
        return body if status == 200 else JSONResponse(body, status_code=status)

    @app.post("/v1/generate/stream")
    async def generate_stream(req: GenerateRequest, request: Request):
        t0, loop, events = time.perf_counter(), asyncio.get_running_loop(), asyncio.Queue()
        future = submit(req, on_trace=lambda entry: loop.call_soon_threadsafe(events.put_nowait, entry))
        if isinstance(future, Response):
            return future  # refused before queueing: a plain error response, not a stream
        request.state.counts_itself = True  # the stream's status is known only at its end
        done = asyncio.ensure_future(outcome(future, t0))
        left = []  # set when the client leaves before the result event: that stream counts as 499, once
        # counted when the job ends (as 499 if the client had left), even though the stream below was cancelled
        done.add_done_callback(lambda d: d.cancelled() or metrics.requests.labels(
            "499" if left else str(d.result()[0])).inc())

        async def stream():
            getter = None
            try:
                while not (done.done() and events.empty()):
                    getter = asyncio.ensure_future(events.get())
                    await asyncio.wait({getter, done}, return_when=asyncio.FIRST_COMPLETED)
                    if getter.done():
                        yield _sse("trace", getter.result())
                    else:
                        getter.cancel()
            finally:  # cancelled when the client leaves: a job still queued is not run for nobody
                if getter is not None:
                    getter.cancel()
                if not done.done():
                    left.append(True)
                    batcher.withdraw(future)
            status, body = done.result()
            yield _sse("result", body) if status == 200 else _sse("error", {"status": status, **body})
        return StreamingResponse(stream(), media_type="text/event-stream", headers={"Cache-Control": "no-cache"})

    @app.get("/healthz")
    async def healthz():
        if not batcher.alive() and not batcher.closing:
            return _error(503, "the batching worker has stopped: restart the server")
        return {"status": "draining" if batcher.closing else "ok", "model": cf.cfg.name,
                "backend": cf.backend.name, "device": str(cf.backend.device), "dtype": str(cf.backend.dtype).split(".")[-1],
                "max_batch": batcher.max_batch, "max_wait_ms": batcher.max_wait * 1e3,
                "quiet_ms": batcher.quiet * 1e3, "length_quantile": cf.length_quantile,
                "clamp": cf.default_clamp,  # what a request without "clamp" runs with (the model's default)
                "queue_depth": batcher.depth()}

    @app.get("/metrics")
    async def prometheus():
        metrics.queue.set(batcher.depth())
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    return app
