"""Supervision (DESIGN §11): the watchdog (LaunchOptions.handler_timeout), RestartPolicy restarts after a
timeout, a trap, rk_fault() or rk.KernelFault, redelivery of the message in flight until max_attempts, then a
dead letter; past max_restarts the kernel is FAULTED and drain() returns its input. Every case counts what was
sent against replies, dead letters and drained messages: exact. Fault injection is bounded: a hung handler
waits on an Event the test sets, a spinning one for at most a second."""

from __future__ import annotations

import os
import threading
import time

import numpy as np
import pytest

import ringkernel as rk
from kernel_helpers import REC, rec, wait_for

CPU_ONLY = "supervision (handler_timeout, restart=) runs on the cpu backend"

# rk.Source: seq 2 spins for `value` seconds (bounded: the abandoned worker comes back by itself); seq 3
# reports a fault of the kernel (rk_fault); seq 4 dereferences null. The others are echoed.
FAULTY = r"""
typedef struct { rk_u64 seq; rk_f64 value; } rec;
int faulty(rk_ctx *ctx, RK_GLOBAL const void *in, RK_LOCAL void *out) {
    RK_GLOBAL const rec *r = (RK_GLOBAL const rec *)in;
    if (r->seq == 2) {
        rk_u64 t0 = rk_now_ns(ctx);
        while ((rk_f64)(rk_now_ns(ctx) - t0) < r->value * 1e9) { }
    }
    if (r->seq == 3) return rk_fault(ctx);
    if (r->seq == 4) *(volatile int *)0 = 1;
    RK_LOCAL rec *o = (RK_LOCAL rec *)out;
    o->seq = r->seq;
    o->value = r->value;
    return RK_REPLY;
}
"""


def receive_all(k, n, timeout=10.0):
    got = []
    deadline = time.monotonic() + timeout
    while len(got) < n and time.monotonic() < deadline:
        r = k.receive(timeout=0.2)
        if r is not None:
            got.append(int(r["seq"]))
    return got


def threads_now() -> int:
    return len(os.listdir("/proc/self/task"))


def fds_now() -> int:
    return len(os.listdir("/proc/self/fd"))


def rss_kib() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError("no VmRSS")


# ---- arguments -------------------------------------------------------------------------------------------

def test_policy_and_timeout_arguments_are_validated_with_their_ranges():
    p = rk.RestartPolicy(max_restarts=5, within=10.0, max_attempts=4, backoff=0.01)
    assert (p.max_restarts, p.within, p.max_attempts, p.backoff) == (5, 10.0, 4, 0.01)
    assert p == rk.RestartPolicy(max_restarts=5, within=10.0, max_attempts=4, backoff=0.01)
    assert "max_attempts=4" in repr(p)
    for kwargs, words in [({"max_restarts": -1}, "max_restarts"), ({"within": 0.0}, "within"),
                          ({"max_attempts": 0}, "max_attempts"), ({"max_attempts": 70000}, "[1, 65535]"),
                          ({"backoff": -1.0}, "backoff"), ({"backoff": 61.0}, "[0, 60]")]:
        with pytest.raises((ValueError, OverflowError), match=words.replace("[", r"\[")):
            rk.RestartPolicy(**kwargs)
    assert rk.LaunchOptions().handler_timeout is None
    assert rk.LaunchOptions(handler_timeout=0.25).handler_timeout == 0.25
    for bad in (0.0, 0.0001, -1.0, 1e9):
        with pytest.raises(ValueError, match=r"handler_timeout must be None or in \[0.001, 86400\]"):
            rk.LaunchOptions(handler_timeout=bad)
    with pytest.raises(TypeError, match="handler_timeout"):
        rk.LaunchOptions(handler_timeout="1s")
    with rk.Runtime("cpu") as rt:
        with pytest.raises(TypeError, match="rk.RestartPolicy"):
            rt.launch("k", "echo", input=REC, restart=3)
        k = rt.launch("k", "echo", input=REC, restart=p)
        assert k.restart_policy == p and k.restarts == 0 and k.abandoned_workers == 0


# ---- one poison message ---------------------------------------------------------------------------------

def test_a_kernel_fault_is_redelivered_until_max_attempts_then_dead_lettered(cpu_rt):
    attempts = {}

    def handler(msg):
        seq = int(msg["seq"])
        attempts[seq] = attempts.get(seq, 0) + 1
        if msg["value"] < 0 and attempts[seq] <= -msg["value"]:  # fails its first |value| deliveries
            raise rk.KernelFault(f"poison {seq}")
        return msg

    k = cpu_rt.launch("k", handler, input=REC, restart=rk.RestartPolicy(max_restarts=100, max_attempts=3))
    k.enable_telemetry()
    k.activate()
    fails = {3: 1, 5: 2, 7: 3, 9: 5}  # 3 and 5 succeed on a later delivery; 7 and 9 never do
    for i in range(12):
        assert k.send(rec(i, -float(fails.get(i, 0))), id=9000 + i)
    got = receive_all(k, 10)
    assert sorted(got) == [i for i in range(12) if i not in (7, 9)]
    assert len(set(got)) == len(got)  # nothing twice
    assert wait_for(lambda: k.messages_processed == 12)
    assert attempts == {i: (min(fails[i], 3) + (fails[i] < 3)) if i in fails else 1 for i in range(12)}
    dead = k.dead_letters()
    assert [int(d.message["seq"]) for d in dead] == [7, 9]
    assert [d.id for d in dead] == [9007, 9009]
    assert all(d.attempts == 3 and "poison" in d.error and d.code == rk._core.ERR_FAULT for d in dead)
    assert k.restarts == 1 + 2 + 3 + 3
    t = k.telemetry()
    assert (t.restarts, t.abandoned_workers, t.dead_letters) == (9, 0, 2)
    assert t.as_dict()["restarts"] == 9
    assert k.state == rk.KernelState.ACTIVE


def test_without_a_policy_a_kernel_fault_fails_only_its_message(cpu_rt):
    def handler(msg):
        if msg["seq"] == 2:
            raise rk.KernelFault("bad")
        return msg

    k = cpu_rt.launch("k", handler, input=REC)
    k.activate()
    for i in range(5):
        k.send(rec(i))
    assert receive_all(k, 4) == [0, 1, 3, 4]
    assert wait_for(lambda: k.dead_letter_counts["total"] == 1)
    assert k.restarts == 0 and k.dead_letters()[0].attempts == 1


def test_a_batch_handler_fault_redelivers_its_whole_batch(cpu_rt):
    seen = []

    @rk.batch
    def handler(records):
        seen.append(records["seq"].tolist())
        if 6 in records["seq"] and len(seen) < 3:
            raise rk.KernelFault("batch with 6")
        return records

    k = cpu_rt.launch("k", handler, input=REC, restart=rk.RestartPolicy(max_restarts=10, max_attempts=5))
    k.send_batch(np.array([rec(i) for i in range(10)], dtype=REC))
    k.activate()
    got = receive_all(k, 10)
    assert sorted(got) == list(range(10)) and len(got) == 10
    assert k.restarts >= 1 and not k.dead_letters()


# ---- the watchdog ---------------------------------------------------------------------------------------

def test_the_watchdog_abandons_a_hung_python_handler_and_the_kernel_goes_on(cpu_rt):
    release = threading.Event()
    late = []

    def handler(msg):
        if msg["seq"] == 1:
            release.wait(20)
            late.append(1)
            return rec(999)  # the late result: discarded
        return msg

    k = cpu_rt.launch("k", handler, input=REC, options=rk.LaunchOptions(handler_timeout=0.2))
    k.enable_telemetry()
    k.activate()
    t0 = time.monotonic()
    for i in range(6):
        k.send(rec(i))
    assert receive_all(k, 5) == [0, 2, 3, 4, 5]
    assert time.monotonic() - t0 < 5
    assert k.abandoned_workers == 1 and k.restarts == 0  # no policy: a fresh worker, not a restart
    (dead,) = k.dead_letters()
    assert int(dead.message["seq"]) == 1 and dead.code == rk._core.ERR_TIMEOUT
    assert "handler_timeout=0.2" in dead.error and "abandoned" in dead.error
    assert k.telemetry().abandoned_workers == 1
    release.set()
    assert wait_for(lambda: late == [1])
    time.sleep(0.1)
    assert k.receive(timeout=0.2) is None  # the abandoned worker's reply never arrives
    k.send(rec(7))
    assert receive_all(k, 1) == [7]
    assert k.terminate(timeout=2) == rk.KernelState.TERMINATED


@pytest.mark.parametrize("policy", [None, rk.RestartPolicy(max_attempts=3)])
def test_terminate_does_not_wait_out_a_hung_handler_the_watchdog_abandons(cpu_rt, policy):
    """The watchdog goes on watching while terminate() waits for the blocks: the hung handler is abandoned
    after handler_timeout, and its message (with the rest) waits for drain() -- not failed, not redelivered."""
    entered = threading.Event()

    def handler(msg):
        if msg["seq"] == 0:
            entered.set()
            time.sleep(1.0)  # bounded: the abandoned worker comes back by itself
            return None  # the late result: discarded
        return msg

    k = cpu_rt.launch("k", handler, input=REC, options=rk.LaunchOptions(handler_timeout=0.2), restart=policy)
    k.activate()
    for i in range(3):
        k.send(rec(i))
    assert entered.wait(5)
    t0 = time.monotonic()
    assert k.terminate(timeout=5) == rk.KernelState.TERMINATED
    assert time.monotonic() - t0 < 0.8  # the handler_timeout, not the handler's second
    assert [int(m["seq"]) for m in k.drain()] == [0, 1, 2]
    assert k.abandoned_workers == 1 and k.restarts == 0 and k.dead_letters() == []
    assert k.receive(timeout=0.1) is None
    assert "terminating: drain() returns the message" in k.last_error_message


def test_the_watchdog_on_an_rk_source_loop_redelivers_under_a_policy(cpu_rt):
    # seq 2 spins 0.4 s per delivery against a 0.1 s timeout: both deliveries time out, then it is dead.
    k = cpu_rt.launch("k", rk.Source(FAULTY, entry="faulty"), input=REC,
                      options=rk.LaunchOptions(handler_timeout=0.1),
                      restart=rk.RestartPolicy(max_restarts=10, max_attempts=2))
    k.activate()
    for i in (0, 1, 2, 5, 6):
        k.send(rec(i, 0.4))
    assert receive_all(k, 4) == [0, 1, 5, 6]
    assert wait_for(lambda: k.dead_letter_counts["total"] == 1)
    (dead,) = k.dead_letters()
    assert int(dead.message["seq"]) == 2 and dead.attempts == 2 and dead.code == rk._core.ERR_TIMEOUT
    assert "handler 'faulty' (rk.Source) ran past handler_timeout" in dead.error
    assert k.restarts == 2 and k.abandoned_workers == 2
    time.sleep(0.5)  # the two abandoned workers return from their loops and leave
    assert k.terminate(timeout=2) == rk.KernelState.TERMINATED


def test_rk_fault_and_a_trap_restart_an_rk_source_kernel(cpu_rt):
    k = cpu_rt.launch("k", rk.Source(FAULTY, entry="faulty"), input=REC,
                      restart=rk.RestartPolicy(max_restarts=10, max_attempts=2))
    k.activate()
    for i in (0, 1, 3, 4, 5, 6):
        k.send(rec(i))
    assert receive_all(k, 4) == [0, 1, 5, 6]
    assert wait_for(lambda: k.dead_letter_counts["total"] == 2)
    dead = {int(d.message["seq"]): d for d in k.dead_letters()}
    assert dead[3].attempts == 2 and "rk_fault" in dead[3].error
    assert dead[4].attempts == 2 and "SIGSEGV" in dead[4].error
    assert k.restarts == 4 and k.state == rk.KernelState.ACTIVE


def test_a_trap_without_a_policy_fails_its_message_and_keeps_the_rest_of_its_run(cpu_rt):
    k = cpu_rt.launch("k", rk.Source(FAULTY, entry="faulty"), input=REC)
    for i in (0, 1, 4, 5, 6, 7, 8):  # queued first: one run holds the trapping message and those after it
        k.send(rec(i))
    k.activate()
    assert receive_all(k, 6) == [0, 1, 5, 6, 7, 8]
    (dead,) = k.dead_letters()
    assert int(dead.message["seq"]) == 4 and "SIGSEGV" in dead.error and dead.attempts == 1
    assert k.state == rk.KernelState.ACTIVE and k.messages_processed == 7


# rk.Source: a message with value < 0 faults (rk_fault) on its first delivery; the state remembers which one
# faulted last and counts every message handled (a message handled twice would count twice).
FAULT_ONCE = r"""
typedef struct { rk_u64 seq; rk_f64 value; } rec;
typedef struct { rk_u64 faulted; rk_u64 handled; } tally;
int fault_once(rk_ctx *ctx, RK_GLOBAL const void *in, RK_LOCAL void *out) {
    RK_GLOBAL const rec *r = (RK_GLOBAL const rec *)in;
    RK_GLOBAL tally *t = (RK_GLOBAL tally *)rk_state(ctx);
    if (r->value < 0 && t->faulted != r->seq + 1) {
        t->faulted = r->seq + 1;
        return rk_fault(ctx);
    }
    t->handled += 1;
    *(RK_LOCAL rec *)out = *r;
    return RK_REPLY;
}
"""
TALLY = np.dtype([("faulted", "<u8"), ("handled", "<u8")])


def test_a_fault_in_the_middle_of_a_run_stops_it_there_and_nothing_is_handled_twice(cpu_rt):
    """A RestartPolicy without a watchdog keeps full runs (up to 32 messages): a fault stops the run at the
    faulted message; the ones before it are finished, the ones after it are redelivered, not handled twice."""
    k = cpu_rt.launch("k", rk.Source(FAULT_ONCE, entry="fault_once"), input=REC, state=TALLY,
                      options=rk.LaunchOptions(queue_capacity=1024),
                      restart=rk.RestartPolicy(max_restarts=1000, max_attempts=2))
    n = 500
    batch = np.zeros(n, REC)
    batch["seq"] = np.arange(n)
    batch["value"][::7] = -1.0
    assert k.send_batch(batch) == n  # all waiting: the block takes them in long runs
    k.activate()
    got = []
    deadline = time.monotonic() + 20
    while len(got) < n and time.monotonic() < deadline:
        got.extend(int(s) for s in k.receive_batch(256, timeout=0.2)["seq"])
    assert got == list(range(n))  # in order, each once
    state = k.actor_state()
    assert int(state["handled"]) == n
    assert k.restarts == len(range(0, n, 7)) and not k.dead_letters()
    assert wait_for(lambda: k.messages_processed == n)


# ---- past max_restarts ----------------------------------------------------------------------------------

def test_past_max_restarts_the_kernel_faults_and_drain_returns_its_input_in_order(cpu_rt):
    def handler(msg):
        if msg["seq"] >= 3:
            raise rk.KernelFault(f"down at {int(msg['seq'])}")
        return msg

    k = cpu_rt.launch("k", handler, input=REC, restart=rk.RestartPolicy(max_restarts=2, within=30, max_attempts=10))
    for i in range(10):
        k.send(rec(i), id=100 + i)
    k.activate()
    assert receive_all(k, 3) == [0, 1, 2]
    assert wait_for(lambda: k.state == rk.KernelState.FAULTED)
    assert "past RestartPolicy.max_restarts=2" in k.fault and "down at 3" in k.fault
    assert k.restarts == 2
    with pytest.warns(RuntimeWarning):
        assert k.terminate(timeout=2) == rk.KernelState.FAULTED
    left = k.drain()
    assert [int(m["seq"]) for m in left] == list(range(3, 10))  # the message in flight first, then the ring
    assert k.dead_letters() == []  # not failed: never finished
    assert k.drain() == []


def test_restarts_outside_the_window_do_not_count(cpu_rt):
    def handler(msg):
        if msg["value"] < 0:
            raise rk.KernelFault("once")
        return msg

    k = cpu_rt.launch("k", handler, input=REC, restart=rk.RestartPolicy(max_restarts=1, within=0.2, max_attempts=1))
    k.activate()
    for i in range(4):
        k.send(rec(i, -1.0))
        assert wait_for(lambda: k.dead_letter_counts["total"] == i + 1)
        time.sleep(0.3)  # the last restart leaves the window
    assert k.state == rk.KernelState.ACTIVE and k.restarts == 4
    k.send(rec(9, -1.0))
    k.send(rec(10, -1.0))
    assert wait_for(lambda: k.state == rk.KernelState.FAULTED)
    with pytest.warns(RuntimeWarning):
        k.terminate(timeout=2)
    assert [int(m["seq"]) for m in k.drain()] == [10]


def test_backoff_holds_the_restarted_kernel_back(cpu_rt):
    def handler(msg):
        if msg["seq"] == 0:
            raise rk.KernelFault("first")
        return msg

    k = cpu_rt.launch("k", handler, input=REC, restart=rk.RestartPolicy(max_attempts=1, backoff=0.3))
    k.activate()
    t0 = time.monotonic()
    k.send(rec(0))
    k.send(rec(1))
    assert receive_all(k, 1) == [1]
    assert time.monotonic() - t0 >= 0.28


# ---- checkpoints of held messages ------------------------------------------------------------------------

def test_a_checkpoint_carries_the_message_held_for_redelivery(cpu_rt):
    Acc = np.dtype([("total", "<f8")])
    gate = threading.Event()

    def handler(msg, state):
        if msg["seq"] == 1 and not gate.is_set():
            gate.set()
            raise rk.KernelFault("once")
        state["total"] += msg["value"]
        return msg

    # backoff: the restarted worker waits, so the redelivery is still held when the checkpoint is taken.
    k = cpu_rt.launch("k", handler, input=REC, state=Acc,
                      restart=rk.RestartPolicy(max_attempts=3, backoff=1.0))
    k.activate()
    k.send(rec(0, 1.0))
    k.send(rec(1, 10.0))
    assert receive_all(k, 1) == [0]
    assert wait_for(gate.is_set)
    time.sleep(0.05)
    t0 = time.monotonic()
    blob = k.checkpoint()
    assert time.monotonic() - t0 < 0.5  # the block waiting out its backoff counts itself paused
    k2 = cpu_rt.launch("k2", lambda m, s: (s.__setitem__("total", s["total"] + m["value"]), m)[1],
                       input=REC, state=Acc)
    k2.restore(blob)
    k2.activate()
    assert receive_all(k2, 1) == [1]
    assert k2.actor_state()["total"] == 11.0
    assert receive_all(k, 1) == [1]  # and the original redelivers it after its backoff


def test_a_pause_of_a_kernel_that_faults_meanwhile_says_so_at_once(cpu_rt):
    """checkpoint() and actor_state() wait for the blocks to pause; one that faults past max_restarts while they
    wait never will: checkpoint raises LifecycleError naming the fault, actor_state returns the state as it was
    left -- both at once, not after their timeout."""
    Acc = np.dtype([("n", "<u8")])
    for call in ("checkpoint", "actor_state"):
        entered, release = threading.Event(), threading.Event()

        def handler(msg, state):
            entered.set()
            release.wait(10)
            state["n"] += 1
            raise rk.KernelFault("down")

        k = cpu_rt.launch(f"k_{call}", handler, input=REC, state=Acc, restart=rk.RestartPolicy(max_restarts=0))
        k.activate()
        k.send(rec(0))
        assert entered.wait(5)
        threading.Timer(0.2, release.set).start()
        t0 = time.monotonic()
        if call == "checkpoint":
            with pytest.raises(rk.LifecycleError, match=r"became FAULTED while it was being paused \(.*"
                                                        r"past RestartPolicy.max_restarts=0"):
                k.checkpoint(timeout=10)
        else:
            assert int(k.actor_state(timeout=10)["n"]) == 1
        assert time.monotonic() - t0 < 3
        assert k.state == rk.KernelState.FAULTED
        with pytest.warns(RuntimeWarning):
            k.terminate(timeout=2)
        assert [int(m["seq"]) for m in k.drain()] == [0]


# ---- pipelines ------------------------------------------------------------------------------------------

def test_a_restart_in_the_middle_of_a_pipeline_under_load_loses_and_repeats_nothing(cpu_rt):
    n = 3000
    release = threading.Event()
    attempts = {}

    def middle(msg):
        seq = int(msg["seq"])
        attempts[seq] = attempts.get(seq, 0) + 1
        if seq % 97 == 5 and attempts[seq] == 1:
            raise rk.KernelFault(f"fault at {seq}")
        if seq % 500 == 7 and attempts[seq] == 1:
            release.wait(0.5)  # past the watchdog: abandoned, redelivered
        if seq % 1000 == 11:
            raise rk.KernelFault("always")  # past max_attempts: a dead letter
        return msg

    small = rk.LaunchOptions(queue_capacity=64)
    a = cpu_rt.launch("a", "echo", input=REC, options=small)
    b = cpu_rt.launch("b", middle, input=REC, options=rk.LaunchOptions(queue_capacity=64, handler_timeout=0.1),
                      restart=rk.RestartPolicy(max_restarts=1000, max_attempts=2))
    c = cpu_rt.launch("c", "echo", input=REC, options=small)
    cpu_rt.connect(a, b)
    cpu_rt.connect(b, c)
    for k in (a, b, c):
        k.activate()
    got = []

    def sender():
        for i in range(n):
            assert a.send(rec(i, float(i)), timeout=30)  # held by backpressure while b restarts

    t = threading.Thread(target=sender)
    t.start()
    deadline = time.monotonic() + 60
    expected_dead = {i for i in range(n) if i % 1000 == 11}
    while len(got) < n - len(expected_dead) and time.monotonic() < deadline:
        batch = c.receive_batch(256, timeout=0.2)
        got.extend(int(s) for s in batch["seq"])
    t.join()
    release.set()
    time.sleep(0.2)
    extra = c.receive_batch(256, timeout=0.2)
    got.extend(int(s) for s in extra["seq"])
    assert len(got) == len(set(got)), "a message reached the end twice"
    assert set(got) == set(range(n)) - expected_dead
    assert {int(d.message["seq"]) for d in b.dead_letters()} == expected_dead
    assert a.messages_dropped == b.messages_dropped == c.messages_dropped == 0
    assert b.abandoned_workers == len([i for i in range(n) if i % 500 == 7])
    assert b.restarts == (len([i for i in range(n) if i % 97 == 5]) + b.abandoned_workers + 2 * len(expected_dead))


# ---- no growth ------------------------------------------------------------------------------------------

def test_a_hundred_restarts_leave_no_threads_memory_or_descriptors_behind(cpu_rt):
    def handler(msg):
        if msg["value"] < 0:
            raise rk.KernelFault("again")
        if msg["value"] > 0:
            time.sleep(msg["value"])  # past the watchdog, then back: the abandoned worker leaves
        return msg

    k = cpu_rt.launch("k", handler, input=REC, options=rk.LaunchOptions(handler_timeout=0.02),
                      restart=rk.RestartPolicy(max_restarts=1000, max_attempts=1))
    k.activate()
    k.send(rec(0))
    assert receive_all(k, 1) == [0]
    threads, fds, rss = threads_now(), fds_now(), rss_kib()
    for i in range(100):
        k.send(rec(i, -1.0 if i % 5 else 0.06))
    assert wait_for(lambda: k.dead_letter_counts["total"] == 100, timeout=30)
    assert k.restarts == 100 and k.abandoned_workers == 20
    assert wait_for(lambda: threads_now() <= threads, timeout=5), (threads_now(), threads)
    assert fds_now() <= fds
    assert rss_kib() - rss < 8 * 1024
    k.send(rec(1))
    assert receive_all(k, 1) == [1]
