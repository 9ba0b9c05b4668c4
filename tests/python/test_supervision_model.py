"""Supervision against a reference model (Hypothesis stateful; DESIGN §11).

``SupervisedKernelMachine`` drives one stateful Python-handler kernel on the CPU backend, with or without a
``rk.RestartPolicy`` (drawn per run), through sends of messages whose behaviour is drawn per message:

- ``ok``: handled (the state counts it and sums its seq), echoed;
- ``error``: raises ``ValueError`` -- a failure of that message: a dead letter after one delivery (ERR_HOST);
- ``fault f``: raises ``rk.KernelFault`` on its first ``f`` deliveries, then is handled like ``ok``;
- ``hang``: on its first delivery sleeps past ``handler_timeout`` (the watchdog abandons the worker; the late
  return is discarded), then is handled like ``ok``;

interleaved with activate/deactivate, checkpoints (restored into a fresh kernel and read back with drain),
waits for quiescence, and terminate + drain. With one block the kernel handles its input in order, so the
model can say for every message what became of it: a reply, a dead letter (with its attempts and code), or
-- past ``max_restarts`` -- the kernel is FAULTED at that message and drain() returns it and everything
after it, in order. After each wait the replies, dead letters, restarts, abandoned workers, deliveries per
message, the actor state and the counters are exact. Every checkpoint is consistent: the messages it holds
are a suffix of what was sent, and its state is exactly the handled prefix before that suffix. Nothing
accepted is ever unaccounted for (replies + dead letters + drained == sent).
"""

from __future__ import annotations

import time
import warnings

import numpy as np
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

import ringkernel as rk
from kernel_helpers import REC

KS = rk.KernelState
ACC = np.dtype([("count", "<u8"), ("sum", "<u8")])
TIMEOUT = 0.25  # handler_timeout of the kernels that may hang
HANG = 0.6      # how long a hanging delivery sleeps (past TIMEOUT; the abandoned worker then leaves)
WINDOW = 3600.0  # RestartPolicy.within: every restart of a run counts

# No policy, or one whose every restart counts (WINDOW) with a small budget drawn often (the FAULTED path), a
# backoff now and then (a checkpoint may then meet a block waiting it out).
POLICIES = st.one_of(st.none(), st.builds(
    lambda r, a, b: rk.RestartPolicy(max_restarts=r, within=WINDOW, max_attempts=a, backoff=b),
    st.sampled_from([0, 1, 2, 3, 8]), st.integers(1, 3), st.sampled_from([0.0, 0.0, 0.001])))

# A message's behaviour, carried in its value: 0 ok, -1 error, -2 hang (first delivery), f >= 1: fault f times.
OK, ERROR, HANG_ONCE = 0.0, -1.0, -2.0


def msg(seq: int, how: float):
    a = np.zeros((), REC)
    a["seq"] = seq
    a["value"] = how
    return a[()]


def wait_for(cond, timeout=20.0) -> bool:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            return cond()
        time.sleep(0.002)
    return True


class Model:
    """What a one-block kernel does with a sequence of messages, given its policy."""

    def __init__(self, policy):
        self.policy = policy

    def run(self, hows):
        """-> (outcomes, restarts, abandoned, deliveries, fault_at): outcomes[i] is ("reply",) or
        ("dead", attempts, code) for each message handled before the fault; fault_at the index of the message
        at which the kernel is FAULTED (None if it is not)."""
        p = self.policy
        outcomes, deliveries = [], []
        restarts = abandoned = 0
        for i, how in enumerate(hows):
            attempt = 0
            while True:
                attempt += 1
                failing = (how == HANG_ONCE and attempt == 1) or (how >= 1 and attempt <= how)
                if how == ERROR:
                    outcomes.append(("dead", 1, rk._core.ERR_HOST))
                    break
                if not failing:
                    outcomes.append(("reply",))
                    break
                code = rk._core.ERR_TIMEOUT if how == HANG_ONCE else rk._core.ERR_FAULT
                abandoned += how == HANG_ONCE
                if p is None:
                    outcomes.append(("dead", 1, code))
                    break
                if restarts >= p.max_restarts:
                    deliveries.append(attempt)
                    return outcomes, restarts, abandoned, deliveries, i
                restarts += 1
                if attempt >= p.max_attempts:
                    outcomes.append(("dead", attempt, code))
                    break
            deliveries.append(attempt)
        return outcomes, restarts, abandoned, deliveries, None


class SupervisedKernelMachine(RuleBasedStateMachine):
    def __init__(self):
        super().__init__()
        self.rt = rk.Runtime("cpu")
        self.generation = 0
        self.k = None

    def teardown(self):
        self.rt.close()

    # ---- the kernel under test --------------------------------------------------------------------------

    def _handler(self):
        deliveries = self.deliveries

        def handler(m, state):
            seq, how = int(m["seq"]), float(m["value"])
            deliveries[seq] = deliveries.get(seq, 0) + 1
            n = deliveries[seq]
            if how == ERROR:
                raise ValueError(f"poison {seq}")
            if how == HANG_ONCE and n == 1:
                time.sleep(HANG)
                return None  # late: discarded, and the state is not touched
            if how >= 1 and n <= how:
                raise rk.KernelFault(f"fault {seq} delivery {n}")
            state["count"] += 1
            state["sum"] += seq
            return m

        return handler

    @initialize(policy=POLICIES, watchdog=st.booleans())
    def start(self, policy, watchdog):
        self._launch(policy, watchdog)

    def _launch(self, policy, watchdog):
        self.generation += 1
        self.deliveries: dict[int, int] = {}
        options = rk.LaunchOptions(handler_timeout=TIMEOUT) if watchdog else None
        self.k = self.rt.launch(f"k{self.generation}", self._handler(), input=REC, state=ACC, options=options,
                                restart=policy)
        self.policy, self.watchdog = policy, watchdog
        self.model = Model(policy)
        self.hows: list[float] = []
        self.replies: list[int] = []
        self.active = False
        self.stopped = False

    def _expected(self):
        return self.model.run(self.hows)

    # ---- rules ------------------------------------------------------------------------------------------

    def _running(self):  # not stopped, and not past max_restarts (it may be FAULTED already: closed queues)
        return not self.stopped and self._expected()[4] is None

    @precondition(lambda self: self._running() and len(self.hows) < 40)
    @rule(how=st.sampled_from([OK, OK, OK, OK, ERROR, 1.0, 1.0, 2.0, 3.0, HANG_ONCE]))
    def send(self, how):
        if how == HANG_ONCE and (not self.watchdog or HANG_ONCE in self.hows):
            how = OK  # a hang needs the watchdog; one per run keeps it quick
        seq = len(self.hows)
        assert self.k.send(msg(seq, how), id=1000 + seq, timeout=5)
        self.hows.append(how)

    @precondition(lambda self: self._running())
    @rule(n=st.integers(1, 6))
    def send_batch(self, n):
        seqs = range(len(self.hows), len(self.hows) + n)
        batch = np.zeros(n, REC)
        batch["seq"] = list(seqs)
        assert self.k.send_batch(batch, timeout=5) == n
        self.hows.extend([OK] * n)

    @precondition(lambda self: not self.stopped and not self.active)
    @rule()
    def activate(self):
        self.k.activate()
        self.active = True

    @precondition(lambda self: self._running() and self.active)
    @rule()
    def deactivate(self):
        self.k.deactivate()
        self.active = False

    @precondition(lambda self: self._running())
    @rule()
    def checkpoint(self):
        blob = self.k.checkpoint(timeout=10)
        self.generation += 1
        copy = self.rt.launch(f"copy{self.generation}", "echo", input=REC, state=ACC)
        copy.restore(blob)
        state = copy.actor_state()
        assert copy.terminate(timeout=5) == KS.TERMINATED
        held = [int(m["seq"]) for m in copy.drain()]
        # What the checkpoint holds is a suffix of the input, in order; its state is the prefix before it.
        j = len(self.hows) - len(held)
        assert held == list(range(j, len(self.hows))), held
        outcomes = self.model.run(self.hows[:j])[0]
        handled = [s for s, o in enumerate(outcomes) if o[0] == "reply"]
        assert (int(state["count"]), int(state["sum"])) == (len(handled), sum(handled))

    @precondition(lambda self: not self.stopped and self.active)
    @rule()
    def settle(self):
        outcomes, restarts, abandoned, deliveries, fault_at = self._expected()
        k = self.k
        if fault_at is None:
            assert wait_for(lambda: k.messages_processed == len(self.hows)), (k.messages_processed, self.hows)
        else:
            assert wait_for(lambda: k.state == KS.FAULTED), (k.state, self.hows)
            assert f"past RestartPolicy.max_restarts={self.policy.max_restarts}" in k.fault
        want = [s for s, o in enumerate(outcomes) if o[0] == "reply"]
        self._receive(len(want))
        assert self.replies == want
        self._check_dead(outcomes)
        assert k.restarts == restarts
        if self.watchdog:  # the abandoned worker of a hang returns within HANG
            assert k.abandoned_workers == abandoned
        assert [self.deliveries.get(s, 0) for s in range(len(deliveries))] == deliveries
        assert set(self.deliveries) <= set(range(len(deliveries)))  # nothing after a fault was touched
        st_ = k.actor_state() if fault_at is None else None
        if st_ is not None:
            assert (int(st_["count"]), int(st_["sum"])) == (len(want), sum(want))
        if fault_at is not None:
            self._stop(fault_at)

    @precondition(lambda self: not self.stopped)
    @rule()
    def terminate(self):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # FAULTED: checked below
            end = self.k.terminate(timeout=5)
        fault_at = self._expected()[4]
        assert end in (KS.TERMINATED, KS.FAULTED)
        assert (end == KS.FAULTED) <= (fault_at is not None)
        self._stop(None)

    def _stop(self, fault_at):
        """The kernel is stopped: drain it, and account for every message it accepted."""
        if self.k.state not in (KS.TERMINATED, KS.FAULTED):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)
                self.k.terminate(timeout=5)
        left = [int(m["seq"]) for m in self.k.drain()]
        j = len(self.hows) - len(left)
        assert left == list(range(j, len(self.hows))), left  # a suffix, in order
        if fault_at is not None:
            assert j == fault_at
        outcomes = self.model.run(self.hows[:j])[0]
        want = [s for s, o in enumerate(outcomes) if o[0] == "reply"]
        self._receive(len(want))
        assert self.replies == want
        self._check_dead(outcomes)
        assert self.k.drain() == []
        self.stopped = True

    @precondition(lambda self: self.stopped)
    @rule(policy=POLICIES, watchdog=st.booleans())
    def relaunch(self, policy, watchdog):
        self._launch(policy, watchdog)

    # ---- helpers ----------------------------------------------------------------------------------------

    def _receive(self, n):
        deadline = time.monotonic() + 10
        while len(self.replies) < n and time.monotonic() < deadline:
            r = self.k.receive(timeout=0.05)
            if r is not None:
                self.replies.append(int(r["seq"]))
        assert self.k.receive(timeout=0) is None  # nothing more, nothing twice

    def _check_dead(self, outcomes):
        want = [(s, o[1], o[2]) for s, o in enumerate(outcomes) if o[0] == "dead"]
        got = [(int(d.message["seq"]), d.attempts, d.code) for d in self.k.dead_letters()]
        assert got == want
        assert all(d.id == 1000 + int(d.message["seq"]) for d in self.k.dead_letters())

    @invariant()
    def never_past_the_model(self):
        if self.k is not None and not self.stopped:
            assert self.k.restarts <= self._expected()[1]
            assert self.k.messages_processed <= len(self.hows)


TestSupervisedKernelMachine = SupervisedKernelMachine.TestCase
TestSupervisedKernelMachine.settings = settings(max_examples=150, stateful_step_count=30, deadline=None,
                                                suppress_health_check=[HealthCheck.too_slow])
