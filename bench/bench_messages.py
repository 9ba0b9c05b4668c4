#!/usr/bin/env python3
"""How fast are ringkernel message types to encode and decode, next to pickle and msgpack?

Questions, all on the same 64-byte message (u64, f64, i32, an IntEnum in a u8, u8, u16, f32[10]),
measured in one run and reported as ratios (> 1: ringkernel faster):
  1. Object path: one message object -> bytes -> a validated message object again
     (``Tick.from_bytes(t.to_bytes())``), against pickle.dumps/loads of an equivalent dataclass
     and msgpack.packb/unpackb of the equivalent list.
  2. Batch path: an array of N records -> bytes -> a validated array again
     (``arr.tobytes()``, ``np.frombuffer`` + ``Tick.validate``), per message, against pickle and
     msgpack of the whole list of N equivalents.
  3. Batch conversion: N message objects -> records (``to_records``) and back (``from_records``),
     per message.
Method: median of 7 timeit samples after a warm-up. Usage: python bench/bench_messages.py [--quick]
Writes bench/results/messages-<hostname>-<YYYYMMDD>.json. Needs msgpack (pip install msgpack).
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as _dt
import enum
import json
import pickle
import platform
import socket
import statistics
import timeit
from pathlib import Path

import msgpack
import numpy as np

import ringkernel as rk

RESULTS = Path(__file__).resolve().parent / "results"


class Side(enum.IntEnum):
    BUY = 0
    SELL = 1


@rk.message
class Tick:
    seq: rk.u64
    price: rk.f64
    qty: rk.i32
    side: Side
    flags: rk.u8
    venue: rk.u16
    values: rk.array(rk.f32, 10)


@dataclasses.dataclass
class TickObj:
    seq: int
    price: float
    qty: int
    side: Side
    flags: int
    venue: int
    values: list


def median_ns(fn, number: int, repeats: int) -> float:
    fn()
    samples = timeit.repeat(fn, number=number, repeat=repeats)
    return statistics.median(samples) / number * 1e9


def run(quick: bool = False) -> dict:
    assert Tick.itemsize == 64, Tick.itemsize
    repeats = 3 if quick else 7
    one = Tick(seq=1, price=101.25, qty=-5, side=Side.SELL, flags=3, venue=7, values=np.arange(10, dtype=np.float32))
    obj = TickObj(1, 101.25, -5, Side.SELL, 3, 7, [float(v) for v in range(10)])
    as_list = [1, 101.25, -5, 1, 3, 7, [float(v) for v in range(10)]]

    rows = []

    def row(question, ours_name, ours, peers):
        best_name = min(peers, key=peers.get)
        rows.append({"question": question, "unit": "ns/message", "ours": ours_name, "ours_value": ours,
                     "peers": peers, "best_peer": best_name, "best_peer_value": peers[best_name],
                     "ratio_vs_best_peer": peers[best_name] / ours,
                     "ratio_vs_each_peer": {k: v / ours for k, v in peers.items()}})

    n1 = 2000 if quick else 20000
    row("object encode+decode", "Tick.from_bytes(t.to_bytes())",
        median_ns(lambda: Tick.from_bytes(one.to_bytes()), n1, repeats),
        {"pickle dumps+loads (dataclass)": median_ns(lambda: pickle.loads(pickle.dumps(obj, 5)), n1, repeats),
         "msgpack packb+unpackb (list)": median_ns(lambda: msgpack.unpackb(msgpack.packb(as_list)), n1, repeats)})

    n = 10_000
    batch = Tick.to_records([one] * n)
    objs = [obj] * n
    lists = [as_list] * n

    def ours_batch():
        arr = np.frombuffer(batch.tobytes(), Tick.dtype)
        Tick.validate(arr)

    nb = 5 if quick else 30
    row(f"batch of {n} encode+decode", "tobytes + frombuffer + validate",
        median_ns(ours_batch, nb, repeats) / n,
        {"pickle dumps+loads (list of dataclasses)": median_ns(lambda: pickle.loads(pickle.dumps(objs, 5)), 2, repeats) / n,
         "msgpack packb+unpackb (list of lists)": median_ns(lambda: msgpack.unpackb(msgpack.packb(lists)), 2, repeats) / n})

    messages = [one] * n
    to_rec = median_ns(lambda: Tick.to_records(messages), 2, repeats) / n
    from_rec = median_ns(lambda: Tick.from_records(batch), 2, repeats) / n
    rows.append({"question": f"batch conversion, {n} objects", "unit": "ns/message",
                 "to_records": to_rec, "from_records": from_rec})

    return {
        "benchmark": "messages",
        "machine": {"hostname": socket.gethostname(), "cpu": _cpu(), "cores": _cores(),
                    "python": platform.python_version(), "numpy": np.__version__, "msgpack": ".".join(map(str, msgpack.version))},
        "device": "CPU (host)",
        "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "ringkernel_version": rk.__version__,
        "quick": quick,
        "method": f"median of {repeats} timeit samples after one warm-up call",
        "rows": rows,
    }


def _cpu() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _cores() -> int:
    import os
    return os.cpu_count() or 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="fewer, shorter samples")
    ap.add_argument("--out", type=Path, default=RESULTS, help="results folder (default bench/results)")
    args = ap.parse_args()
    result = run(args.quick)
    print(f"{'question':32s} {'ours':>12s}   {'best peer':40s} {'peer':>10s} {'ratio':>7s}")
    for r in result["rows"]:
        if "ours_value" in r:
            print(f"{r['question']:32s} {r['ours_value']:9.0f} ns   {r['best_peer']:40s} "
                  f"{r['best_peer_value']:7.0f} ns {r['ratio_vs_best_peer']:6.2f}x")
        else:
            print(f"{r['question']:32s} to_records {r['to_records']:.0f} ns/msg, from_records {r['from_records']:.0f} ns/msg")
    print(f"({result['method']}; ratio > 1: ringkernel faster)")
    args.out.mkdir(parents=True, exist_ok=True)
    suffix = "-quick" if args.quick else ""
    path = args.out / f"messages-{socket.gethostname()}-{_dt.date.today():%Y%m%d}{suffix}.json"
    path.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
