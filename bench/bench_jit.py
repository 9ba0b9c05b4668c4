#!/usr/bin/env python3
"""Compiled Python handlers (rk.jit, issue 17) on the CPU backend, against the built-in C handlers and a
Python-callable handler doing the same work, in one run, as ratios.

Questions:
  1. echo round trip (send one 64-byte record, receive its reply): an rk.jit echo against the built-in
     ``echo`` (goal: jit ≤ 1.2× the built-in's p50);
  2. batched throughput of a vector_add-like handler (VectorAddRequest → VectorAddResponse, 25 floats
     added inline), batches of 64 … 4096 through send_batch/receive_batch: rk.jit against the built-in
     ``vector_add`` (goal ≥ 0.8×) and against a Python callable doing the same add per message
     (goal ≥ 20×); the rk.jit handler with ``boundscheck=False`` too. The cases are interleaved within
     each repeat and the ratio is the median of the per-repeat ratios (the machine's speed drifts);
  3. compile time: cold (an empty cache, a fresh process) and warm (the same again: loaded from the cache).
Usage: python bench/bench_jit.py [--quick] [--plot]. Writes bench/results/jit-<hostname>-<YYYYMMDD>.json (and
.png with --plot).
"""

from __future__ import annotations

import datetime as _dt
import os
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_python import cli, machine_info  # noqa: E402

import ringkernel as rk  # noqa: E402
from ringkernel.bench import pipelined_batches, round_trips  # noqa: E402
from ringkernel.builtins import VectorAddRequest, VectorAddResponse, VectorOp  # noqa: E402

RECORD = np.dtype([("seq", "<u8"), ("values", "<f8", (7,))])  # 64 bytes


@rk.jit(input=RECORD)
def jit_echo(msg, out):
    out.seq = msg.seq
    for i in range(7):
        out.values[i] = msg.values[i]
    return True


def _add(msg, out):
    n = msg.length
    out.length = n
    for i in range(n):
        out.result[i] = msg.a[i] + msg.b[i]
    return True


jit_add = rk.jit(input=VectorAddRequest, output=VectorAddResponse)(_add)
jit_add_unchecked = rk.jit(input=VectorAddRequest, output=VectorAddResponse, boundscheck=False)(_add)


def py_add(msg):
    n = msg.length
    r = VectorAddResponse(length=n)
    r.result[:n] = msg.a[:n] + msg.b[:n]
    return r


def q1_round_trip(n: int) -> list:
    rows = []
    rec = np.zeros((), RECORD)[()]
    with rk.Runtime("cpu") as rt:
        for case, handler, kw in (("built-in echo (C)", "echo", {"input": RECORD}), ("rk.jit echo", jit_echo, {})):
            k = rt.launch("builtin" if handler == "echo" else "jit", handler, **kw)
            k.activate()
            send, receive = k.send, k.receive
            rows.append({"question": "Q1 echo round trip", "case": case, **round_trips(lambda: (send(rec), receive(5.0)), n)})
            k.terminate()
    rows[1]["ratio_vs_builtin_p50"] = rows[1]["p50_ns"] / rows[0]["p50_ns"]
    return rows


def q2_batched(total: int, repeats: int, sizes: tuple) -> list:
    """Every case at every batch size, the cases interleaved within each repeat (this machine's speed drifts
    between seconds): each row has the median rate and the median of the per-repeat ratios."""
    opts = rk.LaunchOptions.high_throughput()
    cases = (("built-in vector_add (C)", "vector_add", 1), ("rk.jit vector add", jit_add, 1),
             ("rk.jit vector add, boundscheck=False", jit_add_unchecked, 1), ("Python callable", py_add, 50))
    rows = []
    with rk.Runtime("cpu") as rt:
        kernels = []
        for i, (case, handler, _) in enumerate(cases):
            k = rt.launch(f"k{i}", handler, input=VectorAddRequest, output=VectorAddResponse, options=opts)
            k.activate()
            kernels.append(k)
        for b in sizes:
            batch = np.zeros(b, VectorAddRequest.dtype)
            batch["op"] = int(VectorOp.ADD)
            batch["length"] = 25
            batch["a"] = np.arange(25, dtype=np.float32)
            batch["b"] = 1.0

            def once(k: Any, n: int, b: int = b, batch: np.ndarray = batch) -> float:
                return pipelined_batches(k.send_batch, lambda: len(k.receive_batch(b, 5.0)), n, batch)

            for k, (_, _, slow) in zip(kernels, cases):
                once(k, max(b, total // slow // 10))  # warm-up
            rates: list = [[] for _ in cases]
            for _ in range(repeats):
                for i, (k, (_, _, slow)) in enumerate(zip(kernels, cases)):
                    rates[i].append(once(k, max(b, total // slow, 100 * b // slow)))  # >= 100 batches a run
            for i, (case, _, _) in enumerate(cases):
                ratios = [r / base for r, base in zip(rates[i], rates[0])]
                vs_py = [r / p for r, p in zip(rates[i], rates[3])]
                rows.append({"question": "Q2 batched vector add, 25 floats", "case": case, "batch": b,
                             "msgs_per_s": statistics.median(rates[i]), "runs": repeats,
                             "ratio_vs_builtin": statistics.median(ratios),
                             "ratio_vs_python_callable": statistics.median(vs_py)})
        for k in kernels:
            assert k.receive(timeout=0) is None  # nothing left over
            k.terminate()
    return rows


COMPILE_SCRIPT = textwrap.dedent("""
    import time, numpy as np
    t0 = time.perf_counter()
    import ringkernel as rk
    REQ = np.dtype([("seq", "<u8"), ("x", "<f8"), ("v", "<f4", (8,))])

    @rk.jit(input=REQ)
    def scale(msg, out):
        out.seq = msg.seq
        out.x = msg.x * 2.0
        for i in range(8):
            out.v[i] = msg.v[i] * msg.x
        return True

    print(scale.compile_seconds, time.perf_counter() - t0)
""")


def q3_compile_time() -> list:
    rows = []
    with tempfile.TemporaryDirectory() as d:
        script = Path(d) / "compile_me.py"
        script.write_text(COMPILE_SCRIPT)
        env = dict(os.environ, RINGKERNEL_CACHE_DIR=str(Path(d) / "cache"))
        for case in ("cold (empty cache)", "warm (from the cache)"):
            out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, env=env, check=True)
            compile_s, total_s = (float(v) for v in out.stdout.split())
            rows.append({"question": "Q3 compile time", "case": case, "compile_s": compile_s,
                         "import_and_compile_s": total_s})
    return rows


def run(quick: bool) -> dict:
    t0 = time.perf_counter()
    n, total, repeats, sizes = (3000, 100_000, 3, (64, 1024)) if quick else (20_000, 300_000, 9, (64, 256, 1024, 4096))
    rows = q1_round_trip(n) + q2_batched(total, repeats, sizes) + q3_compile_time()
    import numba

    return {"schema": "ringkernel.bench.jit/1", "date": _dt.datetime.now().isoformat(timespec="seconds"),
            "machine": machine_info(), "device": "cpu backend (no GPU)", "numba": numba.__version__,
            "quick": quick, "rows": rows, "elapsed_s": round(time.perf_counter() - t0, 1)}


def table(results: dict) -> str:
    lines = [f"{'case':58} {'value':>16} {'ratio':>8}  goal"]
    for r in results["rows"]:
        if r["question"].startswith("Q1"):
            ratio = r.get("ratio_vs_builtin_p50")
            goal = "" if ratio is None else ("jit <= 1.2x built-in " + ("met" if ratio <= 1.2 else "NOT met"))
            lines.append(f"{'Q1 ' + r['case']:58} {r['p50_ns']:>13.0f} ns {'' if ratio is None else f'{ratio:8.2f}'}  {goal}")
        elif r["question"].startswith("Q2"):
            goal = ""
            if r["case"] == "rk.jit vector add":
                ok = r["ratio_vs_builtin"] >= 0.8 and r["ratio_vs_python_callable"] >= 20
                goal = (f">= 0.8x built-in, >= 20x Python ({r['ratio_vs_python_callable']:.0f}x): "
                        + ("met" if ok else "NOT met"))
            label = f"Q2 [{r['batch']:>4}] {r['case']}"
            lines.append(f"{label:58} {r['msgs_per_s'] / 1e6:>10.2f} M msg/s {r['ratio_vs_builtin']:8.2f}  {goal}")
        else:
            lines.append(f"{'Q3 compile ' + r['case']:58} {r['compile_s']:>14.2f} s")
    return "\n".join(lines)


_last: dict = {}


def _run_and_keep(quick: bool) -> dict:
    _last.update(run(quick))
    return _last


def plot(results: dict, out_dir: Path) -> Path:
    """Throughput against batch size, one line per case (matplotlib, the [bench] extra)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r for r in results["rows"] if r["question"].startswith("Q2")]
    fig, ax = plt.subplots(figsize=(7, 4))
    for case in dict.fromkeys(r["case"] for r in rows):
        pts = [(r["batch"], r["msgs_per_s"] / 1e6) for r in rows if r["case"] == case]
        ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=case)
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel("messages per send_batch / receive_batch")
    ax.set_ylabel("M messages/s (CPU backend, 1 block)")
    ax.set_title(f"vector add of 25 floats per message ({results['machine']['hostname']}, {results['date'][:10]})")
    ax.legend(fontsize=8)
    ax.grid(True, which="both", alpha=0.3)
    path = out_dir / f"jit-{results['machine']['hostname']}-{results['date'][:10].replace('-', '')}.png"
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    return path


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    want_plot = "--plot" in argv
    argv = [a for a in argv if a != "--plot"]
    rc = cli(argv, __doc__ + "\n--plot also writes a chart of question 2 (matplotlib).", _run_and_keep, table, "jit",
             "fewer samples (< ~30 s)")
    if want_plot and rc == 0:
        out = Path(argv[argv.index("--out") + 1]) if "--out" in argv else Path(__file__).resolve().parent / "results"
        print(f"wrote {plot(_last, out)}")
    return rc


if __name__ == "__main__":
    sys.exit(main())
