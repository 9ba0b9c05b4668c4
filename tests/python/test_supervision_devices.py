"""Restarts on every backend that has them (DESIGN §11): rk.Source handlers under a RestartPolicy on cpu, OpenCL
(persistent mode: its blocks hand a fault to the host's supervisor through the dead-letter ring and wait for the
decision; redeliveries come back through the kernel's first input) and CUDA (the same dialect and bridge; run
when a GPU is lent). Every case counts what was sent against replies, dead letters and drained messages: exact.
(The watchdog, handler_timeout, is the cpu backend's: test_supervision.py.)"""

from __future__ import annotations

import os
import time

import numpy as np
import pytest

import ringkernel as rk
from kernel_helpers import REC, availability, rec, wait_for

# seq 3 reports a fault of the kernel on every delivery (rk_fault); a message with value < 0 does on its first
# delivery only (the state remembers the last seq that faulted). The state counts every message handled, so a
# message handled twice would show.
SOURCE = r"""
typedef struct { rk_u64 seq; rk_f64 value; } rec;
typedef struct { rk_u64 faulted; rk_u64 handled; } tally;
int flaky(rk_ctx *ctx, RK_GLOBAL const void *in, RK_LOCAL void *out) {
    RK_GLOBAL const rec *r = (RK_GLOBAL const rec *)in;
    RK_GLOBAL tally *t = (RK_GLOBAL tally *)rk_state(ctx);
    if (r->seq == 3) return rk_fault(ctx);
    if (r->value < 0 && t->faulted != r->seq + 1) {
        t->faulted = r->seq + 1;
        return rk_fault(ctx);
    }
    t->handled += 1;
    RK_LOCAL rec *o = (RK_LOCAL rec *)out;
    o->seq = r->seq;
    o->value = r->value;
    return RK_REPLY;
}
"""
TALLY = np.dtype([("faulted", "<u8"), ("handled", "<u8")])


@pytest.fixture(params=["cpu", "opencl", pytest.param("cuda", marks=pytest.mark.cuda)])
def drt(request):
    info = availability()[request.param]
    if not info.available:
        pytest.skip(f"backend {request.param} unavailable here: {info.detail}")
    with rk.Runtime(request.param) as runtime:
        yield runtime


def launch(rt, name="k", **policy):
    return rt.launch(name, rk.Source(SOURCE, entry="flaky"), input=REC, state=TALLY,
                     options=rk.LaunchOptions(queue_capacity=1024), restart=rk.RestartPolicy(**policy))


def receive_all(k, n, timeout=20.0):
    got = []
    deadline = time.monotonic() + timeout
    while len(got) < n and time.monotonic() < deadline:
        got.extend(int(s) for s in k.receive_batch(256, timeout=0.1)["seq"])
    return got


def test_rk_fault_is_redelivered_until_max_attempts_then_dead_lettered(drt):
    k = launch(drt, max_restarts=100, max_attempts=3)
    k.activate()
    for i in (0, 1, 3, 5, 6):
        assert k.send(rec(i), id=500 + i)
    assert receive_all(k, 4) == [0, 1, 5, 6]
    assert wait_for(lambda: k.dead_letter_counts["total"] == 1)
    (dead,) = k.dead_letters()
    assert (int(dead.message["seq"]), dead.id, dead.attempts, dead.code) == (3, 503, 3, rk._core.ERR_FAULT)
    assert "rk_fault" in dead.error
    assert k.restarts == 3 and k.state == rk.KernelState.ACTIVE
    assert wait_for(lambda: k.messages_processed == 5)
    assert k.terminate(timeout=5) == rk.KernelState.TERMINATED


def test_a_backlog_with_faults_is_answered_in_order_each_message_handled_once(drt):
    k = launch(drt, max_restarts=1000, max_attempts=2)
    n = 300
    batch = np.zeros(n, REC)
    batch["seq"] = np.arange(10, n + 10)  # (no seq 3)
    batch["value"][::7] = -1.0  # each of these faults on its first delivery
    assert k.send_batch(batch) == n  # all waiting
    k.activate()
    assert receive_all(k, n) == list(range(10, n + 10))
    assert int(k.actor_state()["handled"]) == n
    assert k.restarts == len(range(0, n, 7)) and k.dead_letters() == []
    assert wait_for(lambda: k.messages_processed == n)


def test_past_max_restarts_the_kernel_faults_and_drain_returns_its_input_in_order(drt):
    k = launch(drt, max_restarts=2, within=30, max_attempts=10)
    for i in (0, 1, 3, 4, 5, 6):
        k.send(rec(i), id=100 + i)
    k.activate()
    assert receive_all(k, 2) == [0, 1]
    assert wait_for(lambda: k.state == rk.KernelState.FAULTED)
    assert "past RestartPolicy.max_restarts=2" in k.fault and "rk_fault" in k.fault
    assert k.restarts == 2
    with pytest.warns(RuntimeWarning):
        assert k.terminate(timeout=5) == rk.KernelState.FAULTED
    assert [int(m["seq"]) for m in k.drain()] == [3, 4, 5, 6]  # the message in flight first, then the input
    assert k.dead_letters() == [] and k.drain() == []


def test_backoff_holds_the_restarted_kernel_back(drt):
    k = launch(drt, max_attempts=1, backoff=0.3)
    k.activate()
    t0 = time.monotonic()
    k.send(rec(3))
    k.send(rec(1))
    assert receive_all(k, 1) == [1]
    assert time.monotonic() - t0 >= 0.28
    assert k.dead_letters()[0].attempts == 1


def test_a_checkpoint_during_a_restart_backoff_answers_at_once_and_holds_the_message_once(drt):
    k = launch(drt, max_attempts=2, backoff=1.0)
    k.activate()
    k.send(rec(5, -1.0))  # faults once, then is answered after the backoff
    k.send(rec(6))
    assert wait_for(lambda: k.restarts == 1)
    t0 = time.monotonic()
    blob = k.checkpoint(timeout=5)
    assert time.monotonic() - t0 < 0.5  # the block waiting out its backoff counts itself paused
    copy = drt.launch("copy", "echo", input=REC, state=TALLY)
    copy.restore(blob)
    assert copy.terminate(timeout=5) == rk.KernelState.TERMINATED
    assert [int(m["seq"]) for m in copy.drain()] == [5, 6]  # the redelivery first, each once
    assert receive_all(k, 2) == [5, 6]  # and the original goes on after its backoff


def test_a_pipeline_with_a_restarting_stage_loses_and_repeats_nothing(drt):
    n = 2000
    a = drt.launch("a", "echo", input=REC, options=rk.LaunchOptions(queue_capacity=64))
    b = launch(drt, "b", max_restarts=10_000, max_attempts=2)
    drt.connect(a, b)
    a.activate()
    b.activate()
    arr = np.zeros(n, REC)
    arr["seq"] = np.arange(10, n + 10)
    arr["value"][5::11] = -1.0
    sent = 0
    got = []
    deadline = time.monotonic() + 60
    while (sent < n or len(got) < n) and time.monotonic() < deadline:
        if sent < n:  # held by backpressure while b restarts
            sent += a.send_batch(arr[sent:sent + 128], timeout=0.05)
        got.extend(int(s) for s in b.receive_batch(256, timeout=0.01)["seq"])
    assert got == list(range(10, n + 10))
    assert b.restarts == len(range(5, n, 11)) and a.messages_dropped == b.messages_dropped == 0
    assert int(b.actor_state()["handled"]) == n


def test_a_hundred_restarts_leave_no_threads_or_descriptors_behind(drt):
    k = launch(drt, max_restarts=1000, max_attempts=1)
    k.activate()
    k.send(rec(0))
    assert receive_all(k, 1) == [0]
    threads, fds = len(os.listdir("/proc/self/task")), len(os.listdir("/proc/self/fd"))
    for _ in range(100):
        k.send(rec(3))
    assert wait_for(lambda: k.dead_letter_counts["total"] == 100, timeout=30)
    assert k.restarts == 100
    assert len(os.listdir("/proc/self/task")) <= threads and len(os.listdir("/proc/self/fd")) <= fds
    k.send(rec(1))
    assert receive_all(k, 1) == [1]


def test_what_a_device_backend_cannot_supervise_is_refused_with_the_reason():
    info = availability()["opencl"]
    if not info.available:
        pytest.skip(f"opencl unavailable here: {info.detail}")
    with rk.Runtime("opencl") as rt:
        with pytest.raises(ValueError, match="handler_timeout .*cpu backend.*cannot take a hung block over"):
            rt.launch("w", "echo", input=REC, options=rk.LaunchOptions(handler_timeout=1.0))
        with pytest.raises(ValueError, match="restart= .*needs persistent mode"):
            rt.launch("d", "echo", input=REC, mode="dispatch", restart=rk.RestartPolicy())
