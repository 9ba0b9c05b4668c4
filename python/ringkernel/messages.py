"""Message types: a fixed layout declared once in Python, shared with C, C++, CUDA, OpenCL C and MSL.

``@rk.message`` turns a class with annotated fields into a message type: a numpy ``dtype`` laid out
by the C alignment rules (what a C compiler does with the same struct), a stable ``type_id``, and a
C declaration (``c_declaration()``, ``c_header()``, ``write_header()``) that every device compiler
turns into the identical layout, checked there by static asserts on size and offsets.

This module is the declaration layer; values (construction, ``to_bytes``/``from_bytes``) and
queues carrying message objects build on it.
"""

from __future__ import annotations

import enum
import hashlib
import keyword
import re
import sys
from importlib import resources
from pathlib import Path
from typing import Any, Dict, Iterable, List, Optional, Tuple, Union

import numpy as np

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


class Scalar(FieldType):
    def __init__(self, name: str, np_code: str, c_name: str):
        self.name, self.dtype, self._c = name, np.dtype(np_code), c_name

    def c_base(self) -> str:
        return self._c

    def canonical(self) -> str:
        return self.name

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


class MessageField(FieldType):
    def __init__(self, cls: type):
        self.cls, self.dtype = cls, cls.dtype

    def c_base(self) -> str:
        return self.cls.__name__

    def canonical(self) -> str:
        return self.cls.__rk_canonical__

    def dependencies(self) -> List[Any]:
        return [self.cls]

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
""".split())
_API_NAMES = {"dtype", "itemsize", "type_id", "fields", "c_declaration", "to_bytes", "from_bytes", "zeros"}
_C_IDENTIFIER = re.compile(r"^[A-Za-z][A-Za-z0-9_]*$")


def _check_name(cls_name: str, name: str) -> None:
    if not _C_IDENTIFIER.match(name):
        raise TypeError(f"{cls_name}.{name}: field names must be C identifiers starting with a letter")
    if keyword.iskeyword(name) or name in _C_RESERVED or name.startswith("rk_") or name.startswith("__"):
        raise TypeError(f"{cls_name}.{name}: '{name}' is reserved in C, C++, OpenCL C or MSL; choose another name")
    if name in _API_NAMES:
        raise TypeError(f"{cls_name}.{name}: '{name}' collides with the message type's own attribute of that name")


def _resolve(annotation: Any, cls: type) -> Any:
    if not isinstance(annotation, str):
        return annotation
    namespace = dict(vars(sys.modules[cls.__module__])) if cls.__module__ in sys.modules else {}
    namespace.setdefault(cls.__name__, cls)
    try:
        return eval(annotation, namespace)  # noqa: S307 - the class author's own annotation
    except Exception as e:
        raise TypeError(f"{cls.__name__}: cannot resolve annotation {annotation!r}: {e}") from None


def _derive_type_id(canonical: str) -> int:
    digest = hashlib.blake2b(canonical.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") % 0xFFFF + 1  # 1..65535; 0 means "untyped"


def _build(cls: type, type_id: Optional[int]) -> type:
    if not isinstance(cls, type):
        raise TypeError(f"@rk.message decorates a class, got {cls!r}")
    for base in cls.__mro__[1:]:
        if is_message(base):
            raise TypeError(f"{cls.__name__} derives from message type {base.__name__}; message types do not "
                            "inherit, nest one in the other instead")
    raw = cls.__dict__.get("__annotations__", {})
    if not raw:
        raise TypeError(f"{cls.__name__} has no annotated fields; a message needs at least one")
    fields: Dict[str, FieldType] = {}
    for name, annotation in raw.items():
        _check_name(cls.__name__, name)
        fields[name] = _field_type(_resolve(annotation, cls), owner=cls, field=name)
    dtype = np.dtype([(name, ft.dtype) for name, ft in fields.items()], align=True)
    offsets = {name: dtype.fields[name][1] for name in fields}
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

    cls.dtype = dtype
    cls.itemsize = dtype.itemsize
    cls.type_id = tid
    cls.fields = dict(fields)
    cls.__rk_canonical__ = canonical
    cls.__rk_offsets__ = offsets
    cls.c_declaration = classmethod(lambda c: c_header(c, guard=None))  # type: ignore[assignment]
    return cls


def message(cls: Optional[type] = None, *, type_id: Optional[int] = None) -> Any:
    """Declare a message type: ``@rk.message`` or ``@rk.message(type_id=...)``."""
    if cls is None:
        return lambda c: _build(c, type_id)
    return _build(cls, type_id)


# ---- C declarations -------------------------------------------------------------------------------


def _prelude() -> str:
    """rk_types.h as shipped in the package (or, in a source checkout, from csrc/include)."""
    packaged = resources.files("ringkernel").joinpath("include/ringkernel/rk_types.h")
    if packaged.is_file():
        return packaged.read_text()
    source = Path(__file__).resolve().parents[2] / "csrc" / "include" / "ringkernel" / "rk_types.h"
    return source.read_text()


def _struct(cls: type) -> str:
    name = cls.__name__
    lines = [f"#ifndef RK_DEFINED_{name}", f"#define RK_DEFINED_{name}"]
    if any(_uses_f64(ft) for ft in cls.fields.values()):
        lines += ["#if defined(__METAL_VERSION__)",
                  f'#error "{name} has 64-bit float fields, which MSL does not support"', "#endif"]
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
