#!/usr/bin/env python3
"""Round trips host -> kernel -> host on the OpenCL device, in one run (PoCL in CI and here).

    python3 bench/bench_opencl.py [--quick] [--out DIR]

Builds and runs ``ringkernel_bench_opencl`` (bench/cpp/bench_opencl.cpp) in build/bench, which
measures, one after the other on the same device:

- floor:      a minimal resident kernel answering a host-written flag in fine-grained SVM -- the
              least a persistent round trip can cost on this device;
- persistent: ringkernel's OpenCL backend, a resident echo kernel, 64-byte messages through its
              rings (C++ API, the host spinning on the reply);
- dispatch:   one clEnqueueNDRangeKernel + clFinish per message, the kernel answering one message;
- dispatch mode: the backend's dispatch mode through its rings (its host thread launches the kernel
              whenever messages wait);
- cpu:        the CPU backend's echo kernel, for reference;

and batched throughput (batches of 1024) of the persistent and CPU echo kernels. Aims (issue 5):
persistent within 2x of the floor, and >= 10x lower round trip than dispatch. Writes
bench/results/opencl-<hostname>-<YYYYMMDD>.json with machine, device and date.
"""

from __future__ import annotations

import datetime as _dt
import json
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_python import cli, machine_info  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
BUILD = REPO / "build" / "bench"
BINARY = BUILD / "bench" / "cpp" / "ringkernel_bench_opencl"


def run(quick: bool = False) -> dict:
    started = time.perf_counter()
    subprocess.run(["cmake", "-S", str(REPO), "-B", str(BUILD), "-DCMAKE_BUILD_TYPE=Release",
                    "-DRINGKERNEL_BUILD_TESTS=OFF", "-DRINGKERNEL_BUILD_BENCHMARKS=ON"], check=True,
                   stdout=subprocess.DEVNULL)
    subprocess.run(["cmake", "--build", str(BUILD), "--target", "ringkernel_bench_opencl"], check=True,
                   stdout=subprocess.DEVNULL)
    out = subprocess.run([str(BINARY)] + (["--quick"] if quick else []), check=True, capture_output=True, text=True)
    data = json.loads(out.stdout)
    floor, persistent, dispatch = data["floor"], data["persistent"], data["dispatch"]
    dispatch_mode = data["dispatch_mode"]
    return {
        "benchmark": "opencl-round-trip",
        "machine": machine_info(),
        "device": f"OpenCL: {data['device']} (PoCL CPU device; host and device are the same CPU)",
        "date": _dt.datetime.now(_dt.timezone.utc).astimezone().isoformat(timespec="seconds"),
        "quick": quick,
        "method": "per-message steady_clock round trips after a warm-up; percentiles over all samples; floor and "
                  "persistent alternate 3 times and each keeps its median run (by p50); batched: a producer "
                  "thread sends batches of 1024 64-byte records, the main thread receives (median of 3)",
        "results": data,
        "ratios": {
            "persistent_p50_over_floor_p50": persistent["p50_ns"] / floor["p50_ns"],
            "dispatch_p50_over_persistent_p50": dispatch["p50_ns"] / persistent["p50_ns"],
            "dispatch_mode_p50_over_persistent_p50": dispatch_mode["p50_ns"] / persistent["p50_ns"],
        },
        "target": {"persistent_over_floor_at_most": 2.0, "dispatch_over_persistent_at_least": 10.0},
        "elapsed_s": round(time.perf_counter() - started, 2),
    }


def table(results: dict) -> str:
    r = results["results"]
    lines = [f"OpenCL round trips -- {results['device']}, {results['date']}",
             f"{'case':40s} {'p50':>10s} {'p99':>10s} {'p99.9':>10s}"]
    for key, label in (("floor", "floor: resident kernel, one SVM flag"),
                       ("persistent", "ringkernel persistent echo (rings)"),
                       ("dispatch", "one clEnqueueNDRangeKernel per message"),
                       ("dispatch_mode", "ringkernel dispatch mode (rings)"),
                       ("cpu", "ringkernel CPU backend echo")):
        s = r[key]
        lines.append(f"  {label:38s} {s['p50_ns'] / 1e3:8.2f}us {s['p99_ns'] / 1e3:8.2f}us {s['p999_ns'] / 1e3:8.2f}us")
    ratios = results["ratios"]
    lines.append(f"persistent / floor (p50): {ratios['persistent_p50_over_floor_p50']:.2f}x (aim <= 2x); "
                 f"dispatch / persistent (p50): {ratios['dispatch_p50_over_persistent_p50']:.0f}x, our dispatch mode / "
                 f"persistent: {ratios['dispatch_mode_p50_over_persistent_p50']:.0f}x (aim >= 10x)")
    lines.append(f"batched (1024 per batch): persistent {r['persistent_batched_msgs_per_s'] / 1e6:.1f} M msg/s, "
                 f"dispatch mode {r['dispatch_mode_batched_msgs_per_s'] / 1e6:.1f} M msg/s, "
                 f"CPU backend {r['cpu_batched_msgs_per_s'] / 1e6:.1f} M msg/s")
    return "\n".join(lines)


def main(argv: list | None = None) -> int:
    return cli(argv, __doc__, run, table, "opencl", "fewer round trips (a few seconds)")


if __name__ == "__main__":
    sys.exit(main())
