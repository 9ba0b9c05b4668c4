"""Message values: construction, attributes, equality, to_bytes/from_bytes, batches, fuzzing."""

import enum

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import ringkernel as rk


class Op(enum.IntEnum):
    ADD = 0
    SUBTRACT = 1
    MULTIPLY = 2
    DIVIDE = 3


@rk.message
class Tag:
    weight: rk.f64
    on: rk.bool_
    label: rk.string(6)


@rk.message
class Order:
    op: Op
    qty: rk.i32
    price: rk.f32
    ids: rk.array(rk.u16, 3)
    grid: rk.array(rk.i8, (2, 2))
    note: rk.string(12)
    raw: rk.bytes_(5)
    tag: Tag
    history: rk.array(Tag, 2)


def sample_order():
    return Order(op=Op.DIVIDE, qty=-7, price=2.5, ids=[1, 2, 65535], grid=[[1, -2], [3, -4]], note="naïve",
                 raw=b"\x00\xff", tag=Tag(weight=0.5, on=True, label="a"),
                 history=[Tag(weight=1.0), Tag(weight=2.0, on=True, label="zz")])


def test_keywords_positions_and_defaults():
    o = sample_order()
    assert o.op is Op.DIVIDE and o.qty == -7 and o.price == 2.5 and o.note == "naïve" and o.raw == b"\x00\xff"
    assert o.ids.tolist() == [1, 2, 65535] and o.grid.tolist() == [[1, -2], [3, -4]]
    assert o.tag == Tag(weight=0.5, on=True, label="a") and o.history[1].label == "zz"
    empty = Order()
    assert empty.qty == 0 and empty.note == "" and empty.raw == b"" and empty.op is Op.ADD and not empty.tag.on
    assert Tag(1.5, True, "x") == Tag(weight=1.5, on=True, label="x")
    assert "Order(op=<Op.DIVIDE: 3>, qty=-7" in repr(o)


def test_attribute_assignment_is_validated():
    o = Order()
    o.qty = 5
    o.note = "hello"
    o.ids = np.array([4, 5, 6])
    assert (o.qty, o.note, o.ids.tolist()) == (5, "hello", [4, 5, 6])
    with pytest.raises(AttributeError, match="fixed layout"):
        o.extra = 1
    with pytest.raises(ValueError, match=r"Order.qty is rk.i32: 3000000000 is outside"):
        o.qty = 3_000_000_000
    assert o.qty == 5


@pytest.mark.parametrize(
    "kwargs, error, message",
    [
        ({"qty": 1.5}, TypeError, r"Order.qty is rk.i32 and takes an int, got float"),
        ({"qty": True}, TypeError, r"takes an int, got bool"),
        ({"price": "1"}, TypeError, r"takes a number, got str"),
        ({"price": 1e39}, ValueError, r"outside its range"),
        ({"ids": [1, 2]}, ValueError, r"Order.ids has shape \(3,\), got a value of shape \(2,\)"),
        ({"ids": [1, 2, 70000]}, ValueError, r"values must be in \[0, 65535\]"),
        ({"ids": [1.5, 2, 3]}, TypeError, r"takes integers"),
        ({"note": "x" * 13}, ValueError, r"Order.note: 13 bytes exceed its capacity of 12"),
        ({"note": "é" * 7}, ValueError, r"14 bytes exceed"),
        ({"note": "\ud800"}, ValueError, r"cannot be encoded as UTF-8"),
        ({"note": b"x"}, TypeError, r"takes str, got bytes"),
        ({"raw": "x"}, TypeError, r"takes bytes, got str"),
        ({"op": 9}, ValueError, r"Order.op: 9 is not a member of Op"),
        ({"op": "ADD"}, TypeError, r"takes a Op"),
        ({"tag": 3}, TypeError, r"Order.tag takes a Tag, got int"),
        ({"history": [Tag()]}, ValueError, r"Order.history has shape \(2,\)"),
        ({"nope": 1}, TypeError, r"Order\(\) has no field 'nope'"),
    ],
)
def test_invalid_values(kwargs, error, message):
    with pytest.raises(error, match=message):
        Order(**kwargs)


def test_to_bytes_is_deterministic_and_roundtrips():
    a, b = sample_order(), sample_order()
    assert a.to_bytes() == b.to_bytes() and len(a.to_bytes()) == Order.itemsize
    assert Order.from_bytes(a.to_bytes()) == a
    assert Order.from_bytes(bytearray(a.to_bytes())) == a
    assert Order.from_bytes(memoryview(a.to_bytes())) == a


def test_from_bytes_canonicalises_padding_and_unused_bytes():
    raw = bytearray(sample_order().to_bytes())
    pad = int(np.flatnonzero(Order.__rk_padding__)[0])
    raw[pad] = 0xAB
    note_data = Order.dtype.fields["note"][1] + 4
    raw[note_data + 11] = 0x41  # beyond the 6 bytes of "naïve"
    parsed = Order.from_bytes(bytes(raw))
    assert parsed == sample_order() and parsed.to_bytes() == sample_order().to_bytes()


def corrupt(field_path, value_bytes, at=0):
    raw = bytearray(sample_order().to_bytes())
    offset = 0
    dtype = Order.dtype
    for part in field_path:
        sub, off = dtype.fields[part][:2]
        offset += off
        dtype = sub
    raw[offset + at: offset + at + len(value_bytes)] = value_bytes
    return bytes(raw)


@pytest.mark.parametrize(
    "data, message",
    [
        (sample_order().to_bytes()[:-1], rf"Order: expected {Order.itemsize} bytes, got {Order.itemsize - 1}"),
        (sample_order().to_bytes() + b"\0", r"expected .* bytes, got"),
        (corrupt(["op"], b"\x07"), r"Order.op: 7 is not a member of Op"),
        (corrupt(["note", "length"], (13).to_bytes(4, "little")), r"Order.note: length prefix 13 exceeds the capacity of 12"),
        (corrupt(["raw", "length"], (6).to_bytes(4, "little")), r"Order.raw: length prefix 6 exceeds"),
        (corrupt(["note", "data"], b"\xff\xfe"), r"Order.note: invalid UTF-8 at byte 0"),
        (corrupt(["tag", "on"], b"\x02"), r"Order.tag.on: a bool_ holds 2"),
        (corrupt(["history"], b"\x00" * 8 + b"\x05"), r"Order.history\[0\].on: a bool_ holds 5"),
        (corrupt(["tag", "label", "length"], (99).to_bytes(4, "little")), r"Order.tag.label: length prefix 99"),
    ],
)
def test_every_malformed_input_raises_messageformaterror(data, message):
    with pytest.raises(rk.MessageFormatError, match=message):
        Order.from_bytes(data)


def test_from_bytes_rejects_non_bytes():
    with pytest.raises(TypeError, match="takes a bytes-like object"):
        Order.from_bytes("text")


def test_batches():
    batch = Order.zeros(4)
    assert batch.dtype == Order.dtype and batch.shape == (4,)
    objs = [sample_order(), Order(qty=1), Order(note="x")]
    records = Order.to_records(objs)
    assert records.shape == (3,) and records["qty"].tolist() == [-7, 1, 0]
    assert Order.from_records(records) == objs
    records["op"][1] = 11
    with pytest.raises(rk.MessageFormatError, match="Order.op: 11 is not a member of Op"):
        Order.validate(records)
    with pytest.raises(TypeError, match="takes Order objects"):
        Order.to_records([Tag()])
    assert Order.to_records([]).shape == (0,)


# ---- properties over generated message types --------------------------------------------------------

SCALARS = [rk.u8, rk.u16, rk.u32, rk.u64, rk.i8, rk.i16, rk.i32, rk.i64, rk.f32, rk.f64, rk.bool_]


@st.composite
def field_types(draw, depth=0):
    choice = draw(st.integers(0, 4 if depth < 1 else 3))
    if choice == 0 or choice == 1:
        return draw(st.sampled_from(SCALARS))
    if choice == 2:
        return rk.array(draw(st.sampled_from(SCALARS)), tuple(draw(st.lists(st.integers(1, 3), min_size=1, max_size=2))))
    if choice == 3:
        return draw(st.sampled_from([rk.string, rk.bytes_]))(draw(st.integers(1, 9)))
    return draw(message_types(depth=depth + 1))


@st.composite
def message_types(draw, depth=0):
    n = draw(st.integers(1, 5))
    annotations = {f"f{i}": draw(field_types(depth=depth)) for i in range(n)}
    cls = type(f"Gen{draw(st.integers(0, 10**6))}", (), {"__annotations__": annotations, "__module__": __name__})
    return rk.message(cls)


def value_for(draw, ft):
    if isinstance(ft, rk.messages.Scalar):
        if ft.dtype.kind == "b":
            return draw(st.booleans())
        if ft.dtype.kind in "iu":
            info = np.iinfo(ft.dtype)
            return draw(st.integers(int(info.min), int(info.max)))
        width = 32 if ft.dtype.itemsize == 4 else 64
        return draw(st.floats(allow_nan=False, width=width))
    if isinstance(ft, rk.messages.Array):
        elem = ft.elem
        count = int(np.prod(ft.shape))
        return np.array([value_for(draw, elem) for _ in range(count)], dtype=elem.dtype).reshape(ft.shape)
    if isinstance(ft, rk.messages.String):
        return draw(st.text(max_size=ft.capacity).filter(lambda s: len(s.encode()) <= ft.capacity))
    if isinstance(ft, rk.messages.Bytes):
        return draw(st.binary(max_size=ft.capacity))
    return make_value(draw, ft.cls)


def make_value(draw, cls):
    return cls(**{name: value_for(draw, ft) for name, ft in cls.fields.items()})


@settings(max_examples=150, deadline=None)
@given(st.data())
def test_roundtrip_property_over_generated_types(data):
    cls = data.draw(message_types())
    value = make_value(data.draw, cls)
    raw = value.to_bytes()
    assert len(raw) == cls.itemsize == cls.dtype.itemsize
    back = cls.from_bytes(raw)
    assert back == value and back.to_bytes() == raw
    records = cls.to_records([value, back])
    assert cls.from_records(records) == [value, value]


@settings(max_examples=300, deadline=None)
@given(st.binary(min_size=0, max_size=2 * Order.itemsize))
def test_fuzz_from_bytes_only_raises_messageformaterror(blob):
    try:
        parsed = Order.from_bytes(blob)
    except rk.MessageFormatError:
        return
    assert Order.from_bytes(parsed.to_bytes()) == parsed


@settings(max_examples=300, deadline=None)
@given(st.binary(min_size=Order.itemsize, max_size=Order.itemsize))
def test_fuzz_right_sized_garbage_only_raises_messageformaterror(blob):
    try:
        parsed = Order.from_bytes(blob)
    except rk.MessageFormatError:
        return
    repr(parsed)  # every field of an accepted message converts to a Python value
    assert Order.from_bytes(parsed.to_bytes()) == parsed


def test_class_body_defaults_and_string_annotations():
    class Quote:
        __annotations__ = {"qty": "rk.i32", "side": "Op", "note": rk.string(4)}
        qty = 5
        side = Op.SUBTRACT

    Quote.__module__ = __name__
    Quote = rk.message(Quote)
    q = Quote()
    assert (q.qty, q.side, q.note) == (5, Op.SUBTRACT, "")
    assert Quote(qty=1).qty == 1 and Quote().qty == 5

    class BadDefault:
        __annotations__ = {"qty": rk.u8}
        qty = 300

    with pytest.raises(ValueError, match=r"BadDefault.qty default is rk.u8: 300 is outside"):
        rk.message(BadDefault)


# ---- regressions from review -------------------------------------------------------------------------


def test_raw_records_sent_to_a_message_queue_are_validated():
    q = rk.Queue(Order, capacity=16)
    rec = Order.zeros(1)
    rec["op"] = 9
    with pytest.raises(rk.MessageFormatError, match="Order.op: 9 is not a member of Op"):
        q.send(rec[0])
    with pytest.raises(rk.MessageFormatError, match="Order.op: 9"):
        q.send(rec.reshape(()))
    assert len(q) == 0 and q.stats.sent == 0


def test_enums_with_members_beyond_int64_and_without_zero():
    class Huge(enum.IntEnum):
        A = 0
        B = 2**64 - 1

    class Odd(enum.IntEnum):
        ONE = 1
        TWO = 2

    @rk.message
    class E:
        h: Huge
        o: Odd
        os: rk.array(Odd, 2)

    e = E(h=Huge.B)
    assert (e.h, e.o, e.os.tolist()) == (Huge.B, Odd.ONE, [1, 1])  # an enum without 0 starts at its first member
    assert E.from_bytes(e.to_bytes()) == e and E.from_bytes(E().to_bytes()) == E()


def test_nested_defaults_apply():
    @rk.message
    class D:
        q: rk.i32 = 5

    @rk.message
    class Outer:
        d: D
        ds: rk.array(D, 2)

    assert Outer().d.q == 5 and [x.q for x in Outer().ds] == [5, 5]


@pytest.mark.parametrize(
    "annotations, cls_name, message",
    [
        ({"throw": rk.u8}, "Msg", "reserved"),
        ({"requires": rk.u8}, "Msg", "reserved"),
        ({"INT8_MAX": rk.u8}, "Msg", "reserved"),
        ({"validate": rk.u8}, "Msg", "collides"),
        ({"to_records": rk.u8}, "Msg", "collides"),
        ({"x": rk.u8}, "uint", "not usable as a C type name"),
        ({"x": rk.u8}, "float4", "not usable as a C type name"),
        ({"x": rk.u8}, "size_t", "not usable as a C type name"),
        ({"Tag": Tag}, "Msg", "cannot share its name with its type"),
    ],
)
def test_names_that_would_not_compile_are_refused(annotations, cls_name, message):
    cls = type(cls_name, (), {"__annotations__": annotations})
    with pytest.raises(TypeError, match=message):
        rk.message(cls)


def test_type_id_macros_cannot_collide():
    a = rk.message(type("Foo", (), {"__annotations__": {"x": rk.u8}}))
    b = rk.message(type("FOO", (), {"__annotations__": {"y": rk.u8}}))
    with pytest.raises(TypeError, match="both define FOO_TYPE_ID"):
        rk.c_header(a, b)


def test_array_values_are_checked_exactly():
    @rk.message
    class A:
        names: rk.array(rk.bytes_(2), (2, 2))
        words: rk.array(rk.string(4), 2)
        big: rk.array(rk.u64, 2)
        f: rk.array(rk.f32, 2)
        one: rk.f32
        tags: rk.array(Tag, 2)

    with pytest.raises(ValueError, match=r"got 3 items where 2 belong"):
        A(names=[[b"a", b"b", b"EXTRA"], [b"c", b"d"]])
    with pytest.raises(ValueError, match="takes a sequence of 2, got str"):
        A(words="ab")
    assert A(big=[2**64 - 1, 0]).big.tolist() == [2**64 - 1, 0]
    with pytest.raises(ValueError, match="within"):
        A(f=[1e39, 0.0])
    with pytest.raises(ValueError, match="outside its range"):
        A(one=10**400)
    recs = Tag.to_records([Tag(weight=1.0), Tag(weight=2.0, label="b")])
    assert [t.label for t in A(tags=recs).tags] == ["", "b"]


def test_message_plan_rejects_an_empty_record():
    with pytest.raises(ValueError, match="itemsize must be at least 1 byte"):
        rk._core.MessagePlan(0, [], [], [])
