"""Built-in handlers and buffers on every backend: vector_add inline and through buffers, bad requests, the
built-in record layouts, buffer handles and views."""

from __future__ import annotations

import gc

import numpy as np
import pytest

import ringkernel as rk
from ringkernel.builtins import VectorAddRequest, VectorAddResponse, VectorOp

from kernel_helpers import OPS, vreq


# ---- built-in handlers ----------------------------------------------------------------------------------


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
