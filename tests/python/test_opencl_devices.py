"""The OpenCL backend's device accounting: compute units counted per device and given back, dispatch
kernels feeding each other without deadlock, what copy mode (no shared memory) refuses."""

from __future__ import annotations

import threading
import time

import pytest

import ringkernel as rk
from ringkernel.builtins import VectorAddRequest, VectorAddResponse

from kernel_helpers import REC, availability, opencl_or_skip, rec


def test_opencl_compute_units_are_counted_per_device_and_given_back():
    opencl_or_skip()
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
    opencl_or_skip()
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


def test_copy_mode_refusals(monkeypatch):
    opencl_or_skip()
    monkeypatch.setenv("RINGKERNEL_OPENCL_SVM", "0")
    assert "dispatch mode with copies" in availability()["opencl"].detail
    with rk.Runtime("opencl") as rt:
        with pytest.raises(ValueError, match="persistent mode needs memory the host and the device share"):
            rt.launch("p", "echo", input=REC, mode="persistent")
        with pytest.raises(ValueError, match="named channels need shared memory"):
            rt.launch("c", "echo", input=REC, channels=["alerts"])
        k = rt.launch("v", "vector_add", input=VectorAddRequest, output=VectorAddResponse)
        assert k.mode == "dispatch"
