#!/usr/bin/env python3
"""Write the hand-made seeds of tests/fuzz/corpus/<target>/seed-*.

The targets read their input through libFuzzer's FuzzedDataProvider: integers from the end of the
input (most significant byte first, as few bytes as the range needs), byte strings from the front.
Enc below writes inputs the same way, so each seed is a scripted scenario: a queue configuration and
a sequence of operations, a ring with chosen corruptions, a message plan and records. The scripts
mirror the order in which each target consumes its input (keep them in step when a target changes;
a seed that drifts is still a valid input, only a less meaningful one).

    python3 tests/fuzz/make_seeds.py        # rewrites corpus/*/seed-* (other files are left alone)
"""
import os
import struct

HERE = os.path.dirname(os.path.abspath(__file__))


class Enc:
    def __init__(self):
        self.front = bytearray()
        self.back = bytearray()  # in the order consumed

    def rng(self, lo, hi, v):
        assert lo <= v <= hi, (lo, hi, v)
        span, off, n = hi - lo, 0, 0
        while off < 64 and (span >> off) > 0:
            n += 1
            off += 8
        r = v - lo
        for k in reversed(range(n)):
            self.back.append((r >> (8 * k)) & 0xFF)
        return v

    def u8(self, v):
        return self.rng(0, 255, v)

    def u32(self, v):
        return self.rng(0, 2**32 - 1, v)

    def u64(self, v):
        return self.rng(0, 2**64 - 1, v)

    def boolean(self, b):
        self.u8(1 if b else 0)
        return b

    def raw(self, bs):
        self.front += bytes(bs)

    def data(self):
        return bytes(self.front) + bytes(reversed(self.back))


def write(target, name, data):
    d = os.path.join(HERE, "corpus", target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, "seed-" + name), "wb") as f:
        f.write(data)


# ---- fuzz_queue_ops -------------------------------------------------------------------------------------
BLOCK, REJECT, DROP_OLDEST, DROP_NEW = range(4)


class QueueScript:
    def __init__(self, cap_log2, bp, dedup=0, priority=False, payload=8, sp=False, sc=False):
        self.e = Enc()
        self.cap = 16 << cap_log2
        self.priority = priority
        self.e.rng(0, 4, cap_log2)
        self.e.rng(0, 3, bp)
        self.e.u8(0 if dedup == 0 else 1 | ((dedup - 16) << 1))
        self.e.u8((1 if priority else 0) | (2 if sp else 0) | (4 if sc else 0))
        self.e.rng(0, 56, payload - 8)

    def op(self, k):
        self.e.rng(0, 15, k)

    def _msg(self, id_=None, big_id=None, prio=0):
        how = 0 if id_ is None and big_id is None else 3 if big_id is not None else 1 | (id_ << 2)
        self.e.u8(how)
        if big_id is not None:
            self.e.u64(big_id)
        if self.priority:
            self.e.u8(prio)  # 0..3 as they are; multiples of 5 as they are; others % 4
        else:
            self.e.u8(15 if prio else 0)  # 15: priority 1 on a FIFO queue (refused)

    def send(self, id_=None, prio=0, big_id=None):
        self.op(0)
        self._msg(id_, big_id, prio)

    def try_send(self, id_=None, prio=0):
        self.op(4)
        self._msg(id_, None, prio)

    def receive(self, env=True):
        self.op(6)
        self.e.boolean(env)

    def send_batch(self, n, ids=None, prio=0, gap=0):
        self.op(9)
        self.e.rng(0, 2 * self.cap + 3, n)
        self.e.rng(0, 9, gap)
        self.e.u8((1 if ids is not None else 0) | ((prio if self.priority else (15 if prio else 0)) << 1))
        for i in range(n if ids is not None else 0):
            self.e.rng(0, 40, ids[i])

    def receive_batch(self, n, gap=0, env=True):
        self.op(11)
        self.e.rng(0, 2 * self.cap + 3, n)
        self.e.rng(0, 9, gap)
        self.e.boolean(env)

    def wait_readable(self):
        self.op(13)

    def close(self, tag=1):
        self.op(14)
        self.e.rng(0, 7, 0)
        self.e.u8(tag)

    def data(self):
        return self.e.data()


def queue_seeds():
    n = 0
    for bp in (BLOCK, REJECT, DROP_OLDEST, DROP_NEW):
        for priority in (False, True):
            for dedup in (0, 16):
                s = QueueScript(0, bp, dedup, priority, payload=8 + 3 * bp)
                for i in range(20):  # past the capacity of 16, with repeated ids
                    s.send(id_=i % 12 if dedup else None, prio=(i * 7) % 4 if priority else int(i == 5))
                s.try_send(id_=3)
                s.wait_readable()
                for _ in range(5):
                    s.receive(env=True)
                s.send_batch(35, ids=[i % 20 for i in range(35)] if dedup else None, prio=2 if priority else 0, gap=3)
                s.receive_batch(7, gap=5, env=True)
                s.send(prio=1, id_=1)
                s.close()
                s.send()
                s.send_batch(2)
                s.receive_batch(35, env=False)
                s.receive(env=False)
                n += 1
                write("fuzz_queue_ops", f"bp{bp}-prio{int(priority)}-dedup{dedup}", s.data())
    # Larger queues, windows clamped to the capacity, wrap-around, SPSC promises, big explicit ids.
    s = QueueScript(4, REJECT, dedup=64, payload=64, sp=True, sc=True)
    for r in range(3):
        s.send_batch(200, ids=[(i * 3) % 41 for i in range(200)])
        s.receive_batch(150, gap=9)
        s.send(big_id=(1 << 62) + r)
        s.send(big_id=(1 << 62) + r)
    write("fuzz_queue_ops", "cap256-spsc-wrap", s.data())
    s = QueueScript(1, DROP_OLDEST, dedup=64, priority=True)  # window 64 clamped to 32
    for i in range(70):
        s.send(id_=i % 47, prio=(i * 13) % 4 if i % 10 else 200)
        if i % 9 == 0:
            s.receive_batch(3)
    write("fuzz_queue_ops", "dropoldest-prio-window-clamped", s.data())
    s = QueueScript(0, DROP_OLDEST, sc=True)  # refused configuration
    write("fuzz_queue_ops", "invalid-config", s.data())
    return n + 3


# ---- fuzz_envelope --------------------------------------------------------------------------------------
def stride_of(rec):
    return (64 + rec + 63) // 64 * 64


class EnvScript:
    def __init__(self, queue_mode, cap_log2, rec, rotate, fill, bp_reject=True, single=False):
        self.e = Enc()
        self.queue = queue_mode
        self.cap = 16 << cap_log2
        self.rec = rec
        self.max_payload = stride_of(rec) - 64
        self.e.boolean(queue_mode)
        self.e.rng(0, 2, cap_log2)
        self.e.rng(1, 300, rec)
        if queue_mode:
            self.e.boolean(bp_reject)
            self.e.boolean(single)
        else:
            self.e.boolean(single)
        self.e.rng(0, 2 * self.cap, rotate)
        self.e.rng(0, self.cap, fill)
        self.corruptions = []

    def _corrupt(self, at, kind, *args):
        self.e.rng(0, self.cap - 1, at)
        self.e.rng(0, 4, kind)
        if kind in (0, 1):
            choice = args[0]
            self.e.rng(0, 11, choice)
            if choice == 11:
                self.e.u32(args[1])
        elif kind == 2:
            self.e.raw(args[0])
        elif kind == 3:
            self.e.rng(0, self.max_payload - 1, args[0])
            self.e.raw(bytes(args[1]).ljust(self.max_payload - args[0], b"\x00"))
        else:
            near, v = args
            self.e.boolean(near)
            if near:
                self.e.rng(-self.cap - 2, self.cap + 2, v)
            else:
                self.e.u64(v)

    def initial(self, corruptions):
        """corruptions: list of (at, kind, args...) applied before the operations."""
        self.e.rng(0, 6, len(corruptions))
        for c in corruptions:
            self._corrupt(*c)

    def op(self, k):
        self.e.rng(0, 7, k)

    def pop(self, cap_choice, how=0, cap=0):
        assert not self.queue
        self.op(0)
        self.e.rng(0, 3, cap_choice)
        if cap_choice == 3:
            self.e.rng(0, 2 * stride_of(self.rec), cap)
        self.e.rng(0, 2, how)

    def receive(self, env=True):
        assert self.queue
        self.op(0)
        self.e.boolean(env)

    def receive_batch(self, n, gap=0, env=True):
        assert self.queue
        self.op(3)
        self.e.rng(1, self.cap + 2, n)
        self.e.rng(0, 5, gap)
        self.e.boolean(env)

    def push(self):
        self.op(5)

    def forward(self):
        self.op(6)

    def corrupt(self, *c):
        self.op(7)
        self._corrupt(*c)

    def data(self):
        return self.e.data()


def envelope_seeds():
    n = 0
    # payload_size at every edge, popped with each destination size, ring and queue.
    for queue_mode in (False, True):
        for choice in range(11):
            s = EnvScript(queue_mode, 0, 24, rotate=5 + choice, fill=6)
            s.initial([(0, 0, choice), (1, 1, choice), (2, 2, struct.pack("<QQQQIHHBBHIQ", 7, 8, 9, 10, 24, 1, 2, 3, 4, 0, 0, 0))])
            for k in range(4):
                if queue_mode:
                    s.receive(env=k % 2 == 0)
                else:
                    s.pop(k % 4, how=k % 3, cap=100)
            if queue_mode:
                s.receive_batch(4, gap=3)
            s.push()
            s.forward()
            n += 1
            write("fuzz_envelope", f"{'queue' if queue_mode else 'ring'}-payload-size-{choice}", s.data())
    # The turn counter near the protocol's values: empty, ready, released, a lap ahead or behind.
    for delta in (-18, -16, -1, 0, 1, 2, 16, 17):
        for queue_mode in (False, True):
            s = EnvScript(queue_mode, 0, 8, rotate=3, fill=4)
            s.initial([(0, 4, True, delta), (4, 4, True, delta)])
            for _ in range(3):
                if queue_mode:
                    s.receive_batch(3)
                else:
                    s.pop(0)
                s.push()
            n += 1
            write("fuzz_envelope", f"{'queue' if queue_mode else 'ring'}-sequence{delta:+d}", s.data())
    # Payload bytes, wide records, bigger rings, the last slot of the allocation.
    s = EnvScript(False, 2, 300, rotate=63, fill=64)
    s.initial([(0, 3, 10, b"\xff" * 20), (63, 0, 5)])
    for _ in range(64):
        s.pop(1)
    write("fuzz_envelope", "ring64-wide-last-slot", s.data())
    s = EnvScript(True, 1, 1, rotate=31, fill=32, bp_reject=False, single=True)
    s.initial([(31, 0, 0), (30, 0, 11, 0x40)])
    s.receive_batch(34, gap=5)
    for _ in range(33):
        s.push()
    s.receive_batch(34, gap=0, env=False)
    write("fuzz_envelope", "queue32-dropnew-batch-wrap", s.data())
    return n + 2


# ---- fuzz_message ---------------------------------------------------------------------------------------
CPS = [0x00, 0x41, 0x7F, 0x80, 0xE9, 0x7FF, 0x800, 0xFFFD, 0xD7FF, 0xD800, 0xDBFF, 0xDC00, 0xDFFF, 0xE000,
       0xFFFF, 0x10000, 0x1F600, 0x10FFFF, 0x110000, 0x1FFFFF]


class MsgScript:
    """A laid-out plan: fields as ("pad", n) ("plain", n) ("bool", count) ("enum", size, signed, count,
    [member choices]) ("bytes", cap) ("str", cap)."""

    def __init__(self, fields):
        self.e = Enc()
        self.fields = fields
        self.e.rng(0, 3, 1)  # laid out
        self.e.rng(0, 10, len(fields))
        for f in fields:
            kind = f[0]
            if kind == "pad":
                self.e.rng(0, 5, 0)
                self.e.rng(1, 8, f[1])
            elif kind == "plain":
                self.e.rng(0, 5, 1)
                self.e.rng(1, 16, f[1])
            elif kind == "bool":
                self.e.rng(0, 5, 2)
                self.e.rng(1, 6, f[1])
            elif kind == "enum":
                _, size, signed, count, members = f
                self.e.rng(0, 5, 3)
                self.e.rng(0, 3, {1: 0, 2: 1, 4: 2, 8: 3}[size])
                self.e.boolean(signed)
                self.e.rng(1, 4, count)
                self.e.rng(1, 6, len(members))
                for m in members:  # (choice, raw u64 for choice 5); distinct values
                    self.e.rng(0, 5, m[0])
                    if m[0] == 5:
                        self.e.u64(m[1])
            else:
                self.e.rng(0, 5, 4)
                self.e.boolean(kind == "str")
                self.e.rng(0, 24, f[1])

    def records(self, recs):
        """recs: per record, per field a value: None = raw bytes (then ("raw", bytes)), or the field's
        well-formed content: bytes for pad/plain, [0/1] for bool, [member index] for enum, bytes for
        bytes_, a list of code point indexes (clean) for str."""
        self.e.rng(1, 4, len(recs))
        for rec in recs:
            for f, v in zip(self.fields, rec):
                kind = f[0]
                size = {"pad": lambda: f[1], "plain": lambda: f[1], "bool": lambda: f[1],
                        "enum": lambda: f[1] * f[3], "bytes": lambda: 4 + f[1], "str": lambda: 4 + f[1]}[kind]()
                if isinstance(v, tuple) and v[0] == "raw":
                    self.e.rng(0, 7, 0)
                    self.e.raw(bytes(v[1]).ljust(size, b"\x00")[:size])
                    continue
                self.e.rng(0, 7, 1)
                if kind in ("pad", "plain"):
                    self.e.raw(bytes(v).ljust(size, b"\x00")[:size])
                elif kind == "bool":
                    for b in v:
                        self.e.boolean(b)
                elif kind == "enum":
                    for idx in v:
                        self.e.rng(0, len(f[4]) - 1, idx)
                elif kind == "bytes":
                    self.e.rng(0, f[1], len(v))
                    self.e.raw(v)
                else:
                    self.e.rng(0, 3, 1)  # clean
                    for cp_index in v:
                        self.e.boolean(True)
                        self.e.rng(0, 15, 0)
                        self.e.rng(0, len(CPS) - 1, cp_index)
                    self.e.boolean(False)
                    if v:
                        self.e.rng(0, 5, 1)  # no byte changed

    def data(self):
        return self.e.data()


def message_seeds():
    # The plan of tests/cpp/test_message_plan.cpp: enum u8 {0, 1, 5}, bool, 2 padding, string(12), 4 padding.
    op = ("enum", 1, False, 1, [(0, 0), (1, 0), (5, 5)])
    fields = [op, ("bool", 1), ("pad", 2), ("str", 12), ("pad", 4)]
    s = MsgScript(fields)
    s.records([[[2], [1], b"\xaa\xbb", [1, 4, 16], b"\xcc" * 4]])
    write("fuzz_message", "testplan-valid", s.data())
    s = MsgScript(fields)
    s.records([[[0], [0], b"", [], b""], [("raw", b"\x03"), [1], b"", [6, 6], b""], [[1], ("raw", b"\x02"), b"", [], b""]])
    write("fuzz_message", "testplan-bad-enum-bool", s.data())
    s = MsgScript(fields)
    s.records([[[0], [0], b"", ("raw", b"\x0d\x00\x00\x00abc"), b""]])
    write("fuzz_message", "testplan-length-past-capacity", s.data())
    s = MsgScript(fields)
    s.records([[[0], [0], b"", ("raw", b"\x04\x00\x00\x00\xed\xa0\x80x"), b""]])
    write("fuzz_message", "testplan-surrogate", s.data())
    # Every kind at once, 8-byte signed and unsigned enums at their extremes, arrays.
    fields = [("plain", 3), ("bool", 5), ("enum", 8, True, 2, [(3, 0), (4, 0), (2, 0)]),
              ("enum", 8, False, 1, [(3, 0), (0, 0)]), ("enum", 2, True, 3, [(2, 0), (5, 0x8001), (1, 0)]),
              ("bytes", 7), ("str", 24), ("pad", 1), ("str", 0), ("enum", 4, False, 4, [(3, 0)])]
    s = MsgScript(fields)
    rec = [b"xyz", [1, 0, 1, 1, 0], [0, 1], [0], [0, 1, 2], b"\x00\x01\x02", [15, 16, 17, 14, 13, 3],
           b"\x99", [], [0, 0, 0, 0]]
    s.records([rec, rec])
    write("fuzz_message", "all-kinds-two-records", s.data())
    # Raw plans: offsets at the end of the record and past it (refused).
    for name, itemsize, off in (("raw-fits", 16, 12), ("raw-past-end", 16, 13), ("raw-zero-itemsize", 0, 0)):
        e = Enc()
        e.rng(0, 3, 0)  # raw
        e.rng(0, 256, itemsize)
        e.rng(0, 6, 1)
        e.rng(0, 3, 2)  # Length
        e.rng(0, 3, 0)
        e.rng(0, itemsize, off)  # offset
        e.rng(0, 3, 0)
        e.rng(0, 16, 1)  # count
        e.rng(0, 3, 0)
        e.rng(0, 64, 0)  # size
        e.boolean(False)
        e.rng(0, 4, 0)
        e.rng(0, 3, 1)  # one zero range
        e.rng(0, 3, 0)
        e.rng(0, itemsize, 0)
        e.rng(0, 3, 0)
        e.rng(0, itemsize, min(4, itemsize))
        e.rng(0, 3, 0)  # no tails
        e.rng(1, 4, 1)
        e.raw(b"\x01\x02\x03\x04" * 4)
        write("fuzz_message", name, e.data())
    return 8


if __name__ == "__main__":
    print("fuzz_queue_ops:", queue_seeds(), "seeds")
    print("fuzz_envelope:", envelope_seeds(), "seeds")
    print("fuzz_message:", message_seeds(), "seeds")
