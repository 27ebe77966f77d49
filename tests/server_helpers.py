"""What the HTTP server tests share: the engine fixture, a slowed engine, uvicorn on a free loopback port, a
JSON client and a server-sent-events reader."""
import json
import threading
import time

import httpx
import pytest
import uvicorn

from codefusion import CodeFusion
from codefusion.bench.serve import _free_port

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


def _events(text: str) -> list[tuple[str, dict]]:
    out = []
    for block in text.strip().split("\n\n"):
        lines = dict(line.split(": ", 1) for line in block.splitlines())
        out.append((lines["event"], json.loads(lines["data"])))
    return out
