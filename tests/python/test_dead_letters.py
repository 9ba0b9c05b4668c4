"""Dead letters (DESIGN §11): a request its handler fails is kept -- message, error text, attempts --
never silently gone, on every backend and handler kind; the store is bounded and its overflow counted."""

from __future__ import annotations

import time

import numpy as np
import pytest

import ringkernel as rk
from kernel_helpers import REC, rec

# Fails every request whose value is negative (RK_ERR_INPUT), echoes the others.
POISON_SOURCE = r"""
typedef struct { rk_u64 seq; rk_f64 value; } rec;
int picky(rk_ctx *ctx, RK_GLOBAL const void *in, RK_LOCAL void *out) {
    RK_GLOBAL const rec *r = (RK_GLOBAL const rec *)in;
    if (r->value < 0) return RK_ERR_INPUT;
    RK_LOCAL rec *o = (RK_LOCAL rec *)out;
    o->seq = r->seq;
    o->value = r->value;
    return RK_REPLY;
}
"""


def picky_py(msg):
    if msg["value"] < 0:
        raise ValueError(f"poison {int(msg['seq'])}")
    return msg


def wait_processed(k, n, timeout=10.0):
    deadline = time.monotonic() + timeout
    while k.messages_processed < n and time.monotonic() < deadline:
        time.sleep(0.005)
    assert k.messages_processed >= n


def test_poison_messages_become_dead_letters_and_the_kernel_goes_on(rt):
    handler = picky_py if rt.backend == "cpu" else rk.Source(POISON_SOURCE, entry="picky")
    k = rt.launch("picky", handler, input=REC)
    k.activate()
    poison = {3, 7, 8, 15}
    for i in range(20):
        assert k.send(rec(i, -1.0 if i in poison else float(i)), id=5000 + i)
    got = []
    deadline = time.monotonic() + 10
    while len(got) < 16 and time.monotonic() < deadline:
        r = k.receive(timeout=0.5)
        if r is not None:
            got.append(int(r["seq"]))
    assert got == [i for i in range(20) if i not in poison]
    wait_processed(k, 20)
    dead = k.dead_letters()
    assert [int(d.message["seq"]) for d in dead] == sorted(poison)  # oldest first
    assert [d.id for d in dead] == [5000 + i for i in sorted(poison)]
    for d in dead:
        assert isinstance(d, rk.DeadLetter) and d.attempts == 1
        assert float(d.message["value"]) == -1.0
        if rt.backend == "cpu":
            assert d.code == rk._core.ERR_HOST and f"ValueError: poison {int(d.message['seq'])}" in d.error
        else:
            assert d.code == rk._core.ERR_INPUT and "malformed" in d.error
        assert d.timestamp > 0
    assert k.dead_letter_counts == {"total": 4, "held": 4, "dropped": 0}
    assert k.errors == 4
    # sent == replies + dead letters: nothing unaccounted for
    assert k.input.stats.sent == len(got) + len(dead)


def test_dead_letters_of_message_classes_are_message_objects(cpu_rt):
    @rk.message
    class Job:
        seq: rk.u64
        weight: rk.i32

    def fail_heavy(job):
        if job.weight > 10:
            raise RuntimeError("too heavy")
        return job

    k = cpu_rt.launch("jobs", fail_heavy, input=Job)
    k.activate()
    k.send(Job(seq=1, weight=3))
    k.send(Job(seq=2, weight=30))
    assert k.receive(timeout=5).seq == 1
    wait_processed(k, 2)
    (d,) = k.dead_letters()
    assert d.message == Job(seq=2, weight=30) and "too heavy" in d.error


def test_the_store_is_bounded_and_its_overflow_counted(rt):
    handler = picky_py if rt.backend == "cpu" else rk.Source(POISON_SOURCE, entry="picky")
    k = rt.launch("bounded", handler, input=REC, options=rk.LaunchOptions(dead_letter_capacity=16))
    k.activate()
    for i in range(40):
        assert k.send(rec(i, -1.0), timeout=5)
    wait_processed(k, 40)
    counts = k.dead_letter_counts
    assert counts == {"total": 40, "held": 16, "dropped": 24}
    dead = k.dead_letters(clear=True)
    assert [int(d.message["seq"]) for d in dead] == list(range(16))  # the first ones are kept
    assert k.dead_letter_counts == {"total": 40, "held": 0, "dropped": 24}
    assert k.dead_letters() == []
    for i in range(40, 45):
        k.send(rec(i, -1.0))
    wait_processed(k, 45)
    assert [int(d.message["seq"]) for d in k.dead_letters()] == list(range(40, 45))
    assert k.dead_letter_counts == {"total": 45, "held": 5, "dropped": 24}


def test_a_failed_batch_dead_letters_every_request_of_it(cpu_rt):
    def fail_odd_batches(records):
        if int(records["seq"][0]) % 2:
            raise ValueError("odd batch")
        return records

    k = cpu_rt.launch("batches", rk.batch(fail_odd_batches, max_size=4), input=REC)
    arr = np.zeros(1, REC)
    for i in range(6):  # one at a time: each is a batch of one
        arr["seq"] = i
        k.send(arr[0])
        if i == 0:
            k.activate()
        wait_processed(k, i + 1)
    dead = k.dead_letters()
    assert [int(d.message["seq"]) for d in dead] == [1, 3, 5]
    assert all("odd batch" in d.error for d in dead)


def test_dead_letter_capacity_is_validated():
    with pytest.raises(ValueError, match=r"dead_letter_capacity must be in \[16, 65536\]"):
        rk.LaunchOptions(dead_letter_capacity=4)
    o = rk.LaunchOptions()
    assert o.dead_letter_capacity == 1024
    with pytest.raises(ValueError, match="dead_letter_capacity"):
        o.dead_letter_capacity = 1 << 20
    o.dead_letter_capacity = 100
    assert o.dead_letter_capacity == 100 and "dead_letter_capacity=100" in repr(o)


def test_drain_returns_what_a_stopped_kernel_never_processed(rt):
    handler = picky_py if rt.backend == "cpu" else rk.Source(POISON_SOURCE, entry="picky")
    k = rt.launch("stopper", handler, input=REC)
    k.activate()
    for i in range(10):
        k.send(rec(i, -1.0 if i == 4 else 1.0))
    replies = [k.receive(timeout=5) for _ in range(9)]
    assert all(r is not None for r in replies)
    wait_processed(k, 10)
    with pytest.raises(rk.LifecycleError, match="stopped kernel"):
        k.drain()
    k.deactivate()
    for i in range(10, 25):
        assert k.send(rec(i, 1.0))
    assert k.terminate() == rk.KernelState.TERMINATED
    left = k.drain()
    assert [int(m["seq"]) for m in left] == list(range(10, 25))
    assert k.drain() == []  # taken out
    # Every message sent is accounted for exactly once: replied, dead-lettered or drained.
    assert k.input.stats.sent == len(replies) + len(k.dead_letters()) + len(left) == 25


FAULTING_SOURCE = r"""
typedef struct { rk_u64 seq; rk_f64 value; } rec;
int faulty(rk_ctx *ctx, RK_GLOBAL const void *in, RK_LOCAL void *out) {
    RK_GLOBAL const rec *r = (RK_GLOBAL const rec *)in;
    if (r->value < 0) return rk_fault(ctx);
    RK_LOCAL rec *o = (RK_LOCAL rec *)out;
    o->seq = r->seq;
    o->value = r->value;
    return RK_REPLY;
}
"""


def test_a_kernel_fault_without_a_restart_policy_dead_letters_the_message_and_goes_on(rt):
    def faulty(msg):
        if msg["value"] < 0:
            raise rk.KernelFault(f"cannot go on after {int(msg['seq'])}")
        return msg

    handler = faulty if rt.backend == "cpu" else rk.Source(FAULTING_SOURCE, entry="faulty")
    k = rt.launch("faulty", handler, input=REC)
    k.activate()
    for i in range(6):
        k.send(rec(i, -1.0 if i == 2 else 1.0))
    got = [k.receive(timeout=5) for _ in range(5)]
    assert [int(r["seq"]) for r in got] == [0, 1, 3, 4, 5]
    wait_processed(k, 6)
    (d,) = k.dead_letters()
    assert int(d.message["seq"]) == 2 and d.code == rk._core.ERR_FAULT
    assert ("KernelFault: cannot go on after 2" in d.error) if rt.backend == "cpu" else ("rk_fault" in d.error)
    assert k.state == rk.KernelState.ACTIVE
    assert issubclass(rk.KernelFault, rk.RingKernelError)
