// bind_clock.cpp — the hybrid logical clock: HlcTimestamp (ordered, hashable, packed into envelopes)
// and HlcClock.
#include <pybind11/operators.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <cmath>
#include <cstdint>
#include <limits>
#include <memory>
#include <string>

#include "args.hpp"
#include "bindings.hpp"
#include "ringkernel/ringkernel.hpp"

namespace rkpy {

using namespace pybind11::literals;

void bind_clock(py::module_ &m) {
    py::class_<rk::HlcTimestamp>(m, "HlcTimestamp", "A hybrid logical clock stamp, ordered by (physical, logical, node).")
        .def(py::init([](const py::object &physical, const py::object &logical, const py::object &node) {
                 return rk::HlcTimestamp{
                     int_in_range<std::uint64_t>(physical, "physical", 0, rk::HlcTimestamp::kMaxPhysical),
                     int_in_range<std::uint16_t>(logical, "logical", 0, 0xFFFF),
                     int_in_range<std::uint16_t>(node, "node", 0, 0xFFFF)};
             }),
             "physical"_a, "logical"_a = 0, "node"_a = 0)
        .def_readonly("physical", &rk::HlcTimestamp::physical, "milliseconds since the Unix epoch")
        .def_readonly("logical", &rk::HlcTimestamp::logical)
        .def_readonly("node", &rk::HlcTimestamp::node)
        .def("pack", &rk::HlcTimestamp::pack, "the 64-bit envelope form: physical << 16 | logical")
        .def_static(
            "unpack",
            [](const py::object &packed, const py::object &node) {
                return rk::HlcTimestamp::unpack(
                    int_in_range<std::uint64_t>(packed, "packed", 0, std::numeric_limits<std::uint64_t>::max()),
                    int_in_range<std::uint16_t>(node, "node", 0, 0xFFFF));
            },
            "packed"_a, "node"_a = 0)
        .def(py::self == py::self)
        .def(py::self != py::self)
        .def(py::self < py::self)
        .def(py::self <= py::self)
        .def(py::self > py::self)
        .def(py::self >= py::self)
        .def("__hash__", [](const rk::HlcTimestamp &t) {
            return py::hash(py::make_tuple(t.physical, t.logical, t.node));
        })
        .def("__repr__", [](const rk::HlcTimestamp &t) {
            return "HlcTimestamp(physical=" + std::to_string(t.physical) + ", logical=" + std::to_string(t.logical) +
                   ", node=" + std::to_string(t.node) + ")";
        });

    py::class_<rk::HlcClock, std::shared_ptr<rk::HlcClock>>(m, "HlcClock", "Thread-safe hybrid logical clock.")
        .def(py::init([](const py::object &node_id, const py::object &max_offset) {
                 const double s = seconds(max_offset, "max_offset", "a number of seconds in [0, 1e9]");
                 if (!(s >= 0.0) || !std::isfinite(s) || s > 1e9)
                     throw py::value_error("max_offset must be a number of seconds in [0, 1e9], got " +
                                           py::str(max_offset).cast<std::string>());
                 return std::make_shared<rk::HlcClock>(int_in_range<std::uint16_t>(node_id, "node_id", 0, 0xFFFF),
                                                       static_cast<std::uint64_t>(std::llround(s * 1000.0)));
             }),
             "node_id"_a = 0, "max_offset"_a = 0.5)
        .def("now", &rk::HlcClock::now, "stamp a local or send event")
        .def("update", &rk::HlcClock::update, "remote"_a,
             "merge a received stamp; ClockSkewError if it is more than max_offset ahead")
        .def("last", &rk::HlcClock::last, "the last stamp issued, without ticking")
        .def_property_readonly("node_id", &rk::HlcClock::node)
        .def_property_readonly("max_offset", [](const rk::HlcClock &c) { return static_cast<double>(c.max_offset_ms()) / 1000.0; })
        .def_property_readonly("borrows", &rk::HlcClock::borrows,
                               "times the logical counter was exhausted and carried into the physical part")
        .def("__repr__", [](const rk::HlcClock &c) {
            return "HlcClock(node_id=" + std::to_string(c.node()) + ", max_offset=" +
                   py::str(py::float_(static_cast<double>(c.max_offset_ms()) / 1000.0)).cast<std::string>() + ")";
        });
}

}  // namespace rkpy
