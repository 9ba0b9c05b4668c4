"""What a kernel keeps as an actor (DESIGN.md §11): its state record, checkpoints, dead letters.

The work is native (``Kernel::actor_state``, ``checkpoint``, ``restore``, ``dead_letters`` in
csrc/core/actor_state.cpp and checkpoint.cpp); this module turns their bytes into the kernel's record
types.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

__all__ = ["DeadLetter", "record_of", "dtype_of"]


@dataclasses.dataclass(frozen=True)
class DeadLetter:
    """A request its handler failed, kept instead of lost (``Kernel.dead_letters()``).

    ``message`` is the request as it arrived (an object of the kernel's input message class, or a numpy
    record); ``error`` what the handler said (a Python handler's exception text) or what its error code
    means; ``attempts`` how many deliveries of it failed; ``code`` the error code (``rk.ERR_*``);
    ``id`` and ``correlation_id`` its envelope's, ``timestamp`` its packed HLC stamp.
    """

    message: Any
    error: str
    attempts: int
    code: int
    id: int
    correlation_id: int
    timestamp: int


def dtype_of(record_type: Any) -> np.dtype:
    """The numpy dtype of a record type: a message class (its ``dtype``) or anything np.dtype takes."""
    dt = getattr(record_type, "dtype", None)
    return dt if isinstance(dt, np.dtype) else np.dtype(record_type)


def record_of(record_type: Any, raw: bytes) -> Any:
    """``raw`` as a value of ``record_type``: a message object for a message class, else a numpy record
    (np.void, a copy the caller owns)."""
    if hasattr(record_type, "from_bytes"):
        return record_type.from_bytes(raw)
    return np.frombuffer(bytearray(raw), dtype=dtype_of(record_type))[0]


def dead_letter(input_type: Any, row: tuple) -> DeadLetter:
    raw, error, attempts, code, mid, corr, ts = row
    return DeadLetter(record_of(input_type, raw), error, int(attempts), int(code), int(mid), int(corr), int(ts))
