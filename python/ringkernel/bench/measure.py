"""Measurement helpers shared by ``ringkernel bench`` and the scripts in bench/: the machine's description,
percentiles, round trips and rates with the cyclic GC off, and the plain-Python peers every kernel row is
compared with (a threaded actor, a process behind a pipe or multiprocessing queues)."""


from __future__ import annotations

import gc
import multiprocessing as mp
import os
import platform
import queue
import socket
import statistics
import threading
import time
from typing import Any, Callable

import numpy as np

RECORD = np.dtype([("seq", "<u8"), ("values", "<f8", (7,))])  # 64 bytes


# ---- shared measurement helpers ----------------------------------------------------------------------------


def machine_info() -> dict:
    cpu = platform.processor() or "unknown"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return {"hostname": socket.gethostname(), "cpu": cpu, "cores": os.cpu_count(),
            "kernel": platform.release(), "python": platform.python_version(), "numpy": np.__version__}


def percentiles(samples: Any) -> dict:
    a = np.asarray(samples, dtype=np.float64)
    return {"p50_ns": float(np.percentile(a, 50)), "p99_ns": float(np.percentile(a, 99)),
            "p999_ns": float(np.percentile(a, 99.9)), "mean_ns": float(a.mean()), "n": int(a.size)}


def round_trip_samples(step: Callable[[], Any], n: int) -> np.ndarray:
    """Nanoseconds of each of ``n`` calls of ``step`` (after a warm-up), the cyclic GC off."""
    for _ in range(min(1000, n)):
        step()
    samples = np.zeros(n, dtype=np.int64)
    clock = time.perf_counter_ns
    gc.disable()
    try:
        for i in range(n):
            t0 = clock()
            step()
            samples[i] = clock() - t0
    finally:
        gc.enable()
    return samples


def round_trips(step: Callable[[], Any], n: int) -> dict:
    return percentiles(round_trip_samples(step, n))


def median_rate(run_once: Callable[[], float], repeats: int) -> dict:
    """The median of ``repeats`` runs of ``run_once`` (which returns messages/s), after one warm-up."""
    run_once()
    rates = []
    gc.disable()
    try:
        for _ in range(repeats):
            rates.append(run_once())
    finally:
        gc.enable()
    return {"msgs_per_s": statistics.median(rates), "best_msgs_per_s": max(rates), "runs": len(rates)}


class ThreadActor:
    """The plain-Python actor: a thread answering every request from one queue.Queue into another."""

    def __init__(self, handler: Callable[[Any], Any] = lambda m: m):
        self.inq: queue.Queue = queue.Queue()
        self.outq: queue.Queue = queue.Queue()
        self.thread = threading.Thread(target=self._run, args=(handler,), daemon=True)
        self.thread.start()

    def _run(self, handler: Callable[[Any], Any]) -> None:
        get, put = self.inq.get, self.outq.put
        while True:
            m = get()
            if m is None:
                return
            put(handler(m))

    def close(self) -> None:
        self.inq.put(None)
        self.thread.join()


def _pipe_actor(conn: Any) -> None:
    while True:
        m = conn.recv_bytes()
        if not m:
            return
        conn.send_bytes(m)


def _mpq_actor(inq: Any, outq: Any) -> None:
    while True:
        m = inq.get()
        if m is None:
            return
        outq.put(m)


class PipeActor:
    """A process echoing bytes over a multiprocessing.Pipe (the fastest multiprocessing channel)."""

    def __init__(self) -> None:
        ctx = mp.get_context("fork")
        self.conn, child = ctx.Pipe()
        self.proc = ctx.Process(target=_pipe_actor, args=(child,), daemon=True)
        self.proc.start()

    def close(self) -> None:
        self.conn.send_bytes(b"")
        self.proc.join(10)


class MpQueueActor:
    """A process echoing objects over two multiprocessing.Queue."""

    def __init__(self) -> None:
        ctx = mp.get_context("fork")
        self.inq, self.outq = ctx.Queue(), ctx.Queue()
        self.proc = ctx.Process(target=_mpq_actor, args=(self.inq, self.outq), daemon=True)
        self.proc.start()

    def close(self) -> None:
        self.inq.put(None)
        self.proc.join(10)


def pipelined_batches(send_batch: Callable[[np.ndarray], Any], receive_batch: Callable[[], int], total: int,
                      batch: np.ndarray) -> float:
    """Messages/s with a producer thread sending ``total // len(batch)`` batches while this thread receives."""
    batches = max(1, total // len(batch))

    def producer() -> None:
        for _ in range(batches):
            send_batch(batch)

    t = threading.Thread(target=producer)
    got = 0
    t0 = time.perf_counter()
    t.start()
    while got < batches * len(batch):
        got += receive_batch()
    elapsed = time.perf_counter() - t0
    t.join()
    return got / elapsed


def records(n: int) -> np.ndarray:
    a = np.zeros(n, RECORD)
    a["seq"] = np.arange(n)
    return a
