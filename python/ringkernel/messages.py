"""Message types: a fixed layout declared once in Python, shared with C, C++, CUDA, OpenCL C and MSL.

``@rk.message`` turns a class with annotated fields into a message type: a numpy ``dtype`` laid out
by the C alignment rules (what a C compiler does with the same struct), a stable ``type_id``, and a
C declaration (``c_declaration()``, ``c_header()``, ``write_header()``) that every device compiler
turns into the identical layout, checked there by static asserts on size and offsets.

Values: construct with keywords (missing fields take the class body's default, else zero), read
and write fields as attributes
(validated), compare, ``to_bytes()`` (deterministic) and ``from_bytes()`` (validated, raising
``rk.MessageFormatError`` naming the field). Batches are numpy arrays of ``T.dtype``
(``T.zeros(n)``, ``T.to_records``, ``T.from_records``, ``T.validate``).
"""

from __future__ import annotations

import enum
import hashlib
import keyword
import re
import sys
from importlib import resources
from pathlib import Path
from typing import Any, ClassVar, Dict, Iterable, List, Optional, Tuple, Union

import numpy as np

from ._core import (MessageFormatError, MessagePlan, Record, messages_from_records, record_from_canonical,
                    record_wrap, records_from_messages, register_message_codec)

__all__ = [
    "FieldType",
    "u8", "u16", "u32", "u64", "i8", "i16", "i32", "i64", "f32", "f64", "bool_",
    "array", "bytes_", "string",
    "message", "is_message", "c_header", "write_header",
]


class FieldType:
    """The type of one message field: its numpy dtype and its C spelling."""

    dtype: np.dtype

    def c_base(self) -> str:
        """The C type name the field is declared with."""
        raise NotImplementedError

    def c_dims(self) -> str:
        """Array dimensions that follow the field name in C, e.g. ``[3][4]``."""
        return ""

    def canonical(self) -> str:
        """A description that changes whenever the layout changes (feeds ``type_id``)."""
        raise NotImplementedError

    def dependencies(self) -> List[Any]:
        """Message classes and byte-buffer types this field's C declaration needs first."""
        return []

    # Values. `get` turns stored data (a 0-d array of self.dtype) into a Python value; `put`
    # validates a Python value and returns what numpy assigns into a field of self.dtype. Stored
    # bytes are validated and canonicalised by the type's MessagePlan (C++), built from _plan().

    def get(self, data: np.ndarray) -> Any:
        raise NotImplementedError

    def put(self, value: Any, path: str) -> Any:
        raise NotImplementedError

class Scalar(FieldType):
    def __init__(self, name: str, np_code: str, c_name: str):
        self.name, self.dtype, self._c = name, np.dtype(np_code), c_name

    def c_base(self) -> str:
        return self._c

    def canonical(self) -> str:
        return self.name

    def get(self, data: np.ndarray) -> Any:
        return data.item()

    def put(self, value: Any, path: str) -> Any:
        kind = self.dtype.kind
        if kind == "b":
            if not isinstance(value, (bool, np.bool_)):
                raise TypeError(f"{path} is rk.bool_ and takes True or False, got {type(value).__name__}")
            return bool(value)
        if kind in "iu":
            if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
                raise TypeError(f"{path} is rk.{self.name} and takes an int, got {type(value).__name__}")
            info = np.iinfo(self.dtype)
            if not info.min <= value <= info.max:
                raise ValueError(f"{path} is rk.{self.name}: {value} is outside [{info.min}, {info.max}]")
            return int(value)
        if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.integer, np.floating)):
            raise TypeError(f"{path} is rk.{self.name} and takes a number, got {type(value).__name__}")
        limit = float(np.finfo(self.dtype).max)
        try:
            as_float = float(value)
        except OverflowError:
            as_float = float("inf") if value > 0 else float("-inf")
            raise ValueError(f"{path} is rk.{self.name}: {value} is outside its range (±{limit:.6g})") from None
        if np.isfinite(as_float) and abs(as_float) > limit:
            raise ValueError(f"{path} is rk.{self.name}: {value} is outside its range (±{limit:.6g})")
        return as_float

    def __repr__(self) -> str:
        return f"rk.{self.name}"


u8 = Scalar("u8", "u1", "rk_u8")
u16 = Scalar("u16", "<u2", "rk_u16")
u32 = Scalar("u32", "<u4", "rk_u32")
u64 = Scalar("u64", "<u8", "rk_u64")
i8 = Scalar("i8", "i1", "rk_i8")
i16 = Scalar("i16", "<i2", "rk_i16")
i32 = Scalar("i32", "<i4", "rk_i32")
i64 = Scalar("i64", "<i8", "rk_i64")
f32 = Scalar("f32", "<f4", "rk_f32")
f64 = Scalar("f64", "<f8", "rk_f64")
# One byte holding 0 or 1; C has no bool of a fixed size on every target (OpenCL leaves it open).
bool_ = Scalar("bool_", "?", "rk_u8")


class Array(FieldType):
    def __init__(self, elem: FieldType, shape: Tuple[int, ...]):
        self.elem, self.shape = elem, shape
        self.dtype = np.dtype((elem.dtype, shape))

    def c_base(self) -> str:
        return self.elem.c_base()

    def c_dims(self) -> str:
        return "".join(f"[{n}]" for n in self.shape) + self.elem.c_dims()

    def canonical(self) -> str:
        return f"{self.elem.canonical()}[{','.join(map(str, self.shape))}]"

    def dependencies(self) -> List[Any]:
        return self.elem.dependencies()

    def get(self, data: np.ndarray) -> Any:
        if isinstance(self.elem, Scalar):
            return data.copy()
        if isinstance(self.elem, EnumField):
            return data.astype(self.elem.dtype).copy()
        return _nested_list(data, self.elem.get)

    def put(self, value: Any, path: str) -> Any:
        if isinstance(self.elem, (Scalar, EnumField)):
            return self._put_numbers(value, path)
        if isinstance(self.elem, MessageField) and isinstance(value, np.ndarray) and value.dtype == self.elem.dtype:
            if value.shape != self.shape:
                raise ValueError(f"{path} has shape {self.shape}, got records of shape {value.shape}")
            self.elem.cls.validate(value)
            return value
        _check_nesting(value, self.shape, path)
        out = np.zeros(self.shape, self.elem.dtype)
        for index in np.ndindex(*self.shape):
            element = value
            for i in index:
                element = element[i]
            out[index] = self.elem.put(element, f"{path}{list(index)}")
        return out

    def _put_numbers(self, value: Any, path: str) -> np.ndarray:
        arr = np.asarray(value)
        if arr.shape != self.shape:
            raise ValueError(f"{path} has shape {self.shape}, got a value of shape {arr.shape}")
        kind = self.elem.dtype.kind
        if isinstance(self.elem, EnumField) or kind in "iu":
            if arr.dtype.kind in "fO" and arr.size:  # e.g. a list holding 2**64-1 becomes float64 or object
                exact = np.asarray(value, dtype=object)
                if not all(isinstance(v, (int, np.integer)) and not isinstance(v, (bool, np.bool_))
                           for v in exact.reshape(-1).tolist()):
                    raise TypeError(f"{path} holds {self.elem!r} and takes integers, got {arr.dtype}")
                arr = exact
            elif arr.dtype.kind not in "iu" and arr.size:
                raise TypeError(f"{path} holds {self.elem!r} and takes integers, got {arr.dtype}")
            if arr.size and isinstance(self.elem, EnumField):
                self.elem.check_members(arr, path)
            elif arr.size:
                info = np.iinfo(self.elem.dtype)
                flat = arr.reshape(-1).tolist()
                if min(flat) < info.min or max(flat) > info.max:
                    raise ValueError(f"{path}: values must be in [{info.min}, {info.max}]")
            return np.asarray(arr.tolist() if arr.dtype == object else arr, dtype=self.elem.dtype)
        if kind == "b":
            if arr.dtype.kind != "b" and arr.size:
                raise TypeError(f"{path} holds rk.bool_ and takes booleans, got {arr.dtype}")
            return arr
        if arr.dtype.kind not in "iuf" and arr.size:
            raise TypeError(f"{path} holds {self.elem!r} and takes numbers, got {arr.dtype}")
        limit = float(np.finfo(self.elem.dtype).max)
        finite = arr[np.isfinite(arr)] if arr.dtype.kind == "f" else arr
        if finite.size and float(np.abs(finite).max()) > limit:
            raise ValueError(f"{path}: values must be within ±{limit:.6g}")
        return arr

    def __repr__(self) -> str:
        return f"rk.array({self.elem!r}, {self.shape if len(self.shape) > 1 else self.shape[0]})"


class Bytes(FieldType):
    """Up to ``capacity`` bytes, stored as a u32 length followed by ``capacity`` bytes."""

    kind = "bytes_"

    def __init__(self, capacity: int):
        self.capacity = capacity
        self.dtype = np.dtype([("length", "<u4"), ("data", "u1", (capacity,))], align=True)

    def c_base(self) -> str:
        return f"rk_bytes_{self.capacity}"

    def canonical(self) -> str:
        return f"{self.kind}({self.capacity})"

    def dependencies(self) -> List[Any]:
        return [self]

    def get(self, data: np.ndarray) -> Any:
        return data["data"][: int(data["length"])].tobytes()

    def encode(self, value: Any, path: str) -> bytes:
        if not isinstance(value, (bytes, bytearray, memoryview)):
            raise TypeError(f"{path} is rk.bytes_({self.capacity}) and takes bytes, got {type(value).__name__}")
        return bytes(value)

    def put(self, value: Any, path: str) -> Any:
        raw = self.encode(value, path)
        if len(raw) > self.capacity:
            raise ValueError(f"{path}: {len(raw)} bytes exceed its capacity of {self.capacity}")
        out = np.zeros((), self.dtype)
        out["length"] = len(raw)
        out["data"][: len(raw)] = np.frombuffer(raw, np.uint8)
        return out

    def c_typedef(self) -> str:
        name = self.c_base()
        return (f"#ifndef RK_DEFINED_{name}\n#define RK_DEFINED_{name}\n"
                f"typedef struct {name} {{\n    rk_u32 length;\n    rk_u8 data[{self.capacity}];\n}} {name};\n"
                f"RK_STATIC_ASSERT(sizeof({name}) == {self.dtype.itemsize}, {name}_size);\n#endif\n")

    def __repr__(self) -> str:
        return f"rk.{self.kind}({self.capacity})"


class String(Bytes):
    """Up to ``capacity`` bytes of UTF-8 text, stored like ``bytes_``."""

    kind = "string"

    def get(self, data: np.ndarray) -> Any:
        return super().get(data).decode("utf-8")

    def encode(self, value: Any, path: str) -> bytes:
        if not isinstance(value, str):
            raise TypeError(f"{path} is rk.string({self.capacity}) and takes str, got {type(value).__name__}")
        try:
            return value.encode("utf-8")
        except UnicodeEncodeError as e:
            raise ValueError(f"{path}: the text cannot be encoded as UTF-8 ({e.reason})") from None

class MessageField(FieldType):
    def __init__(self, cls: Any):
        self.cls, self.dtype = cls, cls.dtype

    def c_base(self) -> str:
        return self.cls.__name__

    def canonical(self) -> str:
        return self.cls.__rk_canonical__

    def dependencies(self) -> List[Any]:
        return [self.cls]

    def get(self, data: np.ndarray) -> Any:
        return self.cls._wrap(data)

    def put(self, value: Any, path: str) -> Any:
        if not isinstance(value, self.cls):
            raise TypeError(f"{path} takes a {self.cls.__name__}, got {type(value).__name__}")
        return value._r

    def __repr__(self) -> str:
        return self.cls.__name__


class EnumField(FieldType):
    """An IntEnum, stored as the smallest integer type that holds all of its values."""

    def __init__(self, enum_cls: type):
        values = [int(m.value) for m in enum_cls]  # type: ignore[attr-defined]
        if not values:
            raise TypeError(f"enum {enum_cls.__name__} has no members")
        lo, hi = min(values), max(values)
        candidates = [u8, u16, u32, u64] if lo >= 0 else [i8, i16, i32, i64]
        for scalar in candidates:
            info = np.iinfo(scalar.dtype)
            if info.min <= lo and hi <= info.max:
                break
        else:
            raise TypeError(f"enum {enum_cls.__name__} has values outside every 64-bit integer type")
        self.enum_cls, self.storage, self.dtype = enum_cls, scalar, scalar.dtype

    def c_base(self) -> str:
        return self.storage.c_base()

    def get(self, data: np.ndarray) -> Any:
        return self.enum_cls(data.item())

    def put(self, value: Any, path: str) -> Any:
        if isinstance(value, self.enum_cls):
            return int(value)  # type: ignore[call-overload]  # an IntEnum member
        if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
            raise TypeError(f"{path} takes a {self.enum_cls.__name__}, got {type(value).__name__}")
        self.check_members(np.asarray(value), path)
        return int(value)

    def stored_values(self) -> List[int]:
        """Member values as the C++ plan compares them: two's-complement int64 bit patterns."""
        return sorted(v - (1 << 64) if v >= 1 << 63 else v
                      for v in (int(m.value) for m in self.enum_cls))  # type: ignore[attr-defined]

    def check_members(self, data: Any, path: str) -> None:
        valid = {int(m.value) for m in self.enum_cls}  # type: ignore[attr-defined]
        for value in np.asarray(data, dtype=object).reshape(-1).tolist():
            if int(value) not in valid:
                raise ValueError(f"{path}: {int(value)} is not a member of {self.enum_cls.__name__} "
                                 f"(valid: {', '.join(map(str, sorted(valid)))})")

    def canonical(self) -> str:
        members = ",".join(f"{m.name}={int(m.value)}" for m in self.enum_cls)  # type: ignore[attr-defined]
        return f"enum {self.enum_cls.__name__}:{self.storage.name}{{{members}}}"

    def __repr__(self) -> str:
        return self.enum_cls.__name__


def _shape(shape: Union[int, Tuple[int, ...]]) -> Tuple[int, ...]:
    dims = (shape,) if isinstance(shape, (int, np.integer)) and not isinstance(shape, bool) else shape
    if not isinstance(dims, tuple) or not dims:
        raise TypeError(f"array shape must be a positive int or a non-empty tuple of them, got {shape!r}")
    for n in dims:
        if not isinstance(n, (int, np.integer)) or isinstance(n, bool):
            raise TypeError(f"array shape must hold ints, got {shape!r}")
        if n < 1:
            raise TypeError(f"array dimensions must be >= 1 (zero-length arrays have no C layout), got {shape!r}")
    return tuple(int(n) for n in dims)


def array(elem: Any, shape: Union[int, Tuple[int, ...]]) -> Array:
    """A fixed array field: ``rk.array(rk.f32, 32)`` or ``rk.array(rk.f32, (3, 4))``."""
    dims = _shape(shape)
    element = _field_type(elem, owner=None, field="array element")
    if isinstance(element, Array):  # rk.array(rk.array(T, 4), 3) is T[3][4]
        return Array(element.elem, dims + element.shape)
    return Array(element, dims)


def _capacity(n: Any, what: str) -> int:
    if not isinstance(n, (int, np.integer)) or isinstance(n, bool):
        raise TypeError(f"{what} capacity must be an int, got {type(n).__name__}")
    if not 1 <= n <= 65536:
        raise TypeError(f"{what} capacity must be in [1, 65536] bytes, got {n}")
    return int(n)


def bytes_(capacity: int) -> Bytes:
    """Up to ``capacity`` bytes (a u32 length and ``capacity`` bytes of storage)."""
    return Bytes(_capacity(capacity, "bytes_"))


def string(capacity: int) -> String:
    """Up to ``capacity`` bytes of UTF-8 text (a u32 length and ``capacity`` bytes of storage)."""
    return String(_capacity(capacity, "string"))


def is_message(obj: Any) -> bool:
    """True for a class made by ``@rk.message``."""
    return isinstance(obj, type) and "__rk_canonical__" in obj.__dict__


_UNSUPPORTED_HINT = {
    int: "rk.i64 (or another fixed-width integer)",
    float: "rk.f64 or rk.f32",
    bool: "rk.bool_",
    str: "rk.string(N)",
    bytes: "rk.bytes_(N)",
}


def _field_type(annotation: Any, owner: Optional[type], field: str) -> FieldType:
    if isinstance(annotation, FieldType):
        return annotation
    if owner is not None and annotation is owner:
        raise TypeError(f"{owner.__name__}.{field} refers to {owner.__name__} itself: recursive message "
                        "types have no fixed size")
    if is_message(annotation):
        return MessageField(annotation)
    if isinstance(annotation, type) and issubclass(annotation, enum.IntEnum):
        return EnumField(annotation)
    where = f"{owner.__name__}.{field}" if owner is not None else field
    hint = _UNSUPPORTED_HINT.get(annotation) if isinstance(annotation, type) else None
    raise TypeError(f"{where}: unsupported annotation {annotation!r}"
                    + (f"; use {hint}" if hint else "; use rk.u8 … rk.f64, rk.bool_, rk.array, rk.bytes_, "
                       "rk.string, an IntEnum or another message type"))


# Names a field cannot take: they would not compile in one of the C dialects, or they would shadow
# the message type's own API.
_C_RESERVED = set("""
auto break case char const continue default do double else enum extern float for goto if inline int
long register restrict return short signed sizeof static struct switch typedef union unsigned void
volatile while bool true false class namespace template this new delete operator private protected
public virtual friend using typename explicit mutable asm
kernel __kernel global __global local __local constant __constant private __private generic
read_only write_only read_write half uchar ushort uint ulong
device threadgroup thread vertex fragment
throw catch try export nullptr static_assert alignof alignas typeid constexpr consteval constinit decltype
noexcept wchar_t char8_t char16_t char32_t and and_eq bitand bitor compl not not_eq or or_eq xor xor_eq
requires concept co_await co_return co_yield static_cast dynamic_cast reinterpret_cast const_cast
thread_local module import final override
vec_step image1d_t image2d_t image3d_t sampler_t event_t size_t ptrdiff_t intptr_t uintptr_t
NULL EOF INFINITY NAN MAXFLOAT HUGE_VALF HUGE_VAL linux unix errno assert offsetof
""".split())
_API_NAMES = {"dtype", "itemsize", "type_id", "fields", "c_declaration", "to_bytes", "from_bytes", "zeros",
              "validate", "to_records", "from_records"}
_C_IDENTIFIER = re.compile(r"^[A-Za-z][A-Za-z0-9_]*$")


def _reserved(name: str) -> bool:
    return (keyword.iskeyword(name) or name in _C_RESERVED or name.startswith(("rk_", "RK_", "__"))
            or re.fullmatch(r"(u?int|float|double|half|char|short|long|uchar|ushort|uint|ulong|bool)\d*(_t)?", name)
            is not None or re.fullmatch(r"[A-Z0-9_]+_(MAX|MIN|C)", name) is not None)


def _check_type_name(name: str) -> None:
    if not _C_IDENTIFIER.match(name) or _reserved(name):
        raise TypeError(f"message type name '{name}' is not usable as a C type name in C, C++, OpenCL C or MSL "
                        "(reserved, a built-in type, or not an identifier); rename the class")


def _check_name(cls_name: str, name: str) -> None:
    if not _C_IDENTIFIER.match(name):
        raise TypeError(f"{cls_name}.{name}: field names must be C identifiers starting with a letter")
    if _reserved(name):
        raise TypeError(f"{cls_name}.{name}: '{name}' is reserved in C, C++, OpenCL C or MSL; choose another name")
    if name in _API_NAMES:
        raise TypeError(f"{cls_name}.{name}: '{name}' collides with the message type's own attribute of that name")


def _resolve(annotation: Any, cls: type, scope: Optional[Dict[str, Any]] = None) -> Any:
    if not isinstance(annotation, str):
        return annotation
    namespace = dict(vars(sys.modules[cls.__module__])) if cls.__module__ in sys.modules else {}
    namespace.update(scope or {})
    namespace.setdefault(cls.__name__, cls)
    try:
        return eval(annotation, namespace)  # noqa: S307 - the class author's own annotation
    except Exception as e:
        raise TypeError(f"{cls.__name__}: cannot resolve annotation {annotation!r}: {e}") from None


def _derive_type_id(canonical: str) -> int:
    digest = hashlib.blake2b(canonical.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") % 0xFFFF + 1  # 1..65535; 0 means "untyped"


def _check_nesting(value: Any, shape: Tuple[int, ...], path: str) -> None:
    """A nested sequence of exactly `shape` (lists or tuples; not str, bytes or dicts)."""
    if isinstance(value, (str, bytes, bytearray, dict)) or not hasattr(value, "__len__"):
        raise ValueError(f"{path} takes a sequence of {shape[0]}, got {type(value).__name__}")
    if len(value) != shape[0]:
        raise ValueError(f"{path} has shape {shape}; got {len(value)} items where {shape[0]} belong")
    if len(shape) > 1:
        for i, item in enumerate(value):
            _check_nesting(item, shape[1:], f"{path}[{i}]")


def _nested_list(data: np.ndarray, get: Any) -> Any:
    if data.ndim == 0:
        return get(data)
    return [_nested_list(data[i], get) for i in range(data.shape[0])]


def _padding_mask(dtype: np.dtype) -> np.ndarray:
    """True for each byte of dtype that no field covers (struct padding, at any depth)."""
    covered = np.zeros(dtype.itemsize, bool)

    def mark(dt: np.dtype, base: int) -> None:
        if dt.subdtype is not None:
            elem, shape = dt.subdtype
            for k in range(int(np.prod(shape))):
                mark(elem, base + k * elem.itemsize)
        elif dt.names:
            for name in dt.names:
                sub, off = dt.fields[name][:2]  # type: ignore[index]  # dt.names implies fields
                mark(sub, base + off)
        else:
            covered[base: base + dt.itemsize] = True

    mark(dtype, 0)
    return ~covered


def _plan(cls: Any, base: int, prefix: str, checks: List[tuple], tails: List[Tuple[int, int]]) -> None:
    """Byte-level validation steps and bytes_/string fields of cls laid out at `base`, flattened
    through nested messages and arrays, for the one-message path (from_bytes, received objects)."""
    for name, ft in cls.fields.items():
        off = base + cls.__rk_offsets__[name]
        path = f"{prefix}.{name}"
        elem: FieldType = ft
        count = 1
        shape: Tuple[int, ...] = ()
        if isinstance(ft, Array):
            elem, shape = ft.elem, ft.shape
            count = int(np.prod(shape))
        size = elem.dtype.itemsize
        if isinstance(elem, Scalar) and elem.dtype.kind == "b":
            checks.append(("bool", off, count, path + ("[]" if shape else "")))
        elif isinstance(elem, EnumField):
            checks.append(("enum", off, count, size, elem.dtype.kind == "i", elem.stored_values(), elem.enum_cls.__name__,
                           path + ("[]" if shape else "")))
        elif isinstance(elem, (Bytes, MessageField)):
            for k in range(count):
                at = off + k * size
                where = path + (f"[{k}]" if shape else "")
                if isinstance(elem, Bytes):
                    checks.append(("len", at, elem.capacity, where))
                    if isinstance(elem, String):
                        checks.append(("utf8", at, elem.capacity, where))
                    tails.append((at, elem.capacity))
                else:
                    _plan(elem.cls, at, where, checks, tails)


def _ranges(mask: np.ndarray) -> List[Tuple[int, int]]:
    idx = np.flatnonzero(mask)
    if idx.size == 0:
        return []
    breaks = np.flatnonzero(np.diff(idx) > 1)
    starts = np.concatenate(([idx[0]], idx[breaks + 1]))
    ends = np.concatenate((idx[breaks], [idx[-1]])) + 1
    return [(int(a), int(b)) for a, b in zip(starts, ends)]


class _MessageMethods:
    """The Python-level behaviour @rk.message gives every message class (copied onto it). Construction,
    field access, comparison, to_bytes() and the buffer protocol are native (_core.Record and the field
    plan registered at decoration, see csrc/python/codec.hpp)."""

    # Set on each message class by _build (declared here for type checkers).
    dtype: ClassVar[np.dtype]
    itemsize: ClassVar[int]
    type_id: ClassVar[int]
    fields: ClassVar[Dict[str, FieldType]]
    __rk_plan__: ClassVar[MessagePlan]
    __rk_prototype__: ClassVar[bytes]
    _r: np.ndarray  # a writable 0-d record view of the message's own bytes (native)

    def __repr__(self) -> str:
        cls = type(self)
        return f"{cls.__name__}(" + ", ".join(f"{n}={getattr(self, n)!r}" for n in cls.fields) + ")"

    def __reduce__(self) -> Any:
        return (type(self).from_bytes, (self.to_bytes(),))  # type: ignore[attr-defined]

    @classmethod
    def from_bytes(cls, data: Any) -> Any:
        """Parse and validate one record; MessageFormatError names the field and the reason."""
        try:
            view = memoryview(data).cast("B")
        except TypeError:
            raise TypeError(f"{cls.__name__}.from_bytes() takes a bytes-like object, got {type(data).__name__}") from None
        return record_wrap(cls, view)  # size, fields (C++), then a canonical copy

    @classmethod
    def validate(cls, records: np.ndarray) -> None:
        """Check records of this type (one or an array) as from_bytes does, in C++. Raises
        MessageFormatError naming the field (and the record, for more than one)."""
        if not isinstance(records, np.ndarray) or records.dtype != cls.dtype:
            raise TypeError(f"{cls.__name__}.validate() takes records of {cls.__name__}.dtype")
        cls.__rk_plan__.validate(np.ascontiguousarray(records))

    @classmethod
    def zeros(cls, n: int) -> np.ndarray:
        """n zeroed records: the batch form of this message type."""
        return np.zeros(n, cls.dtype)

    @classmethod
    def to_records(cls, messages: Iterable[Any]) -> np.ndarray:
        """Message objects to an array of records (one copy per message, in C++)."""
        return records_from_messages(cls, list(messages))

    @classmethod
    def from_records(cls, records: np.ndarray) -> List[Any]:
        """An array of records to message objects, validated and canonicalised (in C++)."""
        if not isinstance(records, np.ndarray) or records.dtype != cls.dtype:
            raise TypeError(f"{cls.__name__}.from_records() takes records of {cls.__name__}.dtype")
        return messages_from_records(cls, records)  # one validation of the whole array, then the objects

    @classmethod
    def _from_canonical(cls, buffer: Any) -> Any:
        return record_from_canonical(cls, buffer)

    @classmethod
    def _wrap(cls, record: Any) -> Any:
        """An object over a record from a queue or a nested field: validated (a device or another
        writer may have produced it) and canonicalised."""
        return record_wrap(cls, np.ascontiguousarray(record))


def _codec_field(name: str, ft: FieldType, offset: int) -> tuple:
    """How the native codec handles one field (csrc/python/codec.cpp)."""
    if isinstance(ft, Scalar):
        return (name, ft.dtype.kind, offset, ft.dtype.itemsize, ft.name)
    if isinstance(ft, EnumField):
        members = {int(m.value): m for m in ft.enum_cls}  # type: ignore[attr-defined]
        valid = ", ".join(map(str, sorted(members)))
        return (name, "enum", offset, ft.dtype.itemsize, (ft.enum_cls, members, valid, ft.dtype.kind == "i"))
    return (name, "py", offset, ft.dtype.itemsize, (ft, ft.dtype))


def _build(target: Any, type_id: Optional[int], scope: Optional[Dict[str, Any]] = None) -> Any:
    if not isinstance(target, type):
        raise TypeError(f"@rk.message decorates a class, got {target!r}")
    cls: Any = target
    for base in cls.__mro__[1:]:
        if is_message(base):
            raise TypeError(f"{cls.__name__} derives from message type {base.__name__}; message types do not "
                            "inherit, nest one in the other instead")
    if cls.__bases__ != (object,) or type(cls) is not type:
        raise TypeError(f"{cls.__name__}: a message type is a plain class (no base classes, no metaclass); its "
                        "records are held natively by ringkernel._core.Record")
    raw = cls.__dict__.get("__annotations__", {})
    if not raw:
        raise TypeError(f"{cls.__name__} has no annotated fields; a message needs at least one")
    _check_type_name(cls.__name__)
    fields: Dict[str, FieldType] = {}
    for name, annotation in raw.items():
        _check_name(cls.__name__, name)
        fields[name] = _field_type(_resolve(annotation, cls, scope), owner=cls, field=name)
        if name == fields[name].c_base():
            raise TypeError(f"{cls.__name__}.{name}: a field cannot share its name with its type {name} "
                            "(C++ rejects it); rename the field")
    # `qty: rk.i32 = 5` gives a default; the class attribute would otherwise shadow the field.
    defaults: Dict[str, Any] = {}
    for name in fields:
        if name in cls.__dict__:
            defaults[name] = fields[name].put(cls.__dict__[name], f"{cls.__name__}.{name} default")
            delattr(cls, name)
    dtype = np.dtype([(name, ft.dtype) for name, ft in fields.items()], align=True)
    offsets = {name: dtype.fields[name][1] for name in fields}  # type: ignore[index]  # a struct dtype
    canonical = (f"{cls.__name__}{{" + ";".join(f"{n}:{ft.canonical()}@{offsets[n]}" for n, ft in fields.items())
                 + f"}}#{dtype.itemsize}")
    if type_id is None:
        tid = _derive_type_id(canonical)
    elif not isinstance(type_id, int) or isinstance(type_id, bool):
        raise TypeError(f"type_id must be an int in [1, 65535], got {type(type_id).__name__}")
    elif not 1 <= type_id <= 0xFFFF:
        raise ValueError(f"type_id must be in [1, 65535] (0 means untyped), got {type_id}")
    else:
        tid = type_id

    # The message class proper: the class body's own attributes on a native record type.
    namespace = {k: v for k, v in cls.__dict__.items() if k not in ("__dict__", "__weakref__")}
    namespace["__slots__"] = ()
    cls = type(cls.__name__, (Record,), namespace)
    cls.dtype = dtype
    cls.itemsize = dtype.itemsize
    cls.type_id = tid
    cls.fields = dict(fields)
    cls.__rk_canonical__ = canonical
    cls.__rk_offsets__ = offsets
    # The record a constructor starts from: nested types' own defaults, an enum's first member where
    # 0 is not a member, then this class's defaults.
    prototype = np.zeros((), dtype)
    for name, ft in fields.items():
        elem = ft.elem if isinstance(ft, Array) else ft
        if isinstance(elem, MessageField):
            prototype[name] = np.ndarray((), elem.cls.dtype, bytearray(elem.cls.__rk_prototype__))
        elif isinstance(elem, EnumField) and 0 not in {int(m.value) for m in elem.enum_cls}:  # type: ignore[attr-defined]
            prototype[name] = int(next(iter(elem.enum_cls)).value)  # type: ignore[call-overload]
    for name, value in defaults.items():
        prototype[name] = value
    cls.__rk_prototype__ = prototype.tobytes()  # zeroed padding; numpy's structured copy would not keep it
    cls.__rk_padding__ = _padding_mask(dtype)
    cls.__rk_zero__ = _ranges(cls.__rk_padding__)
    checks: List[tuple] = []
    tails: List[Tuple[int, int]] = []
    _plan(cls, 0, cls.__name__, checks, tails)
    cls.__rk_plan__ = MessagePlan(dtype.itemsize, checks, cls.__rk_zero__, tails)
    cls.c_declaration = classmethod(lambda c: c_header(c, guard=None))
    for name, member in vars(_MessageMethods).items():
        if not name.startswith("__") or name in ("__repr__", "__reduce__"):
            setattr(cls, name, member)
    register_message_codec(cls, cls.__rk_plan__, cls.__rk_prototype__, dtype, tid,
                           [_codec_field(name, ft, offsets[name]) for name, ft in fields.items()])
    return cls


def message(cls: Optional[type] = None, *, type_id: Optional[int] = None) -> Any:
    """Declare a message type: ``@rk.message`` or ``@rk.message(type_id=...)``.

    Returns a new class of the same name (its records live in native memory, see ``_core.Record``) with
    the class body's methods and attributes. String annotations (``from __future__ import annotations``)
    are resolved in the defining scope: the module's globals, then the locals of the frame that applies
    the decorator (names imported inside a function work)."""
    frame = sys._getframe(1)
    scope = {**frame.f_globals, **frame.f_locals}
    del frame
    if cls is None:
        return lambda c: _build(c, type_id, scope)
    return _build(cls, type_id, scope)


# ---- C declarations -------------------------------------------------------------------------------


def _prelude() -> str:
    """rk_types.h as shipped in the package (or, in a source checkout, from csrc/include)."""
    packaged = resources.files("ringkernel").joinpath("include/ringkernel/rk_types.h")
    if packaged.is_file():
        return packaged.read_text()
    source = Path(__file__).resolve().parents[2] / "csrc" / "include" / "ringkernel" / "rk_types.h"
    return source.read_text()


def _struct(cls: Any) -> str:
    name = cls.__name__
    lines = [f"#ifndef RK_DEFINED_{name}", f"#define RK_DEFINED_{name}"]
    if any(_uses_f64(ft) for ft in cls.fields.values()):
        lines += ["#if !defined(RK_HAS_F64)",
                  f'#error "{name} has 64-bit float fields, which this target does not support (MSL, OpenCL without fp64)"',
                  "#endif"]
    lines.append(f"typedef struct {name} {{")
    lines += [f"    {ft.c_base()} {field}{ft.c_dims()};" for field, ft in cls.fields.items()]
    lines.append(f"}} {name};")
    lines.append(f"RK_STATIC_ASSERT(sizeof({name}) == {cls.itemsize}, {name}_size);")
    lines += [f"RK_STATIC_ASSERT(RK_OFFSETOF({name}, {field}) == {off}, {name}_{field}_offset);"
              for field, off in cls.__rk_offsets__.items()]
    lines.append(f"#define {name.upper()}_TYPE_ID {cls.type_id}u")
    lines.append("#endif")
    return "\n".join(lines) + "\n"


def _uses_f64(ft: FieldType) -> bool:
    if isinstance(ft, Array):
        return _uses_f64(ft.elem)
    return ft is f64


def _ordered(types: Iterable[type]) -> List[Any]:
    """Every declaration the types need, dependencies first, each once."""
    out: List[Any] = []
    seen: Dict[str, Any] = {}

    def visit(item: Any) -> None:
        key = item.c_base() if isinstance(item, Bytes) else item.__name__
        if key in seen:
            if is_message(item) and seen[key] is not item:
                raise TypeError(f"two different message types are named {key}; C needs unique names")
            return
        if is_message(item):
            for ft in item.fields.values():
                for dep in ft.dependencies():
                    visit(dep)
        seen[key] = item
        out.append(item)

    for t in types:
        if not is_message(t):
            raise TypeError(f"c_header() takes message types, got {t!r}")
        visit(t)
    macros: Dict[str, str] = {}
    for item in out:
        if is_message(item):
            other = macros.setdefault(item.__name__.upper(), item.__name__)
            if other != item.__name__:
                raise TypeError(f"message types {other} and {item.__name__} would both define "
                                f"{item.__name__.upper()}_TYPE_ID; rename one")
    return out


def c_header(*types: type, guard: Optional[str] = "RINGKERNEL_MESSAGES_H") -> str:
    """One C header declaring the message types (and everything they nest), with static checks.

    Valid C, C++, CUDA, OpenCL C and MSL; it carries its own copy of rk_types.h.
    """
    body = "".join(item.c_typedef() if isinstance(item, Bytes) else _struct(item) for item in _ordered(types))
    head = "/* Generated by ringkernel.messages; do not edit. */\n"
    if guard is None:
        return head + _prelude() + "\n" + body
    return f"{head}#ifndef {guard}\n#define {guard}\n\n{_prelude()}\n{body}\n#endif /* {guard} */\n"


def write_header(path: Union[str, Path], *types: type, guard: str = "RINGKERNEL_MESSAGES_H") -> Path:
    """Write ``c_header(*types)`` to ``path`` (for handlers and C++ embedders); returns the path."""
    target = Path(path)
    target.write_text(c_header(*types, guard=guard))
    return target
