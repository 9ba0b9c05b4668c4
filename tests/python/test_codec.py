"""The native message codec: message objects are records in native memory (csrc/python/codec.cpp)."""

from __future__ import annotations

import copy
import enum
import pickle

import numpy as np
import pytest

import ringkernel as rk
from ringkernel import _core


class Mode(enum.IntEnum):
    OFF = 0
    ON = 7


@rk.message
class Sample:
    seq: rk.u64
    price: rk.f64
    qty: rk.i32
    mode: Mode
    flag: rk.bool_
    values: rk.array(rk.f32, 3)
    note: rk.string(8)

    def total(self) -> float:  # the class body's methods stay on the message type
        return self.price * self.qty


def test_message_types_are_native_records_with_their_methods():
    assert issubclass(Sample, _core.Record)
    s = Sample(seq=1, price=2.5, qty=4)
    assert s.total() == 10.0
    assert type(Sample.__dict__["price"]).__name__ == "MessageField"
    assert not hasattr(s, "__dict__")  # no per-object dictionary: the record is the object


def test_string_annotations_resolve_names_imported_inside_a_function():
    # `from __future__ import annotations` (this module) and `rk` imported only in this frame: the
    # decorator resolves annotations in the defining frame, as dataclasses do.
    import ringkernel as local_rk

    @local_rk.message
    class Local:
        x: local_rk.f64
        n: local_rk.array(local_rk.u16, 2)

    assert Local(x=1.5, n=[1, 2]).x == 1.5
    assert Local.dtype.names == ("x", "n")


def test_positional_and_keyword_construction_follow_the_field_order():
    a = Sample(1, 2.0, 3, Mode.ON)
    b = Sample(seq=1, price=2.0, qty=3, mode=Mode.ON)
    assert a == b and a.mode is Mode.ON
    with pytest.raises(TypeError, match=r"got two values for field 'seq'"):
        Sample(1, seq=2)
    with pytest.raises(TypeError, match=r"takes at most 7 positional values, got 8"):
        Sample(*range(8))
    with pytest.raises(TypeError, match=r"has no field 'bogus' \(fields: seq, price, qty, mode, flag, values, note\)"):
        Sample(bogus=1)


def test_an_explicit_init_call_refills_the_message_the_same_way():
    s = Sample(seq=9, price=1.0, note="x")
    Sample.__init__(s, 5, qty=2)  # starts again from the prototype, like a new message
    assert s == Sample(seq=5, qty=2)
    with pytest.raises(TypeError, match=r"got two values for field 'seq'"):
        Sample.__init__(s, 1, seq=2)
    with pytest.raises(TypeError, match=r"has no field 'bogus'"):
        Sample.__init__(s, bogus=1)


def test_field_errors_name_the_field_and_the_valid_range():
    s = Sample()
    with pytest.raises(ValueError, match=r"Sample.qty is rk.i32: 2147483648 is outside \[-2147483648, 2147483647\]"):
        s.qty = 2**31
    with pytest.raises(ValueError, match=r"Sample.seq is rk.u64: -1 is outside \[0, 18446744073709551615\]"):
        s.seq = -1
    with pytest.raises(TypeError, match=r"Sample.seq is rk.u64 and takes an int, got bool"):
        s.seq = True
    with pytest.raises(ValueError, match=r"Sample.price is rk.f64: .* is outside its range"):
        s.price = 10**400
    with pytest.raises(TypeError, match=r"Sample.flag is rk.bool_ and takes True or False, got int"):
        s.flag = 1
    with pytest.raises(ValueError, match=r"Sample.mode: 3 is not a member of Mode \(valid: 0, 7\)"):
        s.mode = 3
    with pytest.raises(ValueError, match=r"Sample.note: 9 bytes exceed its capacity of 8"):
        s.note = "x" * 9
    with pytest.raises(AttributeError, match=r"Sample has no field 'nope'; messages have a fixed layout"):
        s.nope = 1
    with pytest.raises(AttributeError, match=r"message fields cannot be deleted"):
        del s.qty
    assert s == Sample()  # failed sets changed nothing


def test_numpy_scalars_are_accepted_like_python_numbers():
    s = Sample(seq=np.uint64(2**64 - 1), price=np.float32(1.5), qty=np.int8(-3), mode=np.int64(7),
               flag=np.bool_(True))
    assert (s.seq, s.price, s.qty, s.mode, s.flag) == (2**64 - 1, 1.5, -3, Mode.ON, True)
    assert type(s.seq) is int and type(s.price) is float and type(s.flag) is bool


def test_the_buffer_is_the_message_and_bytes_round_trip():
    s = Sample(seq=5, note="hi")
    view = memoryview(s)
    assert view.nbytes == Sample.itemsize and bytes(view) == s.to_bytes()
    view[0] = 6  # writes go into the message itself
    assert s.seq == 6
    assert np.frombuffer(s, Sample.dtype)["seq"][0] == 6
    assert s._r["seq"] == 6  # the 0-d record view over the same bytes
    assert Sample.from_bytes(s.to_bytes()) == s


def test_messages_pickle_and_copy():
    s = Sample(seq=9, price=1.25, values=[1, 2, 3], note="abc")
    assert pickle.loads(pickle.dumps(s)) == s
    c = copy.deepcopy(s)
    assert c == s and c is not s
    c.seq = 10
    assert s.seq == 9


def test_batches_convert_natively_and_check_types():
    items = [Sample(seq=i, qty=-i) for i in range(100)]
    records = Sample.to_records(items)
    assert records.dtype == Sample.dtype and list(records["seq"]) == list(range(100))
    assert Sample.from_records(records) == items
    assert len(Sample.to_records([])) == 0
    with pytest.raises(TypeError, match=r"Sample.to_records\(\) takes Sample objects, got int"):
        Sample.to_records([items[0], 3])
    bad = records.copy()
    bad.view(np.uint8).reshape(100, -1)[5, Sample.__rk_offsets__["mode"]] = 3
    with pytest.raises(rk.MessageFormatError, match=r"record 5"):
        Sample.from_records(bad)


def test_a_message_type_is_a_plain_class():
    class Base:
        pass

    with pytest.raises(TypeError, match=r"a message type is a plain class"):
        @rk.message
        class Derived(Base):
            x: rk.u8
    with pytest.raises(TypeError, match=r"is not a message type"):
        _core.Record()


def test_received_messages_are_validated_objects_of_the_type():
    q = rk.Queue(Sample, capacity=16)
    assert q.send(Sample(seq=3, mode=Mode.ON, note="ok"))
    got = q.receive(timeout=1.0)
    assert type(got) is Sample and got.seq == 3 and got.note == "ok"
    raw = Sample(seq=4).to_bytes()
    broken = bytearray(raw)
    broken[Sample.__rk_offsets__["mode"]] = 2
    with pytest.raises(rk.MessageFormatError, match=r"Sample.mode"):
        q.send(np.frombuffer(bytes(broken), Sample.dtype)[0])
    assert len(q) == 0
