"""Ring-kernel handlers written in Python and compiled to native code with Numba: ``rk.jit`` (DESIGN §10),
for the CPU backend (this module) and CUDA (compiled_cuda).

::

    @rk.jit(input=Req, output=Req)
    def double(msg, out):          # nopython Python: msg and out are record views
        out.seq = msg.seq
        out.x = msg.x * 2.0
        return True                # True: reply with `out`; False: no reply

    k = rt.launch("double", double)   # input/output come from the handler

On the CPU backend the function becomes a C function (a Numba ``cfunc`` with the dialect's handler
signature) that the kernel's worker threads call directly: no GIL, no Python object per message. It
is compiled once per (function source, the module constants it reads, record types, Numba version) and
cached on disk under the handler cache (``$RINGKERNEL_CACHE_DIR``, else ``~/.cache/ringkernel``; ``jit/``), so a second process
loads it instead of compiling. What Numba refuses raises ``rk.CompileError`` at decoration, with Numba's
message and the handler's name.

Inside a handler, besides the fields (read and written as attributes; fixed arrays as arrays) and the
math Numba supports, four helpers (``from ringkernel.compiled import emit, buffer, thread_rank,
thread_count``):

- ``emit(channel, record)``: send an output record (``out``, or any record of the output type) on one of
  the kernel's named channels, 1..7 in the order of ``launch(channels=[...])`` (0: the default output);
  returns how many rings took it. Only thread 0 of a block sends.
- ``buffer(handle, count, dtype)``: a ``count``-element array of a numeric ``dtype`` over the buffer
  behind ``handle`` (``rt.alloc``). A handle that does not resolve, or a buffer smaller than the view,
  raises IndexError: that message fails (counted in ``errors``), nothing is written.
- ``thread_rank()``, ``thread_count()``: this thread within the block. On the CPU backend ``block=N``
  runs the handler N times per message, once per rank, one after the other (there is no barrier for
  compiled handlers there); on CUDA ``block=N`` is N GPU threads running it at once (``threadIdx.x``,
  ``blockDim.x``). The reply is thread 0's ``out``; a failure of any thread fails the message.

A handler that raises (an explicit ``raise``, an IndexError of a bounds-checked index) fails that one
message like any handler failure: counted in ``errors``, ``last_error`` is ``ERR_HOST``, the kernel goes
on. Array indexing is bounds-checked by default (``boundscheck=True``): an index outside a field's array
or a buffer view fails the message instead of writing elsewhere; ``boundscheck=False`` trades that for
speed.

On the CUDA backend (``rt.launch`` on a cuda runtime, or ``handler.compile("cuda", arch=...)`` ahead of
time) the same function is compiled for the GPU by numba-cuda and linked into the persistent kernel with
nvJitLink (extra ``[cuda]``; ringkernel.compiled_cuda says how and what differs: a failure is an error code
instead of an exception, emit sends ``out``, no try/except). OpenCL runs rk.Source handlers only.

A handler declared with ``state=`` (``@rk.jit(input=Req, output=Req, state=Acc)``) takes a third argument,
the kernel's state record (``f(msg, out, state)``: a record view, written in place; DESIGN §11). A kernel
launched with it gets that state type (``launch(state=)`` may name it again, not another). With grid > 1 the
blocks share the record: update it from one block, or keep grid=1. The C entry stays
``int entry(rk_ctx *, const void *in, void *out)``; the state comes from the block being served
(``rk_native_state``). On CUDA the state's fields reach the handler as pointers into the kernel's state
record in device memory (``rk_state``), like the request's and the reply's; every thread of a block sees the
same record, so with block > 1 write it from one thread (``if thread_rank() == 0``).
"""

from __future__ import annotations

import hashlib
import importlib.util
import inspect
import os
import sys
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np

from . import _core
from .messages import is_message

#: The backends that run compiled Python handlers.
BACKENDS = ("cpu", "cuda")
_ERR_HOST = _core.ERR_HOST  # RK_ERR_HOST (ringkernel/rk_status.h): the handler raised
_ABI = 1        # the C entry's shape; part of the cache key


def _numba() -> Any:
    try:
        import numba
    except ImportError as e:
        raise ImportError("rk.jit compiles handlers with Numba, which is not installed: "
                          "pip install 'pyringkernel[jit]' (or pip install numba)") from e
    return numba


def _dtype_of(t: Any, what: str) -> np.dtype:
    if is_message(t):
        return np.dtype(t.dtype)
    try:
        dt = np.dtype(t)
    except TypeError as e:
        raise TypeError(f"{what} must be an @rk.message class or a numpy dtype, got {t!r}") from e
    if dt.fields is None:
        raise TypeError(f"{what} must be a structured record type (fields read as attributes), got dtype {dt}")
    return dt


def _require_bool(value: Any) -> bool:
    """The C entry's check of the handler's return type (a compile error unless it is a bool)."""
    return bool(value)


def thread_rank() -> int:
    """This thread's rank within its block (inside a compiled handler only)."""
    raise RuntimeError("thread_rank() is for compiled (rk.jit) handlers; it has no meaning in plain Python")


def thread_count() -> int:
    """The number of threads of the block (inside a compiled handler only)."""
    raise RuntimeError("thread_count() is for compiled (rk.jit) handlers; it has no meaning in plain Python")


def emit(channel: int, record: Any) -> int:
    """Send an output record on named channel ``channel`` (inside a compiled handler only)."""
    raise RuntimeError("emit() is for compiled (rk.jit) handlers; a Python handler returns {channel: reply}")


def _state_address(nbytes: int) -> Any:
    """The address of the served kernel's state record (0 if it has none of ``nbytes``): the C entry's."""
    raise RuntimeError("_state_address() is the compiled entry's")


def buffer(handle: int, count: int, dtype: Any) -> Any:
    """A ``count``-element array view of the buffer behind ``handle`` (inside a compiled handler only)."""
    raise RuntimeError("buffer() is for compiled (rk.jit) handlers; from Python a buffer is rt.buffer(...), read "
                       "and written with Buffer.read() and Buffer.write()")


# ---- Numba glue, registered once, on the first compile ----------------------------------------------------

_glue_lock = threading.Lock()
_glue_done = False
_state_pointer: Any = None  # the intrinsic entries with state use (registered with the glue)


def _register_glue() -> None:
    """The helpers' Numba implementations, over the library's rk_native_* entry points (native_api.h),
    which Numba resolves by name: registered with LLVM's symbol table from this process's extension, so
    code loaded from the cache links to them as code compiled now does."""
    global _glue_done
    with _glue_lock:
        if _glue_done:
            return
        import ctypes

        from llvmlite import binding as llvm
        from numba import carray, types
        from numba.core.extending import intrinsic, overload

        lib = ctypes.CDLL(_core.__file__)
        for name in ("rk_native_thread_rank", "rk_native_thread_count", "rk_native_emit", "rk_native_buffer",
                     "rk_native_state"):
            llvm.add_symbol(name, ctypes.cast(getattr(lib, name), ctypes.c_void_p).value)
        ext_rank = types.ExternalFunction("rk_native_thread_rank", types.uint32())
        ext_count = types.ExternalFunction("rk_native_thread_count", types.uint32())
        ext_emit = types.ExternalFunction("rk_native_emit", types.int32(types.uint32, types.uintp))
        ext_buffer = types.ExternalFunction("rk_native_buffer", types.uintp(types.uint64, types.uint64))
        ext_state = types.ExternalFunction("rk_native_state", types.uintp(types.uint64))

        @intrinsic
        def record_address(typingctx: Any, rec: Any) -> Any:
            if not isinstance(rec, types.Record):
                return None

            def codegen(context: Any, builder: Any, sig: Any, args: Any) -> Any:
                return builder.ptrtoint(args[0], context.get_value_type(types.uintp))  # a record is its pointer
            return types.uintp(rec), codegen

        @intrinsic
        def as_voidptr(typingctx: Any, addr: Any) -> Any:
            def codegen(context: Any, builder: Any, sig: Any, args: Any) -> Any:
                return builder.inttoptr(args[0], context.get_value_type(types.voidptr))
            return types.voidptr(types.uintp), codegen

        @overload(_state_address)
        def _state(nbytes: Any) -> Any:
            def impl(nbytes: Any) -> Any:
                return ext_state(np.uint64(nbytes))
            return impl

        @intrinsic
        def state_pointer(typingctx: Any, addr: Any, holder: Any) -> Any:
            # addr as a pointer to the record type `holder` stands for (a one-record array's type).
            rec_t = holder.dtype

            def codegen(context: Any, builder: Any, sig: Any, args: Any) -> Any:
                return builder.inttoptr(args[0], context.get_value_type(types.CPointer(rec_t)))
            return types.CPointer(rec_t)(addr, holder), codegen

        global _state_pointer
        _state_pointer = state_pointer

        @overload(_require_bool)
        def _bool(value: Any) -> Any:
            if not isinstance(value, types.Boolean):
                raise TypeError(f"an rk.jit handler must return True (reply) or False (no reply), and this one "
                                f"returns {value}")

            def impl(value: Any) -> Any:
                return value
            return impl

        @overload(thread_rank)
        def _rank() -> Any:
            return lambda: ext_rank()

        @overload(thread_count)
        def _count() -> Any:
            return lambda: ext_count()

        @overload(emit)
        def _emit(channel: Any, record: Any) -> Any:
            if not isinstance(channel, types.Integer) or not isinstance(record, types.Record):
                raise TypeError(f"emit(channel, record) takes an integer channel and a record of the output "
                                f"type, got {channel} and {record}")

            def impl(channel: Any, record: Any) -> Any:
                if channel < 0 or channel > 7:
                    raise IndexError("emit(): channel must be in [0, 7]")
                return ext_emit(np.uint32(channel), record_address(record))
            return impl

        @overload(buffer)
        def _buffer(handle: Any, count: Any, dtype: Any) -> Any:
            if not isinstance(dtype, types.NumberClass):
                raise TypeError(f"buffer(handle, count, dtype): dtype must be a numpy number type (np.float32, "
                                f"np.int64, ...), got {dtype}")
            size = np.dtype(str(dtype.dtype)).itemsize

            def impl(handle: Any, count: Any, dtype: Any) -> Any:
                if count < 0:
                    raise IndexError("buffer(): count must be >= 0")
                address = ext_buffer(np.uint64(handle), np.uint64(count) * np.uint64(size))
                if address == 0:
                    raise IndexError("buffer(): the handle does not resolve, or its buffer is smaller than the view")
                return carray(as_voidptr(address), count, dtype)
            return impl

        _glue_done = True


# ---- the cache ------------------------------------------------------------------------------------------------


def _cache_dir() -> Path:
    """The handler cache's jit/ folder: the directory the C++ backends cache compiled handlers in."""
    try:
        return Path(_core.handler_cache_dir("jit"))
    except _core.RingKernelError as e:  # not private, or cannot be made
        raise _core.CompileError(str(e)) from None


# The C entry around the user's function, one module per (function, types): a real file, so that Numba can
# cache it (its cache is keyed by file and function). RK_USER is the user's function, set before compiling.
_ENTRY = '''# Generated by ringkernel.compiled for handler {name!r}: do not edit (the name is its cache key).
from numba import carray

from ringkernel.compiled import _require_bool

RK_USER = None


def rk_entry(ctx, inp, out):
    m = carray(inp, 1)[0]
    o = carray(out, 1)[0]
    try:
        r = RK_USER(m, o)
    except Exception:
        return {err}
    return 1 if _require_bool(r) else 0
'''

# The entry of a handler with state: the third argument is the served kernel's state record, in place.
# RK_STATE_HOLDER is a one-record array of the state type (its type tells the intrinsic the record's).
_ENTRY_STATE = '''# Generated by ringkernel.compiled for handler {name!r} (with state): do not edit (the name is its cache key).
from numba import carray

from ringkernel import compiled as _rkc
from ringkernel.compiled import _require_bool, _state_address

RK_USER = None
RK_STATE_HOLDER = None
RK_STATE_BYTES = 0
state_pointer = _rkc._state_pointer


def rk_entry(ctx, inp, out):
    m = carray(inp, 1)[0]
    o = carray(out, 1)[0]
    addr = _state_address(RK_STATE_BYTES)
    if addr == 0:
        return {err}
    s = carray(state_pointer(addr, RK_STATE_HOLDER), 1)[0]
    try:
        r = RK_USER(m, o, s)
    except Exception:
        return {err}
    return 1 if _require_bool(r) else 0
'''


def _globals_identity(fn: Callable) -> str:
    """The module-level constants the handler reads: Numba compiles them in, so they are part of the key
    (a changed constant with an unchanged handler must not load the old code)."""
    names = set(fn.__code__.co_names)
    for const in fn.__code__.co_consts:  # nested code (comprehensions, inner functions)
        if hasattr(const, "co_names"):
            names |= set(const.co_names)
    out = []
    for name in sorted(names):
        value = fn.__globals__.get(name)
        if isinstance(value, (bool, int, float, complex, str, bytes, tuple, np.generic, np.ndarray, np.dtype)):
            out.append(f"{name}={value!r}")
    return ";".join(out)


def _source_identity(fn: Callable) -> str:
    try:
        return inspect.getsource(fn)
    except (OSError, TypeError):
        code = fn.__code__
        return repr((code.co_code, code.co_consts, code.co_names))


def _load_entry_module(key: str, name: str, stateful: bool = False) -> Any:
    modname = f"_ringkernel_jit_{key}"
    if modname in sys.modules:
        return sys.modules[modname]
    path = _cache_dir() / f"{modname}.py"
    text = (_ENTRY_STATE if stateful else _ENTRY).format(name=name, err=_ERR_HOST)
    if not path.is_file() or path.read_text() != text:
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(text)
        os.replace(tmp, path)  # atomic: another process compiling the same handler sees all or nothing
    spec = importlib.util.spec_from_file_location(modname, path)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[modname] = mod  # cached code refers to its globals through the module's name
    spec.loader.exec_module(mod)
    return mod


# ---- handlers ----------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CompiledHandler:
    """A handler compiled for one backend: ``code`` is what runs there, ``entry`` its symbol (on cuda the
    persistent kernel). One compiled for cuda launches like its handler (``rt.launch(name, compiled)``) on
    a GPU of its ``arch``; one compiled for cpu is for inspection (launch the rk.jit handler itself)."""

    backend: str
    arch: str
    entry: str
    code: bytes
    log: str
    name: str = ""
    input: Any = None
    output: Any = None
    state: Any = None  # the state record type of a handler declared with state= (a kernel launched with it gets it)

    @property
    def _rk_image(self) -> tuple:
        return (self.name or "rk.jit", self.backend, self.code, self.entry)

    def __repr__(self) -> str:
        return f"<rk.CompiledHandler {self.name!r} for {self.backend} {self.arch}: {len(self.code)} bytes>"


class JitHandler:
    """What ``rk.jit`` returns: launch it (``rt.launch(name, handler)``), or compile it ahead of time."""

    _keep: list = []  # compiled code lives as long as the process: a kernel abandoned in it may still call it

    def __init__(self, fn: Callable, input: Any, output: Any, boundscheck: bool, state: Any = None):
        if not callable(fn) or not hasattr(fn, "__code__"):
            raise TypeError(f"rk.jit decorates a Python function, got {fn!r}")
        self.py_func = fn
        self.__name__ = getattr(fn, "__name__", "handler")
        self.__doc__ = fn.__doc__
        self.input = input
        self.output = input if output is None else output
        self.input_dtype = _dtype_of(self.input, "input")
        self.output_dtype = _dtype_of(self.output, "output")
        self.state = state
        self.state_dtype = None if state is None else _dtype_of(state, "state")
        self.boundscheck = bool(boundscheck)
        nparams = len(inspect.signature(fn).parameters)
        wanted = 2 if state is None else 3
        if nparams != wanted:
            if state is None:
                raise TypeError(f"rk.jit handler '{self.__name__}' must take (msg, out), got {nparams} parameter(s) "
                                "(a third, the kernel's state, needs its type: @rk.jit(..., state=StateType))")
            raise TypeError(f"rk.jit handler '{self.__name__}' declared with state= must take (msg, out, state), got "
                            f"{nparams} parameter(s)")
        self.compile_seconds = 0.0
        self._images: dict = {}
        self._address, self._cfunc = self._compile_cpu()

    def __repr__(self) -> str:
        return f"<rk.jit handler {self.__name__}: {self.input_dtype} -> {self.output_dtype}>"

    @property
    def _rk_native(self) -> tuple:
        return (self.__name__, self._address)

    def _key(self) -> str:
        numba = _numba()
        h = hashlib.sha256()
        for part in (_ABI, numba.__version__, np.__version__, sys.version_info[:2], self.boundscheck,
                     getattr(self.py_func, "__module__", ""), self.py_func.__qualname__,
                     _source_identity(self.py_func), _globals_identity(self.py_func), self.input_dtype.descr, self.output_dtype.descr,
                     self.input_dtype.itemsize, self.output_dtype.itemsize,
                     None if self.state_dtype is None else (self.state_dtype.descr, self.state_dtype.itemsize)):
            h.update(repr(part).encode())
            h.update(b"\0")
        return h.hexdigest()[:24]

    def _fail(self, what: str, err: BaseException) -> Exception:
        text = str(err).strip()
        exc = _core.CompileError(f"rk.jit handler '{self.__name__}' {what}:\n{text}")
        exc.log = text
        return exc

    def _compile_cpu(self) -> tuple:
        import time

        numba = _numba()
        from numba import types

        _register_glue()
        t0 = time.perf_counter()
        try:
            in_t = numba.from_dtype(self.input_dtype)
            out_t = numba.from_dtype(self.output_dtype)
        except Exception as e:  # a dtype Numba has no type for
            raise self._fail("has record types Numba cannot represent", e) from None
        # The user's function is not cached by Numba itself (its cache ignores the module constants a function
        # reads); the C entry, which inlines it, is, under a key that includes them (_key).
        user = numba.njit(self.py_func, boundscheck=self.boundscheck)
        mod = _load_entry_module(self._key(), self.__name__, stateful=self.state_dtype is not None)
        mod.RK_USER = user
        if self.state_dtype is not None:
            mod.RK_STATE_HOLDER = np.zeros(1, self.state_dtype)
            mod.RK_STATE_BYTES = self.state_dtype.itemsize
        sig = types.int32(types.voidptr, types.CPointer(in_t), types.CPointer(out_t))
        try:
            entry = numba.cfunc(sig, cache=True)(mod.rk_entry)
        except numba.core.errors.NumbaError as e:
            raise self._fail("did not compile", e) from None
        except KeyError as e:  # Numba's record typing looks a field up without checking it exists
            fields = {"input": self.input_dtype.names, "output": self.output_dtype.names}
            state = "" if self.state_dtype is None else f"; state fields: {', '.join(self.state_dtype.names)}"
            raise self._fail("did not compile", KeyError(
                f"no field {e.args[0]!r} in its records (input fields: {', '.join(fields['input'])}; output "
                f"fields: {', '.join(fields['output'])}{state})")) from None
        except Exception as e:  # anything else Numba raises while compiling is still the handler's error
            raise self._fail("did not compile", e) from None
        self.compile_seconds = time.perf_counter() - t0
        JitHandler._keep.append((entry, user, mod))
        self._entry_source = (sig, mod.rk_entry)
        return entry.address, entry

    def for_device(self, backend: str, target: str) -> CompiledHandler:
        """What a launch on a device backend runs: compiled for the device's ``target`` once per process
        (and from the disk cache in the next one)."""
        key = (backend, target)
        if key not in self._images:
            self._images[key] = self.compile(backend, arch=target)
        return self._images[key]

    def compile(self, backend: str = "cpu", arch: Optional[str] = None) -> CompiledHandler:
        """Compile ahead of time for ``backend`` (no device needed). ``cpu``: the LLVM IR of the handler's C
        entry (``entry`` is its symbol). ``cuda``: the cubin of the persistent kernel (``entry``, rk_persistent)
        with the handler linked in, for ``arch`` ('sm_90', ...; ringkernel.compiled_cuda)."""
        if backend == "cpu":
            if arch is not None:
                raise ValueError(f"arch is for device backends; the cpu backend compiles for this host, got {arch!r}")
            # Compiled again, uncached: code loaded from Numba's cache cannot be inspected.
            numba = _numba()
            sig, fn = self._entry_source
            fresh = numba.cfunc(sig, cache=False)(fn)
            return CompiledHandler("cpu", "host", fresh.native_name, fresh.inspect_llvm().encode(), "",
                                   self.__name__, self.input, self.output)
        if backend == "cuda":
            if arch is None:
                raise ValueError("compile('cuda') needs the GPU's architecture: arch='sm_90' (an H100), 'sm_80', ...")
            from .compiled_cuda import compile_cuda

            return compile_cuda(self, arch)
        raise _core.CompileError(_not_here(self.__name__, backend))


def _not_here(name: str, backend: str) -> str:
    return (f"rk.jit handler '{name}' cannot run on backend '{backend}': compiled Python handlers run on "
            f"{', '.join(BACKENDS)}; use an rk.Source (the device dialect in C) for a handler every backend runs")


def jit(input: Any = None, output: Any = None, *, state: Any = None,
        boundscheck: bool = True) -> Callable[[Callable], JitHandler]:
    """Compile a Python function into a ring-kernel handler (see the module's documentation).

    input/output: @rk.message classes or structured numpy dtypes (output defaults to input). state: the
    kernel's state record type, passed as the handler's third argument. Compiled at decoration: what Numba
    refuses raises ``rk.CompileError`` here, with its message.
    """
    if input is None:
        raise TypeError("rk.jit needs the handler's record types: @rk.jit(input=Req, output=Resp)")
    if callable(input) and not is_message(input) and not isinstance(input, (type, np.dtype)):
        raise TypeError("rk.jit is used with its record types: @rk.jit(input=Req, output=Resp)")

    def decorate(fn: Callable) -> JitHandler:
        return JitHandler(fn, input, output, boundscheck, state)
    return decorate


__all__ = ["BACKENDS", "CompiledHandler", "JitHandler", "buffer", "emit", "jit", "thread_count", "thread_rank"]
