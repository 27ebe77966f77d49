"""Dynamic batching: requests queue, merge into one denoising batch, and one worker owns the engine.

    submit(prompts, config) → Future          any thread (the HTTP handlers)
    worker: take the oldest job, then every queued job with the same batch_key (the loop's
            GenerationConfig fields: steps, solver, eta, clamp, early exit, trace steps) until
            max_batch rows (prompts × samples), or max_wait_ms after the later of (the oldest job's
            arrival, the worker becoming free), or quiet_ms without a new arrival
            → CodeFusion.generate_many → resolve each job's future

The window opens when the worker is free, not only when the oldest job arrived: under closed-loop
load the clients answered by one batch come back a few milliseconds after it ends, while the jobs
that queued during it are already past their own window; timing from arrival alone would run those
at once and keep two part-size cohorts alternating (measured: 8 requests per batch at concurrency 16).
The quiet rule closes the window as soon as arrivals stop: measured here at concurrency 16, the 16
answered clients come back 8–23 ms after a batch ends with gaps under 6 ms between them, so a 10 ms
quiet gap gathers the whole cohort, while a lone request waits 10 ms, not the whole window.

Only the worker thread touches the model (and, on GPU, its CUDA-graph buffers). By default the
batcher starts that thread itself; with ``own_thread=False`` the caller runs ``serve_forever()`` on a
thread of its choosing — ``codefusion serve`` gives it the main thread, the one that loaded the model:
on CPU, torch ops issued from a second thread start a second OpenMP team that contends with the first
(measured here: one 20-step query 276 ms in a worker thread against 135 ms in the main thread).

Jobs of another batch_key wait for a later batch, oldest first. Each row keeps its (seed, sample) noise
key, so a batched answer equals the single-request answer in fp32 (tests/test_server.py); in bf16 the matrix
products round by batch shape, and a prompt near a tie can differ (README, "Python API").
"""
from __future__ import annotations

import threading
import time
from collections import deque
from concurrent.futures import Future
from dataclasses import dataclass, field

from ..api import batch_key
from ..config import GenerationConfig
from ..errors import CodeFusionError


class QueueFull(CodeFusionError):
    """The queue holds max_queue jobs: the caller should retry later (HTTP 503 + Retry-After)."""


class ShuttingDown(CodeFusionError):
    """The batcher is draining for shutdown and takes no new jobs."""


@dataclass
class Job:
    prompts: list[str]
    config: GenerationConfig
    deadline: float  # time.monotonic() after which the answer is no longer wanted
    arrived: float = field(default_factory=time.monotonic)
    future: Future = field(default_factory=Future)
    on_trace: object = None  # callable(entry), called from the worker thread at each trace step (streaming)
    sent: set = field(default_factory=set)  # trace steps already handed to on_trace

    @property
    def rows(self) -> int:
        return len(self.prompts) * self.config.num_samples

    def publish(self, entry: dict) -> None:
        """Hand a trace entry to on_trace once per step: a job rerun alone after its batch failed reaches the
        steps the batch already streamed again (the same texts in fp32, its noise keys being its own; in bf16 the
        rerun's own rounding may differ, and its result, not the earlier trace, is what counts)."""
        if self.on_trace is not None and entry["step"] not in self.sent:
            self.sent.add(entry["step"])
            self.on_trace(entry)


class DynamicBatcher:
    def __init__(self, cf, max_batch: int = 64, max_wait_ms: float = 50.0, max_queue: int = 256,
                 timeout_s: float = 60.0, on_batch=None, own_thread: bool = True, quiet_ms: float | None = 10.0):
        self.cf, self.max_batch, self.max_wait = cf, max_batch, max_wait_ms / 1e3
        # quiet_ms None: no quiet rule, the window always lasts max_wait_ms
        self.quiet = self.max_wait if quiet_ms is None else min(quiet_ms, max_wait_ms) / 1e3
        self.last_arrival = 0.0  # time.monotonic() of the newest submit
        self.max_queue, self.timeout_s, self.on_batch = max_queue, timeout_s, on_batch
        self.queue: deque[Job] = deque()
        self.cond = threading.Condition()
        self.closing = False
        self.stopped = threading.Event()  # set when the loop has drained and returned
        self.worker = None
        if own_thread:
            self.worker = threading.Thread(target=self.serve_forever, name="codefusion-batcher", daemon=True)
            self.worker.start()

    def depth(self) -> int:
        return len(self.queue)

    def submit(self, prompts: list[str], config: GenerationConfig, timeout_s: float | None = None,
               on_trace=None) -> Future:
        """Queue a request → its Future. ``on_trace(entry)`` (optional) receives each trace step of it
        as the loop reaches it, from the worker thread."""
        job = Job(prompts, config, time.monotonic() + (timeout_s or self.timeout_s), on_trace=on_trace)
        with self.cond:
            if self.closing:
                raise ShuttingDown("the server is shutting down: retry on another replica")
            if len(self.queue) >= self.max_queue:
                raise QueueFull(f"the queue is full ({self.max_queue} requests waiting): retry shortly")
            self.queue.append(job)
            self.last_arrival = job.arrived
            self.cond.notify()
        return job.future

    def withdraw(self, future: Future) -> bool:
        """Cancel a job whose answer is no longer wanted (its client timed out or left): still queued, it leaves
        the queue at once, so it neither holds a slot of max_queue nor counts in depth(); → whether it was
        withdrawn (False once the worker has taken it: it runs to the end)."""
        with self.cond:
            job = next((j for j in self.queue if j.future is future), None)
            if job is not None:
                self.queue.remove(job)
        return future.cancel()  # also when the worker holds it but has not started it: it skips a cancelled one

    def close(self, timeout_s: float | None = None) -> None:
        """Stop taking jobs, finish every queued and running one, then stop the worker (wait for it unless
        the caller is the worker itself)."""
        with self.cond:
            self.closing = True
            self.cond.notify_all()
        if threading.current_thread() is not self.worker:
            self.stopped.wait(timeout_s)

    # ---- worker ---------------------------------------------------------------------------------
    def _take_batch(self) -> list[Job] | None:
        """Block for the oldest job, then gather compatible ones until full or its wait is over."""
        free_since = time.monotonic()
        with self.cond:
            while not self.queue:
                if self.closing:
                    return None
                self.cond.wait()
            first = self.queue.popleft()
            batch, rows, key = [first], first.rows, batch_key(first.config)
            until = max(first.arrived, free_since) + self.max_wait
            while rows < self.max_batch:
                for job in list(self.queue):
                    if batch_key(job.config) == key and rows + job.rows <= self.max_batch:
                        self.queue.remove(job)
                        batch.append(job)
                        rows += job.rows
                left = min(until, max(self.last_arrival, free_since) + self.quiet) - time.monotonic()
                if rows >= self.max_batch or left <= 0 or self.closing:
                    break
                self.cond.wait(left)
            return batch

    def serve_forever(self) -> None:
        """The worker loop: run batches until close() and an empty queue. Runs on the batcher's own thread,
        or on the caller's (``own_thread=False``)."""
        try:
            self._loop()
        finally:
            self.stopped.set()

    def _loop(self) -> None:
        if self.worker is None:
            self.worker = threading.current_thread()
        while (batch := self._take_batch()) is not None:
            now = time.monotonic()
            live = []
            for job in batch:
                if not job.future.set_running_or_notify_cancel():
                    continue  # its handler gave up on it (timeout) and cancelled it while it queued
                if now > job.deadline:
                    job.future.set_exception(TimeoutError("the request waited past its timeout in the queue"))
                else:
                    live.append(job)
            if live:
                try:
                    self._run(live)
                except Exception as e:  # noqa: BLE001 — the worker outlives any one batch (e.g. a failing on_batch)
                    for job in live:
                        if not job.future.done():
                            job.future.set_exception(e)

    def alive(self) -> bool:
        """Whether the worker loop still takes jobs (False once it has returned, e.g. after close())."""
        return not self.stopped.is_set()

    def _run(self, jobs: list[Job]) -> None:
        t0 = time.perf_counter()
        try:
            on_trace = (lambda r, entry: jobs[r].publish(entry)) if any(j.on_trace for j in jobs) else None
            outputs = self.cf.generate_many([(j.prompts, j.config) for j in jobs], on_trace=on_trace)
        except Exception as batch_error:  # noqa: BLE001 — isolate the job that failed, answer the others
            if len(jobs) == 1:
                jobs[0].future.set_exception(batch_error)
                return
            for job in jobs:
                self._run([job])
            return
        for job, out in zip(jobs, outputs):
            job.future.set_result(out)
        if self.on_batch:
            self.on_batch(sum(j.rows for j in jobs), len(jobs), outputs[0].timings.get("steps"),
                          time.perf_counter() - t0)
