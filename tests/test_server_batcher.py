"""The DynamicBatcher on its own, without HTTP: which jobs share a batch, when the window closes, a full
queue, a cancelled job, a failed batch rerun job by job, and the worker loop on the caller's thread."""
import threading
import time

import pytest

from codefusion import GenerationConfig
from codefusion.server.batcher import DynamicBatcher, QueueFull

from server_helpers import STEPS, Slow, cf  # noqa: F401 (cf: a pytest fixture, found by name)


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
