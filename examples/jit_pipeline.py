#!/usr/bin/env python3
"""A three-stage pipeline written only in Python and compiled with rk.jit, on the CPU backend:

    parse (raw ADC counts -> calibrated reading) -> score (deviation from the sensor's mean; alerts go out on
    a named channel) -> aggregate (running count and sum per sensor, kept in a buffer the host reads live)

Every stage is a ring kernel whose handler is compiled Python (Numba): no GIL and no Python object per
message. Run: python examples/jit_pipeline.py [N]  (needs pip install 'pyringkernel[jit]').
"""

from __future__ import annotations

import sys
import time

import numpy as np

import ringkernel as rk
from ringkernel.compiled import buffer, emit

SENSORS = 8


@rk.message
class Raw:
    seq: rk.u64
    sensor: rk.u32
    counts: rk.array(rk.i16, 8)  # eight ADC samples
    stats: rk.u64  # buffer handle of the per-sensor statistics, carried along the pipeline


@rk.message
class Reading:
    seq: rk.u64
    sensor: rk.u32
    volts: rk.f64
    stats: rk.u64


@rk.message
class Scored:
    seq: rk.u64
    sensor: rk.u32
    volts: rk.f64
    score: rk.f64
    stats: rk.u64


@rk.jit(input=Raw, output=Reading)
def parse(msg, out):
    total = 0
    for i in range(8):
        total += msg.counts[i]
    out.seq = msg.seq
    out.sensor = msg.sensor
    out.volts = (total / 8.0) * (3.3 / 4096.0)  # mean of the samples, 12-bit ADC at 3.3 V
    out.stats = msg.stats
    return True


@rk.jit(input=Reading, output=Scored)
def score(msg, out):
    # stats buffer: SENSORS x (count, sum) as float64, written by aggregate (another kernel, another thread):
    # the mean so far, as far as aggregate has got, is the reference.
    stats = buffer(msg.stats, 2 * SENSORS, np.float64)
    n = stats[2 * msg.sensor]
    mean = stats[2 * msg.sensor + 1] / n if n > 0 else msg.volts
    out.seq = msg.seq
    out.sensor = msg.sensor
    out.volts = msg.volts
    out.score = abs(msg.volts - mean)
    out.stats = msg.stats
    if out.score > 0.5:
        emit(1, out)  # channel 1: "alerts" (also aggregated below: the main output goes on)
    return True


@rk.jit(input=Scored, output=Scored)
def aggregate(msg, out):
    stats = buffer(msg.stats, 2 * SENSORS, np.float64)
    stats[2 * msg.sensor] += 1.0
    stats[2 * msg.sensor + 1] += msg.volts
    out.seq = msg.seq
    out.sensor = msg.sensor
    out.volts = msg.volts
    out.score = msg.score
    out.stats = msg.stats
    return msg.seq % 1000 == 999  # a reply every 1000 messages: progress for the host


def main(n: int = 20_000) -> int:
    rng = np.random.default_rng(7)
    with rk.Runtime("cpu") as rt:
        stats = rt.buffer(np.zeros(2 * SENSORS, np.float64))
        p = rt.launch("parse", parse)
        s = rt.launch("score", score, channels=["alerts"])
        a = rt.launch("aggregate", aggregate)
        rt.connect(p, s)
        rt.connect(s, a)
        for k in (p, s, a):
            k.activate()
        raw = np.zeros(n, Raw.dtype)
        raw["seq"] = np.arange(n)
        raw["sensor"] = np.arange(n) % SENSORS
        raw["counts"] = rng.normal(2048, 40, size=(n, 8)).astype(np.int16)
        spikes = rng.choice(n, size=n // 200, replace=False)  # some readings far off their sensor's mean
        raw["counts"][spikes] = 4000
        raw["stats"] = stats.handle
        t0 = time.perf_counter()
        sent = 0
        while sent < n:
            sent += p.send_batch(raw[sent:sent + 1024], timeout=5.0)
        progress = [a.receive(timeout=10) for _ in range(n // 1000)]
        elapsed = time.perf_counter() - t0
        alerts = s.channel("alerts").receive_batch(n, timeout=1.0)
        table = stats.read(np.float64).reshape(SENSORS, 2)
        assert all(r is not None for r in progress) and table[:, 0].sum() == n, table
        print(f"{n} readings through parse -> score -> aggregate in {elapsed * 1e3:.0f} ms "
              f"({n / elapsed / 1e6:.2f} M msg/s, compiled Python on {rt.backend})")
        print(f"alerts: {len(alerts)} (spikes injected: {len(spikes)})")
        for sensor, (count, total) in enumerate(table):
            print(f"  sensor {sensor}: {int(count)} readings, mean {total / count:.3f} V")
    return 0


if __name__ == "__main__":
    sys.exit(main(int(sys.argv[1]) if len(sys.argv) > 1 else 20_000))
