"""Scale-out on Ray Serve: the same engine and the same batching rule, one engine per replica.

``@serve.batch`` gathers concurrent calls on a replica (up to max_batch calls or max_wait_ms); the
batch is split by batch_key and each part runs as one CodeFusion.generate_many, so a replica
answers exactly like the single-process server. Ray is optional: ``pip install "ray[serve]"``.
"""
from __future__ import annotations

import time

from ..config import LENGTH_QUANTILE
from ..errors import CodeFusionError


def _ray():
    try:
        import ray
        from ray import serve
    except ImportError:
        raise CodeFusionError('--ray needs Ray Serve, which is not installed: pip install "ray[serve]"') from None
    return ray, serve


def build_deployment(model: str | None, backend: str, device: str, dtype: str, replicas: int, max_batch: int,
                     max_wait_ms: float, length_quantile: float = LENGTH_QUANTILE, api_key: str | None = None):
    """A bound Ray Serve application: POST JSON (the /v1/generate body) → the `generate --json` object. It
    checks the X-API-Key header when ``api_key`` is set and the body limit, as the single-process server does;
    it has no streaming, /healthz or /metrics (Ray Serve's own dashboard and metrics cover a cluster)."""
    _, serve = _ray()

    @serve.deployment(num_replicas=replicas, max_ongoing_requests=2 * max_batch)  # room for a full batch queued
    class CodeFusionDeployment:
        def __init__(self):
            from ..api import CodeFusion
            self.cf = CodeFusion.from_pretrained(model, backend=backend, device=device, dtype=dtype)
            self.cf.length_quantile = length_quantile

        @serve.batch(max_batch_size=max_batch, batch_wait_timeout_s=max_wait_ms / 1e3)
        async def generate_batch(self, bodies: list) -> list[tuple[int, dict]]:
            """→ (HTTP status, body) per request; one bad body or failing request never fails the others."""
            from pydantic import ValidationError

            from ..api import batch_key
            from .requests import GenerateRequest, Limits, _validate, validation_message
            answers: list[tuple[int, dict] | None] = [None] * len(bodies)
            groups: dict = {}
            for i, body in enumerate(bodies):
                try:
                    prompts, config = _validate(GenerateRequest.model_validate(body), self.cf, Limits())
                except ValidationError as e:
                    answers[i] = 422, {"error": validation_message(e.errors())}
                    continue
                except CodeFusionError as e:
                    answers[i] = 422, {"error": str(e)}
                    continue
                groups.setdefault(batch_key(config), []).append((i, prompts, config))
            for members in groups.values():
                for (i, _, _), answer in zip(members, self._run([(p, c) for _, p, c in members])):
                    answers[i] = answer
            return answers

        def _run(self, requests: list) -> list[tuple[int, dict]]:
            """One generate_many; if it fails, each request alone, so the failure stays with its request."""
            try:
                return [(200, out.to_json()) for out in self.cf.generate_many(requests)]
            except Exception as e:  # noqa: BLE001
                if len(requests) > 1:
                    return [answer for r in requests for answer in self._run([r])]
                status = 422 if isinstance(e, CodeFusionError) else 500
                return [(status, {"error": str(e).splitlines()[0] if str(e) else type(e).__name__})]

        async def __call__(self, request):
            import json

            from starlette.responses import JSONResponse

            from .requests import Limits, _error, refusal, too_large
            limit = Limits().max_body_bytes
            refused = refusal(request.headers, api_key, limit)  # before the body is read, as the HTTP server does
            if refused is not None:
                return refused
            raw = await request.body()
            if len(raw) > limit:
                return too_large(limit)
            try:
                body = json.loads(raw)
            except ValueError:
                return _error(422, "the body is not valid JSON")
            status, answer = await self.generate_batch(body)
            return JSONResponse(answer, status_code=status)

    return CodeFusionDeployment.bind()


def serve_ray(model, backend, device, dtype, replicas, max_batch, max_wait_ms, host, port,
              length_quantile: float = LENGTH_QUANTILE, api_key: str | None = None) -> int:
    ray, serve = _ray()
    ray.init(include_dashboard=False)
    serve.start(http_options={"host": host, "port": port})
    serve.run(build_deployment(model, backend, device, dtype, replicas, max_batch, max_wait_ms, length_quantile,
                               api_key), route_prefix="/v1/generate")
    print(f"Ray Serve: POST http://{host}:{port}/v1/generate ({replicas} replicas); Ctrl-C stops", flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        serve.shutdown()
    return 0
