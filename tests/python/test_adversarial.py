"""What an adversarial run found (issue 15), one regression test per finding, on every backend where the
finding applies: lifecycle races, memory kept by ended kernels, accounting of what kernels drop, handler
return codes, buffer handles, handler faults, producer misuse, fork, and small API holes."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import threading
import time
import warnings

import numpy as np
import pytest

import ringkernel as rk

REC = np.dtype([("seq", "<u8"), ("value", "<f8")])
BACKENDS = ["cpu", "opencl", "opencl-copy"]


def rec(seq: int, value: float = 0.0):
    a = np.zeros((), REC)
    a["seq"], a["value"] = seq, value
    return a[()]


@pytest.fixture(params=BACKENDS)
def backend(request, monkeypatch) -> str:
    name = request.param
    if name == "opencl-copy":  # OpenCL as on a device without shared memory: dispatch mode with copies
        monkeypatch.setenv("RINGKERNEL_OPENCL_SVM", "0")
        name = "opencl"
    info = {b.name: b for b in rk.backends()}[name]
    if not info.available:
        pytest.skip(f"backend {request.param} unavailable here: {info.detail}")
    return name


def run_child(code: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True,
                          timeout=timeout)


# ---- 1. close() and terminate() racing; a handler stopping its own kernel ------------------------------

def test_close_during_a_concurrent_terminate_stops_every_kernel():
    release = threading.Event()

    def slow(msg):
        release.wait(30)
        return msg

    rt = rk.Runtime("cpu")
    s = rt.launch("slow", slow, input=REC)
    e = rt.launch("echo", "echo", input=REC)
    s.activate()
    e.activate()
    s.send(rec(1))
    time.sleep(0.2)  # the handler is inside its wait
    seen = {}
    t = threading.Thread(target=lambda: seen.setdefault("thread", s.terminate(timeout=3)))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # FAULTED is announced with a warning
        t.start()
        time.sleep(0.1)
        t0 = time.monotonic()
        rt.close(0.5)  # used to raise LifecycleError (TERMINATING) and leave 'echo' running
        took = time.monotonic() - t0
        t.join(10)
    assert took < 2.5, "the earlier deadline (close's) holds for both callers"
    assert seen["thread"] == rk.KernelState.FAULTED and s.state == rk.KernelState.FAULTED
    assert e.state == rk.KernelState.TERMINATED and rt.closed
    rt.close(0.5)  # idempotent
    release.set()


def test_concurrent_terminates_of_a_healthy_kernel_agree(backend):
    with rk.Runtime(backend) as rt:
        k = rt.launch("k", "echo", input=REC)
        k.activate()
        k.send(rec(1))
        assert k.receive(timeout=5)["seq"] == 1
        results = []
        threads = [threading.Thread(target=lambda: results.append(k.terminate(timeout=5))) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(10)
        assert results == [rk.KernelState.TERMINATED] * 4


def test_a_handler_can_terminate_its_own_kernel():
    box = {}

    def h(msg):
        box["in_handler"] = box["k"].terminate(timeout=2)
        return msg

    with rk.Runtime("cpu") as rt:
        k = rt.launch("selfie", h, input=REC)
        box["k"] = k
        k.activate()
        k.send(rec(5))
        assert k.receive(timeout=5)["seq"] == 5  # the message in hand is answered
        deadline = time.monotonic() + 5
        while k.state == rk.KernelState.TERMINATING and time.monotonic() < deadline:
            time.sleep(0.01)
        assert box["in_handler"] == rk.KernelState.TERMINATING  # returned at once: no waiting on itself
        assert k.state == rk.KernelState.TERMINATED
        with pytest.raises(rk.LifecycleError):
            k.send(rec(6))


def test_a_handler_referring_to_its_own_kernel_does_not_keep_it_alive():
    # The soak found it: the handler (held by the kernel) refers to the kernel, a cycle through C++ that
    # Python's collector cannot see, so every such kernel kept its rings (~1 MB) for good. A terminated
    # kernel now lets go of its handler.
    import gc
    import weakref

    with rk.Runtime("cpu") as rt:
        refs = []
        for i in range(3):
            box = {}
            k = rt.launch(f"selfie{i}", lambda m, box=box: (box["k"].terminate(timeout=2), m)[1], input=REC)
            box["k"] = k
            k.activate()
            k.send(rec(i))
            assert k.receive(timeout=5)["seq"] == i
            assert wait_for(lambda: k.state == rk.KernelState.TERMINATED)
            refs.append(weakref.ref(k))
            del k, box
        assert rt.kernels() == []  # the runtime forgets ended kernels (the last one too, here)
        assert wait_for(lambda: (gc.collect(), all(r() is None for r in refs))[1])


def test_an_abandoned_handler_returning_late_harms_nothing():
    # It used to crash (exit 139) once the abandoned handler returned while another runtime launched and
    # terminated kernels: the runtime was left half closed, its kernels pointing at it after it was gone.
    out = run_child("""
        import threading, time, warnings, gc, numpy as np, ringkernel as rk
        warnings.simplefilter("ignore", RuntimeWarning)
        REC = np.dtype([("seq", "<u8"), ("value", "<f8")])
        def slow(m):
            time.sleep(1.0)
            return m
        rt = rk.Runtime("cpu")
        s = rt.launch("slow", slow, input=REC); s.activate(); s.send(np.zeros((), REC)[()])
        e = rt.launch("e", "echo", input=REC); e.activate()
        time.sleep(0.1)
        t = threading.Thread(target=lambda: s.terminate(timeout=0.3)); t.start()
        rt.close(0.2); t.join()
        del rt, s, e; gc.collect()
        rt2 = rk.Runtime("cpu")
        t0, n = time.monotonic(), 0
        while time.monotonic() - t0 < 2.0:  # the abandoned handler returns during this
            k = rt2.launch(f"k{n}", "echo", input=REC); k.activate()
            k.send(np.zeros((), REC)[()]); assert k.receive(timeout=2) is not None
            assert k.terminate() == rk.KernelState.TERMINATED; n += 1
        rt2.close()
        print("ok", n)
    """)
    assert out.returncode == 0, (out.returncode, out.stderr[-2000:])
    assert out.stdout.startswith("ok ")


# ---- 2. ended kernels keep no memory in their runtime -------------------------------------------------

def test_a_runtime_launching_a_kernel_per_job_stays_flat(backend):
    def rss_kib() -> int:
        with open("/proc/self/status") as f:
            return next(int(line.split()[1]) for line in f if line.startswith("VmRSS:"))

    with rk.Runtime(backend) as rt:
        def job(i: int) -> None:
            k = rt.launch(f"job{i}", "echo", input=REC)  # distinct names, default options (~1 MB of rings)
            k.activate()
            k.send(rec(i))
            assert k.receive(timeout=5)["seq"] == i
            assert k.terminate() == rk.KernelState.TERMINATED

        for i in range(30):
            job(i)
        before = rss_kib()
        for i in range(30, 330):
            job(i)
        grown = rss_kib() - before
        assert grown < 40_000, f"RSS grew by {grown} KiB over 300 jobs"  # it was ~312 MB
        assert rt.kernels() == []


# ---- 3. what kernels drop reaches the queues' counters, on every backend ------------------------------

def wait_for(cond, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.005)
    return True


@pytest.mark.parametrize("bp", [rk.Backpressure.REJECT, rk.Backpressure.DROP_NEW, rk.Backpressure.DROP_OLDEST])
def test_replies_a_kernel_drops_are_in_the_output_counters(backend, bp):
    n = 400
    opts = rk.LaunchOptions(queue_capacity=16, dedup_window=0, backpressure=bp)
    with rk.Runtime(backend) as rt:
        k = rt.launch("k", "echo", input=REC, options=opts)
        k.activate()
        for i in range(n):  # nobody receives: the output fills and the kernel's backpressure decides
            # The input has the same policy: one request at a time, so that none is refused or lost there.
            assert k.send(rec(i), timeout=10)
            assert wait_for(lambda: k.messages_processed == i + 1)
        assert wait_for(lambda: k.output.stats.sent + k.output.stats.rejected == n)  # every reply is accounted
        got = []
        while (r := k.receive(timeout=0.2)) is not None:
            got.append(int(r["seq"]))
        out = k.output.stats
        assert out.sent == out.received + len(k.output) + out.dropped + out.expired
        assert out.received == len(got) > 0
        dropped_by_kernel = k.messages_dropped
        if bp == rk.Backpressure.REJECT:
            assert out.rejected == dropped_by_kernel == n - len(got) > 0 and out.sent == len(got)
        elif bp == rk.Backpressure.DROP_NEW:
            assert out.dropped == dropped_by_kernel == n - len(got) > 0 and out.sent == n
            assert got == sorted(got) and got[0] == 0  # the first ones stayed
        else:
            assert out.dropped == dropped_by_kernel == n - len(got) > 0 and out.sent == n
            assert got[-1] == n - 1  # the last ones stayed
        inq = k.input.stats
        assert inq.sent == inq.received == n and inq.expired == 0


def test_messages_a_kernel_expires_are_in_the_input_counters(backend):
    opts = rk.LaunchOptions(queue_capacity=64, dedup_window=0, ttl=0.05)
    with rk.Runtime(backend) as rt:
        k = rt.launch("k", "echo", input=REC, options=opts)  # LAUNCHED: consumes nothing yet
        for i in range(20):
            assert k.send(rec(i))
        time.sleep(0.2)
        k.activate()
        assert wait_for(lambda: k.input.stats.expired == 20)
        inq = k.input.stats
        assert inq.received == 0 and inq.sent == 20 and len(k.input) == 0  # it used to say received=20
        assert k.messages_dropped == 20 and k.receive(timeout=0.2) is None
        k.send(rec(99))  # a fresh one is answered
        assert k.receive(timeout=5)["seq"] == 99


# ---- 4. handler return codes -------------------------------------------------------------------------

RETURNS = r"""
typedef struct { rk_u64 seq; rk_f64 value; } rec;
int returns(rk_ctx *ctx, RK_GLOBAL const void *in, RK_LOCAL void *out) {
    RK_GLOBAL const rec *r = (RK_GLOBAL const rec *)in;
    ((RK_LOCAL rec *)out)->seq = r->seq;
    return (int)r->value;  /* whatever the request says */
}
"""


def test_handler_return_codes_are_never_mistaken(backend):
    with rk.Runtime(backend) as rt:
        k = rt.launch("r", rk.Source(RETURNS, entry="returns"), input=REC)
        k.activate()
        k.send(rec(1, -1000))  # was taken for the loop's own "expired" status: silently dropped as a TTL expiry
        k.send(rec(2, 2))      # was a silent "no reply"
        k.send(rec(3, 1))      # RK_REPLY
        assert k.receive(timeout=5)["seq"] == 3 and k.receive(timeout=0.2) is None
        assert wait_for(lambda: k.errors == 2)
        assert k.last_error == rk._core.ERR_RETURN  # the last one: a positive value that is not RK_REPLY
        assert k.input.stats.expired == 0 and k.input.stats.received == 3


# ---- 5. buffer handles belong to their runtime ---------------------------------------------------------

def test_a_buffer_handle_of_another_runtime_or_a_guessed_one_does_not_resolve(backend):
    from ringkernel.builtins import VectorAddRequest, VectorAddResponse, VectorOp

    with rk.Runtime(backend) as rt, rk.Runtime("cpu") as other:
        mine = rt.buffer(np.arange(100, dtype=np.float32))
        out = rt.buffer(np.zeros(100, dtype=np.float32))
        foreign = other.buffer(np.ones(100, dtype=np.float32))
        assert foreign.handle != mine.handle and (foreign.handle & 0xFFFFFFFF) == (mine.handle & 0xFFFFFFFF)
        k = rt.launch("add", "vector_add", input=VectorAddRequest, output=VectorAddResponse)
        k.activate()
        k.send(VectorAddRequest(op=VectorOp.ADD, length=100, a_buf=mine.handle, b_buf=mine.handle,
                                out_buf=out.handle))
        assert k.receive(timeout=5).status == 0
        np.testing.assert_array_equal(out.read(), 2 * np.arange(100, dtype=np.float32))
        for bad in (foreign.handle, (1 << 32) | (mine.handle & 0xFFFFFFFF), mine.handle + (1 << 32)):
            k.send(VectorAddRequest(op=VectorOp.ADD, length=100, a_buf=mine.handle, b_buf=mine.handle, out_buf=bad))
            assert k.receive(timeout=5).status == rk._core.ERR_BUFFER  # a per-message error
        np.testing.assert_array_equal(out.read(), 2 * np.arange(100, dtype=np.float32))  # nothing overwritten
        with pytest.raises(ValueError, match="another runtime"):
            rt._rt.read_buffer(foreign.handle, 0, 4)


# ---- 9. fork() -----------------------------------------------------------------------------------------

def test_a_forked_child_is_told_and_can_make_its_own_runtime():
    out = run_child("""
        import os, numpy as np, ringkernel as rk
        REC = np.dtype([("seq", "<u8"), ("value", "<f8")])
        rt = rk.Runtime("cpu")
        k = rt.launch("parent", "echo", input=REC); k.activate()
        had_opencl = {b.name: b for b in rk.backends()}["opencl"].available  # starts OpenCL (PoCL) here
        pid = os.fork()
        if pid == 0:
            code = 0
            try:
                k.send(np.zeros((), REC)[()]); code = 1
            except rk.LifecycleError as e:
                code = 0 if "fork()" in str(e) else 2
            try:
                rt.launch("again", "echo", input=REC); code = 3
            except rk.LifecycleError:
                pass
            with rk.Runtime("cpu") as mine:
                c = mine.launch("own", "echo", input=REC); c.activate()
                c.send(np.zeros((), REC)[()])
                if c.receive(timeout=2) is None: code = 4
            opencl = {b.name: b for b in rk.backends()}["opencl"]
            if had_opencl and (opencl.available or "fork()" not in opencl.detail):
                code = 5  # started in the parent: PoCL's threads are not in the child, refused with why
            os._exit(code)
        _, status = os.waitpid(pid, 0)
        k.send(np.zeros((), REC)[()])
        print("child", os.waitstatus_to_exitcode(status), "parent", k.receive(timeout=2) is not None)
        rt.close()
    """)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "child 0 parent True", out.stdout + out.stderr[-2000:]


# ---- 10. small holes -----------------------------------------------------------------------------------

def test_small_api_holes_are_closed():
    with rk.Runtime("cpu") as rt:
        t = rt.topic("ticks", REC)
        assert rt.topic("ticks", REC) is t and rt.topic("ticks") is t
        with pytest.raises(TypeError, match="carries"):
            rt.topic("ticks", np.dtype([("x", "<u1")]))  # used to return the old topic silently
        small = rt.launch("u8_kernel", "echo", input=np.dtype([("x", "<u1")]))
        with pytest.raises(TypeError, match="'u8_kernel'.*'ticks'"):
            t.subscribe(small)
        k = rt.create("created", "echo", input=REC)
        with pytest.raises(rk.LifecycleError, match=r"send\(\)"):
            k.activate()  # the text lists what is allowed now, send() included
        assert k.send(rec(1))  # accepted in CREATED: it waits until the kernel runs
        k.launch()
        k.activate()
        assert k.receive(timeout=5)["seq"] == 1
        buf = rt.buffer(16)
        with pytest.raises(ValueError, match=r"outside the buffer, whose range is \[0, 16\)"):
            rt._rt.read_buffer(buf.handle, 1, 2**64 - 1)  # used to be numpy's "negative dimensions"
        view = k.control_view()
        with pytest.raises(ValueError, match="read-only"):
            view["has_terminated"] = 1  # a fake has_terminated used to make terminate() say TERMINATED
        tel = k.telemetry_view() if k.enable_telemetry() is None else None
        with pytest.raises(ValueError, match="read-only"):
            tel["messages_processed"] = 7
        assert k.terminate() == rk.KernelState.TERMINATED


# ---- 7. single_producer / single_consumer misuse -------------------------------------------------------

@pytest.mark.parametrize("side", ["producer", "consumer"])
def test_a_second_thread_on_a_single_sided_queue_is_refused(side):
    q = rk.Queue(REC, capacity=64, **{f"single_{side}": True})
    q.send(rec(1)) if side == "producer" else None
    use = (lambda: q.send(rec(2))) if side == "producer" else (lambda: q.receive(timeout=0))
    use()  # the first thread owns that side
    errors = []

    def other():
        try:
            use()
        except rk.RingKernelError as e:
            errors.append(str(e))

    t = threading.Thread(target=other)
    t.start()
    t.join()
    assert errors and f"single_{side}=True" in errors[0] and "one thread" in errors[0]
    use()  # the owner goes on


def test_four_producers_on_a_single_producer_queue_lose_nothing_silently():
    # It used to lose 1 of 80,000 while every send() returned True: now the other threads are told.
    q = rk.Queue(REC, capacity=1 << 17, single_producer=True, dedup_window=0)
    accepted, refused = [0] * 4, [0] * 4

    def producer(p: int) -> None:
        for i in range(20_000):
            try:
                accepted[p] += bool(q.send(rec(p * 100_000 + i)))
            except rk.RingKernelError:
                refused[p] += 1

    threads = [threading.Thread(target=producer, args=(p,)) for p in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    got = q.receive_batch(1 << 17, timeout=0)
    assert len(got) == sum(accepted) == q.stats.sent
    assert sum(accepted) + sum(refused) == 80_000 and sum(refused) >= 20_000  # at least 3 threads refused


# ---- 8. OpenCL: abandoned kernels hold their compute units, and errors say so --------------------------

def test_opencl_counts_the_compute_units_abandoned_kernels_hold():
    if not {b.name: b for b in rk.backends()}["opencl"].available:
        pytest.skip("needs the OpenCL backend (PoCL)")
    # In a child with 3 compute units (PoCL: one per worker thread). Two dispatch kernels whose handler never
    # returns are abandoned; a healthy kernel still runs on the unit left, and a fourth launch is refused
    # with the reason instead of never running.
    out = run_child("""
        import os, time, warnings, numpy as np
        os.environ["POCL_MAX_PTHREAD_COUNT"] = "3"
        import ringkernel as rk
        warnings.simplefilter("ignore", RuntimeWarning)
        REC = np.dtype([("seq", "<u8"), ("value", "<f8")])
        SPIN = "int spin(rk_ctx *c, RK_GLOBAL const void *i, RK_LOCAL void *o) { while (rk_now_ns(c) > 0) {} return 0; }"
        rt = rk.Runtime("opencl")
        faults = []
        def running(k):  # the launch took the message (PoCL compiles a program at its first launch)
            t0 = time.monotonic()
            while k.input.stats.received == 0 and time.monotonic() - t0 < 20: time.sleep(0.01)
            time.sleep(0.1)
        for n in range(2):
            k = rt.launch(f"spin{n}", rk.Source(SPIN, entry="spin"), input=REC, mode="dispatch")
            k.activate(); k.send(np.zeros((), REC)[()]); running(k)
            assert k.terminate(timeout=0.3) == rk.KernelState.FAULTED
            faults.append(k.fault)
        ok = rt.launch("ok", "echo", input=REC, mode="dispatch"); ok.activate()
        ok.send(np.zeros((), REC)[()])
        answered = ok.receive(timeout=5) is not None
        assert ok.terminate(timeout=2) == rk.KernelState.TERMINATED
        spin = rt.launch("spin2", rk.Source(SPIN, entry="spin"), input=REC, mode="dispatch")
        spin.activate(); spin.send(np.zeros((), REC)[()]); running(spin)
        assert spin.terminate(timeout=0.3) == rk.KernelState.FAULTED
        try:
            rt.launch("late", "echo", input=REC, mode="dispatch"); refused = ""
        except ValueError as e:
            refused = str(e)
        print("FAULT", faults[0])
        print("ANSWERED", answered)
        print("REFUSED", refused)
        os._exit(0)
    """, timeout=120)
    assert out.returncode == 0, out.stderr[-3000:]
    lines = dict(line.split(" ", 1) for line in out.stdout.splitlines() if " " in line)
    assert "still inside the handler" in lines["FAULT"] and "launch of 1 work-group" in lines["FAULT"]
    assert lines["ANSWERED"] == "True"
    assert "compute units" in lines["REFUSED"], out.stdout


# ---- 6. a native handler's fault fails its message (or, under a policy, faults its kernel), not the process ----

FAULTS = {
    "divide": ("SIGFPE", "volatile int zero = 0; int n = (int)((RK_GLOBAL const rec *)in)->seq + 7; "
                         "((RK_LOCAL rec *)out)->seq = (rk_u64)(n / zero);"),
    "null": ("SIGSEGV", "*(volatile int *)0 = 1;"),
    # 4 KiB into a 16-byte reply: it runs into the guard page after the reply buffers instead of the heap.
    "overrun": ("SIGSEGV", "for (int i = 0; i < 4096; ++i) ((volatile RK_LOCAL rk_u8 *)out)[i] = 0xAB;"),
}


@pytest.mark.parametrize("case", sorted(FAULTS))
def test_a_native_handler_fault_fails_its_message_not_the_process(case):
    signal_name, body = FAULTS[case]
    out = run_child(f"""
        import numpy as np, ringkernel as rk, warnings, time
        warnings.simplefilter("ignore", RuntimeWarning)
        REC = np.dtype([("seq", "<u8"), ("value", "<f8")])
        SRC = '''typedef struct {{ rk_u64 seq; rk_f64 value; }} rec;
        int bad(rk_ctx *ctx, RK_GLOBAL const void *in, RK_LOCAL void *out) {{
            if (((RK_GLOBAL const rec *)in)->seq == 1) {{ {body} }}
            *(RK_LOCAL rec *)out = *(RK_GLOBAL const rec *)in; return RK_REPLY; }}'''
        def msg(i):
            r = np.zeros((), REC); r["seq"] = i; return r[()]
        with rk.Runtime("cpu") as rt:
            # Without a policy: the message is a dead letter with the signal, the kernel goes on.
            k = rt.launch("bad", rk.Source(SRC, entry="bad"), input=REC); k.activate()
            for i in range(4): k.send(msg(i))
            got = [int(k.receive(timeout=5)["seq"]) for _ in range(3)]
            print("REPLIES", got)
            d = k.dead_letters()
            print("DEAD", [int(x.message["seq"]) for x in d], d[0].error if d else "")
            print("STATE", k.state.name)
            # RestartPolicy(max_restarts=0): the first fault faults the kernel; drain() has the message.
            f = rt.launch("bad2", rk.Source(SRC, entry="bad"), input=REC, restart=rk.RestartPolicy(max_restarts=0))
            f.activate(); f.send(msg(0)); f.send(msg(1))
            t0 = time.monotonic()
            while f.state != rk.KernelState.FAULTED and time.monotonic() - t0 < 10: time.sleep(0.01)
            print("FSTATE", f.state.name)
            print("FAULT", f.fault)
            try:
                f.send(msg(2)); print("SEND accepted")
            except rk.LifecycleError as e:
                print("SEND refused")
            print("TERMINATE", f.terminate(timeout=2).name, f.last_error == rk._core.ERR_FAULT)
            print("DRAIN", [int(m["seq"]) for m in f.drain()])
        print("EXIT clean")
    """)
    assert out.returncode == 0, (out.returncode, out.stdout, out.stderr[-2000:])
    lines = dict(line.split(" ", 1) for line in out.stdout.splitlines() if " " in line)
    assert lines["REPLIES"] == "[0, 2, 3]" and lines["STATE"] == "ACTIVE"
    assert lines["DEAD"].startswith("[1] ") and signal_name in lines["DEAD"] and "handler 'bad'" in lines["DEAD"]
    assert lines["FSTATE"] == "FAULTED"
    assert signal_name in lines["FAULT"] and "max_restarts=0" in lines["FAULT"]
    assert lines["SEND"] == "refused" and lines["TERMINATE"] == "FAULTED True"
    assert lines["DRAIN"] == "[1]" and lines["EXIT"] == "clean"
