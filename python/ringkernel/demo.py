"""``python -m ringkernel demo``: a tour of what works in this version, run for real."""

from __future__ import annotations

import threading
import time

import numpy as np

import ringkernel as rk

SAMPLE = np.dtype([("seq", "<u8"), ("sensor", "<u4"), ("flags", "<u4"), ("values", "<f4", (12,))])


def _section(title: str) -> None:
    print(f"\n== {title} " + "=" * max(0, 66 - len(title)))


def run(messages: int = 200_000) -> int:
    print(f"ringkernel {rk.__version__}")

    _section("backends")
    for b in rk.backends():
        print(f"  {b.name:7s} {'yes' if b.available else 'no ':3s}  {b.detail}")

    _section("a queue between two threads (64-byte records, BLOCK)")
    q = rk.Queue(SAMPLE, capacity=4096, backpressure=rk.Backpressure.BLOCK)
    batch = np.zeros(1024, dtype=SAMPLE)
    received = 0
    checksum = 0

    def producer() -> None:
        for start in range(0, messages, len(batch)):
            n = min(len(batch), messages - start)
            batch["seq"][:n] = np.arange(start, start + n)
            q.send_batch(batch[:n])

    t0 = time.perf_counter()
    thread = threading.Thread(target=producer)
    thread.start()
    while received < messages:
        got = q.receive_batch(1024, timeout=5.0)
        if len(got) == 0:
            break
        checksum += int(got["seq"].sum())
        received += len(got)
    thread.join()
    elapsed = time.perf_counter() - t0
    ok = received == messages and checksum == messages * (messages - 1) // 2
    print(f"  {received} of {messages} records arrived, sum of sequence numbers {'correct' if ok else 'WRONG'}")
    print(f"  {received / elapsed / 1e6:.1f} M records/s through Python batches (bench/ has the measured comparisons)")
    print(f"  {q.stats}")

    _section("backpressure on a full queue (capacity 16)")
    for bp in rk.Backpressure:
        small = rk.Queue(SAMPLE, capacity=16, backpressure=bp)
        accepted = sum(small.send(np.zeros((), SAMPLE)[()], timeout=0.01) for _ in range(20))
        print(f"  {bp.name:11s} accepted {accepted:2d} of 20 -> {small.stats}")

    _section("priority and deduplication")
    pq = rk.Queue(SAMPLE, capacity=64, priority=True, dedup_window=16)
    record = np.zeros((), SAMPLE)
    for i, prio in enumerate([1, 9, 5, 9]):
        record["seq"] = i
        pq.send(record[()], id=i, priority=prio)
    record["seq"] = 99
    print(f"  resending id 2: accepted={pq.send(record[()], id=2)} (duplicates={pq.stats.duplicates})")
    order = [int(pq.receive(timeout=0)["seq"]) for _ in range(len(pq))]
    print(f"  sent seq 0..3 with priorities [1, 9, 5, 9]; received in order {order}")

    _section("message types")

    @rk.message
    class Reading:
        sensor: rk.u16
        value: rk.f64
        samples: rk.array(rk.f32, 4)
        unit: rk.string(8)

    mq = rk.Queue(Reading, capacity=64)
    mq.send(Reading(sensor=7, value=21.5, samples=[21.4, 21.5, 21.6, 21.5], unit="°C"))
    reading, envelope = mq.receive(timeout=1.0, with_envelope=True)
    print(f"  {reading}")
    print(f"  {Reading.itemsize}-byte record, type_id {Reading.type_id}; arrived with {envelope}")
    first = Reading.c_declaration().split("typedef struct Reading")[1].split("} Reading;")[0]
    print("  C declaration: typedef struct Reading" + first.replace("\n", "\n  ") + "} Reading;")
    try:
        Reading.from_bytes(reading.to_bytes()[:-1])
    except rk.MessageFormatError as e:
        print(f"  truncated bytes are refused: {e}")

    _section("hybrid logical clock")
    sender, receiver = rk.HlcClock(node_id=1), rk.HlcClock(node_id=2, max_offset=0.5)
    t1 = sender.now()
    t2 = receiver.update(t1)
    print(f"  node 1 sends {t1}")
    print(f"  node 2 receives and stamps {t2} (after the send: {t2 > t1})")
    try:
        receiver.update(rk.HlcTimestamp(t1.physical + 10_000, 0, 1))
    except rk.ClockSkewError as e:
        print(f"  a stamp 10 s ahead is refused: {e}")

    _section("launch options")
    for name in ("production", "low_latency", "high_throughput"):
        print(f"  {name:15s} {getattr(rk.LaunchOptions, name)()}")
    try:
        rk.LaunchOptions(queue_capacity=1000)
    except ValueError as e:
        print(f"  invalid: {e}")

    print("\nRing kernels (Runtime, launch, handlers) arrive in the next versions; see README.md.")
    return 0 if ok else 1
