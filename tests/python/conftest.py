import os

import numpy as np
import pytest

import ringkernel as rk
from kernel_helpers import BACKENDS, JitEchoRuntime, availability

# PoCL's CPU device has as many compute units as worker threads (the cores, by default), and every
# block of a persistent kernel stays resident on one: the OpenCL suite launches several kernels at
# once (9 in the registry test), so it gives PoCL more threads than this 2-core machine has cores (set before PoCL starts).
os.environ.setdefault("POCL_MAX_PTHREAD_COUNT", "12")

# A 64-byte structured record used across the suite.
SAMPLE = np.dtype([("seq", "<u8"), ("sensor", "<u4"), ("flags", "<u4"), ("values", "<f4", (12,))])


@pytest.fixture
def sample_dtype() -> np.dtype:
    return SAMPLE


def record(seq: int, dtype: np.dtype = SAMPLE):
    """One numpy record (np.void) with the given sequence number."""
    arr = np.zeros(1, dtype=dtype)
    arr["seq"] = seq
    return arr[0]


def records(start: int, n: int, dtype: np.dtype = SAMPLE) -> np.ndarray:
    arr = np.zeros(n, dtype=dtype)
    arr["seq"] = np.arange(start, start + n)
    return arr


# ---- the behavioural suite's fixtures (test_runtime.py and its sibling files; helpers in kernel_helpers.py) ----


@pytest.fixture(params=BACKENDS)
def backend(request, monkeypatch) -> str:
    name = request.param
    if name == "opencl-copy":
        monkeypatch.setenv("RINGKERNEL_OPENCL_SVM", "0")
        name = "opencl"
    if name == "cpu-jit":
        pytest.importorskip("numba", reason="the cpu-jit cases need Numba (pip install 'pyringkernel[jit]')")
        name = "cpu"
    info = availability()[name]
    if not info.available:
        pytest.skip(f"backend {request.param} unavailable here: {info.detail}")
    return name


@pytest.fixture
def rt(request, backend):
    jit = getattr(request.node, "callspec", None) is not None and request.node.callspec.params.get("backend") == "cpu-jit"
    with (JitEchoRuntime(backend) if jit else rk.Runtime(backend)) as runtime:
        yield runtime


@pytest.fixture
def cpu_rt():
    with rk.Runtime("cpu") as runtime:
        yield runtime
