// bind_runtime.cpp — kernels and runtimes: KernelState, Telemetry, _Kernel (lifecycle, channels, telemetry,
// live views of its control and telemetry blocks) and _Runtime (kernel creation, named queues, bridges,
// topics; its buffer methods are bound in bind_buffers.cpp).
#include <pybind11/native_enum.h>
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <cstdint>
#include <iterator>
#include <memory>
#include <set>
#include <sstream>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include "args.hpp"
#include "bindings.hpp"
#include "gil.hpp"
#include "host_handler.hpp"
#include "layout_info.hpp"
#include "py_kernel.hpp"
#include "py_queue.hpp"

namespace rkpy {

using namespace pybind11::literals;

namespace {

std::uint16_t type_id_of(const py::object &t) {
    const rkpy::Codec *c = rkpy::codec_of(t.ptr());
    return c ? rkpy::codec_type_id(*c) : 0;
}

std::uint32_t record_size_of(const py::object &t) {
    py::object np_dtype = numpy().attr("dtype");
    py::object dt = py::hasattr(t, "dtype") && py::isinstance(t.attr("dtype"), np_dtype) ? t.attr("dtype") : np_dtype(t);
    return dt.attr("itemsize").cast<std::uint32_t>();
}

py::object kernel_create(PyRuntime &self, const std::string &name, const py::object &handler, const py::object &input,
                         py::object output, std::uint32_t grid, std::uint32_t block, const py::object &options,
                         const std::vector<std::string> &channels, std::size_t max_batch, const std::string &mode,
                         const py::object &state, const py::object &restart) {
    if (output.is_none()) output = input;
    rk::KernelSpec spec;
    spec.name = name;
    spec.input_size = record_size_of(input);
    spec.output_size = record_size_of(output);
    spec.input_type = type_id_of(input);
    spec.output_type = type_id_of(output);
    spec.grid = grid;
    spec.block = block;
    if (!options.is_none()) spec.options = options.cast<rk::LaunchOptions>();
    if (!restart.is_none()) {
        if (!py::isinstance<rk::RestartPolicy>(restart))
            throw py::type_error("restart= takes an rk.RestartPolicy, got " + type_name(restart));
        spec.restart = restart.cast<rk::RestartPolicy>();
    }
    spec.channels = channels;
    if (!mode.empty()) spec.mode = rk::kernel_mode_from_string(mode);
    py::object state_dtype = py::none();
    if (!state.is_none()) {
        py::object np_dtype = numpy().attr("dtype");
        state_dtype = py::hasattr(state, "dtype") && py::isinstance(state.attr("dtype"), np_dtype) ? state.attr("dtype")
                                                                                                  : np_dtype(state);
        if (state_dtype.attr("hasobject").cast<bool>())
            throw py::type_error("state= takes a record type of fixed-size fields, not one holding Python objects");
        spec.state_size = state_dtype.attr("itemsize").cast<std::uint32_t>();
        if (spec.state_size == 0) throw py::value_error("state= needs a record of at least 1 byte");
        spec.state_type = type_id_of(state);
    }
    if (max_batch < 1 || max_batch > 65536)
        throw py::value_error("max_batch must be in [1, 65536], got " + std::to_string(max_batch));
    // Typed views made before the kernel exists, so a Python handler can decode and encode.
    std::shared_ptr<rk::HostHandler> host;
    if (py::isinstance<py::str>(handler)) {
        spec.handler = rk::Handler::builtin(handler.cast<std::string>());
    } else if (py::hasattr(handler, "_rk_native")) {
        // A compiled handler (rk.jit): (name, address of its C entry). The Python side keeps the code for
        // the life of the process (a kernel abandoned in it may still call it), so nothing is held here.
        auto native = handler.attr("_rk_native").cast<std::pair<std::string, std::uintptr_t>>();
        spec.handler = rk::Handler::compiled(native.first, reinterpret_cast<rk::NativeHandlerFn>(native.second), nullptr);
    } else if (py::hasattr(handler, "_rk_image")) {
        // A handler image built for a device backend (rk.CompiledHandler: rk.jit compiled for CUDA):
        // (name, target backend, image bytes, kernel entry).
        auto img = handler.attr("_rk_image").cast<std::tuple<std::string, std::string, py::bytes, std::string>>();
        spec.handler = rk::Handler::image(std::get<0>(img), std::get<1>(img), std::string(std::get<2>(img)),
                                          std::get<3>(img));
    } else if (py::hasattr(handler, "code") && py::hasattr(handler, "entry")) {
        spec.handler = rk::Handler::source(handler.attr("code").cast<std::string>(), handler.attr("entry").cast<std::string>());
    } else if (PyCallable_Check(handler.ptr())) {
        spec.handler = rk::Handler::on_host(nullptr);  // filled below, once the queues exist
    } else {
        throw py::type_error("handler must be a built-in name (str), an rk.Source, an rk.jit handler, an "
                             "rk.CompiledHandler or a Python callable, got " +
                             type_name(handler));
    }
    if (spec.handler.kind != rk::Handler::Kind::Host && max_batch != 1)
        throw py::value_error("max_batch applies to Python batch handlers only");
    if (spec.handler.kind == rk::Handler::Kind::Host) {
        // The queues are created by the runtime; the handler needs typed views of them, made from
        // throw-away queues of the same types and then re-pointed at the kernel's own.
        rk::QueueConfig tmp;
        tmp.capacity = 16;
        tmp.payload_size = spec.input_size;
        py::object in_view = wrap_queue(std::make_shared<rk::Queue>(tmp), input);
        tmp.payload_size = spec.output_size;
        py::object out_view = wrap_queue(std::make_shared<rk::Queue>(tmp), output);
        host = make_host_handler(handler, in_view, out_view, max_batch, channels, state_dtype);
        spec.handler = rk::Handler::on_host(host);
    }
    std::shared_ptr<rk::Kernel> k;
    {
        k = without_gil([&] { return self.rt->create(spec); });  // compiling a source handler takes a while
    }
    PyKernel pk;
    pk.k = k;
    pk.in_type = input;
    pk.out_type = output;
    pk.state_type = state;
    pk.in_q = wrap_queue(k->input(), input);
    pk.out_q = wrap_queue(k->output(), output);
    pk.channel_qs.push_back(pk.out_q);
    // Types of queues that are gone (their kernels ended) are forgotten, so a runtime that launches a kernel
    // per job keeps nothing per job here either.
    {
        const std::vector<std::string> live = self.rt->queue_names();
        const std::set<std::string> names(live.begin(), live.end());
        for (auto it = self.types.begin(); it != self.types.end();)
            it = names.count(it->first) ? std::next(it) : self.types.erase(it);
    }
    self.types[name + ".in"] = input;
    self.types[name + ".out"] = output;
    for (std::size_t i = 0; i < channels.size(); ++i) {
        pk.channel_qs.push_back(wrap_queue(k->channel_queue(static_cast<std::uint32_t>(i + 1)), output));
        self.types[name + "." + channels[i]] = output;
    }
    return py::cast(std::move(pk), py::return_value_policy::move);
}

PyKernel &kernel_of(const py::handle &h) { return h.cast<PyKernel &>(); }

// A live view the host must not write through (the kernel owns the memory: a written has_terminated made
// terminate() believe the blocks had left).
py::array read_only(py::array a) {
    py::detail::array_proxy(a.ptr())->flags &= ~py::detail::npy_api::NPY_ARRAY_WRITEABLE_;
    return a;
}

template <class F>
auto key_error_for_missing(F &&f) -> decltype(f()) {
    try {
        return f();
    } catch (const std::out_of_range &e) {
        throw py::key_error(e.what());
    }
}

}  // namespace

void bind_runtime(py::module_ &m) {
    py::native_enum<rk::KernelState>(m, "KernelState", "enum.Enum", "The lifecycle state of a ring kernel.")
        .value("CREATED", rk::KernelState::Created)
        .value("LAUNCHED", rk::KernelState::Launched)
        .value("ACTIVE", rk::KernelState::Active)
        .value("DEACTIVATED", rk::KernelState::Deactivated)
        .value("TERMINATING", rk::KernelState::Terminating)
        .value("TERMINATED", rk::KernelState::Terminated)
        .value("FAULTED", rk::KernelState::Faulted)
        .finalize();

    py::class_<rk::TelemetrySnapshot>(m, "Telemetry", "A snapshot of a kernel's telemetry counters.")
        .def_readonly("messages_processed", &rk::TelemetrySnapshot::messages_processed)
        .def_readonly("messages_dropped", &rk::TelemetrySnapshot::messages_dropped)
        .def_readonly("last_processed_timestamp", &rk::TelemetrySnapshot::last_processed_timestamp)
        .def_readonly("queue_depth", &rk::TelemetrySnapshot::queue_depth)
        .def_readonly("error_code", &rk::TelemetrySnapshot::error_code)
        .def_readonly("total_latency_ns", &rk::TelemetrySnapshot::total_latency_ns)
        .def_readonly("min_latency_ns", &rk::TelemetrySnapshot::min_latency_ns)
        .def_readonly("max_latency_ns", &rk::TelemetrySnapshot::max_latency_ns)
        .def_property_readonly("avg_latency_ns", &rk::TelemetrySnapshot::avg_latency_ns)
        .def_readonly("restarts", &rk::TelemetrySnapshot::restarts, "restarts by the supervisor (RestartPolicy)")
        .def_readonly("abandoned_workers", &rk::TelemetrySnapshot::abandoned_workers,
                      "workers abandoned in a handler that ran past handler_timeout")
        .def_readonly("dead_letters", &rk::TelemetrySnapshot::dead_letters, "failed messages since launch")
        .def("as_dict", [](const rk::TelemetrySnapshot &t) {
            return py::dict("messages_processed"_a = t.messages_processed, "messages_dropped"_a = t.messages_dropped,
                            "last_processed_timestamp"_a = t.last_processed_timestamp, "queue_depth"_a = t.queue_depth,
                            "error_code"_a = t.error_code, "total_latency_ns"_a = t.total_latency_ns,
                            "min_latency_ns"_a = t.min_latency_ns, "max_latency_ns"_a = t.max_latency_ns,
                            "avg_latency_ns"_a = t.avg_latency_ns(), "restarts"_a = t.restarts,
                            "abandoned_workers"_a = t.abandoned_workers, "dead_letters"_a = t.dead_letters);
        })
        .def("__repr__", [](const rk::TelemetrySnapshot &t) {
            std::ostringstream o;
            o << "Telemetry(processed=" << t.messages_processed << ", dropped=" << t.messages_dropped
              << ", depth=" << t.queue_depth << ", latency_ns min/avg/max=" << t.min_latency_ns << "/"
              << static_cast<std::uint64_t>(t.avg_latency_ns()) << "/" << t.max_latency_ns
              << ", error_code=" << t.error_code << ")";
            return o.str();
        });

    py::class_<PyKernel>(m, "_Kernel", "The native side of ringkernel.Kernel.")
        .def_property_readonly("name", [](const PyKernel &k) { return k.k->name(); })
        .def_property_readonly("id", [](const PyKernel &k) { return k.k->id(); })
        .def_property_readonly("state", [](const PyKernel &k) { return k.k->state(); })
        .def_property_readonly("grid", [](const PyKernel &k) { return k.k->spec().grid; })
        .def_property_readonly("block", [](const PyKernel &k) { return k.k->spec().block; })
        .def_property_readonly("handler", [](const PyKernel &k) { return k.k->spec().handler.describe(); })
        .def_property_readonly("mode", [](const PyKernel &k) { return std::string(rk::to_string(k.k->mode())); })
        .def_property_readonly("channels", [](const PyKernel &k) { return k.k->spec().channels; })
        .def_property_readonly("input_type", [](const PyKernel &k) { return k.in_type; })
        .def_property_readonly("output_type", [](const PyKernel &k) { return k.out_type; })
        .def_property_readonly("input", [](const PyKernel &k) { return k.in_q; })
        .def_property_readonly("output", [](const PyKernel &k) { return k.out_q; })
        .def("channel_queue", [](const PyKernel &k, const std::string &name) {
            return key_error_for_missing([&] { return k.channel_qs.at(k.k->channel_index(name)); });
        })
        .def("connected", [](const PyKernel &k, const std::string &name) {
            return key_error_for_missing([&] { return k.k->connected(k.k->channel_index(name)); });
        })
        // Lifecycle calls drop the GIL: they may wait for a lock a terminating kernel's Python handler
        // needs the GIL to release.
        .def("launch", [](PyKernel &k) { without_gil([&] { k.k->launch(); }); })
        .def("activate", [](PyKernel &k) { without_gil([&] { k.k->activate(); }); })
        .def("deactivate", [](PyKernel &k) { without_gil([&] { k.k->deactivate(); }); })
        .def("terminate", [](PyKernel &k, const py::object &timeout) {
            const std::int64_t ns = timeout_ns(timeout);
            // A Python handler may need the GIL to finish.
            return without_gil([&] { return k.k->terminate(ns < 0 ? -1 : ns); });
        }, "timeout"_a = 5.0)
        .def_property_readonly("fault", [](const PyKernel &k) {
            std::string f;
            {
                f = without_gil([&] { return k.k->fault(); });
            }
            return f;
        })
        .def("enable_telemetry", [](PyKernel &k) { k.k->enable_telemetry(); })
        .def("disable_telemetry", [](PyKernel &k) { k.k->disable_telemetry(); })
        .def_property_readonly("telemetry_enabled", [](const PyKernel &k) { return k.k->telemetry_enabled(); })
        .def("reset_telemetry", [](PyKernel &k) { k.k->reset_telemetry(); })
        .def("telemetry", [](const PyKernel &k) { return k.k->telemetry(); })
        .def("telemetry_view", [](py::handle self) {
            PyKernel &k = kernel_of(self);
            py::object dt = layout_dtype(&LayoutDtypes::telemetry, "TELEMETRY_DTYPE");
            return read_only(py::array(dt.cast<py::dtype>(), std::vector<py::ssize_t>{}, std::vector<py::ssize_t>{},
                                       k.k->telemetry_block(), self));
        })
        .def("control_view", [](py::handle self) {
            PyKernel &k = kernel_of(self);
            py::object dt = layout_dtype(&LayoutDtypes::control_block, "CONTROL_BLOCK_DTYPE");
            return read_only(py::array(dt.cast<py::dtype>(), std::vector<py::ssize_t>{}, std::vector<py::ssize_t>{},
                                       k.k->control_block(), self));
        })
        .def_property_readonly("messages_processed", [](const PyKernel &k) { return k.k->messages_processed(); })
        .def_property_readonly("messages_dropped", [](const PyKernel &k) { return k.k->messages_dropped(); })
        .def_property_readonly("errors", [](const PyKernel &k) { return k.k->errors(); })
        .def_property_readonly("last_error", [](const PyKernel &k) { return k.k->last_error(); })
        .def_property_readonly("last_error_message", [](const PyKernel &k) { return k.k->last_error_message(); })
        // Actor state, checkpoints, dead letters (DESIGN §11). Pausing waits for a running Python handler,
        // which needs the GIL: every one of these drops it.
        .def_property_readonly("state_type", [](const PyKernel &k) { return k.state_type; })
        .def("actor_state", [](PyKernel &k, const py::object &timeout) {
            const std::int64_t ns = timeout_ns(timeout);
            std::vector<std::uint8_t> raw = without_gil([&] { return k.k->actor_state(ns); });
            return py::bytes(reinterpret_cast<const char *>(raw.data()), raw.size());
        }, "timeout"_a = 5.0)
        .def("checkpoint", [](PyKernel &k, const py::object &timeout) {
            const std::int64_t ns = timeout_ns(timeout);
            return py::bytes(without_gil([&] { return k.k->checkpoint(ns); }));
        }, "timeout"_a = 5.0)
        .def("restore", [](PyKernel &k, const py::bytes &blob, const py::object &timeout) {
            const std::int64_t ns = timeout_ns(timeout);
            std::string data = blob;
            without_gil([&] { k.k->restore(data, ns); });
        }, "blob"_a, "timeout"_a = 5.0)
        .def("dead_letters", [](PyKernel &k, bool clear) {
            std::vector<rk::DeadLetter> dead = without_gil([&] { return k.k->dead_letters(clear); });
            py::list out;
            for (const rk::DeadLetter &d : dead)
                out.append(py::make_tuple(py::bytes(reinterpret_cast<const char *>(d.record.data()), d.record.size()),
                                          d.error, d.attempts, d.code, d.envelope.message_id,
                                          d.envelope.correlation_id, d.envelope.timestamp));
            return out;
        }, "clear"_a = false)
        .def("drain", [](PyKernel &k) {
            std::vector<rk::DeadLetter> left = without_gil([&] { return k.k->drain(); });
            py::list out;
            for (const rk::DeadLetter &d : left)
                out.append(py::bytes(reinterpret_cast<const char *>(d.record.data()), d.record.size()));
            return out;
        })
        .def_property_readonly("dead_letter_counts", [](PyKernel &k) {
            const rk::DeadLetterCounts c = without_gil([&] { return k.k->dead_letter_counts(); });
            return py::make_tuple(c.total, c.held, c.dropped);
        })
        .def_property_readonly("restarts", [](const PyKernel &k) { return k.k->restarts(); })
        .def_property_readonly("abandoned_workers", [](const PyKernel &k) { return k.k->abandoned_workers(); })
        .def_property_readonly("restart_policy", [](const PyKernel &k) -> py::object {
            if (!k.k->spec().restart) return py::none();
            return py::cast(*k.k->spec().restart);
        });

    py::class_<PyRuntime> runtime(m, "_Runtime", "The native side of ringkernel.Runtime.");
    runtime
        .def(py::init([](const std::string &backend, const std::vector<std::string> &include_dirs,
                         const std::string &cache_dir, const std::string &compiler, std::uint32_t max_buffers,
                         int device, const std::string &mode) {
                 rk::RuntimeConfig cfg;
                 cfg.include_dirs = include_dirs;
                 cfg.cache_dir = cache_dir;
                 cfg.compiler = compiler;
                 cfg.max_buffers = max_buffers;
                 cfg.device = device;
                 cfg.mode = rk::kernel_mode_from_string(mode);
                 PyRuntime r;
                 {
                     // Probing a device backend can take a while.
                     r.rt = without_gil([&] { return std::make_unique<rk::Runtime>(backend, cfg); });
                 }
                 return r;
             }),
             "backend"_a, "include_dirs"_a, "cache_dir"_a = "", "compiler"_a = "", "max_buffers"_a = 4096,
             "device"_a = -1, "mode"_a = "auto")
        .def_property_readonly("backend", [](const PyRuntime &r) { return r.rt->backend(); })
        .def_property_readonly("closed", [](const PyRuntime &r) { return r.rt->closed(); })
        .def_property_readonly("device_target", [](const PyRuntime &r) { return r.rt->device_target(); },
                               "What a handler image must be built for to run on this runtime's device ('sm_90' "
                               "on CUDA); empty where the backend loads no prebuilt images")
        .def("create", &kernel_create, "name"_a, "handler"_a, "input"_a, "output"_a, "grid"_a, "block"_a,
             "options"_a, "channels"_a, "max_batch"_a, "mode"_a = "", "state"_a = py::none(),
             "restart"_a = py::none())
        .def("queue_names", [](const PyRuntime &r) { return r.rt->queue_names(); })
        .def("queue", [](PyRuntime &r, const std::string &name) {
            return key_error_for_missing([&] {
                auto q = r.rt->queue(name);
                return wrap_queue(q, r.types.at(name));
            });
        })
        .def("create_queue", [](PyRuntime &r, const std::string &name, const py::object &queue) {
            PyQueue &pq = queue_of(queue.ptr());
            // A named queue takes the configuration of the Python Queue built for it.
            auto q = r.rt->create_queue(name, pq.core().config());
            r.types[name] = pq.record_type();
            return wrap_queue(q, pq.record_type());
        })
        .def("destroy_queue", [](PyRuntime &r, const std::string &name) {
            key_error_for_missing([&] { r.rt->destroy_queue(name); });
            r.types.erase(name);
        })
        .def("connect", [](PyRuntime &r, PyKernel &src, PyKernel &dst, const std::string &channel) {
            const std::string name = key_error_for_missing([&] { return r.rt->connect(*src.k, *dst.k, channel); });
            r.types[name] = src.out_type;
            return name;
        })
        .def("bridge", [](PyRuntime &r, PyKernel &src, PyKernel &dst, const std::string &channel) {
            return key_error_for_missing([&] { return r.rt->bridge(*src.k, *dst.k, channel); });
        })
        .def("create_topic", [](PyRuntime &r, const std::string &name, const py::object &record_type) {
            r.rt->create_topic(name, record_size_of(record_type), type_id_of(record_type));
        })
        .def("subscribe", [](PyRuntime &r, const std::string &topic, PyKernel &k) {
            key_error_for_missing([&] { r.rt->subscribe(topic, *k.k); });
            r.types[topic + "=>" + k.k->name()] = k.in_type;
        })
        .def("connect_topic", [](PyRuntime &r, PyKernel &src, const std::string &topic, const std::string &channel) {
            key_error_for_missing([&] { r.rt->connect_topic(*src.k, topic, channel); });
        })
        .def("topic_subscribers", [](PyRuntime &r, const std::string &topic) {
            return key_error_for_missing([&] { return r.rt->topic(topic).subscribers; });
        })
        .def("publish", [](PyRuntime &r, const std::string &topic, const py::object &queue_view,
                           const py::object &record, const py::object &timeout) {
            std::vector<std::uint8_t> bytes(queue_of(queue_view.ptr()).core().config().payload_size);
            queue_of(queue_view.ptr()).encode(record, bytes.data());
            const std::int64_t ns = timeout_ns(timeout);
            return key_error_for_missing([&] {
                return without_gil([&] { return r.rt->publish(topic, bytes.data(), {}, wait_for(ns)); });
            });
        });
    // The buffer methods (buffer ... release_buffer), in bind_buffers.cpp.
    bind_buffers(runtime);
    runtime
        .def("close", [](PyRuntime &r, const py::object &timeout) {
            const std::int64_t ns = timeout_ns(timeout);
            without_gil([&] { r.rt->close(ns < 0 ? -1 : ns); });
        }, "timeout"_a = 5.0);
}

}  // namespace rkpy
