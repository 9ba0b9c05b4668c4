"""Ring kernels end to end: runtime and backends, lifecycle, named queues, resources and modes, on every
backend (parametrised by the `backend` fixture of conftest.py; one that cannot run here is skipped with
rk.backends()' reason). The other subjects of the behavioural suite have their own files: test_builtin_handlers,
test_source_handlers, test_python_handlers, test_k2k, test_telemetry, test_asyncio, test_opencl_devices.
"""

from __future__ import annotations

import asyncio
import gc
import os
import threading
import time

import numpy as np
import pytest

import ringkernel as rk
from ringkernel.builtins import VectorAddRequest, VectorAddResponse

from kernel_helpers import OPS, REC, availability, copies, python_subprocess, rec, skip_without_shared_memory, vreq


# ---- runtime and backends ---------------------------------------------------------------------------

def test_backends_never_raise_and_cpu_is_there():
    infos = rk.backends()
    assert [b.name for b in infos][:1] == ["cpu"] and infos[0].available
    for b in infos:
        assert b.detail


def test_auto_picks_an_available_backend():
    with rk.Runtime("auto") as runtime:
        assert availability()[runtime.backend].available


def test_unavailable_or_unknown_backend_is_a_clear_error():
    for b in rk.backends():
        if not b.available:
            with pytest.raises(rk.BackendUnavailableError, match=b.name):
                rk.Runtime(b.name)
    with pytest.raises(ValueError, match="'auto', 'cpu'"):
        rk.Runtime("tpu")


# ---- lifecycle --------------------------------------------------------------------------------------

def test_echo_kernels_run_the_handler_the_case_names(rt, request):
    # The cpu-jit cases are the suite with every "echo" kernel a compiled Python echo (kernel_helpers.py).
    k = rt.launch("which", "echo", input=REC)
    jit = request.node.callspec.params["backend"] == "cpu-jit"
    assert k._k.handler == ("compiled:echo" if jit else "builtin:echo")
    k.activate()
    k.send(rec(3, 1.5))
    assert tuple(k.receive(timeout=5).item()) == (3, 1.5)


def test_lifecycle_and_errors(rt):
    k = rt.launch("echo", "echo", input=REC)
    assert k.state == rk.KernelState.LAUNCHED
    with pytest.raises(rk.LifecycleError, match="LAUNCHED.*activate"):
        k.deactivate()
    assert k.send(rec(1))  # waits in the ring while LAUNCHED
    assert k.receive(timeout=0.05) is None
    k.activate()
    assert k.state == rk.KernelState.ACTIVE
    assert k.receive(timeout=2)["seq"] == 1
    with pytest.raises(rk.LifecycleError, match="ACTIVE"):
        k.activate()
    k.deactivate()
    assert k.state == rk.KernelState.DEACTIVATED
    assert k.send(rec(2))
    assert k.receive(timeout=0.05) is None  # DEACTIVATED consumes nothing
    k.activate()
    assert k.receive(timeout=2)["seq"] == 2
    assert k.terminate() == rk.KernelState.TERMINATED
    with pytest.raises(rk.LifecycleError, match="TERMINATED"):
        k.send(rec(3))
    with pytest.raises(rk.LifecycleError):
        k.activate()
    assert k.terminate() == rk.KernelState.TERMINATED


def test_create_then_launch(rt):
    k = rt.create("later", "echo", input=REC)
    assert k.state == rk.KernelState.CREATED
    with pytest.raises(rk.LifecycleError, match="CREATED"):
        k.enable_telemetry()
    with pytest.raises(rk.LifecycleError, match="launch"):
        k.activate()
    k.launch()
    k.activate()
    k.send(rec(5))
    assert k.receive(timeout=2)["seq"] == 5


def test_replies_keep_request_order_with_one_block(rt):
    k = rt.launch("ordered", "echo", input=REC)
    k.activate()
    batch = np.zeros(1000, REC)
    batch["seq"] = np.arange(1000)
    assert k.send_batch(batch) == 1000
    got = []
    while len(got) < 1000:
        part = k.receive_batch(1000, timeout=2)
        assert len(part), "kernel stopped answering"
        got.extend(part["seq"].tolist())
    assert got == list(range(1000))


def test_grid_of_blocks_answers_everything_exactly_once(rt):
    k = rt.launch("wide", "echo", input=REC, grid=4, options=rk.LaunchOptions(queue_capacity=256, dedup_window=0))
    k.activate()
    n = 20000
    sender = threading.Thread(target=lambda: [k.send(rec(i)) for i in range(n)])
    sender.start()
    seen = []
    while len(seen) < n:
        part = k.receive_batch(4096, timeout=5)
        assert len(part)
        seen.extend(part["seq"].tolist())
    sender.join()
    assert sorted(seen) == list(range(n))
    assert k.messages_processed == n


def test_bad_launch_arguments(rt):
    with pytest.raises(ValueError, match="grid"):
        rt.launch("g", "echo", input=REC, grid=0)
    with pytest.raises(ValueError, match="block"):
        rt.launch("b", "echo", input=REC, block=4096)
    with pytest.raises(ValueError, match="built-in"):
        rt.launch("n", "nope", input=REC)
    with pytest.raises(ValueError, match="name"):
        rt.launch("bad name", "echo", input=REC)
    with pytest.raises(ValueError, match="priority"):
        rt.launch("p", "echo", input=REC, options=rk.LaunchOptions(priority=True))
    with pytest.raises(TypeError, match="handler"):
        rt.launch("t", 42, input=REC)
    rt.launch("dup", "echo", input=REC)
    with pytest.raises(ValueError, match="exists already"):
        rt.launch("dup", "echo", input=REC)


# ---- named queues -------------------------------------------------------------------------------------

def test_named_queue_registry(rt):
    skip_without_shared_memory(rt, "named channels")
    a = rt.launch("a", "echo", input=REC)
    rt.launch("b", "echo", input=REC, channels=["alerts"])
    assert rt.queue_names() == ["a.in", "a.out", "b.alerts", "b.in", "b.out"]
    q = rt.queue("a.in")
    assert q.dtype == REC and q.capacity == a.input.capacity
    with pytest.raises(KeyError):
        rt.queue("zz")
    side = rt.create_queue("side", REC, capacity=64)
    assert side.send(rec(1)) and rt.queue("side").receive(timeout=0)["seq"] == 1
    with pytest.raises(ValueError, match="exists already"):
        rt.create_queue("side", REC)
    with pytest.raises(ValueError, match="belongs to kernel"):
        rt.destroy_queue("a.in")
    rt.destroy_queue("side")
    with pytest.raises(rk.LifecycleError, match="destroyed"):
        side.send(rec(2))
    a.terminate()
    assert "a.in" not in rt.queue_names()
    assert [k.name for k in rt.kernels()] == ["b"]


def test_at_most_16_named_queues_per_kernel(rt):
    skip_without_shared_memory(rt, "named channels")
    hub = rt.launch("hub", "echo", input=REC, channels=[f"c{i}" for i in range(7)])  # in, out + 7 = 9
    feeders = [rt.launch(f"f{i}", "echo", input=REC) for i in range(8)]
    for f in feeders[:7]:
        rt.connect(f, hub)  # 16 with these
    with pytest.raises(ValueError, match="16"):
        rt.connect(feeders[7], hub)


def test_destroying_a_queue_releases_blocked_senders(rt):
    q = rt.create_queue("tiny", REC, capacity=16)
    for i in range(16):
        assert q.send(rec(i))
    errors = []

    def blocked():
        try:
            q.send(rec(99))
        except rk.LifecycleError as e:
            errors.append(e)

    t = threading.Thread(target=blocked)
    t.start()
    time.sleep(0.1)
    rt.destroy_queue("tiny")
    t.join(5)
    assert not t.is_alive() and errors


# ---- resources ---------------------------------------------------------------------------------------------

def _threads() -> int:
    """The thread count once two reads 20 ms apart agree: a joined worker can stay listed in
    /proc/self/task for a moment while the kernel reaps it."""
    last = len(os.listdir("/proc/self/task"))
    for _ in range(100):
        time.sleep(0.02)
        now = len(os.listdir("/proc/self/task"))
        if now == last:
            break
        last = now
    return last


@pytest.mark.slow
def test_launch_terminate_cycles_do_not_leak(rt):
    import resource

    def cycle(i):
        k = rt.launch("cyc", "echo", input=REC)
        k.activate()
        k.send(rec(i))
        assert k.receive(timeout=2)["seq"] == i
        assert k.terminate() == rk.KernelState.TERMINATED

    for i in range(50):  # warm up allocator pools and caches
        cycle(i)
    threads, rss = _threads(), resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    for i in range(1000):
        cycle(i)
    gc.collect()
    assert _threads() <= threads  # none left behind
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss < 20_000  # KiB
    assert rt.queue_names() == []


def test_idle_kernel_costs_next_to_no_cpu(rt):
    if rt.backend == "opencl":
        pytest.skip("persistent mode keeps a block resident and polling; on a CPU OpenCL device (PoCL) that "
                    "spins a host core by design -- parking when idle is the CPU backend's policy")
    k = rt.launch("sleepy", "echo", input=REC, grid=2)
    k.activate()
    time.sleep(0.1)  # past the spin phase
    c0, t0 = time.process_time(), time.monotonic()
    time.sleep(0.5)
    assert time.process_time() - c0 < 0.05 * (time.monotonic() - t0) * 2
    t1 = time.perf_counter()
    k.send(rec(1))
    assert k.receive(timeout=2)["seq"] == 1
    assert time.perf_counter() - t1 < 0.05  # a parked kernel wakes at once


def test_closing_the_runtime_terminates_active_kernels(backend):
    runtime = rk.Runtime(backend)
    ks = [runtime.launch(f"k{i}", "echo", input=REC) for i in range(3)]
    for k in ks:
        k.activate()
        k.send(rec(1))
    runtime.close()
    assert all(k.state == rk.KernelState.TERMINATED for k in ks)
    assert runtime.queue_names() == []
    with pytest.raises(rk.LifecycleError, match="closed"):
        runtime.launch("late", "echo", input=REC)


def test_receive_on_a_terminated_kernel_returns_at_once(rt):
    k = rt.launch("gone", "echo", input=REC)
    k.activate()
    k.send(rec(1))
    assert k.receive(timeout=2)["seq"] == 1
    k.send(rec(2))
    time.sleep(0.05)
    k.terminate()
    assert k.receive(timeout=None)["seq"] == 2  # what arrived is still there
    t0 = time.monotonic()
    assert k.receive(timeout=None) is None  # and then no waiting for replies that cannot come
    assert asyncio.run(k.receive_async(timeout=None)) is None
    assert time.monotonic() - t0 < 1.0
    with pytest.raises(rk.LifecycleError):
        asyncio.run(k.send_async(rec(3)))


def test_missing_opencl_loader_is_reported_not_fatal():
    code = ("import ringkernel as rk\n"
            "info = {b.name: b for b in rk.backends()}\n"
            "assert info['cpu'].available and not info['opencl'].available\n"
            "print(info['opencl'].detail)\n"
            "try:\n"
            "    rk.Runtime('opencl')\n"
            "except rk.BackendUnavailableError as e:\n"
            "    print('raised:', e)\n"
            "with rk.Runtime('auto') as rt:\n"
            "    print('auto:', rt.backend)\n")
    out = python_subprocess(code, RINGKERNEL_OPENCL_LIBRARY="/nonexistent/libOpenCL.so.1")
    assert "no OpenCL ICD loader could be loaded" in out.stdout
    assert "raised: backend 'opencl' is unavailable: no OpenCL ICD loader" in out.stdout
    assert "auto: cpu" in out.stdout


def test_modes(rt):
    with pytest.raises(ValueError, match="mode must be"):
        rt.launch("bad", "echo", input=REC, mode="sometimes")
    k = rt.launch("p", "echo", input=REC)
    assert k.mode == ("dispatch" if rt.backend == "opencl" and copies() else "persistent")
    if rt.backend in ("cpu", "cuda"):  # kernels there are always resident
        with pytest.raises(ValueError, match="dispatch"):
            rt.launch("d", "echo", input=REC, mode="dispatch")
        return
    # A device backend launches a dispatch-mode kernel whenever messages wait: same API, same results.
    d = rt.launch("d", "vector_add", input=VectorAddRequest, output=VectorAddResponse, block=16, mode="dispatch")
    assert d.mode == "dispatch"
    d.enable_telemetry()
    d.activate()
    a = np.arange(1, 11, dtype=np.float32)
    for op, fn in OPS.items():
        assert d.send(vreq(op, a, a))
        r = d.receive(timeout=5)
        assert r.status == 0
        np.testing.assert_allclose(r.result[:10], fn(a, a), rtol=1e-6)
    assert d.telemetry().messages_processed == 4
    e = rt.launch("e", "echo", input=REC, mode="dispatch")
    rt.connect(k, e)  # persistent -> dispatch over a K2K ring
    k.activate()
    e.activate()
    for i in range(20):
        k.send(rec(i))
    assert [e.receive(timeout=5)["seq"] for _ in range(20)] == list(range(20))
    assert d.terminate() == rk.KernelState.TERMINATED and e.terminate() == rk.KernelState.TERMINATED


def test_cuda_unavailability_says_why():
    info = availability()["cuda"]
    if info.available:
        pytest.skip("a CUDA backend is available here")
    assert "NVIDIA driver" in info.detail or "GPU" in info.detail
    assert "NVRTC" in info.detail
    with pytest.raises(rk.BackendUnavailableError) as err:
        rk.Runtime("cuda")
    assert info.detail.split(";")[0] in str(err.value)
    # A machine without a driver (forced): the package still imports and runs on the CPU.
    code = ("import ringkernel as rk\n"
            "info = {b.name: b for b in rk.backends()}\n"
            "print(info['cuda'].detail)\n"
            "with rk.Runtime('auto') as rt:\n"
            "    print('auto:', rt.backend)\n")
    out = python_subprocess(code, RINGKERNEL_CUDA_DRIVER="/nonexistent/libcuda.so.1")
    assert "no NVIDIA driver (/nonexistent/libcuda.so.1" in out.stdout and "auto: cpu" in out.stdout
