#!/usr/bin/env python3
"""Actor state and checkpoints (issue 18): what they cost, against the plain alternatives, in one run.

Questions (CPU backend, 64-byte input records):
  1. checkpoint() of a kernel holding N accepted, unprocessed messages (N = 0 … 65536), and restore() of
     it into a fresh kernel, against the floor of copying the same bytes (numpy: the ring's payload bytes
     copied once) -- how the cost grows with the queue;
  2. checkpoint() against the state's size (16 B … 1 MiB), no messages waiting, against bytes(state);
  3. actor_state() of an active kernel (pause, copy, resume) while a sender keeps it busy: p50 / p99;
  4. the round trip of a Python handler with state (f(msg, state), one state update per message) against
     the same handler without state, on one kernel: what the state argument costs per message.
Method: median of several samples after three warm-up calls. Usage: python bench/bench_actor.py [--quick] [--plot]
Writes bench/results/actor-<hostname>-<YYYYMMDD>.json (and a plot of question 1 with --plot, matplotlib).
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import socket
import statistics
import threading
import time
from pathlib import Path

import numpy as np

import ringkernel as rk
from ringkernel.bench.measure import machine_info, percentiles

RESULTS = Path(__file__).resolve().parent / "results"
REC = np.dtype([("seq", "<u8"), ("value", "<f8"), ("pad", "<u8", (6,))])  # 64 bytes
ACC = np.dtype([("count", "<u8"), ("total", "<f8")])


def timed(fn, repeats: int) -> float:
    for _ in range(3):  # warm: first calls fault in fresh pages
        fn()
    samples = []
    for _ in range(repeats):
        t0 = time.perf_counter_ns()
        fn()
        samples.append(time.perf_counter_ns() - t0)
    return float(statistics.median(samples))


def checkpoint_vs_queue(repeats: int, sizes: list) -> list:
    rows = []
    with rk.Runtime("cpu") as rt:
        for n in sizes:
            cap = max(16, 1 << max(n - 1, 1).bit_length())
            opts = rk.LaunchOptions(queue_capacity=cap, dedup_window=0)
            k = rt.launch(f"ck{n}", "echo", input=REC, state=ACC, options=opts)  # never activated: all wait
            arr = np.zeros(n, REC)
            arr["seq"] = np.arange(n)
            assert k.send_batch(arr) == n
            blob = k.checkpoint()
            ck = timed(k.checkpoint, repeats)

            def restore_once():
                k2 = rt.launch("restore_target", "echo", input=REC, state=ACC, options=opts)
                k2.restore(blob)
                k2.terminate()

            # A launch + terminate of the target is part of each sample: measure it alone and subtract it.
            def launch_only():
                rt.launch("restore_target", "echo", input=REC, state=ACC, options=opts).terminate()

            rs = max(timed(restore_once, repeats) - timed(launch_only, repeats), 1.0)
            floor = timed(lambda: arr.tobytes(), repeats)
            rows.append({"messages": n, "bytes": len(blob), "checkpoint_ns": ck, "restore_ns": rs,
                         "memcpy_floor_ns": floor, "checkpoint_vs_floor": ck / max(floor, 1.0)})
            k.terminate()
    return rows


def checkpoint_vs_state(repeats: int, sizes: list) -> list:
    rows = []
    with rk.Runtime("cpu") as rt:
        for size in sizes:
            st = np.dtype([("b", "<u1", (size,))])
            k = rt.launch(f"st{size}", "echo", input=REC, state=st)
            raw = np.zeros(size, np.uint8)
            ck = timed(k.checkpoint, repeats)
            floor = timed(lambda: raw.tobytes(), repeats)
            rows.append({"state_bytes": size, "checkpoint_ns": ck, "copy_floor_ns": floor,
                         "checkpoint_vs_floor": ck / max(floor, 1.0)})
            k.terminate()
    return rows


def pause_while_busy(samples: int) -> dict:
    with rk.Runtime("cpu") as rt:
        k = rt.launch("busy", lambda m, s: m, input=REC, state=ACC,
                      options=rk.LaunchOptions(queue_capacity=1024, dedup_window=0))
        k.activate()
        stop = threading.Event()
        one = np.zeros(64, REC)

        def pump():
            while not stop.is_set():
                k.send_batch(one, timeout=0.01)
                k.receive_batch(256, timeout=0)

        t = threading.Thread(target=pump)
        t.start()
        times = []
        try:
            time.sleep(0.05)
            for _ in range(samples):
                t0 = time.perf_counter_ns()
                k.actor_state()
                times.append(time.perf_counter_ns() - t0)
        finally:
            stop.set()
            t.join()
        return {"samples": samples, **percentiles(times)}


def round_trip(repeats: int, n: int) -> dict:
    def stateless(msg):
        return msg

    def stateful(msg, state):
        state["count"] += 1
        return msg

    out = {}
    with rk.Runtime("cpu") as rt:
        for name, fn, state in (("stateless", stateless, None), ("stateful", stateful, ACC)):
            k = rt.launch(name, fn, input=REC, state=state)
            k.activate()
            msg = np.zeros((), REC)[()]

            def trips():
                for _ in range(n):
                    k.send(msg)
                    k.receive()
            out[name] = timed(trips, repeats) / n
            k.terminate()
    out["ratio"] = out["stateful"] / out["stateless"]
    return out


def run(quick: bool) -> dict:
    repeats = 3 if quick else 7
    sizes = [0, 256, 4096, 16384] if quick else [0, 256, 1024, 4096, 16384, 65536]
    states = [16, 4096, 65536] if quick else [16, 4096, 65536, 1 << 20]
    return {"benchmark": "actor", "machine": machine_info(), "device": "CPU (host)",
            "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            "ringkernel": rk.__version__,
            "checkpoint_vs_queue": checkpoint_vs_queue(repeats, sizes),
            "checkpoint_vs_state": checkpoint_vs_state(repeats, states),
            "pause_while_busy": pause_while_busy(50 if quick else 300),
            "round_trip": round_trip(repeats, 500 if quick else 3000),
            "method": "median of samples after a warm-up; perf_counter_ns; one process, this machine"}


def print_table(r: dict) -> None:
    print("checkpoint / restore vs messages waiting (64-byte records)")
    print(f"{'messages':>9} {'blob':>10} {'checkpoint':>12} {'restore':>12} {'memcpy':>10} {'ratio':>7}")
    for row in r["checkpoint_vs_queue"]:
        print(f"{row['messages']:>9} {row['bytes']:>10} {row['checkpoint_ns'] / 1e3:>10.1f}us "
              f"{row['restore_ns'] / 1e3:>10.1f}us {row['memcpy_floor_ns'] / 1e3:>8.1f}us "
              f"{row['checkpoint_vs_floor']:>6.1f}x")
    print("checkpoint vs state size (no messages)")
    for row in r["checkpoint_vs_state"]:
        print(f"{row['state_bytes']:>9} B {row['checkpoint_ns'] / 1e3:>10.1f}us  copy {row['copy_floor_ns'] / 1e3:.1f}us "
              f"({row['checkpoint_vs_floor']:.1f}x)")
    p = r["pause_while_busy"]
    print(f"actor_state() of a busy kernel: p50 {p['p50_ns'] / 1e3:.1f}us  p99 {p['p99_ns'] / 1e3:.1f}us")
    t = r["round_trip"]
    print(f"round trip, Python handler: stateless {t['stateless'] / 1e3:.2f}us  with state {t['stateful'] / 1e3:.2f}us "
          f"({t['ratio']:.2f}x)")


def plot(r: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [x for x in r["checkpoint_vs_queue"] if x["messages"] > 0]
    xs = [x["messages"] for x in rows]
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.loglog(xs, [x["checkpoint_ns"] / 1e3 for x in rows], "o-", label="checkpoint()")
    ax.loglog(xs, [x["restore_ns"] / 1e3 for x in rows], "s-", label="restore()")
    ax.loglog(xs, [x["memcpy_floor_ns"] / 1e3 for x in rows], "^--", label="copying the payload bytes once")
    ax.set_xlabel("messages waiting (64-byte records)")
    ax.set_ylabel("µs")
    ax.set_title(f"checkpoint cost vs queue ({r['machine']['hostname']}, {r['date'][:10]})")
    ax.legend()
    ax.grid(True, which="both", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="fewer, shorter samples")
    ap.add_argument("--plot", action="store_true", help="also write a plot of checkpoint cost against the queue")
    ap.add_argument("--out", type=Path, default=RESULTS, help="results folder (default bench/results)")
    args = ap.parse_args()
    result = run(args.quick)
    print_table(result)
    args.out.mkdir(parents=True, exist_ok=True)
    stem = f"actor-{socket.gethostname()}-{_dt.date.today():%Y%m%d}{'-quick' if args.quick else ''}"
    path = args.out / f"{stem}.json"
    path.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {path}")
    if args.plot:
        plot(result, args.out / f"{stem}.png")
        print(f"wrote {args.out / (stem + '.png')}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
