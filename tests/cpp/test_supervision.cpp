// Supervision through the C++ API (DESIGN §11), on the CPU backend: the watchdog, restart policies, redelivery,
// dead letters after max_attempts, FAULTED past max_restarts and drain. Run under ASan/UBSan and TSan too: the
// watchdog takes over a block from another thread while its handler still runs.
#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <cstring>
#include <map>
#include <mutex>
#include <set>
#include <stdexcept>
#include <thread>

#include "ringkernel/ringkernel.hpp"
#include "rk_kernel.h"

namespace {

using namespace std::chrono_literals;

struct Rec {
    std::uint64_t seq;
    std::uint64_t value;
};

rk::Wait secs(double s) { return rk::Wait::for_ns(static_cast<std::int64_t>(s * 1e9)); }

std::vector<Rec> receive_n(rk::Kernel &k, std::size_t n, double timeout = 5) {
    std::vector<Rec> out;
    Rec r{};
    while (out.size() < n && k.output()->receive(&r, nullptr, secs(timeout))) out.push_back(r);
    return out;
}

template <class F> bool eventually(F cond, std::chrono::milliseconds limit = 10s) {
    const auto deadline = std::chrono::steady_clock::now() + limit;
    while (!cond() && std::chrono::steady_clock::now() < deadline) std::this_thread::sleep_for(1ms);
    return cond();
}

void send(rk::Kernel &k, std::uint64_t seq, std::uint64_t value) {
    Rec r{seq, value};
    ASSERT_TRUE(k.input()->send(&r, {}, secs(5)));
}

// value 1: the kernel is at fault on the first `fails` deliveries of that message (its seq counts them);
// value 2: the handler hangs until released (bounded at 10 s); else an echo.
struct Faulty final : rk::HostHandler {
    std::uint32_t fails = 1;
    std::atomic<bool> release{false};
    std::atomic<int> hung{0}, returned_late{0};
    std::mutex mu;
    std::map<std::uint64_t, int> deliveries;

    int handle(rk_ctx *, const void *in, void *out) override {
        Rec r;
        std::memcpy(&r, in, sizeof r);
        int n;
        {
            std::lock_guard<std::mutex> lock(mu);
            n = ++deliveries[r.seq];
        }
        if (r.value == 1 && n <= static_cast<int>(fails)) throw rk::KernelAtFault("at fault on " + std::to_string(r.seq));
        if (r.value == 2 && n == 1) {
            hung.fetch_add(1);
            const auto deadline = std::chrono::steady_clock::now() + 10s;
            while (!release.load() && std::chrono::steady_clock::now() < deadline) std::this_thread::sleep_for(1ms);
            returned_late.fetch_add(1);
        }
        std::memcpy(out, &r, sizeof r);
        return RK_REPLY;
    }
    bool concurrent() const override { return true; }
    int delivered(std::uint64_t seq) {
        std::lock_guard<std::mutex> lock(mu);
        return deliveries[seq];
    }
};

rk::KernelSpec spec_of(const std::string &name, std::shared_ptr<Faulty> h) {
    rk::KernelSpec s;
    s.name = name;
    s.handler = rk::Handler::on_host(std::move(h));
    s.input_size = s.output_size = sizeof(Rec);
    s.options.set_queue_capacity(256);
    return s;
}

TEST(Supervision, PoliciesAndTimeoutsAreValidatedWithTheirRanges) {
    rk::RestartPolicy p;
    EXPECT_NO_THROW(p.validate());
    p.max_attempts = 0;
    EXPECT_THROW(p.validate(), std::invalid_argument);
    p = {};
    p.within = 0;
    EXPECT_THROW(p.validate(), std::invalid_argument);
    p = {};
    p.backoff = 61;
    EXPECT_THROW(p.validate(), std::invalid_argument);
    rk::LaunchOptions o;
    EXPECT_EQ(o.handler_timeout_ns(), 0u);
    EXPECT_THROW(o.set_handler_timeout_ns(1000), std::invalid_argument);
    EXPECT_NO_THROW(o.set_handler_timeout_ns(rk::kMinHandlerTimeoutNs));
    EXPECT_NE(o.to_string().find("handler_timeout=0.001"), std::string::npos) << o.to_string();
    rk::Runtime rt("cpu");
    rk::KernelSpec s = spec_of("bad", std::make_shared<Faulty>());
    s.restart = rk::RestartPolicy{};
    s.restart->max_attempts = 0;
    EXPECT_THROW(rt.launch(s), std::invalid_argument);
}

TEST(Supervision, AFaultRedeliversTheMessageUntilMaxAttemptsThenDeadLetters) {
    rk::Runtime rt("cpu");
    auto h = std::make_shared<Faulty>();
    h->fails = 5;  // more than max_attempts: a dead letter
    rk::KernelSpec s = spec_of("k", h);
    s.restart = rk::RestartPolicy{};
    s.restart->max_restarts = 100;
    s.restart->max_attempts = 3;
    auto k = rt.launch(s);
    k->activate();
    for (std::uint64_t i = 0; i < 8; ++i) send(*k, i, i == 4 ? 1 : 0);
    std::vector<Rec> got = receive_n(*k, 7);
    ASSERT_EQ(got.size(), 7u);
    std::set<std::uint64_t> seqs;
    for (const Rec &r : got) seqs.insert(r.seq);
    EXPECT_EQ(seqs, (std::set<std::uint64_t>{0, 1, 2, 3, 5, 6, 7}));
    ASSERT_TRUE(eventually([&] { return k->dead_letter_counts().total == 1; }));
    std::vector<rk::DeadLetter> dead = k->dead_letters();
    ASSERT_EQ(dead.size(), 1u);
    EXPECT_EQ(dead[0].attempts, 3u);
    EXPECT_EQ(dead[0].code, RK_ERR_FAULT);
    EXPECT_NE(dead[0].error.find("at fault on 4"), std::string::npos) << dead[0].error;
    EXPECT_EQ(h->delivered(4), 3);
    EXPECT_EQ(k->restarts(), 3u);
    EXPECT_EQ(k->state(), rk::KernelState::Active);
    EXPECT_EQ(k->terminate(), rk::KernelState::Terminated);
}

TEST(Supervision, TheWatchdogAbandonsHungWorkersOnEveryBlockAndTheKernelGoesOn) {
    rk::Runtime rt("cpu");
    auto h = std::make_shared<Faulty>();
    rk::KernelSpec s = spec_of("w", h);
    s.grid = 4;
    s.options.set_handler_timeout_ns(50'000'000);  // 50 ms
    s.restart = rk::RestartPolicy{};
    s.restart->max_restarts = 100;
    s.restart->max_attempts = 2;  // the second delivery does not hang
    auto k = rt.launch(s);
    k->enable_telemetry();
    k->activate();
    for (std::uint64_t i = 0; i < 40; ++i) send(*k, i, i % 10 == 3 ? 2 : 0);
    std::vector<Rec> got = receive_n(*k, 40);
    ASSERT_EQ(got.size(), 40u);
    std::set<std::uint64_t> seqs;
    for (const Rec &r : got) seqs.insert(r.seq);
    EXPECT_EQ(seqs.size(), 40u);  // each once: the hung deliveries' late replies are discarded
    EXPECT_EQ(h->hung.load(), 4);
    EXPECT_EQ(k->abandoned_workers(), 4u);
    EXPECT_EQ(k->restarts(), 4u);
    const rk::TelemetrySnapshot t = k->telemetry();
    EXPECT_EQ(t.abandoned_workers, 4u);
    EXPECT_EQ(t.restarts, 4u);
    EXPECT_EQ(t.dead_letters, 0u);
    h->release.store(true);
    ASSERT_TRUE(eventually([&] { return h->returned_late.load() == 4; }));
    std::this_thread::sleep_for(20ms);
    Rec extra{};
    EXPECT_FALSE(k->output()->receive(&extra, nullptr, secs(0.05)));
    EXPECT_EQ(k->terminate(), rk::KernelState::Terminated);
}

TEST(Supervision, PastMaxRestartsTheKernelFaultsAndDrainReturnsItsInputInOrder) {
    rk::Runtime rt("cpu");
    auto h = std::make_shared<Faulty>();
    h->fails = 100;
    rk::KernelSpec s = spec_of("f", h);
    s.restart = rk::RestartPolicy{};
    s.restart->max_restarts = 2;
    s.restart->max_attempts = 10;
    auto k = rt.launch(s);
    for (std::uint64_t i = 0; i < 6; ++i) send(*k, i, i >= 2 ? 1 : 0);
    k->activate();
    EXPECT_EQ(receive_n(*k, 2).size(), 2u);
    ASSERT_TRUE(eventually([&] { return k->state() == rk::KernelState::Faulted; }));
    EXPECT_NE(k->fault().find("max_restarts=2"), std::string::npos) << k->fault();
    EXPECT_EQ(k->restarts(), 2u);
    EXPECT_EQ(k->terminate(), rk::KernelState::Faulted);
    std::vector<rk::DeadLetter> left = k->drain();
    ASSERT_EQ(left.size(), 4u);
    for (std::size_t i = 0; i < left.size(); ++i) {
        Rec r;
        std::memcpy(&r, left[i].record.data(), sizeof r);
        EXPECT_EQ(r.seq, 2 + i);
    }
    EXPECT_EQ(left[0].attempts, 2u);  // delivered (and failed) twice before the third fault stopped it
    EXPECT_TRUE(k->dead_letters().empty());
}

// A running sum whose fault (value 13, on its first delivery only: the state's flag) leaves the state as it was.
constexpr const char *kSum = R"(
typedef struct { unsigned long long seq, value; } rec;
typedef struct { unsigned long long total, faulted; } acc;
int sum(rk_ctx *ctx, const void *in, void *out) {
    acc *st = (acc *)rk_state(ctx);
    const rec *r = (const rec *)in;
    if (r->value == 13 && !st->faulted) { st->faulted = 1; return rk_fault(ctx); }
    st->total += r->value;
    ((rec *)out)->seq = r->seq;
    ((rec *)out)->value = st->total;
    return RK_REPLY;
})";

TEST(Supervision, ARestartKeepsTheStateAndACheckpointCarriesTheHeldMessage) {
    rk::Runtime rt("cpu");
    rk::KernelSpec s;
    s.name = "sum";
    s.handler = rk::Handler::source(kSum, "sum");
    s.input_size = s.output_size = sizeof(Rec);
    s.state_size = 16;
    s.restart = rk::RestartPolicy{};
    s.restart->backoff = 0.5;  // the held message waits for the restarted block
    auto k = rt.launch(s);
    k->activate();
    send(*k, 0, 1);
    send(*k, 1, 13);
    send(*k, 2, 100);
    ASSERT_EQ(receive_n(*k, 1).size(), 1u);
    ASSERT_TRUE(eventually([&] { return k->restarts() == 1; }));
    const std::string blob = k->checkpoint();
    s.name = "copy";
    s.restart.reset();
    auto k2 = rt.launch(s);
    k2->restore(blob);
    k2->activate();
    std::vector<Rec> a = receive_n(*k, 2), b = receive_n(*k2, 2);
    ASSERT_EQ(a.size(), 2u);
    ASSERT_EQ(b.size(), 2u);
    for (const auto *v : {&a, &b}) {
        EXPECT_EQ((*v)[0].seq, 1u);  // the redelivered message first, then the rest, the sum exact
        EXPECT_EQ((*v)[0].value, 14u);
        EXPECT_EQ((*v)[1].seq, 2u);
        EXPECT_EQ((*v)[1].value, 114u);
    }
}

TEST(Supervision, TerminateDoesNotWaitOutAHungHandlerTheWatchdogAbandons) {
    rk::Runtime rt("cpu");
    auto h = std::make_shared<Faulty>();
    rk::KernelSpec s = spec_of("t", h);
    s.options.set_handler_timeout_ns(100'000'000);  // 100 ms
    s.restart = rk::RestartPolicy{};
    auto k = rt.launch(s);
    k->activate();
    for (std::uint64_t i = 0; i < 3; ++i) send(*k, i, i == 0 ? 2 : 0);
    ASSERT_TRUE(eventually([&] { return h->hung.load() == 1; }));
    const auto t0 = std::chrono::steady_clock::now();
    EXPECT_EQ(k->terminate(), rk::KernelState::Terminated);
    EXPECT_LT(std::chrono::steady_clock::now() - t0, 2s);  // the timeout, not the handler's 10 s
    std::vector<rk::DeadLetter> left = k->drain();
    ASSERT_EQ(left.size(), 3u);  // the hung message first, then the rest: not failed, not redelivered
    for (std::size_t i = 0; i < left.size(); ++i) {
        Rec r;
        std::memcpy(&r, left[i].record.data(), sizeof r);
        EXPECT_EQ(r.seq, i);
    }
    EXPECT_EQ(k->abandoned_workers(), 1u);
    EXPECT_EQ(k->restarts(), 0u);
    EXPECT_TRUE(k->dead_letters().empty());
    h->release.store(true);
    ASSERT_TRUE(eventually([&] { return h->returned_late.load() == 1; }));
}

// Faults (value 13, first delivery: the state remembers the last faulted seq) in long runs; the state counts
// every message handled, so one handled twice would show.
constexpr const char *kCount = R"(
typedef struct { unsigned long long seq, value; } rec;
typedef struct { unsigned long long faulted, handled; } acc;
int count(rk_ctx *ctx, const void *in, void *out) {
    acc *st = (acc *)rk_state(ctx);
    const rec *r = (const rec *)in;
    if (r->value == 13 && st->faulted != r->seq + 1) { st->faulted = r->seq + 1; return rk_fault(ctx); }
    st->handled += 1;
    *(rec *)out = *r;
    return RK_REPLY;
})";

TEST(Supervision, AFaultStopsItsRunThereUnderAPolicyAndNothingIsHandledTwice) {
    rk::Runtime rt("cpu");
    rk::KernelSpec s;
    s.name = "count";
    s.handler = rk::Handler::source(kCount, "count");
    s.input_size = s.output_size = sizeof(Rec);
    s.state_size = 16;
    s.options.set_queue_capacity(512);
    s.restart = rk::RestartPolicy{};
    s.restart->max_restarts = 1000;
    auto k = rt.launch(s);
    constexpr std::uint64_t n = 400;
    for (std::uint64_t i = 0; i < n; ++i) send(*k, i, i % 9 == 4 ? 13 : 0);  // all waiting: long runs
    k->activate();
    std::vector<Rec> got = receive_n(*k, n);
    ASSERT_EQ(got.size(), n);
    for (std::uint64_t i = 0; i < n; ++i) EXPECT_EQ(got[i].seq, i);
    const std::vector<std::uint8_t> st = k->actor_state();
    std::uint64_t handled;
    std::memcpy(&handled, st.data() + 8, sizeof handled);
    EXPECT_EQ(handled, n);
    EXPECT_EQ(k->restarts(), (n + 4) / 9);
    EXPECT_TRUE(k->dead_letters().empty());
    EXPECT_EQ(k->terminate(), rk::KernelState::Terminated);
}

}  // namespace
