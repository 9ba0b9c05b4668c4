import numpy as np
import pytest

# A 64-byte structured record used across the suite.
SAMPLE = np.dtype([("seq", "<u8"), ("sensor", "<u4"), ("flags", "<u4"), ("values", "<f4", (12,))])


@pytest.fixture
def sample_dtype() -> np.dtype:
    return SAMPLE


def record(seq: int, dtype: np.dtype = SAMPLE):
    """One numpy record (np.void) with the given sequence number."""
    arr = np.zeros(1, dtype=dtype)
    arr["seq"] = seq
    return arr[0]


def records(start: int, n: int, dtype: np.dtype = SAMPLE) -> np.ndarray:
    arr = np.zeros(n, dtype=dtype)
    arr["seq"] = np.arange(start, start + n)
    return arr
