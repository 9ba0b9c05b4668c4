"""Device-side helpers of rk.jit handlers on CUDA: the names the rewritten handler calls (compiled_cuda).

numba-cuda cannot call one of its device functions from another without a current device (the callee is
compiled through a dispatcher that asks the driver for one), and compiling here runs without a GPU. So every
helper is either an **intrinsic** (LLVM written at the call site) or an **external C function** that the
generated CUDA C shim defines (``rk_jit_emit``, ``rk_jit_buffer``; nvJitLink resolves them).

Errors: numba-cuda has no exceptions in C-ABI device functions and no bounds checking. A helper that meets
a failure (an index outside an array, a buffer handle that does not resolve, a channel outside [0, 7])
does no memory access and writes the handler's error code into the one-element ``__rk_bad`` array (the
first failure's code stays); the rewritten handler returns that code after the statement (DESIGN §10: the message fails, nothing is written
out of range).
"""

from __future__ import annotations

from typing import Any, Dict

import numpy as np

from . import _core

ERR_HANDLER = int(_core.ERR_HANDLER)  # an index outside an array; an explicit raise
ERR_BUFFER = int(_core.ERR_BUFFER)    # buffer(): the handle does not resolve, or the buffer is too small
ERR_CHANNEL = int(_core.ERR_CHANNEL)  # emit(): a channel outside [0, 7]

_glue: Dict[str, Any] = {}


def glue() -> Dict[str, Any]:
    """The helpers by the names the rewritten handler uses (built on the first CUDA compile)."""
    if _glue:
        return _glue
    import numba
    from llvmlite import ir
    from numba import cuda, types
    from numba.cuda.extending import intrinsic
    from numba.cuda.np.arrayobj import populate_array
    from numba.cuda.np.numpy_support import as_dtype

    i32, i64 = ir.IntType(32), ir.IntType(64)

    def view(context: Any, builder: Any, aryty: Any, data: Any, n: Any) -> Any:
        ary = context.make_array(aryty)(context, builder)
        itemsize = context.get_constant(types.intp, context.get_abi_sizeof(context.get_data_type(aryty.dtype)))
        populate_array(ary, data=data, shape=[n], strides=[itemsize], itemsize=itemsize, meminfo=None)
        return ary._getvalue()

    def flag(context: Any, builder: Any, badty: Any, bad: Any, code: int) -> None:
        """bad[0] = bad[0] or code: the first failure of a message is the one reported."""
        b = context.make_array(badty)(context, builder, bad)
        current = builder.load(b.data)
        first = builder.icmp_signed("==", current, ir.Constant(i32, 0))
        builder.store(builder.select(first, ir.Constant(i32, code), current), b.data)

    @intrinsic
    def ptr_view(typingctx: Any, ptr: Any, count: Any) -> Any:
        """A field's fixed array (a pointer into the record) as a 1-d array of its length."""
        aryty = types.Array(ptr.dtype, 1, "C")

        def codegen(context: Any, builder: Any, sig: Any, args: Any) -> Any:
            return view(context, builder, aryty, args[0], context.cast(builder, args[1], sig.args[1], types.intp))
        return aryty(ptr, count), codegen

    def checked(arr: Any) -> None:
        if not isinstance(arr, types.Array) or arr.ndim != 1:
            raise TypeError(f"on CUDA an rk.jit handler indexes fields' arrays and buffer views, got {arr}")

    def integer(i: Any) -> None:
        if not isinstance(i, types.Integer):
            raise TypeError(f"array indexes must be integers on CUDA (one element at a time), got {i}")

    # The element an index names (negative i counts from the end; an unsigned one never is), -1 outside.
    # Written out per signedness: numba-cuda compiles these bodies inline and cannot call a helper.
    @intrinsic
    def load(typingctx: Any, arr: Any, i: Any, bad: Any) -> Any:
        """arr[i]; outside the array: 0, and ERR_HANDLER in bad."""
        checked(arr)
        integer(i)
        zero = as_dtype(arr.dtype).type(0)

        def codegen(context: Any, builder: Any, sig: Any, args: Any) -> Any:
            if sig.args[1].signed:
                def impl(arr: Any, i: Any, bad: Any) -> Any:
                    n = np.int64(arr.shape[0])
                    j = np.int64(i)
                    j = j + n if j < 0 else j
                    if j < 0 or j >= n:
                        bad[0] = bad[0] or ERR_HANDLER
                        return zero
                    return arr[j]
            else:
                def impl(arr: Any, i: Any, bad: Any) -> Any:
                    if np.uint64(i) >= np.uint64(arr.shape[0]):
                        bad[0] = bad[0] or ERR_HANDLER
                        return zero
                    return arr[np.int64(i)]
            return context.compile_internal(builder, impl, sig, args)
        return arr.dtype(arr, i, bad), codegen

    @intrinsic
    def store(typingctx: Any, arr: Any, i: Any, value: Any, bad: Any) -> Any:
        """arr[i] = value; outside the array: nothing written, ERR_HANDLER in bad."""
        checked(arr)
        integer(i)

        def codegen(context: Any, builder: Any, sig: Any, args: Any) -> Any:
            if sig.args[1].signed:
                def impl(arr: Any, i: Any, value: Any, bad: Any) -> Any:
                    n = np.int64(arr.shape[0])
                    j = np.int64(i)
                    j = j + n if j < 0 else j
                    if j < 0 or j >= n:
                        bad[0] = bad[0] or ERR_HANDLER
                    else:
                        arr[j] = value
            else:
                def impl(arr: Any, i: Any, value: Any, bad: Any) -> Any:
                    if np.uint64(i) >= np.uint64(arr.shape[0]):
                        bad[0] = bad[0] or ERR_HANDLER
                    else:
                        arr[np.int64(i)] = value
            return context.compile_internal(builder, impl, sig, args)
        return types.none(arr, i, value, bad), codegen

    @intrinsic
    def channel(typingctx: Any, ch: Any, bad: Any) -> Any:
        """emit()'s channel as the shim's uint32; outside [0, 7]: 8 (the shim sends nothing), ERR_CHANNEL."""
        if not isinstance(ch, types.Integer):
            raise TypeError(f"emit(channel, record): the channel is an integer, got {ch}")

        def codegen(context: Any, builder: Any, sig: Any, args: Any) -> Any:
            def impl(ch: Any, bad: Any) -> Any:
                if ch < 0 or ch > 7:
                    bad[0] = bad[0] or ERR_CHANNEL
                    return np.uint32(8)
                return np.uint32(ch)
            return context.compile_internal(builder, impl, sig, args)
        return types.uint32(ch, bad), codegen

    @intrinsic
    def buffer(typingctx: Any, ctx: Any, handle: Any, count: Any, dtype: Any, bad: Any) -> Any:
        """A count-element view of the buffer behind handle (rk_jit_buffer in the shim checks its size);
        a handle that does not resolve, a buffer too small or a negative count: an empty view, ERR_BUFFER."""
        if not isinstance(dtype, types.NumberClass):
            raise TypeError(f"buffer(handle, count, dtype): dtype must be a numpy number type (np.float32, "
                            f"np.int64, ...), got {dtype}")
        if not isinstance(handle, types.Integer) or not isinstance(count, types.Integer):
            raise TypeError(f"buffer(handle, count, dtype): handle and count are integers, got {handle} and {count}")
        aryty = types.Array(dtype.dtype, 1, "C")
        size = np.dtype(str(dtype.dtype)).itemsize

        def codegen(context: Any, builder: Any, sig: Any, args: Any) -> Any:
            c, h, n, _, badarr = args
            fn = builder.module.globals.get("rk_jit_buffer") or ir.Function(
                builder.module, ir.FunctionType(i64, [i64, i64, i64]), "rk_jit_buffer")
            n = context.cast(builder, n, sig.args[2], types.int64)
            neg = builder.icmp_signed("<", n, ir.Constant(i64, 0))
            n = builder.select(neg, ir.Constant(i64, 0), n)
            h = context.cast(builder, h, sig.args[1], types.uint64)
            addr = builder.call(fn, [c, h, builder.mul(n, ir.Constant(i64, size))])
            failed = builder.or_(neg, builder.icmp_unsigned("==", addr, ir.Constant(i64, 0)))
            with builder.if_then(failed, likely=False):
                flag(context, builder, sig.args[4], badarr, ERR_BUFFER)
            n = builder.select(failed, ir.Constant(i64, 0), n)
            data = builder.inttoptr(addr, context.get_value_type(types.CPointer(aryty.dtype)))
            return view(context, builder, aryty, data, n)
        return aryty(types.uint64, handle, count, dtype, bad), codegen

    _glue.update({
        "__rk_cuda": cuda,
        "__rk_i32": numba.int32,
        "__rk_ptr_view": ptr_view,
        "__rk_load": load,
        "__rk_store": store,
        "__rk_channel": channel,
        "__rk_buffer": buffer,
        "__rk_emit": cuda.declare_device("rk_jit_emit", types.int32(types.uint64, types.uint32, types.uint64), abi="c"),
    })
    return _glue
