"""Actor state and checkpoints (DESIGN §11): a state record per kernel that every handler kind reaches,
consistent copies of it (actor_state) and of the unprocessed input (checkpoint), restore into another
kernel or runtime, and restore's refusals (nothing changed)."""

from __future__ import annotations

import struct
import threading
import time
import zlib

import numpy as np
import pytest

import ringkernel as rk
from kernel_helpers import REC, copies, rec, skip_without_shared_memory

ACC = np.dtype([("count", "<u8"), ("total", "<f8")])

# The same running sum in the device dialect: thread 0 updates the state (grid=1: one block, no race).
ACC_SOURCE = r"""
typedef struct { rk_u64 seq; rk_f64 value; } rec;
typedef struct { rk_u64 count; rk_f64 total; } acc;
int accumulate(rk_ctx *ctx, RK_GLOBAL const void *in, RK_LOCAL void *out) {
    RK_GLOBAL const rec *r = (RK_GLOBAL const rec *)in;
    RK_GLOBAL acc *st = (RK_GLOBAL acc *)rk_state(ctx);
    if (rk_thread_rank(ctx) != 0) return RK_NO_REPLY;
    if (st == RK_NULL || rk_state_size(ctx) != sizeof(acc)) return RK_ERR_HANDLER;
    if (r->value < 0) return RK_ERR_INPUT;
    st->count += 1;
    st->total += r->value;
    RK_LOCAL rec *o = (RK_LOCAL rec *)out;
    o->seq = r->seq;
    o->value = st->total;
    return RK_REPLY;
}
"""


def acc_py(msg, state):
    if msg["value"] < 0:
        raise ValueError(f"negative value {msg['value']}")
    state["count"] += 1
    state.total += msg["value"]  # attribute access works too (a numpy record)
    out = np.zeros((), REC)
    out["seq"], out["value"] = msg["seq"], state["total"]
    return out[()]


def handler_for(rt):
    return acc_py if rt.backend == "cpu" else rk.Source(ACC_SOURCE, entry="accumulate")


def drain(k, n, timeout=10.0):
    got = []
    deadline = time.monotonic() + timeout
    while len(got) < n and time.monotonic() < deadline:
        r = k.receive(timeout=0.5)
        if r is not None:
            got.append(r)
    return got


@pytest.mark.parametrize("kind", ["python", "source"])
def test_state_is_zeroed_shared_by_handlers_and_copied_consistently(rt, kind):
    skip_without_shared_memory(rt, "kernel state and checkpoints")
    if kind == "python" and rt.backend != "cpu":
        pytest.skip("Python callables run on the cpu backend only")
    handler = acc_py if kind == "python" else rk.Source(ACC_SOURCE, entry="accumulate")
    k = rt.launch("acc", handler, input=REC, state=ACC)
    assert k.state == rk.KernelState.LAUNCHED  # the lifecycle state, unchanged by actor state
    s0 = k.actor_state()
    assert isinstance(s0, np.void) and s0.dtype == ACC and s0["count"] == 0 and s0["total"] == 0.0
    k.activate()
    for i in range(50):
        assert k.send(rec(i, float(i)))
    replies = drain(k, 50)
    assert [int(r["seq"]) for r in replies] == list(range(50))
    assert [float(r["value"]) for r in replies] == list(np.cumsum(np.arange(50.0)))  # the state carried over
    s = k.actor_state()
    assert (int(s["count"]), float(s["total"])) == (50, float(sum(range(50))))
    s["count"] = 999  # a copy: writing it changes nothing in the kernel
    assert int(k.actor_state()["count"]) == 50


def test_state_of_a_message_class_comes_back_as_one(cpu_rt):
    @rk.message
    class Totals:
        count: rk.u64
        total: rk.f64

    def add(msg, state):
        state.count += 1
        state.total += msg["value"]

    k = cpu_rt.launch("totals", add, input=REC, state=Totals)
    k.activate()
    for i in range(10):
        k.send(rec(i, 0.5))
    deadline = time.monotonic() + 5
    while k.messages_processed < 10 and time.monotonic() < deadline:
        time.sleep(0.005)
    st = k.actor_state()
    assert isinstance(st, Totals) and (st.count, st.total) == (10, 5.0)
    assert k.state_type is Totals


def test_batch_handlers_get_the_state_too(cpu_rt):
    def add_batch(records, state):
        state["count"] += len(records)
        state["total"] += float(records["value"].sum())
        return records

    k = cpu_rt.launch("batched", rk.batch(add_batch, max_size=64), input=REC, state=ACC)
    k.activate()
    arr = np.zeros(500, REC)
    arr["seq"] = np.arange(500)
    arr["value"] = 1.0
    assert k.send_batch(arr) == 500
    got = 0
    deadline = time.monotonic() + 10
    while got < 500 and time.monotonic() < deadline:
        got += len(k.receive_batch(500, timeout=0.5))
    assert got == 500
    assert tuple(k.actor_state().tolist()) == (500, 500.0)


def test_state_arguments_are_checked(cpu_rt):
    with pytest.raises(TypeError, match="Python objects"):
        cpu_rt.launch("objs", acc_py, input=REC, state=np.dtype([("o", object)]))
    with pytest.raises(ValueError, match="at most 1048576 bytes"):
        cpu_rt.launch("huge", acc_py, input=REC, state=np.dtype([("a", "<u1", (1 << 20) + 1)]))
    k = cpu_rt.launch("stateless", "echo", input=REC)
    with pytest.raises(ValueError, match="has no state"):
        k.actor_state()
    assert k.state_type is None


def test_copy_mode_refuses_state_with_a_clear_error(monkeypatch):
    from kernel_helpers import opencl_or_skip

    opencl_or_skip()
    monkeypatch.setenv("RINGKERNEL_OPENCL_SVM", "0")
    with rk.Runtime("opencl") as rt:
        with pytest.raises(ValueError, match="state= needs memory the host and the device share"):
            rt.launch("acc", rk.Source(ACC_SOURCE, entry="accumulate"), input=REC, state=ACC)


# ---- checkpoints -------------------------------------------------------------------------------------------


def test_checkpoint_restore_into_a_new_runtime_continues_the_running_sum(rt):
    skip_without_shared_memory(rt, "kernel state and checkpoints")
    k = rt.launch("acc", handler_for(rt), input=REC, state=ACC)
    k.activate()
    for i in range(20):
        k.send(rec(i, 1.0))
    assert len(drain(k, 20)) == 20
    k.deactivate()
    for i in range(20, 30):  # accepted, not processed: they travel in the checkpoint
        assert k.send(rec(i, 1.0))
    blob = k.checkpoint()
    assert isinstance(blob, bytes)
    assert k.state == rk.KernelState.DEACTIVATED and len(k.input) == 10  # taken without consuming anything
    with rk.Runtime(rt.backend) as rt2:
        k2 = rt2.launch("acc", handler_for(rt2), input=REC, state=ACC)
        k2.restore(blob)
        assert tuple(k2.actor_state().tolist()) == (20, 20.0)
        k2.activate()
        for i in range(30, 35):
            k2.send(rec(i, 1.0))
        replies = drain(k2, 15)
        assert [int(r["seq"]) for r in replies] == list(range(20, 35))  # restored input first, in order
        assert [float(r["value"]) for r in replies] == [float(v) for v in range(21, 36)]
        assert tuple(k2.actor_state().tolist()) == (35, 35.0)


def test_restored_messages_keep_their_ids(cpu_rt):
    k = cpu_rt.launch("src", "echo", input=REC)
    for i in range(5):
        k.send(rec(i), id=1000 + i)
    blob = k.checkpoint()
    k2 = cpu_rt.launch("dst", "echo", input=REC)
    k2.restore(blob)
    k2.activate()
    envs = [k2.output.receive(timeout=5, with_envelope=True) for _ in range(5)]
    assert [int(m["seq"]) for m, _ in envs] == list(range(5))
    assert [e.correlation_id for _, e in envs] == [1000 + i for i in range(5)]


def test_checkpoint_under_load_is_consistent(cpu_rt):
    """While a sender keeps the kernel busy, a checkpoint's state and its pending input meet exactly: the
    state counts messages 0..c-1 and the input holds c, c+1, ... (grid=1, FIFO)."""
    def count(msg, state):
        assert int(msg["seq"]) == int(state["count"])  # in order, none skipped
        state["count"] += 1
        state["total"] += float(msg["seq"])
        return msg

    k = cpu_rt.launch("busy", count, input=REC, state=ACC,
                      options=rk.LaunchOptions(queue_capacity=1024, dedup_window=0))
    k.activate()
    stop = threading.Event()

    def send():
        i = 0
        while not stop.is_set():
            if k.send(rec(i), timeout=0.05):
                i += 1

    def drain_out():
        while not stop.is_set():
            k.receive_batch(1024, timeout=0.05)

    threads = [threading.Thread(target=send), threading.Thread(target=drain_out)]
    for t in threads:
        t.start()
    try:
        blobs = []
        for _ in range(5):
            time.sleep(0.05)
            blobs.append(k.checkpoint())
    finally:
        stop.set()
        for t in threads:
            t.join()
    assert k.errors == 0
    for blob in blobs:
        with rk.Runtime("cpu") as rt2:
            seen = []
            k2 = rt2.launch("replay", lambda m, s: seen.append(int(m["seq"])), input=REC, state=ACC,
                            options=rk.LaunchOptions(queue_capacity=1024, dedup_window=0))
            k2.restore(blob)
            c, total = k2.actor_state().tolist()
            assert total == float(sum(range(c)))
            pending = len(k2.input)
            k2.activate()
            deadline = time.monotonic() + 5
            while len(seen) < pending and time.monotonic() < deadline:
                time.sleep(0.005)
            assert seen == list(range(c, c + pending))


def _corrupt(blob: bytes, offset: int) -> bytes:
    b = bytearray(blob)
    b[offset] ^= 0x40
    return bytes(b)


def _recrc(body: bytes) -> bytes:
    return body + struct.pack("<I", zlib.crc32(body))


def test_restore_refuses_corrupt_and_mismatched_blobs_and_changes_nothing(cpu_rt):
    k = cpu_rt.launch("acc", acc_py, input=REC, state=ACC)
    k.activate()
    for i in range(4):
        k.send(rec(i, 2.0))
    assert len(drain(k, 4)) == 4
    k.deactivate()
    k.send(rec(4, 2.0))
    blob = k.checkpoint()
    assert zlib.crc32(blob[:-4]) == struct.unpack("<I", blob[-4:])[0]  # zlib's CRC-32
    assert blob[:8] == b"RKCKPT01"

    target = cpu_rt.launch("target", acc_py, input=REC, state=ACC)
    target.send(rec(77, 1.0))  # what the target holds must survive every refusal
    before = (target.actor_state().tolist(), len(target.input))

    bad = {
        "checksum": _corrupt(blob, 70),
        "truncated": blob[:-9],
        "empty": b"",
        "not a checkpoint": _recrc(b"X" * 8 + blob[8:-4]),
        "format version": _recrc(blob[:8] + struct.pack("<I", 2) + blob[12:-4]),
        "length": _recrc(blob[:-4] + b"\0"),
    }
    for what, data in bad.items():
        with pytest.raises(rk.MessageFormatError, match="nothing was changed"):
            target.restore(data)
        assert (target.actor_state().tolist(), len(target.input)) == before, what

    other_state = cpu_rt.launch("other_state", lambda m, s: None, input=REC, state=np.dtype([("n", "<u4")]))
    with pytest.raises(rk.MessageFormatError, match="state"):
        other_state.restore(blob)
    other_input = cpu_rt.launch("other_input", lambda m, s: None, input=np.dtype([("a", "<u4")]), state=ACC)
    with pytest.raises(rk.MessageFormatError, match="input records"):
        other_input.restore(blob)
    stateless = cpu_rt.launch("stateless", "echo", input=REC)
    with pytest.raises(rk.MessageFormatError, match="state"):
        stateless.restore(blob)
    with pytest.raises(TypeError, match="bytes of a checkpoint"):
        target.restore("not bytes")

    small = cpu_rt.launch("small", acc_py, input=REC, state=ACC, options=rk.LaunchOptions(queue_capacity=16))
    many = cpu_rt.launch("many", acc_py, input=REC, state=ACC)
    for i in range(20):
        many.send(rec(i))
    with pytest.raises(ValueError, match="room for 16"):
        small.restore(many.checkpoint())
    assert small.actor_state().tolist() == (0, 0.0) and len(small.input) == 0

    target.restore(blob)  # the real one still goes in
    assert target.actor_state().tolist() == (4, 8.0) and len(target.input) == 2


def test_checkpoint_and_state_of_stopped_kernels(cpu_rt):
    k = cpu_rt.launch("acc", acc_py, input=REC, state=ACC)
    k.activate()
    k.send(rec(0, 3.0))
    assert len(drain(k, 1)) == 1
    k.terminate()
    assert k.actor_state().tolist() == (1, 3.0)  # the state as the blocks left it
    with pytest.raises(rk.LifecycleError, match="drain"):
        k.checkpoint()
    with pytest.raises(rk.LifecycleError):
        k.restore(b"")


def test_a_handler_that_does_not_return_makes_the_pause_fail_and_the_kernel_goes_on(cpu_rt):
    release = threading.Event()

    def slow(msg, state):
        if int(msg["seq"]) == 0:
            release.wait(10)
        state["count"] += 1
        return msg

    k = cpu_rt.launch("slow", slow, input=REC, state=ACC)
    k.activate()
    k.send(rec(0))
    deadline = time.monotonic() + 5
    while k.input.stats.received == 0 and time.monotonic() < deadline:
        time.sleep(0.005)
    t0 = time.monotonic()
    with pytest.raises(rk.KernelFaultError, match="did not pause within 0.2 s"):
        k.checkpoint(timeout=0.2)
    assert time.monotonic() - t0 < 2.0
    release.set()
    k.send(rec(1))
    assert len(drain(k, 2)) == 2  # still active: the failed pause resumed it
    assert k.state == rk.KernelState.ACTIVE and k.actor_state().tolist()[0] == 2


def test_pause_does_not_lose_or_repeat_messages_with_several_blocks(cpu_rt):
    k = cpu_rt.launch("wide", "echo", input=REC, grid=4,
                      options=rk.LaunchOptions(queue_capacity=4096, dedup_window=0))
    k.activate()
    n = 20000
    arr = np.zeros(n, REC)
    arr["seq"] = np.arange(n)
    sent = 0
    got = []
    snaps = 0
    deadline = time.monotonic() + 60
    while (sent < n or len(got) < n) and time.monotonic() < deadline:
        if sent < n:
            sent += k.send_batch(arr[sent:sent + 512], timeout=0)
        got.extend(int(s) for s in k.receive_batch(1024, timeout=0.01)["seq"])
        if snaps < 50:
            k.checkpoint()
            snaps += 1
    assert sorted(got) == list(range(n))


# ---- compiled (rk.jit) handlers with state ---------------------------------------------------------------


def test_jit_handlers_take_the_state_as_a_third_argument(cpu_rt):
    pytest.importorskip("numba", reason="rk.jit needs Numba (pip install 'pyringkernel[jit]')")

    @rk.jit(input=REC, state=ACC)
    def running(msg, out, state):
        state.count += 1
        state.total += msg.value
        out.seq = msg.seq
        out.value = state.total
        return True

    k = cpu_rt.launch("running", running)  # the state type comes with the handler
    assert k.state_type is ACC
    k.activate()
    for i in range(100):
        k.send(rec(i, 0.5))
    replies = drain(k, 100)
    assert [float(r["value"]) for r in replies] == [0.5 * (i + 1) for i in range(100)]
    assert k.actor_state().tolist() == (100, 50.0)
    blob = k.checkpoint()
    k2 = cpu_rt.launch("running2", running, state=ACC)  # restating it is allowed
    k2.restore(blob)
    k2.activate()
    k2.send(rec(100, 0.5))
    assert float(k2.receive(timeout=5)["value"]) == 50.5
    with pytest.raises(TypeError, match="compiled for state"):
        cpu_rt.launch("wrong", running, state=np.dtype([("n", "<u4")]))


def test_jit_state_arguments_are_checked():
    pytest.importorskip("numba", reason="rk.jit needs Numba (pip install 'pyringkernel[jit]')")
    with pytest.raises(TypeError, match=r"needs its type: @rk.jit\(..., state=StateType\)"):
        rk.jit(input=REC)(lambda msg, out, state: True)
    with pytest.raises(TypeError, match=r"must take \(msg, out, state\)"):
        rk.jit(input=REC, state=ACC)(lambda msg, out: True)

    def bad(msg, out, state):
        state.nope += 1
        return True

    with pytest.raises(rk.CompileError, match="state fields: count, total"):
        rk.jit(input=REC, state=ACC)(bad)

    def fine(msg, out, state):
        state.count += 1
        return True

    handler = rk.jit(input=REC, state=ACC)(fine)
    pytest.importorskip("numba.cuda", reason="compiling for CUDA needs numba-cuda (the [cuda] extra)")
    pytest.importorskip("cuda.bindings.nvjitlink", reason="linking for CUDA needs nvJitLink (the [cuda] extra)")
    compiled = handler.compile("cuda", arch="sm_90")  # the state's fields pass through the bridge as pointers
    assert compiled.code[:4] == b"\x7fELF" and compiled.state is ACC
