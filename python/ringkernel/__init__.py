"""ringkernel — GPU-native actors: persistent ring kernels fed by lock-free message rings.

The native core lives in the private extension ``ringkernel._core``; this package re-exports
its public surface. Importing it never touches a GPU driver or an OpenCL runtime.
"""

from __future__ import annotations

from . import layout
from .messages import (
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
from ._core import (
    BackendInfo,
    BackendUnavailableError,
    Backpressure,
    ClockSkewError,
    CompileError,
    HlcClock,
    HlcTimestamp,
    KernelFaultError,
    LaunchOptions,
    LifecycleError,
    MessageFormatError,
    Queue,
    QueueStats,
    RingKernelError,
    TelemetryNotEnabledError,
    __version__,
    backends,
)

__all__ = [
    "BackendInfo",
    "BackendUnavailableError",
    "Backpressure",
    "ClockSkewError",
    "CompileError",
    "HlcClock",
    "HlcTimestamp",
    "KernelFaultError",
    "LaunchOptions",
    "LifecycleError",
    "MessageFormatError",
    "Queue",
    "QueueStats",
    "RingKernelError",
    "TelemetryNotEnabledError",
    "__version__",
    "backends",
    "layout",
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
