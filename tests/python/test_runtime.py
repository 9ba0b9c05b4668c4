"""Ring kernels end to end: the behavioural suite every backend runs (parametrised by backend).

A backend that cannot run on this machine is skipped with rk.backends()' reason; the CPU backend
runs everywhere. Python-callable handlers are a CPU-backend feature and are tested there only.
"""

from __future__ import annotations

import asyncio
import gc
import os
import threading
import time
import warnings

import numpy as np
import pytest

import ringkernel as rk
from ringkernel.builtins import VectorAddRequest, VectorAddResponse, VectorOp

# "opencl-copy": the OpenCL backend as on a device that cannot share memory with the host while a
# kernel runs (RINGKERNEL_OPENCL_SVM=0 hides PoCL's SVM): dispatch mode with copies.
# The cuda cases carry the `cuda` mark at collection, so `pytest -m cuda` selects them too.
BACKENDS = ["cpu", "opencl", "opencl-copy", pytest.param("cuda", marks=pytest.mark.cuda)]
REC = np.dtype([("seq", "<u8"), ("value", "<f8")])


def _availability() -> dict:
    return {b.name: b for b in rk.backends()}


@pytest.fixture(params=BACKENDS)
def backend(request, monkeypatch) -> str:
    name = request.param
    if name == "opencl-copy":
        monkeypatch.setenv("RINGKERNEL_OPENCL_SVM", "0")
        name = "opencl"
    info = _availability()[name]
    if not info.available:
        pytest.skip(f"backend {request.param} unavailable here: {info.detail}")
    return name


def copies() -> bool:
    """Whether OpenCL runs as on a device without shared memory (dispatch mode with copies)."""
    return os.environ.get("RINGKERNEL_OPENCL_SVM") == "0"


def skip_without_shared_memory(rt, what: str) -> None:
    if rt.backend == "opencl" and copies():
        pytest.skip(f"{what} need memory the host and the device share (fine-grained SVM); without it the "
                    "OpenCL backend refuses them with a clear error (tested in test_copy_mode_refusals)")


@pytest.fixture
def rt(backend):
    with rk.Runtime(backend) as runtime:
        yield runtime


def rec(seq: int, value: float = 0.0):
    a = np.zeros((), REC)
    a["seq"], a["value"] = seq, value
    return a[()]


def vreq(op, a, b=None, **kw):
    n = len(a)
    pad = lambda v: list(v) + [0.0] * (25 - len(v))  # noqa: E731
    if n > 25:
        return VectorAddRequest(op=op, length=n, **kw)
    return VectorAddRequest(op=op, length=n, a=pad(a), b=pad(b), **kw)


# ---- runtime and backends ---------------------------------------------------------------------------

def test_backends_never_raise_and_cpu_is_there():
    infos = rk.backends()
    assert [b.name for b in infos][:1] == ["cpu"] and infos[0].available
    for b in infos:
        assert b.detail


def test_auto_picks_an_available_backend():
    with rk.Runtime("auto") as runtime:
        assert _availability()[runtime.backend].available


def test_unavailable_or_unknown_backend_is_a_clear_error():
    for b in rk.backends():
        if not b.available:
            with pytest.raises(rk.BackendUnavailableError, match=b.name):
                rk.Runtime(b.name)
    with pytest.raises(ValueError, match="'auto', 'cpu'"):
        rk.Runtime("tpu")


# ---- lifecycle --------------------------------------------------------------------------------------

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


# ---- built-in handlers ----------------------------------------------------------------------------------

OPS = {VectorOp.ADD: np.add, VectorOp.SUBTRACT: np.subtract, VectorOp.MULTIPLY: np.multiply,
       VectorOp.DIVIDE: np.divide}


@pytest.mark.parametrize("n", [10, 25])
def test_vector_add_inline(rt, n):
    k = rt.launch("adder", "vector_add", input=VectorAddRequest, output=VectorAddResponse, block=32)
    k.activate()
    a = np.arange(1, n + 1, dtype=np.float32)
    b = np.full(n, 4, np.float32)
    for op, fn in OPS.items():
        assert k.send(vreq(op, a, b))
        r = k.receive(timeout=2)
        assert r.status == 0 and r.length == n
        np.testing.assert_allclose(r.result[:n], fn(a, b), rtol=1e-6)


def test_vector_add_through_buffers(rt):
    k = rt.launch("adder", "vector_add", input=VectorAddRequest, output=VectorAddResponse, block=32)
    k.activate()
    a = np.linspace(1, 100, 100, dtype=np.float32)
    b = np.full(100, 2, np.float32)
    ba, bb, bo = rt.buffer(a), rt.buffer(b), rt.buffer(100 * 4)
    for op, fn in OPS.items():
        assert k.send(vreq(op, a, a_buf=ba.handle, b_buf=bb.handle, out_buf=bo.handle))
        r = k.receive(timeout=2)
        assert r.status == 0 and r.length == 100 and r.out_buf == bo.handle
        np.testing.assert_allclose(bo.read(np.float32), fn(a, b), rtol=1e-6)


def test_vector_add_bad_requests_are_answered_and_counted(rt):
    k = rt.launch("adder", "vector_add", input=VectorAddRequest, output=VectorAddResponse)
    k.activate()
    small = rt.buffer(16)
    k.send(VectorAddRequest(op=VectorOp.ADD, length=100, a_buf=small.handle, b_buf=small.handle,
                            out_buf=small.handle))
    r = k.receive(timeout=2)
    assert r.status == rk._core.ERR_BUFFER and r.length == 0
    k.send(VectorAddRequest(op=VectorOp.ADD, length=100, a_buf=123, b_buf=456, out_buf=789))
    assert k.receive(timeout=2).status == rk._core.ERR_BUFFER
    assert k.errors == 2 and k.last_error == rk._core.ERR_BUFFER


def test_builtin_layouts_match_the_message_classes():
    layouts = rk._core.builtin_layouts()
    for cls, key in ((VectorAddRequest, "vector_add_request"), (VectorAddResponse, "vector_add_response")):
        assert cls.dtype.itemsize == layouts[key]["size"]
        for field, (offset, size) in layouts[key]["fields"].items():
            assert cls.dtype.fields[field][1] == offset, field
            assert cls.dtype.fields[field][0].itemsize == size, field


def test_buffers(rt):
    buf = rt.buffer(np.arange(100, dtype=np.float32))
    assert buf.handle != 0 and buf.nbytes == 400
    np.testing.assert_array_equal(buf.read(), np.arange(100, dtype=np.float32))
    raw = rt.buffer(64)
    assert raw.read().dtype == np.uint8 and raw.read().sum() == 0
    raw.write(np.full(16, 7, np.uint8), offset=48)
    assert raw.read().sum() == 7 * 16 and raw.read()[47] == 0
    with pytest.raises(ValueError, match=r"outside the buffer, whose range is \[0, 64\)"):
        raw.write(np.zeros(32, np.uint8), offset=40)
    if raw.on_device:  # CUDA: device memory, no host view
        assert raw.device >= 0 and raw.__dlpack_device__() == (2, raw.device)
        cai = buf.__cuda_array_interface__
        assert cai["shape"] == (100,) and cai["typestr"] == "<f4" and cai["data"][0] != 0
        with pytest.raises(TypeError, match="CUDA device"):
            raw.numpy()
    else:
        raw.numpy()[:] = 7
        assert raw.numpy(np.uint8).sum() == 7 * 64 and raw.read().sum() == 7 * 64
        assert not hasattr(raw, "__cuda_array_interface__")
    with pytest.raises(ValueError, match="size"):
        rt.buffer(0)
    with pytest.raises(TypeError):
        rt.buffer("big")


def test_buffer_views_outlive_the_runtime(backend):
    if backend == "cuda":
        pytest.skip("CUDA buffers are device memory, which has no host view to outlive the runtime")
    with rk.Runtime(backend) as runtime:
        view = runtime.buffer(np.ones(10, np.float64)).numpy()
    gc.collect()
    assert view.sum() == 10.0


# ---- portable source ------------------------------------------------------------------------------------

DOUBLE = r"""
typedef struct { rk_u64 seq; rk_f64 value; } rec;
int twice(rk_ctx *ctx, RK_GLOBAL const void *in, RK_LOCAL void *out) {
    RK_GLOBAL const rec *r = (RK_GLOBAL const rec *)in;
    RK_LOCAL rec *o = (RK_LOCAL rec *)out;
    o->seq = r->seq;
    o->value = 2.0 * r->value;
    return RK_REPLY;
}
"""

BLOCK_SUM = r"""
typedef struct { rk_u64 seq; rk_f64 value; } rec;
int block_sum(rk_ctx *ctx, RK_GLOBAL const void *in, RK_LOCAL void *out) {
    RK_LOCAL rk_f64 *part = (RK_LOCAL rk_f64 *)rk_shared(ctx);
    rk_u32 t = rk_thread_rank(ctx), n = rk_thread_count(ctx);
    part[t] = ((RK_GLOBAL const rec *)in)->value * (t + 1);
    rk_barrier(ctx);
    for (rk_u32 s = 1; s < n; s *= 2) {         /* tree reduction across the block */
        rk_f64 mine = (t % (2 * s) == 0 && t + s < n) ? part[t + s] : 0.0;
        rk_barrier(ctx);
        part[t] += mine;
        rk_barrier(ctx);
    }
    if (t == 0) {
        ((RK_LOCAL rec *)out)->seq = ((RK_GLOBAL const rec *)in)->seq;
        ((RK_LOCAL rec *)out)->value = part[0];
    }
    return RK_REPLY;
}
"""


def test_source_handler(rt):
    k = rt.launch("twice", rk.Source(DOUBLE, entry="twice"), input=REC)
    k.activate()
    k.send(rec(4, 1.25))
    r = k.receive(timeout=5)
    assert r["seq"] == 4 and r["value"] == 2.5


def test_source_handler_threads_cooperate_across_barriers(rt):
    k = rt.launch("sum", rk.Source(BLOCK_SUM, entry="block_sum"), input=REC, block=16)
    k.activate()
    for i in range(10):
        k.send(rec(i, 1.0))
        r = k.receive(timeout=5)
        assert r["seq"] == i and r["value"] == sum(range(1, 17))


def test_source_compile_error_carries_the_log(rt):
    # gcc and clang say "undeclared"; NVRTC says "identifier ... is undefined"; PoCL's clang "undeclared".
    with pytest.raises(rk.CompileError, match="undeclared|undefined") as info:
        rt.launch("bad", rk.Source("int h(rk_ctx *c, const void *i, void *o) { return missing_thing; }",
                                   entry="h"), input=REC)
    assert "missing_thing" in str(info.value)
    assert "bad.in" not in rt.queue_names()


def test_source_cache_is_reused(rt, tmp_path):
    if rt.backend != "cpu":
        pytest.skip("the on-disk cache belongs to the CPU backend's host compiler; device programs are cached "
                    "per runtime in memory")
    with rk.Runtime(rt.backend, cache_dir=str(tmp_path)) as r2:
        r2.launch("one", rk.Source(DOUBLE, entry="twice"), input=REC)
        files = sorted(p.name for p in tmp_path.iterdir())
        r2.launch("two", rk.Source(DOUBLE, entry="twice"), input=REC)
        assert sorted(p.name for p in tmp_path.iterdir()) == files and len(files) == 1


def test_no_compiler_is_a_clear_error(backend):
    if backend != "cpu":
        pytest.skip("the host C compiler is the CPU backend's")
    with rk.Runtime(backend, compiler="/nonexistent/cc") as runtime:
        with pytest.raises(rk.CompileError, match="/nonexistent/cc"):
            runtime.launch("x", rk.Source(DOUBLE, entry="twice"), input=REC)


def test_source_argument_checks():
    with pytest.raises(TypeError):
        rk.Source("")
    with pytest.raises(ValueError, match="identifier"):
        rk.Source("int x;", entry="not valid")


# ---- Python handlers (CPU) --------------------------------------------------------------------------------

@pytest.fixture
def cpu_rt():
    with rk.Runtime("cpu") as runtime:
        yield runtime


def test_python_handler_per_message(cpu_rt):
    k = cpu_rt.launch("py", lambda r: VectorAddResponse(length=r.length * 2), input=VectorAddRequest,
                      output=VectorAddResponse)
    k.activate()
    for i in range(20):
        k.send(VectorAddRequest(length=i))
        assert k.receive(timeout=2).length == 2 * i


def test_python_handler_per_batch(cpu_rt):
    def doubled(recs):
        out = recs.copy()
        out["value"] *= 2
        return out

    k = cpu_rt.launch("pyb", rk.batch(doubled, max_size=256), input=REC)
    k.activate()
    batch = np.zeros(5000, REC)
    batch["seq"] = np.arange(5000)
    batch["value"] = np.arange(5000)
    assert k.send_batch(batch) == 5000
    got = k.receive_batch(5000, timeout=2)
    while len(got) < 5000:
        got = np.concatenate([got, k.receive_batch(5000, timeout=2)])
    np.testing.assert_array_equal(got["value"], batch["value"] * 2)


def test_python_handler_failures_are_counted_and_visible(cpu_rt):
    def flaky(r):
        if r["seq"] % 2:
            raise ValueError(f"odd {r['seq']}")
        return r

    k = cpu_rt.launch("flaky", flaky, input=REC)
    k.activate()
    for i in range(10):
        k.send(rec(i))
    got = [k.receive(timeout=2)["seq"] for _ in range(5)]
    assert got == [0, 2, 4, 6, 8]
    assert k.receive(timeout=0.05) is None
    assert k.errors == 5 and k.last_error == rk._core.ERR_HOST
    assert "ValueError: odd 9" in k.last_error_message
    assert k.state == rk.KernelState.ACTIVE


def test_python_handler_returning_the_wrong_type_is_an_error(cpu_rt):
    k = cpu_rt.launch("wrong", lambda r: "nope", input=REC)
    k.activate()
    k.send(rec(1))
    assert k.receive(timeout=0.2) is None
    assert k.errors == 1 and "TypeError" in k.last_error_message


def test_python_handler_needs_block_1(cpu_rt):
    with pytest.raises(ValueError, match="block must be 1"):
        cpu_rt.launch("x", lambda r: r, input=REC, block=4)


def test_terminate_returns_when_the_handler_never_does(cpu_rt):
    release = threading.Event()
    entered = threading.Event()

    def stuck(r):
        entered.set()
        release.wait(30)

    k = cpu_rt.launch("stuck", stuck, input=REC)
    k.activate()
    k.send(rec(1))
    assert entered.wait(5)
    t0 = time.monotonic()
    with pytest.warns(RuntimeWarning, match="did not stop"):
        state = k.terminate(timeout=0.2)
    assert time.monotonic() - t0 < 3
    assert state == rk.KernelState.FAULTED and "did not stop" in k.fault
    with pytest.raises(rk.LifecycleError):
        k.send(rec(2))
    release.set()


def test_channels_from_python_handler(cpu_rt):
    def route(r):
        if r["seq"] % 2:
            return {"odd": r}
        return r

    k = cpu_rt.launch("router", route, input=REC, channels=["odd"])
    k.activate()
    for i in range(6):
        k.send(rec(i))
    evens = [k.receive(timeout=2)["seq"] for _ in range(3)]
    odds = [k.channel("odd").receive(timeout=2)["seq"] for _ in range(3)]
    assert evens == [0, 2, 4] and odds == [1, 3, 5]


# ---- K2K and topics --------------------------------------------------------------------------------------

def test_three_kernel_pipeline_keeps_causal_order(rt):
    a = rt.launch("a", rk.Source(DOUBLE, entry="twice"), input=REC)
    b = rt.launch("b", "echo", input=REC)
    c = rt.launch("c", rk.Source(DOUBLE, entry="twice"), input=REC)
    assert rt.connect(a, b) == "a->b"
    assert rt.connect(b, c) == "b->c"
    assert {"a->b", "b->c"} <= set(rt.queue_names())
    for k in (a, b, c):
        k.activate()
    stamps = []
    for i in range(50):
        a.send(rec(i, float(i)))
    for i in range(50):
        r, env = c.receive(timeout=2, with_envelope=True)
        assert r["seq"] == i and r["value"] == 4.0 * i
        assert env.source == c.id
        stamps.append(env.timestamp)
    assert stamps == sorted(stamps) and len(set(stamps)) == 50
    ca, cb, cc = (int(k.control_view()["hlc"]) for k in (a, b, c))
    assert ca < cb < cc  # each hop's clock moved past the stamp it answered
    with pytest.raises(rk.LifecycleError, match="pipeline"):
        a.receive(timeout=0)


def test_connect_checks_types(rt):
    a = rt.launch("a", "echo", input=REC)
    v = rt.launch("v", "vector_add", input=VectorAddRequest, output=VectorAddResponse)
    with pytest.raises(TypeError, match="cannot connect"):
        rt.connect(a, v)
    with pytest.raises(KeyError, match="channel"):
        rt.connect(a, a, channel="nope")


def test_topic_fans_out(rt):
    src = rt.launch("src", "echo", input=REC)
    subs = [rt.launch(f"s{i}", "echo", input=REC) for i in range(3)]
    t = rt.topic("ticks", REC)
    for s in subs[:2]:
        t.subscribe(s)
    rt.connect(src, t)
    t.subscribe(subs[2])
    for k in [src, *subs]:
        k.activate()
    for i in range(5):
        src.send(rec(i))
    expected = [0, 1, 2, 3, 4, 100]
    try:
        assert t.publish(rec(100)) == 3
    except ValueError as e:
        # The host and a kernel both publishing into one topic's rings needs CPU-GPU atomics on one ring
        # word; CUDA on PCIe x86 hosts has none, and refuses the host's publish with why (test_cuda).
        if rt.backend != "cuda" or "native CPU-GPU atomics" not in str(e):
            raise
        expected.remove(100)
    for s in subs:
        seqs = sorted(s.receive(timeout=2)["seq"] for _ in range(len(expected)))
        assert seqs == expected
    assert t.subscribers == ["s0", "s1", "s2"]


# ---- telemetry ---------------------------------------------------------------------------------------------

@pytest.mark.filterwarnings("ignore:telemetry of kernel")
def test_telemetry_counts_what_was_sent(rt):
    k = rt.launch("tel", "echo", input=REC)
    with pytest.raises(rk.TelemetryNotEnabledError):
        k.telemetry()
    with pytest.warns(RuntimeWarning, match="not enabled"):
        k.reset_telemetry()
    k.enable_telemetry()
    k.activate()
    view = k.telemetry_view()
    assert view.dtype == rk.layout.TELEMETRY_DTYPE
    n = 300
    for i in range(n):
        k.send(rec(i))
    for _ in range(n):
        assert k.receive(timeout=2) is not None
    t = k.telemetry()
    assert t.messages_processed == n == int(view["messages_processed"])  # the view is live
    assert 0 < t.min_latency_ns <= t.avg_latency_ns <= t.max_latency_ns
    assert t.last_processed_timestamp > 0 and t.error_code == 0
    k.reset_telemetry()
    assert k.telemetry().messages_processed == 0 and int(view["messages_processed"]) == 0
    k.disable_telemetry()
    with pytest.raises(rk.TelemetryNotEnabledError):
        k.telemetry()


def test_fast_telemetry_polling_warns_rate_limited(rt):
    k = rt.launch("poll", "echo", input=REC)
    k.enable_telemetry()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for _ in range(1000):
            k.telemetry()
    polls = [w for w in caught if "10 kHz" in str(w.message)]
    assert len(polls) == 1


# ---- asyncio -------------------------------------------------------------------------------------------------

def test_send_and_receive_async(rt):
    k = rt.launch("aio", "echo", input=REC, options=rk.LaunchOptions(queue_capacity=16, dedup_window=0))

    async def main():
        async with rk.Runtime(rt.backend) as inner:
            assert inner.backend == rt.backend
        assert await k.receive_async(timeout=0.05) is None  # LAUNCHED: nothing comes, and it times out
        k.activate()
        results = []

        async def consumer():
            for _ in range(100):
                results.append((await k.receive_async(timeout=5))["seq"])

        task = asyncio.create_task(consumer())
        for i in range(100):
            assert await k.send_async(rec(i), timeout=5)
        await task
        return results

    assert asyncio.run(main()) == list(range(100))


def test_receive_async_does_not_spin(rt):
    k = rt.launch("idle", "echo", input=REC)
    k.activate()

    async def main():
        t0, c0 = time.monotonic(), time.thread_time()
        assert await k.receive_async(timeout=0.5) is None
        return time.monotonic() - t0, time.thread_time() - c0

    wall, cpu = asyncio.run(main())
    assert wall >= 0.45
    assert cpu < 0.2 * wall  # the waiting thread is not busy: the event loop sleeps on the eventfd


# ---- resources ---------------------------------------------------------------------------------------------

def _threads() -> int:
    return len(os.listdir("/proc/self/task"))


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
    assert _threads() == threads
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


def test_send_async_honours_the_backpressure_strategy(rt):
    k = rt.launch("rej", "echo", input=REC,
                  options=rk.LaunchOptions(queue_capacity=16, dedup_window=0, backpressure=rk.Backpressure.REJECT))

    async def fill():
        return [await k.send_async(rec(i), timeout=1.0) for i in range(20)]

    results = asyncio.run(fill())  # LAUNCHED: nothing is consumed, the ring fills
    assert results == [True] * 16 + [False] * 4
    assert k.input.stats.rejected == 4 and k.input.stats.timed_out == 0


def test_named_channel_feeds_another_kernel(cpu_rt):
    def split(r):
        return {"odd": r} if r["seq"] % 2 else r

    router = cpu_rt.launch("router", split, input=REC, channels=["odd"])
    odd_sink = cpu_rt.launch("odd_sink", "echo", input=REC)
    assert cpu_rt.connect(router, odd_sink, channel="odd") == "router.odd->odd_sink"
    for k in (router, odd_sink):
        k.activate()
    for i in range(6):
        router.send(rec(i))
    assert [router.receive(timeout=2)["seq"] for _ in range(3)] == [0, 2, 4]  # the main output stays
    assert [odd_sink.receive(timeout=2)["seq"] for _ in range(3)] == [1, 3, 5]


def _python(code: str, **env: str):
    """Run `code` in a fresh interpreter with `env` added; it must succeed."""
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                         env=dict(os.environ, **env))
    assert out.returncode == 0, out.stderr
    return out


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
    out = _python(code, RINGKERNEL_OPENCL_LIBRARY="/nonexistent/libOpenCL.so.1")
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


def test_cross_backend_pipeline_through_the_host_bridge(backend):
    # cpu (Python handler) -> <backend> (built-in) -> cpu (source handler): two runtimes, two bridges.
    with rk.Runtime("cpu") as host, rk.Runtime(backend) as dev:
        first = host.launch("first", lambda r: np.array((r["seq"], r["value"] + 1.0), REC)[()], input=REC)
        middle = dev.launch("middle", rk.Source(DOUBLE, entry="twice"), input=REC)
        last = host.launch("last", "echo", input=REC)
        assert "host bridge" in host.connect(first, middle)
        assert "host bridge" in dev.connect(middle, last)
        for k in (first, middle, last):
            k.activate()
        for i in range(200):
            first.send(rec(i, float(i)))
        prev = None
        for i in range(200):
            r, env = last.receive(timeout=5, with_envelope=True)
            assert r["seq"] == i and r["value"] == 2.0 * (i + 1)
            assert prev is None or env.timestamp > prev
            prev = env.timestamp
        with pytest.raises(rk.LifecycleError, match="pipeline"):
            first.receive(timeout=0)


def _opencl_or_skip():
    info = _availability()["opencl"]
    if not info.available:
        pytest.skip(f"backend opencl unavailable here: {info.detail}")


def test_opencl_compute_units_are_counted_per_device_and_given_back():
    _opencl_or_skip()
    with rk.Runtime("opencl") as a, rk.Runtime("opencl") as b:
        # The device's compute units come from POCL_MAX_PTHREAD_COUNT (12, see conftest).
        big = a.create("big", "echo", input=REC, grid=10, mode="persistent")
        # The reservation is per device for the whole process: the other runtime sees it ...
        with pytest.raises(ValueError, match="compute units"):
            b.launch("more", "echo", input=REC, grid=3, mode="persistent")
        # ... and it is given back when the kernel terminates, even one that never launched.
        assert big.terminate() == rk.KernelState.TERMINATED
        k = b.launch("more", "echo", input=REC, grid=3, mode="persistent")
        k.activate()
        k.send(rec(1))
        assert k.receive(timeout=5)["seq"] == 1


def test_opencl_dispatch_kernels_feeding_each_other_do_not_deadlock():
    _opencl_or_skip()
    with rk.Runtime("opencl", mode="dispatch") as rt:
        small = rk.LaunchOptions(queue_capacity=16, dedup_window=0)
        a = rt.launch("a", "echo", input=REC, options=small)
        b = rt.launch("b", "echo", input=REC, options=small)
        rt.connect(a, b)
        for k in (a, b):
            k.activate()
        got = []

        def drain():
            while len(got) < 200:
                r = b.receive(timeout=5)
                if r is None:
                    return
                got.append(int(r["seq"]))

        t = threading.Thread(target=drain)
        t.start()
        for i in range(200):
            assert a.send(rec(i), timeout=5)
        t.join(30)
        assert got == list(range(200))
        b.deactivate()  # a dispatch kernel stops taking messages when deactivated, mid-stream too
        before = b.messages_processed
        for i in range(20):
            a.send(rec(i), timeout=5)
        time.sleep(0.2)
        assert b.messages_processed == before


def test_host_bridge_into_a_rejecting_queue_neither_spins_nor_blocks_close():
    with rk.Runtime("cpu") as src_rt, rk.Runtime("cpu") as dst_rt:
        src = src_rt.launch("src", "echo", input=REC)
        dst = dst_rt.launch("dst", "echo", input=REC, options=rk.LaunchOptions(
            queue_capacity=16, dedup_window=0, backpressure=rk.Backpressure.REJECT))
        src_rt.connect(src, dst)
        src.activate()  # dst stays inactive: its input fills, the rest is refused and counted
        for i in range(100):
            src.send(rec(i))
        deadline = time.monotonic() + 5
        while dst.input.stats.rejected < 84 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert dst.input.stats.rejected == 84 and len(dst.input) == 16
        t0 = time.monotonic()
        src_rt.close()
        assert time.monotonic() - t0 < 2


def test_copy_mode_refusals(monkeypatch):
    _opencl_or_skip()
    monkeypatch.setenv("RINGKERNEL_OPENCL_SVM", "0")
    assert "dispatch mode with copies" in _availability()["opencl"].detail
    with rk.Runtime("opencl") as rt:
        with pytest.raises(ValueError, match="persistent mode needs memory the host and the device share"):
            rt.launch("p", "echo", input=REC, mode="persistent")
        with pytest.raises(ValueError, match="named channels need shared memory"):
            rt.launch("c", "echo", input=REC, channels=["alerts"])
        k = rt.launch("v", "vector_add", input=VectorAddRequest, output=VectorAddResponse)
        assert k.mode == "dispatch"


def test_cuda_unavailability_says_why():
    info = _availability()["cuda"]
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
    out = _python(code, RINGKERNEL_CUDA_DRIVER="/nonexistent/libcuda.so.1")
    assert "no NVIDIA driver (/nonexistent/libcuda.so.1" in out.stdout and "auto: cpu" in out.stdout
