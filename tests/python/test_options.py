"""LaunchOptions and Backpressure (DESIGN §7)."""

import copy

import pytest

import ringkernel as rk


def test_presets():
    p, low, high = rk.LaunchOptions.production(), rk.LaunchOptions.low_latency(), rk.LaunchOptions.high_throughput()
    assert (p.queue_capacity, p.backpressure) == (4096, rk.Backpressure.BLOCK)
    assert (low.queue_capacity, low.backpressure) == (256, rk.Backpressure.REJECT)
    assert (high.queue_capacity, high.backpressure) == (16384, rk.Backpressure.BLOCK)
    assert rk.LaunchOptions() == p


def test_constructor_keywords_and_defaults():
    o = rk.LaunchOptions(queue_capacity=1024, dedup_window=64, backpressure=rk.Backpressure.DROP_NEW,
                         priority=True, ttl=2.5)
    assert (o.queue_capacity, o.dedup_window, o.backpressure, o.priority, o.ttl) == (
        1024, 64, rk.Backpressure.DROP_NEW, True, 2.5)
    assert rk.LaunchOptions().ttl is None
    assert "queue_capacity=1024" in repr(o) and "DROP_NEW" in repr(o)


def test_dedup_window_is_clamped_to_capacity():
    o = rk.LaunchOptions(queue_capacity=64, dedup_window=1024)
    assert o.dedup_window == 64
    o.queue_capacity = 4096
    assert o.dedup_window == 1024


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"queue_capacity": 1000}, r"queue_capacity must be a power of two in \[16, 1048576\], got 1000 \(nearest valid: 1024\)"),
        ({"queue_capacity": 8}, r"queue_capacity must be a power of two in \[16, 1048576\], got 8"),
        ({"queue_capacity": 1 << 21}, r"queue_capacity .* got 2097152"),
        ({"queue_capacity": -1}, r"queue_capacity must be in \[0, "),
        ({"dedup_window": 8}, r"dedup_window must be 0 \(off\) or in \[16, 1024\], got 8"),
        ({"dedup_window": 4096}, r"dedup_window .* got 4096"),
        ({"ttl": 0}, r"ttl must be None or a number of seconds in \(0, 1e9\]"),
        ({"ttl": -1.0}, r"ttl must be None"),
        ({"ttl": float("nan")}, r"ttl must be None"),
    ],
)
def test_invalid_values_raise_valueerror_naming_field_and_range(kwargs, message):
    with pytest.raises(ValueError, match=message):
        rk.LaunchOptions(**kwargs)


@pytest.mark.parametrize("field, value", [("queue_capacity", 3), ("dedup_window", 2000), ("ttl", -5)])
def test_setters_validate_and_keep_the_old_value(field, value):
    o = rk.LaunchOptions()
    before = getattr(o, field)
    with pytest.raises(ValueError, match=field):
        setattr(o, field, value)
    assert getattr(o, field) == before


@pytest.mark.parametrize("kwargs", [{"queue_capacity": "4096"}, {"queue_capacity": 4096.0}, {"dedup_window": None},
                                    {"backpressure": "BLOCK"}, {"queue_capacity": True}])
def test_wrong_types_raise_typeerror(kwargs):
    with pytest.raises(TypeError):
        rk.LaunchOptions(**kwargs)


def test_copy_is_independent_and_options_are_unhashable():
    o = rk.LaunchOptions()
    c = copy.copy(o)
    c.queue_capacity = 16
    assert o.queue_capacity == 4096
    with pytest.raises(TypeError):
        hash(o)


def test_backpressure_is_an_int_enum_with_the_four_strategies():
    assert [b.name for b in rk.Backpressure] == ["BLOCK", "REJECT", "DROP_OLDEST", "DROP_NEW"]
    assert rk.Backpressure(1) is rk.Backpressure.REJECT
    assert int(rk.Backpressure.DROP_NEW) == 3
