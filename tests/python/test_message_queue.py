"""Queues carrying message objects: send/receive objects, batches of records, the envelope."""

import enum

import numpy as np
import pytest

import ringkernel as rk


class Op(enum.IntEnum):
    ADD = 0
    SUBTRACT = 1


@rk.message
class Request:
    op: Op
    a: rk.array(rk.f32, 4)
    name: rk.string(8)


@rk.message
class Other:
    x: rk.u8


def test_objects_in_objects_out():
    q = rk.Queue(Request, capacity=16)
    m = Request(op=Op.SUBTRACT, a=[1, 2, 3, 4], name="hi")
    assert q.record_type is Request and q.dtype == Request.dtype
    assert q.send(m)
    got = q.receive(timeout=0)
    assert isinstance(got, Request) and got == m and got is not m


def test_records_of_the_dtype_are_also_accepted_and_received_as_objects():
    q = rk.Queue(Request, capacity=16)
    rec = Request.zeros(1)[0]
    assert q.send(rec)
    assert q.receive(timeout=0) == Request()


def test_a_message_of_another_type_is_a_typeerror_never_a_copy():
    q = rk.Queue(Request, capacity=16)
    with pytest.raises(TypeError, match="this queue carries Request messages, got a Other"):
        q.send(Other(x=1))
    with pytest.raises(TypeError, match="records has dtype"):
        q.send_batch(np.zeros(2, Other.dtype))
    assert len(q) == 0 and q.stats.sent == 0


def test_envelope_is_returned_on_request():
    clock = rk.HlcClock(node_id=3)
    q = rk.Queue(Request, capacity=16, clock=clock)
    before = clock.last()
    q.send(Request(name="x"), correlation_id=42, id=7)
    msg, env = q.receive(timeout=0, with_envelope=True)
    assert msg.name == "x"
    assert isinstance(env, rk.Envelope)
    assert (env.message_id, env.correlation_id, env.type_id, env.priority) == (7, 42, Request.type_id, 0)
    assert env.timestamp > before and env.payload_size == Request.itemsize
    assert env.enqueue_ns // 1_000_000 == env.timestamp.physical
    assert q.receive(timeout=0, with_envelope=True) is None


def test_batches_are_records_validated_before_they_enter():
    q = rk.Queue(Request, capacity=64)
    recs = Request.to_records([Request(op=Op.ADD, name="a"), Request(op=Op.SUBTRACT, name="b")])
    assert q.send_batch(recs) == 2
    out, envs = q.receive_batch(8, with_envelopes=True)
    assert out.dtype == Request.dtype and Request.from_records(out)[1].name == "b"
    assert envs.dtype == rk.layout.ENVELOPE_DTYPE and envs["type_id"].tolist() == [Request.type_id] * 2
    assert envs["message_id"][1] == envs["message_id"][0] + 1
    bad = Request.zeros(3)
    bad["op"][2] = 9
    with pytest.raises(rk.MessageFormatError, match="Request.op: 9 is not a member of Op"):
        q.send_batch(bad)
    assert len(q) == 0 and q.stats.sent == 2
    empty, no_envs = q.receive_batch(4, timeout=0, with_envelopes=True)
    assert len(empty) == 0 and len(no_envs) == 0
