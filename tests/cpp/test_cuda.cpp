// test_cuda.cpp — the CUDA backend (ctest label `cuda`).
//
// NVRTC compiles portable-source handlers without a GPU, so those tests run wherever NVRTC is found
// (the nvidia-cuda-nvrtc wheel in CI). Everything else needs a GPU and skips with the reason without
// one. scripts/gpu_check.sh runs it on a GPU, and parts of it under compute-sanitizer (memcheck, racecheck).
#include <gtest/gtest.h>

#include <sys/resource.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <cstring>
#include <dirent.h>
#include <string>
#include <thread>
#include <vector>

#include "../../csrc/backends/cuda/nvrtc.hpp"
#include "ringkernel/clock.hpp"
#include "ringkernel/runtime.hpp"
#include "rk_builtins.h"

namespace {

// Waits stretch with $RINGKERNEL_CUDA_TIMEOUT_SCALE, as the backend's own deadlines do: scripts/gpu_check.sh
// sets it under compute-sanitizer, where kernels run many times slower.
const std::int64_t kSecond = [] {
    const char *env = std::getenv("RINGKERNEL_CUDA_TIMEOUT_SCALE");
    const double scale = env && *env ? std::atof(env) : 1.0;
    return static_cast<std::int64_t>(1e9 * (scale >= 1.0 && scale <= 1000.0 ? scale : 1.0));
}();

struct Rec {
    std::uint64_t seq;
    double value;
};

const char *kTwice = R"(
typedef struct { rk_u64 seq; rk_f64 value; } rec;
int twice(rk_ctx *ctx, RK_GLOBAL const void *in, RK_LOCAL void *out) {
    RK_GLOBAL const rec *r = (RK_GLOBAL const rec *)in;
    RK_LOCAL rec *o = (RK_LOCAL rec *)out;
    o->seq = r->seq;
    o->value = 2.0 * r->value;
    return RK_REPLY;
}
)";

// Every thread of the block adds its rank + 1 through rk_shared with barriers: the reply carries the sum.
const char *kBlockSum = R"(
typedef struct { rk_u64 seq; rk_f64 value; } rec;
int block_sum(rk_ctx *ctx, RK_GLOBAL const void *in, RK_LOCAL void *out) {
    RK_LOCAL rk_f64 *part = (RK_LOCAL rk_f64 *)rk_shared(ctx);
    rk_u32 t = rk_thread_rank(ctx), n = rk_thread_count(ctx);
    part[t] = ((RK_GLOBAL const rec *)in)->value * (t + 1);
    rk_barrier(ctx);
    for (rk_u32 s = 1; s < n; s *= 2) {
        rk_f64 mine = (t % (2 * s) == 0 && t + s < n) ? part[t + s] : 0.0;
        rk_barrier(ctx);
        part[t] += mine;
        rk_barrier(ctx);
    }
    if (t == 0) {
        ((RK_LOCAL rec *)out)->seq = ((RK_GLOBAL const rec *)in)->seq;
        ((RK_LOCAL rec *)out)->value = part[0];
    }
    return RK_REPLY;
}
)";

// Busy for `value` ms of device clock, then echoes.
const char *kBusy = R"(
typedef struct { rk_u64 seq; rk_f64 value; } rec;
int busy(rk_ctx *ctx, RK_GLOBAL const void *in, RK_LOCAL void *out) {
    RK_GLOBAL const rec *r = (RK_GLOBAL const rec *)in;
    rk_u64 until = rk_now_ns(ctx) + (rk_u64)(r->value * 1e6);
    while (rk_now_ns(ctx) < until) {}
    ((RK_LOCAL rec *)out)->seq = r->seq;
    ((RK_LOCAL rec *)out)->value = r->value;
    return RK_REPLY;
}
)";

rk::RuntimeConfig private_cache() {
    rk::RuntimeConfig cfg;
    char tmpl[] = "/tmp/rk-cuda-test-XXXXXX";
    const char *dir = ::mkdtemp(tmpl);
    if (dir) cfg.cache_dir = dir;
    return cfg;
}

std::string nvrtc_skip() {
    bool found = false;
    const std::string why = rk::nvrtc_status(&found);
    return found ? std::string() : why;
}

std::string gpu_skip() {
    for (const auto &s : rk::backend_statuses())
        if (s.name == "cuda") return s.available ? std::string() : s.detail;
    return "no cuda backend status";
}

rk::KernelSpec spec(const std::string &name, rk::Handler h, std::uint32_t grid = 1, std::uint32_t block = 1) {
    rk::KernelSpec s;
    s.name = name;
    s.handler = std::move(h);
    s.input_size = s.output_size = sizeof(Rec);
    s.grid = grid;
    s.block = block;
    return s;
}

bool send(rk::Kernel &k, const Rec &r) { return k.input()->send(&r, {}, rk::Wait::for_ns(5 * kSecond)); }

bool receive(rk::Queue &q, Rec *out, rk_envelope *env = nullptr) {
    return q.receive(out, env, rk::Wait::for_ns(5 * kSecond));
}

int threads() {
    int n = 0;
    if (DIR *d = ::opendir("/proc/self/task")) {
        while (const dirent *e = ::readdir(d))
            if (e->d_name[0] != '.') ++n;
        ::closedir(d);
    }
    return n;
}

}  // namespace

// ---- NVRTC, no GPU needed ----------------------------------------------------------------------------

TEST(CudaNvrtc, CompilesTheDialectToACubinAndCachesIt) {
    if (const auto why = nvrtc_skip(); !why.empty()) GTEST_SKIP() << why;
    const auto cfg = private_cache();
    const rk::CudaImage a = rk::compile_cuda_source(kBlockSum, "block_sum", 90, cfg);
    EXPECT_FALSE(a.ptx);
    EXPECT_EQ(a.arch, "sm_90");
    ASSERT_GT(a.data.size(), 4u);
    EXPECT_EQ(a.data.compare(0, 4, "\x7f" "ELF"), 0);  // a cubin is an ELF image
    const rk::CudaImage again = rk::compile_cuda_source(kBlockSum, "block_sum", 90, cfg);
    EXPECT_EQ(again.path, a.path);
    EXPECT_EQ(again.data, a.data);
    const rk::CudaImage older = rk::compile_cuda_source(kBlockSum, "block_sum", 80, cfg);
    EXPECT_EQ(older.arch, "sm_80");
    EXPECT_NE(older.path, a.path);
}

TEST(CudaNvrtc, AGpuNewerThanNvrtcGetsPtx) {
    if (const auto why = nvrtc_skip(); !why.empty()) GTEST_SKIP() << why;
    const rk::CudaImage img = rk::compile_cuda_source(kTwice, "twice", 990, private_cache());
    EXPECT_TRUE(img.ptx);
    EXPECT_EQ(img.arch.rfind("compute_", 0), 0u) << img.arch;
    EXPECT_NE(img.data.find(".entry rk_persistent"), std::string::npos);
    EXPECT_NE(img.data.find("globaltimer"), std::string::npos);  // the clock is the device's
}

TEST(CudaNvrtc, ErrorsCarryTheLogAndBadArgumentsAreRefused) {
    if (const auto why = nvrtc_skip(); !why.empty()) GTEST_SKIP() << why;
    const auto cfg = private_cache();
    try {
        rk::compile_cuda_source("int h(rk_ctx *c, RK_GLOBAL const void *i, RK_LOCAL void *o) {\n  return nope;\n}", "h",
                                90, cfg);
        FAIL() << "expected CompileError";
    } catch (const rk::CompileError &e) {
        EXPECT_NE(e.log().find("nope"), std::string::npos) << e.log();
        EXPECT_NE(e.log().find("handler(2)"), std::string::npos) << e.log();  // the user's line numbers
        EXPECT_NE(std::string(e.what()).find("NVRTC"), std::string::npos);
    }
    EXPECT_THROW(rk::compile_cuda_source(kTwice, "not an identifier", 90, cfg), std::invalid_argument);
    EXPECT_THROW(rk::compile_cuda_source("", "h", 90, cfg), std::invalid_argument);
    EXPECT_THROW(rk::compile_cuda_source(kTwice, "twice", 60, cfg), std::invalid_argument);
}

TEST(CudaNvrtc, CompareAndSwapTakesTheStrongerOfItsTwoOrders) {
    if (const auto why = nvrtc_skip(); !why.empty()) GTEST_SKIP() << why;
    // Release on success with acquire on failure must be one acq_rel atom (not a release that drops the
    // acquire); nothing in the loop itself uses a releasing CAS, so none may appear.
    const rk::CudaImage img = rk::compile_cuda_source(R"(
int h(rk_ctx *ctx, RK_GLOBAL const void *in, RK_LOCAL void *out) {
    rk_u64 seen = 0;
    rk_atomic_cas_u64(&ctx->cb->next_reply_id, &seen, 1, RK_RELEASE, RK_ACQUIRE, RK_SCOPE_SYSTEM);
    return RK_NO_REPLY;
}
)", "h", 990, private_cache());
    ASSERT_TRUE(img.ptx);
    EXPECT_EQ(img.data.find("atom.release.sys.cas"), std::string::npos);
    EXPECT_NE(img.data.find("atom.acq_rel.sys.cas.b64"), std::string::npos);
    EXPECT_NE(img.data.find("ld.acquire.sys"), std::string::npos);  // the loop's flag reads cross PCIe
}

// ---- on a GPU ------------------------------------------------------------------------------------------

#define REQUIRE_GPU()                                                                                       \
    do {                                                                                                    \
        if (const auto why = gpu_skip(); !why.empty()) GTEST_SKIP() << why;                                 \
    } while (0)

TEST(CudaRuntime, EchoKeepsOrderStampsAndCounts) {
    REQUIRE_GPU();
    rk::Runtime rt("cuda");
    auto k = rt.launch(spec("echo", rk::Handler::builtin("echo"), 1, 32));
    EXPECT_EQ(k->mode(), rk::KernelMode::Persistent);
    k->enable_telemetry();
    k->activate();
    const std::uint64_t before = rk::wall_ns();
    for (std::uint64_t i = 0; i < 1000; ++i) ASSERT_TRUE(send(*k, Rec{i, 0.5 * static_cast<double>(i)}));
    std::uint64_t prev = 0;
    for (std::uint64_t i = 0; i < 1000; ++i) {
        Rec r{};
        rk_envelope env{};
        ASSERT_TRUE(receive(*k->output(), &r, &env)) << "reply " << i;
        EXPECT_EQ(r.seq, i);  // one block: request order
        EXPECT_GT(env.timestamp, prev);
        prev = env.timestamp;
        EXPECT_GE(env.enqueue_ns + 1'000'000, before);  // device clock on the host's time line
        EXPECT_LE(env.enqueue_ns, rk::wall_ns() + 1'000'000);
    }
    EXPECT_EQ(k->messages_processed(), 1000u);
    const auto t = k->telemetry();
    EXPECT_EQ(t.messages_processed, 1000u);
    EXPECT_GT(t.min_latency_ns, 0u);
    EXPECT_LE(t.min_latency_ns, t.max_latency_ns);
    EXPECT_EQ(k->terminate(5 * kSecond), rk::KernelState::Terminated);
}

TEST(CudaRuntime, VectorAddThroughDeviceBuffers) {
    REQUIRE_GPU();
    rk::Runtime rt("cuda");
    rk::KernelSpec s;
    s.name = "adder";
    s.handler = rk::Handler::builtin("vector_add");
    s.input_size = sizeof(rk_vector_add_request);
    s.output_size = sizeof(rk_vector_add_response);
    s.block = 128;
    auto k = rt.launch(s);
    k->activate();
    constexpr std::size_t n = 10000;
    std::vector<float> a(n), b(n), out(n);
    for (std::size_t i = 0; i < n; ++i) {
        a[i] = static_cast<float>(i);
        b[i] = 2.0f;
    }
    const rk::Buffer ba = rt.buffer(n * 4), bb = rt.buffer(n * 4), bo = rt.buffer(n * 4);
    EXPECT_GE(ba.device, 0);  // device memory
    rt.write_buffer(ba.handle, 0, a.data(), n * 4);
    rt.write_buffer(bb.handle, 0, b.data(), n * 4);
    rk_vector_add_request req{};
    req.op = RK_VECTOR_MULTIPLY;
    req.length = n;
    req.a_buf = ba.handle;
    req.b_buf = bb.handle;
    req.out_buf = bo.handle;
    ASSERT_TRUE(k->input()->send(&req, {}, rk::Wait::for_ns(5 * kSecond)));
    rk_vector_add_response resp{};
    ASSERT_TRUE(k->output()->receive(&resp, nullptr, rk::Wait::for_ns(5 * kSecond)));
    EXPECT_EQ(resp.status, 0);
    EXPECT_EQ(resp.length, n);
    rt.read_buffer(bo.handle, 0, out.data(), n * 4);
    for (std::size_t i = 0; i < n; ++i) ASSERT_EQ(out[i], 2.0f * static_cast<float>(i)) << i;
    EXPECT_THROW(rt.read_buffer(bo.handle, n * 4 - 2, out.data(), 4), std::invalid_argument);
}

TEST(CudaRuntime, SourceHandlersCooperateAcrossTheBlock) {
    REQUIRE_GPU();
    rk::Runtime rt("cuda", private_cache());
    auto k = rt.launch(spec("sum", rk::Handler::source(kBlockSum, "block_sum"), 2, 64));
    k->activate();
    for (std::uint64_t i = 0; i < 100; ++i) ASSERT_TRUE(send(*k, Rec{i, 1.0}));
    std::vector<bool> seen(100, false);
    for (int i = 0; i < 100; ++i) {
        Rec r{};
        ASSERT_TRUE(receive(*k->output(), &r));
        ASSERT_LT(r.seq, 100u);
        EXPECT_FALSE(seen[r.seq]);
        seen[r.seq] = true;
        EXPECT_EQ(r.value, 64.0 * 65.0 / 2.0);
    }
}

// A module built outside the library (as rk.jit's nvJitLink link is) runs as a handler image: here the
// image is NVRTC's cubin of an rk.Source, compiled for the device the runtime reports.
TEST(CudaRuntime, HandlerImagesBuiltElsewhereRun) {
    REQUIRE_GPU();
    const auto cfg = private_cache();
    rk::Runtime rt("cuda", cfg);
    const std::string target = rt.device_target();
    ASSERT_EQ(target.rfind("sm_", 0), 0u) << target;
    const rk::CudaImage img = rk::compile_cuda_source(kTwice, "twice", std::stoi(target.substr(3)), cfg);
    auto k = rt.launch(spec("img", rk::Handler::image("twice", "cuda", img.data, rk::kCudaSourceKernel), 2, 1));
    EXPECT_EQ(k->spec().handler.describe(), "image:cuda:twice");
    k->activate();
    for (std::uint64_t i = 0; i < 200; ++i) ASSERT_TRUE(send(*k, Rec{i, static_cast<double>(i)}));
    std::vector<bool> seen(200, false);
    for (int i = 0; i < 200; ++i) {
        Rec r{};
        ASSERT_TRUE(receive(*k->output(), &r)) << i;
        ASSERT_LT(r.seq, 200u);
        EXPECT_FALSE(seen[r.seq]);
        seen[r.seq] = true;
        EXPECT_EQ(r.value, 2.0 * static_cast<double>(r.seq));
    }
    EXPECT_EQ(k->terminate(), rk::KernelState::Terminated);
    // An entry the image lacks, and bytes that are no image, are refused at launch with the reason.
    EXPECT_THROW(rt.launch(spec("noentry", rk::Handler::image("twice", "cuda", img.data, "no_such_kernel"))),
                 rk::CompileError);
    try {
        rt.launch(spec("junk", rk::Handler::image("junk", "cuda", std::string(256, 'x'), rk::kCudaSourceKernel)));
        ADD_FAILURE() << "junk bytes loaded as an image";
    } catch (const rk::CompileError &e) {
        EXPECT_NE(std::string(e.what()).find("handler image 'junk'"), std::string::npos) << e.what();
    }
    EXPECT_THROW(rt.launch(spec("wrong", rk::Handler::image("x", "opencl", img.data, rk::kCudaSourceKernel))),
                 std::invalid_argument);
}

TEST(CudaRuntime, KernelsOnOneGpuMessageEachOther) {
    REQUIRE_GPU();
    rk::Runtime rt("cuda", private_cache());
    auto a = rt.launch(spec("a", rk::Handler::source(kTwice, "twice"), 2, 1));
    auto b = rt.launch(spec("b", rk::Handler::builtin("echo"), 2, 1));
    EXPECT_EQ(rt.connect(*a, *b).find("host bridge"), std::string::npos);
    a->activate();
    b->activate();
    for (std::uint64_t i = 0; i < 5000; ++i) ASSERT_TRUE(send(*a, Rec{i, static_cast<double>(i)}));
    std::vector<bool> seen(5000, false);
    for (int i = 0; i < 5000; ++i) {
        Rec r{};
        ASSERT_TRUE(receive(*b->output(), &r)) << i;
        ASSERT_LT(r.seq, 5000u);
        EXPECT_FALSE(seen[r.seq]) << "duplicate " << r.seq;
        seen[r.seq] = true;
        EXPECT_EQ(r.value, 2.0 * static_cast<double>(r.seq));
    }
    EXPECT_EQ(a->terminate(5 * kSecond), rk::KernelState::Terminated);
    EXPECT_EQ(b->terminate(5 * kSecond), rk::KernelState::Terminated);
}

TEST(CudaRuntime, TerminateWhileTheHandlerIsBusy) {
    REQUIRE_GPU();
    rk::Runtime rt("cuda", private_cache());
    auto k = rt.launch(spec("busy", rk::Handler::source(kBusy, "busy")));
    k->activate();
    for (std::uint64_t i = 0; i < 20; ++i) ASSERT_TRUE(send(*k, Rec{i, 20.0}));
    Rec r{};
    ASSERT_TRUE(receive(*k->output(), &r));
    const auto t0 = std::chrono::steady_clock::now();
    EXPECT_EQ(k->terminate(5 * kSecond), rk::KernelState::Terminated);
    EXPECT_LT(std::chrono::steady_clock::now() - t0, std::chrono::seconds(2));
}

TEST(CudaRuntime, LaunchTerminateCyclesDoNotLeak) {
    REQUIRE_GPU();
    rk::Runtime rt("cuda");
    auto cycle = [&](std::uint64_t i) {
        auto k = rt.launch(spec("cyc", rk::Handler::builtin("echo")));
        k->activate();
        ASSERT_TRUE(send(*k, Rec{i, 0}));
        Rec r{};
        ASSERT_TRUE(receive(*k->output(), &r));
        ASSERT_EQ(r.seq, i);
        ASSERT_EQ(k->terminate(5 * kSecond), rk::KernelState::Terminated);
    };
    for (std::uint64_t i = 0; i < 50; ++i) cycle(i);
    const int t0 = threads();
    rusage ru{};
    ::getrusage(RUSAGE_SELF, &ru);
    const long rss0 = ru.ru_maxrss;
    for (std::uint64_t i = 0; i < 1000; ++i) cycle(i);
    EXPECT_EQ(threads(), t0);
    ::getrusage(RUSAGE_SELF, &ru);
    EXPECT_LT(ru.ru_maxrss - rss0, 20'000) << "KiB";
    EXPECT_TRUE(rt.queue_names().empty());
}

TEST(CudaRuntime, LaunchesThatCannotBeCoResidentAreRefused) {
    REQUIRE_GPU();
    rk::Runtime rt("cuda");
    std::vector<std::shared_ptr<rk::Kernel>> ks;
    bool refused = false;
    for (int i = 0; i < 64 && !refused; ++i) {
        try {
            ks.push_back(rt.launch(spec("wide" + std::to_string(i), rk::Handler::builtin("echo"), 64, 1024)));
        } catch (const std::invalid_argument &e) {
            refused = true;
            EXPECT_NE(std::string(e.what()).find("resident"), std::string::npos) << e.what();
        }
    }
    EXPECT_TRUE(refused);
    ASSERT_FALSE(ks.empty());
    EXPECT_EQ(ks[0]->terminate(5 * kSecond), rk::KernelState::Terminated);
    auto again = rt.launch(spec("again", rk::Handler::builtin("echo"), 64, 1024));  // the share came back
    again->activate();
    ASSERT_TRUE(send(*again, Rec{7, 0}));
    Rec r{};
    ASSERT_TRUE(receive(*again->output(), &r));
    EXPECT_EQ(r.seq, 7u);
}

TEST(CudaRuntime, DispatchModeIsRefusedWithTheReason) {
    REQUIRE_GPU();
    rk::Runtime rt("cuda");
    auto s = spec("d", rk::Handler::builtin("echo"));
    s.mode = rk::KernelMode::Dispatch;
    EXPECT_THROW(rt.launch(s), std::invalid_argument);
}
