"""Compiled Python handlers (rk.jit, DESIGN §10) on the CPU backend: fields and fixed arrays, no reply, K2K emit,
buffers by handle (in range, and out of range: a failed message, no stray write), thread rank and count, a
handler that raises, compile errors at decoration, other backends refused, and the on-disk cache reused by a
second process."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("numba", reason="rk.jit needs Numba (pip install 'pyringkernel[jit]')")

import ringkernel as rk  # noqa: E402
from ringkernel.compiled import buffer, emit, thread_count, thread_rank  # noqa: E402


@rk.message
class Req:
    seq: rk.u64
    x: rk.f64
    v: rk.array(rk.f32, 4)
    handle: rk.u64
    n: rk.i64


@rk.message
class Resp:
    seq: rk.u64
    total: rk.f64
    ranks: rk.u32


@rk.jit(input=Req)
def double(msg, out):
    out.seq = msg.seq
    out.x = msg.x * 2.0
    for i in range(4):
        out.v[i] = msg.v[i] * msg.v[i]
    return msg.seq % 3 != 2  # every third request: no reply


@pytest.fixture
def cpu():
    with rk.Runtime("cpu") as rt:
        yield rt


@pytest.fixture(params=["cpu", pytest.param("cuda", marks=pytest.mark.cuda)])
def jrt(request):
    """A runtime of each backend that runs compiled handlers: the same handler, the same assertions. On cuda
    the handler is compiled for the GPU at launch (numba-cuda, NVRTC, nvJitLink) and runs on it."""
    if request.param == "cuda":
        _cuda_toolchain()
        status = {b.name: b for b in rk.backends()}["cuda"]
        if not status.available:
            pytest.skip(f"backend cuda unavailable here: {status.detail}")
    with rk.Runtime(request.param) as rt:
        yield rt


def req(seq, x=0.0, v=(0, 0, 0, 0), handle=0, n=0):
    return Req(seq=seq, x=x, v=list(v), handle=handle, n=n)


def test_scalar_fields_fixed_arrays_and_no_reply(jrt):
    assert isinstance(double, rk.JitHandler) and double.input is Req and double.output is Req
    k = jrt.launch("double", double)  # the record types come from the handler
    k.activate()
    for i in range(30):
        assert k.send(req(i, x=i + 0.5, v=(1, 2, 3, i)))
    got = [k.receive(timeout=5) for _ in range(20)]
    assert [g.seq for g in got] == [i for i in range(30) if i % 3 != 2]
    for g in got:
        assert g.x == 2 * (g.seq + 0.5)
        assert list(g.v) == [1.0, 4.0, 9.0, float(g.seq * g.seq)]
    assert k.receive(timeout=0.1) is None
    assert k.messages_processed == 30 and k.errors == 0


def test_launch_may_restate_the_types_but_not_change_them(cpu):
    k = cpu.launch("same", double, input=Req, output=Req.dtype)
    assert k.state == rk.KernelState.LAUNCHED
    with pytest.raises(TypeError, match="was compiled for input"):
        cpu.launch("other", double, input=Resp)
    with pytest.raises(TypeError, match="needs input="):
        cpu.launch("missing", "echo")


@rk.jit(input=Req)
def picky(msg, out):
    if msg.seq == 7:
        raise ValueError("seven")
    out.seq = msg.seq
    return True


def test_a_raise_fails_that_message_only(jrt):
    k = jrt.launch("picky", picky)
    k.activate()
    for i in range(10):
        k.send(req(i))
    assert [k.receive(timeout=5).seq for _ in range(9)] == [0, 1, 2, 3, 4, 5, 6, 8, 9]
    if jrt.backend == "cpu":
        assert k.errors == 1 and k.last_error == rk._core.ERR_HOST
        assert "compiled handler 'picky' raised" in k.last_error_message
    else:  # no exceptions on the GPU: the raise returns the handler-failure code
        assert k.errors == 1 and k.last_error == rk._core.ERR_HANDLER
    assert k.state == rk.KernelState.ACTIVE


@rk.jit(input=Req)
def split(msg, out):
    out.seq = msg.seq
    if msg.seq % 2 == 1:
        emit(1, out)  # channel 1: "odd"
        return False
    return True


def test_emit_on_a_named_channel_feeds_another_kernel(jrt):
    router = jrt.launch("router", split, channels=["odd"])
    sink = jrt.launch("sink", "echo", input=Req)
    jrt.connect(router, sink, channel="odd")
    for k in (router, sink):
        k.activate()
    for i in range(10):
        router.send(req(i))
    assert [router.receive(timeout=5).seq for _ in range(5)] == [0, 2, 4, 6, 8]
    assert [sink.receive(timeout=5).seq for _ in range(5)] == [1, 3, 5, 7, 9]
    assert router.errors == 0


@rk.jit(input=Req)
def stray(msg, out):
    out.seq = msg.seq
    return emit(5, out) >= 0  # the kernel has no channel 5: RK_ERR_CHANNEL (negative), no reply


def test_emit_on_a_channel_the_kernel_lacks_is_counted_not_fatal(jrt):
    k = jrt.launch("stray", stray)
    k.activate()
    k.send(req(1))
    assert k.receive(timeout=0.3) is None
    assert k.messages_processed == 1


@rk.jit(input=Req, output=Resp)
def sum_and_mark(msg, out):
    a = buffer(msg.handle, msg.n, np.float32)  # IndexError when the buffer is smaller than n floats
    s = 0.0
    for i in range(msg.n):
        s += a[i]
    a[msg.n - 1] = -1.0  # in range of the view
    out.seq = msg.seq
    out.total = s
    return True


def test_buffers_by_handle_in_and_out_of_range(jrt):
    data = np.arange(1, 9, dtype=np.float32)  # 8 floats: sum 36
    guard = jrt.buffer(np.full(8, 5, np.float32))
    buf = jrt.buffer(data)
    k = jrt.launch("sum", sum_and_mark)
    k.activate()
    k.send(req(1, handle=buf.handle, n=8))
    r = k.receive(timeout=5)
    assert r.seq == 1 and r.total == 36.0
    assert buf.read(np.float32)[7] == -1.0
    before = buf.read(np.float32).copy()
    for seq, handle, n in ((2, buf.handle, 9), (3, buf.handle + (1 << 32), 4), (4, 0, 1)):  # too big, stale, none
        k.send(req(seq, handle=handle, n=n))
    assert k.receive(timeout=0.3) is None
    assert k.errors == 3
    np.testing.assert_array_equal(buf.read(np.float32), before)  # nothing written by the failed messages
    np.testing.assert_array_equal(guard.read(np.float32), np.full(8, 5, np.float32))


@rk.jit(input=Req, output=Resp)
def overrun(msg, out):
    a = buffer(msg.handle, 4, np.float32)
    a[msg.n] = 99.0  # n = 4 is one past the view
    out.seq = msg.seq
    return True


def test_bounds_checked_indexing_fails_the_message_instead_of_writing_past_the_view(jrt):
    buf = jrt.buffer(np.zeros(8, np.float32))
    k = jrt.launch("overrun", overrun)
    k.activate()
    k.send(req(1, handle=buf.handle, n=3))
    assert k.receive(timeout=5).seq == 1
    k.send(req(2, handle=buf.handle, n=4))
    assert k.receive(timeout=0.3) is None and k.errors == 1
    np.testing.assert_array_equal(buf.read(np.float32), [0, 0, 0, 99, 0, 0, 0, 0])


@rk.jit(input=Req)
def poke(msg, out):
    out.seq = msg.seq
    out.v[msg.n] = msg.v[msg.n] + 10.0  # n in [-4, 3]: an element (negative from the end), else outside
    return True


def test_indexes_outside_a_fields_array_fail_the_message(jrt):
    k = jrt.launch("poke", poke)
    k.activate()
    for seq, n in ((1, 0), (2, 4), (3, -1), (4, -5), (5, 1 << 40)):
        k.send(req(seq, v=(1, 2, 3, 4), n=n))
    got = [k.receive(timeout=5) for _ in range(2)]
    assert [g.seq for g in got] == [1, 3]
    assert list(got[0].v) == [11, 0, 0, 0] and list(got[1].v) == [0, 0, 0, 14]
    assert k.receive(timeout=0.3) is None
    assert k.errors == 3 and k.messages_processed == 5


SCRATCH = 4


@rk.jit(input=Req, output=Resp)
def prefix(msg, out):
    t = np.zeros(SCRATCH, np.float64)  # on CUDA a zeroed thread-local array
    acc = 0.0
    for i in range(4):
        acc += msg.v[i]
        t[i] = acc
    t[msg.n] += 100.0  # n outside [-4, 3]: the message fails, nothing written
    out.seq = msg.seq
    out.total = t[0] + t[1] + t[2] + t[3]
    return True


def test_scratch_arrays_are_zeroed_and_their_indexes_checked(jrt):
    k = jrt.launch("prefix", prefix)
    k.activate()
    for seq, n in ((1, 0), (2, 4), (3, -1)):
        k.send(req(seq, v=(1, 2, 3, 4), n=n))
    got = [k.receive(timeout=5) for _ in range(2)]
    assert [(g.seq, g.total) for g in got] == [(1, 120.0), (3, 120.0)]  # 1 + 3 + 6 + 10, + 100
    assert k.receive(timeout=0.3) is None and k.errors == 1


def test_division_by_zero_fails_that_message_on_the_cpu(cpu):
    @rk.jit(input=Req)
    def ratio(msg, out):
        out.seq = msg.seq // msg.n  # Numba's error_model="python": ZeroDivisionError, as in Python
        return True

    k = cpu.launch("ratio", ratio)
    k.activate()
    for n in (2, 0, 4):
        k.send(req(8, n=n))
    assert [k.receive(timeout=5).seq for _ in range(2)] == [4, 2]
    assert k.errors == 1 and k.last_error == rk._core.ERR_HOST


@rk.jit(input=Req, output=Resp)
def ranks(msg, out):
    a = buffer(msg.handle, 8, np.int32)
    a[thread_rank()] += 1
    out.seq = msg.seq
    out.ranks = thread_count()
    return True


@rk.message
class Tally:
    count: rk.u64
    total: rk.f64
    last: rk.array(rk.f32, 4)


@rk.jit(input=Req, state=Tally)
def tally(msg, out, state):
    if thread_rank() == 0:  # every thread of a block sees the one record (and the one reply): one writes them
        state.count += 1
        state.total += msg.x
        for i in range(4):
            state.last[i] = msg.v[i]
        out.seq = state.count
        out.x = state.total
    return True


def test_a_handler_with_state_keeps_it_in_the_kernel_across_messages(jrt):
    """The state record lives in the kernel (device memory on cuda), is the same for every message, and
    actor_state() reads it back; block=2 checks one thread's write is the block's."""
    k = jrt.launch("tally", tally, block=2)
    assert k.state_type is not None
    k.activate()
    for i in range(10):
        assert k.send(req(i, x=float(i), v=(i, i + 1, i + 2, i + 3)))
    got = [k.receive(timeout=5) for _ in range(10)]
    assert [int(g.seq) for g in got] == list(range(1, 11))
    assert [g.x for g in got] == [sum(range(i + 1)) for i in range(10)]
    s = k.actor_state()
    assert (int(s.count), s.total, list(s.last)) == (10, 45.0, [9.0, 10.0, 11.0, 12.0])


def test_every_thread_of_a_block_runs_the_handler(jrt):
    counts = jrt.buffer(np.zeros(8, np.int32))
    k = jrt.launch("ranks", ranks, block=4)
    k.activate()
    for i in range(5):
        k.send(req(i, handle=counts.handle))
    got = [k.receive(timeout=5) for _ in range(5)]
    assert [g.ranks for g in got] == [4] * 5
    np.testing.assert_array_equal(counts.read(np.int32), [5, 5, 5, 5, 0, 0, 0, 0])


def test_compile_errors_come_at_decoration_with_numbas_message():
    with pytest.raises(rk.CompileError) as err:
        @rk.jit(input=Req)
        def missing_field(msg, out):
            out.seq = msg.nope
            return True
    assert "missing_field" in str(err.value) and "nope" in str(err.value) and err.value.log

    with pytest.raises(rk.CompileError, match="must return True .* or False"):
        @rk.jit(input=Req)
        def returns_a_number(msg, out):
            return msg.x

    with pytest.raises(rk.CompileError, match="python_object"):
        @rk.jit(input=Req)
        def python_object(msg, out):
            d = {"a": object()}
            return len(d) > 0

    with pytest.raises(TypeError, match=r"must take \(msg, out\)"):
        rk.jit(input=Req)(lambda msg: True)
    with pytest.raises(TypeError, match="structured record type"):
        rk.jit(input=np.float64)(lambda msg, out: True)
    with pytest.raises(TypeError, match="record types"):
        rk.jit(lambda msg, out: True)


def test_other_backends_are_refused_with_the_alternatives():
    opencl = {b.name: b for b in rk.backends()}["opencl"]
    if not opencl.available:
        pytest.skip(f"backend opencl unavailable here: {opencl.detail}")
    with rk.Runtime("opencl") as rt:
        with pytest.raises(rk.CompileError, match="run on cpu.*rk.Source"):
            rt.launch("d", double)
    with pytest.raises(rk.CompileError, match="cannot run on backend 'opencl'"):
        double.compile("opencl")
    compiled = double.compile("cpu")
    assert compiled.backend == "cpu" and compiled.entry and compiled.entry.encode() in compiled.code


def test_a_second_process_loads_the_compiled_handler_from_the_cache(tmp_path):
    module = tmp_path / "handlers_for_cache.py"
    module.write_text(textwrap.dedent("""
        import numpy as np
        import ringkernel as rk
        REQ = np.dtype([("seq", "<u8"), ("x", "<f8")])

        @rk.jit(input=REQ)
        def triple(msg, out):
            out.seq = msg.seq
            out.x = msg.x * 3.0
            return True

        with rk.Runtime("cpu") as rt:
            k = rt.launch("t", triple)
            k.activate()
            a = np.zeros((), REQ); a["seq"], a["x"] = 1, 2.0
            k.send(a[()])
            r = k.receive(timeout=5)
            assert r["x"] == 6.0
            print("ok")
    """))
    env = dict(os.environ, RINGKERNEL_CACHE_DIR=str(tmp_path / "cache"), NUMBA_DEBUG_CACHE="1",
               PYTHONPATH=os.pathsep.join([str(tmp_path), os.environ.get("PYTHONPATH", "")]))

    def run() -> str:
        out = subprocess.run([sys.executable, str(module)], capture_output=True, text=True, env=env, timeout=300)
        assert out.returncode == 0, out.stderr
        assert "ok" in out.stdout
        return out.stdout + out.stderr

    first = run()
    assert "data saved" in first and "rk_entry" in first
    second = run()
    loaded = [line for line in second.splitlines() if "data loaded" in line]
    assert any("_ringkernel_jit_" in line for line in loaded), second  # the C entry, not recompiled
    assert not any("data saved" in line and "_ringkernel_jit_" in line for line in second.splitlines())
    assert list((tmp_path / "cache" / "jit").glob("_ringkernel_jit_*.py"))


def test_the_pipeline_example_runs():
    example = Path(__file__).resolve().parents[2] / "examples" / "jit_pipeline.py"
    out = subprocess.run([sys.executable, str(example), "5000"], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert "5000 readings through parse -> score -> aggregate" in out.stdout
    alerts = int(out.stdout.split("alerts: ")[1].split()[0])
    assert 0 < alerts <= 5000 // 200  # the injected spikes, less the first reading of a sensor
    assert out.stdout.count("625 readings") == 8


def test_a_changed_module_constant_is_not_served_from_the_cache(tmp_path):
    module = tmp_path / "scaled_by_constant.py"
    module.write_text(textwrap.dedent("""
        import os, numpy as np, ringkernel as rk
        K = float(os.environ["K"])
        REQ = np.dtype([("seq", "<u8"), ("x", "<f8")])

        @rk.jit(input=REQ)
        def scale(msg, out):
            out.seq = msg.seq
            out.x = msg.x * K
            return True

        with rk.Runtime("cpu") as rt:
            k = rt.launch("s", scale)
            k.activate()
            a = np.zeros((), REQ); a["x"] = 1.0
            k.send(a[()])
            print(k.receive(timeout=5)["x"])
    """))
    cache = tmp_path / "cache"

    def run(k: str) -> float:
        env = dict(os.environ, K=k, RINGKERNEL_CACHE_DIR=str(cache))
        out = subprocess.run([sys.executable, str(module)], capture_output=True, text=True, env=env, timeout=300)
        assert out.returncode == 0, out.stderr
        return float(out.stdout.split()[-1])

    assert [run("2"), run("3"), run("2")] == [2.0, 3.0, 2.0]


# ---- CUDA, ahead of time (no GPU needed: numba-cuda, NVRTC and nvJitLink) ---------------------------------


def _cuda_toolchain():
    pytest.importorskip("numba.cuda", reason="compiling for CUDA needs numba-cuda (pip install 'pyringkernel[cuda]')")
    pytest.importorskip("cuda.bindings.nvjitlink", reason="linking for CUDA needs nvJitLink (the [cuda] extra)")


@rk.message
class Sample:
    seq: rk.u64
    x: rk.f64
    v: rk.array(rk.f32, 4)


@rk.jit(input=Sample)
def scaled(msg, out):
    out.seq = msg.seq
    out.x = msg.x * 2.0 + thread_rank() * 0 + thread_count() * 0
    for i in range(4):
        out.v[i] = msg.v[i] + 1.0
    return msg.seq % 2 == 0


@rk.jit(input=Sample)
def shifted(msg, out):
    out.seq = msg.seq + 1
    return True


def test_cuda_compile_links_the_handler_into_the_persistent_kernel():
    _cuda_toolchain()
    c = scaled.compile("cuda", arch="sm_90")
    assert isinstance(c, rk.CompiledHandler) and c.backend == "cuda" and c.arch == "sm_90"
    assert c.code[:4] == b"\x7fELF" and c.entry == "rk_persistent" and c.entry.encode() in c.code  # a cubin
    other = shifted.compile("cuda", arch="sm_90")
    assert other.code != c.code  # the handler is in the code
    assert scaled.compile("cuda", arch="sm_80").code != c.code


def test_cuda_compile_refuses_bad_arches_and_what_the_bridge_cannot_carry():
    _cuda_toolchain()
    for bad in ("sm90", "compute_90", "sm_60", "", 90, "gfx90a"):
        with pytest.raises(ValueError, match="sm_XY"):
            scaled.compile("cuda", arch=bad)
    with pytest.raises(ValueError, match="needs the GPU's architecture"):
        scaled.compile("cuda")

    @rk.jit(input=Req)
    def emits_the_request(msg, out):
        emit(1, msg)  # the CPU sends any record of the output type; CUDA sends `out`
        return False

    with pytest.raises(rk.CompileError, match=r"line \d+.*emit sends the output record: emit\(channel, out\)"):
        emits_the_request.compile("cuda", arch="sm_90")

    @rk.jit(input=Req)
    def catches(msg, out):
        try:
            out.seq = msg.seq
        except Exception:
            return False
        return True

    with pytest.raises(rk.CompileError, match="try/except is not available"):
        catches.compile("cuda", arch="sm_90")

    @rk.jit(input=Req)
    def slices(msg, out):
        out.v[0] = msg.v[1:3].sum()
        return True

    with pytest.raises(rk.CompileError, match="one element at a time"):
        slices.compile("cuda", arch="sm_90")

    @rk.jit(input=Req)
    def allocates(msg, out):
        out.x = np.ones(3).sum()  # fine on the CPU; numba-cuda would need a GPU to compile it
        return True

    with pytest.raises(rk.CompileError, match="only with a GPU present.*np.zeros"):
        allocates.compile("cuda", arch="sm_90")

    @rk.jit(input=Sample)
    def whole(msg, out):
        m = msg  # a record as a value: fine on the CPU, not through the CUDA bridge
        out.seq = m.seq
        return True

    with pytest.raises(rk.CompileError, match="through its fields"):
        whole.compile("cuda", arch="sm_90")


def test_cuda_compile_takes_emit_buffers_and_checked_indexes_and_caches_the_cubin(tmp_path, monkeypatch):
    _cuda_toolchain()
    monkeypatch.setenv("RINGKERNEL_CACHE_DIR", str(tmp_path))

    @rk.jit(input=Req, output=Resp)
    def everything(msg, out):
        a = buffer(msg.handle, msg.n, np.float32)
        s = 0.0
        for i in range(msg.n):
            s += a[i] * msg.v[i % 4]
        a[thread_rank()] += 1.0
        out.seq = msg.seq
        out.total = s
        out.ranks = thread_count()
        if msg.x < 0:
            raise ValueError("negative")
        return emit(1, out) >= 0

    first = everything.compile("cuda", arch="sm_90")
    assert first.code[:4] == b"\x7fELF" and first.name == "everything"
    cached = list(tmp_path.joinpath("jit").glob("cuda-*.cubin"))
    assert len(cached) == 1
    again = everything.compile("cuda", arch="sm_90")
    assert again.code == first.code and again.log.startswith("loaded from")
    assert everything.compile("cuda", arch="sm_100").code != first.code
    assert len(list(tmp_path.joinpath("jit").glob("cuda-*.cubin"))) == 2


def test_compiled_handlers_made_ahead_of_time_launch_only_where_they_were_built_for(cpu):
    _cuda_toolchain()
    assert cpu.device_target == ""
    for_cuda = double.compile("cuda", arch="sm_90")
    assert for_cuda.input is Req and for_cuda.output is Req
    with pytest.raises(rk.CompileError, match="compiled for backend 'cuda'.*not on 'cpu'"):
        cpu.launch("pre", for_cuda)
    with pytest.raises(TypeError, match="LLVM IR, for inspection"):
        cpu.launch("ir", double.compile("cpu"))


@pytest.mark.cuda
def test_a_handler_compiled_ahead_of_time_runs_on_the_gpu_it_was_built_for():
    _cuda_toolchain()
    status = {b.name: b for b in rk.backends()}["cuda"]
    if not status.available:
        pytest.skip(f"backend cuda unavailable here: {status.detail}")
    with rk.Runtime("cuda") as rt:
        target = rt.device_target
        assert target.startswith("sm_")
        compiled = double.compile("cuda", arch=target)
        k = rt.launch("pre", compiled)
        assert k.handler == "image:cuda:double"
        k.activate()
        for i in range(6):
            k.send(req(i, x=1.5, v=(1, 2, 3, 4)))
        got = [k.receive(timeout=5) for _ in range(4)]
        assert [g.seq for g in got] == [0, 1, 3, 4] and all(g.x == 3.0 for g in got)
        other = "sm_80" if target != "sm_80" else "sm_90"
        with pytest.raises(rk.CompileError, match="does not load"):
            rt.launch("wrong", double.compile("cuda", arch=other))


def test_the_handlers_the_gpu_runs_compile_for_cuda_here():
    """Every handler the cuda cases above launch goes through the CUDA bridge here too (no GPU needed), so a
    rewrite the GPU would refuse shows up on every machine, not only on a GPU loan."""
    _cuda_toolchain()
    for handler in (double, picky, split, stray, sum_and_mark, overrun, poke, prefix, ranks, tally):
        compiled = handler.compile("cuda", arch="sm_90")
        assert compiled.code[:4] == b"\x7fELF" and compiled.name == handler.__name__
