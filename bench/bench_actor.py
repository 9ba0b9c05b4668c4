#!/usr/bin/env python3
"""Actor state and checkpoints (issue 18): what they cost, against the plain alternatives, in one run.

Questions (CPU backend, 64-byte input records):
  1. checkpoint() of a kernel holding N accepted, unprocessed messages (N = 0 … 65536), and restore() of
     it into a fresh kernel, against the floor of copying the same bytes (numpy: the ring's payload bytes
     copied once) -- how the cost grows with the queue;
  2. checkpoint() against the state's size (16 B … 1 MiB), no messages waiting, against bytes(state);
  3. actor_state() of an active kernel (pause, copy, resume) while a sender keeps it busy: p50 / p99;
  4. the round trip of a Python handler with state (f(msg, state), one state update per message) against
     the same handler without state, on one kernel: what the state argument costs per message;
  5. supervision: the round trip of a message whose first delivery faults the kernel (fault, restart of the
     block, redelivery, reply) against a plain round trip on the same kernel, p50 / p99, for rk_fault() and
     a trap (SIGSEGV) in an rk.Source handler and rk.KernelFault from Python -- and how it grows with the
     messages waiting behind the fault; how far past handler_timeout the watchdog notices a hung handler; the
     same faulting round trip on OpenCL (where it runs), whose blocks hand the fault to the host's supervisor;
  6. what supervision costs when nothing fails: round trip and batch throughput of one kernel with a
     RestartPolicy and a handler_timeout against the same kernel without them.
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

            # None where the difference drowns in the launch's own noise (small queues on this machine).
            rs = timed(restore_once, repeats) - timed(launch_only, repeats)
            rs = rs if rs > 0 else None
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


# rk.Source echo whose message faults on its first delivery when value < 0 (value -1: rk_fault(), -2: a
# trap); the kernel's state remembers the last seq that faulted, so the redelivery succeeds.
FAULT_ONCE = r"""
typedef struct { rk_u64 seq; rk_f64 value; rk_u64 pad[6]; } rec;
typedef struct { rk_u64 count; rk_f64 last; } acc;
int fault_once(rk_ctx *ctx, RK_GLOBAL const void *in, RK_LOCAL void *out) {
    RK_GLOBAL const rec *r = (RK_GLOBAL const rec *)in;
    RK_GLOBAL acc *s = (RK_GLOBAL acc *)rk_state(ctx);
    if (r->value < 0 && s->count != r->seq + 1) {
        s->count = r->seq + 1;
        if (r->value < -1.5) *(volatile int *)0 = 1;
        return rk_fault(ctx);
    }
    RK_LOCAL rec *o = (RK_LOCAL rec *)out;
    *o = *r;
    return RK_REPLY;
}
"""
POLICY = rk.RestartPolicy(max_restarts=1_000_000, within=1.0, max_attempts=2)


def faulting_vs_plain(k, value: float, samples: int, warm: int) -> dict:
    """Alternate a plain round trip and one whose message (value < 0) faults its first delivery, on a kernel of
    FAULT_ONCE-like handlers under POLICY: p50/p99 of each and the restart's share (every faulting message
    restarted the kernel once and was answered: checked)."""
    plain, faulting = [], []
    m = np.zeros((), REC)
    for i in range(samples + warm):
        for bad, times in ((False, plain), (True, faulting)):
            m["seq"] = 2 * i + bad
            m["value"] = value if bad else 0.0
            t0 = time.perf_counter_ns()
            k.send(m[()])
            r = k.receive(timeout=5)
            t = time.perf_counter_ns() - t0
            assert r is not None and int(r["seq"]) == 2 * i + bad
            if i >= warm:
                times.append(t)
    assert k.restarts == samples + warm and not k.dead_letters()
    return {"plain": percentiles(plain), "faulting": percentiles(faulting),
            "restart_p50_ns": float(np.percentile(faulting, 50) - np.percentile(plain, 50))}


def restart_times(samples: int, backlogs: list) -> dict:
    """p50/p99 of a faulting round trip against a plain one, per kind of fault and per backlog."""
    def py_fault_once():
        seen = set()

        def handler(m, state):
            if m["value"] < 0 and int(m["seq"]) not in seen:
                seen.add(int(m["seq"]))
                raise rk.KernelFault("once")
            return m
        return handler

    kinds = {"rk_fault (rk.Source)": (lambda: rk.Source(FAULT_ONCE, entry="fault_once"), -1.0),
             "trap SIGSEGV (rk.Source)": (lambda: rk.Source(FAULT_ONCE, entry="fault_once"), -2.0),
             "rk.KernelFault (Python)": (py_fault_once, -1.0)}
    out = {"kinds": [], "backlog": []}
    with rk.Runtime("cpu") as rt:
        for name, (make, value) in kinds.items():
            k = rt.launch("r", make(), input=REC, state=ACC, restart=POLICY,
                          options=rk.LaunchOptions(dedup_window=0))
            k.activate()
            out["kinds"].append({"fault": name, **faulting_vs_plain(k, value, samples, warm=20)})
            k.terminate()
        # A fault with N messages waiting behind it: the time until the faulted message's reply (it is
        # redelivered first), against the same batch without a fault.
        for n in backlogs:
            k = rt.launch("b", rk.Source(FAULT_ONCE, entry="fault_once"), input=REC, state=ACC, restart=POLICY,
                          options=rk.LaunchOptions(queue_capacity=max(64, 1 << n.bit_length()), dedup_window=0))
            times = {False: [], True: []}
            for rep in range(max(6, samples // 10)):
                for bad in (False, True):  # alternating, so that both see the same noise
                    if k.state == rk.KernelState.ACTIVE:
                        k.deactivate()
                    arr = np.zeros(n + 1, REC)
                    arr["seq"] = np.arange(n + 1) + (rep * 2 + bad) * (n + 1)
                    arr["value"][0] = -1.0 if bad else 0.0
                    assert k.send_batch(arr) == n + 1
                    t0 = time.perf_counter_ns()
                    k.activate()
                    first = k.receive(timeout=5)
                    times[bad].append(time.perf_counter_ns() - t0)
                    assert first is not None and int(first["seq"]) == arr["seq"][0]
                    got = 1
                    while got < n + 1:
                        got += len(k.receive_batch(4096, timeout=5))
            rows = {"plain": percentiles(times[False]), "faulting": percentiles(times[True])}
            out["backlog"].append({"waiting": n, **rows})
            k.terminate()
        # The watchdog: a handler hung well past handler_timeout; the time from the hung message's send to
        # the next message's reply, minus the timeout.
        timeout = 0.02

        def sleepy(m):
            if m["value"] < 0:
                time.sleep(0.2)
                return None
            return m

        k = rt.launch("w", sleepy, input=REC, options=rk.LaunchOptions(handler_timeout=timeout, dedup_window=0))
        k.activate()
        late = []
        m = np.zeros((), REC)
        for i in range(max(10, samples // 10)):
            m["seq"], m["value"] = 2 * i, -1.0
            t0 = time.perf_counter_ns()
            k.send(m[()])
            m["seq"], m["value"] = 2 * i + 1, 0.0
            k.send(m[()])
            r = k.receive(timeout=5)
            late.append(time.perf_counter_ns() - t0 - timeout * 1e9)
            assert r is not None and int(r["seq"]) == 2 * i + 1
        out["watchdog"] = {"handler_timeout_s": timeout, "past_timeout": percentiles(late),
                           "abandoned": k.abandoned_workers}
        k.terminate()
    return out


def device_restart_times(samples: int) -> list:
    """The faulting round trip against a plain one on each device backend that restarts kernels and runs here
    (opencl through PoCL on this machine): the block hands the fault to the host's supervisor, which decides
    and redelivers through the kernel's first input."""
    rows = []
    for b in rk.backends():
        if b.name not in ("opencl", "cuda") or not b.available:
            continue
        with rk.Runtime(b.name) as rt:
            k = rt.launch("r", rk.Source(FAULT_ONCE, entry="fault_once"), input=REC, state=ACC, restart=POLICY,
                          options=rk.LaunchOptions(dedup_window=0))
            k.activate()
            rows.append({"backend": b.name, "device": b.detail, **faulting_vs_plain(k, -1.0, samples, warm=10)})
            k.terminate()
    return rows


def supervision_overhead(rounds: int, n: int, batch: int) -> dict:
    """One kernel (rk.Source echo) with and without RestartPolicy + handler_timeout, measured in alternating
    rounds (this machine's noise hits both alike), one kernel alive at a time (its worker alone with the
    sender): per round the p50 of n round trips and the rate of 8 batches; then the median over rounds. Under a
    watchdog (handler_timeout) a kernel takes runs of one message (so that the watchdog takes over exactly one
    message in flight): its batch throughput shows that cost; a RestartPolicy alone keeps full runs."""
    variants = (("plain", rk.LaunchOptions(dedup_window=0), None),
                ("restart_policy", rk.LaunchOptions(dedup_window=0), POLICY),
                ("policy_and_watchdog", rk.LaunchOptions(dedup_window=0, handler_timeout=1.0), POLICY))
    trips = {name: [] for name, _, _ in variants}
    rates = {name: [] for name, _, _ in variants}
    msg = np.zeros((), REC)[()]
    arr = np.zeros(batch, REC)
    clock = time.perf_counter_ns
    with rk.Runtime("cpu") as rt:
        for r in range(rounds + 1):  # the first round warms up
            for name, opts, policy in (variants if r % 2 else variants[::-1]):  # no kernel always goes first
                k = rt.launch(name, rk.Source(FAULT_ONCE, entry="fault_once"), input=REC, state=ACC, options=opts,
                              restart=policy)
                k.activate()
                samples = np.zeros(n, np.int64)
                for i in range(200):
                    k.send(msg)
                    k.receive()
                for i in range(n):
                    t0 = clock()
                    k.send(msg)
                    k.receive()
                    samples[i] = clock() - t0
                t0 = clock()
                for _ in range(8):
                    k.send_batch(arr)
                    got = 0
                    while got < batch:
                        got += len(k.receive_batch(batch, timeout=5))
                rate = 8 * batch / ((clock() - t0) / 1e9)
                k.terminate()
                if r:
                    trips[name].append(float(np.percentile(samples, 50)))
                    rates[name].append(rate)
    rows = {name: {"round_trip_ns": float(np.median(trips[name])), "batch_msgs_per_s": float(np.median(rates[name])),
                   "round_trip_p50_per_round_ns": trips[name]} for name in trips}
    for name in ("restart_policy", "policy_and_watchdog"):
        rows[name]["round_trip_ratio"] = rows[name]["round_trip_ns"] / rows["plain"]["round_trip_ns"]
        rows[name]["throughput_ratio"] = rows[name]["batch_msgs_per_s"] / rows["plain"]["batch_msgs_per_s"]
    rows["batch"] = batch
    rows["rounds"] = rounds
    return rows


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
            "restart": restart_times(100 if quick else 1000, [0, 1024, 16384] if quick else [0, 256, 4096, 16384, 60000]),
            "device_restart": device_restart_times(50 if quick else 300),
            "supervision_overhead": supervision_overhead(5 if quick else 21, 1000 if quick else 3000, 4096),
            "method": "median of samples after a warm-up; perf_counter_ns; one process, this machine"}


def print_table(r: dict) -> None:
    print("checkpoint / restore vs messages waiting (64-byte records)")
    print(f"{'messages':>9} {'blob':>10} {'checkpoint':>12} {'restore':>12} {'memcpy':>10} {'ratio':>7}")
    for row in r["checkpoint_vs_queue"]:
        print(f"{row['messages']:>9} {row['bytes']:>10} {row['checkpoint_ns'] / 1e3:>10.1f}us "
              f"{'(noise)' if row['restore_ns'] is None else format(row['restore_ns'] / 1e3, '.1f') + 'us':>12} "
              f"{row['memcpy_floor_ns'] / 1e3:>8.1f}us "
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
    print("a message that faults its first delivery: round trip vs a plain one (restart + redelivery)")
    for row in r["restart"]["kinds"]:
        print(f"  {row['fault']:<26} plain p50 {row['plain']['p50_ns'] / 1e3:7.1f}us  faulting p50 "
              f"{row['faulting']['p50_ns'] / 1e3:7.1f}us p99 {row['faulting']['p99_ns'] / 1e3:7.1f}us  "
              f"(restart ~{row['restart_p50_ns'] / 1e3:.1f}us)")
    print("  time to the first reply with N messages waiting behind it (p50)")
    for row in r["restart"]["backlog"]:
        print(f"  {row['waiting']:>7} waiting: plain {row['plain']['p50_ns'] / 1e3:8.1f}us  faulting "
              f"{row['faulting']['p50_ns'] / 1e3:8.1f}us")
    w = r["restart"]["watchdog"]
    print(f"  watchdog, handler_timeout {w['handler_timeout_s'] * 1e3:.0f} ms: next reply p50 "
          f"{w['past_timeout']['p50_ns'] / 1e3:.0f}us p99 {w['past_timeout']['p99_ns'] / 1e3:.0f}us past the timeout")
    for row in r["device_restart"]:
        print(f"  rk_fault on {row['backend']:<8} (supervisor on the host) plain p50 {row['plain']['p50_ns'] / 1e3:7.1f}us  "
              f"faulting p50 {row['faulting']['p50_ns'] / 1e3:7.1f}us p99 {row['faulting']['p99_ns'] / 1e3:7.1f}us  "
              f"(restart ~{row['restart_p50_ns'] / 1e3:.1f}us)")
    o = r["supervision_overhead"]
    print(f"supervision when nothing fails (rk.Source echo; round trip p50, batches of {o['batch']}):")
    print(f"  {'plain':<20} {o['plain']['round_trip_ns'] / 1e3:6.2f}us  {o['plain']['batch_msgs_per_s'] / 1e6:6.2f} M msg/s")
    for name in ("restart_policy", "policy_and_watchdog"):
        v = o[name]
        print(f"  {name:<20} {v['round_trip_ns'] / 1e3:6.2f}us ({v['round_trip_ratio']:.3f}x)  "
              f"{v['batch_msgs_per_s'] / 1e6:6.2f} M msg/s ({v['throughput_ratio']:.2f}x)")


def plot(r: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [x for x in r["checkpoint_vs_queue"] if x["messages"] > 0]
    xs = [x["messages"] for x in rows]
    fig, (ax, bx) = plt.subplots(1, 2, figsize=(11, 4))
    ax.loglog(xs, [x["checkpoint_ns"] / 1e3 for x in rows], "o-", label="checkpoint()")
    rs = [x for x in rows if x["restore_ns"] is not None]
    ax.loglog([x["messages"] for x in rs], [x["restore_ns"] / 1e3 for x in rs], "s-",
              label="restore() (less a launch; dropped where within its noise)")
    ax.loglog(xs, [x["memcpy_floor_ns"] / 1e3 for x in rows], "^--", label="copying the payload bytes once")
    ax.set_xlabel("messages waiting (64-byte records)")
    ax.set_ylabel("µs")
    ax.set_title(f"checkpoint cost vs queue ({r['machine']['hostname']}, {r['date'][:10]})")
    ax.legend()
    ax.grid(True, which="both", alpha=0.3)
    back = [x for x in r["restart"]["backlog"] if x["waiting"] > 0]
    ws = [x["waiting"] for x in back]
    for key, style, label in (("plain", "o-", "no fault"), ("faulting", "s-", "first message faults (restart)")):
        bx.loglog(ws, [x[key]["p50_ns"] / 1e3 for x in back], style, label=f"{label}, p50")
        bx.loglog(ws, [x[key]["p99_ns"] / 1e3 for x in back], style.replace("-", ":"), alpha=0.6,
                  label=f"{label}, p99")
    bx.set_xlabel("messages waiting behind the first")
    bx.set_ylabel("µs from activate() to the first reply")
    bx.set_title("restart (rk_fault, RestartPolicy) vs backlog")
    bx.legend(fontsize=8)
    bx.grid(True, which="both", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="fewer, shorter samples")
    ap.add_argument("--plot", action="store_true", help="also write plots of checkpoint and restart cost against the queue")
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
