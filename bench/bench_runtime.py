#!/usr/bin/env python3
"""Benchmark ring kernels (``rk.Runtime``) against the actors Python offers, in one run.

The workload is an echo actor: a request goes in, the handler answers with the same 64-byte
record, the client receives it. Every figure is measured in the same run as the peer it is
compared with, and reported as a ratio "how many times better ours is" (peer/ours for latency,
ours/peer for throughput; above 1 means ringkernel wins).

Questions
---------
Q1. Round trip from Python, one message at a time: ``k.send(rec); k.receive()`` on the built-in
    echo kernel (C handler on a CPU worker), and on a kernel with a Python handler, against a
    threading actor (a thread doing ``outq.put(inq.get())`` on ``queue.Queue``) and a
    multiprocessing actor (a process echoing over a ``multiprocessing.Pipe``; and over
    ``multiprocessing.Queue``). p50 / p99 / p99.9 of per-message round trips.
    Aim: p50 <= 5 us.
Q2. Throughput, one message per call: a producer thread sends N records one by one while the
    main thread receives them one by one (messages/s, both directions pipelined).
Q3. Throughput, batched: the client sends batches of B records and receives the replies in
    batches; the actor answers every record. Ours: the built-in echo kernel (per-message C
    handler) and a kernel with a per-batch Python handler (``rk.batch``); peers: a threading
    actor and a multiprocessing actor that receive a batch (numpy array) and answer it with a
    copy -- they handle the batch as a whole, which favours them -- and a threading actor that
    calls its handler once per record, as the echo kernel does. Aim: >= 10 M messages/s.

Method: each case runs after a warm-up; latency cases report percentiles over all samples,
throughput cases the median of ``repeats`` runs. The garbage collector is off while timing.
Usage: ``python bench/bench_runtime.py [--quick] [--out DIR]``.
"""

from __future__ import annotations

import datetime as _dt
import sys
import threading
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_python import cli, machine_info  # noqa: E402

import ringkernel as rk  # noqa: E402
from ringkernel.bench import MpQueueActor, PipeActor, ThreadActor  # noqa: E402  (shared with `ringkernel bench`)
from ringkernel.bench import median_rate as _median_rate  # noqa: E402
from ringkernel.bench import pipelined_batches as _batched  # noqa: E402
from ringkernel.bench import round_trips as _round_trips  # noqa: E402

RECORD = np.dtype([("seq", "<u8"), ("values", "<f8", (7,))])
assert RECORD.itemsize == 64

NORMAL = {"rtt_n": 50_000, "single_n": 200_000, "batch_total": 4_000_000, "batch": 4096, "repeats": 5}
QUICK = {"rtt_n": 5_000, "single_n": 20_000, "batch_total": 400_000, "batch": 4096, "repeats": 2}
TARGET_P50_US = 5.0
TARGET_BATCH_MPS = 10e6


def _record() -> Any:
    return np.zeros((), RECORD)[()]


# ---- Q1: round trip ---------------------------------------------------------------------------------------


def bench_round_trip(cfg: dict) -> list:
    n = cfg["rtt_n"]
    rows = []
    rec = _record()
    with rk.Runtime("cpu") as rt:
        echo = rt.launch("echo", "echo", input=RECORD)
        echo.activate()
        send, receive = echo.send, echo.receive
        rows.append({"case": "ringkernel echo kernel (C handler)", "kind": "ours",
                     **_round_trips(lambda: (send(rec), receive(5.0)), n)})
        pyk = rt.launch("pyecho", lambda m: m, input=RECORD)
        pyk.activate()
        send2, receive2 = pyk.send, pyk.receive
        rows.append({"case": "ringkernel kernel, Python handler", "kind": "ours",
                     **_round_trips(lambda: (send2(rec), receive2(5.0)), n)})
    actor = ThreadActor()
    put, get = actor.inq.put, actor.outq.get
    rows.append({"case": "threading actor (queue.Queue)", "kind": "peer", **_round_trips(lambda: (put(rec), get()), n)})
    actor.close()
    pipe = PipeActor()
    data = rec.tobytes()
    sb, rb = pipe.conn.send_bytes, pipe.conn.recv_bytes
    rows.append({"case": "multiprocessing actor (Pipe, bytes)", "kind": "peer",
                 **_round_trips(lambda: (sb(data), rb()), n)})
    pipe.close()
    mpq = MpQueueActor()
    mput, mget = mpq.inq.put, mpq.outq.get
    rows.append({"case": "multiprocessing actor (mp.Queue)", "kind": "peer",
                 **_round_trips(lambda: (mput(rec), mget()), max(1000, n // 5))})
    mpq.close()
    best_peer = min(r["p50_ns"] for r in rows if r["kind"] == "peer")
    for r in rows:
        r["question"] = "Q1 round trip"
        r["ratio_vs_best_peer_p50"] = best_peer / r["p50_ns"]
    return rows


# ---- Q2: one message per call, pipelined ------------------------------------------------------------------------


def _pipelined(send: Callable[[Any], Any], receive: Callable[[], Any], n: int) -> float:
    rec = _record()

    def producer() -> None:
        for _ in range(n):
            send(rec)

    t = threading.Thread(target=producer)
    t0 = time.perf_counter()
    t.start()
    for _ in range(n):
        receive()
    elapsed = time.perf_counter() - t0
    t.join()
    return n / elapsed


def bench_single(cfg: dict) -> list:
    n = cfg["single_n"]
    rows = []
    with rk.Runtime("cpu") as rt:
        echo = rt.launch("echo", "echo", input=RECORD, options=rk.LaunchOptions(queue_capacity=4096, dedup_window=0))
        echo.activate()
        rows.append({"case": "ringkernel echo kernel", "kind": "ours",
                     **_median_rate(lambda: _pipelined(echo.send, lambda: echo.receive(5.0), n), cfg["repeats"])})
    actor = ThreadActor()
    rows.append({"case": "threading actor (queue.Queue)", "kind": "peer",
                 **_median_rate(lambda: _pipelined(actor.inq.put, actor.outq.get, n // 4), cfg["repeats"])})
    actor.close()
    best = max(r["msgs_per_s"] for r in rows if r["kind"] == "peer")
    for r in rows:
        r["question"] = "Q2 one per call"
        r["ratio_vs_best_peer"] = r["msgs_per_s"] / best
    return rows


# ---- Q3: batched ------------------------------------------------------------------------------------------


def bench_batched(cfg: dict) -> list:
    total, b = cfg["batch_total"], cfg["batch"]
    batch = np.zeros(b, RECORD)
    batch["seq"] = np.arange(b)
    rows = []
    opts = rk.LaunchOptions.high_throughput()
    with rk.Runtime("cpu") as rt:
        echo = rt.launch("echo", "echo", input=RECORD, options=opts)
        echo.activate()

        def rk_recv(k=echo) -> int:
            return len(k.receive_batch(b, 5.0))

        rows.append({"case": f"ringkernel echo kernel (C handler per message), batches of {b}", "kind": "ours",
                     **_median_rate(lambda: _batched(echo.send_batch, rk_recv, total, batch), cfg["repeats"])})
        pyk = rt.launch("pybatch", rk.batch(lambda a: a, max_size=b), input=RECORD, options=opts)
        pyk.activate()

        def py_recv(k=pyk) -> int:
            return len(k.receive_batch(b, 5.0))

        rows.append({"case": f"ringkernel kernel, Python batch handler, batches of {b}", "kind": "ours",
                     **_median_rate(lambda: _batched(pyk.send_batch, py_recv, total, batch), cfg["repeats"])})
    actor = ThreadActor(lambda a: a.copy())
    rows.append({"case": f"threading actor (queue.Queue), numpy batches of {b}", "kind": "peer",
                 **_median_rate(lambda: _batched(actor.inq.put, lambda: len(actor.outq.get()), total, batch),
                                cfg["repeats"])})
    actor.close()
    # The same actor calling a handler once per record, as the echo kernel does (fewer messages: slow).
    per_record = ThreadActor(lambda a: np.array([r for r in a], dtype=RECORD))
    rows.append({"case": f"threading actor, per-record handler, batches of {b}", "kind": "peer-per-message",
                 **_median_rate(lambda: _batched(per_record.inq.put, lambda: len(per_record.outq.get()),
                                                 max(b, total // 20), batch), cfg["repeats"])})
    per_record.close()
    pipe = PipeActor()
    raw = batch.tobytes()

    def pipe_send(_: np.ndarray) -> None:
        pipe.conn.send_bytes(raw)

    def pipe_recv() -> int:
        return len(pipe.conn.recv_bytes()) // RECORD.itemsize

    rows.append({"case": f"multiprocessing actor (Pipe), batches of {b}", "kind": "peer",
                 **_median_rate(lambda: _batched(pipe_send, pipe_recv, total, batch), cfg["repeats"])})
    pipe.close()
    best = max(r["msgs_per_s"] for r in rows if r["kind"] == "peer")
    per_message = max(r["msgs_per_s"] for r in rows if r["kind"] == "peer-per-message")
    for r in rows:
        r["question"] = "Q3 batched"
        r["ratio_vs_best_peer"] = r["msgs_per_s"] / best
        r["ratio_vs_per_message_peer"] = r["msgs_per_s"] / per_message
    return rows


# ---- driver ---------------------------------------------------------------------------------------------------


def run(quick: bool = False) -> dict:
    cfg = QUICK if quick else NORMAL
    started = time.perf_counter()
    rows = bench_round_trip(cfg) + bench_single(cfg) + bench_batched(cfg)
    return {
        "benchmark": "ring-kernel-runtime",
        "machine": machine_info(),
        "device": "CPU backend (host worker threads); no GPU involved",
        "date": _dt.datetime.now(_dt.timezone.utc).astimezone().isoformat(timespec="seconds"),
        "ringkernel_version": rk.__version__,
        "quick": quick,
        "config": cfg,
        "method": {"latency": "per-message perf_counter_ns around send+receive, percentiles over all samples",
                   "throughput": "median of repeated runs after one warm-up; producer thread + receiving main thread",
                   "gc": "disabled while timing",
                   "ratio": "peer/ours for latency, ours/peer for throughput; >1 means ringkernel is better",
                   "record": "64-byte numpy structured record " + str(RECORD.descr)},
        "target": {"round_trip_p50_us": TARGET_P50_US, "batched_msgs_per_s": TARGET_BATCH_MPS},
        "elapsed_s": round(time.perf_counter() - started, 2),
        "rows": rows,
    }


def table(results: dict) -> str:
    lines = [f"ring kernels vs Python actors -- {results['machine']['cpu']} ({results['machine']['cores']} cores), "
             f"{results['device']}, {results['date']}"]
    lines.append(f"\n{'Q1 round trip (one message)':58s} {'p50':>9s} {'p99':>9s} {'p99.9':>9s} {'ratio p50':>10s}")
    for r in results["rows"]:
        if r["question"] == "Q1 round trip":
            lines.append(f"  {r['case']:56s} {r['p50_ns'] / 1e3:7.2f}us {r['p99_ns'] / 1e3:7.2f}us "
                         f"{r['p999_ns'] / 1e3:7.2f}us {r['ratio_vs_best_peer_p50']:9.2f}x")
    for q in ("Q2 one per call", "Q3 batched"):
        lines.append(f"\n{q:58s} {'msg/s':>12s} {'ratio':>10s} {'vs per-msg':>10s}")
        for r in results["rows"]:
            if r["question"] == q:
                extra = f" {r['ratio_vs_per_message_peer']:9.2f}x" if "ratio_vs_per_message_peer" in r else ""
                lines.append(f"  {r['case']:56s} {r['msgs_per_s'] / 1e6:10.2f} M {r['ratio_vs_best_peer']:9.2f}x{extra}")
    return "\n".join(lines)


def main(argv: list | None = None) -> int:
    return cli(argv, __doc__, run, table, "runtime", "fewer messages and repeats (about 20 s)")


if __name__ == "__main__":
    sys.exit(main())
