"""``codefusion bench serve``: a bounded load generator against the HTTP server on loopback.

For each concurrency c, c client threads send ``requests`` requests in all (one prompt each, a
unique seed each, so every answer can be matched to its request) and the run reports throughput,
p50/p99 latency, errors, lost and duplicated answers, and how many requests each batch merged.
Concurrency 1 is the one-request-at-a-time baseline the others are compared with.

By default the server runs in this process (uvicorn in a thread), so its worker shares the
interpreter with the client threads; ``url`` drives a server that runs on its own instead
(``codefusion serve`` started apart), which is how a deployment runs.
"""
from __future__ import annotations

import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from tqdm import tqdm

from codefusion.errors import CodeFusionError


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _batch_stats(metrics_text: str) -> tuple[float, float]:
    """(sum, count) of the codefusion_batch_requests histogram."""
    vals = {}
    for line in metrics_text.splitlines():
        for name in ("codefusion_batch_requests_sum", "codefusion_batch_requests_count"):
            if line.startswith(name + " "):
                vals[name] = float(line.split()[1])
    return vals.get("codefusion_batch_requests_sum", 0.0), vals.get("codefusion_batch_requests_count", 0.0)


def _start_in_process(cf, max_batch: int, max_wait_ms: float, quiet_ms: float = 10.0):
    import uvicorn

    from codefusion.server.app import create_app

    port = _free_port()
    app = create_app(cf, max_batch, max_wait_ms, max_queue=4096, quiet_ms=quiet_ms)
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.01)

    def stop():
        server.should_exit = True
        thread.join(60)
    return f"http://127.0.0.1:{port}", stop


def serve_load(cf, workload: list[tuple[str, str]], steps: int, concurrencies: list[int], requests: int,
               max_batch: int, max_wait_ms: float, quiet_ms: float, progress: bool = True,
               url: str | None = None) -> list[dict]:
    """Request s asks for ``workload[s % len(workload)]`` (prompt, language). ``cf``: the engine to serve in
    this process; ignored when ``url`` names a running server."""
    import httpx

    url, stop = (url.rstrip("/"), lambda: None) if url else _start_in_process(cf, max_batch, max_wait_ms, quiet_ms)
    rows, seed = [], 0
    try:
        def body(s: int) -> dict:
            prompt, lang = workload[s % len(workload)]
            return {"prompts": [prompt], "lang": lang, "steps": steps, "seed": s}
        try:
            warm = httpx.post(url + "/v1/generate", json=body(0), timeout=600)
        except httpx.HTTPError as e:
            raise CodeFusionError(f"cannot reach {url} ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}):"
                                  " start `codefusion serve` there or fix --url") from None
        if warm.status_code != 200:
            raise CodeFusionError(f"{url} answered the warm-up request with HTTP {warm.status_code}: "
                                  f"{warm.text[:200]}")
        for c in tqdm(concurrencies, desc="serve", disable=not progress):
            seeds = list(range(seed, seed + requests))
            seed += requests
            before = _batch_stats(httpx.get(url + "/metrics").text)

            def one(s: int, http: httpx.Client):
                t0 = time.perf_counter()
                r = http.post(url + "/v1/generate", timeout=600, json=body(s))
                return s, r.status_code, (r.json().get("seed") if r.status_code == 200 else None), \
                    (time.perf_counter() - t0) * 1e3

            def worker(chunk: list[int]):
                with httpx.Client() as http:
                    return [one(s, http) for s in chunk]

            t0 = time.perf_counter()
            with ThreadPoolExecutor(c) as pool:
                done = [x for part in pool.map(worker, [seeds[i::c] for i in range(c)]) for x in part]
            wall = time.perf_counter() - t0
            after = _batch_stats(httpx.get(url + "/metrics").text)
            ok = [d for d in done if d[1] == 200]
            answered = [d[2] for d in ok]
            lat = np.array([d[3] for d in ok]) if ok else np.array([float("nan")])
            batches = after[1] - before[1]
            rows.append({"concurrency": c, "requests": requests, "steps": steps, "ok": len(ok),
                         "errors": len(done) - len(ok), "lost": len(set(seeds) - set(answered)),
                         "duplicated": len(answered) - len(set(answered)),
                         "mismatched": sum(d[0] != d[2] for d in ok),
                         "throughput_rps": round(len(ok) / wall, 3), "p50_ms": round(float(np.median(lat)), 1),
                         "p99_ms": round(float(np.percentile(lat, 99)), 1),
                         "requests_per_batch": round((after[0] - before[0]) / batches, 2) if batches else None})
    finally:
        stop()
    base = rows[0]["throughput_rps"] if rows else None
    for r in rows:
        r["speedup_vs_first"] = round(r["throughput_rps"] / base, 2) if base else None
    return rows


def plot_serve(rows: list[dict], path):
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    fig, (a, b) = plt.subplots(1, 2, figsize=(9, 3.4))
    c = [r["concurrency"] for r in rows]
    a.plot(c, [r["throughput_rps"] for r in rows], "o-")
    a.set_xscale("log", base=2)
    a.set_xlabel("concurrent clients")
    a.set_ylabel("requests / s")
    b.plot(c, [r["p50_ms"] for r in rows], "o-", label="p50")
    b.plot(c, [r["p99_ms"] for r in rows], "s--", label="p99")
    b.set_xscale("log", base=2)
    b.set_xlabel("concurrent clients")
    b.set_ylabel("latency (ms)")
    b.legend()
    for ax in (a, b):
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
