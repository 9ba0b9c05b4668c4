// codec.cpp — the native message codec (see codec.hpp).
#include "codec.hpp"

#include <cmath>
#include <cstring>
#include <limits>
#include <string>
#include <unordered_map>
#include <vector>

#include "numpy_api.hpp"
#include "ringkernel/errors.hpp"

namespace py = pybind11;

namespace rkpy {

namespace {

enum class Kind : std::uint8_t { Unsigned, Signed, Float, Bool, Enum, Python };

struct FieldCodec {
    std::string name;
    std::string path;        // "Type.field", as error messages name it
    std::string type_name;   // "u8" … "f64", "bool_": the rk.<name> of a scalar
    Kind kind = Kind::Python;
    std::uint32_t offset = 0, size = 0;
    // Enum: the class, its members by value, their values for error messages.
    py::object enum_cls, members;
    std::string valid_text;
    bool is_signed = false;
    // Python: the FieldType (get/put) and the field's dtype.
    py::object ftype, dtype;
};

}  // namespace

struct Codec {
    PyTypeObject *cls = nullptr;  // not owned: the class owns the codec (through its __rk_codec__ capsule)
    std::string name;
    std::uint32_t itemsize = 0;
    std::uint16_t type_id = 0;
    std::string prototype;        // the bytes a new message starts from
    py::object plan_obj;          // the MessagePlan (owns `plan`)
    const rk::MessagePlan *plan = nullptr;
    py::object dtype;
    py::dict index;               // field name → position
    std::vector<FieldCodec> fields;
    std::string field_list;       // "a, b, c"
};

namespace {

std::unordered_map<const PyObject *, const Codec *> &codecs() {
    static auto *m = new std::unordered_map<const PyObject *, const Codec *>();  // outlives the interpreter
    return *m;
}

PyTypeObject *record_type = nullptr;
PyTypeObject *field_type = nullptr;
PyObject *message_format_error = nullptr;  // ringkernel._core.MessageFormatError

constexpr Py_ssize_t kAlign = 16;

std::size_t data_offset(PyTypeObject *t) noexcept {
    return static_cast<std::size_t>((t->tp_basicsize + kAlign - 1) / kAlign * kAlign);
}

std::uint8_t *data_of(PyObject *o) noexcept { return reinterpret_cast<std::uint8_t *>(o) + data_offset(Py_TYPE(o)); }

std::string type_name_of(PyObject *o) { return Py_TYPE(o)->tp_name; }

std::string str_of(PyObject *o) {
    PyObject *s = PyObject_Str(o);
    if (!s) {
        PyErr_Clear();
        return "?";
    }
    const char *c = PyUnicode_AsUTF8(s);
    std::string out = c ? c : "?";
    if (!c) PyErr_Clear();
    Py_DECREF(s);
    return out;
}

[[noreturn]] void raise(PyObject *type, const std::string &msg) {
    PyErr_SetString(type, msg.c_str());
    throw py::error_already_set();
}

PyObject *alloc_record(const Codec &c) {
    // Zeroed by tp_alloc; room to align the record after the header.
    PyObject *o = c.cls->tp_alloc(c.cls, static_cast<Py_ssize_t>(c.itemsize) + kAlign);
    if (!o) throw py::error_already_set();
    return o;
}

bool is_bool(PyObject *v) { return PyBool_Check(v) || PyArray_IsScalar(v, Bool); }
bool is_integer(PyObject *v) { return PyLong_Check(v) || PyArray_IsScalar(v, Integer); }

template <typename T>
void store(std::uint8_t *p, T v) noexcept {
    std::memcpy(p, &v, sizeof v);
}
template <typename T>
T load(const std::uint8_t *p) noexcept {
    T v;
    std::memcpy(&v, p, sizeof v);
    return v;
}

void store_int(std::uint8_t *p, std::uint32_t size, std::uint64_t bits) noexcept {
    switch (size) {
    case 1: store<std::uint8_t>(p, static_cast<std::uint8_t>(bits)); break;
    case 2: store<std::uint16_t>(p, static_cast<std::uint16_t>(bits)); break;
    case 4: store<std::uint32_t>(p, static_cast<std::uint32_t>(bits)); break;
    default: store<std::uint64_t>(p, bits); break;
    }
}

std::uint64_t load_unsigned(const std::uint8_t *p, std::uint32_t size) noexcept {
    switch (size) {
    case 1: return load<std::uint8_t>(p);
    case 2: return load<std::uint16_t>(p);
    case 4: return load<std::uint32_t>(p);
    default: return load<std::uint64_t>(p);
    }
}

std::int64_t load_signed(const std::uint8_t *p, std::uint32_t size) noexcept {
    switch (size) {
    case 1: return load<std::int8_t>(p);
    case 2: return load<std::int16_t>(p);
    case 4: return load<std::int32_t>(p);
    default: return load<std::int64_t>(p);
    }
}

std::string range_text(const FieldCodec &f) {
    const unsigned bits = f.size * 8;
    if (f.kind == Kind::Unsigned) {
        const std::uint64_t hi = bits == 64 ? ~0ull : (1ull << bits) - 1;
        return "[0, " + std::to_string(hi) + "]";
    }
    const std::int64_t hi = bits == 64 ? std::numeric_limits<std::int64_t>::max() : (1ll << (bits - 1)) - 1;
    return "[" + std::to_string(-hi - 1) + ", " + std::to_string(hi) + "]";
}

// A numpy view (of `dtype`) of the bytes at `offset` of the record in `owner`, which it keeps alive.
py::object record_view(const py::object &dtype, std::uint32_t offset, PyObject *owner) {
    PyArray_Descr *d = reinterpret_cast<PyArray_Descr *>(dtype.ptr());
    Py_INCREF(d);
    PyObject *arr = PyArray_NewFromDescr(&PyArray_Type, d, 0, nullptr, nullptr, data_of(owner) + offset,
                                         NPY_ARRAY_CARRAY, nullptr);
    if (!arr) throw py::error_already_set();
    Py_INCREF(owner);
    if (PyArray_SetBaseObject(reinterpret_cast<PyArrayObject *>(arr), owner) != 0) {
        Py_DECREF(arr);
        throw py::error_already_set();
    }
    return py::reinterpret_steal<py::object>(arr);
}

void set_integer(const FieldCodec &f, std::uint8_t *p, PyObject *v) {
    py::object iv = py::reinterpret_steal<py::object>(PyNumber_Index(v));
    if (!iv) throw py::error_already_set();
    if (f.kind == Kind::Unsigned) {
        const unsigned long long x = PyLong_AsUnsignedLongLong(iv.ptr());
        const bool bad = (x == static_cast<unsigned long long>(-1) && PyErr_Occurred()) ||
                         (f.size < 8 && x > (1ull << (f.size * 8)) - 1);
        if (bad) {
            PyErr_Clear();
            raise(PyExc_ValueError, f.path + " is rk." + f.type_name + ": " + str_of(v) + " is outside " + range_text(f));
        }
        store_int(p, f.size, x);
        return;
    }
    int overflow = 0;
    const long long x = PyLong_AsLongLongAndOverflow(iv.ptr(), &overflow);
    if (x == -1 && PyErr_Occurred()) throw py::error_already_set();
    const long long hi = f.size == 8 ? std::numeric_limits<long long>::max() : (1ll << (f.size * 8 - 1)) - 1;
    if (overflow != 0 || x > hi || x < -hi - 1)
        raise(PyExc_ValueError, f.path + " is rk." + f.type_name + ": " + str_of(v) + " is outside " + range_text(f));
    store_int(p, f.size, static_cast<std::uint64_t>(x));
}

void set_field(const FieldCodec &f, PyObject *self, PyObject *v) {
    std::uint8_t *p = data_of(self) + f.offset;
    switch (f.kind) {
    case Kind::Unsigned:
    case Kind::Signed:
        if (is_bool(v) || !is_integer(v))
            raise(PyExc_TypeError, f.path + " is rk." + f.type_name + " and takes an int, got " + type_name_of(v));
        set_integer(f, p, v);
        return;
    case Kind::Float: {
        if (is_bool(v) || !(PyFloat_Check(v) || is_integer(v) || PyArray_IsScalar(v, Floating)))
            raise(PyExc_TypeError, f.path + " is rk." + f.type_name + " and takes a number, got " + type_name_of(v));
        const double limit = f.size == 4 ? static_cast<double>(std::numeric_limits<float>::max())
                                         : std::numeric_limits<double>::max();
        auto out_of_range = [&] {
            char lim[32];
            std::snprintf(lim, sizeof lim, "%.6g", limit);
            raise(PyExc_ValueError, f.path + " is rk." + f.type_name + ": " + str_of(v) + " is outside its range (±" + lim + ")");
        };
        const double d = PyFloat_Check(v) ? PyFloat_AS_DOUBLE(v) : PyFloat_AsDouble(v);
        if (d == -1.0 && PyErr_Occurred()) {
            if (!PyErr_ExceptionMatches(PyExc_OverflowError)) throw py::error_already_set();
            PyErr_Clear();
            out_of_range();
        }
        if (std::isfinite(d) && std::fabs(d) > limit) out_of_range();
        if (f.size == 4) store<float>(p, static_cast<float>(d));
        else store<double>(p, d);
        return;
    }
    case Kind::Bool: {
        if (!is_bool(v))
            raise(PyExc_TypeError, f.path + " is rk.bool_ and takes True or False, got " + type_name_of(v));
        const int t = PyObject_IsTrue(v);
        if (t < 0) throw py::error_already_set();
        *p = static_cast<std::uint8_t>(t);
        return;
    }
    case Kind::Enum: {
        // An exact type check: enum classes do not override isinstance (and EnumType's lookup is slow).
        const bool member = PyObject_TypeCheck(v, reinterpret_cast<PyTypeObject *>(f.enum_cls.ptr()));
        if (!member && (is_bool(v) || !is_integer(v)))
            raise(PyExc_TypeError, f.path + " takes a " + str_of(f.enum_cls.attr("__name__").ptr()) + ", got " + type_name_of(v));
        py::object iv = py::reinterpret_steal<py::object>(PyNumber_Index(v));
        if (!iv) throw py::error_already_set();
        if (!member && !PyDict_Contains(f.members.ptr(), iv.ptr()))
            raise(PyExc_ValueError, f.path + ": " + str_of(iv.ptr()) + " is not a member of " +
                                        str_of(f.enum_cls.attr("__name__").ptr()) + " (valid: " + f.valid_text + ")");
        // Members fit the storage type by construction (EnumField chose it).
        const unsigned long long u = PyLong_AsUnsignedLongLongMask(iv.ptr());
        if (u == static_cast<unsigned long long>(-1) && PyErr_Occurred()) throw py::error_already_set();
        store_int(p, f.size, u);
        return;
    }
    case Kind::Python: {
        py::object stored = f.ftype.attr("put")(py::handle(v), f.path);
        py::object view = record_view(f.dtype, f.offset, self);
        if (PyObject_SetItem(view.ptr(), Py_Ellipsis, stored.ptr()) != 0) throw py::error_already_set();
        return;
    }
    }
}

PyObject *get_field(const FieldCodec &f, PyObject *self) {
    const std::uint8_t *p = data_of(self) + f.offset;
    switch (f.kind) {
    case Kind::Unsigned: return PyLong_FromUnsignedLongLong(load_unsigned(p, f.size));
    case Kind::Signed: return PyLong_FromLongLong(load_signed(p, f.size));
    case Kind::Float: return PyFloat_FromDouble(f.size == 4 ? static_cast<double>(load<float>(p)) : load<double>(p));
    case Kind::Bool: return PyBool_FromLong(*p != 0);
    case Kind::Enum: {
        py::object key = py::reinterpret_steal<py::object>(
            f.is_signed ? PyLong_FromLongLong(load_signed(p, f.size)) : PyLong_FromUnsignedLongLong(load_unsigned(p, f.size)));
        if (!key) throw py::error_already_set();
        PyObject *m = PyDict_GetItemWithError(f.members.ptr(), key.ptr());
        if (m) {
            Py_INCREF(m);
            return m;
        }
        if (PyErr_Occurred()) throw py::error_already_set();
        return f.enum_cls(key).release().ptr();  // not a member: the enum's own ValueError
    }
    case Kind::Python: return f.ftype.attr("get")(record_view(f.dtype, f.offset, self)).release().ptr();
    }
    return nullptr;
}

// Run `fn` with C++ exceptions turned into the Python error they stand for; returns `fail` on error.
template <typename R, typename F>
R guarded(R fail, F &&fn) noexcept {
    try {
        return fn();
    } catch (py::error_already_set &e) {
        e.restore();
    } catch (const py::builtin_exception &e) {
        e.set_error();
    } catch (const rk::MessageFormatError &e) {
        PyErr_SetString(message_format_error ? message_format_error : PyExc_ValueError, e.what());
    } catch (const std::exception &e) {
        PyErr_SetString(PyExc_RuntimeError, e.what());
    }
    return fail;
}

const Codec &codec_or_raise(PyObject *obj) {
    const Codec *c = codec_of_object(obj);
    if (!c) raise(PyExc_TypeError, type_name_of(obj) + " is not a message type registered with ringkernel");
    return *c;
}

// ---- _core.Record ------------------------------------------------------------------------------------

PyObject *record_new(PyTypeObject *type, PyObject *, PyObject *) {
    return guarded<PyObject *>(nullptr, [&]() -> PyObject * {
        const Codec *c = codec_of(reinterpret_cast<PyObject *>(type));
        if (!c) raise(PyExc_TypeError, std::string(type->tp_name) + " is not a message type (decorate a class with @rk.message)");
        PyObject *o = alloc_record(*c);
        std::memcpy(data_of(o), c->prototype.data(), c->itemsize);
        return o;
    });
}

// A message's fields from call arguments in vectorcall form (args[0, nargs) positional, then one value per
// name of kwnames, which may be null), over the class's prototype.
void fill_record(const Codec &c, PyObject *self, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames) {
    if (nargs > static_cast<Py_ssize_t>(c.fields.size()))
        raise(PyExc_TypeError, c.name + "() takes at most " + std::to_string(c.fields.size()) +
                                   " positional values, got " + std::to_string(nargs));
    std::memcpy(data_of(self), c.prototype.data(), c.itemsize);
    for (Py_ssize_t i = 0; i < nargs; ++i) set_field(c.fields[static_cast<std::size_t>(i)], self, args[i]);
    const Py_ssize_t nkw = kwnames ? PyTuple_GET_SIZE(kwnames) : 0;
    for (Py_ssize_t j = 0; j < nkw; ++j) {
        PyObject *key = PyTuple_GET_ITEM(kwnames, j);
        PyObject *at = PyDict_GetItemWithError(c.index.ptr(), key);
        if (!at) {
            if (PyErr_Occurred()) throw py::error_already_set();
            raise(PyExc_TypeError, c.name + "() has no field '" + str_of(key) + "' (fields: " + c.field_list + ")");
        }
        const std::size_t idx = PyLong_AsSize_t(at);
        if (static_cast<Py_ssize_t>(idx) < nargs)
            raise(PyExc_TypeError, c.name + "() got two values for field '" + c.fields[idx].name + "'");
        set_field(c.fields[idx], self, args[nargs + j]);
    }
}

// Calling a message class: the arguments as the interpreter has them (no kwargs dict), straight into a
// new record.
PyObject *record_vectorcall(PyObject *callable, PyObject *const *args, std::size_t nargsf, PyObject *kwnames) {
    return guarded<PyObject *>(nullptr, [&]() -> PyObject * {
        const Codec *c = codec_of(callable);
        if (!c) raise(PyExc_TypeError, std::string(reinterpret_cast<PyTypeObject *>(callable)->tp_name) + " is not a message type");
        py::object self = py::reinterpret_steal<py::object>(alloc_record(*c));
        fill_record(*c, self.ptr(), args, PyVectorcall_NARGS(nargsf), kwnames);
        return self.release().ptr();
    });
}

// __init__ called explicitly (a class call goes through record_vectorcall): the same, from a tuple and a dict.
int record_init(PyObject *self, PyObject *args, PyObject *kwargs) {
    return guarded<int>(-1, [&]() -> int {
        const Codec &c = codec_or_raise(self);
        PyObject **positional = PySequence_Fast_ITEMS(args);  // a tuple
        std::vector<PyObject *> values(positional, positional + PyTuple_GET_SIZE(args));
        py::tuple names(kwargs ? PyDict_GET_SIZE(kwargs) : 0);
        PyObject *key, *value;
        Py_ssize_t pos = 0, j = 0;
        while (kwargs && PyDict_Next(kwargs, &pos, &key, &value)) {
            names[static_cast<std::size_t>(j++)] = py::reinterpret_borrow<py::object>(key);
            values.push_back(value);
        }
        fill_record(c, self, values.data(), PyTuple_GET_SIZE(args), kwargs ? names.ptr() : nullptr);
        return 0;
    });
}

void record_dealloc(PyObject *self) { Py_TYPE(self)->tp_free(self); }

PyObject *record_richcompare(PyObject *a, PyObject *b, int op) {
    if ((op != Py_EQ && op != Py_NE) || Py_TYPE(a) != Py_TYPE(b)) Py_RETURN_NOTIMPLEMENTED;
    const Codec *c = codec_of_object(a);
    if (!c) Py_RETURN_NOTIMPLEMENTED;
    const bool equal = std::memcmp(data_of(a), data_of(b), c->itemsize) == 0;
    return PyBool_FromLong(op == Py_EQ ? equal : !equal);
}

PyObject *record_getattro(PyObject *self, PyObject *name) {
    PyObject *r = PyObject_GenericGetAttr(self, name);
    if (r || !PyErr_ExceptionMatches(PyExc_AttributeError)) return r;
    PyErr_Clear();
    PyErr_Format(PyExc_AttributeError, "'%s' message has no field or attribute '%U'", Py_TYPE(self)->tp_name, name);
    return nullptr;
}

int record_setattro(PyObject *self, PyObject *name, PyObject *value) {
    const int r = PyObject_GenericSetAttr(self, name, value);
    // A failed set of a non-field (deletions keep their own message).
    if (r == 0 || !value || !PyErr_ExceptionMatches(PyExc_AttributeError)) return r;
    PyErr_Clear();
    PyErr_Format(PyExc_AttributeError, "%s has no field '%U'; messages have a fixed layout", Py_TYPE(self)->tp_name, name);
    return -1;
}

int record_getbuffer(PyObject *self, Py_buffer *view, int flags) {
    const Codec *c = codec_of_object(self);
    if (!c) {
        PyErr_SetString(PyExc_BufferError, "not a registered message type");
        return -1;
    }
    return PyBuffer_FillInfo(view, self, data_of(self), c->itemsize, 0, flags);
}

PyObject *record_to_bytes(PyObject *self, PyObject *) {
    return guarded<PyObject *>(nullptr, [&]() -> PyObject * {
        const Codec &c = codec_or_raise(self);
        return PyBytes_FromStringAndSize(reinterpret_cast<const char *>(data_of(self)), c.itemsize);
    });
}

// The record as a writable 0-d numpy array over the object's own bytes.
PyObject *record_r(PyObject *self, void *) {
    return guarded<PyObject *>(nullptr, [&]() -> PyObject * {
        return record_view(codec_or_raise(self).dtype, 0, self).release().ptr();
    });
}

PyMethodDef record_methods[] = {
    {"to_bytes", record_to_bytes, METH_NOARGS,
     "The record's bytes: always the same for equal messages (padding and unused bytes are zero)."},
    {nullptr, nullptr, 0, nullptr}};

PyGetSetDef record_getset[] = {
    {"_r", record_r, nullptr, "the record as a writable 0-d numpy array over this message's bytes", nullptr},
    {nullptr, nullptr, nullptr, nullptr, nullptr}};

// ---- field descriptors ---------------------------------------------------------------------------------

struct FieldObject {
    PyObject_HEAD
    const Codec *codec;
    std::size_t index;
    PyObject *owner;  // the codec's capsule, kept alive
};

PyObject *field_get(PyObject *self, PyObject *obj, PyObject *) {
    if (!obj || obj == Py_None) {
        Py_INCREF(self);
        return self;
    }
    auto *d = reinterpret_cast<FieldObject *>(self);
    if (Py_TYPE(obj) != d->codec->cls && !PyObject_TypeCheck(obj, d->codec->cls)) {
        PyErr_Format(PyExc_TypeError, "field %s.%s read on a %s", d->codec->name.c_str(),
                     d->codec->fields[d->index].name.c_str(), Py_TYPE(obj)->tp_name);
        return nullptr;
    }
    return guarded<PyObject *>(nullptr, [&] { return get_field(d->codec->fields[d->index], obj); });
}

int field_set(PyObject *self, PyObject *obj, PyObject *value) {
    auto *d = reinterpret_cast<FieldObject *>(self);
    const FieldCodec &f = d->codec->fields[d->index];
    if (!value) {
        PyErr_Format(PyExc_AttributeError, "%s: message fields cannot be deleted", f.path.c_str());
        return -1;
    }
    if (!PyObject_TypeCheck(obj, d->codec->cls)) {
        PyErr_Format(PyExc_TypeError, "field %s written on a %s", f.path.c_str(), Py_TYPE(obj)->tp_name);
        return -1;
    }
    return guarded<int>(-1, [&] {
        set_field(f, obj, value);
        return 0;
    });
}

void field_dealloc(PyObject *self) {
    Py_XDECREF(reinterpret_cast<FieldObject *>(self)->owner);
    Py_TYPE(self)->tp_free(self);
}

PyObject *field_repr(PyObject *self) {
    auto *d = reinterpret_cast<FieldObject *>(self);
    const FieldCodec &f = d->codec->fields[d->index];
    return PyUnicode_FromFormat("<message field %s at offset %u>", f.path.c_str(), f.offset);
}

PyType_Slot field_slots[] = {{Py_tp_descr_get, reinterpret_cast<void *>(field_get)},
                             {Py_tp_descr_set, reinterpret_cast<void *>(field_set)},
                             {Py_tp_dealloc, reinterpret_cast<void *>(field_dealloc)},
                             {Py_tp_repr, reinterpret_cast<void *>(field_repr)},
                             {Py_tp_doc, const_cast<char *>("A field of a message type (native get and set).")},
                             {0, nullptr}};
PyType_Spec field_spec = {"ringkernel._core.MessageField", sizeof(FieldObject), 0, Py_TPFLAGS_DEFAULT, field_slots};

PyType_Slot record_slots[] = {{Py_tp_new, reinterpret_cast<void *>(record_new)},
                              {Py_tp_init, reinterpret_cast<void *>(record_init)},
                              {Py_tp_dealloc, reinterpret_cast<void *>(record_dealloc)},
                              {Py_tp_richcompare, reinterpret_cast<void *>(record_richcompare)},
                              {Py_tp_hash, reinterpret_cast<void *>(PyObject_HashNotImplemented)},
                              {Py_tp_getattro, reinterpret_cast<void *>(record_getattro)},
                              {Py_tp_setattro, reinterpret_cast<void *>(record_setattro)},
                              {Py_tp_methods, record_methods},
                              {Py_tp_getset, record_getset},
                              {Py_bf_getbuffer, reinterpret_cast<void *>(record_getbuffer)},
                              {Py_tp_doc, const_cast<char *>("The base of every message type: a record held in native memory.")},
                              {0, nullptr}};
PyType_Spec record_spec = {"ringkernel._core.Record", static_cast<int>(sizeof(PyVarObject)), 1, Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE, record_slots};

// ---- registration ----------------------------------------------------------------------------------------

void drop_codec(PyObject *capsule) {
    auto *c = static_cast<Codec *>(PyCapsule_GetPointer(capsule, "ringkernel.codec"));
    if (!c) {
        PyErr_Clear();
        return;
    }
    codecs().erase(reinterpret_cast<PyObject *>(c->cls));
    delete c;
}

// fields: (name, kind, offset, size, extra) with kind "u" "i" "f" "b" (extra: the scalar's name), "enum"
// (extra: (enum class, {value: member}, valid text)) or "py" (extra: (FieldType, dtype)).
void register_message_codec(py::object cls, py::object plan, py::bytes prototype, py::object dtype,
                            std::uint16_t type_id, py::list fields) {
    if (!PyType_Check(cls.ptr()) || !PyType_IsSubtype(reinterpret_cast<PyTypeObject *>(cls.ptr()), record_type))
        throw py::type_error("register_message_codec takes a subclass of ringkernel._core.Record");
    auto *type = reinterpret_cast<PyTypeObject *>(cls.ptr());
    if (data_offset(type) != data_offset(record_type))
        throw py::type_error(std::string(type->tp_name) + ": a message type cannot add instance attributes (__slots__ = () only)");
    auto codec = std::make_unique<Codec>();
    codec->cls = type;
    codec->name = py::str(cls.attr("__name__"));
    codec->plan_obj = plan;
    codec->plan = &plan.cast<const rk::MessagePlan &>();
    codec->itemsize = codec->plan->itemsize();
    codec->prototype = prototype;
    if (codec->prototype.size() != codec->itemsize) throw py::value_error("prototype size differs from the plan's itemsize");
    codec->dtype = dtype;
    codec->type_id = type_id;
    for (const py::handle item : fields) {
        const py::tuple t = item.cast<py::tuple>();
        FieldCodec f;
        f.name = t[0].cast<std::string>();
        f.path = codec->name + "." + f.name;
        const std::string kind = t[1].cast<std::string>();
        f.offset = t[2].cast<std::uint32_t>();
        f.size = t[3].cast<std::uint32_t>();
        if (f.offset + f.size > codec->itemsize) throw py::value_error(f.path + " lies outside the record");
        if (kind == "u" || kind == "i" || kind == "f" || kind == "b") {
            f.kind = kind == "u" ? Kind::Unsigned : kind == "i" ? Kind::Signed : kind == "f" ? Kind::Float : Kind::Bool;
            f.type_name = t[4].cast<std::string>();
            const bool ok = f.kind == Kind::Float ? (f.size == 4 || f.size == 8)
                            : f.kind == Kind::Bool ? f.size == 1
                                                   : (f.size == 1 || f.size == 2 || f.size == 4 || f.size == 8);
            if (!ok) throw py::value_error(f.path + ": no native scalar of " + std::to_string(f.size) + " bytes");
        } else if (kind == "enum") {
            f.kind = Kind::Enum;
            const py::tuple e = t[4].cast<py::tuple>();
            f.enum_cls = e[0];
            f.members = e[1];
            f.valid_text = e[2].cast<std::string>();
            f.is_signed = e[3].cast<bool>();
        } else if (kind == "py") {
            f.kind = Kind::Python;
            const py::tuple e = t[4].cast<py::tuple>();
            f.ftype = e[0];
            f.dtype = e[1];
        } else {
            throw py::value_error("unknown field kind '" + kind + "'");
        }
        PyObject *key = PyUnicode_FromString(f.name.c_str());
        if (!key) throw py::error_already_set();
        PyUnicode_InternInPlace(&key);  // keyword names are interned: lookups compare pointers
        codec->index[py::reinterpret_steal<py::object>(key)] = py::int_(codec->fields.size());
        codec->field_list += (codec->field_list.empty() ? "" : ", ") + f.name;
        codec->fields.push_back(std::move(f));
    }
    Codec *raw = codec.release();
    py::capsule capsule(raw, "ringkernel.codec", drop_codec);
    codecs()[cls.ptr()] = raw;
    for (std::size_t i = 0; i < raw->fields.size(); ++i) {
        auto *d = reinterpret_cast<FieldObject *>(PyType_GenericAlloc(field_type, 0));
        if (!d) throw py::error_already_set();
        d->codec = raw;
        d->index = i;
        d->owner = capsule.inc_ref().ptr();
        py::object desc = py::reinterpret_steal<py::object>(reinterpret_cast<PyObject *>(d));
        cls.attr(raw->fields[i].name.c_str()) = desc;
    }
    cls.attr("__rk_codec__") = capsule;
    // Calls of the class skip type.__call__ (and its kwargs dict): see record_vectorcall.
    type->tp_vectorcall = record_vectorcall;
}

const Codec &codec_arg(const py::handle &cls) {
    const Codec *c = codec_of(cls.ptr());
    if (!c) throw py::type_error(py::repr(cls).cast<std::string>() + " is not a message type");
    return *c;
}

}  // namespace

const Codec *codec_of(PyObject *cls) noexcept {
    auto &m = codecs();
    auto it = m.find(cls);
    return it == m.end() ? nullptr : it->second;
}

const Codec *codec_of_object(PyObject *obj) noexcept { return codec_of(reinterpret_cast<PyObject *>(Py_TYPE(obj))); }

std::uint32_t codec_itemsize(const Codec &c) noexcept { return c.itemsize; }
std::uint16_t codec_type_id(const Codec &c) noexcept { return c.type_id; }
const rk::MessagePlan &codec_plan(const Codec &c) noexcept { return *c.plan; }
PyObject *codec_class(const Codec &c) noexcept { return reinterpret_cast<PyObject *>(c.cls); }
std::uint8_t *record_data(PyObject *obj) noexcept { return data_of(obj); }

py::object record_from_raw(const Codec &c, const void *src) {
    c.plan->validate(static_cast<const std::uint8_t *>(src), 1);
    py::object o = py::reinterpret_steal<py::object>(alloc_record(c));
    std::memcpy(data_of(o.ptr()), src, c.itemsize);
    c.plan->canonicalise(data_of(o.ptr()), 1);
    return o;
}

void bind_codec(py::module_ &m) {
    message_format_error = m.attr("MessageFormatError").ptr();  // registered before, lives as long as the module
    record_type = reinterpret_cast<PyTypeObject *>(PyType_FromSpec(&record_spec));
    if (!record_type) throw py::error_already_set();
    if (data_offset(record_type) < sizeof(PyVarObject)) throw std::logic_error("Record layout");
    field_type = reinterpret_cast<PyTypeObject *>(PyType_FromSpec(&field_spec));
    if (!field_type) throw py::error_already_set();
    m.attr("Record") = py::reinterpret_borrow<py::object>(reinterpret_cast<PyObject *>(record_type));
    m.attr("MessageField") = py::reinterpret_borrow<py::object>(reinterpret_cast<PyObject *>(field_type));
    m.def("register_message_codec", &register_message_codec, py::arg("cls"), py::arg("plan"), py::arg("prototype"),
          py::arg("dtype"), py::arg("type_id"), py::arg("fields"),
          "Make `cls` (a subclass of Record with __slots__ = ()) a message type with this field plan (called by "
          "@rk.message once per type).");
    m.def(
        "record_from_canonical",
        [](const py::handle &cls, const py::buffer &data) {
            const Codec &c = codec_arg(cls);
            py::buffer_info b = data.request();
            if (static_cast<std::size_t>(b.size * b.itemsize) != c.itemsize)
                throw rk::MessageFormatError(c.name + ": expected " + std::to_string(c.itemsize) + " bytes, got " +
                                             std::to_string(b.size * b.itemsize));
            py::object o = py::reinterpret_steal<py::object>(alloc_record(c));
            std::memcpy(data_of(o.ptr()), b.ptr, c.itemsize);
            return o;
        },
        py::arg("cls"), py::arg("data"), "a message of `cls` holding a copy of `data` (canonical bytes, not checked)");
    m.def(
        "record_wrap",
        [](const py::handle &cls, const py::handle &record) {
            const Codec &c = codec_arg(cls);
            Py_buffer view;
            if (PyObject_GetBuffer(record.ptr(), &view, PyBUF_C_CONTIGUOUS) != 0) throw py::error_already_set();
            struct Release {
                Py_buffer *v;
                ~Release() { PyBuffer_Release(v); }
            } release{&view};
            if (static_cast<std::size_t>(view.len) != c.itemsize)
                throw rk::MessageFormatError(c.name + ": expected " + std::to_string(c.itemsize) + " bytes, got " +
                                             std::to_string(view.len));
            return record_from_raw(c, view.buf);
        },
        py::arg("cls"), py::arg("record"), "a message of `cls` from one record's bytes: validated and canonicalised");
    m.def(
        "records_from_messages",
        [](const py::handle &cls, const py::sequence &messages) {
            const Codec &c = codec_arg(cls);
            const auto n = static_cast<npy_intp>(py::len(messages));
            PyArray_Descr *d = reinterpret_cast<PyArray_Descr *>(c.dtype.ptr());
            Py_INCREF(d);
            py::object arr = py::reinterpret_steal<py::object>(PyArray_NewFromDescr(&PyArray_Type, d, 1, &n, nullptr,
                                                                                    nullptr, 0, nullptr));
            if (!arr) throw py::error_already_set();
            auto *out = static_cast<std::uint8_t *>(PyArray_DATA(reinterpret_cast<PyArrayObject *>(arr.ptr())));
            for (npy_intp i = 0; i < n; ++i) {
                py::object item = messages[static_cast<std::size_t>(i)];
                if (Py_TYPE(item.ptr()) != c.cls)
                    throw py::type_error(c.name + ".to_records() takes " + c.name + " objects, got " + type_name_of(item.ptr()));
                std::memcpy(out + static_cast<std::size_t>(i) * c.itemsize, data_of(item.ptr()), c.itemsize);
            }
            return arr;
        },
        py::arg("cls"), py::arg("messages"), "message objects of `cls` gathered into one array of records");
    m.def(
        "messages_from_records",
        [](const py::handle &cls, const py::array &records) {
            const Codec &c = codec_arg(cls);
            if (!records.dtype().equal(c.dtype)) throw py::type_error(c.name + ".from_records() takes records of " + c.name + ".dtype");
            py::array a = py::array::ensure(records, py::array::c_style);
            const auto *src = static_cast<const std::uint8_t *>(a.data());
            const auto n = static_cast<std::size_t>(a.size());
            c.plan->validate(src, n);
            py::list out(n);
            for (std::size_t i = 0; i < n; ++i) {
                py::object o = py::reinterpret_steal<py::object>(alloc_record(c));
                std::memcpy(data_of(o.ptr()), src + i * c.itemsize, c.itemsize);
                c.plan->canonicalise(data_of(o.ptr()), 1);
                out[i] = std::move(o);
            }
            return out;
        },
        py::arg("cls"), py::arg("records"), "records of `cls` to message objects, validated and canonicalised");
}

}  // namespace rkpy
