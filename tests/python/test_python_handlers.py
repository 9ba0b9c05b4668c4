"""Python-callable handlers (a CPU-backend feature): per message and per batch, failures counted and
visible, wrong return types, block size 1, a handler that never returns, named channels."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

import ringkernel as rk
from ringkernel.builtins import VectorAddRequest, VectorAddResponse

from kernel_helpers import REC, rec


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
