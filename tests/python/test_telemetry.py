"""Kernel telemetry on every backend: the counters say what was sent; fast polling warns, rate limited."""

from __future__ import annotations

import warnings

import pytest

import ringkernel as rk

from kernel_helpers import REC, rec


# ---- telemetry ---------------------------------------------------------------------------------------------

@pytest.mark.filterwarnings("ignore:telemetry of kernel")
def test_telemetry_counts_what_was_sent(rt):
    k = rt.launch("tel", "echo", input=REC)
    with pytest.raises(rk.TelemetryNotEnabledError):
        k.telemetry()
    with pytest.warns(RuntimeWarning, match="not enabled"):
        k.reset_telemetry()
    k.enable_telemetry()
    k.activate()
    view = k.telemetry_view()
    assert view.dtype == rk.layout.TELEMETRY_DTYPE
    n = 300
    for i in range(n):
        k.send(rec(i))
    for _ in range(n):
        assert k.receive(timeout=2) is not None
    t = k.telemetry()
    assert t.messages_processed == n == int(view["messages_processed"])  # the view is live
    assert 0 < t.min_latency_ns <= t.avg_latency_ns <= t.max_latency_ns
    assert t.last_processed_timestamp > 0 and t.error_code == 0
    k.reset_telemetry()
    assert k.telemetry().messages_processed == 0 and int(view["messages_processed"]) == 0
    k.disable_telemetry()
    with pytest.raises(rk.TelemetryNotEnabledError):
        k.telemetry()


def test_fast_telemetry_polling_warns_rate_limited(rt):
    k = rt.launch("poll", "echo", input=REC)
    k.enable_telemetry()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for _ in range(1000):
            k.telemetry()
    polls = [w for w in caught if "10 kHz" in str(w.message)]
    assert len(polls) == 1
