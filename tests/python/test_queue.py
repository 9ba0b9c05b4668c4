"""rk.Queue over numpy records: the Python surface of DESIGN §4 and §7."""

import threading
import time
from collections import deque

import numpy as np
import pytest
from conftest import SAMPLE, record, records
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

import ringkernel as rk

BP = rk.Backpressure


def balanced(q: rk.Queue) -> bool:
    s = q.stats
    return s.sent == s.received + len(q) + s.dropped + s.expired


# ---- construction ------------------------------------------------------------------------------------


def test_construct_from_structured_dtype_and_properties():
    q = rk.Queue(SAMPLE, capacity=64, backpressure=BP.REJECT, dedup_window=16, ttl=1.5)
    assert q.dtype == SAMPLE and q.record_type is SAMPLE
    assert (q.capacity, q.backpressure, q.dedup_window, q.priority, q.ttl) == (64, BP.REJECT, 16, False, 1.5)
    assert len(q) == 0
    assert "capacity=64" in repr(q)


def test_construct_from_anything_with_a_dtype_and_from_dtype_like():
    class Carrier:  # the shape message classes take: a class with a .dtype
        dtype = SAMPLE

    assert rk.Queue(Carrier).dtype == SAMPLE
    assert rk.Queue("<f8").dtype == np.dtype("<f8")


def test_dedup_window_is_clamped_to_capacity():
    assert rk.Queue(SAMPLE, capacity=16, dedup_window=1024).dedup_window == 16


@pytest.mark.parametrize(
    "kwargs, error, message",
    [
        ({"capacity": 100}, ValueError, r"capacity must be a power of two in \[16, 1048576\], got 100"),
        ({"capacity": 0}, ValueError, r"capacity must be a power of two"),
        ({"capacity": -4}, ValueError, r"capacity must be in \[0, "),
        ({"capacity": 2.0}, TypeError, r"capacity must be an int"),
        ({"dedup_window": 5}, ValueError, r"dedup_window must be 0 \(off\) or in \[16, 1024\], got 5"),
        ({"ttl": 0.0}, ValueError, r"ttl must be None or a number of seconds"),
        ({"backpressure": 7}, TypeError, r"incompatible constructor arguments"),
        ({"backpressure": BP.DROP_OLDEST, "single_consumer": True}, ValueError, r"DROP_OLDEST .* single_consumer"),
    ],
)
def test_invalid_arguments(kwargs, error, message):
    with pytest.raises(error, match=message):
        rk.Queue(SAMPLE, **kwargs)


@pytest.mark.parametrize(
    "record_type, error, message",
    [
        (np.dtype("O"), TypeError, "without Python objects"),
        (np.dtype([("a", "O")]), TypeError, "without Python objects"),
        (np.dtype([]), ValueError, r"record size must be in \[1, 65536\] bytes, got 0"),
        (np.dtype(("u1", 70000)), ValueError, r"record size must be in \[1, 65536\] bytes, got 70000"),
        (object(), TypeError, "record_type must be a numpy dtype"),
    ],
)
def test_invalid_record_types(record_type, error, message):
    with pytest.raises(error, match=message):
        rk.Queue(record_type)


# ---- single records ------------------------------------------------------------------------------------


def test_send_receive_roundtrip_keeps_every_field():
    q = rk.Queue(SAMPLE, capacity=16)
    r = record(42)
    r["sensor"], r["flags"], r["values"] = 7, 3, np.arange(12, dtype=np.float32)
    assert q.send(r) is True
    assert len(q) == 1
    got = q.receive(timeout=0)
    assert isinstance(got, np.void) and got.dtype == SAMPLE
    assert got.tobytes() == r.tobytes()
    assert q.receive(timeout=0) is None


def test_zero_dim_arrays_and_plain_scalars_are_records():
    q = rk.Queue(SAMPLE, capacity=16)
    assert q.send(np.zeros((), SAMPLE))
    fq = rk.Queue(np.float64, capacity=16)
    assert fq.send(np.float64(2.5))
    assert fq.receive(timeout=0) == 2.5


@pytest.mark.parametrize(
    "bad, message",
    [
        (np.zeros(1, dtype=[("seq", "<u8")])[0], r"record has dtype .* but this queue carries"),
        (np.float32(1.0), "record has dtype float32"),
        (b"\x00" * 64, "record must be a numpy record of dtype"),
        (None, "record must be a numpy record"),
        (np.zeros(2, SAMPLE), r"send\(\) takes one record; use send_batch\(\)"),
    ],
)
def test_wrong_record_raises_typeerror_and_sends_nothing(bad, message):
    q = rk.Queue(SAMPLE, capacity=16)
    with pytest.raises(TypeError, match=message):
        q.send(bad)
    assert len(q) == 0 and q.stats.sent == 0


@pytest.mark.parametrize(
    "kwargs, error, message",
    [
        ({"priority": 256}, ValueError, r"priority must be in \[0, 255\], got 256"),
        ({"priority": -1}, ValueError, r"priority must be in \[0, 255\]"),
        ({"id": -1}, ValueError, r"id must be in \[0, 18446744073709551615\]"),
        ({"id": 1 << 64}, ValueError, r"id must be in"),
        ({"timeout": -0.5}, ValueError, r"timeout must be None \(wait forever\) or a number of seconds >= 0"),
        ({"correlation_id": "x"}, TypeError, "correlation_id must be an int"),
    ],
)
def test_send_argument_validation(kwargs, error, message):
    q = rk.Queue(SAMPLE, capacity=16, priority=True)
    with pytest.raises(error, match=message):
        q.send(record(1), **kwargs)


def test_priority_on_a_fifo_queue_is_refused_not_ignored():
    q = rk.Queue(SAMPLE, capacity=16)
    with pytest.raises(ValueError, match="needs a queue created with priority=True"):
        q.send(record(1), priority=5)
    with pytest.raises(ValueError, match="needs a queue created with priority=True"):
        q.send_batch(records(0, 2), priority=5)


# ---- backpressure --------------------------------------------------------------------------------------


def fill(q: rk.Queue, n: int) -> None:
    assert q.send_batch(records(0, n)) == n


def test_block_times_out_with_false_and_counts():
    q = rk.Queue(SAMPLE, capacity=16, backpressure=BP.BLOCK)
    fill(q, 16)
    t0 = time.monotonic()
    assert q.send(record(99), timeout=0.05) is False
    assert time.monotonic() - t0 >= 0.05
    assert (q.stats.timed_out, q.stats.sent) == (1, 16)


def test_block_releases_the_gil_and_wakes_when_space_appears():
    q = rk.Queue(SAMPLE, capacity=16, backpressure=BP.BLOCK)
    fill(q, 16)
    result = []
    sender = threading.Thread(target=lambda: result.append(q.send(record(99), timeout=10)))
    sender.start()
    # The blocked sender must not hold the GIL: this thread keeps running Python code meanwhile.
    spins = 0
    deadline = time.monotonic() + 0.2
    while time.monotonic() < deadline:
        spins += 1
    assert spins > 1000 and result == []
    assert q.receive(timeout=0)["seq"] == 0
    sender.join(5)
    assert result == [True]
    assert [int(r["seq"]) for r in q.receive_batch(32)] == list(range(1, 16)) + [99]


def test_reject_refuses_at_once():
    q = rk.Queue(SAMPLE, capacity=16, backpressure=BP.REJECT)
    fill(q, 16)
    t0 = time.monotonic()
    assert q.send(record(99), timeout=5) is False
    assert time.monotonic() - t0 < 1
    assert (q.stats.rejected, q.stats.sent, q.stats.dropped) == (1, 16, 0)
    assert balanced(q)


def test_drop_oldest_accepts_and_evicts():
    q = rk.Queue(SAMPLE, capacity=16, backpressure=BP.DROP_OLDEST)
    fill(q, 16)
    assert q.send(record(99)) is True
    got = q.receive_batch(32)
    assert int(got["seq"][0]) == 1 and int(got["seq"][-1]) == 99
    assert (q.stats.dropped, q.stats.sent, q.stats.received) == (1, 17, 16)
    assert balanced(q)


def test_drop_new_discards_the_new_message():
    q = rk.Queue(SAMPLE, capacity=16, backpressure=BP.DROP_NEW)
    fill(q, 16)
    assert q.send(record(99)) is False
    got = q.receive_batch(32)
    assert int(got["seq"][-1]) == 15
    assert (q.stats.dropped, q.stats.sent, q.stats.rejected) == (1, 17, 0)
    assert balanced(q)


# ---- dedup, priority, TTL ------------------------------------------------------------------------------


def test_dedup_refuses_and_counts_duplicates_within_the_window():
    q = rk.Queue(SAMPLE, capacity=64, backpressure=BP.REJECT, dedup_window=16)
    assert q.send(record(1), id=10)
    assert not q.send(record(2), id=10)
    assert q.stats.duplicates == 1
    for i in range(16):
        assert q.send(record(i), id=100 + i)
    assert q.send(record(3), id=10)  # slid out of the window
    ids = np.arange(200, 205, dtype=np.uint64)
    ids[3] = 200
    assert q.send_batch(records(0, 5), ids=ids) == 4
    assert q.stats.duplicates == 2


def test_priority_higher_first_fifo_among_equals():
    q = rk.Queue(SAMPLE, capacity=64, priority=True)
    for seq, prio in enumerate([0, 3, 3, 255, 1, 3]):
        assert q.send(record(seq), priority=prio)
    assert [int(q.receive(timeout=0)["seq"]) for _ in range(6)] == [3, 1, 2, 5, 4, 0]
    assert q.send_batch(records(10, 3), priority=9) == 3
    q.send(record(20), priority=200)
    assert [int(s) for s in q.receive_batch(10)["seq"]] == [20, 10, 11, 12]


def test_ttl_drops_old_messages_at_dequeue():
    q = rk.Queue(SAMPLE, capacity=64, ttl=0.03)
    q.send(record(1))
    q.send_batch(records(2, 3))
    time.sleep(0.08)
    q.send(record(9))
    assert [int(s) for s in q.receive_batch(10)["seq"]] == [9]
    assert q.stats.expired == 4
    assert balanced(q)


# ---- batches -------------------------------------------------------------------------------------------


def test_batches_roundtrip_in_order_across_wraparound():
    q = rk.Queue(SAMPLE, capacity=1024)
    expect = 0
    for start in range(0, 20_000, 700):
        assert q.send_batch(records(start, 700)) == 700
        got = q.receive_batch(700)
        assert np.array_equal(got["seq"], np.arange(expect, expect + 700))
        expect += 700
    assert q.stats.sent == q.stats.received == expect


def test_send_batch_accepts_strided_views():
    q = rk.Queue(SAMPLE, capacity=64)
    base = records(0, 20)
    assert q.send_batch(base[::2]) == 10
    assert [int(s) for s in q.receive_batch(64)["seq"]] == list(range(0, 20, 2))


def test_batch_backpressure_and_receive_batch_limits():
    q = rk.Queue(SAMPLE, capacity=16, backpressure=BP.REJECT)
    assert q.send_batch(records(0, 40)) == 16
    assert q.stats.rejected == 24
    assert len(q.receive_batch(5)) == 5
    assert len(q.receive_batch(0)) == 0
    assert len(q.receive_batch(100)) == 11
    empty = q.receive_batch(8, timeout=0)  # tries once
    assert len(empty) == 0 and empty.dtype == SAMPLE
    bq = rk.Queue(SAMPLE, capacity=16, backpressure=BP.BLOCK)
    assert bq.send_batch(records(0, 20), timeout=0.02) == 16
    assert bq.stats.timed_out == 4


def test_receive_batch_waits_for_the_first_record():
    q = rk.Queue(SAMPLE, capacity=16)
    t0 = time.monotonic()
    assert len(q.receive_batch(4, timeout=0.05)) == 0
    assert time.monotonic() - t0 >= 0.05
    threading.Timer(0.05, lambda: q.send(record(5))).start()
    assert [int(s) for s in q.receive_batch(4, timeout=5)["seq"]] == [5]


@pytest.mark.parametrize(
    "call, error, message",
    [
        (lambda q: q.send_batch(np.zeros(4, dtype="<f8")), TypeError, "records has dtype float64"),
        (lambda q: q.send_batch([1, 2]), TypeError, r"send_batch\(\) takes a numpy array"),
        (lambda q: q.send_batch(np.zeros((2, 2), SAMPLE)), ValueError, r"1-D array of records, got shape \(2, 2\)"),
        (lambda q: q.send_batch(records(0, 3), ids=[1, 2]), ValueError, r"ids must be a 1-D sequence of 3"),
        (lambda q: q.receive_batch(-1), ValueError, r"n must be in \[0, "),
        (lambda q: q.receive_batch(2, timeout=-1), ValueError, "timeout must be None"),
        (lambda q: q.receive(timeout=float("nan")), ValueError, "timeout must be None"),
    ],
)
def test_batch_argument_errors(call, error, message):
    q = rk.Queue(SAMPLE, capacity=16)
    with pytest.raises(error, match=message):
        call(q)
    assert q.stats.sent == 0


# ---- threads -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("bp", list(BP))
def test_threaded_producers_and_consumers_account_exactly(bp):
    q = rk.Queue(SAMPLE, capacity=256, backpressure=bp)
    producers, per = 4, 20_000
    accepted = [0] * producers
    seen: list[np.ndarray] = []
    done = threading.Event()

    def produce(p: int) -> None:
        for start in range(0, per, 500):
            batch = records(p * per + start, 500)
            accepted[p] += q.send_batch(batch) if start % 1000 == 0 else sum(q.send(r) for r in batch[:50]) + \
                q.send_batch(batch[50:])

    def consume() -> None:
        while not (done.is_set() and len(q) == 0):
            got = q.receive_batch(128, timeout=0.01)
            if len(got):
                seen.append(got["seq"].copy())

    consumers = [threading.Thread(target=consume) for _ in range(2)]
    threads = [threading.Thread(target=produce, args=(p,)) for p in range(producers)]
    for t in consumers + threads:
        t.start()
    for t in threads:
        t.join()
    done.set()
    for t in consumers:
        t.join()
    s = q.stats
    delivered = np.concatenate(seen) if seen else np.array([], dtype=np.uint64)
    assert s.sent + s.rejected + s.duplicates + s.timed_out == producers * per
    assert s.received == len(delivered) and s.sent == s.received + s.dropped + s.expired
    assert len(np.unique(delivered)) == len(delivered), "a record was delivered twice"
    assert sum(accepted) == s.sent - (s.dropped if bp == BP.DROP_NEW else 0)
    if bp == BP.BLOCK:
        assert np.array_equal(np.sort(delivered), np.arange(producers * per))


def test_single_producer_single_consumer_fast_path():
    q = rk.Queue(SAMPLE, capacity=128, single_producer=True, single_consumer=True)
    total = 50_000
    got: list[np.ndarray] = []

    def consume() -> None:
        n = 0
        while n < total:
            r = q.receive_batch(256, timeout=1.0)
            n += len(r)
            got.append(r["seq"].copy())

    t = threading.Thread(target=consume)
    t.start()
    for start in range(0, total, 1000):
        assert q.send_batch(records(start, 1000)) == 1000
    t.join(10)
    assert np.array_equal(np.concatenate(got), np.arange(total))


def test_clock_argument_stamps_with_that_clock():
    clock = rk.HlcClock(node_id=5)
    q = rk.Queue(SAMPLE, capacity=16, clock=clock)
    before = clock.last()
    q.send(record(1))
    assert clock.last() > before


# ---- model-based: any sequence of operations agrees with a reference model ------------------------------


class QueueModel(RuleBasedStateMachine):
    """Single-threaded reference: a deque with the same capacity and policy."""

    def __init__(self):
        super().__init__()
        self.bp = None

    @precondition(lambda self: self.bp is None)
    @rule(bp=st.sampled_from([BP.REJECT, BP.DROP_OLDEST, BP.DROP_NEW, BP.BLOCK]), dedup=st.sampled_from([0, 16]))
    def create(self, bp, dedup):
        self.bp, self.dedup = bp, dedup
        self.q = rk.Queue(SAMPLE, capacity=16, backpressure=bp, dedup_window=dedup)
        self.model: deque[int] = deque()
        self.window: deque[int] = deque(maxlen=16)
        self.counts = dict(sent=0, received=0, rejected=0, dropped=0, duplicates=0, timed_out=0)
        self.next_seq = 0

    def _offer(self, msg_id):
        if self.dedup and msg_id in self.window:
            self.counts["duplicates"] += 1
            return False
        if len(self.model) < 16:
            self.model.append(self.next_seq)
            self.counts["sent"] += 1
            accepted = True
        elif self.bp == BP.REJECT:
            self.counts["rejected"] += 1
            accepted = False
        elif self.bp == BP.BLOCK:
            self.counts["timed_out"] += 1
            accepted = False
        elif self.bp == BP.DROP_NEW:
            self.counts["sent"] += 1
            self.counts["dropped"] += 1
            accepted = False
        else:
            self.model.popleft()
            self.model.append(self.next_seq)
            self.counts["sent"] += 1
            self.counts["dropped"] += 1
            accepted = True
        if accepted and self.dedup:
            self.window.append(msg_id)
        return accepted

    @precondition(lambda self: self.bp is not None)
    @rule(msg_id=st.integers(0, 40))
    def send(self, msg_id):
        expected = self._offer(msg_id)
        assert self.q.send(record(self.next_seq), id=msg_id, timeout=0) == expected
        self.next_seq += 1

    @precondition(lambda self: self.bp is not None)
    @rule(n=st.integers(0, 20))
    def send_batch(self, n):
        ids = list(range(1000 + self.next_seq, 1000 + self.next_seq + n))
        batch = records(self.next_seq, n)
        expected = 0
        for i in range(n):
            expected += self._offer(ids[i])
            self.next_seq += 1
            batch["seq"][i] = self.next_seq - 1
        assert self.q.send_batch(batch, ids=np.array(ids, dtype=np.uint64), timeout=0) == expected

    @precondition(lambda self: self.bp is not None)
    @rule()
    def receive(self):
        got = self.q.receive(timeout=0)
        if self.model:
            assert got is not None and int(got["seq"]) == self.model.popleft()
            self.counts["received"] += 1
        else:
            assert got is None

    @precondition(lambda self: self.bp is not None)
    @rule(n=st.integers(0, 20))
    def receive_batch(self, n):
        got = [int(s) for s in self.q.receive_batch(n, timeout=0)["seq"]]
        want = [self.model.popleft() for _ in range(min(n, len(self.model)))]
        assert got == want
        self.counts["received"] += len(want)

    @invariant()
    def stats_agree(self):
        if self.bp is None:
            return
        assert len(self.q) == len(self.model)
        s = self.q.stats.as_dict()
        for key, value in self.counts.items():
            assert s[key] == value, key
        assert balanced(self.q)


TestQueueModel = QueueModel.TestCase
TestQueueModel.settings = settings(max_examples=150, stateful_step_count=40, deadline=None)


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda q: q.send(), r"send\(\) missing required argument 'record'"),
        (lambda q: q.send(record(1), 5), r"send\(\) takes at most 1 positional argument \(2 given\)"),
        (lambda q: q.send(record(1), bogus=1), r"send\(\) got an unexpected keyword argument 'bogus'"),
        (lambda q: q.send(record(1), record=record(2)), r"send\(\) got multiple values for argument 'record'"),
        (lambda q: q.receive(1, 2), r"receive\(\) takes at most 1 positional argument \(2 given\)"),
        (lambda q: q.receive_batch(), r"receive_batch\(\) missing required argument 'n'"),
        (lambda q: q.send_batch(records(0, 1), 0.5), r"send_batch\(\) takes at most 1 positional argument"),
    ],
)
def test_call_signature_errors(call, message):
    q = rk.Queue(SAMPLE, capacity=16)
    with pytest.raises(TypeError, match=message):
        call(q)
    assert q.stats.sent == 0


def test_keywords_and_positions_are_equivalent():
    q = rk.Queue(SAMPLE, capacity=16)
    assert q.send(record=record(1), timeout=0)
    assert int(q.receive(timeout=0)["seq"]) == 1
    q.send(record(2))
    assert int(q.receive(0)["seq"]) == 2
    q.send_batch(records=records(3, 2))
    assert [int(s) for s in q.receive_batch(n=5, timeout=0)["seq"]] == [3, 4]


def test_receive_batch_with_a_timeout_never_returns_empty_while_messages_are_coming():
    # Regression: receive_batch sized its buffer by len(q), which also counts slots a producer has
    # claimed but not yet published; it then returned an empty array at once instead of waiting.
    for _ in range(20):
        q = rk.Queue(SAMPLE, capacity=16384)
        total, b = 100_000, 64
        batch = records(0, b)

        def produce() -> None:
            sent = 0
            while sent < total:
                sent += q.send_batch(batch[: min(b, total - sent)])

        producer = threading.Thread(target=produce)
        producer.start()
        got = 0
        while got < total:
            out = q.receive_batch(b, timeout=5.0)
            assert len(out) > 0, f"empty after {got} of {total} with {len(q)} queued"
            got += len(out)
        producer.join()
        assert got == total


def test_an_instance_without_init_raises_instead_of_crashing():
    q = rk.Queue.__new__(rk.Queue)
    for call in (lambda: q.receive(0), lambda: q.receive_batch(1), lambda: q.send(np.float64(1)),
                 lambda: q.send_batch(np.zeros(1, "f8")), lambda: len(q), lambda: q.stats, lambda: q.capacity,
                 lambda: repr(q)):
        with pytest.raises(TypeError, match=r"Queue.__init__\(\) was not called"):
            call()


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda: rk.Queue(SAMPLE, ttl="1"), "ttl must be None or a number of seconds, got str"),
        (lambda: rk.Queue(SAMPLE).receive(timeout="x"), "timeout must be None .* got str"),
        (lambda: rk.Queue(SAMPLE).receive_batch(1, timeout=[1]), "timeout must be None .* got list"),
        (lambda: rk.HlcClock(max_offset="1"), r"max_offset must be a number of seconds in \[0, 1e9\], got str"),
        (lambda: rk.LaunchOptions(ttl=True), "ttl must be None or a number of seconds, got bool"),
    ],
)
def test_seconds_arguments_of_the_wrong_type_raise_typeerror(call, message):
    with pytest.raises(TypeError, match=message):
        call()


def test_a_buffer_record_stays_pinned_while_send_waits():
    # Regression: the bytes of a buffer-exporting record were used after the buffer was released,
    # so resizing it while a BLOCK send waited made the queue copy freed memory.
    class Record(bytearray):
        dtype = np.dtype("f8")

    q = rk.Queue("f8", capacity=16)
    q.send_batch(np.zeros(16, "f8"))
    rec = Record(np.float64(42.0).tobytes())
    result = []
    sender = threading.Thread(target=lambda: result.append(q.send(rec, timeout=5)))
    sender.start()
    time.sleep(0.1)
    with pytest.raises(BufferError):
        rec.extend(b"\0" * 100_000)
    q.receive_batch(1)
    sender.join(5)
    assert result == [True] and q.receive_batch(32)[-1] == 42.0
