// Ring kernels on the CPU backend, end to end through the C++ API.
#include <gtest/gtest.h>
#include <dirent.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstring>
#include <thread>

#include "ringkernel/native_api.h"
#include "ringkernel/ringkernel.hpp"
#include "rk_builtins.h"

namespace {

using namespace std::chrono_literals;

#if defined(__SANITIZE_THREAD__)
constexpr bool kThreadSanitizer = true;
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
constexpr bool kThreadSanitizer = true;
#else
constexpr bool kThreadSanitizer = false;
#endif
#else
constexpr bool kThreadSanitizer = false;
#endif

struct Rec {
    std::uint64_t seq;
    std::uint64_t value;
};

rk::KernelSpec echo_spec(const std::string &name, std::uint32_t grid = 1) {
    rk::KernelSpec s;
    s.name = name;
    s.handler = rk::Handler::builtin("echo");
    s.input_size = s.output_size = sizeof(Rec);
    s.grid = grid;
    s.options.set_queue_capacity(1024);
    return s;
}

rk::Wait secs(double s) { return rk::Wait::for_ns(static_cast<std::int64_t>(s * 1e9)); }

std::size_t thread_count() {
    std::size_t n = 0;
    if (DIR *d = opendir("/proc/self/task")) {
        while (dirent *e = readdir(d))
            if (e->d_name[0] != '.') ++n;
        closedir(d);
    }
    return n;
}

// The thread count once two reads 20 ms apart agree (at most 2 s of waiting).
std::size_t settled_thread_count() {
    std::size_t last = thread_count();
    for (int i = 0; i < 100; ++i) {
        std::this_thread::sleep_for(std::chrono::milliseconds(20));
        const std::size_t now = thread_count();
        if (now == last) return now;
        last = now;
    }
    return last;
}

TEST(Runtime, EchoRoundTripKeepsOrderWithOneBlock) {
    rk::Runtime rt("cpu");
    auto k = rt.launch(echo_spec("echo"));
    EXPECT_EQ(k->state(), rk::KernelState::Launched);
    for (std::uint64_t i = 0; i < 100; ++i) {
        Rec r{i, i * 7};
        ASSERT_TRUE(k->input()->send(&r));
    }
    Rec out{};
    EXPECT_FALSE(k->output()->receive(&out, nullptr, secs(0.05)));  // inactive: nothing consumed
    k->activate();
    for (std::uint64_t i = 0; i < 100; ++i) {
        rk_envelope env{};
        ASSERT_TRUE(k->output()->receive(&out, &env, secs(2)));
        EXPECT_EQ(out.seq, i);
        EXPECT_EQ(out.value, i * 7);
        EXPECT_EQ(env.source_kernel, k->id());
    }
    EXPECT_EQ(k->messages_processed(), 100u);
    EXPECT_EQ(k->terminate(), rk::KernelState::Terminated);
    Rec r{0, 0};
    EXPECT_THROW(k->input()->send(&r), rk::LifecycleError);
}

TEST(Runtime, LifecycleErrorsNameTheStateAndAllowedCalls) {
    rk::Runtime rt("cpu");
    auto k = rt.create(echo_spec("k"));
    EXPECT_EQ(k->state(), rk::KernelState::Created);
    EXPECT_THROW(k->activate(), rk::LifecycleError);
    EXPECT_THROW(k->enable_telemetry(), rk::LifecycleError);
    k->launch();
    EXPECT_THROW(k->launch(), rk::LifecycleError);
    EXPECT_THROW(k->deactivate(), rk::LifecycleError);
    k->activate();
    try {
        k->activate();
        FAIL() << "activate twice";
    } catch (const rk::LifecycleError &e) {
        EXPECT_NE(std::string(e.what()).find("ACTIVE"), std::string::npos) << e.what();
        EXPECT_NE(std::string(e.what()).find("deactivate()"), std::string::npos) << e.what();
    }
    k->deactivate();
    k->activate();
    EXPECT_EQ(k->terminate(), rk::KernelState::Terminated);
    EXPECT_THROW(k->activate(), rk::LifecycleError);
    EXPECT_EQ(k->terminate(), rk::KernelState::Terminated);  // idempotent
}

TEST(Runtime, NamedQueueRegistry) {
    rk::Runtime rt("cpu");
    auto a = rt.launch(echo_spec("a"));
    auto b = rt.launch(echo_spec("b"));
    auto names = rt.queue_names();
    EXPECT_EQ(names, (std::vector<std::string>{"a.in", "a.out", "b.in", "b.out"}));
    EXPECT_EQ(rt.queue("a.in"), a->input());
    EXPECT_THROW(rt.queue("nope"), std::out_of_range);
    EXPECT_THROW(rt.launch(echo_spec("a")), std::invalid_argument);
    rk::QueueConfig cfg;
    cfg.payload_size = 16;
    rt.create_queue("side", cfg);
    EXPECT_THROW(rt.create_queue("side", cfg), std::invalid_argument);
    EXPECT_THROW(rt.destroy_queue("a.in"), std::invalid_argument);
    rt.destroy_queue("side");
    a->terminate();
    names = rt.queue_names();
    EXPECT_EQ(names, (std::vector<std::string>{"b.in", "b.out"}));
}

TEST(Runtime, VectorAddInlineAndBuffers) {
    rk::Runtime rt("cpu");
    rk::KernelSpec s;
    s.name = "adder";
    s.handler = rk::Handler::builtin("vector_add");
    s.input_size = sizeof(rk_vector_add_request);
    s.output_size = sizeof(rk_vector_add_response);
    s.block = 32;
    auto k = rt.launch(s);
    k->activate();
    for (std::uint32_t op = 0; op < 4; ++op) {
        rk_vector_add_request req{};
        req.op = static_cast<rk_u8>(op);
        req.length = 25;
        for (int i = 0; i < 25; ++i) {
            req.a[i] = static_cast<float>(i + 1);
            req.b[i] = 2.0f;
        }
        ASSERT_TRUE(k->input()->send(&req));
        rk_vector_add_response resp{};
        ASSERT_TRUE(k->output()->receive(&resp, nullptr, secs(2)));
        ASSERT_EQ(resp.status, 0);
        ASSERT_EQ(resp.length, 25u);
        for (int i = 0; i < 25; ++i)
            EXPECT_FLOAT_EQ(resp.result[i], rk_vector_apply(op, static_cast<float>(i + 1), 2.0f));
    }
    const std::size_t n = 100;
    rk::Buffer a = rt.buffer(n * 4), b = rt.buffer(n * 4), o = rt.buffer(n * 4);
    for (std::size_t i = 0; i < n; ++i) {
        static_cast<float *>(a.data)[i] = static_cast<float>(i);
        static_cast<float *>(b.data)[i] = 0.5f;
    }
    rk_vector_add_request req{};
    req.op = RK_VECTOR_MULTIPLY;
    req.length = n;
    req.a_buf = a.handle;
    req.b_buf = b.handle;
    req.out_buf = o.handle;
    ASSERT_TRUE(k->input()->send(&req));
    rk_vector_add_response resp{};
    ASSERT_TRUE(k->output()->receive(&resp, nullptr, secs(2)));
    ASSERT_EQ(resp.status, 0);
    for (std::size_t i = 0; i < n; ++i) EXPECT_FLOAT_EQ(static_cast<float *>(o.data)[i], static_cast<float>(i) * 0.5f);
    // A bad handle is answered with a status and counted as an error.
    req.b_buf = 12345;
    ASSERT_TRUE(k->input()->send(&req));
    ASSERT_TRUE(k->output()->receive(&resp, nullptr, secs(2)));
    EXPECT_EQ(resp.status, RK_ERR_BUFFER);
    EXPECT_EQ(k->errors(), 1);
    EXPECT_EQ(k->last_error(), RK_ERR_BUFFER);
}

TEST(Runtime, SourceHandlerWithBarrierCompilesAndRuns) {
    rk::Runtime rt("cpu");
    rk::KernelSpec s = echo_spec("summer");
    s.block = 8;
    // Each thread adds its rank into shared memory; after the barrier thread 0 sums them.
    s.handler = rk::Handler::source(R"(
typedef struct { unsigned long long seq, value; } rec;
int sum_ranks(rk_ctx *ctx, const void *in, void *out) {
    unsigned *slots = (unsigned *)rk_shared(ctx);
    slots[rk_thread_rank(ctx)] = rk_thread_rank(ctx) + 1;
    rk_barrier(ctx);
    if (rk_thread_rank(ctx) == 0) {
        unsigned long long total = 0;
        for (unsigned i = 0; i < rk_thread_count(ctx); ++i) total += slots[i];
        ((rec *)out)->seq = ((const rec *)in)->seq;
        ((rec *)out)->value = total;
    }
    rk_barrier(ctx);
    return RK_REPLY;
}
)",
                                    "sum_ranks");
    auto k = rt.launch(s);
    k->activate();
    for (std::uint64_t i = 0; i < 20; ++i) {
        Rec r{i, 0};
        ASSERT_TRUE(k->input()->send(&r));
        Rec out{};
        ASSERT_TRUE(k->output()->receive(&out, nullptr, secs(5)));
        EXPECT_EQ(out.seq, i);
        EXPECT_EQ(out.value, 36u);  // 1 + ... + 8
    }
    // Back to back, so the block takes runs of several messages: each reply in its own buffer.
    k->deactivate();
    for (std::uint64_t i = 0; i < 200; ++i) {
        Rec r{i, 0};
        ASSERT_TRUE(k->input()->send(&r));
    }
    k->activate();
    for (std::uint64_t i = 0; i < 200; ++i) {
        Rec out{};
        ASSERT_TRUE(k->output()->receive(&out, nullptr, secs(5)));
        EXPECT_EQ(out.seq, i);
        EXPECT_EQ(out.value, 36u);
    }
}

TEST(Runtime, SourceCompileErrorCarriesTheLog) {
    rk::Runtime rt("cpu");
    rk::KernelSpec s = echo_spec("bad");
    s.handler = rk::Handler::source("int broken(rk_ctx *ctx, const void *in, void *out) { return nope; }", "broken");
    try {
        rt.launch(s);
        FAIL() << "expected CompileError";
    } catch (const rk::CompileError &e) {
        EXPECT_NE(e.log().find("nope"), std::string::npos) << e.log();
    }
    EXPECT_TRUE(rt.queue_names().empty());
}

TEST(Runtime, NoCompilerIsAClearError) {
    rk::RuntimeConfig cfg;
    cfg.compiler = "/nonexistent/cc";
    rk::Runtime rt("cpu", cfg);
    rk::KernelSpec s = echo_spec("x");
    s.handler = rk::Handler::source("int h(rk_ctx *c, const void *i, void *o) { return RK_REPLY; }", "h");
    EXPECT_THROW(rt.launch(s), rk::CompileError);
}

struct Failing final : rk::HostHandler {
    int handle(rk_ctx *, const void *in, void *out) override {
        Rec r;
        std::memcpy(&r, in, sizeof r);
        if (r.seq % 3 == 0) throw std::runtime_error("boom " + std::to_string(r.seq));
        if (r.seq % 3 == 1) return RK_ERR_HANDLER;
        std::memcpy(out, &r, sizeof r);
        return RK_REPLY;
    }
};

TEST(Runtime, HandlerFaultsAreCountedAndTheKernelKeepsServing) {
    rk::Runtime rt("cpu");
    rk::KernelSpec s = echo_spec("faulty");
    s.handler = rk::Handler::on_host(std::make_shared<Failing>());
    auto k = rt.launch(s);
    k->activate();
    for (std::uint64_t i = 0; i < 9; ++i) {
        Rec r{i, i};
        ASSERT_TRUE(k->input()->send(&r));
    }
    std::vector<std::uint64_t> got;
    Rec out{};
    while (got.size() < 3 && k->output()->receive(&out, nullptr, secs(2))) got.push_back(out.seq);
    EXPECT_EQ(got, (std::vector<std::uint64_t>{2, 5, 8}));
    EXPECT_EQ(k->errors(), 6);
    EXPECT_NE(k->last_error_message().find("boom"), std::string::npos);
    EXPECT_EQ(k->messages_processed(), 9u);
}

struct Stuck final : rk::HostHandler {
    std::atomic<bool> release{false};
    std::atomic<bool> entered{false};
    int handle(rk_ctx *, const void *, void *) override {
        entered = true;
        while (!release) std::this_thread::sleep_for(1ms);
        return RK_NO_REPLY;
    }
};

TEST(Runtime, TerminateReturnsWhenTheHandlerNeverDoes) {
    auto stuck = std::make_shared<Stuck>();
    std::shared_ptr<rk::Kernel> k;
    {
        rk::Runtime rt("cpu");
        rk::KernelSpec s = echo_spec("stuck");
        s.handler = rk::Handler::on_host(stuck);
        k = rt.launch(s);
        k->activate();
        Rec r{1, 1};
        ASSERT_TRUE(k->input()->send(&r));
        while (!stuck->entered) std::this_thread::sleep_for(1ms);
        const auto t0 = std::chrono::steady_clock::now();
        EXPECT_EQ(k->terminate(200'000'000), rk::KernelState::Faulted);
        EXPECT_LT(std::chrono::steady_clock::now() - t0, 2s);
        EXPECT_NE(k->fault().find("did not stop"), std::string::npos);
        EXPECT_THROW(k->input()->send(&r), rk::LifecycleError);
    }  // the runtime is gone; the abandoned block still holds its memory
    stuck->release = true;
    for (int i = 0; i < 200 && !k->stopped(); ++i) std::this_thread::sleep_for(5ms);
    EXPECT_TRUE(k->stopped());
}

TEST(Runtime, CloseDuringAConcurrentTerminateStopsEveryKernel) {
    // Issue 15.1: close() while another thread is terminating a kernel whose handler does not return used
    // to raise (TERMINATING), leave the other kernels running and the runtime half closed.
    auto stuck = std::make_shared<Stuck>();
    std::shared_ptr<rk::Kernel> slow, echo;
    rk::KernelState from_thread = rk::KernelState::Created;
    {
        rk::Runtime rt("cpu");
        rk::KernelSpec s = echo_spec("slow");
        s.handler = rk::Handler::on_host(stuck);
        slow = rt.launch(s);
        echo = rt.launch(echo_spec("echo"));
        slow->activate();
        echo->activate();
        Rec r{1, 1};
        ASSERT_TRUE(slow->input()->send(&r));
        while (!stuck->entered) std::this_thread::sleep_for(1ms);
        std::thread other([&] { from_thread = slow->terminate(3'000'000'000); });
        std::this_thread::sleep_for(50ms);
        const auto t0 = std::chrono::steady_clock::now();
        EXPECT_NO_THROW(rt.close(300'000'000));
        EXPECT_LT(std::chrono::steady_clock::now() - t0, 2s);  // the earlier deadline (close's) held
        other.join();
        EXPECT_EQ(from_thread, rk::KernelState::Faulted);  // both callers see the one outcome
        EXPECT_EQ(slow->state(), rk::KernelState::Faulted);
        EXPECT_EQ(echo->state(), rk::KernelState::Terminated);
        EXPECT_TRUE(rt.closed());
        EXPECT_NO_THROW(rt.close(300'000'000));  // idempotent
    }
    stuck->release = true;  // the abandoned block returns after its runtime is gone
    for (int i = 0; i < 400 && !slow->stopped(); ++i) std::this_thread::sleep_for(5ms);
    EXPECT_TRUE(slow->stopped());
    rk::Runtime again("cpu");  // the process goes on launching and terminating kernels
    for (int i = 0; i < 50; ++i) {
        auto k = again.launch(echo_spec("k" + std::to_string(i)));
        k->activate();
        Rec r{static_cast<std::uint64_t>(i), 0}, out{};
        ASSERT_TRUE(k->input()->send(&r, {}, secs(2)));
        ASSERT_TRUE(k->output()->receive(&out, nullptr, secs(2)));
        EXPECT_EQ(k->terminate(), rk::KernelState::Terminated);
    }
}

// Terminates its own kernel from inside its handler, then answers.
struct SelfStop final : rk::HostHandler {
    std::weak_ptr<rk::Kernel> self;
    std::atomic<int> seen{-1};
    int handle(rk_ctx *, const void *in, void *out) override {
        if (auto k = self.lock()) seen = static_cast<int>(k->terminate(2'000'000'000));
        std::memcpy(out, in, sizeof(Rec));
        return RK_REPLY;
    }
};

TEST(Runtime, AHandlerCanTerminateItsOwnKernel) {
    rk::Runtime rt("cpu");
    auto h = std::make_shared<SelfStop>();
    rk::KernelSpec s = echo_spec("selfie");
    s.handler = rk::Handler::on_host(h);
    auto k = rt.launch(s);
    h->self = k;
    k->activate();
    Rec r{7, 7}, out{};
    ASSERT_TRUE(k->input()->send(&r));
    ASSERT_TRUE(k->output()->receive(&out, nullptr, secs(5)));  // the reply of the message in hand arrives
    EXPECT_EQ(out.seq, 7u);
    EXPECT_EQ(h->seen.load(), static_cast<int>(rk::KernelState::Terminating));  // it returned at once
    for (int i = 0; i < 400 && k->state() == rk::KernelState::Terminating; ++i) std::this_thread::sleep_for(5ms);
    EXPECT_EQ(k->state(), rk::KernelState::Terminated);
    EXPECT_EQ(k->terminate(), rk::KernelState::Terminated);
    EXPECT_THROW(k->input()->send(&r), rk::LifecycleError);
}

TEST(Runtime, AForkedChildIsToldItsRuntimeBelongsToItsParent) {
    rk::Runtime rt("cpu");
    auto k = rt.launch(echo_spec("parent"));
    k->activate();
    // Fork only once the parent's worker is idle: a thread inside the allocator at fork() leaves its lock held
    // in the child for good (ASan's allocator has no fork handler for it; it hung the child's first malloc).
    {
        Rec r0{0, 0}, out0{};
        ASSERT_TRUE(k->input()->send(&r0, {}, secs(5)));
        ASSERT_TRUE(k->output()->receive(&out0, nullptr, secs(5)));
        std::this_thread::sleep_for(50ms);  // past its spin: parked
    }
    const pid_t pid = ::fork();
    ASSERT_GE(pid, 0);
    if (pid == 0) {  // the child: exit code = what went wrong (0: all as it should be)
        int code = 0;
        Rec r{1, 1}, out{};
        try {
            k->input()->send(&r);
            code = 1;  // accepted: it would never be answered
        } catch (const rk::LifecycleError &e) {
            if (std::string(e.what()).find("fork()") == std::string::npos) code = 2;
        }
        try {
            rt.launch(echo_spec("child"));
            code = 3;
        } catch (const rk::LifecycleError &) {
        }
        if (!kThreadSanitizer) {  // TSan cannot start threads after a multi-threaded fork (it dies)
            rk::Runtime mine("cpu");  // a runtime of the child's own works
            auto c = mine.launch(echo_spec("own"));
            c->activate();
            if (!c->input()->send(&r, {}, secs(2)) || !c->output()->receive(&out, nullptr, secs(2)) || out.seq != 1)
                code = 4;
        }
        rt.close();  // returns at once: nothing of the parent's is waited for or freed
        ::_exit(code);
    }
    int status = 0;
    ASSERT_EQ(::waitpid(pid, &status, 0), pid);
    ASSERT_TRUE(WIFEXITED(status));
    EXPECT_EQ(WEXITSTATUS(status), 0);
    Rec r{2, 2}, out{};  // the parent's kernel is untouched
    ASSERT_TRUE(k->input()->send(&r, {}, secs(2)));
    ASSERT_TRUE(k->output()->receive(&out, nullptr, secs(2)));
    EXPECT_EQ(out.seq, 2u);
}

TEST(Runtime, TerminateWhileBlockedOnAFullOutputDropsAndCounts) {
    rk::Runtime rt("cpu");
    rk::KernelSpec s = echo_spec("full");
    s.options.set_queue_capacity(16);
    auto k = rt.launch(s);
    k->activate();
    // Nobody receives: 16 replies fill the output, the kernel then waits for space with the requests
    // it has taken, and the input fills behind it (backpressure reaches the sender).
    std::uint64_t accepted = 0;
    for (std::uint64_t i = 0; i < 40; ++i) {
        Rec r{i, i};
        accepted += k->input()->send(&r, {}, secs(0.2)) ? 1 : 0;
    }
    EXPECT_GE(accepted, 17u);
    EXPECT_LT(accepted, 40u);
    EXPECT_EQ(k->terminate(2'000'000'000), rk::KernelState::Terminated);
    // Nothing accepted was lost silently: every request is still queued or was handled, and every
    // handled one was either delivered or counted dropped (the replies waiting for space at terminate).
    EXPECT_EQ(k->output()->size(), 16u);
    EXPECT_GE(k->messages_dropped(), 1u);
    EXPECT_EQ(k->messages_processed(), 16u + k->messages_dropped());
    EXPECT_EQ(k->messages_processed() + k->input()->size(), accepted);
}

// Regression: a DROP_OLDEST sender evicts from the kernel's input ring, so the kernel must consume it
// as one of several consumers (it once used the single-consumer path and corrupted the ring).
TEST(Runtime, DropOldestSenderAndKernelShareTheInputRing) {
    rk::Runtime rt("cpu");
    rk::KernelSpec s = echo_spec("evicted");
    s.handler = rk::Handler::builtin("count");
    s.options.set_queue_capacity(16).set_dedup_window(0).set_backpressure(rk::Backpressure::DropOldest);
    auto k = rt.launch(s);
    k->activate();
    const std::uint64_t n = 200'000;
    for (std::uint64_t i = 0; i < n; ++i) {
        Rec r{i, i};
        ASSERT_TRUE(k->input()->send(&r, {}, secs(5)));
    }
    while (k->input()->size() > 0) std::this_thread::sleep_for(1ms);
    const auto st = k->input()->stats();
    EXPECT_EQ(st.sent, n);
    EXPECT_EQ(st.received + st.dropped, n);  // every message was either handled or evicted
    EXPECT_EQ(k->messages_processed(), st.received);
}

TEST(Runtime, TerminatedReceiverIsDisconnected) {
    rk::Runtime rt("cpu");
    auto a = rt.launch(echo_spec("a"));
    auto b = rt.launch(echo_spec("b"));
    auto t1 = rt.launch(echo_spec("t1"));
    rt.connect(*a, *b);
    rt.create_topic("news", sizeof(Rec), 0);
    rt.subscribe("news", *t1);
    a->activate();
    b->activate();
    t1->activate();
    EXPECT_EQ(b->terminate(), rk::KernelState::Terminated);
    EXPECT_EQ(t1->terminate(), rk::KernelState::Terminated);
    // a's replies now go nowhere: it keeps serving and counts them dropped instead of blocking.
    for (std::uint64_t i = 0; i < 100; ++i) {
        Rec r{i, i};
        ASSERT_TRUE(a->input()->send(&r, {}, secs(5)));
    }
    for (int i = 0; i < 500 && a->messages_processed() < 100; ++i) std::this_thread::sleep_for(2ms);
    EXPECT_EQ(a->messages_processed(), 100u);
    EXPECT_EQ(a->messages_dropped(), 100u);
    Rec r{1, 1};
    EXPECT_EQ(rt.publish("news", &r), 0u);  // no subscriber left, and nothing waits
    EXPECT_TRUE(rt.topic("news").subscribers.empty());
    // A receiver waiting without a timeout on a terminated kernel's output returns at once.
    Rec out{};
    EXPECT_FALSE(b->output()->receive(&out, nullptr, rk::Wait{}));
}

TEST(Runtime, TopicOutlivesATerminatedPublisher) {
    rk::Runtime rt("cpu");
    rt.create_topic("t", sizeof(Rec), 0);
    {
        auto src = rt.launch(echo_spec("src"));
        rt.connect_topic(*src, "t");
        src->terminate();
    }  // src is gone; the topic must not keep a dangling publisher
    auto sub = rt.launch(echo_spec("sub"));
    rt.subscribe("t", *sub);
    sub->activate();
    Rec r{5, 5};
    EXPECT_EQ(rt.publish("t", &r), 1u);
    Rec out{};
    ASSERT_TRUE(sub->output()->receive(&out, nullptr, secs(2)));
    EXPECT_EQ(out.seq, 5u);
}

TEST(Runtime, PipelineOfThreeKeepsCausalOrder) {
    rk::Runtime rt("cpu");
    auto a = rt.launch(echo_spec("a"));
    auto b = rt.launch(echo_spec("b"));
    auto c = rt.launch(echo_spec("c"));
    EXPECT_EQ(rt.connect(*a, *b), "a->b");
    EXPECT_EQ(rt.connect(*b, *c), "b->c");
    for (auto &k : {a, b, c}) k->activate();
    std::vector<std::uint64_t> sent_stamps;
    for (std::uint64_t i = 0; i < 50; ++i) {
        Rec r{i, i};
        ASSERT_TRUE(a->input()->send(&r));
    }
    std::uint64_t prev = 0;
    for (std::uint64_t i = 0; i < 50; ++i) {
        Rec out{};
        rk_envelope env{};
        ASSERT_TRUE(c->output()->receive(&out, &env, secs(2)));
        EXPECT_EQ(out.seq, i);
        EXPECT_EQ(env.source_kernel, c->id());
        EXPECT_GT(env.timestamp, prev);
        prev = env.timestamp;
    }
    // Every hop advanced its clock past the stamp it answered.
    EXPECT_GT(c->hlc(), b->hlc());
    EXPECT_GT(b->hlc(), a->hlc());
    EXPECT_EQ(a->messages_processed(), 50u);
    EXPECT_EQ(b->messages_processed(), 50u);
    EXPECT_EQ(c->messages_processed(), 50u);
}

TEST(Runtime, TopicFansOutToEverySubscriber) {
    rk::Runtime rt("cpu");
    auto src = rt.launch(echo_spec("src"));
    auto s1 = rt.launch(echo_spec("s1"));
    auto s2 = rt.launch(echo_spec("s2"));
    rt.create_topic("ticks", sizeof(Rec), 0);
    rt.subscribe("ticks", *s1);
    rt.connect_topic(*src, "ticks");
    rt.subscribe("ticks", *s2);  // a subscriber added after the publisher is connected gets copies too
    for (auto &k : {src, s1, s2}) k->activate();
    for (std::uint64_t i = 0; i < 10; ++i) {
        Rec r{i, 0};
        ASSERT_TRUE(src->input()->send(&r));
    }
    Rec direct{100, 0};
    EXPECT_EQ(rt.publish("ticks", &direct), 2u);
    for (auto &k : {s1, s2}) {
        std::vector<std::uint64_t> seqs;
        Rec out{};
        while (seqs.size() < 11 && k->output()->receive(&out, nullptr, secs(2))) seqs.push_back(out.seq);
        ASSERT_EQ(seqs.size(), 11u) << k->name();
    }
    EXPECT_EQ(rt.topic("ticks").subscribers, (std::vector<std::string>{"s1", "s2"}));
}

TEST(Runtime, TelemetryCountsWhatWasSent) {
    rk::Runtime rt("cpu");
    auto k = rt.launch(echo_spec("t", 2));
    EXPECT_THROW(k->telemetry(), rk::TelemetryNotEnabledError);
    k->enable_telemetry();
    k->activate();
    const int n = 500;
    for (int i = 0; i < n; ++i) {
        Rec r{static_cast<std::uint64_t>(i), 0};
        ASSERT_TRUE(k->input()->send(&r, {}, secs(2)));
    }
    Rec out{};
    for (int i = 0; i < n; ++i) ASSERT_TRUE(k->output()->receive(&out, nullptr, secs(2)));
    auto t = k->telemetry();
    EXPECT_EQ(t.messages_processed, static_cast<std::uint64_t>(n));
    EXPECT_GT(t.min_latency_ns, 0u);
    EXPECT_LE(t.min_latency_ns, t.max_latency_ns);
    EXPECT_GT(t.last_processed_timestamp, 0u);
    k->reset_telemetry();
    EXPECT_EQ(k->telemetry().messages_processed, 0u);
}

TEST(Runtime, LaunchTerminateCyclesDoNotLeakThreads) {
    rk::Runtime rt("cpu");
    auto cycle = [&] {
        auto k = rt.launch(echo_spec("cycle", 2));
        k->activate();
        Rec r{1, 2};
        ASSERT_TRUE(k->input()->send(&r));
        Rec out{};
        ASSERT_TRUE(k->output()->receive(&out, nullptr, secs(2)));
        ASSERT_EQ(k->terminate(), rk::KernelState::Terminated);
    };
    for (int i = 0; i < 10; ++i) cycle();  // sanitizer runtimes start helper threads lazily
    // A joined worker can stay listed in /proc/self/task for a moment while the kernel
    // reaps it, so compare counts that have settled, and assert no growth.
    const std::size_t before = settled_thread_count();
    for (int i = 0; i < 200; ++i) cycle();
    EXPECT_LE(settled_thread_count(), before);
    EXPECT_TRUE(rt.queue_names().empty());
}

// Handler images (modules built for a device backend elsewhere, e.g. rk.jit for CUDA): their arguments are
// checked when made, and a backend other than the image's target refuses them by name.
TEST(Runtime, HandlerImagesAreCheckedAndRunOnlyWhereTheyWereBuiltFor) {
    EXPECT_THROW(rk::Handler::image("h", "cuda", "", "rk_persistent"), std::invalid_argument);
    EXPECT_THROW(rk::Handler::image("h", "cuda", "data", "not an identifier"), std::invalid_argument);
    EXPECT_THROW(rk::Handler::image("h", "", "data", "rk_persistent"), std::invalid_argument);
    const rk::Handler h = rk::Handler::image("h", "cuda", "data", "rk_persistent");
    EXPECT_EQ(h.kind, rk::Handler::Kind::Image);
    EXPECT_EQ(h.describe(), "image:cuda:h");
    rk::Runtime rt("cpu");
    EXPECT_EQ(rt.device_target(), "");
    auto s = echo_spec("img");
    s.handler = h;
    try {
        rt.launch(s);
        ADD_FAILURE() << "the cpu backend ran a cuda image";
    } catch (const std::invalid_argument &e) {
        EXPECT_NE(std::string(e.what()).find("built for backend 'cuda'"), std::string::npos) << e.what();
    }
    EXPECT_TRUE(rt.queue_names().empty());
}

TEST(Runtime, BadArgumentsAreRefused) {
    rk::Runtime rt("cpu");
    auto s = echo_spec("ok");
    s.grid = 0;
    EXPECT_THROW(rt.launch(s), std::invalid_argument);
    s = echo_spec("bad name!");
    EXPECT_THROW(rt.launch(s), std::invalid_argument);
    s = echo_spec("p");
    s.options.set_priority(true);
    EXPECT_THROW(rt.launch(s), std::invalid_argument);
    s = echo_spec("u");
    s.handler = rk::Handler::builtin("nope");
    EXPECT_THROW(rt.launch(s), std::invalid_argument);
    s = echo_spec("v");
    s.output_size = 8;
    EXPECT_THROW(rt.launch(s), std::invalid_argument);  // echo needs equal sizes
    EXPECT_THROW(rk::Runtime("gpu"), std::invalid_argument);
    EXPECT_THROW(rk::Runtime("cuda"), rk::BackendUnavailableError);
}

}  // namespace

// ---- backends register themselves; modes are an enum -----------------------------------------------------

TEST(BackendRegistry, ListsTheBuildsBackendsInOrderAndNamesThemInErrors) {
    std::vector<std::string> names;
    for (const auto &s : rk::backend_statuses()) names.push_back(s.name);
    ASSERT_GE(names.size(), 4u);
    EXPECT_EQ(names[0], "cpu");
    EXPECT_EQ(names.back(), "metal");  // registered as absent: listed, never available
    EXPECT_FALSE(rk::backend_statuses().back().available);
    try {
        rk::Runtime rt("vulkan");
        FAIL() << "an unknown backend was accepted";
    } catch (const std::invalid_argument &e) {
        EXPECT_NE(std::string(e.what()).find("'auto', 'cpu', 'cuda', 'opencl', 'metal'; got 'vulkan'"), std::string::npos)
            << e.what();
    }
    EXPECT_THROW(rk::Runtime("metal"), rk::BackendUnavailableError);
    rk::Runtime rt("auto");  // falls back to the CPU where no device backend is a candidate
    EXPECT_FALSE(rt.backend().empty());
}

TEST(KernelMode, NamesRoundTripAndUnknownOnesAreRefused) {
    for (rk::KernelMode m : {rk::KernelMode::Auto, rk::KernelMode::Persistent, rk::KernelMode::Dispatch})
        EXPECT_EQ(rk::kernel_mode_from_string(rk::to_string(m)), m);
    EXPECT_THROW(rk::kernel_mode_from_string("sometimes"), std::invalid_argument);
    rk::Runtime rt("cpu");
    rk::KernelSpec s;
    s.name = "k";
    s.handler = rk::Handler::builtin("echo");
    auto k = rt.launch(s);
    EXPECT_EQ(k->mode(), rk::KernelMode::Persistent);
    s.name = "d";
    s.mode = rk::KernelMode::Dispatch;
    EXPECT_THROW(rt.launch(s), std::invalid_argument);
}

// ---- compiled (native) handlers: a C function the blocks call directly --------------------------------

namespace {
std::atomic<int> g_native_calls[2];

// Doubles the value; odd requests go to channel 1 instead of a reply; seq 13 "raises".
int doubling_handler(rk_ctx *, const void *in, void *out) {
    const auto *r = static_cast<const Rec *>(in);
    auto *o = static_cast<Rec *>(out);
    const rk_u32 rank = rk_native_thread_rank();
    if (rank < 2) g_native_calls[rank].fetch_add(1);
    if (rk_native_thread_count() != 2) return RK_ERR_HANDLER;
    if (r->seq == 13) return RK_ERR_HOST;
    o->seq = r->seq;
    o->value = r->value * 2;
    if (r->seq % 2 == 1) {
        const rk_i32 sent = rk_native_emit(1, o);
        return rank == 0 && sent != 1 ? RK_ERR_CHANNEL : RK_NO_REPLY;
    }
    return RK_REPLY;
}
}  // namespace

TEST(NativeHandler, RunsOnEveryThreadOfTheBlockEmitsAndFailsOneMessageAtATime) {
    EXPECT_THROW(rk::Handler::compiled("null", nullptr, nullptr), std::invalid_argument);
    EXPECT_EQ(rk_native_emit(1, nullptr), RK_ERR_CHANNEL);  // outside a handler
    EXPECT_EQ(rk_native_buffer(1, 1), nullptr);
    EXPECT_EQ(rk_native_thread_count(), 1u);
    rk::Runtime rt("cpu");
    rk::KernelSpec s = echo_spec("native");
    s.handler = rk::Handler::compiled("doubling", doubling_handler, nullptr);
    s.block = 2;
    s.channels = {"odd"};
    auto k = rt.launch(s);
    k->activate();
    for (std::uint64_t i = 0; i < 20; ++i) {
        Rec r{i, i};
        ASSERT_TRUE(k->input()->send(&r));
    }
    Rec out{};
    for (std::uint64_t i = 0; i < 20; i += 2) {
        ASSERT_TRUE(k->output()->receive(&out, nullptr, secs(2)));
        EXPECT_EQ(out.seq, i);
        EXPECT_EQ(out.value, 2 * i);
    }
    for (std::uint64_t i = 1; i < 20; i += 2) {
        if (i == 13) continue;
        ASSERT_TRUE(k->channel_queue(1)->receive(&out, nullptr, secs(2)));
        EXPECT_EQ(out.seq, i);
        EXPECT_EQ(out.value, 2 * i);
    }
    EXPECT_FALSE(k->channel_queue(1)->receive(&out, nullptr, secs(0.05)));
    EXPECT_EQ(k->errors(), 1);  // seq 13 failed, alone
    EXPECT_EQ(k->last_error(), RK_ERR_HOST);
    EXPECT_NE(k->last_error_message().find("compiled handler 'doubling' raised"), std::string::npos);
    EXPECT_EQ(g_native_calls[0].load(), 20);
    EXPECT_EQ(g_native_calls[1].load(), 20);
    EXPECT_EQ(k->terminate(), rk::KernelState::Terminated);
}
