// The persistent ring-kernel loop of rk_kernel.h on a real OpenCL device (PoCL in CI): the built-in
// echo and vector_add handlers are compiled by clBuildProgram into resident kernels whose control
// block, routes and rings live in fine-grained SVM; the host sends through the input ring, reads the
// replies from the output ring and the counters from the control block -- all without an OpenCL call
// -- then tells the kernel to terminate and watches it leave on its own.
#include <gtest/gtest.h>

#define CL_TARGET_OPENCL_VERSION 300
#include <CL/cl.h>

#include <atomic>
#include <cstdlib>
#include <chrono>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

#include "ringkernel/clock.hpp"
#include "ringkernel/runtime.hpp"
#include "rk_builtins.h"

namespace {

using Clock = std::chrono::steady_clock;

struct Device {
    cl_platform_id platform = nullptr;
    cl_device_id device = nullptr;
    cl_context ctx = nullptr;
    cl_command_queue queue = nullptr;
    std::string skip;
    std::string version;

    Device() {
        cl_uint n = 0;
        if (clGetPlatformIDs(1, &platform, &n) != CL_SUCCESS || n == 0) {
            skip = "no OpenCL platform (install pocl-opencl-icd)";
            return;
        }
        if (clGetDeviceIDs(platform, CL_DEVICE_TYPE_ALL, 1, &device, &n) != CL_SUCCESS || n == 0) {
            skip = "no OpenCL device on the first platform";
            return;
        }
        char buf[256] = {};
        clGetDeviceInfo(device, CL_DEVICE_VERSION, sizeof buf - 1, buf, nullptr);
        version = buf;
        cl_device_svm_capabilities svm = 0;
        if (version.rfind("OpenCL 1.", 0) == 0 ||
            clGetDeviceInfo(device, CL_DEVICE_SVM_CAPABILITIES, sizeof svm, &svm, nullptr) != CL_SUCCESS ||
            !(svm & CL_DEVICE_SVM_FINE_GRAIN_BUFFER) || !(svm & CL_DEVICE_SVM_ATOMICS)) {
            skip = "device " + version + " has no fine-grained SVM with atomics (persistent mode needs it)";
            return;
        }
        cl_int err;
        ctx = clCreateContext(nullptr, 1, &device, nullptr, nullptr, &err);
        queue = clCreateCommandQueueWithProperties(ctx, device, nullptr, &err);
    }
    ~Device() {
        if (queue) clReleaseCommandQueue(queue);
        if (ctx) clReleaseContext(ctx);
    }
    void *svm(std::size_t bytes) const {
        void *p = clSVMAlloc(ctx, CL_MEM_READ_WRITE | CL_MEM_SVM_FINE_GRAIN_BUFFER | CL_MEM_SVM_ATOMICS, bytes, 128);
        if (p) std::memset(p, 0, bytes);
        return p;
    }
};

// Build `handler` into a persistent kernel; "" and the program on success, else the build log.
std::string build(const Device &d, const std::string &handler, const std::string &std_flag, std::uint32_t out_bytes,
                  cl_program *out) {
    const std::string src = "#include \"rk_builtins.h\"\n"
                            "RK_DEFINE_BLOCK_STEP(rk_step, " + handler + ")\n"
                            "RK_DEFINE_OPENCL_KERNEL(rk_persistent, rk_step, " + std::to_string(out_bytes) + ", 8)\n";
    const char *p = src.c_str();
    cl_int err;
    cl_program prog = clCreateProgramWithSource(d.ctx, 1, &p, nullptr, &err);
    const std::string opts = std_flag + " -I " RINGKERNEL_INCLUDE_DIR " -I " RINGKERNEL_DEVICE_DIR;
    if (clBuildProgram(prog, 1, &d.device, opts.c_str(), nullptr, nullptr) != CL_SUCCESS) {
        size_t size = 0;
        clGetProgramBuildInfo(prog, d.device, CL_PROGRAM_BUILD_LOG, 0, nullptr, &size);
        std::string log(size, '\0');
        clGetProgramBuildInfo(prog, d.device, CL_PROGRAM_BUILD_LOG, size, log.data(), nullptr);
        clReleaseProgram(prog);
        return "build failed (" + opts + "):\n" + log;
    }
    *out = prog;
    return "";
}

// One resident kernel with an input and an output ring in SVM, driven from the host.
struct Resident {
    const Device &d;
    rk_control_block *cb;
    rk_telemetry *tel;
    rk_routes *routes;
    rk_u64 *routes_word;
    rk_kernel_params *params;
    rk_ring_header *in, *out;
    cl_kernel kernel = nullptr;
    cl_event done = nullptr;
    std::atomic<bool> ticking{true};
    std::thread clock;

    Resident(const Device &dev, cl_program prog, std::uint32_t in_size, std::uint32_t out_size, std::size_t threads)
        : d(dev) {
        cb = static_cast<rk_control_block *>(d.svm(sizeof(rk_control_block)));
        tel = static_cast<rk_telemetry *>(d.svm(sizeof(rk_telemetry)));
        routes = static_cast<rk_routes *>(d.svm(sizeof(rk_routes)));
        routes_word = static_cast<rk_u64 *>(d.svm(sizeof(rk_u64)));
        params = static_cast<rk_kernel_params *>(d.svm(sizeof(rk_kernel_params)));
        const rk_u32 cap = 64;
        in = static_cast<rk_ring_header *>(d.svm(rk_ring_bytes(cap, rk_ring_slot_stride(in_size))));
        out = static_cast<rk_ring_header *>(d.svm(rk_ring_bytes(cap, rk_ring_slot_stride(out_size))));
        rk_ring_init(in, cap, rk_ring_slot_stride(in_size), 0);
        rk_ring_init(out, cap, rk_ring_slot_stride(out_size), 0);
        routes->n_inputs = 1;
        routes->inputs[0].ring = in;
        routes->n_channels = 1;
        routes->channels[0].count = 1;
        routes->channels[0].targets[0].ring = out;
        *routes_word = reinterpret_cast<std::uintptr_t>(routes);
        cb->node = 7;
        cb->telemetry_enabled = 1;
        cb->clock_ns = rk::wall_ns();
        params->control_block = reinterpret_cast<std::uintptr_t>(cb);
        params->telemetry = reinterpret_cast<std::uintptr_t>(tel);
        params->routes_word = reinterpret_cast<std::uintptr_t>(routes_word);
        params->in_size = in_size;
        params->out_size = out_size;
        params->node = 7;
        params->reply_id_base = 1ull << 62;
        // The device has no wall clock: the host publishes one (the OpenCL backend's bridge does this).
        clock = std::thread([this] {
            while (ticking) {
                __atomic_store_n(&cb->clock_ns, rk::wall_ns(), __ATOMIC_RELAXED);
                std::this_thread::sleep_for(std::chrono::microseconds(100));
            }
        });
        cl_int err;
        kernel = clCreateKernel(prog, "rk_persistent", &err);
        void *svm_ptrs[] = {cb, tel, routes, routes_word, in, out};
        clSetKernelExecInfo(kernel, CL_KERNEL_EXEC_INFO_SVM_PTRS, sizeof svm_ptrs, svm_ptrs);
        clSetKernelArgSVMPointer(kernel, 0, params);
        size_t global = threads, local = threads;
        EXPECT_EQ(clEnqueueNDRangeKernel(d.queue, kernel, 1, nullptr, &global, &local, 0, nullptr, &done), CL_SUCCESS);
        clFlush(d.queue);
    }

    void activate() { __atomic_store_n(&cb->is_active, 1, __ATOMIC_RELEASE); }

    bool send(const void *payload, std::uint32_t size, std::uint64_t id) {
        rk_envelope env{};
        env.message_id = id;
        env.payload_size = size;
        env.enqueue_ns = rk::wall_ns();
        env.timestamp = (env.enqueue_ns / 1000000u) << 16;
        return rk_ring_try_push(in, &env, static_cast<const rk_u8 *>(payload), 0, RK_SCOPE_SYSTEM);
    }

    bool receive(void *payload, std::uint32_t cap, rk_envelope *env, double seconds) {
        const auto deadline = Clock::now() + std::chrono::duration<double>(seconds);
        while (Clock::now() < deadline)
            if (rk_ring_try_pop(out, env, static_cast<rk_u8 *>(payload), cap, 0, RK_SCOPE_SYSTEM)) return true;
        return false;
    }

    // Ask the blocks to leave and wait (without blocking in OpenCL) until the command completes.
    bool terminate(double seconds) {
        __atomic_store_n(&cb->should_terminate, 1, __ATOMIC_RELEASE);
        const auto deadline = Clock::now() + std::chrono::duration<double>(seconds);
        cl_int status = CL_QUEUED;
        while (Clock::now() < deadline) {
            clGetEventInfo(done, CL_EVENT_COMMAND_EXECUTION_STATUS, sizeof status, &status, nullptr);
            if (status == CL_COMPLETE || status < 0) break;
            std::this_thread::sleep_for(std::chrono::milliseconds(1));
        }
        return status == CL_COMPLETE;
    }

    ~Resident() {
        ticking = false;
        clock.join();
        if (done) {
            clWaitForEvents(1, &done);  // terminate() has returned true by now in every passing test
            clReleaseEvent(done);
        }
        if (kernel) clReleaseKernel(kernel);
        for (void *p : {static_cast<void *>(cb), static_cast<void *>(tel), static_cast<void *>(routes),
                        static_cast<void *>(routes_word), static_cast<void *>(params), static_cast<void *>(in),
                        static_cast<void *>(out)})
            clSVMFree(d.ctx, p);
    }
};

std::string std_flag(const Device &d, bool c11) {
    if (!c11) return "-cl-std=CL1.2";
    return d.version.rfind("OpenCL 3.", 0) == 0 ? "-cl-std=CL3.0" : "-cl-std=CL2.0";
}

class OpenClKernel : public ::testing::TestWithParam<bool> {};

TEST_P(OpenClKernel, EchoStaysResidentAndAnswersInOrder) {
    Device d;
    if (!d.skip.empty()) GTEST_SKIP() << d.skip;
    cl_program prog = nullptr;
    ASSERT_EQ(build(d, "rk_builtin_echo", std_flag(d, GetParam()), 64, &prog), "");
    {
        Resident k(d, prog, 64, 64, 8);
        std::uint8_t rec[64], got[64];
        ASSERT_TRUE(k.send(rec, 64, 1));  // inactive: it waits in the ring
        std::this_thread::sleep_for(std::chrono::milliseconds(20));
        EXPECT_EQ(__atomic_load_n(&k.cb->messages_processed, __ATOMIC_ACQUIRE), 0);
        rk_envelope env{};
        ASSERT_TRUE(k.receive(got, 64, &env, 0.01) == false);
        k.activate();
        ASSERT_TRUE(k.receive(got, 64, &env, 5.0));
        const int n = 2000;
        int received = 0;
        std::uint64_t last_stamp = env.timestamp;
        for (int i = 0; i < n; ++i) {
            std::memset(rec, 0, sizeof rec);
            std::memcpy(rec, &i, sizeof i);
            while (!k.send(rec, 64, 100 + static_cast<std::uint64_t>(i))) {  // ring full: take replies
                ASSERT_TRUE(k.receive(got, 64, &env, 5.0));
                int seq;
                std::memcpy(&seq, got, sizeof seq);
                ASSERT_EQ(seq, received++);
                ASSERT_EQ(env.correlation_id, 100u + static_cast<std::uint64_t>(seq));
                ASSERT_GT(env.timestamp, last_stamp);
                ASSERT_EQ(env.source_kernel, 7);
                last_stamp = env.timestamp;
            }
        }
        while (received < n) {
            ASSERT_TRUE(k.receive(got, 64, &env, 5.0)) << "reply " << received << " missing";
            int seq;
            std::memcpy(&seq, got, sizeof seq);
            ASSERT_EQ(seq, received++);
        }
        // Counters straight from the control block and telemetry, read while the kernel runs.
        EXPECT_EQ(__atomic_load_n(&k.cb->messages_processed, __ATOMIC_ACQUIRE), n + 1);
        EXPECT_EQ(__atomic_load_n(&k.tel->messages_processed, __ATOMIC_ACQUIRE), static_cast<std::uint64_t>(n + 1));
        EXPECT_TRUE(k.terminate(5.0)) << "the resident kernel did not leave";
        EXPECT_EQ(k.cb->has_terminated, 1);
        EXPECT_EQ(k.cb->blocks_exited, 1);
    }
    clReleaseProgram(prog);
}

TEST_P(OpenClKernel, VectorAddBlockThreadsShareTheElements) {
    Device d;
    if (!d.skip.empty()) GTEST_SKIP() << d.skip;
    cl_program prog = nullptr;
    ASSERT_EQ(build(d, "rk_builtin_vector_add", std_flag(d, GetParam()), sizeof(rk_vector_add_response), &prog), "");
    {
        Resident k(d, prog, sizeof(rk_vector_add_request), sizeof(rk_vector_add_response), 32);
        k.activate();
        for (rk_u32 op = 0; op < 4; ++op) {
            rk_vector_add_request req{};
            req.op = static_cast<rk_u8>(op);
            req.length = 25;
            for (int i = 0; i < 25; ++i) {
                req.a[i] = static_cast<float>(i + 1);
                req.b[i] = 4.0f;
            }
            ASSERT_TRUE(k.send(&req, sizeof req, op + 1));
            rk_vector_add_response resp{};
            rk_envelope env{};
            ASSERT_TRUE(k.receive(&resp, sizeof resp, &env, 5.0));
            ASSERT_EQ(resp.status, 0);
            ASSERT_EQ(resp.length, 25u);
            for (int i = 0; i < 25; ++i)
                EXPECT_FLOAT_EQ(resp.result[i], rk_vector_apply(op, static_cast<float>(i + 1), 4.0f)) << "op " << op;
        }
        rk_vector_add_request bad{};
        bad.op = 9;
        bad.length = 3;
        ASSERT_TRUE(k.send(&bad, sizeof bad, 99));
        rk_vector_add_response resp{};
        rk_envelope env{};
        ASSERT_TRUE(k.receive(&resp, sizeof resp, &env, 5.0));
        EXPECT_EQ(resp.status, RK_ERR_OPERATION);
        EXPECT_EQ(__atomic_load_n(&k.cb->errors_encountered, __ATOMIC_ACQUIRE), 1);
        EXPECT_TRUE(k.terminate(5.0));
    }
    clReleaseProgram(prog);
}

INSTANTIATE_TEST_SUITE_P(Dialect, OpenClKernel, ::testing::Values(false, true),
                         [](const ::testing::TestParamInfo<bool> &p) { return p.param ? "C11Atomics" : "OpenCLC12"; });

}  // namespace

// The OpenCL backend through the C++ runtime API: the same kernel in each mode the device offers.
namespace {

struct Echo {
    std::uint64_t seq;
    double value;
};

void round_trips(rk::Runtime &rt, const std::string &mode, std::uint32_t grid) {
    rk::KernelSpec s;
    s.name = "echo_" + mode;
    s.handler = rk::Handler::builtin("echo");
    s.input_size = s.output_size = sizeof(Echo);
    s.grid = grid;
    s.block = 4;
    s.mode = rk::kernel_mode_from_string(mode);
    auto k = rt.launch(s);
    EXPECT_EQ(rk::to_string(k->mode()), mode);
    k->enable_telemetry();
    k->activate();
    for (std::uint64_t i = 0; i < 500; ++i) {
        Echo e{i, 0.5 * static_cast<double>(i)};
        ASSERT_TRUE(k->input()->send(&e, {}, rk::Wait::for_ns(5'000'000'000)));
    }
    std::vector<bool> seen(500, false);
    for (int i = 0; i < 500; ++i) {
        Echo out{};
        ASSERT_TRUE(k->output()->receive(&out, nullptr, rk::Wait::for_ns(5'000'000'000))) << mode << " reply " << i;
        ASSERT_LT(out.seq, 500u);
        EXPECT_EQ(out.value, 0.5 * static_cast<double>(out.seq));
        EXPECT_FALSE(seen[out.seq]);
        seen[out.seq] = true;
    }
    EXPECT_EQ(k->messages_processed(), 500u);
    EXPECT_EQ(k->telemetry().messages_processed, 500u);
    EXPECT_EQ(k->terminate(5'000'000'000), rk::KernelState::Terminated);
}

}  // namespace

TEST(OpenClRuntime, PersistentAndDispatchModes) {
    Device d;
    if (!d.skip.empty()) GTEST_SKIP() << d.skip;
    rk::Runtime rt("opencl");
    round_trips(rt, "persistent", 1);
    round_trips(rt, "dispatch", 2);
}

TEST(OpenClRuntime, DispatchWithCopiesWhereMemoryIsNotShared) {
    Device d;
    if (!d.skip.empty()) GTEST_SKIP() << d.skip;
    ::setenv("RINGKERNEL_OPENCL_SVM", "0", 1);
    {
        rk::Runtime rt("opencl");
        round_trips(rt, "dispatch", 1);
        rk::KernelSpec s;
        s.name = "p";
        s.handler = rk::Handler::builtin("echo");
        s.input_size = s.output_size = sizeof(Echo);
        s.mode = rk::KernelMode::Persistent;
        EXPECT_THROW(rt.launch(s), std::invalid_argument);
    }
    ::unsetenv("RINGKERNEL_OPENCL_SVM");
}

TEST(OpenClRuntime, BuildErrorsCarryTheLog) {
    Device d;
    if (!d.skip.empty()) GTEST_SKIP() << d.skip;
    rk::Runtime rt("opencl");
    rk::KernelSpec s;
    s.name = "bad";
    s.handler = rk::Handler::source("int h(rk_ctx *c, RK_GLOBAL const void *i, RK_LOCAL void *o) { return nope; }", "h");
    s.input_size = s.output_size = 16;
    try {
        rt.launch(s);
        FAIL() << "expected CompileError";
    } catch (const rk::CompileError &e) {
        EXPECT_NE(e.log().find("nope"), std::string::npos) << e.log();
    }
}

TEST(OpenClRuntime, HandlerImagesOfOtherBackendsAreRefusedByName) {
    Device d;
    if (!d.skip.empty()) GTEST_SKIP() << d.skip;
    rk::Runtime rt("opencl");
    EXPECT_EQ(rt.device_target(), "");
    rk::KernelSpec s;
    s.name = "img";
    s.handler = rk::Handler::image("jit", "cuda", "\x7f" "ELF", "rk_persistent");
    s.input_size = s.output_size = 16;
    try {
        rt.launch(s);
        FAIL() << "expected invalid_argument";
    } catch (const std::invalid_argument &e) {
        EXPECT_NE(std::string(e.what()).find("built for backend 'cuda'"), std::string::npos) << e.what();
    }
}

// Under a RestartPolicy a persistent OpenCL kernel's block hands an rk_fault() to the host's supervisor and waits
// for its decision: redelivered through the kernel's first input until max_attempts, then a dead letter; past
// max_restarts the kernel is FAULTED and drain() returns the message in flight first.
TEST(OpenClRuntime, RestartsRedeliverThroughTheSupervisorAndDrainKeepsOrder) {
    Device d;
    if (!d.skip.empty()) GTEST_SKIP() << d.skip;
    struct Rec {
        std::uint64_t seq, value;
    };
    rk::Runtime rt("opencl");
    rk::KernelSpec s;
    s.name = "flaky";
    s.handler = rk::Handler::source(R"(
typedef struct { rk_u64 seq, value; } rec;
int flaky(rk_ctx *ctx, RK_GLOBAL const void *in, RK_LOCAL void *out) {
    RK_GLOBAL const rec *r = (RK_GLOBAL const rec *)in;
    if (r->value == 13) return rk_fault(ctx);
    *(RK_LOCAL rec *)out = *r;
    return RK_REPLY;
})", "flaky");
    s.input_size = s.output_size = sizeof(Rec);
    s.mode = rk::KernelMode::Persistent;
    s.restart = rk::RestartPolicy{};
    s.restart->max_restarts = 4;
    s.restart->max_attempts = 2;
    auto k = rt.launch(s);
    k->activate();
    auto send = [&](std::uint64_t seq, std::uint64_t value) {
        Rec r{seq, value};
        ASSERT_TRUE(k->input()->send(&r, {}, rk::Wait::for_ns(5'000'000'000)));
    };
    send(0, 0);
    send(1, 13);  // two deliveries, two restarts: a dead letter
    send(2, 0);
    std::vector<std::uint64_t> got;
    Rec r{};
    while (got.size() < 2 && k->output()->receive(&r, nullptr, rk::Wait::for_ns(5'000'000'000))) got.push_back(r.seq);
    EXPECT_EQ(got, (std::vector<std::uint64_t>{0, 2}));
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
    while (k->dead_letter_counts().total < 1 && std::chrono::steady_clock::now() < deadline)
        std::this_thread::sleep_for(std::chrono::milliseconds(1));
    std::vector<rk::DeadLetter> dead = k->dead_letters();
    ASSERT_EQ(dead.size(), 1u);
    EXPECT_EQ(dead[0].attempts, 2u);
    EXPECT_EQ(dead[0].code, RK_ERR_FAULT);
    EXPECT_EQ(k->restarts(), 2u);
    send(3, 13);  // restarts 3 and 4; the fifth fault is past max_restarts
    send(4, 13);
    send(5, 0);
    while (k->state() != rk::KernelState::Faulted && std::chrono::steady_clock::now() < deadline + std::chrono::seconds(10))
        std::this_thread::sleep_for(std::chrono::milliseconds(1));
    ASSERT_EQ(k->state(), rk::KernelState::Faulted);
    EXPECT_EQ(k->restarts(), 4u);
    EXPECT_EQ(k->terminate(5'000'000'000), rk::KernelState::Faulted);
    std::vector<rk::DeadLetter> left = k->drain();
    ASSERT_EQ(left.size(), 2u);  // 4 (in flight, delivered once) then 5; 3 became a dead letter
    for (std::size_t i = 0; i < left.size(); ++i) {
        std::memcpy(&r, left[i].record.data(), sizeof r);
        EXPECT_EQ(r.seq, 4 + i);
    }
    EXPECT_EQ(k->dead_letters().size(), 2u);
}
