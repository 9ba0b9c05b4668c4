// codec.hpp — the native message codec: message objects are records in native memory.
//
// A class made by @rk.message derives from _core.Record, whose instances hold the record's bytes
// inline (one allocation, no numpy object). ringkernel.messages computes each type's field plan once,
// at decoration, and registers it (register_message_codec); from then on constructing a message,
// reading and writing a field, and turning received bytes into a message object are C++ with no
// Python-level loop. Fields of the kinds C++ knows (integers, floats, bool, IntEnum) are converted
// here; arrays, bytes/strings and nested messages go through their FieldType's get/put on a numpy view
// of the field's bytes (same checks, same error messages).
#pragma once

#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <cstdint>

#include "ringkernel/message_plan.hpp"

namespace rkpy {

struct Codec;

// The codec of a message class, or nullptr when `cls` is not one.
const Codec *codec_of(PyObject *cls) noexcept;
// The codec of a message object's class, or nullptr when `obj` is not a message.
const Codec *codec_of_object(PyObject *obj) noexcept;

// What a codec knows that the queue paths need.
std::uint32_t codec_itemsize(const Codec &c) noexcept;
std::uint16_t codec_type_id(const Codec &c) noexcept;
const rk::MessagePlan &codec_plan(const Codec &c) noexcept;
PyObject *codec_class(const Codec &c) noexcept;  // borrowed

// The bytes of a message object (of any message class).
std::uint8_t *record_data(PyObject *obj) noexcept;

// A new message object from `src` (itemsize bytes): validated (rk::MessageFormatError naming the field)
// and canonicalised (padding and unused bytes/string storage zeroed).
pybind11::object record_from_raw(const Codec &c, const void *src);

// _core.Record, the field descriptor type and the registration functions.
void bind_codec(pybind11::module_ &m);

}  // namespace rkpy
