"""numpy dtypes of the shared memory layouts (csrc/include/ringkernel/layout.h).

They are written out here field by field, independently of the C headers, and the test suite
checks them against the sizes and offsets the C++ compiler produced (``_core.layout_info()``):
a change on either side that is not made on the other fails the tests.
"""

from __future__ import annotations

import numpy as np

__all__ = ["RING_HEADER_DTYPE", "ENVELOPE_DTYPE", "RING_DESC_DTYPE", "CONTROL_BLOCK_DTYPE", "TELEMETRY_DTYPE"]

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
            "clock_offset_ns",
        ],
        "formats": ["<i4", "<i4", "<i4", "<i4", "<i8", "<i8", RING_DESC_DTYPE, RING_DESC_DTYPE, "<u8", "<u8", "<i4",
                    "<i4", "<i4", "<u4", "<u8", "<u8", "<i4", "<u8"],
        "offsets": [0, 4, 8, 12, 16, 24, 32, 48, 64, 72, 80, 84, 88, 92, 96, 104, 112, 120],
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
