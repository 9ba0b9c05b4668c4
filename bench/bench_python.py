#!/usr/bin/env python3
"""Benchmark ringkernel's Python queue (``rk.Queue``) against the alternatives Python offers.

Every number is measured in the same run as the peer it is compared with, and reported as a
ratio. A ratio is always "how many times better ours is": ours/peer for messages per second,
peer/ours for nanoseconds per message. Above 1 means ringkernel wins.

The record is the same 64-byte numpy structured record everywhere:
``np.dtype([("seq", "<u8"), ("values", "<f8", (7,))])``.

Questions
---------
Q1. Batch path, one thread. Messages/s for ``send_batch`` of B records followed by
    ``receive_batch(B)``, B in 64, 1024, 4096, 16384, against, per message:
    ``queue.Queue`` put/get, ``queue.SimpleQueue`` put/get, ``collections.deque``
    append/popleft, ``deque.extend`` + popleft loop, and a numpy baseline that does the bytes
    work a queue must do (memcpy the batch's bytes into a preallocated buffer, then out into
    a new record array) -- the memory-bandwidth bound. The project aims at >= 20 M messages/s here.
    Note: the Python peers move references to pre-built record objects and copy no bytes,
    and their consumer ends with loose objects rather than an array; both favour the peers.
Q2. Single-record path, one thread. Nanoseconds per send+receive pair with one record per
    call: ``rk.Queue.send``/``receive`` against ``queue.Queue`` put/get, ``SimpleQueue``
    put/get and ``deque`` append/popleft with the same numpy record object; and ours with
    ``timeout=0`` against ours with the default (``timeout=None``).
Q3. Two threads: a producer thread sends batches, a consumer thread receives them until all
    have arrived. Messages/s, ``rk.Queue`` (send_batch/receive_batch) against ``queue.Queue``
    and ``SimpleQueue`` with per-item put/get (fewer messages for those, so they finish fast).
    Multiprocessing is skipped: ``rk.Queue`` is an in-process object, so there is no
    like-for-like cross-process comparison to make from Python.

Method: each case is warmed up, then calibrated so one sample lasts about ``sample_s``;
the statistic is the median of ``repeats`` samples (the best sample is kept in the JSON too).
The cyclic garbage collector is off while a sample runs (as ``timeit`` does).

Usage: ``python bench/bench_python.py [--quick] [--out DIR]``; ``run(quick)`` returns the
results dict so another script can aggregate it. Standard library + numpy only.
"""

from __future__ import annotations

import argparse
import collections
import datetime as _dt
import gc
import json
import math
import queue
import statistics
import sys
import threading
import time
from pathlib import Path
from typing import Callable

import numpy as np

import ringkernel as rk
from ringkernel.bench import machine_info  # noqa: F401  (bench/ scripts import it from here)

RECORD = np.dtype([("seq", "<u8"), ("values", "<f8", (7,))])
assert RECORD.itemsize == 64
BATCH_SIZES = (64, 1024, 4096, 16384)
CAPACITY = 16384
TARGET_MSGS_PER_S = 20e6

NORMAL = dict(repeats=7, sample_s=0.15, threads_rk=1 << 21, threads_peer=1 << 16, single_pairs=20_000)
QUICK = dict(repeats=3, sample_s=0.02, threads_rk=1 << 19, threads_peer=1 << 14, single_pairs=5_000)


# ---- measurement helpers -------------------------------------------------------------------------


def _timed(fn: Callable[[], None], rounds: int) -> int:
    """Nanoseconds for ``rounds`` calls of ``fn`` with the cyclic GC off."""
    gc_was_enabled = gc.isenabled()
    gc.disable()
    try:
        t0 = time.perf_counter_ns()
        for _ in range(rounds):
            fn()
        return time.perf_counter_ns() - t0
    finally:
        if gc_was_enabled:
            gc.enable()


def measure(fn: Callable[[], None], msgs_per_call: int, cfg: dict) -> dict:
    """Warm up, calibrate to ~sample_s per sample, return ns/message (median and best)."""
    fn()  # warm-up (first-touch allocations, caches)
    rounds = 1
    while True:  # calibrate: grow until one sample is long enough to time reliably
        ns = _timed(fn, rounds)
        if ns >= cfg["sample_s"] * 1e9 / 4 or rounds >= 1 << 20:
            break
        rounds *= 4
    rounds = max(1, math.ceil(rounds * cfg["sample_s"] * 1e9 / max(ns, 1)))
    samples = [_timed(fn, rounds) / (rounds * msgs_per_call) for _ in range(cfg["repeats"])]
    return {"ns_per_msg": statistics.median(samples), "best_ns_per_msg": min(samples),
            "messages_per_sample": rounds * msgs_per_call}


def _mps(m: dict) -> float:
    return 1e9 / m["ns_per_msg"]


def make_records(n: int) -> np.ndarray:
    a = np.zeros(n, RECORD)
    a["seq"] = np.arange(n)
    a["values"] = np.arange(7 * n, dtype=np.float64).reshape(n, 7)
    return a


def new_rk_queue() -> rk.Queue:
    return rk.Queue(RECORD, capacity=CAPACITY, backpressure=rk.Backpressure.BLOCK)


# ---- Q1: batch path, one thread -------------------------------------------------------------------


def _batch_cases(batch: np.ndarray) -> dict[str, Callable[[], None]]:
    """One call = move the whole batch through the queue and back out."""
    b = len(batch)
    recs = list(batch)  # pre-built np.void objects for the Python peers (not timed)

    rq = new_rk_queue()

    def ours() -> None:
        rq.send_batch(batch)
        out = rq.receive_batch(b)
        assert len(out) == b

    qq = queue.Queue()

    def queue_queue() -> None:
        put, get = qq.put, qq.get
        for r in recs:
            put(r)
        for _ in range(b):
            get()

    sq = queue.SimpleQueue()

    def simple_queue() -> None:
        put, get = sq.put, sq.get
        for r in recs:
            put(r)
        for _ in range(b):
            get()

    dq = collections.deque()

    def deque_item() -> None:
        append, popleft = dq.append, dq.popleft
        for r in recs:
            append(r)
        for _ in range(b):
            popleft()

    dx = collections.deque()

    def deque_extend() -> None:
        dx.extend(recs)
        popleft = dx.popleft
        for _ in range(b):
            popleft()

    # Raw byte views: numpy copies structured dtypes field-aware and ~4x slower than memcpy.
    src_bytes = batch.view(np.uint8)
    ring_bytes = np.empty_like(src_bytes)

    def numpy_copy() -> None:
        ring_bytes[:] = src_bytes  # into the queue's storage
        ring_bytes.copy().view(RECORD)  # out into a fresh record array, as receive_batch returns

    return {"rk.Queue send_batch+receive_batch": ours,
            "queue.Queue put/get per item": queue_queue,
            "queue.SimpleQueue put/get per item": simple_queue,
            "deque append/popleft per item": deque_item,
            "deque.extend + popleft loop": deque_extend,
            "numpy copy in+out (bandwidth bound)": numpy_copy}


def bench_batch(cfg: dict) -> list[dict]:
    rows = []
    for b in BATCH_SIZES:
        cases = _batch_cases(make_records(b))
        res = {name: measure(fn, b, cfg) for name, fn in cases.items()}
        ours_name = next(iter(cases))
        ours = res.pop(ours_name)
        bound_name = "numpy copy in+out (bandwidth bound)"
        bound = res.pop(bound_name)
        best_peer = min(res, key=lambda k: res[k]["ns_per_msg"])
        rows.append({
            "question": "Q1", "case": f"batch B={b}", "batch": b, "unit": "msg/s",
            "ours": ours_name, "ours_value": _mps(ours), "ours_best": 1e9 / ours["best_ns_per_msg"],
            "peers": {k: _mps(v) for k, v in res.items()} | {bound_name: _mps(bound)},
            "best_peer": best_peer, "best_peer_value": _mps(res[best_peer]),
            "ratio_vs_best_peer": _mps(ours) / _mps(res[best_peer]),
            "ratio_vs_each_peer": {k: _mps(ours) / _mps(v) for k, v in res.items()},
            "fraction_of_bandwidth_bound": _mps(ours) / _mps(bound),
            "meets_target_20M": _mps(ours) >= TARGET_MSGS_PER_S,
            "messages_per_sample": ours["messages_per_sample"],
        })
    return rows


# ---- Q2: single-record path -----------------------------------------------------------------------


def bench_single(cfg: dict) -> list[dict]:
    rec = make_records(1)[0]  # np.void, the same object for every queue
    n = cfg["single_pairs"]  # pairs per call; stays far below capacity (one in flight)

    rq = new_rk_queue()

    def ours_default() -> None:
        send, receive = rq.send, rq.receive
        for _ in range(n):
            send(rec)
            receive()

    def ours_timeout0() -> None:
        send, receive = rq.send, rq.receive
        for _ in range(n):
            send(rec, timeout=0)
            receive(timeout=0)

    qq = queue.Queue()

    def queue_queue() -> None:
        put, get = qq.put, qq.get
        for _ in range(n):
            put(rec)
            get()

    sq = queue.SimpleQueue()

    def simple_queue() -> None:
        put, get = sq.put, sq.get
        for _ in range(n):
            put(rec)
            get()

    dq = collections.deque()

    def deque_item() -> None:
        append, popleft = dq.append, dq.popleft
        for _ in range(n):
            append(rec)
            popleft()

    ours = measure(ours_default, n, cfg)
    res = {"rk.Queue send/receive (timeout=0)": measure(ours_timeout0, n, cfg),
           "queue.Queue put/get": measure(queue_queue, n, cfg),
           "queue.SimpleQueue put/get": measure(simple_queue, n, cfg),
           "deque append/popleft": measure(deque_item, n, cfg)}
    assert len(rq) == 0 and rq.stats.sent == rq.stats.received
    rows = []
    for peer, m in res.items():
        ours_name = "rk.Queue send/receive (default timeout=None)"
        if "timeout=0" in peer:  # ours with timeout=0 measured against ours default
            ours_name, ours_m, peer, m = peer, m, ours_name, ours
        else:
            ours_m = ours
        rows.append({
            "question": "Q2", "case": "single record pair", "unit": "ns/pair",
            "ours": ours_name, "ours_value": ours_m["ns_per_msg"], "ours_best": ours_m["best_ns_per_msg"],
            "peer": peer, "peer_value": m["ns_per_msg"], "peer_best": m["best_ns_per_msg"],
            "ratio": m["ns_per_msg"] / ours_m["ns_per_msg"],
        })
    return rows


# ---- Q3: two threads ------------------------------------------------------------------------------


def _two_threads(produce: Callable[[], None], consume: Callable[[], None]) -> int:
    """Wall ns from start until both the producer and the consumer thread have finished."""
    gc_was_enabled = gc.isenabled()
    gc.disable()
    try:
        errors: list[BaseException] = []

        def guard(fn: Callable[[], None]) -> Callable[[], None]:
            def body() -> None:
                try:
                    fn()
                except BaseException as e:  # report in the main thread
                    errors.append(e)
            return body

        threads = [threading.Thread(target=guard(produce)), threading.Thread(target=guard(consume))]
        t0 = time.perf_counter_ns()
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        ns = time.perf_counter_ns() - t0
        if errors:
            raise errors[0]
        return ns
    finally:
        if gc_was_enabled:
            gc.enable()


def _rk_two_threads(n: int, b: int) -> int:
    q = new_rk_queue()
    batch = make_records(b)

    def produce() -> None:
        sent = 0
        while sent < n:
            sent += q.send_batch(batch[: min(b, n - sent)])

    def consume() -> None:
        got = 0
        last_seq = -1
        while got < n:
            out = q.receive_batch(b, timeout=5.0)
            if len(out) == 0:
                raise RuntimeError(f"rk.Queue consumer starved after {got} of {n} messages")
            # cheap FIFO check on the first record of each batch (per-producer order holds)
            first = int(out[0]["seq"])
            if last_seq >= 0 and first != (last_seq + 1) % b:
                raise RuntimeError("rk.Queue delivered out of order")
            last_seq = int(out[-1]["seq"])
            got += len(out)

    return _two_threads(produce, consume)


def _pyq_two_threads(make_q: Callable[[], object], n: int) -> int:
    q = make_q()
    rec = make_records(1)[0]

    def produce() -> None:
        put = q.put
        for _ in range(n):
            put(rec)

    def consume() -> None:
        get = q.get
        for _ in range(n):
            get()

    return _two_threads(produce, consume)


def bench_threads(cfg: dict, batch: int = 1024) -> list[dict]:
    def sampled(fn: Callable[[], int], n: int) -> tuple[float, float]:
        fn()  # warm-up
        ns = [fn() / n for _ in range(cfg["repeats"])]
        return statistics.median(ns), min(ns)

    n_rk, n_peer = cfg["threads_rk"], cfg["threads_peer"]
    ours, ours_best = sampled(lambda: _rk_two_threads(n_rk, batch), n_rk)
    rows = []
    for peer, make_q in (("queue.Queue put/get per item", queue.Queue),
                         ("queue.SimpleQueue put/get per item", queue.SimpleQueue)):
        peer_ns, peer_best = sampled(lambda: _pyq_two_threads(make_q, n_peer), n_peer)
        rows.append({
            "question": "Q3", "case": f"2 threads, B={batch}", "batch": batch, "unit": "msg/s",
            "ours": "rk.Queue send_batch/receive_batch", "ours_value": 1e9 / ours, "ours_best": 1e9 / ours_best,
            "ours_messages": n_rk, "peer": peer, "peer_value": 1e9 / peer_ns, "peer_best": 1e9 / peer_best,
            "peer_messages": n_peer, "ratio": peer_ns / ours,
        })
    return rows


# ---- machine description and driver --------------------------------------------------------------


def run(quick: bool = False) -> dict:
    """Run all questions and return the results dict (what main() writes as JSON)."""
    cfg = QUICK if quick else NORMAL
    started = time.perf_counter()
    rows = bench_batch(cfg) + bench_single(cfg) + bench_threads(cfg)
    return {
        "benchmark": "python-queue",
        "machine": machine_info(),
        "device": "CPU (host)",
        "date": _dt.datetime.now(_dt.timezone.utc).astimezone().isoformat(timespec="seconds"),
        "ringkernel_version": rk.__version__,
        "quick": quick,
        "method": {"repeats": cfg["repeats"], "statistic": "median", "also_kept": "best (min ns)",
                   "sample_seconds": cfg["sample_s"], "warmup": "1 untimed run per case",
                   "timer": "time.perf_counter_ns", "gc": "disabled during samples",
                   "ratio": "ours/peer msg/s = peer/ours ns; >1 means ringkernel is better",
                   "record": "64-byte numpy structured record " + str(RECORD.descr)},
        "target": {"batch_msgs_per_s": TARGET_MSGS_PER_S},
        "multiprocessing": "skipped: rk.Queue is in-process; no like-for-like cross-process peer",
        "elapsed_s": round(time.perf_counter() - started, 2),
        "rows": rows,
    }


def _fmt(value: float, unit: str) -> str:
    if unit == "msg/s":
        return f"{value / 1e6:8.2f} M/s"
    return f"{value:8.0f} ns "


def table(results: dict) -> str:
    head = f"{'question':<22} {'ours':<44} {'value':>12}  {'peer':<42} {'value':>12} {'ratio':>7}"
    lines = [head, "-" * len(head)]
    for r in results["rows"]:
        unit = r["unit"]
        if r["question"] == "Q1":
            # per batch size: the best Python-queue peer, then the numpy bandwidth bound
            bound = "numpy copy in+out (bandwidth bound)"
            pairs = [(r["best_peer"] + " (best)", r["best_peer_value"], r["ratio_vs_best_peer"]),
                     (bound, r["peers"][bound], r["fraction_of_bandwidth_bound"])]
        else:
            pairs = [(r["peer"], r["peer_value"], r["ratio"])]
        for peer, value, ratio in pairs:
            case = f"{r['question']} {r['case']}"
            lines.append(f"{case:<22} {r['ours']:<44} {_fmt(r['ours_value'], unit):>12}  "
                         f"{peer:<42} {_fmt(value, unit):>12} {ratio:7.2f}")
    q1 = [r for r in results["rows"] if r["question"] == "Q1"]
    met = [r["batch"] for r in q1 if r["meets_target_20M"]]
    m = results["method"]
    lines.append(f"ratio >1 = ringkernel better; {m['statistic']} of {m['repeats']}. "
                 f"Batch target >= 20 M msg/s met at B = {met or 'none'}. "
                 f"Multiprocessing: {results['multiprocessing']}.")
    return "\n".join(lines)


def cli(argv: list[str] | None, doc: str, run_fn: Callable[[bool], dict], table_fn: Callable[[dict], str],
        prefix: str, quick_help: str) -> int:
    """The command line every bench script shares: run, print the table, write the JSON."""
    ap = argparse.ArgumentParser(description=doc.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help=quick_help)
    ap.add_argument("--out", default=str(Path(__file__).resolve().parent / "results"),
                    help="directory for the JSON results (default: bench/results)")
    args = ap.parse_args(argv)

    results = run_fn(args.quick)
    print(table_fn(results))
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    stamp = _dt.date.today().strftime("%Y%m%d")
    path = out_dir / f"{prefix}-{results['machine']['hostname']}-{stamp}.json"
    path.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {path} ({results['elapsed_s']} s)")
    return 0


def main(argv: list[str] | None = None) -> int:
    return cli(argv, __doc__, run, table, "python", "fewer repeats and shorter samples (< ~15 s)")


if __name__ == "__main__":
    sys.exit(main())
