"""The Ray Serve deployment (engine/server/ray_app.py): its batch function and request checks without Ray (Ray's
decorators stood in for), and, opt-in, a local Ray instance."""
import asyncio
import json
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from codefusion import CodeFusion, GenerationConfig
from codefusion.bench.serve import _free_port

from conftest import Failing

STEPS = 4


@pytest.fixture(scope="module")
def cf(overfit_dir):
    return CodeFusion.from_pretrained(overfit_dir, backend="torch")


@pytest.mark.slow
def test_ray_serve_batches_and_answers_like_one_process(overfit_dir, cf):
    """A local Ray instance on loopback (pip install "ray[serve]"; opt-in: --runslow)."""
    ray = pytest.importorskip("ray")
    serve = pytest.importorskip("ray.serve")
    from codefusion.server.ray_app import build_deployment
    port = _free_port()
    ray.init(num_cpus=4, include_dashboard=False, log_to_driver=False)  # controller + proxy + replica
    try:
        serve.start(http_options={"host": "127.0.0.1", "port": port})
        serve.run(build_deployment(str(overfit_dir), "torch", "cpu", "float32", 1, 8, 200),
                  route_prefix="/v1/generate")
        bodies = [{"prompts": ["list all files"], "steps": STEPS, "seed": i} for i in range(6)]
        bodies.append({"prompts": ["x"], "steps": 0})
        with ThreadPoolExecutor(7) as pool:
            answers = list(pool.map(lambda b: httpx.post(f"http://127.0.0.1:{port}/v1/generate", json=b,
                                                         timeout=120).json(), bodies))
    finally:
        serve.shutdown()
        ray.shutdown()
    for body, got in zip(bodies[:6], answers[:6]):
        alone = cf.generate(body["prompts"], GenerationConfig(steps=STEPS, seed=body["seed"]))
        assert got["texts"] == alone.texts and got["seed"] == body["seed"]
    assert "steps must be an integer" in answers[6]["error"]


class _FakeServe:
    """Ray Serve's decorators, as plain Python: deployment(...)(cls).bind() → cls; batch(...)(fn) → fn."""

    @staticmethod
    def deployment(**_):
        def wrap(cls):
            cls.bind = classmethod(lambda c: c)
            return cls
        return wrap

    @staticmethod
    def batch(**_):
        return lambda fn: fn


def test_ray_batch_answers_each_body_on_its_own(overfit_dir, cf, monkeypatch):
    """The Ray deployment's batch function without Ray: a malformed body, a body the engine fails on and good
    bodies in one @serve.batch call; each gets its own status, and the good ones their single-process answers."""
    from codefusion.server import ray_app
    monkeypatch.setattr(ray_app, "_ray", lambda: (None, _FakeServe))
    deployment = ray_app.build_deployment(str(overfit_dir), "torch", "cpu", "float32", 1, 8, 10)()
    deployment.cf = Failing(deployment.cf)
    good = [{"prompts": ["list all files"], "steps": STEPS, "seed": i} for i in range(2)]
    bodies = [good[0], [1, 2], {"prompts": ["boom"], "steps": STEPS}, {"prompts": ["x"], "stepz": 3}, good[1]]
    answers = asyncio.run(deployment.generate_batch(bodies))
    assert [status for status, _ in answers] == [200, 422, 500, 422, 200]
    assert answers[1][1]["error"].startswith("the body must be a JSON object")
    assert answers[2][1] == {"error": "kaboom"}
    assert answers[3][1]["error"] == "stepz: unknown field (did you mean steps?)"
    for body, (_, got) in zip(good, (answers[0], answers[4])):
        assert got["texts"] == cf.generate(body["prompts"], GenerationConfig(steps=STEPS, seed=body["seed"])).texts


def test_ray_deployment_checks_the_api_key_and_the_body_limit(overfit_dir, monkeypatch):
    """`serve --ray --api-key K` used to drop the key: the deployment answered anyone."""
    from codefusion.server import ray_app

    class Request:
        def __init__(self, headers, body):
            self.headers, self._body = headers, body

        async def body(self):
            return self._body
    monkeypatch.setattr(ray_app, "_ray", lambda: (None, _FakeServe))
    deployment = ray_app.build_deployment(str(overfit_dir), "torch", "cpu", "float32", 1, 8, 10, api_key="k")()
    denied = asyncio.run(deployment(Request({}, b'{"prompts": ["x"]}')))
    big = asyncio.run(deployment(Request({"x-api-key": "k"}, b" " * (2 << 20))))
    broken = asyncio.run(deployment(Request({"x-api-key": "k"}, b'{"prompts": [')))
    assert (denied.status_code, big.status_code, broken.status_code) == (401, 413, 422)
    assert json.loads(denied.body) == {"error": "missing or wrong X-API-Key header"}
