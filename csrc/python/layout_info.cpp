// layout_info.cpp — the layout dtypes passed down from Python (see layout_info.hpp) and layout_info():
// sizes and (offset, size) of every field of the layout.h structs; bind_layout() binds both.
#include "layout_info.hpp"

#include <cstddef>
#include <stdexcept>
#include <string>

#include "bindings.hpp"
#include "ringkernel/layout.h"

namespace rkpy {

using namespace pybind11::literals;

LayoutDtypes &layout_dtypes() {
    static LayoutDtypes d;
    return d;
}
py::object layout_dtype(PyObject *const LayoutDtypes::*which, const char *name) {
    PyObject *dt = layout_dtypes().*which;
    if (!dt) throw std::logic_error(std::string("ringkernel.layout has not registered ") + name + " (import ringkernel)");
    return py::reinterpret_borrow<py::object>(dt);
}

namespace {

// ---- layout description for the Python-side dtype checks ---------------------------------------------

#define RK_FIELD(s, f) fields[#f] = py::make_tuple(offsetof(s, f), sizeof(((s *)nullptr)->f))

py::dict layout_info() {
    py::dict out;
    {
        py::dict fields;
        RK_FIELD(rk_ring_header, head);
        RK_FIELD(rk_ring_header, expired);
        RK_FIELD(rk_ring_header, tail);
        RK_FIELD(rk_ring_header, rejected);
        RK_FIELD(rk_ring_header, dropped_new);
        RK_FIELD(rk_ring_header, evicted);
        RK_FIELD(rk_ring_header, magic);
        RK_FIELD(rk_ring_header, version);
        RK_FIELD(rk_ring_header, capacity);
        RK_FIELD(rk_ring_header, mask);
        RK_FIELD(rk_ring_header, slot_stride);
        RK_FIELD(rk_ring_header, max_payload);
        RK_FIELD(rk_ring_header, flags);
        out["ring_header"] = py::dict("size"_a = sizeof(rk_ring_header), "fields"_a = fields);
    }
    {
        py::dict fields;
        RK_FIELD(rk_envelope, message_id);
        RK_FIELD(rk_envelope, correlation_id);
        RK_FIELD(rk_envelope, timestamp);
        RK_FIELD(rk_envelope, enqueue_ns);
        RK_FIELD(rk_envelope, payload_size);
        RK_FIELD(rk_envelope, type_id);
        RK_FIELD(rk_envelope, source_kernel);
        RK_FIELD(rk_envelope, priority);
        RK_FIELD(rk_envelope, flags);
        RK_FIELD(rk_envelope, sequence);
        out["envelope"] = py::dict("size"_a = sizeof(rk_envelope), "fields"_a = fields);
    }
    {
        py::dict fields;
        RK_FIELD(rk_control_block, is_active);
        RK_FIELD(rk_control_block, should_terminate);
        RK_FIELD(rk_control_block, has_terminated);
        RK_FIELD(rk_control_block, errors_encountered);
        RK_FIELD(rk_control_block, messages_processed);
        RK_FIELD(rk_control_block, last_activity_ns);
        RK_FIELD(rk_control_block, input);
        RK_FIELD(rk_control_block, output);
        RK_FIELD(rk_control_block, hlc);
        RK_FIELD(rk_control_block, next_reply_id);
        RK_FIELD(rk_control_block, telemetry_enabled);
        RK_FIELD(rk_control_block, blocks_exited);
        RK_FIELD(rk_control_block, last_error);
        RK_FIELD(rk_control_block, node);
        RK_FIELD(rk_control_block, messages_dropped);
        RK_FIELD(rk_control_block, clock_ns);
        RK_FIELD(rk_control_block, blocks_started);
        RK_FIELD(rk_control_block, blocks_paused);
        RK_FIELD(rk_control_block, clock_offset_ns);
        out["control_block"] = py::dict("size"_a = sizeof(rk_control_block), "fields"_a = fields);
    }
    {
        py::dict fields;
        RK_FIELD(rk_telemetry, messages_processed);
        RK_FIELD(rk_telemetry, messages_dropped);
        RK_FIELD(rk_telemetry, last_processed_timestamp);
        RK_FIELD(rk_telemetry, queue_depth);
        RK_FIELD(rk_telemetry, error_code);
        RK_FIELD(rk_telemetry, total_latency_ns);
        RK_FIELD(rk_telemetry, min_latency_ns);
        RK_FIELD(rk_telemetry, max_latency_ns);
        out["telemetry"] = py::dict("size"_a = sizeof(rk_telemetry), "fields"_a = fields);
    }
    {
        py::dict fields;
        RK_FIELD(rk_route, ring);
        RK_FIELD(rk_route, cookie);
        out["route"] = py::dict("size"_a = sizeof(rk_route), "fields"_a = fields);
    }
    {
        py::dict fields;
        RK_FIELD(rk_channel, count);
        RK_FIELD(rk_channel, targets);
        out["channel"] = py::dict("size"_a = sizeof(rk_channel), "fields"_a = fields);
    }
    {
        py::dict fields;
        RK_FIELD(rk_routes, n_inputs);
        RK_FIELD(rk_routes, n_channels);
        RK_FIELD(rk_routes, inputs);
        RK_FIELD(rk_routes, channels);
        out["routes"] = py::dict("size"_a = sizeof(rk_routes), "fields"_a = fields);
    }
    {
        py::dict fields;
        RK_FIELD(rk_buffer_entry, address);
        RK_FIELD(rk_buffer_entry, bytes);
        RK_FIELD(rk_buffer_entry, generation);
        RK_FIELD(rk_buffer_entry, live);
        out["buffer_entry"] = py::dict("size"_a = sizeof(rk_buffer_entry), "fields"_a = fields);
    }
    {
        py::dict fields;
        RK_FIELD(rk_buffer_table, capacity);
        RK_FIELD(rk_buffer_table, entries);
        out["buffer_table"] = py::dict("size"_a = sizeof(rk_buffer_table), "fields"_a = fields);
    }
    {
        py::dict fields;
        RK_FIELD(rk_kernel_params, control_block);
        RK_FIELD(rk_kernel_params, telemetry);
        RK_FIELD(rk_kernel_params, routes_word);
        RK_FIELD(rk_kernel_params, buffers);
        RK_FIELD(rk_kernel_params, ttl_ns);
        RK_FIELD(rk_kernel_params, reply_id_base);
        RK_FIELD(rk_kernel_params, in_size);
        RK_FIELD(rk_kernel_params, out_size);
        RK_FIELD(rk_kernel_params, backpressure);
        RK_FIELD(rk_kernel_params, out_type);
        RK_FIELD(rk_kernel_params, node);
        RK_FIELD(rk_kernel_params, clock_offset_ns);
        RK_FIELD(rk_kernel_params, run_limit);
        RK_FIELD(rk_kernel_params, idle_backoff_ns);
        RK_FIELD(rk_kernel_params, state);
        RK_FIELD(rk_kernel_params, dead_letters);
        RK_FIELD(rk_kernel_params, state_size);
        out["kernel_params"] = py::dict("size"_a = sizeof(rk_kernel_params), "fields"_a = fields);
    }
    return out;
}
#undef RK_FIELD

}  // namespace

void bind_layout(py::module_ &m) {
    m.def(
        "_set_layout_dtypes",
        [](py::object envelope, py::object telemetry, py::object control_block) {
            LayoutDtypes &d = layout_dtypes();
            if (d.envelope) return;  // set once, by the first import of ringkernel.layout
            d.envelope = envelope.release().ptr();
            d.telemetry = telemetry.release().ptr();
            d.control_block = control_block.release().ptr();
        },
        "envelope"_a, "telemetry"_a, "control_block"_a,
        "ringkernel.layout passes down the numpy dtypes of the envelope, telemetry and control block");
    m.def("layout_info", &layout_info, "sizes and (offset, size) of every field of the layout.h structs");
}

}  // namespace rkpy
