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

    kernels_ok = _ring_kernels()

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

    print(f"\n{'all checks passed' if ok and kernels_ok else 'SOME CHECKS FAILED'}")
    return 0 if ok and kernels_ok else 1


RECORD = np.dtype([("seq", "<u8"), ("value", "<f8")])

SCALE = r"""
typedef struct { rk_u64 seq; rk_f64 value; } rec;
int scale(rk_ctx *ctx, RK_GLOBAL const void *in, RK_LOCAL void *out) {  /* runs on the device (here: CPU) */
    ((RK_LOCAL rec *)out)->seq = ((RK_GLOBAL const rec *)in)->seq;
    ((RK_LOCAL rec *)out)->value = 3.0 * ((RK_GLOBAL const rec *)in)->value;
    return RK_REPLY;
}
"""


def _percentiles(samples_ns: list) -> str:
    a = np.asarray(samples_ns, dtype=np.float64) / 1e3
    return f"p50 {np.percentile(a, 50):6.1f} us  p99 {np.percentile(a, 99):6.1f} us"


def _ring_kernels() -> bool:
    from .builtins import VectorAddRequest, VectorAddResponse, VectorOp

    ok = True
    with rk.Runtime("auto") as rt:
        _section(f"a vector_add ring kernel on backend '{rt.backend}' (grid 1, block 32)")
        adder = rt.launch("adder", "vector_add", input=VectorAddRequest, output=VectorAddResponse, grid=1,
                          block=32)
        adder.enable_telemetry()
        adder.activate()
        print(f"  {adder}")
        ops = {VectorOp.ADD: np.add, VectorOp.SUBTRACT: np.subtract, VectorOp.MULTIPLY: np.multiply,
               VectorOp.DIVIDE: np.divide}
        for n in (10, 25, 100):
            a = np.arange(1, n + 1, dtype=np.float32)
            b = np.full(n, 4.0, dtype=np.float32)
            if n > 25:
                ba, bb, bo = rt.buffer(a), rt.buffer(b), rt.buffer(n * 4)
            for op, fn in ops.items():
                if n <= 25:
                    pad = np.zeros(25, np.float32)
                    req = VectorAddRequest(op=op, length=n, a=np.concatenate([a, pad])[:25],
                                           b=np.concatenate([b, pad])[:25])
                else:
                    req = VectorAddRequest(op=op, length=n, a_buf=ba.handle, b_buf=bb.handle, out_buf=bo.handle)
                t0 = time.perf_counter_ns()
                adder.send(req)
                resp = adder.receive(timeout=5.0)
                rtt = (time.perf_counter_ns() - t0) / 1e3
                got = None if resp is None else (resp.result[:n] if n <= 25 else bo.read(np.float32)[:n])
                good = resp is not None and resp.status == 0 and np.allclose(got, fn(a, b), rtol=1e-6)
                ok &= good
                where = "inline " if n <= 25 else "buffers"
                print(f"  {n:3d} elements {where} {op.name:8s} -> [{got[0]:7.3f} {got[1]:7.3f} ... {got[-1]:8.3f}]  "
                      f"{'ok' if good else 'WRONG'}  round trip {rtt:6.1f} us")
        print(f"  {adder.telemetry()}")

        _section("round trip from Python (echo, 64-byte records, 20000 messages)")
        echo = rt.launch("echo", "echo", input=np.dtype([("seq", "<u8"), ("pad", "u1", (56,))]))
        echo.activate()
        rec = np.zeros((), echo.input_type)[()]
        samples = []
        for _ in range(20000):
            t0 = time.perf_counter_ns()
            echo.send(rec)
            echo.receive(timeout=5.0)
            samples.append(time.perf_counter_ns() - t0)
        print(f"  send -> handler -> receive: {_percentiles(samples)}  (bench/bench_runtime.py compares)")

        _section("a three-kernel pipeline: scale -> relay -> offset (K2K rings)")
        offset = "echo" if rt.backend != "cpu" else (lambda r: np.array((r["seq"], r["value"] + 1.0), RECORD)[()])
        scale = rt.launch("scale", rk.Source(SCALE, entry="scale"), input=RECORD)
        relay = rt.launch("relay", "echo", input=RECORD)
        last = rt.launch("offset", offset, input=RECORD)
        print(f"  rings: {rt.connect(scale, relay)}, {rt.connect(relay, last)}")
        for k in (scale, relay, last):
            k.enable_telemetry()
            k.activate()
        n, prev, ordered, correct = 2000, None, True, True
        t0 = time.perf_counter()
        batch = np.zeros(n, RECORD)
        batch["seq"] = np.arange(n)
        batch["value"] = np.arange(n) * 0.5
        scale.send_batch(batch)
        for i in range(n):
            r, env = last.receive(timeout=5.0, with_envelope=True)
            correct &= r is not None and r["seq"] == i and r["value"] == 3.0 * i * 0.5 + (rt.backend == "cpu")
            ordered &= prev is None or env.timestamp > prev
            prev = env.timestamp
        elapsed = time.perf_counter() - t0
        ok &= correct and ordered
        print(f"  {n} messages through 3 kernels in {elapsed * 1e3:.1f} ms: results {'correct' if correct else 'WRONG'}, "
              f"HLC stamps {'strictly increasing' if ordered else 'OUT OF ORDER'}")
        for k in (scale, relay, last):
            t = k.telemetry()
            print(f"  {k.name:7s} processed {t.messages_processed:5d}  latency min/avg/max "
                  f"{t.min_latency_ns / 1e3:7.1f} / {t.avg_latency_ns / 1e3:7.1f} / {t.max_latency_ns / 1e3:8.1f} us")
        states = [k.terminate() for k in rt.kernels()]
        print(f"  terminated: {sorted({s.name for s in states})}")
        chosen = rt.backend
    return _other_backends(chosen) and ok


def _other_backends(chosen: str) -> bool:
    """The same vector_add on every other backend that can run here."""
    from .builtins import VectorAddRequest, VectorAddResponse, VectorOp

    ok = True
    for info in rk.backends():
        if info.name == chosen or not info.available:
            continue
        _section(f"the same vector_add on backend '{info.name}'")
        print(f"  {info.detail}")
        with rk.Runtime(info.name) as rt:
            k = rt.launch("adder", "vector_add", input=VectorAddRequest, output=VectorAddResponse, block=32)
            k.activate()
            a = np.arange(1, 101, dtype=np.float32)
            ba, bb, bo = rt.buffer(a), rt.buffer(a), rt.buffer(400)
            k.send(VectorAddRequest(op=VectorOp.MULTIPLY, length=100, a_buf=ba.handle, b_buf=bb.handle,
                                    out_buf=bo.handle))
            resp = k.receive(timeout=5.0)
            good = resp is not None and resp.status == 0 and np.allclose(bo.read(np.float32), a * a)
            ok &= good
            rec = VectorAddRequest(op=VectorOp.ADD, length=25, a=np.ones(25, np.float32), b=np.ones(25, np.float32))
            samples = []
            for _ in range(2000):
                t0 = time.perf_counter_ns()
                k.send(rec)
                k.receive(timeout=5.0)
                samples.append(time.perf_counter_ns() - t0)
            print(f"  {k} ({k.mode}): 100 elements through buffers {'ok' if good else 'WRONG'}; "
                  f"round trip {_percentiles(samples)}")
            k.terminate()
    return ok
