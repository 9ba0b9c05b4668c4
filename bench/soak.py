#!/usr/bin/env python3
"""Soak: run a ring-kernel pipeline and a raw queue at full speed for a chosen time (not in CI).

    python3 bench/soak.py --duration 60 [--backend cpu] [--interval 5] [--adversarial] [--out bench/results]

Two workloads run side by side for ``--duration`` seconds, each with its own producer and consumer
thread, flat out:

- pipeline: a producer thread sends batches of 64-byte records into ``stage1`` (built-in echo,
  ``--grid`` blocks), whose replies feed ``stage2`` (echo, 1 block) over a kernel-to-kernel ring;
  a consumer thread receives stage2's replies. BLOCK backpressure: nothing may be lost.
- queue: a producer thread ``send_batch``es into an ``rk.Queue`` (BLOCK), a consumer thread
  ``receive_batch``es from it.

Every ``--interval`` seconds the script samples the messages each workload delivered since the last
sample (throughput), the process's resident memory (VmRSS in /proc/self/status) and its thread
count. At the end it stops the producers, drains, checks the accounting (every message sent was
received exactly once, kernel errors and drops are zero, queue statistics balance), terminates the
kernels, prints a table and writes ``soak-<hostname>-<YYYYMMDD>.json`` to ``--out``: machine,
backend, date, configuration, the samples, throughput mean/min/max/coefficient of variation per
workload, and RSS growth (first sample to last, and per minute after the first interval, which
absorbs allocator and cache warm-up).

``--adversarial`` adds a third thread that runs the holes an adversarial run found (issue 15) one after the
other on a runtime of its own, each checked: a kernel per job (distinct names), close() racing a terminate
of a kernel whose handler does not return, a handler terminating its own kernel, kernel-side drops in the
queue counters, a native handler's SIGSEGV faulting its kernel (CPU), a foreign buffer handle refused. The
JSON (``soak-adversarial-...``) counts each case; memory must stay flat across them.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import statistics
import sys
import threading
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_python import machine_info  # noqa: E402

import ringkernel as rk  # noqa: E402

RECORD = np.dtype([("seq", "<u8"), ("values", "<f8", (7,))])
assert RECORD.itemsize == 64


def proc_status() -> dict:
    """VmRSS (KiB) and thread count of this process, from /proc/self/status."""
    out = {"rss_kib": 0, "threads": 0}
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                out["rss_kib"] = int(line.split()[1])
            elif line.startswith("Threads:"):
                out["threads"] = int(line.split()[1])
    return out


class Stream:
    """One workload: a producer and a consumer thread, and what they counted."""

    def __init__(self, name: str, send_batch, receive_batch, batch: int):
        self.name = name
        self._send_batch, self._receive_batch = send_batch, receive_batch
        self.batch = batch
        self.sent = 0
        self.received = 0
        self.checksum_sent = 0      # sum of the seqs sent, to compare with what came back
        self.checksum_received = 0
        self.error: BaseException | None = None
        self._stop = threading.Event()
        self._drained = threading.Event()
        self._producer = threading.Thread(target=self._guard(self._produce), name=f"{name}-producer", daemon=True)
        self._consumer = threading.Thread(target=self._guard(self._consume), name=f"{name}-consumer", daemon=True)

    def _guard(self, fn):
        def body():
            try:
                fn()
            except BaseException as e:  # noqa: BLE001 - reported at the end
                self.error = e
                self._stop.set()
        return body

    def _produce(self) -> None:
        records = np.zeros(self.batch, RECORD)
        base = np.arange(self.batch, dtype=np.uint64)
        seq = 0
        while not self._stop.is_set():
            records["seq"] = base + np.uint64(seq)
            n = self._send_batch(records, timeout=0.5)
            if n:
                self.checksum_sent += int(records["seq"][:n].sum(dtype=np.uint64))
                self.sent += n
                if n < self.batch:  # timed out part way (BLOCK): send the rest next time round
                    seq += n
                    continue
            seq += self.batch

    def _consume(self) -> None:
        while True:
            got = self._receive_batch(4 * self.batch, timeout=0.05)
            if len(got):
                self.checksum_received += int(got["seq"].sum(dtype=np.uint64))
                self.received += len(got)
            elif self._drained.is_set() and self.received >= self.sent:
                return

    def start(self) -> None:
        self._consumer.start()
        self._producer.start()

    def stop(self, timeout: float = 30.0) -> bool:
        """Stop producing, wait until everything sent has been received. True when it all arrived."""
        self._stop.set()
        self._producer.join(timeout)
        deadline = time.monotonic() + timeout
        while self.received < self.sent and time.monotonic() < deadline and self.error is None:
            time.sleep(0.01)
        self._drained.set()
        self._consumer.join(max(0.0, deadline - time.monotonic()))
        return self.received == self.sent and not self._producer.is_alive() and not self._consumer.is_alive()


# ---- --adversarial: the holes of issue 15, one after the other, beside the full-speed workloads ----------

PAIR = np.dtype([("seq", "<u8"), ("value", "<f8")])
NULL_WRITE = """typedef struct { rk_u64 seq; rk_f64 value; } rec;
int bad(rk_ctx *ctx, RK_GLOBAL const void *in, RK_LOCAL void *out) { *(volatile int *)0 = 1; return RK_REPLY; }"""


def _pair(seq: int):
    a = np.zeros((), PAIR)
    a["seq"] = seq
    return a[()]


def _until(cond, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.002)
    return True


def case_job_per_kernel(rt, n: int) -> None:
    k = rt.launch(f"job{n}", "echo", input=PAIR)  # a distinct name each time: nothing may pile up
    k.activate()
    k.send(_pair(n))
    assert k.receive(timeout=5)["seq"] == n
    assert k.terminate() == rk.KernelState.TERMINATED


def case_close_racing_terminate(rt, n: int) -> None:
    release = threading.Event()
    own = rk.Runtime(rt.backend)
    slow = own.launch("slow", lambda m: (release.wait(5), m)[1], input=PAIR)
    other = own.launch("other", "echo", input=PAIR)
    slow.activate()
    other.activate()
    slow.send(_pair(n))
    assert _until(lambda: slow.input.stats.received == 1)
    seen = []
    t = threading.Thread(target=lambda: seen.append(slow.terminate(timeout=2)))
    t.start()
    own.close(0.1)
    t.join(10)
    release.set()
    assert seen == [rk.KernelState.FAULTED] and other.state == rk.KernelState.TERMINATED


def case_self_terminate(rt, n: int) -> None:
    box: dict = {}
    k = rt.launch(f"selfie{n}", lambda m: (box["k"].terminate(timeout=2), m)[1], input=PAIR)
    box["k"] = k
    k.activate()
    k.send(_pair(n))
    assert k.receive(timeout=5)["seq"] == n
    assert _until(lambda: k.state == rk.KernelState.TERMINATED)


def case_kernel_drops_are_counted(rt, n: int) -> None:
    opts = rk.LaunchOptions(queue_capacity=16, dedup_window=0, backpressure=rk.Backpressure.REJECT)
    k = rt.launch(f"reject{n}", "echo", input=PAIR, options=opts)
    k.activate()
    for i in range(200):  # one at a time: the input (REJECT too) never refuses one
        assert k.send(_pair(i))
        assert _until(lambda: k.messages_processed == i + 1)
    assert _until(lambda: k.output.stats.sent + k.output.stats.rejected == 200)
    got = len(k.receive_batch(64, timeout=0.1))
    out = k.output.stats
    assert out.rejected == k.messages_dropped == 200 - got
    k.terminate()


def case_native_fault(rt, n: int) -> None:
    k = rt.launch(f"fault{n}", rk.Source(NULL_WRITE, entry="bad"), input=PAIR)
    k.activate()
    k.send(_pair(n))
    assert _until(lambda: k.state == rk.KernelState.FAULTED) and "SIGSEGV" in k.fault
    assert k.terminate() == rk.KernelState.FAULTED


def case_foreign_buffer(rt, n: int) -> None:
    from ringkernel.builtins import VectorAddRequest, VectorAddResponse, VectorOp

    with rk.Runtime("cpu") as other:
        foreign = other.buffer(np.ones(64, np.float32))
        mine = rt.buffer(np.ones(64, np.float32))
        k = rt.launch(f"add{n}", "vector_add", input=VectorAddRequest, output=VectorAddResponse)
        k.activate()
        k.send(VectorAddRequest(op=VectorOp.ADD, length=64, a_buf=mine.handle, b_buf=mine.handle,
                                out_buf=foreign.handle))
        assert k.receive(timeout=5).status == rk._core.ERR_BUFFER
        k.terminate()
        mine.release()


CASES = [case_job_per_kernel, case_close_racing_terminate, case_self_terminate, case_kernel_drops_are_counted,
         case_native_fault, case_foreign_buffer]


class Churn:
    """The adversarial cases in a loop on a runtime of their own, counted; the first failure stops it."""

    def __init__(self, backend: str):
        self.rt = rk.Runtime(backend)
        self.runs = {c.__name__: 0 for c in CASES}
        self.error: BaseException | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="churn", daemon=True)

    def _loop(self) -> None:
        import warnings

        warnings.simplefilter("ignore", RuntimeWarning)  # FAULTED kernels are announced; here they are meant
        n = 0
        try:
            while not self._stop.is_set():
                case = CASES[n % len(CASES)]
                if case is not case_native_fault or self.rt.backend == "cpu":
                    case(self.rt, n)
                    self.runs[case.__name__] += 1
                n += 1
        except BaseException as e:  # noqa: BLE001 - reported at the end
            self.error = e

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> dict:
        self._stop.set()
        self._thread.join(60)
        live = len(self.rt.kernels())
        self.rt.close()
        return {"runs": self.runs, "total": sum(self.runs.values()), "live_kernels_at_end": live,
                "error": f"{type(self.error).__name__}: {self.error}" if self.error else None}


def summarize(rates: list[float]) -> dict:
    if not rates:
        return {}
    mean = statistics.fmean(rates)
    return {"mean_msgs_per_s": mean, "min_msgs_per_s": min(rates), "max_msgs_per_s": max(rates),
            "cv": statistics.pstdev(rates) / mean if mean else None}


def run(duration: float, backend: str, interval: float, grid: int, batch: int, capacity: int,
        adversarial: bool = False) -> dict:
    t_start = time.monotonic()
    started = _dt.datetime.now(_dt.timezone.utc)
    opts = rk.LaunchOptions(queue_capacity=capacity, dedup_window=0, backpressure=rk.Backpressure.BLOCK)
    rt = rk.Runtime(backend)
    info = {b.name: b for b in rk.backends()}
    device = ("CPU backend (host worker threads); no GPU involved" if rt.backend == "cpu"
              else f"{rt.backend}: {info[rt.backend].detail}")
    stage1 = rt.launch("stage1", "echo", input=RECORD, grid=grid, options=opts)
    stage2 = rt.launch("stage2", "echo", input=RECORD, grid=1, options=opts)
    rt.connect(stage1, stage2)
    for k in (stage1, stage2):
        k.enable_telemetry()
        k.activate()
    queue = rk.Queue(RECORD, capacity=capacity, backpressure=rk.Backpressure.BLOCK)
    streams = [Stream("pipeline", stage1.send_batch, stage2.receive_batch, batch),
               Stream("queue", queue.send_batch, queue.receive_batch, batch)]

    samples = []
    first = proc_status()
    print(f"soak: {duration:g} s on {rt.backend} ({device}), sampling every {interval:g} s; "
          f"pipeline stage1(grid={grid}) -> stage2, batches of {batch}, rings of {capacity}", flush=True)
    header = f"{'t (s)':>7} {'pipeline msg/s':>15} {'queue msg/s':>13} {'RSS (MiB)':>10} {'threads':>8}"
    print(header)
    print("-" * len(header), flush=True)
    churn = Churn(rt.backend) if adversarial else None
    for s in streams:
        s.start()
    if churn:
        churn.start()
    last_t = time.monotonic()
    last = [0, 0]
    t0 = last_t
    while True:
        now = time.monotonic()
        left = t0 + duration - now
        if left <= 1e-3 or any(s.error for s in streams) or (churn and churn.error):
            break
        time.sleep(min(interval, left))
        now = time.monotonic()
        dt = now - last_t
        counts = [s.received for s in streams]
        st = proc_status()
        sample = {"t_s": round(now - t0, 3), "dt_s": round(dt, 4),
                  "pipeline_msgs_per_s": (counts[0] - last[0]) / dt, "queue_msgs_per_s": (counts[1] - last[1]) / dt,
                  "rss_kib": st["rss_kib"], "threads": st["threads"]}
        samples.append(sample)
        print(f"{sample['t_s']:7.1f} {sample['pipeline_msgs_per_s']:15,.0f} {sample['queue_msgs_per_s']:13,.0f} "
              f"{st['rss_kib'] / 1024:10.1f} {st['threads']:8d}", flush=True)
        last_t, last = now, counts

    drained = [s.stop() for s in streams]
    churned = churn.stop() if churn else None
    tel = {k.name: k.telemetry().as_dict() for k in (stage1, stage2)}
    checks = {
        "pipeline_all_received": drained[0],
        "pipeline_checksum_ok": streams[0].checksum_sent == streams[0].checksum_received,
        "queue_all_received": drained[1],
        "queue_checksum_ok": streams[1].checksum_sent == streams[1].checksum_received,
        "kernel_errors": stage1.errors + stage2.errors,
        "kernel_messages_dropped": stage1.messages_dropped + stage2.messages_dropped,
        "stage1_processed": stage1.messages_processed,
        "stage2_processed": stage2.messages_processed,
        "telemetry_processed": {name: t["messages_processed"] for name, t in tel.items()},
        "queue_stats": queue.stats.as_dict(),
        "thread_errors": [f"{s.name}: {type(s.error).__name__}: {s.error}" for s in streams if s.error],
    }
    qs = queue.stats
    checks["ok"] = bool(
        all(drained) and checks["pipeline_checksum_ok"] and checks["queue_checksum_ok"]
        and checks["kernel_errors"] == 0 and checks["kernel_messages_dropped"] == 0
        and stage1.messages_processed == stage2.messages_processed == streams[0].sent
        and qs.sent == qs.received == streams[1].sent and not checks["thread_errors"]
        and (churned is None or (churned["error"] is None and churned["live_kernels_at_end"] == 0)))
    if churned is not None:
        checks["adversarial"] = churned
    t_term = time.monotonic()
    states = [k.terminate(timeout=5.0).name for k in (stage1, stage2)]
    checks["terminate_s"] = round(time.monotonic() - t_term, 3)
    checks["terminate_states"] = states
    rt.close()
    end = proc_status()

    def rss_growth() -> dict:
        if not samples:
            return {}
        out = {"start_kib": first["rss_kib"], "first_sample_kib": samples[0]["rss_kib"],
               "last_sample_kib": samples[-1]["rss_kib"], "after_close_kib": end["rss_kib"],
               "growth_kib": samples[-1]["rss_kib"] - samples[0]["rss_kib"]}
        span_min = (samples[-1]["t_s"] - samples[0]["t_s"]) / 60.0
        if len(samples) >= 3 and span_min > 0:
            # Least-squares slope over the samples after the first (warm-up) interval.
            t = np.array([s["t_s"] for s in samples[1:]]) / 60.0
            r = np.array([s["rss_kib"] for s in samples[1:]], dtype=np.float64)
            out["slope_kib_per_min_after_first"] = float(np.polyfit(t, r, 1)[0])
        out["growth_kib_per_min"] = out["growth_kib"] / span_min if span_min > 0 else None
        return out

    return {
        "benchmark": "soak",
        "machine": machine_info(),
        "backend": rt.backend,
        "device": device,
        "date": started.isoformat(timespec="seconds"),
        "ringkernel_version": rk.__version__,
        "config": {"duration_s": duration, "interval_s": interval, "grid": grid, "batch": batch,
                   "capacity": capacity, "record": str(RECORD.descr), "backpressure": "BLOCK",
                   "adversarial": [c.__name__ for c in CASES] if adversarial else []},
        "method": {
            "throughput": "messages the consumer thread received per interval / interval length",
            "rss": "VmRSS from /proc/self/status at each sample",
            "threads": "Threads from /proc/self/status at each sample",
            "cv": "population standard deviation / mean of the per-interval throughputs",
        },
        "samples": samples,
        "summary": {
            "pipeline": summarize([s["pipeline_msgs_per_s"] for s in samples]),
            "queue": summarize([s["queue_msgs_per_s"] for s in samples]),
            "pipeline_total_messages": streams[0].received,
            "queue_total_messages": streams[1].received,
            "rss": rss_growth(),
            "threads": {"first": samples[0]["threads"] if samples else None,
                        "last": samples[-1]["threads"] if samples else None,
                        "max": max((s["threads"] for s in samples), default=None),
                        "after_close": end["threads"]},
        },
        "checks": checks,
        "elapsed_s": round(time.monotonic() - t_start, 2),
    }


def table(results: dict) -> str:
    s = results["summary"]
    lines = [""]
    for name in ("pipeline", "queue"):
        x = s[name]
        if x:
            lines.append(f"{name:9s} mean {x['mean_msgs_per_s']:13,.0f} msg/s   min {x['min_msgs_per_s']:13,.0f}   "
                         f"max {x['max_msgs_per_s']:13,.0f}   CV {100 * x['cv']:.1f}%")
    r = s["rss"]
    if r:
        slope = r.get("slope_kib_per_min_after_first")
        lines.append(f"RSS       {r['first_sample_kib'] / 1024:.1f} -> {r['last_sample_kib'] / 1024:.1f} MiB "
                     f"(growth {r['growth_kib']:+d} KiB"
                     + (f", {slope:+.0f} KiB/min after the first interval" if slope is not None else "") + ")")
    t = s["threads"]
    lines.append(f"threads   first {t['first']}  last {t['last']}  max {t['max']}  after close {t['after_close']}")
    c = results["checks"]
    lines.append(f"checks    {'OK' if c['ok'] else 'FAILED'}: pipeline {s['pipeline_total_messages']:,} messages, "
                 f"queue {s['queue_total_messages']:,}; kernel errors {c['kernel_errors']}, drops "
                 f"{c['kernel_messages_dropped']}; terminate {c['terminate_states']} in {c['terminate_s']} s")
    if c["thread_errors"]:
        lines.append("          " + "; ".join(c["thread_errors"]))
    if "adversarial" in c:
        a = c["adversarial"]
        lines.append(f"adversarial {a['total']:,} cases: " + ", ".join(f"{k[5:]} {v:,}" for k, v in a["runs"].items())
                     + (f"; FAILED: {a['error']}" if a["error"] else "; all held"))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--duration", type=float, default=60.0, help="seconds to run (default 60)")
    ap.add_argument("--backend", default="cpu", help="cpu | opencl | cuda | auto (default cpu)")
    ap.add_argument("--interval", type=float, default=5.0, help="seconds between samples (default 5)")
    ap.add_argument("--grid", type=int, default=2, help="blocks of the first pipeline stage (default 2)")
    ap.add_argument("--batch", type=int, default=1024, help="records per send_batch (default 1024)")
    ap.add_argument("--capacity", type=int, default=4096, help="ring capacity (default 4096)")
    ap.add_argument("--adversarial", action="store_true",
                    help="also run the cases of issue 15 in a loop (close racing terminate, self-terminate, a "
                         "kernel per job, kernel-side drops, native handler faults, foreign buffer handles)")
    ap.add_argument("--out", default=str(Path(__file__).resolve().parent / "results"),
                    help="directory for the JSON results (default: bench/results)")
    args = ap.parse_args(argv)
    if args.duration <= 0 or args.interval <= 0:
        ap.error("--duration and --interval must be > 0")

    results = run(args.duration, args.backend, args.interval, args.grid, args.batch, args.capacity, args.adversarial)
    print(table(results))
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    stamp = _dt.date.today().strftime("%Y%m%d")
    kind = "soak-adversarial" if args.adversarial else "soak"
    path = out_dir / f"{kind}-{results['machine']['hostname']}-{stamp}.json"
    path.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {path} ({results['elapsed_s']} s)")
    return 0 if results["checks"]["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
