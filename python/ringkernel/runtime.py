"""Ring kernels: ``rk.Runtime``, ``rk.Kernel``, ``rk.Source``, buffers, topics (DESIGN.md §6–7).

A thin layer over the native runtime (``ringkernel._core``): lifecycle, queues, routing and the
persistent loop are C++. A kernel's ``send``/``receive`` *are* the native queue methods, so the
per-message path never runs Python code of ours.
"""

from __future__ import annotations

import asyncio
import atexit
import dataclasses
import enum
import os
import time
import warnings
import weakref
from pathlib import Path
from typing import Any, Callable, Iterable, Optional, Union

import numpy as np

from . import _core
from . import actor as _actor
from ._core import CompileError, KernelState, LaunchOptions, Queue, RestartPolicy
from .compiled import BACKENDS as JIT_BACKENDS
from .compiled import CompiledHandler, JitHandler
from .compiled import _dtype_of as _jit_dtype
from .compiled import _not_here as _jit_not_here

__all__ = ["Runtime", "Kernel", "Source", "Buffer", "Topic", "KernelState", "Mode", "batch"]


class Mode(str, enum.Enum):
    """How a device backend runs a kernel's blocks (``Runtime(mode=...)``, ``launch(mode=...)``,
    ``Kernel.mode``). A str enum: the names "auto", "persistent" and "dispatch" are accepted too."""

    AUTO = "auto"              # persistent while the device can keep the blocks resident, else dispatch
    PERSISTENT = "persistent"  # the blocks stay resident, polling their rings
    DISPATCH = "dispatch"      # the blocks are launched when messages wait

    def __str__(self) -> str:
        return self.value


def _mode(value: Any) -> str:
    """A mode argument (rk.Mode or its name) as the name the core takes."""
    if isinstance(value, Mode):
        return value.value
    if not isinstance(value, str):
        raise TypeError(f"mode must be an rk.Mode or one of 'auto', 'persistent', 'dispatch', got {type(value).__name__}")
    try:
        return Mode(value).value
    except ValueError:
        raise ValueError(f"mode must be 'auto', 'persistent' or 'dispatch' (or an rk.Mode), got {value!r}") from None

_INCLUDE = Path(__file__).with_name("include")
_POLL_WARN_INTERVAL = 1e-4  # polling telemetry faster than 10 kHz warns
_open_runtimes: "weakref.WeakSet[Runtime]" = weakref.WeakSet()


@dataclasses.dataclass(frozen=True)
class Source:
    """A portable-source handler in the device dialect (``rk_kernel.h``), compiled at run time.

    ``code`` defines ``int entry(rk_ctx *ctx, RK_GLOBAL const void *in, RK_LOCAL void *out)`` (the
    address-space macros are empty where a target has none, so one source serves every backend); the
    CPU backend compiles
    it with the host C compiler (``$CC`` or cc/gcc/clang) and caches the result by content hash.
    A compiler error raises ``rk.CompileError`` carrying the compiler's log.
    """

    code: str
    entry: str = "handle"

    def __post_init__(self) -> None:
        if not isinstance(self.code, str) or not self.code.strip():
            raise TypeError("Source code must be a non-empty string of device-dialect C")
        if not isinstance(self.entry, str) or not self.entry.isidentifier():
            raise ValueError(f"entry must be a C identifier naming the handler function, got {self.entry!r}")


@dataclasses.dataclass(frozen=True)
class _Batch:
    fn: Callable[[np.ndarray], Any]
    max_size: int


def batch(fn: Callable[[np.ndarray], Any], max_size: int = 1024) -> _Batch:
    """Mark a Python handler as per-batch: ``fn(records) -> replies | None``.

    The kernel takes up to ``max_size`` waiting messages at once and calls ``fn`` with them as a
    numpy array of the input dtype; it returns an array-like of the output dtype (reply i answers
    request i) or None.
    """
    if not callable(fn):
        raise TypeError(f"batch() takes a callable, got {type(fn).__name__}")
    if isinstance(max_size, bool) or not isinstance(max_size, int) or not 1 <= max_size <= 65536:
        raise ValueError(f"max_size must be an int in [1, 65536], got {max_size!r}")
    return _Batch(fn, max_size)


class Buffer:
    """Memory kernels reach by ``handle``.

    On the CPU and OpenCL backends it is host memory and ``numpy()`` views it (zero-copy). On CUDA it is
    device memory: ``read()`` and ``write()`` copy, and DLPack (``torch.from_dlpack(buf)``,
    ``cupy.from_dlpack(buf)``) and ``__cuda_array_interface__`` share it without a copy. ``read`` and
    ``write`` work on every backend.
    """

    def __init__(self, runtime: "Runtime", handle: int, raw: Optional[np.ndarray], dtype: np.dtype, shape: tuple):
        self._runtime, self.handle, self._raw = runtime, handle, raw
        self.dtype, self.shape = dtype, shape
        self._address, self._nbytes, self.device = runtime._rt.buffer_info(handle)
        if raw is not None:
            self._nbytes = int(raw.nbytes)  # a view of the array it was made from
        else:
            self._nbytes = min(int(self._nbytes), int(np.prod(shape, dtype=np.int64)) * dtype.itemsize)

    @property
    def nbytes(self) -> int:
        return int(self._nbytes)

    @property
    def on_device(self) -> bool:
        """Whether the memory is a GPU's (CUDA), reached from the host only through copies or DLPack."""
        return self.device >= 0

    def numpy(self, dtype: Any = None) -> np.ndarray:
        """A view of the buffer: the dtype and shape it was made with, or reinterpreted as ``dtype``."""
        if self._raw is None:
            raise TypeError(f"this buffer is in the memory of CUDA device {self.device}, which the host cannot view: "
                            "use read() / write(), or share it through DLPack (torch.from_dlpack, cupy.from_dlpack) "
                            "or __cuda_array_interface__")
        if dtype is None:
            return self._raw.view(self.dtype).reshape(self.shape)
        return self._raw.view(np.dtype(dtype))

    def read(self, dtype: Any = None) -> np.ndarray:
        """A copy of the buffer: the dtype and shape it was made with, or as a flat array of ``dtype``."""
        raw = self._runtime._rt.read_buffer(self.handle, 0, self.nbytes)
        if dtype is None:
            return raw.view(self.dtype).reshape(self.shape)
        return raw.view(np.dtype(dtype))

    def write(self, data: Any, offset: int = 0) -> None:
        """Copy ``data`` (an array or any buffer) into the buffer at byte ``offset``."""
        arr = np.ascontiguousarray(data)
        if arr.dtype.hasobject:
            raise TypeError("write() takes arrays of fixed-size types, not Python objects")
        self._runtime._rt.write_buffer(self.handle, int(offset), arr.reshape(-1).view(np.uint8))

    def __dlpack__(self, *, stream: Any = None, max_version: Any = None, dl_device: Any = None,
                   copy: Optional[bool] = None) -> Any:
        """A DLPack capsule sharing the buffer (kDLCUDA on CUDA, kDLCPU elsewhere); never a copy.

        On CUDA, ``stream`` is the consumer's stream in DLPack's convention (None or 1: the legacy default
        stream, 2: the per-thread default stream, another int: a ``cudaStream_t``, -1: no ordering): the
        buffer's pending copies are ordered before the work the consumer queues on it next."""
        if copy:
            raise BufferError("Buffer.__dlpack__ shares the buffer's memory; it does not copy (copy=True)")
        if dl_device is not None and tuple(dl_device) != self.__dlpack_device__():
            raise BufferError(f"the buffer is on DLPack device {self.__dlpack_device__()}, not {tuple(dl_device)}")
        if self.device >= 0:
            s = 1 if stream is None else stream
            if not isinstance(s, int) or isinstance(s, bool) or s == 0 or s < -1:
                raise BufferError(f"stream must be None, -1 (no ordering), 1 (legacy default), 2 (per-thread default) "
                                  f"or a cudaStream_t handle > 2 for a CUDA buffer, got {stream!r} (DLPack forbids 0)")
            if s != -1:
                self._runtime._rt.order_buffers_before(s)
        elif stream is not None and stream != -1:
            raise BufferError(f"stream must be None or -1 for a buffer in host memory, got {stream!r}")
        try:
            return self._runtime._rt.buffer_dlpack(self.handle, self.dtype.str, list(self.shape))
        except ValueError as e:
            raise BufferError(str(e)) from None

    def __dlpack_device__(self) -> tuple:
        return (2, self.device) if self.device >= 0 else (1, 0)  # kDLCUDA, kDLCPU

    @property
    def __cuda_array_interface__(self) -> dict:
        """The CUDA array interface (version 3) of a buffer in device memory (CuPy, Numba, PyTorch)."""
        if self.device < 0:
            raise AttributeError("__cuda_array_interface__: this buffer is host memory (use numpy())")
        return {"shape": tuple(self.shape), "typestr": self.dtype.str, "data": (self._address, False),
                "version": 3, "strides": None, "stream": None}

    def release(self) -> None:
        """Stop the handle from resolving (the memory is freed with the runtime)."""
        self._runtime._rt.release_buffer(self.handle)

    def __repr__(self) -> str:
        where = f", device=cuda:{self.device}" if self.device >= 0 else ""
        return f"Buffer(handle={self.handle:#x}, nbytes={self.nbytes}, dtype={self.dtype}, shape={self.shape}{where})"


def _type_name(record_type: Any, dtype: np.dtype) -> str:
    """A record type as a user named it: a message class by its name, a dtype by its fields."""
    name = getattr(record_type, "__name__", None)
    return f"{name} ({dtype})" if name else str(dtype)


class Topic:
    """A named fan-out: each message published reaches every subscriber's input."""

    def __init__(self, runtime: "Runtime", name: str, record_type: Any):
        self._runtime, self.name, self.record_type = runtime, name, record_type
        self._codec = Queue(record_type, capacity=16)

    def subscribe(self, kernel: "Kernel") -> None:
        if kernel.input.dtype != self._codec.dtype:
            raise TypeError(f"cannot subscribe kernel '{kernel.name}' to topic '{self.name}': the kernel takes "
                            f"{_type_name(kernel.input_type, kernel.input.dtype)}, the topic carries "
                            f"{_type_name(self.record_type, self._codec.dtype)}")
        self._runtime._rt.subscribe(self.name, kernel._k)

    @property
    def subscribers(self) -> list:
        return list(self._runtime._rt.topic_subscribers(self.name))

    def publish(self, message: Any, *, timeout: Optional[float] = None) -> int:
        """Send one message to every subscriber; returns how many took it."""
        return int(self._runtime._rt.publish(self.name, self._codec, message, timeout))

    def __repr__(self) -> str:
        return f"Topic({self.name!r}, subscribers={self.subscribers})"


class Kernel:
    """A ring kernel. Made by ``Runtime.launch``; ``send``/``receive`` are its queues' methods."""

    def __init__(self, runtime: "Runtime", native: Any):
        self._runtime, self._k = runtime, native
        self._last_poll = 0.0
        self._last_warn = 0.0
        self._bind_io()

    def _bind_io(self) -> None:
        inq, outq = self._k.input, self._k.output
        self.send = inq.send
        self.send_batch = inq.send_batch
        if self._k.connected(""):
            self.receive = self.receive_batch = self._redirected  # type: ignore[method-assign]
        else:
            self.receive = outq.receive
            self.receive_batch = outq.receive_batch

    def _redirected(self, *args: Any, **kwargs: Any) -> Any:
        raise _core.LifecycleError(
            f"kernel '{self.name}' sends its replies to another kernel or a topic; receive from the end of "
            "the pipeline")

    # ---- identity ---------------------------------------------------------------------------------
    name = property(lambda self: self._k.name)
    id = property(lambda self: self._k.id)
    grid = property(lambda self: self._k.grid)
    mode = property(lambda self: Mode(self._k.mode), doc="rk.Mode.PERSISTENT or rk.Mode.DISPATCH: how it runs")
    block = property(lambda self: self._k.block)
    channels = property(lambda self: list(self._k.channels))
    input_type = property(lambda self: self._k.input_type)
    output_type = property(lambda self: self._k.output_type)
    backend = property(lambda self: self._runtime.backend)

    @property
    def state(self) -> KernelState:
        return self._k.state

    @property
    def input(self) -> Queue:
        """The kernel's input queue (named ``<name>.in``)."""
        return self._k.input

    @property
    def output(self) -> Queue:
        """The kernel's output queue (named ``<name>.out``)."""
        return self._k.output

    def channel(self, name: str) -> Queue:
        """The host queue of named output channel ``name`` (``<kernel>.<name>``)."""
        return self._k.channel_queue(name)

    # ---- lifecycle ----------------------------------------------------------------------------------
    def launch(self) -> None:
        self._k.launch()

    def activate(self) -> None:
        self._k.activate()

    def deactivate(self) -> None:
        self._k.deactivate()

    def terminate(self, timeout: Optional[float] = 5.0) -> KernelState:
        """Stop the kernel within ``timeout`` seconds. Returns TERMINATED, or FAULTED (with a
        RuntimeWarning, and ``fault`` saying why) when a block did not stop in time."""
        state = self._k.terminate(timeout)
        if state == KernelState.FAULTED:
            warnings.warn(self._k.fault, RuntimeWarning, stacklevel=2)
        return state

    @property
    def fault(self) -> str:
        return self._k.fault

    # ---- actor state, checkpoints, dead letters (DESIGN §11) ------------------------------------------
    state_type = property(lambda self: self._k.state_type, doc="the state record's type (None: no state)")

    def actor_state(self, timeout: Optional[float] = 5.0) -> Any:
        """A consistent copy of the kernel's state record (a message object for a message class, else a
        numpy record): the kernel is paused for the copy (no block inside a handler) and resumed at once.
        ``rk.KernelFaultError`` when a handler does not return within ``timeout``. (``state`` is the
        lifecycle state.)"""
        if self._k.state_type is None:
            raise ValueError(f"kernel '{self.name}' has no state: launch it with state= (a record type)")
        return _actor.record_of(self._k.state_type, self._k.actor_state(timeout))

    def checkpoint(self, timeout: Optional[float] = 5.0) -> bytes:
        """The kernel's state and the input it accepted but has not processed, taken consistently (the
        kernel is paused for the copy), as bytes in a versioned format with a checksum. ``restore()`` them
        into a kernel of the same types, in this process or another."""
        return self._k.checkpoint(timeout)

    def restore(self, blob: bytes, timeout: Optional[float] = 5.0) -> None:
        """Load a checkpoint: its state replaces this kernel's, its messages enter the input (with their
        ids and stamps). A corrupt blob, another format version or other record/state types raise
        ``rk.MessageFormatError``; too many messages for the input queue, ``ValueError``; nothing is
        changed then."""
        if not isinstance(blob, (bytes, bytearray, memoryview)):
            raise TypeError(f"restore() takes the bytes of a checkpoint, got {type(blob).__name__}")
        self._k.restore(bytes(blob), timeout)

    def drain(self) -> list:
        """The messages a stopped (TERMINATED or FAULTED) kernel accepted but never processed, taken out of
        it: first those the supervisor held for redelivery (a faulted handler's message), then its input
        rings', oldest first. Nothing it was sent is unaccounted for (replies + dead letters + drained)."""
        return [_actor.record_of(self._k.input_type, raw) for raw in self._k.drain()]

    @property
    def restarts(self) -> int:
        """How many times the supervisor restarted the kernel after a fault (``restart=`` policy)."""
        return self._k.restarts

    @property
    def abandoned_workers(self) -> int:
        """Workers abandoned inside a handler that ran past ``LaunchOptions.handler_timeout``: a thread
        cannot be preempted, so it is left to return on its own; its late result is discarded."""
        return self._k.abandoned_workers

    @property
    def restart_policy(self) -> Optional[RestartPolicy]:
        return self._k.restart_policy

    def dead_letters(self, clear: bool = False) -> list:
        """The requests the handler failed (``rk.DeadLetter``: message, error, attempts, ...), oldest
        first, at most ``LaunchOptions.dead_letter_capacity`` of them (more are counted in
        ``dead_letter_counts``). ``clear=True`` removes the ones returned."""
        return [_actor.dead_letter(self._k.input_type, row) for row in self._k.dead_letters(clear)]

    @property
    def dead_letter_counts(self) -> dict:
        """``{"total", "held", "dropped"}``: requests failed since launch, kept now, and failed while the
        store was full (counted, not kept)."""
        total, held, dropped = self._k.dead_letter_counts
        return {"total": total, "held": held, "dropped": dropped}

    # ---- health -------------------------------------------------------------------------------------
    messages_processed = property(lambda self: self._k.messages_processed)
    messages_dropped = property(lambda self: self._k.messages_dropped)
    errors = property(lambda self: self._k.errors, doc="handler failures so far")
    last_error = property(lambda self: self._k.last_error, doc="the last error code (negative), 0 if none")
    last_error_message = property(lambda self: self._k.last_error_message,
                                  doc="the text of the last Python handler exception")

    # ---- telemetry ----------------------------------------------------------------------------------
    def enable_telemetry(self) -> None:
        self._k.enable_telemetry()

    def disable_telemetry(self) -> None:
        self._k.disable_telemetry()

    def reset_telemetry(self) -> None:
        if not self._k.telemetry_enabled:
            warnings.warn(f"reset_telemetry() on kernel '{self.name}' whose telemetry is not enabled: "
                          "nothing is counted until enable_telemetry()", RuntimeWarning, stacklevel=2)
        self._k.reset_telemetry()

    def telemetry(self) -> "_core.Telemetry":
        """A snapshot of the live counters (read without stopping the kernel)."""
        now = time.monotonic()
        if now - self._last_poll < _POLL_WARN_INTERVAL and now - self._last_warn >= 1.0:
            self._last_warn = now
            warnings.warn(f"telemetry of kernel '{self.name}' polled faster than 10 kHz; the counters change "
                          "per message, poll less often or use telemetry_view()", RuntimeWarning, stacklevel=2)
        self._last_poll = now
        return self._k.telemetry()

    def telemetry_view(self) -> np.ndarray:
        """A zero-copy numpy view (ringkernel.layout.TELEMETRY_DTYPE) of the live telemetry struct."""
        if not self._k.telemetry_enabled:
            raise _core.TelemetryNotEnabledError(
                f"telemetry of kernel '{self.name}' is not enabled: call enable_telemetry() first")
        return self._k.telemetry_view()

    def control_view(self) -> np.ndarray:
        """A zero-copy numpy view (ringkernel.layout.CONTROL_BLOCK_DTYPE) of the live control block."""
        return self._k.control_view()

    # ---- asyncio ------------------------------------------------------------------------------------
    async def send_async(self, message: Any, *, timeout: Optional[float] = None, **kw: Any) -> bool:
        """``send`` for asyncio: waits for space on the event loop, without a thread or a spinning core."""
        return await _send_async(self._k.input, message, timeout, kw)

    async def receive_async(self, timeout: Optional[float] = None, **kw: Any) -> Any:
        """``receive`` for asyncio: waits on the event loop (an eventfd the loop watches)."""
        if self._k.connected(""):
            self._redirected()
        return await _receive_async(self._k.output, timeout, kw)

    def __repr__(self) -> str:
        return (f"Kernel({self.name!r}, {self.state.name}, handler={self._k.handler}, grid={self.grid}, "
                f"block={self.block})")


async def _wait_fd(fd: int, timeout: Optional[float]) -> bool:
    loop = asyncio.get_running_loop()
    fut: asyncio.Future = loop.create_future()

    def ready() -> None:
        if not fut.done():
            fut.set_result(True)

    loop.add_reader(fd, ready)
    try:
        await asyncio.wait_for(fut, timeout)
        return True
    except asyncio.TimeoutError:
        return False
    finally:
        loop.remove_reader(fd)
        try:
            os.read(fd, 8)
        except BlockingIOError:
            pass


async def _receive_async(q: Queue, timeout: Optional[float], kw: dict) -> Any:
    value = q.receive(0, **kw)
    if value is not None or timeout == 0:
        return value
    deadline = None if timeout is None else time.monotonic() + timeout
    fd = q._watch_readable()
    try:
        while True:
            value = q.receive(0, **kw)  # after watching: a message sent since is seen here or signals fd
            if value is not None or q.closed:
                return value
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                return None
            await _wait_fd(fd, left)
    finally:
        q._unwatch(fd)


async def _send_async(q: Queue, message: Any, timeout: Optional[float], kw: dict) -> bool:
    # One attempt at a time that never waits: accepted, refused (counted by the queue's strategy), or
    # full (BLOCK, nothing counted) -- then wait for space on the event loop and try again.
    attempt = q._try_send(message, **kw)
    if attempt != 2 or timeout == 0:
        if attempt == 2:
            return q.send(message, timeout=0, **kw)  # counted as timed out, as send(timeout=0) would
        return attempt == 0
    deadline = None if timeout is None else time.monotonic() + timeout
    fd = q._watch_writable()
    try:
        while True:
            attempt = q._try_send(message, **kw)  # raises LifecycleError once the queue is closed
            if attempt != 2:
                return attempt == 0
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                return q.send(message, timeout=0, **kw)  # the deadline passed: one last try, counted
            await _wait_fd(fd, left)
    finally:
        q._unwatch(fd)


HandlerArg = Union[str, Source, JitHandler, CompiledHandler, Callable[..., Any], _Batch]


def _jit_types(handler: Union[JitHandler, CompiledHandler], input: Any, output: Any, backend: str) -> tuple:
    """A compiled handler's record types (launch may restate them, not change them), on a backend that runs it."""
    if isinstance(handler, CompiledHandler):
        name = handler.name
        if handler.backend == "cpu":
            raise TypeError(f"rk.CompiledHandler '{name}' for cpu is the handler's LLVM IR, for inspection: launch "
                            "the rk.jit handler itself on cpu")
        if handler.backend != backend:
            raise CompileError(f"rk.CompiledHandler '{name}' was compiled for backend '{handler.backend}' and runs "
                               f"there only, not on '{backend}' (launch its rk.jit handler: it compiles for the "
                               "runtime's backend)")
    else:
        name = handler.__name__
        if backend not in JIT_BACKENDS:
            raise CompileError(_jit_not_here(name, backend))
    own_in = handler.input if handler.input is not None else input
    own_out = handler.output if handler.output is not None else (own_in if output is None else output)
    if own_in is None:
        raise TypeError(f"launch() needs input= for rk.CompiledHandler '{name}' (it was made without its types)")
    for what, given, own in (("input", input, own_in), ("output", output, own_out)):
        if given is not None and _jit_dtype(given, what) != _jit_dtype(own, what):
            raise TypeError(f"rk.jit handler '{name}' was compiled for {what} {_jit_dtype(own, what)}, "
                            f"launch() gave {_jit_dtype(given, what)}")
    return own_in, own_out


class Runtime:
    """Owns ring kernels and everything they use; a context manager (sync and async).

    ``backend``: "auto" (the best available; see ``.backend``), "cpu", "cuda", "opencl".
    Unavailable backends raise ``rk.BackendUnavailableError`` with the reason. ``device``: which
    device of a device backend (default: ``$RINGKERNEL_DEVICE``, else the first that can run ring
    kernels). ``mode`` (device backends): "persistent" keeps every kernel's blocks resident, "dispatch"
    launches a kernel whenever messages wait, "auto" is persistent while the device can keep the
    blocks resident and dispatch beyond; ``Kernel.mode`` says which one runs.
    """

    def __init__(self, backend: str = "auto", *, device: Optional[int] = None, mode: Union[Mode, str] = Mode.AUTO,
                 cache_dir: Optional[str] = None, compiler: Optional[str] = None, max_buffers: int = 4096):
        if not isinstance(backend, str):
            raise TypeError(f"backend must be a str ('auto', 'cpu', 'cuda', 'opencl'), got {type(backend).__name__}")
        if device is not None and (isinstance(device, bool) or not isinstance(device, int) or device < 0):
            raise ValueError(f"device must be None (the first suitable, or $RINGKERNEL_DEVICE) or an index >= 0, "
                             f"got {device!r}")
        includes = [str(_INCLUDE)] if (_INCLUDE / "rk_kernel.h").is_file() else []
        self._rt = _core._Runtime(backend, includes, cache_dir or "", compiler or "", max_buffers,
                                  -1 if device is None else device, _mode(mode))
        self._kernels: dict = {}
        self._topics: dict = {}
        _open_runtimes.add(self)
        if self._rt.backend == "cuda" and _core.cuda_module_loading() == "lazy":
            warnings.warn("CUDA loads modules lazily in this process (a library such as CuPy or PyTorch initialised "
                          "CUDA before ringkernel, without CUDA_MODULE_LOADING=EAGER): loading a module while ring "
                          "kernels are resident can wait for them forever, so rk.Source kernels must be launched "
                          "before the others, and other libraries' kernels should be loaded (run once) before ring "
                          "kernels are resident. Set CUDA_MODULE_LOADING=EAGER before CUDA starts to avoid this.",
                          RuntimeWarning, stacklevel=2)

    @property
    def backend(self) -> str:
        return self._rt.backend

    @property
    def closed(self) -> bool:
        return self._rt.closed

    @property
    def device_target(self) -> str:
        """What handlers compiled ahead of time must be built for to run here: ``'sm_90'`` on an H100
        (``handler.compile("cuda", arch=rt.device_target)``); empty on cpu and opencl."""
        return self._rt.device_target

    # ---- kernels ------------------------------------------------------------------------------------
    def create(self, name: str, handler: HandlerArg, *, input: Any = None, output: Any = None, grid: int = 1,
               block: int = 1, options: Optional[LaunchOptions] = None, channels: Iterable[str] = (),
               mode: Union[Mode, str, None] = None, state: Any = None,
               restart: Optional[RestartPolicy] = None) -> Kernel:
        """A kernel in state CREATED (``launch()`` starts it). See ``launch`` for the arguments."""
        max_batch = 1
        fn: Any = handler
        if isinstance(handler, _Batch):
            fn, max_batch = handler.fn, handler.max_size
        if isinstance(handler, (JitHandler, CompiledHandler)):
            input, output = _jit_types(handler, input, output, self.backend)
            own_state = getattr(handler, "state", None)
            if own_state is not None:
                if state is not None and _actor.dtype_of(state) != _actor.dtype_of(own_state):
                    raise TypeError(f"rk.jit handler '{handler.__name__}' was compiled for state "
                                    f"{_actor.dtype_of(own_state)}, launch() gave {_actor.dtype_of(state)}")
                state = own_state
            if isinstance(handler, JitHandler) and self.backend != "cpu":
                fn = handler.for_device(self.backend, self._rt.device_target)  # compiled for this device
        elif input is None:
            raise TypeError("launch() needs input=: the kernel's request type (an @rk.message class or a numpy "
                            "dtype); only an rk.jit handler brings its own")
        for arg, value in (("grid", grid), ("block", block)):
            if isinstance(value, bool) or not isinstance(value, int):
                raise TypeError(f"{arg} must be an int, got {type(value).__name__}")
        if options is not None and not isinstance(options, LaunchOptions):
            raise TypeError(f"options must be an rk.LaunchOptions, got {type(options).__name__}")
        if restart is not None and not isinstance(restart, RestartPolicy):
            raise TypeError(f"restart must be an rk.RestartPolicy, got {type(restart).__name__}")
        native = self._rt.create(name, fn, input, output, grid, block, options, list(channels), max_batch,
                                 "" if mode is None else _mode(mode), state, restart)
        k = Kernel(self, native)
        self._forget_ended()
        self._kernels[name] = k
        return k

    def _forget_ended(self) -> None:
        """Kernels that have ended are not kept here: a runtime that launches a kernel per job stays flat (a
        terminated kernel lives on only while its caller holds it, e.g. to drain its replies)."""
        ended = (KernelState.TERMINATED, KernelState.FAULTED)
        for old in [n for n, other in self._kernels.items() if other.state in ended]:
            del self._kernels[old]

    def launch(self, name: str, handler: HandlerArg, *, input: Any = None, output: Any = None, grid: int = 1,
               block: int = 1, options: Optional[LaunchOptions] = None, channels: Iterable[str] = (),
               mode: Union[Mode, str, None] = None, state: Any = None,
               restart: Optional[RestartPolicy] = None) -> Kernel:
        """Launch a ring kernel (state LAUNCHED: it consumes nothing until ``activate()``).

        handler: a built-in name (``rk.builtin_handlers()``), an ``rk.Source``, an ``rk.jit`` handler
        (compiled Python, for cpu or -- compiled for the device at launch -- cuda; it brings its record
        types), an ``rk.CompiledHandler`` made ahead of time for this device, a Python callable
        ``f(request) -> reply | None | {channel: reply}``, or ``rk.batch(f)`` for numpy batches.
        input/output: message classes or numpy dtypes (output defaults to input). grid: blocks
        (worker threads on CPU); block: threads per block. channels: named extra outputs. mode: this
        kernel's mode on a device backend (default: the runtime's). state: the kernel's state record type (a
        message class or numpy dtype): one record, zeroed, that handlers read and write -- a Python callable
        is then called ``f(request, state)``, an rk.Source handler reaches it with ``rk_state(ctx)``, an
        rk.jit handler takes it as a third argument -- and ``actor_state()``/``checkpoint()`` copy.
        restart: an ``rk.RestartPolicy``: a fault of the handler (``LaunchOptions.handler_timeout``, a trap,
        ``rk_fault()``, ``rk.KernelFault``) restarts the kernel and delivers its message again. On opencl
        (persistent mode) and cuda ``rk_fault()`` restarts; the watchdog (handler_timeout) is the cpu backend's.
        """
        k = self.create(name, handler, input=input, output=output, grid=grid, block=block, options=options,
                        channels=channels, mode=mode, state=state, restart=restart)
        k.launch()
        return k

    def kernels(self) -> list:
        """The kernels of this runtime that have not been terminated."""
        self._forget_ended()
        return list(self._kernels.values())

    # ---- queues -------------------------------------------------------------------------------------
    def queue_names(self) -> list:
        return list(self._rt.queue_names())

    def queue(self, name: str) -> Queue:
        """A registered queue by name (KeyError if none)."""
        return self._rt.queue(name)

    def create_queue(self, name: str, record_type: Any, **config: Any) -> Queue:
        """Register a new named queue; ``config`` as for ``rk.Queue`` (capacity, backpressure, ...)."""
        return self._rt.create_queue(name, Queue(record_type, **config))

    def destroy_queue(self, name: str) -> None:
        """Close and unregister a queue made with ``create_queue`` (blocked senders return)."""
        self._rt.destroy_queue(name)

    # ---- K2K and topics -----------------------------------------------------------------------------
    def connect(self, src: Kernel, dst: Union[Kernel, Topic], *, channel: Optional[str] = None) -> str:
        """Feed ``src``'s replies (on ``channel``, default: its main output) into ``dst``: a kernel's
        input (through a ring named ``src->dst``), every subscriber of a topic, or a kernel of another
        runtime -- another backend -- through a host bridge thread."""
        ch = channel or ""
        if isinstance(dst, Topic):
            self._rt.connect_topic(src._k, dst.name, ch)
            name = dst.name
        elif isinstance(dst, Kernel) and dst._runtime is not self:
            name = self._rt.bridge(src._k, dst._k, ch)
        elif isinstance(dst, Kernel):
            name = self._rt.connect(src._k, dst._k, ch)
        else:
            raise TypeError(f"connect() feeds a Kernel or a Topic, got {type(dst).__name__}")
        if not ch:
            src._bind_io()
        return name

    def topic(self, name: str, record_type: Any = None) -> Topic:
        """The topic ``name``, created on first use (``record_type`` required then)."""
        t = self._topics.get(name)
        if t is None:
            if record_type is None:
                raise KeyError(f"no topic named '{name}'; create it with rt.topic('{name}', record_type)")
            self._rt.create_topic(name, record_type)
            t = self._topics[name] = Topic(self, name, record_type)
        elif record_type is not None:
            wanted = Queue(record_type, capacity=16).dtype
            if wanted != t._codec.dtype:
                raise TypeError(f"topic '{name}' exists and carries {_type_name(t.record_type, t._codec.dtype)}, not "
                                f"{_type_name(record_type, wanted)}")
        return t

    # ---- buffers ------------------------------------------------------------------------------------
    def buffer(self, data: Union[int, np.ndarray]) -> Buffer:
        """Memory kernels can reach by handle: ``nbytes`` zeroed bytes, or a copy of an ndarray."""
        if isinstance(data, np.ndarray):
            arr = np.ascontiguousarray(data)
            if arr.dtype.hasobject:
                raise TypeError("buffer() takes arrays of fixed-size types, not Python objects")
            handle, raw = self._rt.buffer(max(arr.nbytes, 1))
            if raw is None:  # device memory
                if arr.nbytes:
                    self._rt.write_buffer(handle, 0, arr.reshape(-1).view(np.uint8))
                return Buffer(self, handle, None, arr.dtype, arr.shape)
            raw[: arr.nbytes] = arr.reshape(-1).view(np.uint8)
            return Buffer(self, handle, raw[: arr.nbytes] if arr.nbytes else raw, arr.dtype, arr.shape)
        if isinstance(data, bool) or not isinstance(data, (int, np.integer)):
            raise TypeError(f"buffer() takes a size in bytes or a numpy array, got {type(data).__name__}")
        handle, raw = self._rt.buffer(int(data))
        return Buffer(self, handle, raw, np.dtype(np.uint8), (int(data),))

    # ---- closing ------------------------------------------------------------------------------------
    def close(self, timeout: Optional[float] = 5.0) -> None:
        """Terminate every kernel (each within ``timeout``), release queues, topics and buffers."""
        if self._rt.closed:
            return
        faulted_before = {n for n, k in self._kernels.items() if k.state == KernelState.FAULTED}
        self._rt.close(timeout)
        for name, k in self._kernels.items():
            if k.state == KernelState.FAULTED and name not in faulted_before:
                warnings.warn(k.fault, RuntimeWarning, stacklevel=2)
        _open_runtimes.discard(self)

    def __enter__(self) -> "Runtime":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    async def __aenter__(self) -> "Runtime":
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await asyncio.get_running_loop().run_in_executor(None, self.close)

    def __repr__(self) -> str:
        state = "closed" if self.closed else f"{len(self.kernels())} kernels"
        return f"Runtime(backend={self.backend!r}, {state})"


@atexit.register
def _close_all() -> None:
    # Kernels with Python handlers must stop before the interpreter goes away.
    for rt in list(_open_runtimes):
        try:
            rt.close(1.0)
        except Exception:  # noqa: BLE001 - best effort at exit
            pass
