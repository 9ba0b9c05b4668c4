// bind_message_plan.cpp — MessagePlan, the validation and canonicalisation of one message type's records
// that ringkernel.messages builds from its field plan (make_plan), applied to any buffer of whole
// records (RecordBuffer).
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <cstddef>
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "bindings.hpp"
#include "ringkernel/ringkernel.hpp"

namespace rkpy {

using namespace pybind11::literals;

namespace {

rk::MessagePlan make_plan(std::uint32_t itemsize, const py::list &checks, const py::list &zero, const py::list &tails) {
    std::vector<rk::MessageCheck> out;
    for (const py::handle &item : checks) {
        auto t = item.cast<py::tuple>();
        const std::string kind = t[0].cast<std::string>();
        rk::MessageCheck c;
        c.offset = t[1].cast<std::uint32_t>();
        if (kind == "bool") {
            c.kind = rk::MessageCheck::Kind::Bool;
            c.count = t[2].cast<std::uint32_t>();
            c.path = t[3].cast<std::string>();
        } else if (kind == "enum") {
            c.kind = rk::MessageCheck::Kind::Enum;
            c.count = t[2].cast<std::uint32_t>();
            c.size = t[3].cast<std::uint32_t>();
            c.is_signed = t[4].cast<bool>();
            c.valid = t[5].cast<std::vector<std::int64_t>>();
            c.enum_name = t[6].cast<std::string>();
            c.path = t[7].cast<std::string>();
        } else if (kind == "len" || kind == "utf8") {
            c.kind = kind == "len" ? rk::MessageCheck::Kind::Length : rk::MessageCheck::Kind::Utf8;
            c.size = t[2].cast<std::uint32_t>();
            c.path = t[3].cast<std::string>();
        } else {
            throw py::value_error("unknown message check kind '" + kind + "'");
        }
        out.push_back(std::move(c));
    }
    return rk::MessagePlan(itemsize, std::move(out),
                           zero.cast<std::vector<std::pair<std::uint32_t, std::uint32_t>>>(),
                           tails.cast<std::vector<std::pair<std::uint32_t, std::uint32_t>>>());
}

// A contiguous byte view of whole records for a plan; `writable` for in-place canonicalisation.
struct RecordBuffer {
    Py_buffer view{};
    std::size_t n = 0;
    RecordBuffer(const rk::MessagePlan &plan, const py::handle &obj, bool writable) {
        if (PyObject_GetBuffer(obj.ptr(), &view, PyBUF_C_CONTIGUOUS | (writable ? PyBUF_WRITABLE : 0)) != 0)
            throw py::error_already_set();
        if (view.len % plan.itemsize() != 0) {
            PyBuffer_Release(&view);
            throw rk::MessageFormatError("expected a whole number of " + std::to_string(plan.itemsize()) +
                                         "-byte records, got " + std::to_string(view.len) + " bytes");
        }
        n = static_cast<std::size_t>(view.len) / plan.itemsize();
    }
    ~RecordBuffer() { PyBuffer_Release(&view); }
    std::uint8_t *data() const { return static_cast<std::uint8_t *>(view.buf); }
};

}  // namespace

void bind_message_plan(py::module_ &m) {
    py::class_<rk::MessagePlan>(m, "MessagePlan",
                                "Validation and canonicalisation of one message type's records (built by "
                                "ringkernel.messages).")
        .def(py::init(&make_plan), "itemsize"_a, "checks"_a, "zero_ranges"_a, "tails"_a)
        .def_property_readonly("itemsize", &rk::MessagePlan::itemsize)
        .def(
            "validate",
            [](const rk::MessagePlan &p, const py::handle &records) {
                RecordBuffer b(p, records, false);
                p.validate(b.data(), b.n);
            },
            "records"_a, "check whole records (any buffer); MessageFormatError names the field")
        .def(
            "canonical",
            [](const rk::MessagePlan &p, const py::handle &records) {
                RecordBuffer b(p, records, false);
                py::bytearray out(reinterpret_cast<const char *>(b.data()), static_cast<py::ssize_t>(b.view.len));
                p.canonicalise(reinterpret_cast<std::uint8_t *>(PyByteArray_AS_STRING(out.ptr())), b.n);
                return out;
            },
            "records"_a, "a bytearray copy with padding and unused bytes/string storage zeroed")
        .def(
            "canonicalise",
            [](const rk::MessagePlan &p, const py::handle &records) {
                RecordBuffer b(p, records, true);
                p.canonicalise(b.data(), b.n);
            },
            "records"_a, "zero padding and unused bytes/string storage in place (a writable buffer)");
}

}  // namespace rkpy
