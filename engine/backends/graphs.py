"""CUDA-graph capture of the sampling loop (DESIGN §3): one small class owns it.

A chunk of c denoising steps [start, start + c) is captured once per key

    (row bucket, target length n, kept steps K, c, solver, clamp, the state's signature)

where the signature holds every tensor's shape and dtype and every value that is not a tensor (the step
table's solver and clamp): the step branches on those in Python, so a graph captured for one solver or
clamp must never replay for another. The chunk is replayed with static buffers. The step counter is a
device tensor inside the graph (the loop never syncs with the host, tests/test_loop.py), so one graph
serves every start: only the first index is copied in before a replay. The whole loop is one chunk
(c = K); early exit and trace run chunks of their own length and check on the host between replays (one
sync per chunk).

Rows are padded up to a power of two (``ROW_BUCKETS``) with copies of row 0, so batch sizes 5..8
share one graph; the padded rows are computed and dropped. The noise of a row depends only on its
(seed, sample) key, so padding never changes a real row's result.

The chunks are kept least recently used first and at most ``max_chunks`` (32) of them: a server whose
requests vary steps, trace steps and lengths would otherwise capture without end (each chunk holds its
static buffers and its graph's memory pool; a 64-row chunk of the default model, ~40 MiB of buffers).
``freeze()`` turns capture off: a server warms the shapes it serves by running them and then
gets a clear error for any other shape instead of a capture stall (hundreds of ms) mid-traffic.

Threads: a chunk's static buffers are shared, so two threads replaying one chunk at once would read each
other's inputs and return each other's results. A lock covers capture, copy-in, replay and copy-out, and a
chunk's next copy-in waits (on the device, no host sync) for its last copy-out, also when the threads run on
different CUDA streams. Capture runs in CUDA's thread-local mode, so another thread's eager work (an encode,
a decode) neither fails nor invalidates it.
"""
from __future__ import annotations

import dataclasses
import threading
from collections import OrderedDict
from typing import Callable

import torch

from ..errors import CodeFusionError

ROW_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)


def row_bucket(rows: int) -> int:
    for b in ROW_BUCKETS:
        if rows <= b:
            return b
    return rows


def _map(obj, fn: Callable[[torch.Tensor], torch.Tensor]):
    """fn applied to every tensor of a (nested) frozen dataclass / tuple; other leaves kept."""
    if isinstance(obj, torch.Tensor):
        return fn(obj)
    if isinstance(obj, tuple):
        return tuple(_map(o, fn) for o in obj)
    if dataclasses.is_dataclass(obj):
        return dataclasses.replace(obj, **{f.name: _map(getattr(obj, f.name), fn)
                                           for f in dataclasses.fields(obj) if f.init})
    return obj


def _signature(obj):
    """What a captured graph fixes besides tensor contents: shapes, dtypes and the non-tensor values."""
    if isinstance(obj, torch.Tensor):
        return tuple(obj.shape), str(obj.dtype)
    if isinstance(obj, tuple):
        return tuple(_signature(o) for o in obj)
    if dataclasses.is_dataclass(obj):
        return (type(obj).__name__,) + tuple((f.name, _signature(getattr(obj, f.name)))
                                             for f in dataclasses.fields(obj) if f.init)
    return obj


def _tensors(obj) -> list[torch.Tensor]:
    out: list[torch.Tensor] = []
    _map(obj, lambda t: out.append(t) or t)
    return out


class _Chunk:
    """One captured chunk: static input state, static step counter, the graph and its output state."""

    def __init__(self, state, step_fn, steps: int, capture):
        self.inputs = _map(state, torch.clone)  # static addresses the graph reads
        self.start = torch.zeros((), dtype=torch.int64, device=state.x_t.device)

        def body():
            s, i = self.inputs, self.start.clone()
            for _ in range(steps):
                s = step_fn(s, i)
                i = i + 1
            return s.x_t, s.x0_hat

        self.replay, (self.x_t, self.x0_hat) = capture(body)
        self.done = torch.cuda.Event() if self.start.is_cuda else None  # the last copy-out, on its stream

    def __call__(self, state, start: int):
        """Under StepGraphs' lock: the next request's copy-in must not overtake the last one's copy-out."""
        if self.done is not None:
            torch.cuda.current_stream().wait_event(self.done)
        for dst, src in zip(_tensors(self.inputs), _tensors(state)):
            dst.copy_(src)
        self.start.fill_(start)
        self.replay()
        out = self.x_t.clone(), self.x0_hat.clone()  # the next replay overwrites the graph's outputs
        if self.done is not None:
            self.done.record()
        return out


def cuda_capture(body):
    """→ (replay, outputs): warm up on a side stream, then capture ``body`` into a CUDA graph."""
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        body()  # allocator and kernel selection settle outside the capture
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph, capture_error_mode="thread_local"):  # other threads may keep working
        out = body()
    return graph.replay, out


class StepGraphs:
    """Captured chunks of a backend's ``step``, keyed by (row bucket, n, K, chunk length, solver, clamp,
    signature)."""

    def __init__(self, step_fn, capture=cuda_capture, max_chunks: int = 32):
        self.step_fn, self.capture, self.max_chunks = step_fn, capture, max_chunks
        self.chunks: OrderedDict[tuple, _Chunk] = OrderedDict()  # least recently replayed first
        self.frozen = False
        self.lock = threading.Lock()  # a chunk's static buffers serve one thread at a time

    def key(self, padded, steps: int) -> tuple:
        """The key of a state already padded to its row bucket (solver and clamp are in the signature too;
        named first so that an error can print them)."""
        rows, n = padded.x_t.shape[:2]
        table = padded.table
        return rows, n, len(table), steps, table.solver, table.clamp, _signature(padded)

    def freeze(self) -> None:
        self.frozen = True

    def run(self, state, start: int, stop: int):
        """Steps [start, stop) by replaying the chunk of length stop − start (captured on first use)."""
        if stop <= start:
            return state
        with torch.inference_mode(), self.lock:  # static buffers are inference tensors, updated in place
            return self._run(state, start, stop)

    def _run(self, state, start: int, stop: int):
        rows = state.x_t.shape[0]
        padded = _pad_rows(state, row_bucket(rows))
        key = self.key(padded, stop - start)
        chunk = self.chunks.get(key)
        if chunk is None:
            if self.frozen:
                shapes = ", ".join(_describe(k) for k in sorted(self.chunks, key=lambda k: k[:4])) or "none"
                raise CodeFusionError(f"no CUDA graph for {_describe(key)} (captured: {shapes}); run that shape "
                                      "before freeze()")
            while len(self.chunks) >= self.max_chunks:  # its graph and static buffers go with it
                _, evicted = self.chunks.popitem(last=False)
                if evicted.done is not None:  # its memory may go to another stream next: its last work ends first
                    evicted.done.synchronize()
            chunk = self.chunks[key] = _Chunk(padded, self.step_fn, stop - start, self.capture)
        self.chunks.move_to_end(key)
        x_t, x0_hat = chunk(padded, start)
        return dataclasses.replace(state, x_t=x_t[:rows], x0_hat=x0_hat[:rows])


def _describe(key: tuple) -> str:
    rows, n, k, c, solver, clamp = key[:6]
    return f"rows≤{rows}, length {n}, {k} steps, chunk {c}, {solver}, clamp {clamp}"


def _pad_rows(state, bucket: int):
    """The state with every per-row tensor padded to ``bucket`` rows (copies of row 0); the step
    table (per step, not per row) is left alone."""
    rows = state.x_t.shape[0]
    if rows == bucket:
        return state

    def pad(t: torch.Tensor) -> torch.Tensor:
        if t.dim() == 0 or t.shape[0] != rows:
            return t
        return torch.cat([t, t[:1].expand(bucket - rows, *t.shape[1:])])

    table = state.table
    return dataclasses.replace(_map(dataclasses.replace(state, table=None), pad), table=table)
