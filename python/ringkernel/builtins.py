"""Message types of the built-in handler catalog (DESIGN.md §7).

``vector_add`` computes ``a <op> b`` element-wise on float32 vectors: up to 25 elements inline in
the request, longer vectors through buffer handles (``a_buf``, ``b_buf``, ``out_buf``: handles of
``Runtime.buffer`` memory holding ``length`` float32 values each). The layouts match the C structs
of ``rk_builtins.h`` exactly (checked by the test suite).
"""

from __future__ import annotations

import enum

from . import messages as m

__all__ = ["VectorOp", "VectorAddRequest", "VectorAddResponse", "VECTOR_INLINE", "OK"]

VECTOR_INLINE = 25
OK = 0


class VectorOp(enum.IntEnum):
    ADD = 0
    SUBTRACT = 1
    MULTIPLY = 2
    DIVIDE = 3


@m.message
class VectorAddRequest:
    op: VectorOp
    length: m.u32
    a: m.array(m.f32, VECTOR_INLINE)
    b: m.array(m.f32, VECTOR_INLINE)
    a_buf: m.u64
    b_buf: m.u64
    out_buf: m.u64


@m.message
class VectorAddResponse:
    length: m.u32
    result: m.array(m.f32, VECTOR_INLINE)
    out_buf: m.u64
    status: m.i32
