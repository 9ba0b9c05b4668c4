"""Hybrid logical clock from Python (DESIGN §5, §7)."""

import threading
import time

import pytest
from hypothesis import given
from hypothesis import strategies as st

import ringkernel as rk


def wall_ms() -> int:
    return time.time_ns() // 1_000_000


def test_now_is_close_to_wall_time_and_strictly_increasing():
    clock = rk.HlcClock(node_id=7)
    before = wall_ms()
    stamps = [clock.now() for _ in range(10_000)]
    assert before - 5 <= stamps[0].physical <= wall_ms() + 5
    assert all(a < b for a, b in zip(stamps, stamps[1:]))
    assert {s.node for s in stamps} == {7}
    assert clock.last() == stamps[-1]


def test_update_orders_the_receive_after_the_send():
    sender, receiver = rk.HlcClock(node_id=1), rk.HlcClock(node_id=2)
    remote = rk.HlcTimestamp(wall_ms() + 200, 40, 1)  # ahead, within max_offset 0.5 s
    got = receiver.update(remote)
    assert got.pack() > remote.pack() and got.node == 2
    assert receiver.now() > got
    assert sender.now() < receiver.update(sender.now())


def test_remote_stamp_too_far_ahead_raises_clockskewerror_and_leaves_the_clock():
    clock = rk.HlcClock(node_id=1, max_offset=0.5)
    last = clock.now()
    with pytest.raises(rk.ClockSkewError, match=r"ms ahead of the local clock; the limit \(max_offset\) is 500 ms"):
        clock.update(rk.HlcTimestamp(wall_ms() + 5_000, 0, 2))
    assert clock.last() == last
    assert isinstance(rk.ClockSkewError("x"), rk.RingKernelError)


def test_logical_counter_never_wraps():
    clock = rk.HlcClock(node_id=1)
    t = clock.update(rk.HlcTimestamp(wall_ms() + 100, 0xFFFE, 2))
    assert t.logical == 0xFFFF
    u = clock.now()
    assert u > t
    assert (u.physical, u.logical) == (t.physical + 1, 0)
    assert clock.borrows == 1


def test_pack_unpack_and_ordering():
    t = rk.HlcTimestamp(1_700_000_000_123, 5, 9)
    assert t.pack() == (1_700_000_000_123 << 16) | 5
    assert rk.HlcTimestamp.unpack(t.pack(), 9) == t
    assert rk.HlcTimestamp.unpack(t.pack()).node == 0
    assert rk.HlcTimestamp(10, 1, 1) < rk.HlcTimestamp(10, 1, 2) < rk.HlcTimestamp(10, 2, 0) < rk.HlcTimestamp(11)
    assert len({rk.HlcTimestamp(1, 2, 3), rk.HlcTimestamp(1, 2, 3)}) == 1
    assert repr(t) == "HlcTimestamp(physical=1700000000123, logical=5, node=9)"


@given(st.integers(0, (1 << 48) - 1), st.integers(0, 0xFFFF), st.integers(0, 0xFFFF))
def test_pack_unpack_roundtrip_property(physical, logical, node):
    t = rk.HlcTimestamp(physical, logical, node)
    assert rk.HlcTimestamp.unpack(t.pack(), node) == t


@given(st.lists(st.tuples(st.integers(0, (1 << 48) - 1), st.integers(0, 0xFFFF), st.integers(0, 0xFFFF)),
                min_size=2, max_size=20))
def test_ordering_is_lexicographic_property(triples):
    stamps = [rk.HlcTimestamp(*t) for t in triples]
    assert [(s.physical, s.logical, s.node) for s in sorted(stamps)] == sorted(triples)


@pytest.mark.parametrize(
    "args, error, message",
    [
        ((1 << 48,), ValueError, r"physical must be in \[0, 281474976710655\]"),
        ((0, 1 << 16), ValueError, r"logical must be in \[0, 65535\]"),
        ((0, 0, -1), ValueError, r"node must be in \[0, 65535\]"),
        (("1",), TypeError, r"physical must be an int"),
    ],
)
def test_timestamp_validation(args, error, message):
    with pytest.raises(error, match=message):
        rk.HlcTimestamp(*args)


@pytest.mark.parametrize("kwargs, message", [({"node_id": 70000}, "node_id must be in"),
                                             ({"max_offset": -1}, "max_offset must be"),
                                             ({"max_offset": float("inf")}, "max_offset must be")])
def test_clock_validation(kwargs, message):
    with pytest.raises(ValueError, match=message):
        rk.HlcClock(**kwargs)


def test_unique_and_monotonic_across_threads():
    clock = rk.HlcClock(node_id=3)
    per_thread: list[list[int]] = [[] for _ in range(4)]

    def work(out: list[int]) -> None:
        for _ in range(20_000):
            out.append(clock.now().pack())

    threads = [threading.Thread(target=work, args=(out,)) for out in per_thread]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for out in per_thread:
        assert out == sorted(out) and len(set(out)) == len(out)
    everything = [x for out in per_thread for x in out]
    assert len(set(everything)) == len(everything)
