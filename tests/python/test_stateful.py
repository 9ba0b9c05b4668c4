"""Model-based (Hypothesis stateful) tests of the public Python API (DESIGN §4, §6, §7).

Two state machines, each checked against a small reference model after every step:

- ``QueueMachine``: an ``rk.Queue`` with capacity, backpressure, deduplication and priority drawn per
  run (TTL off), optionally registered in a runtime so it can be closed (``Runtime.destroy_queue``).
  The model is FIFO per priority level, higher first; DROP_OLDEST evicts the message that entered
  first whatever its priority; the dedup window holds the last W accepted ids (W clamped to the
  capacity). Every statistic is exact after every step, ``send`` returns True exactly when the
  message entered, ``receive(timeout=0)`` returns None exactly when the model is empty.
- ``KernelMachine``: ring kernels on the CPU backend (the built-in ``echo`` handler, or a Python
  handler that fails on some messages) driven through launch/activate/deactivate/send/receive/
  telemetry/terminate in any order. Calls a state does not allow raise ``rk.LifecycleError`` naming
  the state; messages sent while CREATED, LAUNCHED or DEACTIVATED wait and are answered after
  activate; every request is answered exactly once (in order with grid=1); the kernel's counters,
  its queues' statistics and its telemetry agree with what the model saw handled.

(tests/python/test_queue.py has a smaller queue model -- one capacity, FIFO only -- which this one
extends with priority, capacities, closing, envelopes and waiting receives.)
"""

from __future__ import annotations

import time
import warnings
from collections import deque

import numpy as np
import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

import ringkernel as rk

BP = rk.Backpressure
KS = rk.KernelState
REC = np.dtype([("seq", "<u8"), ("value", "<f8")])
RK_MAX_RUN = 32  # messages a block takes in one run at most (csrc/device/rk_handler.h)
STAT_KEYS = ("sent", "received", "rejected", "dropped", "duplicates", "expired", "timed_out")


def rec(seq: int, value: float | None = None):
    a = np.zeros((), REC)
    a["seq"] = seq
    a["value"] = seq * 0.5 if value is None else value
    return a[()]


def recs(seqs) -> np.ndarray:
    a = np.zeros(len(seqs), REC)
    a["seq"] = seqs
    a["value"] = np.asarray(seqs, dtype=np.float64) * 0.5
    return a


def wait_until(cond, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            return cond()
        time.sleep(0.0005)
    return True


# ================================================================================================
# rk.Queue against a reference model
# ================================================================================================

AUTO = object()  # the model's marker for "an automatic id": unique, never equal to an explicit one


class QueueMachine(RuleBasedStateMachine):
    def __init__(self):
        super().__init__()
        self.q = None
        self.rt = None

    # ---- set-up -----------------------------------------------------------------------------------

    @initialize(capacity=st.sampled_from([16, 32]), bp=st.sampled_from(list(BP)),
                dedup=st.sampled_from([0, 16, 64, 1024]), priority=st.booleans(), closable=st.booleans())
    def create(self, capacity, bp, dedup, priority, closable):
        cfg = dict(capacity=capacity, backpressure=bp, dedup_window=dedup, priority=priority)
        if closable:
            self.rt = rk.Runtime("cpu")
            self.q = self.rt.create_queue("q", REC, **cfg)
            assert self.rt.queue("q").capacity == capacity
        else:
            self.q = rk.Queue(REC, **cfg)
        self.cap, self.bp, self.prio_q, self.closable = capacity, bp, priority, closable
        self.window_size = min(dedup, capacity)
        assert (self.q.capacity, self.q.backpressure, self.q.priority) == (capacity, bp, priority)
        assert self.q.dedup_window == self.window_size and self.q.ttl is None
        self.entries: list[tuple[int, int, int, object]] = []  # (serial, priority, seq, id)
        self.serial = 0
        self.next_seq = 0
        self.window: deque = deque(maxlen=self.window_size or 1)
        self.counts = dict.fromkeys(STAT_KEYS, 0)
        self.closed = False

    def teardown(self):
        if self.rt is not None:
            self.rt.close()

    # ---- the model --------------------------------------------------------------------------------

    def _push(self, prio, seq, msg_id):
        self.entries.append((self.serial, prio, seq, msg_id))
        self.serial += 1
        if self.window_size:
            self.window.append(msg_id)

    def _offer(self, prio, seq, msg_id, state):
        """One message offered to the model; state['timed_out'] makes the rest of a batch time out."""
        if state.get("timed_out"):
            self.counts["timed_out"] += 1
            return False
        if self.window_size and msg_id is not AUTO and msg_id in self.window:
            self.counts["duplicates"] += 1
            return False
        if len(self.entries) < self.cap:
            self.counts["sent"] += 1
            self._push(prio, seq, msg_id)
            return True
        if self.bp == BP.REJECT:
            self.counts["rejected"] += 1
            return False
        if self.bp == BP.BLOCK:
            self.counts["timed_out"] += 1
            state["timed_out"] = True
            return False
        self.counts["sent"] += 1
        self.counts["dropped"] += 1
        if self.bp == BP.DROP_NEW:
            return False
        oldest = min(range(len(self.entries)), key=lambda i: self.entries[i][0])  # DROP_OLDEST
        del self.entries[oldest]
        self._push(prio, seq, msg_id)
        return True

    def _take(self):
        if not self.entries:
            return None
        if self.prio_q:
            i = max(range(len(self.entries)), key=lambda j: (self.entries[j][1], -self.entries[j][0]))
        else:
            i = min(range(len(self.entries)), key=lambda j: self.entries[j][0])
        self.counts["received"] += 1
        return self.entries.pop(i)

    def _check_received(self, got, want, env=None):
        _, prio, seq, msg_id = want
        assert int(got["seq"]) == seq and float(got["value"]) == seq * 0.5
        if env is not None:
            assert env.priority == prio
            if msg_id is not AUTO:
                assert env.message_id == msg_id
            assert env.payload_size == REC.itemsize

    def _would_block_forever(self, n):
        return self.bp == BP.BLOCK and not self.closed and len(self.entries) + n > self.cap

    # ---- rules ------------------------------------------------------------------------------------

    @rule(msg_id=st.one_of(st.none(), st.integers(0, 40)), prio=st.sampled_from([0, 1, 2, 255]),
          timeout=st.sampled_from([0, 0.001, None]))
    def send(self, msg_id, prio, timeout):
        if timeout is None and self._would_block_forever(1):
            timeout = 0.001
        seq = self.next_seq
        self.next_seq += 1
        kw = dict(timeout=timeout, priority=prio)
        if msg_id is not None:
            kw["id"] = msg_id
        if prio and not self.prio_q:
            with pytest.raises(ValueError, match="needs a queue created with priority=True"):
                self.q.send(rec(seq), **kw)
            return
        if self.closed:
            with pytest.raises(rk.LifecycleError, match="destroyed"):
                self.q.send(rec(seq), **kw)
            return
        expected = self._offer(prio, seq, AUTO if msg_id is None else msg_id, {})
        assert self.q.send(rec(seq), **kw) is expected

    @rule(n=st.integers(0, 40), with_ids=st.booleans(), id_base=st.integers(0, 30),
          prio=st.sampled_from([0, 3, 200]), timeout=st.sampled_from([0, 0.001, None]))
    def send_batch(self, n, with_ids, id_base, prio, timeout):
        if timeout is None and self._would_block_forever(n):
            timeout = 0.001
        seqs = list(range(self.next_seq, self.next_seq + n))
        self.next_seq += n
        # Explicit ids from a small range, so batches repeat ids (within the batch and across calls).
        ids = [id_base + (i * 7) % 13 for i in range(n)] if with_ids else None
        kw = dict(timeout=timeout, priority=prio)
        if ids is not None:
            kw["ids"] = np.array(ids, dtype=np.uint64)
        if prio and not self.prio_q:
            with pytest.raises(ValueError, match="needs a queue created with priority=True"):
                self.q.send_batch(recs(seqs), **kw)
            return
        if self.closed:
            with pytest.raises(rk.LifecycleError, match="destroyed"):
                self.q.send_batch(recs(seqs), **kw)
            return
        state: dict = {}
        expected = sum(self._offer(prio, s, ids[i] if ids else AUTO, state) for i, s in enumerate(seqs))
        assert self.q.send_batch(recs(seqs), **kw) == expected

    @rule(with_envelope=st.booleans(), timeout=st.sampled_from([0, 0.001, None]))
    def receive(self, with_envelope, timeout):
        if timeout is None and not self.entries and not self.closed:
            timeout = 0.001  # nobody would ever send: a receive without a timeout would wait forever
        t0 = time.monotonic()
        out = self.q.receive(timeout=timeout, with_envelope=with_envelope)
        want = self._take()
        if want is None:
            assert out is None
            if timeout is None:  # closed and empty: returns at once
                assert time.monotonic() - t0 < 1.0
            return
        assert out is not None, f"receive returned None with {len(self.entries) + 1} message(s) queued"
        if with_envelope:
            got, env = out
            assert isinstance(env, rk.Envelope)
            self._check_received(got, want, env)
        else:
            self._check_received(out, want)

    @rule(n=st.integers(0, 40), with_envelopes=st.booleans(), timeout=st.sampled_from([0, 0.001, None]))
    def receive_batch(self, n, with_envelopes, timeout):
        if timeout is None and not self.entries and not self.closed and n > 0:
            timeout = 0.001
        out = self.q.receive_batch(n, timeout=timeout, with_envelopes=with_envelopes)
        got, envs = out if with_envelopes else (out, None)
        assert got.dtype == REC
        want = [self._take() for _ in range(min(n, len(self.entries)))]
        assert len(got) == len(want)
        for i, w in enumerate(want):
            self._check_received(got[i], w)
            if envs is not None:
                assert int(envs["priority"][i]) == w[1]
                if w[3] is not AUTO:
                    assert int(envs["message_id"][i]) == w[3]

    @precondition(lambda self: self.closable)
    @rule(now=st.integers(0, 3))
    def close(self, now):
        if now:  # close in one draw of four: a closed queue has less left to explore
            return
        if self.closed:
            with pytest.raises(KeyError):
                self.rt.destroy_queue("q")
            return
        self.rt.destroy_queue("q")
        self.closed = True
        assert "q" not in self.rt.queue_names()

    # ---- invariants -------------------------------------------------------------------------------

    @invariant()
    def agrees_with_the_model(self):
        if self.q is None:
            return
        assert len(self.q) == len(self.entries)
        assert self.q.closed is self.closed
        s = self.q.stats
        assert {k: getattr(s, k) for k in STAT_KEYS} == self.counts
        assert s.as_dict() == self.counts
        assert s.sent == s.received + len(self.q) + s.dropped + s.expired


TestQueueMachine = QueueMachine.TestCase
TestQueueMachine.settings = settings(max_examples=200, stateful_step_count=50, deadline=None,
                                     suppress_health_check=[HealthCheck.too_slow])


# ================================================================================================
# Ring kernels (CPU backend) against the lifecycle model
# ================================================================================================

LIVE = (KS.CREATED, KS.LAUNCHED, KS.ACTIVE, KS.DEACTIVATED)
OPTIONS = rk.LaunchOptions(queue_capacity=64, dedup_window=0, backpressure=BP.BLOCK)
ROOM = 60  # the model never has more than this many messages in a ring of 64: nothing blocks or drops


def fails(seq: int) -> bool:
    return seq % 7 == 3


def python_handler(r):
    seq = int(r["seq"])
    if fails(seq):
        raise ValueError(f"refused {seq}")
    return rec(seq, float(r["value"]) + 1.0)


class KernelMachine(RuleBasedStateMachine):
    def __init__(self):
        super().__init__()
        self.rt = rk.Runtime("cpu")
        self.k = None
        self.generation = 0

    def teardown(self):
        self.rt.close()

    # ---- kernels ----------------------------------------------------------------------------------

    def _new_kernel(self, kind, grid, created):
        self.generation += 1
        name = f"{kind}{self.generation}"
        handler = "echo" if kind == "echo" else python_handler
        make = self.rt.create if created else self.rt.launch
        self.k = make(name, handler, input=REC, grid=grid, options=OPTIONS)
        self.kind, self.grid = kind, grid
        self.state = KS.CREATED if created else KS.LAUNCHED
        self.sent: list[int] = []      # seqs the input accepted, in order
        self.replies: list[int] = []   # seqs of the replies received, in order
        self.reply_set: set[int] = set()
        self.next_seq = 0
        self.tel_enabled = False
        self.tel_counted = False       # whether the telemetry counters may hold counts
        self.tel_base = None           # messages_processed when telemetry started counting; None: unknown
        self.deact_bound = None        # the most messages_processed may reach while DEACTIVATED
        assert self.k.state == self.state

    @initialize(kind=st.sampled_from(["echo", "python"]), grid=st.sampled_from([1, 1, 2]), created=st.booleans())
    def start(self, kind, grid, created):
        self._new_kernel(kind, grid, created)

    @precondition(lambda self: self.k is not None and self.state == KS.TERMINATED)
    @rule(kind=st.sampled_from(["echo", "python"]), grid=st.sampled_from([1, 1, 2]), created=st.booleans())
    def next_kernel(self, kind, grid, created):
        self._new_kernel(kind, grid, created)

    # ---- model helpers ----------------------------------------------------------------------------

    def _value_of(self, seq):
        return seq * 0.5 + (1.0 if self.kind == "python" else 0.0)

    def _answering(self):
        return [s for s in self.sent if not (self.kind == "python" and fails(s))]

    def _outstanding(self):
        return len(self._answering()) - len(self.replies)

    def _check_reply(self, r):
        seq = int(r["seq"])
        assert float(r["value"]) == self._value_of(seq)
        assert seq not in self.reply_set, f"reply to {seq} delivered twice"
        answering = self._answering()
        if self.grid == 1:
            assert len(self.replies) < len(answering), f"unexpected reply {seq}"
            assert seq == answering[len(self.replies)], "replies out of request order with grid=1"
        else:
            assert seq in set(answering), f"reply {seq} to a request never sent"
        self.replies.append(seq)
        self.reply_set.add(seq)

    def _telemetry(self):
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", "telemetry of kernel", RuntimeWarning)  # the polling-rate hint
            return self.k.telemetry()

    def _lifecycle_error(self, call):
        with pytest.raises(rk.LifecycleError, match=self.state.name):
            call()

    def _settle(self):
        """While ACTIVE, wait until every accepted request has been handled (the counters are stable)."""
        if self.state == KS.ACTIVE:
            assert wait_until(lambda: self.k.messages_processed == len(self.sent)), \
                f"{self.k.messages_processed} of {len(self.sent)} requests handled after 10 s"

    def _stable(self):
        """Whether messages_processed can change without a call from us."""
        if self.state in (KS.CREATED, KS.LAUNCHED, KS.TERMINATED):
            return True
        return self.k.messages_processed == len(self.sent)

    def _room(self):
        in_input = len(self.sent) - self.k.messages_processed  # an upper bound: the kernel only advances
        return max(0, min(ROOM - in_input, ROOM - self._outstanding()))

    # ---- lifecycle rules --------------------------------------------------------------------------

    @rule()
    def launch(self):
        if self.state != KS.CREATED:
            return self._lifecycle_error(self.k.launch)
        self.k.launch()
        self.state = KS.LAUNCHED

    @rule()
    def activate(self):
        if self.state not in (KS.LAUNCHED, KS.DEACTIVATED):
            return self._lifecycle_error(self.k.activate)
        self.k.activate()
        self.state = KS.ACTIVE
        self.deact_bound = None

    @rule()
    def deactivate(self):
        if self.state != KS.ACTIVE:
            return self._lifecycle_error(self.k.deactivate)
        self.k.deactivate()
        self.state = KS.DEACTIVATED
        # A block that read is_active before the call may finish the one run it has begun; no more.
        self.deact_bound = self.k.messages_processed + self.grid * RK_MAX_RUN

    @rule(timeout=st.sampled_from([None, 5.0]), then=st.sampled_from(["new", "new", "stay"]),
          kind=st.sampled_from(["echo", "python"]), grid=st.sampled_from([1, 1, 2]), created=st.booleans())
    def terminate(self, timeout, then, kind, grid, created):
        if self.state == KS.TERMINATED:
            assert self.k.terminate(timeout) == KS.TERMINATED  # idempotent
            return
        before = self.state
        t0 = time.monotonic()
        assert self.k.terminate(timeout) == KS.TERMINATED
        assert time.monotonic() - t0 < 5.0  # nothing here blocks: the blocks stop promptly
        self.state = KS.TERMINATED
        processed = self.k.messages_processed
        if before in (KS.CREATED, KS.LAUNCHED):
            assert processed == 0
        # Every block finished the run it had taken: what the input handed out was handled.
        s_in = self.k.input.stats
        assert s_in.sent == len(self.sent) and s_in.received == processed
        assert len(self.k.input) == len(self.sent) - processed
        # What was handled is still there to receive, then receive returns None at once.
        t0 = time.monotonic()
        while True:
            r = self.k.receive(timeout=None)
            if r is None:
                break
            self._check_reply(r)
        assert time.monotonic() - t0 < 2.0
        errors = self.k.errors
        assert len(self.replies) == processed - errors
        if self.grid == 1:
            handled = self.sent[:processed]
            assert errors == sum(self.kind == "python" and fails(s) for s in handled)
        assert self.k.messages_dropped == 0
        assert self.k.receive_batch(8, timeout=None).size == 0
        if then == "stay":  # the next rules try what a TERMINATED kernel refuses
            return
        for call in (self.k.launch, self.k.activate, self.k.deactivate, self.k.enable_telemetry,
                     lambda: self.k.send(rec(0)), lambda: self.k.send_batch(recs([0]))):
            self._lifecycle_error(call)
        self._new_kernel(kind, grid, created)

    # ---- messages ---------------------------------------------------------------------------------

    @rule()
    def send(self):
        seq = self.next_seq
        if self.state not in LIVE:
            return self._lifecycle_error(lambda: self.k.send(rec(seq)))
        if self._room() < 1:
            return
        self.next_seq += 1
        assert self.k.send(rec(seq), timeout=5.0) is True
        self.sent.append(seq)

    @rule(n=st.integers(1, 40))
    def send_batch(self, n):
        seqs = list(range(self.next_seq, self.next_seq + n))
        if self.state not in LIVE:
            return self._lifecycle_error(lambda: self.k.send_batch(recs(seqs)))
        n = min(n, self._room())
        if n == 0:
            return
        seqs = seqs[:n]
        self.next_seq += n
        assert self.k.send_batch(recs(seqs), timeout=5.0) == n
        self.sent.extend(seqs)

    @rule()
    def receive(self):
        if self.state == KS.ACTIVE and self._outstanding() > 0:
            r = self.k.receive(timeout=10.0)
            assert r is not None, f"an ACTIVE kernel left {self._outstanding()} request(s) unanswered for 10 s"
            return self._check_reply(r)
        r = self.k.receive(timeout=0)
        if self.state in (KS.CREATED, KS.LAUNCHED, KS.TERMINATED):
            assert r is None  # nothing was ever handled, or everything handled was drained at terminate
        if r is not None:
            self._check_reply(r)  # DEACTIVATED: handled before the deactivate took effect

    @rule(n=st.integers(1, 64))
    def receive_batch(self, n):
        active = self.state == KS.ACTIVE and self._outstanding() > 0
        got = self.k.receive_batch(n, timeout=10.0 if active else 0)
        assert len(got) <= n
        if active:
            assert len(got) >= 1
        if self.state in (KS.CREATED, KS.LAUNCHED, KS.TERMINATED):
            assert len(got) == 0
        for r in got:
            self._check_reply(r)

    # ---- telemetry --------------------------------------------------------------------------------

    @rule()
    def enable_telemetry(self):
        if self.state not in (KS.LAUNCHED, KS.ACTIVE, KS.DEACTIVATED):
            return self._lifecycle_error(self.k.enable_telemetry)
        was = self.tel_enabled
        self._settle()
        self.k.enable_telemetry()
        self.tel_enabled = True
        if not was and not self.tel_counted:  # the counters start from zero
            self.tel_base = self.k.messages_processed if self._stable() else None
        self.tel_counted = True  # re-enabling goes on from the old counts: unknown until a reset

    @rule()
    def disable_telemetry(self):
        self.k.disable_telemetry()
        if self.tel_enabled:
            self.tel_base = None  # counting resumes from the old total on enable: unknown until a reset
        self.tel_enabled = False
        with pytest.raises(rk.TelemetryNotEnabledError):
            self._telemetry()

    @rule()
    def reset_telemetry(self):
        if not self.tel_enabled:
            with pytest.warns(RuntimeWarning, match="not enabled"):
                self.k.reset_telemetry()
            self.tel_counted = False  # it still zeroes the counters
            return
        self._settle()
        self.k.reset_telemetry()
        self.tel_base = self.k.messages_processed if self._stable() else None

    @rule()
    def check_telemetry(self):
        if not self.tel_enabled:
            with pytest.raises(rk.TelemetryNotEnabledError):
                self._telemetry()
            return
        self._settle()
        t = self._telemetry()
        processed = self.k.messages_processed
        if self.tel_base is not None and self._stable():
            assert t.messages_processed == processed - self.tel_base
            assert t.messages_dropped == 0
            if t.messages_processed:
                assert 0 < t.min_latency_ns <= t.avg_latency_ns <= t.max_latency_ns
        else:
            assert t.messages_processed <= processed
        assert int(self.k.telemetry_view()["messages_processed"]) >= t.messages_processed

    # ---- invariants -------------------------------------------------------------------------------

    @invariant()
    def state_and_counters_agree(self):
        if self.k is None:
            return
        assert self.k.state == self.state
        processed = self.k.messages_processed
        assert processed <= len(self.sent)
        if self.state in (KS.CREATED, KS.LAUNCHED):
            assert processed == 0  # never active: consumes nothing
        if self.state == KS.DEACTIVATED:
            assert processed <= self.deact_bound, "a DEACTIVATED kernel went on consuming"
        assert len(self.replies) <= processed
        live = self.state in LIVE
        assert (self.k.name in [k.name for k in self.rt.kernels()]) == live
        assert (f"{self.k.name}.in" in self.rt.queue_names()) == live
        if self.state != KS.TERMINATED:
            s_in = self.k.input.stats
            assert s_in.sent == len(self.sent)
            assert s_in.rejected == s_in.dropped == s_in.duplicates == s_in.timed_out == 0
        if self.grid == 1 and self._stable():
            assert self.k.errors == sum(self.kind == "python" and fails(s) for s in self.sent[:processed])


TestKernelMachine = KernelMachine.TestCase
TestKernelMachine.settings = settings(max_examples=300, stateful_step_count=50, deadline=None,
                                      suppress_health_check=[HealthCheck.too_slow])
