"""``ringkernel bench``: the suite runs, every row names its peer and ratio, and it writes JSON and charts."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest


def test_bench_quick_writes_a_table_json_and_charts(tmp_path):
    pytest.importorskip("matplotlib", reason="the charts need matplotlib (pip install 'pyringkernel[bench]')")
    out = tmp_path / "results"
    env = {k: v for k, v in os.environ.items() if k != "RINGKERNEL_SOURCE_DIR"}
    # Outside a checkout (cwd = tmp_path): the C++ rows say they need one instead of building it.
    proc = subprocess.run([sys.executable, "-m", "ringkernel", "bench", "--quick", "--backend", "cpu", "--out", str(out),
                           "--machine", "testbox"], capture_output=True, text=True, timeout=600, cwd=tmp_path, env=env)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "done" in proc.stderr and "] " in proc.stderr  # the progress bar
    [path] = list(out.glob("bench-testbox-*-quick.json"))
    results = json.loads(path.read_text())
    assert results["backends"] == ["cpu"] and results["quick"] is True
    assert {"hostname", "cpu", "cores"} <= set(results["machine"]) and results["date"]
    sections = {r["section"] for r in results["rows"]}
    assert {"queue", "kernel"} <= sections
    for r in results["rows"]:
        assert r["peer"] and r["ratio"] > 0, r  # every row names what it is compared with, and the ratio
        if r["unit"] in ("msg/s", "ns"):
            expected = r["ours"] / r["peer_value"] if r["unit"] == "msg/s" else r["peer_value"] / r["ours"]
            assert r["ratio"] == pytest.approx(expected)
    peers = " ".join(r["peer"] for r in results["rows"])
    for peer in ("queue.Queue", "deque", "multiprocessing", "threaded Python actor"):
        assert peer in peers
    assert "source checkout" in results["notes"]["native"]
    assert "cuda" in results["notes"] or "cuda" in results["backends"]
    for chart in ("latency.png", "throughput.png"):
        data = (out / chart).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000
    table = proc.stdout
    assert "compared with (same run)" in table and "ratio" in table and "rk.Queue send_batch" in table


def test_bench_help_and_bad_backend():
    proc = subprocess.run([sys.executable, "-m", "ringkernel", "bench", "--help"], capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 0 and "--quick" in proc.stdout and "--out" in proc.stdout
    proc = subprocess.run([sys.executable, "-m", "ringkernel", "bench", "--backend", "tpu"], capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 2 and "--backend must be one of cpu, cuda, opencl, metal; got 'tpu'" in proc.stderr


def test_the_supervision_benchmarks_measure_what_they_say(monkeypatch):
    """bench/bench_actor.py's restart and overhead questions at a tiny size: every faulting message restarted
    the kernel once and was answered (checked inside), the watchdog abandoned each hung handler, and every
    variant reports a ratio against the unsupervised kernel."""
    from pathlib import Path

    monkeypatch.syspath_prepend(str(Path(__file__).resolve().parents[2] / "bench"))
    import bench_actor

    r = bench_actor.restart_times(20, [0, 64])
    assert [x["fault"] for x in r["kinds"]] == ["rk_fault (rk.Source)", "trap SIGSEGV (rk.Source)",
                                                 "rk.KernelFault (Python)"]
    assert all(x["faulting"]["n"] == x["plain"]["n"] == 20 for x in r["kinds"])
    assert [x["waiting"] for x in r["backlog"]] == [0, 64]
    assert r["watchdog"]["abandoned"] == 10 and r["watchdog"]["past_timeout"]["n"] == 10
    o = bench_actor.supervision_overhead(1, 200, 256)
    for name in ("restart_policy", "policy_and_watchdog"):
        assert o[name]["round_trip_ratio"] > 0 and o[name]["throughput_ratio"] > 0
