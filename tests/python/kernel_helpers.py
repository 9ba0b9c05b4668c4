"""What the behavioural suite's files share (the fixtures are in conftest.py): the backends it runs on, a
small record type, request builders, and skip helpers."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import numpy as np
import pytest

import ringkernel as rk
from ringkernel.builtins import VectorAddRequest, VectorOp

# "opencl-copy": the OpenCL backend as on a device that cannot share memory with the host while a
# kernel runs (RINGKERNEL_OPENCL_SVM=0 hides PoCL's SVM): dispatch mode with copies.
# The cuda cases carry the `cuda` mark at collection, so `pytest -m cuda` selects them too.
# "cpu-jit": the CPU backend with every "echo" kernel's handler an rk.jit (compiled Python) echo instead of
# the built-in C one: the suite run once with a compiled handler (needs Numba).
BACKENDS = ["cpu", "cpu-jit", "opencl", "opencl-copy", pytest.param("cuda", marks=pytest.mark.cuda)]
REC = np.dtype([("seq", "<u8"), ("value", "<f8")])


def availability() -> dict:
    return {b.name: b for b in rk.backends()}


def copies() -> bool:
    """Whether OpenCL runs as on a device without shared memory (dispatch mode with copies)."""
    return os.environ.get("RINGKERNEL_OPENCL_SVM") == "0"


def skip_without_shared_memory(rt, what: str) -> None:
    if rt.backend == "opencl" and copies():
        pytest.skip(f"{what} need memory the host and the device share (fine-grained SVM); without it the "
                    "OpenCL backend refuses them with a clear error (tested in test_copy_mode_refusals)")


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


def opencl_or_skip() -> None:
    info = availability()["opencl"]
    if not info.available:
        pytest.skip(f"backend opencl unavailable here: {info.detail}")


def python_subprocess(code: str, **env: str):
    """Run `code` in a fresh interpreter with `env` added; it must succeed."""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                         env=dict(os.environ, **env))
    assert out.returncode == 0, out.stderr
    return out


# The four vector_add operations and what numpy computes for each.
OPS = {VectorOp.ADD: np.add, VectorOp.SUBTRACT: np.subtract, VectorOp.MULTIPLY: np.multiply,
       VectorOp.DIVIDE: np.divide}

# A portable-source handler: the reply doubles the value.
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


# ---- the suite with compiled handlers ("cpu-jit") -------------------------------------------------------------

_echoes: dict = {}


def _copy_lines(name: str, shape: tuple, depth: int = 0) -> list:
    if not shape:
        return [f"out.{name} = msg.{name}"]
    idx = ", ".join(f"i{d}" for d in range(len(shape)))
    lines, pad = [], ""
    for d, n in enumerate(shape):
        lines.append(f"{pad}for i{d} in range({n}):")
        pad += "    "
    return lines + [f"{pad}out.{name}[{idx}] = msg.{name}[{idx}]"]


def compiled_echo(dtype: np.dtype):
    """An rk.jit handler that answers each request with a copy of it, field by field (one per dtype)."""
    dtype = np.dtype(dtype)
    key = dtype
    if key not in _echoes:
        body = []
        for name in dtype.names:
            ft = dtype.fields[name][0]
            body += _copy_lines(name, ft.shape if ft.subdtype else ())
        src = "def echo(msg, out):\n" + "".join(f"    {line}\n" for line in body) + "    return True\n"
        scope: dict = {}
        exec(compile(src, f"<compiled echo for {dtype}>", "exec"), scope)
        _echoes[key] = rk.jit(input=dtype)(scope["echo"])
    return _echoes[key]


class JitEchoRuntime(rk.Runtime):
    """rk.Runtime("cpu") whose "echo" kernels run a compiled echo (the behavioural suite's "cpu-jit")."""

    def create(self, name, handler, *, input=None, output=None, **kw):
        if isinstance(handler, str) and handler == "echo" and input is not None:
            in_dt = input.dtype if rk.is_message(input) else np.dtype(input)
            if output is None or (output.dtype if rk.is_message(output) else np.dtype(output)) == in_dt:
                return super().create(name, compiled_echo(in_dt), input=input, output=output, **kw)
        return super().create(name, handler, input=input, output=output, **kw)


def wait_for(cond, timeout: float = 10.0) -> bool:
    """Poll `cond` every 5 ms until it holds or `timeout` seconds pass; its last value."""
    deadline = time.monotonic() + timeout
    while not cond() and time.monotonic() < deadline:
        time.sleep(0.005)
    return cond()
