"""The CUDA backend: what runs anywhere (buffers through DLPack, options, availability, NVRTC discovery)
and what needs a GPU (marked ``cuda``; skipped with the reason elsewhere). The backend-parametrised
behavioural suite (test_runtime.py and its sibling files) runs on CUDA too."""

from __future__ import annotations

import math
import os
import subprocess
import sys
import time

import numpy as np
import pytest

import ringkernel as rk
from kernel_helpers import DOUBLE  # the shared suite's source handler (tests/python is on sys.path)

REC = np.dtype([("seq", "<u8"), ("value", "<f8")])


def rec(seq: int, value: float = 0.0):
    return np.array((seq, value), REC)[()]


def _cuda():
    info = {b.name: b for b in rk.backends()}["cuda"]
    if not info.available:
        pytest.skip(f"backend cuda unavailable here: {info.detail}")


@pytest.fixture
def gpu():
    _cuda()
    with rk.Runtime("cuda") as runtime:
        yield runtime


# ---- anywhere ------------------------------------------------------------------------------------------


def test_host_buffers_are_shared_through_dlpack():
    with rk.Runtime("cpu") as rt:
        buf = rt.buffer(np.arange(12, dtype=np.float32).reshape(3, 4))
        assert buf.__dlpack_device__() == (1, 0) and not buf.on_device
        shared = np.from_dlpack(buf)
        assert shared.shape == (3, 4) and shared.dtype == np.float32
        buf.numpy()[1, 2] = 100.0  # one memory: the DLPack view sees the write
        assert shared[1, 2] == 100.0
        buf.write(np.full(4, -1, np.float32), offset=0)
        np.testing.assert_array_equal(shared[0], -1)
        with pytest.raises(BufferError, match="does not copy"):
            buf.__dlpack__(copy=True)
        with pytest.raises(BufferError, match="not"):
            buf.__dlpack__(dl_device=(2, 0))
        structured = rt.buffer(np.zeros(3, REC))
        with pytest.raises(BufferError, match="dtype"):
            np.from_dlpack(structured)
        # DLPack's stream argument: host memory has nothing to order, so only "none" (None, -1) is valid.
        assert type(buf.__dlpack__(stream=-1)).__name__ == "PyCapsule"
        with pytest.raises(BufferError, match="stream must be None or -1"):
            buf.__dlpack__(stream=7)
    del buf
    assert shared.sum() == 66 - 6 + 100 - 6 - 4  # the view outlives the runtime


def test_cuda_module_loading_is_reported_without_touching_a_driver():
    from ringkernel import _core

    mode = _core.cuda_module_loading()
    assert mode in ("eager", "lazy", "unknown")
    if not {b.name: b for b in rk.backends()}["cuda"].available:
        assert mode == "unknown"  # no driver loaded: CUDA has not started in this process


def test_idle_backoff_option_is_validated():
    o = rk.LaunchOptions()
    assert o.idle_backoff == pytest.approx(1e-6)
    o.idle_backoff = 0
    assert o.idle_backoff == 0
    o.idle_backoff = 1e-3
    assert "idle_backoff=0.001" in repr(o)
    assert rk.LaunchOptions(idle_backoff=5e-6) != rk.LaunchOptions()
    for bad in (2e-3, -1e-9, math.nan):
        with pytest.raises(ValueError, match=r"idle_backoff must be in \[0, 0.001"):
            rk.LaunchOptions(idle_backoff=bad)


def test_cuda_detail_names_the_driver_and_nvrtc():
    info = {b.name: b for b in rk.backends()}["cuda"]
    assert "NVRTC" in info.detail
    wheel = os.environ.get("RINGKERNEL_NVRTC_LIBRARY", "")
    if wheel and os.path.isfile(wheel):
        # The package found the nvidia-cuda-nvrtc wheel ([cuda] extra) and the backend loaded it.
        assert "NVRTC 1" in info.detail and wheel in info.detail
    if not info.available:
        assert info.detail.startswith("CUDA backend unavailable: ")


# ---- on a GPU --------------------------------------------------------------------------------------------

# Busy for `value` milliseconds of device clock per message, then echoes.
BUSY = r"""
typedef struct { rk_u64 seq; rk_f64 value; } rec;
int busy(rk_ctx *ctx, RK_GLOBAL const void *in, RK_LOCAL void *out) {
    RK_GLOBAL const rec *r = (RK_GLOBAL const rec *)in;
    rk_u64 until = rk_now_ns(ctx) + (rk_u64)(r->value * 1e6);
    while (rk_now_ns(ctx) < until) {}
    ((RK_LOCAL rec *)out)->seq = r->seq;
    ((RK_LOCAL rec *)out)->value = r->value;
    return RK_REPLY;
}
"""


@pytest.mark.cuda
def test_device_buffers_reach_kernels_and_other_libraries(gpu):
    buf = gpu.buffer(np.arange(256, dtype=np.float32))
    assert buf.on_device and buf.__dlpack_device__() == (2, buf.device)
    cai = buf.__cuda_array_interface__
    assert cai["version"] == 3 and cai["shape"] == (256,) and cai["data"][0] != 0
    capsule = buf.__dlpack__()
    assert type(capsule).__name__ == "PyCapsule"
    np.testing.assert_array_equal(buf.read(), np.arange(256, dtype=np.float32))
    try:
        import cupy  # noqa: F401
    except ImportError:
        return
    view = cupy.from_dlpack(buf)  # CuPy passes its current stream: the buffer's copies are ordered before it
    view *= 2
    cupy.cuda.get_current_stream().synchronize()  # CuPy's work done before the host copies the buffer out
    np.testing.assert_array_equal(buf.read(), 2 * np.arange(256, dtype=np.float32))
    for stream in (None, 1, 2, -1, cupy.cuda.Stream(non_blocking=True).ptr):
        assert type(buf.__dlpack__(stream=stream)).__name__ == "PyCapsule"
    with pytest.raises(BufferError, match="DLPack forbids 0"):
        buf.__dlpack__(stream=0)


@pytest.mark.cuda
def test_device_clock_agrees_with_the_host(gpu):
    k = gpu.launch("clock", "echo", input=REC)
    k.activate()
    before = time.time_ns()
    k.send(rec(1))
    r, env = k.receive(timeout=5, with_envelope=True)
    after = time.time_ns()
    assert r["seq"] == 1
    # The reply was stamped with %globaltimer moved onto the host clock: inside the round trip, give or
    # take the calibration error.
    assert before - 1_000_000 <= env.enqueue_ns <= after + 1_000_000
    assert abs(env.timestamp.physical - after // 1_000_000) <= 2


@pytest.mark.cuda
def test_kernels_on_one_gpu_message_each_other(gpu):
    a = gpu.launch("a", rk.Source(DOUBLE, entry="twice"), input=REC, grid=2)
    b = gpu.launch("b", "echo", input=REC, grid=2)
    assert "host bridge" not in gpu.connect(a, b)
    a.activate()
    b.activate()
    for i in range(2000):
        assert a.send(rec(i, float(i)), timeout=5)
    got = sorted(int(b.receive(timeout=5)["seq"]) for _ in range(2000))
    assert got == list(range(2000))  # exactly once across 2 x 2 blocks
    assert b.receive(timeout=0.05) is None


@pytest.mark.cuda
def test_compile_errors_carry_the_nvrtc_log(gpu):
    with pytest.raises(rk.CompileError, match="NVRTC") as err:
        gpu.launch("bad", rk.Source("int broken(rk_ctx *ctx, RK_GLOBAL const void *in, RK_LOCAL void *out) "
                                    "{ return undefined_thing; }", entry="broken"), input=REC)
    assert "undefined_thing" in err.value.log


@pytest.mark.cuda
def test_terminate_while_the_handler_is_busy(gpu):
    k = gpu.launch("busy", rk.Source(BUSY, entry="busy"), input=REC)
    k.activate()
    for i in range(20):
        k.send(rec(i, 20.0))  # 20 ms each
    assert k.receive(timeout=5)["seq"] == 0
    t0 = time.monotonic()
    assert k.terminate(timeout=5) == rk.KernelState.TERMINATED
    assert time.monotonic() - t0 < 2  # the run in hand (at most 8 x 20 ms), not the whole queue


@pytest.mark.cuda
def test_a_handler_that_never_returns_is_reported_faulted():
    _cuda()
    # In a child process: a kernel that never stops holds its SMs until its CUDA context goes away.
    code = (
        "import numpy as np, ringkernel as rk, warnings\n"
        "REC = np.dtype([('seq', '<u8'), ('value', '<f8')])\n"
        # Sleeps in its loop: NVRTC compiles handlers as C++, where an empty infinite loop is undefined
        # behaviour and may be deleted.
        "src = 'int spin(rk_ctx *ctx, RK_GLOBAL const void *in, RK_LOCAL void *out) "
        "{ for (;;) __nanosleep(1000); return 0; }'\n"
        "rt = rk.Runtime('cuda')\n"
        "k = rt.launch('spin', rk.Source(src, entry='spin'), input=REC)\n"
        "k.activate(); k.send(np.zeros(1, REC)[0])\n"
        "import time; time.sleep(0.2)\n"
        "with warnings.catch_warnings(record=True):\n"
        "    state = k.terminate(timeout=0.5)\n"
        "print(state.name, '|', k.fault, flush=True)\n"
        # The kernel cannot be stopped; leave without the CUDA runtime's exit-time teardown (whether that
        # waits on a kernel that never finishes is for the GPU run to establish).
        "import os; os._exit(0)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("FAULTED |"), out.stdout


@pytest.mark.cuda
@pytest.mark.parametrize("loading", ["", "LAZY"])
def test_lazy_module_loading_is_detected_and_made_safe(loading):
    _cuda()
    # In a child process, as a library that starts CUDA first would leave it: ringkernel asks for eager
    # loading unless CUDA_MODULE_LOADING is already set; under lazy loading it warns, and refuses to load an
    # rk.Source module while ring kernels are resident (that load could wait for them forever).
    code = (
        "import warnings, numpy as np, ringkernel as rk\n"
        "from ringkernel import _core\n"
        "REC = np.dtype([('seq', '<u8'), ('value', '<f8')])\n"
        "with warnings.catch_warnings(record=True) as w:\n"
        "    warnings.simplefilter('always')\n"
        "    rt = rk.Runtime('cuda')\n"
        "print('mode', _core.cuda_module_loading(), 'warned', any('lazily' in str(x.message) for x in w))\n"
        "k = rt.launch('e', 'echo', input=REC); k.activate()\n"
        "src = 'int h(rk_ctx *c, RK_GLOBAL const void *i, RK_LOCAL void *o) { return RK_NO_REPLY; }'\n"
        "try:\n"
        "    rt.launch('s', rk.Source(src, entry='h'), input=REC); print('source launched')\n"
        "except rk.RingKernelError as e:\n"
        "    print('source refused', 'CUDA_MODULE_LOADING=EAGER' in str(e))\n"
        "rt.close()\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "CUDA_MODULE_LOADING"}
    if loading:
        env["CUDA_MODULE_LOADING"] = loading
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=env)
    assert out.returncode == 0, out.stderr
    if loading == "LAZY":
        assert "mode lazy warned True" in out.stdout and "source refused True" in out.stdout, out.stdout
    else:
        assert "mode eager warned False" in out.stdout and "source launched" in out.stdout, out.stdout


@pytest.mark.cuda
def test_launches_that_cannot_be_co_resident_are_refused(gpu):
    kernels = []
    with pytest.raises(ValueError, match="resident"):
        for i in range(64):
            kernels.append(gpu.launch(f"wide{i}", "echo", input=REC, grid=64, block=1024))
    assert kernels, "a single 64-block kernel should fit on any supported GPU"
    kernels[0].terminate()
    again = gpu.launch("again", "echo", input=REC, grid=64, block=1024)  # its share was given back
    again.activate()
    again.send(rec(7))
    assert again.receive(timeout=5)["seq"] == 7


@pytest.mark.cuda
def test_cpu_and_gpu_never_race_on_one_ring_word(gpu):
    # Without native CPU-GPU atomics (PCIe x86 hosts) the host and a kernel must not both do
    # read-modify-writes on one ring: DROP_OLDEST and mixed topic publishers are refused there, with why.
    native = "native CPU-GPU atomics"
    try:
        k = gpu.launch("evict", "echo", input=REC,
                       options=rk.LaunchOptions(queue_capacity=16, dedup_window=0,
                                                backpressure=rk.Backpressure.DROP_OLDEST))
    except ValueError as e:
        assert "DROP_OLDEST" in str(e) and native in str(e)
    else:
        k.activate()
        for i in range(100):
            k.send(rec(i))
        assert k.receive(timeout=5) is not None
    src = gpu.launch("src", "echo", input=REC)
    ticks = gpu.topic("ticks", REC)
    sink = gpu.launch("sink", "echo", input=REC)
    ticks.subscribe(sink)
    gpu.connect(src, ticks)
    try:
        ticks.publish(rec(1))
    except ValueError as e:
        assert "fed by kernels" in str(e) and native in str(e)
