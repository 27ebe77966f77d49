"""CUDA-graph bookkeeping of the torch backend (engine/backends/graphs.py), on CPU.

A real capture needs a GPU (bench/gpu_check.py runs it there). Here the capture is replaced by an
eager stand-in with the same contract — the body runs once at capture, a replay re-runs it and
overwrites the same output tensors — so what is tested is everything around the graph: static
buffers refreshed before each replay, the device-side step counter, row padding, keys, freeze.
"""
import contextlib
import dataclasses
import threading
import time

import pytest
import torch

from codefusion.backends import get_backend
from codefusion.backends.graphs import StepGraphs, row_bucket
from codefusion.diffusion.loop import initial_state, run
from codefusion.diffusion.schedule import NoiseSchedule
from codefusion.diffusion.solvers import step_table
from codefusion.errors import CodeFusionError


class EagerCapture:
    """Stands in for cuda_capture: counts captures; replay writes into the captured outputs."""

    def __init__(self):
        self.captures = 0

    def __call__(self, body):
        self.captures += 1
        out = body()

        def replay():
            for o, new in zip(out, body()):
                o.copy_(new)
        return replay, out


def _setup(tiny_model, tokenizer, rows: int, seed: int = 0, solver: str = "dpmpp_2m", steps: int = 6):
    backend = get_backend("torch")(tiny_model, torch.device("cpu"), torch.float32)
    prompts = ["list files", "show disk usage", "count lines", "print dir", "sum x"][:rows]
    while len(prompts) < rows:
        prompts.append(prompts[len(prompts) % 5])
    memory = backend.encode(tokenizer.encode_source(prompts, ["bash"] * rows, tiny_model.cfg.max_source_len))
    table = step_table(NoiseSchedule.sqrt().respace(steps), solver)
    seeds = torch.full((rows,), seed, dtype=torch.int64)
    return backend, initial_state(backend, memory, table, seeds, torch.arange(rows), 16)


@pytest.mark.parametrize("rows", [1, 3, 5])
def test_replayed_chunks_equal_the_python_loop(tiny_model, tokenizer, rows):
    backend, state = _setup(tiny_model, tokenizer, rows)
    expected = run(backend, state)
    capture = EagerCapture()
    backend.graphs = StepGraphs(backend.step, capture)
    whole = run(backend, state)
    torch.testing.assert_close(whole.x_t, expected.x_t, atol=1e-6, rtol=0)
    chunked = state
    for start, stop in ((0, 2), (2, 4), (4, 6)):  # early exit's pattern: one chunk length, many starts
        chunked = run(backend, chunked, start, stop)
    torch.testing.assert_close(chunked.x_t, expected.x_t, atol=1e-6, rtol=0)
    torch.testing.assert_close(chunked.x0_hat, expected.x0_hat, atol=1e-6, rtol=0)
    assert capture.captures == 2  # (rows, n, K, 6) and (rows, n, K, 2): the 2-step chunk is reused
    assert whole.x_t.shape[0] == rows


def test_a_replay_reads_the_new_request_not_the_captured_one(tiny_model, tokenizer):
    backend, first = _setup(tiny_model, tokenizer, 2, seed=0)
    _, second = _setup(tiny_model, tokenizer, 2, seed=7, solver="dpmpp_2m")
    expected = run(backend, second)
    capture = EagerCapture()
    backend.graphs = StepGraphs(backend.step, capture)
    run(backend, first)
    replayed = run(backend, second)
    assert capture.captures == 1
    torch.testing.assert_close(replayed.x_t, expected.x_t, atol=1e-6, rtol=0)


@pytest.mark.parametrize("solver,clamp", [("ddpm", "none"), ("dpmpp_2m", "nearest"), ("ddpm", "nearest")])
def test_another_solver_or_clamp_is_captured_anew(tiny_model, tokenizer, solver, clamp):
    """The step branches on the table's solver and clamp in Python, so a graph captured for ddpm/none must not
    replay a request with another solver or clamp at the same shape: it gets a capture of its own."""
    backend, first = _setup(tiny_model, tokenizer, 2, solver="ddpm")
    _, second = _setup(tiny_model, tokenizer, 2, seed=3, solver=solver)
    second = dataclasses.replace(second, table=dataclasses.replace(second.table, clamp=clamp))
    expected = run(backend, second)
    capture = EagerCapture()
    backend.graphs = StepGraphs(backend.step, capture)
    run(backend, first)
    replayed = run(backend, second)
    assert capture.captures == (1 if (solver, clamp) == ("ddpm", "none") else 2)
    torch.testing.assert_close(replayed.x_t, expected.x_t, atol=1e-6, rtol=0)


class SlowCapture(EagerCapture):
    """A replay that takes a while before it reads its static inputs, as a GPU replay queued behind other work."""

    def __call__(self, body):
        replay, out = super().__call__(body)

        def slow():
            time.sleep(0.05)  # releases the GIL: another thread may copy its request in meanwhile
            replay()
        return slow, out


def test_threads_sharing_a_chunk_get_their_own_results(tiny_model, tokenizer):
    """Two threads replaying one captured chunk at once (an app calling generate from a thread pool): each gets
    its own request's result, not the other's, because the static buffers serve one thread at a time."""
    backend, first = _setup(tiny_model, tokenizer, 2, seed=0)
    _, second = _setup(tiny_model, tokenizer, 2, seed=7)
    expected = [run(backend, first).x_t, run(backend, second).x_t]
    backend.graphs = StepGraphs(backend.step, SlowCapture())
    run(backend, first)  # captured before the threads start: they share it
    states = (first, second)
    _each_thread_gets_its_own(lambda k: run(backend, states[k]).x_t, expected, reps=3, atol=1e-6)


def _each_thread_gets_its_own(replay, expected: list, reps: int, atol: float, context=contextlib.nullcontext):
    """Thread k (one per entry of ``expected``) calls ``replay(k)`` ``reps`` times inside ``context()``, all at
    once; every result must equal ``expected[k]``."""
    results = [[] for _ in expected]

    def work(k):
        with context():
            for _ in range(reps):
                results[k].append(replay(k))

    threads = [threading.Thread(target=work, args=(k,)) for k in range(len(expected))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if torch.cuda.is_available():
        torch.cuda.synchronize()  # the threads' streams have finished before their results are read
    for k, want in enumerate(expected):
        assert len(results[k]) == reps
        for got in results[k]:
            torch.testing.assert_close(got, want, atol=atol, rtol=0)


def test_padded_rows_do_not_change_real_rows(tiny_model, tokenizer):
    backend, three = _setup(tiny_model, tokenizer, 3)
    eager = run(backend, three)
    backend.graphs = StepGraphs(backend.step, EagerCapture())
    padded = run(backend, three)  # 3 rows run as 4 inside the chunk; row 3 (a copy of row 0) dropped
    assert padded.x_t.shape[0] == 3
    torch.testing.assert_close(padded.x_t, eager.x_t, atol=1e-6, rtol=0)


def test_frozen_graphs_refuse_an_uncaptured_shape(tiny_model, tokenizer):
    backend, state = _setup(tiny_model, tokenizer, 2)
    backend.graphs = StepGraphs(backend.step, EagerCapture())
    run(backend, state)
    backend.graphs.freeze()
    run(backend, state)  # a captured shape still replays
    _, longer = _setup(tiny_model, tokenizer, 2, steps=8)
    with pytest.raises(CodeFusionError, match=r"no CUDA graph for rows≤2, length 16, 8 steps, chunk 8, dpmpp_2m, "
                                              r"clamp none \(captured: rows≤2"):
        run(backend, longer)


def test_the_least_recently_used_chunk_is_dropped_past_max_chunks(tiny_model, tokenizer):
    """A server whose requests vary the step count would capture without end; past max_chunks the chunk replayed
    longest ago goes (and is captured again if it comes back), and replays stay correct."""
    backend, state = _setup(tiny_model, tokenizer, 2, steps=8)
    expected = {c: run(backend, state, 0, c).x_t for c in (2, 3, 4)}
    capture = EagerCapture()
    backend.graphs = StepGraphs(backend.step, capture, max_chunks=2)
    for c in (2, 3, 2, 4):  # 2 is used again before 4 arrives: 3 is the least recently used
        torch.testing.assert_close(run(backend, state, 0, c).x_t, expected[c], atol=1e-6, rtol=0)
    assert capture.captures == 3 and [k[3] for k in backend.graphs.chunks] == [2, 4]
    run(backend, state, 0, 3)  # captured again; 2 goes
    assert capture.captures == 4 and [k[3] for k in backend.graphs.chunks] == [4, 3]


def test_row_buckets():
    assert [row_bucket(r) for r in (1, 2, 3, 5, 8, 9, 64, 65)] == [1, 2, 4, 8, 8, 16, 64, 128]


def test_cpu_backend_runs_without_graphs(tiny_model):
    assert get_backend("torch")(tiny_model, torch.device("cpu"), torch.float32).graphs is None


@pytest.mark.cuda
def test_cuda_graph_replay_equals_eager(tiny_model, tokenizer):
    cuda = torch.device("cuda")
    backend = get_backend("torch")(tiny_model, cuda, torch.float32)
    memory = backend.encode(tokenizer.encode_source(["list files", "count lines", "pwd"], ["bash"] * 3, 32))
    table = step_table(NoiseSchedule.sqrt(1200, cuda).respace(10), "ddpm")
    seeds = torch.zeros(3, dtype=torch.int64, device=cuda)
    state = initial_state(backend, memory, table, seeds, torch.arange(3, device=cuda), 16)
    graphed = run(backend, state)
    backend.graphs = None
    eager = run(backend, state)
    torch.testing.assert_close(graphed.x_t, eager.x_t, atol=1e-5, rtol=1e-5)


@pytest.mark.cuda
def test_cuda_threads_on_their_own_streams_get_their_own_results(tiny_model, tokenizer):
    """Two threads, each on its own CUDA stream, replay one captured chunk many times: a copy-in must wait for the
    other stream's copy-out (an event), not only for the lock, or one thread reads the other's outputs."""
    cuda = torch.device("cuda")
    backend = get_backend("torch")(tiny_model, cuda, torch.float32)
    memory = backend.encode(tokenizer.encode_source(["list files", "count lines"], ["bash"] * 2, 32))
    table = step_table(NoiseSchedule.sqrt(1200, cuda).respace(10), "ddpm")
    states = [initial_state(backend, memory, table, torch.full((2,), s, dtype=torch.int64, device=cuda),
                            torch.arange(2, device=cuda), 16) for s in (0, 7)]
    expected = [run(backend, s).x_t.clone() for s in states]  # captures the chunk; both threads replay it
    torch.cuda.synchronize()  # the states were made on the default stream
    _each_thread_gets_its_own(lambda k: run(backend, states[k]).x_t, expected, reps=20, atol=0,
                              context=lambda: torch.cuda.stream(torch.cuda.Stream()))
