// bind_builtins.cpp — the built-in handler catalog: its names, the layout of its request and response
// records, and the codes a handler reports errors with (rk_status.h).
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <cstddef>

#include "bindings.hpp"
#include "ringkernel/ringkernel.hpp"
#include "rk_builtins.h"

namespace rkpy {

using namespace pybind11::literals;

void bind_builtins(py::module_ &m) {
    m.def("builtin_handlers", &rk::builtin_handlers, "the names of the built-in handler catalog");
    m.def("builtin_layouts", [] {
        py::dict fields_req, fields_resp;
#define RK_F(d, s, f) d[#f] = py::make_tuple(offsetof(s, f), sizeof(((s *)nullptr)->f))
        RK_F(fields_req, rk_vector_add_request, op);
        RK_F(fields_req, rk_vector_add_request, length);
        RK_F(fields_req, rk_vector_add_request, a);
        RK_F(fields_req, rk_vector_add_request, b);
        RK_F(fields_req, rk_vector_add_request, a_buf);
        RK_F(fields_req, rk_vector_add_request, b_buf);
        RK_F(fields_req, rk_vector_add_request, out_buf);
        RK_F(fields_resp, rk_vector_add_response, length);
        RK_F(fields_resp, rk_vector_add_response, result);
        RK_F(fields_resp, rk_vector_add_response, out_buf);
        RK_F(fields_resp, rk_vector_add_response, status);
#undef RK_F
        return py::dict(
            "vector_add_request"_a = py::dict("size"_a = sizeof(rk_vector_add_request), "fields"_a = fields_req),
            "vector_add_response"_a = py::dict("size"_a = sizeof(rk_vector_add_response), "fields"_a = fields_resp));
    });
    m.attr("ERR_HANDLER") = RK_ERR_HANDLER;
    m.attr("ERR_BUFFER") = RK_ERR_BUFFER;
    m.attr("ERR_INPUT") = RK_ERR_INPUT;
    m.attr("ERR_HOST") = RK_ERR_HOST;
    m.attr("ERR_CHANNEL") = RK_ERR_CHANNEL;
    m.attr("ERR_OPERATION") = RK_ERR_OPERATION;
    m.attr("ERR_LAUNCH") = RK_ERR_LAUNCH;
    m.attr("ERR_RETURN") = RK_ERR_RETURN;
    m.attr("ERR_FAULT") = RK_ERR_FAULT;
    m.attr("ERR_TIMEOUT") = RK_ERR_TIMEOUT;
}

}  // namespace rkpy
