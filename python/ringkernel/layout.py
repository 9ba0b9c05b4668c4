"""numpy dtypes of the shared memory layouts (csrc/include/ringkernel/layout.h).

They are written out here field by field, independently of the C headers, and the test suite
checks them against the sizes and offsets the C++ compiler produced (``_core.layout_info()``):
a change on either side that is not made on the other fails the tests.
"""

from __future__ import annotations

import numpy as np

from . import _core

__all__ = ["RING_HEADER_DTYPE", "ENVELOPE_DTYPE", "RING_DESC_DTYPE", "CONTROL_BLOCK_DTYPE", "TELEMETRY_DTYPE",
           "MAX_INPUTS", "MAX_CHANNELS", "MAX_FANOUT", "ROUTE_DTYPE", "CHANNEL_DTYPE", "ROUTES_DTYPE",
           "BUFFER_ENTRY_DTYPE", "BUFFER_TABLE_DTYPE", "KERNEL_PARAMS_DTYPE"]

RING_HEADER_DTYPE = np.dtype(
    {
        "names": ["head", "expired", "tail", "rejected", "dropped_new", "evicted", "magic", "version", "capacity",
                  "mask", "slot_stride", "max_payload", "flags"],
        "formats": ["<u8", "<u8", "<u8", "<u8", "<u8", "<u8", "<u4", "<u4", "<u4", "<u4", "<u4", "<u4", "<u4"],
        "offsets": [0, 8, 128, 136, 144, 152, 256, 260, 264, 268, 272, 276, 280],
        "itemsize": 384,
    }
)

ENVELOPE_DTYPE = np.dtype(
    [
        ("message_id", "<u8"),
        ("correlation_id", "<u8"),
        ("timestamp", "<u8"),
        ("enqueue_ns", "<u8"),
        ("payload_size", "<u4"),
        ("type_id", "<u2"),
        ("source_kernel", "<u2"),
        ("priority", "u1"),
        ("flags", "u1"),
        ("reserved0", "<u2"),
        ("reserved1", "<u4"),
        ("reserved2", "<u8"),
        ("sequence", "<u8"),
    ],
    align=True,
)

RING_DESC_DTYPE = np.dtype([("address", "<u8"), ("capacity", "<u4"), ("slot_stride", "<u4")], align=True)

CONTROL_BLOCK_DTYPE = np.dtype(
    {
        "names": [
            "is_active",
            "should_terminate",
            "has_terminated",
            "errors_encountered",
            "messages_processed",
            "last_activity_ns",
            "input",
            "output",
            "hlc",
            "next_reply_id",
            "telemetry_enabled",
            "blocks_exited",
            "last_error",
            "node",
            "messages_dropped",
            "clock_ns",
            "blocks_started",
            "blocks_paused",
            "clock_offset_ns",
        ],
        "formats": ["<i4", "<i4", "<i4", "<i4", "<i8", "<i8", RING_DESC_DTYPE, RING_DESC_DTYPE, "<u8", "<u8", "<i4",
                    "<i4", "<i4", "<u4", "<u8", "<u8", "<i4", "<i4", "<u8"],
        "offsets": [0, 4, 8, 12, 16, 24, 32, 48, 64, 72, 80, 84, 88, 92, 96, 104, 112, 116, 120],
        "itemsize": 128,
    }
)

TELEMETRY_DTYPE = np.dtype(
    [
        ("messages_processed", "<u8"),
        ("messages_dropped", "<u8"),
        ("last_processed_timestamp", "<u8"),
        ("queue_depth", "<u4"),
        ("error_code", "<u4"),
        ("total_latency_ns", "<u8"),
        ("min_latency_ns", "<u8"),
        ("max_latency_ns", "<u8"),
        ("reserved", "<u8"),
    ],
    align=True,
)

# Routes, buffers and launch parameters (layout.h): what blocks read on every target. Pointers are 64-bit
# device-visible addresses.
MAX_INPUTS, MAX_CHANNELS, MAX_FANOUT = 16, 8, 16

ROUTE_DTYPE = np.dtype([("ring", "<u8"), ("cookie", "<u8")], align=True)

CHANNEL_DTYPE = np.dtype([("count", "<u4"), ("reserved", "<u4"), ("targets", ROUTE_DTYPE, (MAX_FANOUT,))],
                         align=True)

ROUTES_DTYPE = np.dtype(
    [("n_inputs", "<u4"), ("n_channels", "<u4"), ("inputs", ROUTE_DTYPE, (MAX_INPUTS,)),
     ("channels", CHANNEL_DTYPE, (MAX_CHANNELS,))],
    align=True,
)

BUFFER_ENTRY_DTYPE = np.dtype(
    [("address", "<u8"), ("bytes", "<u8"), ("generation", "<u4"), ("live", "<u4"), ("reserved", "<u8")], align=True
)

BUFFER_TABLE_DTYPE = np.dtype([("capacity", "<u4"), ("reserved", "<u4"), ("entries", "<u8")], align=True)

KERNEL_PARAMS_DTYPE = np.dtype(
    [
        ("control_block", "<u8"),
        ("telemetry", "<u8"),
        ("routes_word", "<u8"),
        ("buffers", "<u8"),
        ("ttl_ns", "<u8"),
        ("reply_id_base", "<u8"),
        ("in_size", "<u4"),
        ("out_size", "<u4"),
        ("backpressure", "<u4"),
        ("out_type", "<u2"),
        ("node", "<u2"),
        ("clock_offset_ns", "<u8"),
        ("run_limit", "<u4"),
        ("idle_backoff_ns", "<u4"),
        ("state", "<u8"),
        ("dead_letters", "<u8"),
        ("state_size", "<u4"),
        ("supervised", "<u4"),
    ],
    align=True,
)

# The bindings read envelopes, telemetry and control blocks with these dtypes (they never import this module).
_core._set_layout_dtypes(ENVELOPE_DTYPE, TELEMETRY_DTYPE, CONTROL_BLOCK_DTYPE)
