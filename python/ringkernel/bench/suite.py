"""``ringkernel bench``: the benchmark suite, on every backend that can run here, in one run.

Every row is measured in the same run as what it is compared with, and carries the ratio "how many
times better ours is" (ours/peer for throughput, peer/ours for time; above 1 means ringkernel wins):

- queue      the Python queue path, ``rk.Queue`` batches and single records, against ``queue.Queue``,
             ``collections.deque`` and ``multiprocessing.Queue``, at several batch sizes;
- kernel     on each backend (cpu, opencl, cuda when present): the echo kernel's round trip from
             Python against a plain-Python threaded actor, and batched throughput at several batch
             sizes against the same actor handed whole numpy batches; OpenCL also persistent against
             dispatch mode;
- native     (from a source checkout) the C++ ring against boost::lockfree and moodycamel with Google
             Benchmark (bench/bench_native.py), and, where a GPU is present, bench/bench_cuda.py's rows.

It prints one table and writes ``bench-<machine>-<date>.json`` plus two charts, ``latency.png``
(round-trip distributions) and ``throughput.png`` (throughput against batch size), to ``--out``.
``--quick`` takes about a minute. The measurement helpers (actors, percentiles, timing) are in
ringkernel.bench.measure, shared with the scripts in bench/.
"""


from __future__ import annotations

import argparse
import collections
import datetime as _dt
import json
import multiprocessing as mp
import os
import queue
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np

from .measure import (RECORD, ThreadActor, machine_info, median_rate, percentiles, pipelined_batches, records,
                      round_trip_samples)

NORMAL = {"rtt_n": 20_000, "batch_sizes": (64, 1024, 4096, 16384), "kernel_total": 2_000_000, "repeats": 5,
          "queue_total": 1_000_000, "single_n": 50_000}
QUICK = {"rtt_n": 5_000, "batch_sizes": (64, 1024, 4096), "kernel_total": 500_000, "repeats": 3,
         "queue_total": 300_000, "single_n": 10_000}


# ---- the suite -----------------------------------------------------------------------------------------------


class Progress:
    """One line on stderr: a bar, the step count and what runs now."""

    def __init__(self, total: int, stream: Any = None, enabled: bool = True):
        self.total, self.done, self.stream, self.enabled = max(total, 1), 0, stream or sys.stderr, enabled
        self.started = time.perf_counter()

    def step(self, label: str) -> None:
        if self.enabled:
            width = 28
            filled = int(width * self.done / self.total)
            elapsed = time.perf_counter() - self.started
            self.stream.write(f"\r[{'#' * filled}{'.' * (width - filled)}] {self.done}/{self.total} "
                              f"{elapsed:5.1f}s  {label[:60]:<60}")
            self.stream.flush()
        self.done += 1

    def finish(self) -> None:
        if self.enabled:
            self.stream.write(f"\r[{'#' * 28}] {self.total}/{self.total} "
                              f"{time.perf_counter() - self.started:5.1f}s  done{' ' * 56}\n")
            self.stream.flush()


def _row(section: str, case: str, ours: float, unit: str, peer: str, peer_value: float, **extra: Any) -> dict:
    """One comparison; ratio > 1 means ringkernel is better (throughput: ours/peer; time: peer/ours)."""
    ratio = ours / peer_value if unit == "msg/s" else peer_value / ours
    return {"section": section, "case": case, "ours": ours, "unit": unit, "peer": peer, "peer_value": peer_value,
            "ratio": ratio, **extra}


def bench_queue(cfg: dict, progress: Progress, charts: dict) -> list:
    """The Python queue path: rk.Queue against queue.Queue, deque and multiprocessing.Queue."""
    import ringkernel as rk

    rows = []
    total = cfg["queue_total"]
    for b in cfg["batch_sizes"]:
        progress.step(f"queue: batches of {b}")
        batch = records(b)
        items = list(batch)
        q = rk.Queue(RECORD, capacity=max(16384, 1 << (b - 1).bit_length()))
        n_batches = max(1, total // b)

        def ours(q: Any = q, batch: np.ndarray = batch, n: int = n_batches) -> float:
            t0 = time.perf_counter()
            for _ in range(n):
                q.send_batch(batch)
                q.receive_batch(len(batch))
            return n * len(batch) / (time.perf_counter() - t0)

        def per_item(put: Callable, get: Callable, n_items: int) -> float:
            t0 = time.perf_counter()
            done = 0
            while done < n_items:
                for m in items:
                    put(m)
                for _ in items:
                    get()
                done += len(items)
            return done / (time.perf_counter() - t0)

        pyq: queue.Queue = queue.Queue()
        dq: collections.deque = collections.deque()
        mpq = mp.get_context("fork").Queue()
        small = max(len(items), total // 20)
        m_ours = median_rate(ours, cfg["repeats"])["msgs_per_s"]
        peers = {
            "queue.Queue put/get per item": median_rate(lambda: per_item(pyq.put, pyq.get, small), cfg["repeats"]),
            "deque append/popleft per item": median_rate(lambda: per_item(dq.append, dq.popleft, total // 4),
                                                         cfg["repeats"]),
            "multiprocessing.Queue put/get of the whole batch": median_rate(
                lambda: per_mp(mpq, batch, max(4, n_batches // 10)), cfg["repeats"]),
        }
        mpq.close()
        charts.setdefault("throughput", {}).setdefault("rk.Queue batch (one thread)", []).append((b, m_ours))
        for name, m in peers.items():
            charts["throughput"].setdefault(name, []).append((b, m["msgs_per_s"]))
            rows.append(_row("queue", f"rk.Queue send_batch+receive_batch, batches of {b}", m_ours, "msg/s", name,
                             m["msgs_per_s"], batch=b))
    progress.step("queue: one record per call")
    q = rk.Queue(RECORD, capacity=16)
    rec = records(1)[0]
    n = cfg["single_n"]
    ours_ns = statistics.median(round_trip_samples(lambda: (q.send(rec), q.receive(timeout=0)), n))
    pyq = queue.Queue()
    peer_ns = statistics.median(round_trip_samples(lambda: (pyq.put(rec), pyq.get()), n))
    dq = collections.deque()
    dq_ns = statistics.median(round_trip_samples(lambda: (dq.append(rec), dq.popleft()), n))
    rows.append(_row("queue", "rk.Queue send+receive, one record", ours_ns, "ns", "queue.Queue put+get", peer_ns))
    rows.append(_row("queue", "rk.Queue send+receive, one record", ours_ns, "ns", "deque append+popleft", dq_ns))
    return rows


def per_mp(mpq: Any, batch: np.ndarray, n: int) -> float:
    t0 = time.perf_counter()
    for _ in range(n):
        mpq.put(batch)
        mpq.get()
    return n * len(batch) / (time.perf_counter() - t0)


def _actor_rows(cfg: dict, progress: Progress, charts: dict) -> dict:
    """The peers every backend's kernel rows are compared with, measured once in this run."""
    progress.step("peer: threaded Python actor")
    rec = records(1)[0]
    actor = ThreadActor()
    put, get = actor.inq.put, actor.outq.get
    samples = round_trip_samples(lambda: (put(rec), get()), cfg["rtt_n"])
    actor.close()
    charts.setdefault("latency", {})["threaded Python actor (queue.Queue)"] = samples
    rates = {}
    copy_actor = ThreadActor(lambda a: a.copy())
    for b in cfg["batch_sizes"]:
        batch = records(b)
        rates[b] = median_rate(lambda batch=batch: pipelined_batches(
            copy_actor.inq.put, lambda: len(copy_actor.outq.get()), cfg["kernel_total"] // 4, batch),
            cfg["repeats"])["msgs_per_s"]
        charts.setdefault("throughput", {}).setdefault("threaded Python actor, numpy batches", []).append(
            (b, rates[b]))
    copy_actor.close()
    return {"rtt": percentiles(samples), "batched": rates}


def bench_kernels(backend: str, cfg: dict, peers: dict, progress: Progress, charts: dict,
                  mode: Optional[str] = None) -> list:
    """The echo kernel on ``backend`` (and ``mode``) against the threaded actor."""
    import ringkernel as rk

    label = backend + (f" ({mode})" if mode else "")
    rows = []
    progress.step(f"kernel {label}: round trip")
    rec = records(1)[0]
    with rk.Runtime(backend) as rt:
        opts = rk.LaunchOptions(queue_capacity=16384, dedup_window=0)
        k = rt.launch("echo", "echo", input=RECORD, options=opts, mode=mode)
        k.activate()
        send, receive = k.send, k.receive
        samples = round_trip_samples(lambda: (send(rec), receive(5.0)), cfg["rtt_n"])
        charts.setdefault("latency", {})[f"echo kernel, {label}"] = samples
        p = percentiles(samples)
        rows.append(_row("kernel", f"{label}: round trip from Python, p50", p["p50_ns"], "ns",
                         "threaded Python actor, p50", peers["rtt"]["p50_ns"], p99_ns=p["p99_ns"]))
        rows.append(_row("kernel", f"{label}: round trip from Python, p99", p["p99_ns"], "ns",
                         "threaded Python actor, p99", peers["rtt"]["p99_ns"]))
        for b in cfg["batch_sizes"]:
            progress.step(f"kernel {label}: batches of {b}")
            batch = records(b)

            def recv(k: Any = k, b: int = b) -> int:
                return len(k.receive_batch(b, 5.0))

            m = median_rate(lambda: pipelined_batches(k.send_batch, recv, cfg["kernel_total"], batch),
                            cfg["repeats"])["msgs_per_s"]
            charts.setdefault("throughput", {}).setdefault(f"echo kernel, {label}", []).append((b, m))
            rows.append(_row("kernel", f"{label}: echo, batches of {b}", m, "msg/s",
                             "threaded Python actor, numpy batches", peers["batched"][b], batch=b))
        k.terminate()
    return rows


def _persistent_vs_dispatch(rows: list) -> list:
    """OpenCL: persistent mode against dispatch mode, from the rows both runs made."""
    out = []
    by_case = {r["case"]: r for r in rows if r["section"] == "kernel"}
    for case, r in by_case.items():
        if not case.startswith("opencl (persistent)"):
            continue
        other = by_case.get(case.replace("opencl (persistent)", "opencl (dispatch)"))
        if other:
            out.append(_row("kernel", case, r["ours"], r["unit"], "the same in OpenCL dispatch mode", other["ours"]))
    return out


def find_source(explicit: Optional[str]) -> Optional[Path]:
    """The repository checkout (for the C++ and GPU benchmarks): --source, $RINGKERNEL_SOURCE_DIR, or a
    parent of the current directory holding bench/bench_native.py."""
    for c in [explicit, os.environ.get("RINGKERNEL_SOURCE_DIR")]:
        if c and (Path(c) / "bench" / "bench_native.py").is_file():
            return Path(c).resolve()
    here = Path.cwd().resolve()
    for d in [here, *here.parents]:
        if (d / "bench" / "bench_native.py").is_file() and (d / "CMakeLists.txt").is_file():
            return d
    return None


class _StdoutToStderr:
    """Send file descriptor 1 to stderr for a while: the build tools bench_native runs write there, and
    stdout is for the table."""

    def __enter__(self) -> None:
        sys.stdout.flush()
        self.saved = os.dup(1)
        os.dup2(2, 1)

    def __exit__(self, *exc: Any) -> None:
        sys.stdout.flush()
        os.dup2(self.saved, 1)
        os.close(self.saved)


def bench_native(source: Optional[Path], quick: bool, progress: Progress) -> tuple:
    """The C++ ring against boost::lockfree and moodycamel (Google Benchmark), from a checkout."""
    progress.step("native: C++ ring vs boost::lockfree and moodycamel")
    if source is None:
        return [], "skipped: needs a source checkout (run from it, or pass --source)"
    with _StdoutToStderr():
        return _bench_native(source, quick)


def _bench_native(source: Path, quick: bool) -> tuple:
    sys.path.insert(0, str(source / "bench"))
    try:
        import bench_native  # type: ignore[import-not-found]

        built = (source / "build" / "bench").is_dir()
        if quick and not built:
            return [], "skipped with --quick: the C++ benchmarks are not built yet (run without --quick once)"
        result = bench_native.run(quick, write=False, build_first=True)
    except (Exception, SystemExit) as e:  # a missing toolchain or peer library: say which, go on
        return [], f"skipped: {type(e).__name__}: {e}"
    finally:
        sys.path.remove(str(source / "bench"))
    rows = []
    for c in result.get("comparisons", []):
        if c.get("speedup_vs_best_peer") is None:
            continue
        scale, unit = (1e6, "msg/s") if c["unit"] == "Mmsg/s" else (1.0, "ns")
        rows.append({"section": "native", "case": f"{c['question']} ({c['ours']})", "ours": c["ours_value"] * scale,
                     "unit": unit, "peer": f"{c['peer']} (best of {len(c['peers_considered'])})",
                     "peer_value": c["peer_value"] * scale, "ratio": c["speedup_vs_best_peer"]})
    return rows, None


def bench_gpu(source: Optional[Path], quick: bool, progress: Progress) -> tuple:
    """bench/bench_cuda.py's rows (floor, one launch and one graph per message, batched, telemetry, K2K)."""
    progress.step("cuda: against the mapped-flag floor, launch and graph per message")
    if source is None:
        return [], "skipped: needs a source checkout (run from it, or pass --source)"
    sys.path.insert(0, str(source / "bench"))
    try:
        import bench_cuda  # type: ignore[import-not-found]

        result = bench_cuda.run(quick)
    except (Exception, SystemExit) as e:  # bench_cuda exits when there is no usable GPU
        return [], f"skipped: {type(e).__name__}: {e}"
    finally:
        sys.path.remove(str(source / "bench"))
    if not result or not result.get("available", True):
        return [], "skipped: " + str((result or {}).get("reason", "no GPU"))
    rows = []
    for name, value in (result.get("ratios") or {}).items():
        if isinstance(value, (int, float)):
            rows.append({"section": "cuda", "case": name, "ours": None, "unit": "ratio",
                         "peer": f"bench_cuda.py ({result.get('device', 'GPU')})", "peer_value": None, "ratio": value})
    return rows, None


def run(quick: bool = False, backends: Optional[list] = None, source: Optional[str] = None,
        progress_enabled: bool = True) -> tuple:
    """Run the suite; returns (results dict, chart data)."""
    import ringkernel as rk

    cfg = QUICK if quick else NORMAL
    known = [b.name for b in rk.backends()]
    available = [b.name for b in rk.backends() if b.available]
    for b in backends or []:
        if b not in known:
            raise ValueError(f"--backend must be one of {', '.join(known)}; got '{b}'")
    chosen = [b for b in (backends or available) if b in available]
    skipped = {b.name: b.detail for b in rk.backends() if not b.available}
    src = find_source(source)
    steps = len(cfg["batch_sizes"]) + 1 + 1 + 2  # queue, peers, native, cuda
    for b in chosen:
        steps += (1 + len(cfg["batch_sizes"])) * (2 if b == "opencl" else 1)
    progress = Progress(steps, enabled=progress_enabled)
    charts: dict = {}
    started = time.perf_counter()
    rows = bench_queue(cfg, progress, charts)
    peers = _actor_rows(cfg, progress, charts)
    for b in chosen:
        if b == "opencl":
            both = bench_kernels(b, cfg, peers, progress, charts, mode="persistent")
            both += bench_kernels(b, cfg, peers, progress, charts, mode="dispatch")
            rows += both + _persistent_vs_dispatch(both)
        else:
            rows += bench_kernels(b, cfg, peers, progress, charts)
    notes = {}
    native, why = bench_native(src, quick, progress)
    rows += native
    if why:
        notes["native"] = why
    if "cuda" in chosen:
        gpu, why = bench_gpu(src, quick, progress)
        rows += gpu
        if why:
            notes["cuda"] = why
    else:
        progress.step("cuda: not available here")
        notes["cuda"] = "skipped: " + skipped.get("cuda", "not selected")
    progress.finish()
    results = {
        "benchmark": "ringkernel bench",
        "machine": machine_info(),
        "backends": chosen,
        "unavailable": skipped,
        "date": _dt.datetime.now(_dt.timezone.utc).astimezone().isoformat(timespec="seconds"),
        "ringkernel_version": rk.__version__,
        "quick": quick,
        "config": {k: list(v) if isinstance(v, tuple) else v for k, v in cfg.items()},
        "method": {"ratio": "ours/peer for msg/s, peer/ours for ns; > 1 means ringkernel is better",
                   "throughput": "median of repeated runs after one warm-up",
                   "latency": "perf_counter_ns around send+receive, percentiles over all samples",
                   "record": "64-byte numpy structured record " + str(RECORD.descr)},
        "notes": notes,
        "elapsed_s": round(time.perf_counter() - started, 1),
        "rows": rows,
    }
    return results, charts


def _fmt(value: Any, unit: str) -> str:
    if value is None:
        return "-"
    if unit == "msg/s":
        return f"{value / 1e6:.2f} M/s"
    if unit == "ns":
        return f"{value / 1e3:.2f} us" if value >= 1000 else f"{value:.0f} ns"
    return f"{value:.3g} {unit}".strip()


def table(results: dict) -> str:
    m = results["machine"]
    lines = [f"ringkernel bench -- {m['cpu']} ({m['cores']} cores), backends {', '.join(results['backends'])}, "
             f"{results['date']}{' (quick)' if results['quick'] else ''}"]
    head = f"{'section':8} {'case':52} {'ours':>11}  {'compared with (same run)':46} {'theirs':>11} {'ratio':>7}"
    lines += [head, "-" * len(head)]
    for r in results["rows"]:
        lines.append(f"{r['section']:8} {r['case'][:52]:52} {_fmt(r['ours'], r['unit']):>11}  {r['peer'][:46]:46} "
                     f"{_fmt(r['peer_value'], r['unit']):>11} {r['ratio']:6.2f}x")
    for k, v in results["notes"].items():
        lines.append(f"{k}: {v}")
    lines.append("ratio > 1: ringkernel better (throughput ours/theirs, time theirs/ours)")
    return "\n".join(lines)


def write_charts(charts: dict, out: Path) -> list:
    """latency.png and throughput.png; needs matplotlib (pip install 'pyringkernel[bench]')."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    def save(fig: Any, ax: Any, name: str, title: str) -> None:
        ax.set_title(title)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
        fig.tight_layout()
        fig.savefig(out / name, dpi=110)
        plt.close(fig)
        written.append(out / name)

    written: list = []
    if charts.get("latency"):
        fig, ax = plt.subplots(figsize=(8, 5))
        for name, samples in charts["latency"].items():
            s = np.sort(np.asarray(samples, dtype=np.float64)) / 1e3
            ax.plot(s, np.linspace(0, 100, len(s)), label=name)
        ax.set_xscale("log")
        ax.set_xlabel("round trip from Python (us, log scale)")
        ax.set_ylabel("percentile")
        save(fig, ax, "latency.png", "Round-trip distribution, 64-byte messages")
    if charts.get("throughput"):
        fig, ax = plt.subplots(figsize=(8, 5))
        for name, points in charts["throughput"].items():
            xs, ys = zip(*sorted(points))
            ax.plot(xs, np.asarray(ys) / 1e6, marker="o", label=name)
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel("batch size (messages)")
        ax.set_ylabel("throughput (M messages/s, log scale)")
        save(fig, ax, "throughput.png", "Throughput against batch size, 64-byte messages")
    return written


def main(argv: Optional[list] = None) -> int:
    ap = argparse.ArgumentParser(prog="ringkernel bench", description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="fewer messages and repeats (about a minute)")
    ap.add_argument("--out", default=None,
                    help="folder for the JSON and the charts (default: bench/results/<machine> in a checkout, "
                         "else ./ringkernel-bench)")
    ap.add_argument("--backend", action="append", dest="backends", metavar="NAME",
                    help="only this backend (repeatable; default: every available one)")
    ap.add_argument("--source", default=None, help="the repository checkout, for the C++ and GPU rows")
    ap.add_argument("--machine", default=None, help="the machine's name in file and folder names (default: hostname)")
    ap.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")
    args = ap.parse_args(argv)
    try:
        results, charts = run(args.quick, args.backends, args.source, not args.no_progress)
    except ValueError as e:
        ap.error(str(e))
    print(table(results))
    machine = args.machine or results["machine"]["hostname"]
    src = find_source(args.source)
    out = Path(args.out) if args.out else (src / "bench" / "results" / machine if src else Path("ringkernel-bench"))
    out.mkdir(parents=True, exist_ok=True)
    stamp = _dt.date.today().strftime("%Y%m%d")
    path = out / f"bench-{machine}-{stamp}{'-quick' if args.quick else ''}.json"
    path.write_text(json.dumps(results, indent=2, default=float) + "\n")
    print(f"wrote {path}")
    try:
        for p in write_charts(charts, out):
            print(f"wrote {p}")
    except ImportError:
        print("charts not written: matplotlib is not installed (pip install 'pyringkernel[bench]')", file=sys.stderr)
        return 3
    return 0
