"""ringkernel — GPU-native actors: persistent ring kernels fed by lock-free message rings.

The native core lives in the private extension ``ringkernel._core``; this package re-exports
its public surface. Importing it never touches a GPU driver or an OpenCL runtime.
"""

from __future__ import annotations

import importlib.util as _importlib_util
import os as _os


def _nvrtc_from_wheel() -> None:
    """Point the CUDA backend at NVRTC from the nvidia-cuda-nvrtc wheel (the ``[cuda]`` extra) when it is
    installed and $RINGKERNEL_NVRTC_LIBRARY is not set: a path lookup only, nothing is loaded here."""
    if _os.environ.get("RINGKERNEL_NVRTC_LIBRARY"):
        return
    try:
        spec = _importlib_util.find_spec("nvidia")  # a namespace package: finding it runs no code
    except (ImportError, ValueError):
        return
    for root in (spec.submodule_search_locations or []) if spec else []:
        for rel in ("cu13/lib/libnvrtc.so.13", "cuda_nvrtc/lib/libnvrtc.so.12"):
            path = _os.path.join(root, rel)
            if _os.path.isfile(path):
                _os.environ["RINGKERNEL_NVRTC_LIBRARY"] = path
                return


_nvrtc_from_wheel()

from . import layout  # noqa: E402
from .messages import (  # noqa: E402
    array,
    bool_,
    bytes_,
    c_header,
    f32,
    f64,
    i8,
    i16,
    i32,
    i64,
    is_message,
    message,
    string,
    u8,
    u16,
    u32,
    u64,
    write_header,
)
from .runtime import Buffer, Kernel, KernelState, Mode, Runtime, Source, Topic, batch  # noqa: E402
from .compiled import CompiledHandler, JitHandler, jit  # noqa: E402  (Numba is imported on first use)
from .actor import DeadLetter  # noqa: E402
from ._core import (  # noqa: E402
    BackendInfo,
    BackendUnavailableError,
    Backpressure,
    ClockSkewError,
    CompileError,
    Envelope,
    HlcClock,
    HlcTimestamp,
    KernelFault,
    KernelFaultError,
    LaunchOptions,
    LifecycleError,
    MessageFormatError,
    Queue,
    QueueStats,
    RestartPolicy,
    RingKernelError,
    Telemetry,
    TelemetryNotEnabledError,
    __version__,
    backends,
    builtin_handlers,
)

__all__ = [
    "BackendInfo",
    "BackendUnavailableError",
    "Backpressure",
    "ClockSkewError",
    "CompileError",
    "Envelope",
    "HlcClock",
    "HlcTimestamp",
    "KernelFault",
    "KernelFaultError",
    "LaunchOptions",
    "LifecycleError",
    "MessageFormatError",
    "Queue",
    "QueueStats",
    "RestartPolicy",
    "RingKernelError",
    "TelemetryNotEnabledError",
    "__version__",
    "backends",
    "builtin_handlers",
    "layout",
    # ring kernels (ringkernel.runtime)
    "Buffer",
    "CompiledHandler",
    "DeadLetter",
    "JitHandler",
    "jit",
    "Kernel",
    "KernelState",
    "Mode",
    "Runtime",
    "Source",
    "Telemetry",
    "Topic",
    "batch",
    # message types (ringkernel.messages)
    "array",
    "bool_",
    "bytes_",
    "c_header",
    "f32",
    "f64",
    "i8",
    "i16",
    "i32",
    "i64",
    "is_message",
    "message",
    "string",
    "u8",
    "u16",
    "u32",
    "u64",
    "write_header",
]
