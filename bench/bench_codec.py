#!/usr/bin/env python3
"""The native message codec (issue 16): what a typed message costs from Python, against the plain
alternatives, in one run, as ratios.

Questions (a 6-field message: u64, f64, i32, an IntEnum in a u8, u16, f32):
  1. construct: ``Order(seq=…, price=…, …)`` against ``np.zeros((), dtype)`` plus the same six field
     sets (goal: ≤ 1.5× and ≤ 0.5 µs);
  2. read a field: ``order.price`` against ``record["price"]`` of a numpy record;
  3. typed echo round trip through a CPU ``echo`` kernel (send one message, receive its reply as a
     message object) against the raw-dtype round trip on the same kernel with numpy records (goal:
     typed ≤ 1.3× raw); and how the round trip grows with the number of messages in flight (1 … 64);
  4. the same typed round trip in PyDotCompute 0.2 (the pure-Python predecessor; its own
     ``@message`` dataclass and an asyncio echo ring kernel), where it is installed (goal: ≥ 30×);
  5. ``receive_batch`` into records (no per-message Python object) and, on request, objects
     (``Order.from_records``), per message.
Method: median of several timeit samples after a warm-up. Usage: python bench/bench_codec.py [--quick]
Writes bench/results/codec-<hostname>-<YYYYMMDD>.json (and a plot of question 3's growth with
--plot, matplotlib).
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as _dt
import enum
import json
import os
import platform
import socket
import statistics
import time
import timeit
from pathlib import Path

import numpy as np

import ringkernel as rk

RESULTS = Path(__file__).resolve().parent / "results"


class Side(enum.IntEnum):
    BUY = 0
    SELL = 1


@rk.message
class Order:
    seq: rk.u64
    price: rk.f64
    qty: rk.i32
    side: Side
    venue: rk.u16
    weight: rk.f32


def median_ns(fn, number: int, repeats: int) -> float:
    fn()
    return statistics.median(timeit.repeat(fn, number=number, repeat=repeats)) / number * 1e9


def construct(repeats: int, n: int) -> dict:
    dtype = Order.dtype

    def ours():
        Order(seq=1, price=101.25, qty=-5, side=Side.SELL, venue=7, weight=0.5)

    def numpy_record():
        r = np.zeros((), dtype)
        r["seq"] = 1
        r["price"] = 101.25
        r["qty"] = -5
        r["side"] = 1
        r["venue"] = 7
        r["weight"] = 0.5

    def call_floor():  # the interpreter's own cost of a call with these six keyword arguments
        dict(seq=1, price=101.25, qty=-5, side=Side.SELL, venue=7, weight=0.5)

    a, b, floor = median_ns(ours, n, repeats), median_ns(numpy_record, n, repeats), median_ns(call_floor, n, repeats)
    return {"question": "construct a 6-field message", "unit": "ns", "ours": a,
            "peer": "np.zeros((), dtype) + 6 field sets", "peer_value": b, "ratio_ours_over_peer": a / b,
            "call_floor": "dict(**the same six keywords)", "call_floor_value": floor,
            "ratio_ours_over_call_floor": a / floor,
            "goal": "ratio <= 1.5 and ours <= 500 ns", "met": a / b <= 1.5 and a <= 500}


def read_field(repeats: int, n: int) -> dict:
    m = Order(seq=1, price=101.25, qty=-5, side=Side.SELL, venue=7, weight=0.5)
    r = np.zeros((), Order.dtype)
    r["price"] = 101.25
    a = median_ns(lambda: m.price, n, repeats)
    b = median_ns(lambda: r["price"], n, repeats)
    return {"question": "read one field", "unit": "ns", "ours": a, "peer": "numpy record['price']",
            "peer_value": b, "ratio_ours_over_peer": a / b}


def echo_round_trips(repeats: int, n: int, in_flight=(1, 4, 16, 64)) -> dict:
    """Typed and raw round trips through one CPU echo kernel; per message, for k messages in flight."""
    raw_dtype = Order.dtype
    one = Order(seq=1, price=101.25, qty=-5, side=Side.SELL, venue=7, weight=0.5)
    raw_one = np.frombuffer(one.to_bytes(), raw_dtype)[0]
    rows = []
    with rk.Runtime(backend="cpu") as rt:
        typed = rt.launch("typed", handler="echo", input=Order, output=Order,
                          options=rk.LaunchOptions.low_latency())
        raw = rt.launch("raw", handler="echo", input=raw_dtype, output=raw_dtype,
                        options=rk.LaunchOptions.low_latency())
        typed.activate()
        raw.activate()

        def trip(k, msg, target):
            def go():
                for _ in range(k):
                    target.send(msg)
                for _ in range(k):
                    if target.receive(timeout=5.0) is None:
                        raise RuntimeError("echo reply lost")
            return go

        for k in in_flight:
            number = max(1, n // k)
            # Interleaved samples, so drift of the shared machine hits both alike.
            t_samples, r_samples = [], []
            for _ in range(repeats):
                t_samples.append(median_ns(trip(k, one, typed), number, 1) / k)
                r_samples.append(median_ns(trip(k, raw_one, raw), number, 1) / k)
            t, r = statistics.median(t_samples), statistics.median(r_samples)
            rows.append({"in_flight": k, "typed_ns": t, "raw_ns": r, "ratio_typed_over_raw": t / r})
        got = typed.receive(timeout=0)
        assert got is None, got
    first = rows[0]
    return {"question": "typed echo round trip vs raw dtype, same CPU kernel", "unit": "ns/message",
            "rows": rows, "ours": first["typed_ns"], "peer": "raw numpy dtype on the same kernel",
            "peer_value": first["raw_ns"], "ratio_ours_over_peer": first["ratio_typed_over_raw"],
            "goal": "typed <= 1.3x raw at every load", "met": all(r["ratio_typed_over_raw"] <= 1.3 for r in rows)}


def pydotcompute_round_trip(samples: int, n: int) -> dict:
    try:
        import pydotcompute as pdc
    except ImportError:
        return {"question": "typed echo round trip vs PyDotCompute", "skipped": "pydotcompute is not installed "
                "(pip install pydotcompute==0.2.0)"}

    @pdc.message
    class PdcOrder:
        seq: int = 0
        price: float = 0.0
        qty: int = 0
        side: int = 0
        venue: int = 0
        weight: float = 0.0

    async def echo(ctx):
        while not ctx.should_terminate:
            try:
                msg = await ctx.receive(timeout=0.1)
            except Exception:
                continue
            await ctx.send(msg)

    async def measure() -> float:
        async with pdc.RingKernelRuntime() as runtime:
            await runtime.launch("echo", echo, input_type=PdcOrder, output_type=PdcOrder)
            await runtime.activate("echo")
            msg = PdcOrder(seq=1, price=101.25, qty=-5, side=1, venue=7, weight=0.5)
            for _ in range(50):
                await runtime.send("echo", msg)
                await runtime.receive("echo", timeout=5.0)
            times = []
            for _ in range(samples):
                t0 = time.perf_counter()
                for _ in range(n):
                    await runtime.send("echo", msg)
                    await runtime.receive("echo", timeout=5.0)
                times.append((time.perf_counter() - t0) / n * 1e9)
            await runtime.terminate("echo")
            return statistics.median(times)

    theirs = asyncio.run(measure())
    one = Order(seq=1, price=101.25, qty=-5, side=Side.SELL, venue=7, weight=0.5)
    with rk.Runtime(backend="cpu") as rt:
        k = rt.launch("typed", handler="echo", input=Order, output=Order, options=rk.LaunchOptions.low_latency())
        k.activate()

        def go():
            k.send(one)
            k.receive(timeout=5.0)

        ours = statistics.median(median_ns(go, n, 1) for _ in range(samples))
    return {"question": "typed echo round trip vs PyDotCompute", "unit": "ns/message", "ours": ours,
            "peer": f"PyDotCompute {pdc.__version__} asyncio echo ring kernel", "peer_value": theirs,
            "ratio_peer_over_ours": theirs / ours, "goal": "ours >= 30x faster", "met": theirs / ours >= 30}


def batches(repeats: int, n_batch: int = 4096) -> dict:
    out = {}
    with rk.Runtime(backend="cpu") as rt:
        k = rt.launch("batch", handler="echo", input=Order, output=Order)
        k.activate()
        records = Order.zeros(n_batch)
        records["seq"] = np.arange(n_batch)
        records["side"] = 1

        def as_records():
            sent = k.send_batch(records, timeout=5.0)
            got = 0
            while got < sent:
                got += len(k.receive_batch(n_batch - got, timeout=5.0))

        def as_objects():
            sent = k.send_batch(records, timeout=5.0)
            objs = []
            while len(objs) < sent:
                objs += Order.from_records(k.receive_batch(n_batch - len(objs), timeout=5.0))

        out["records_ns"] = median_ns(as_records, 5, repeats) / n_batch
        out["objects_ns"] = median_ns(as_objects, 5, repeats) / n_batch
    return {"question": f"batch echo of {n_batch}: receive_batch records vs objects", "unit": "ns/message", **out}


def machine() -> dict:
    cpu = platform.processor() or "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"hostname": socket.gethostname(), "cpu": cpu, "cores": os.cpu_count() or 0,
            "python": platform.python_version(), "numpy": np.__version__}


def run(quick: bool) -> dict:
    repeats = 3 if quick else 7
    n = 20_000 if quick else 100_000
    rows = [construct(repeats, n), read_field(repeats, n),
            echo_round_trips(repeats, 2_000 if quick else 10_000),
            pydotcompute_round_trip(3 if quick else 5, 200 if quick else 1000),
            batches(repeats)]
    return {"benchmark": "codec", "machine": machine(), "device": "CPU (host)",
            "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            "ringkernel_version": rk.__version__, "quick": quick,
            "method": f"median of {repeats} timeit samples after one warm-up call", "rows": rows}


def print_table(result: dict) -> None:
    print(f"{'question':58s} {'ours':>10s} {'peer':>10s}  ratio  goal")
    for r in result["rows"]:
        if "skipped" in r:
            print(f"{r['question']:58s} skipped: {r['skipped']}")
            continue
        if "records_ns" in r:
            print(f"{r['question']:58s} records {r['records_ns']:.0f} ns/msg, objects {r['objects_ns']:.0f} ns/msg")
            continue
        ratio = r.get("ratio_ours_over_peer", r.get("ratio_peer_over_ours"))
        met = {True: "met", False: "NOT met"}.get(r.get("met"), "")
        print(f"{r['question']:58s} {r['ours']:8.0f}ns {r['peer_value']:8.0f}ns {ratio:6.2f}  {r.get('goal', '')} {met}")
        if "call_floor_value" in r:
            print(f"    Python's floor, {r['call_floor']}: {r['call_floor_value']:.0f} ns "
                  f"(ours {r['ratio_ours_over_call_floor']:.2f}x of it)")
        for sub in r.get("rows", []):
            print(f"    {sub['in_flight']:3d} in flight: typed {sub['typed_ns']:7.0f} ns, raw {sub['raw_ns']:7.0f} ns, "
                  f"{sub['ratio_typed_over_raw']:.2f}x")


def plot(result: dict, path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    rows = next(r for r in result["rows"] if "rows" in r)["rows"]
    ks = [r["in_flight"] for r in rows]
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(ks, [r["typed_ns"] for r in rows], "o-", label="typed messages (Order)")
    ax.plot(ks, [r["raw_ns"] for r in rows], "s-", label="raw numpy dtype")
    ax.set_xscale("log", base=2)
    ax.set_xlabel("messages in flight")
    ax.set_ylabel("ns per message (send + receive)")
    ax.set_title("CPU echo kernel round trip from Python")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="fewer, shorter samples")
    ap.add_argument("--plot", action="store_true", help="also write a plot of the round trip against load")
    ap.add_argument("--out", type=Path, default=RESULTS, help="results folder (default bench/results)")
    args = ap.parse_args()
    result = run(args.quick)
    print_table(result)
    print(f"({result['method']})")
    args.out.mkdir(parents=True, exist_ok=True)
    stem = f"codec-{socket.gethostname()}-{_dt.date.today():%Y%m%d}{'-quick' if args.quick else ''}"
    path = args.out / f"{stem}.json"
    path.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {path}")
    if args.plot:
        plot(result, args.out / f"{stem}.png")
        print(f"wrote {args.out / (stem + '.png')}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
