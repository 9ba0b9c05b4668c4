// Actor state, pauses, checkpoints, dead letters and drain through the C++ API (DESIGN §11), on the CPU backend.
#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <cstring>
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
struct Acc {
    std::uint64_t count;
    std::uint64_t total;
};

rk::Wait secs(double s) { return rk::Wait::for_ns(static_cast<std::int64_t>(s * 1e9)); }

// A running sum in the device dialect: the state record is the kernel's, replies carry the total so far.
constexpr const char *kSum = R"(
typedef struct { unsigned long long seq, value; } rec;
typedef struct { unsigned long long count, total; } acc;
int sum(rk_ctx *ctx, const void *in, void *out) {
    acc *st = (acc *)rk_state(ctx);
    const rec *r = (const rec *)in;
    if (st == 0 || rk_state_size(ctx) != sizeof(acc)) return RK_ERR_HANDLER;
    if (r->value == 13) return RK_ERR_INPUT;
    st->count += 1;
    st->total += r->value;
    ((rec *)out)->seq = r->seq;
    ((rec *)out)->value = st->total;
    return RK_REPLY;
})";

rk::KernelSpec sum_spec(const std::string &name) {
    rk::KernelSpec s;
    s.name = name;
    s.handler = rk::Handler::source(kSum, "sum");
    s.input_size = s.output_size = sizeof(Rec);
    s.state_size = sizeof(Acc);
    s.state_type = 7;
    s.options.set_queue_capacity(256);
    return s;
}

int paused_blocks(const rk::Kernel &k) { return __atomic_load_n(&k.control_block()->blocks_paused, __ATOMIC_ACQUIRE); }

Acc state_of(rk::Kernel &k) {
    std::vector<std::uint8_t> raw = k.actor_state();
    EXPECT_EQ(raw.size(), sizeof(Acc));
    Acc a{};
    std::memcpy(&a, raw.data(), sizeof a);
    return a;
}

void send_values(rk::Kernel &k, std::uint64_t first, std::uint64_t n, std::uint64_t value) {
    for (std::uint64_t i = first; i < first + n; ++i) {
        Rec r{i, value};
        ASSERT_TRUE(k.input()->send(&r, {}, secs(5)));
    }
}

std::vector<Rec> receive_n(rk::Kernel &k, std::size_t n) {
    std::vector<Rec> out;
    Rec r{};
    while (out.size() < n && k.output()->receive(&r, nullptr, secs(5))) out.push_back(r);
    return out;
}

TEST(ActorState, SourceHandlersKeepStateAcrossMessagesAndCopiesAreConsistent) {
    rk::Runtime rt("cpu");
    auto k = rt.launch(sum_spec("sum"));
    EXPECT_EQ(state_of(*k).count, 0u);  // zeroed
    k->activate();
    send_values(*k, 0, 100, 2);
    auto replies = receive_n(*k, 100);
    ASSERT_EQ(replies.size(), 100u);
    for (std::size_t i = 0; i < replies.size(); ++i) EXPECT_EQ(replies[i].value, 2 * (i + 1));
    const Acc a = state_of(*k);
    EXPECT_EQ(a.count, 100u);
    EXPECT_EQ(a.total, 200u);
    EXPECT_EQ(k->state(), rk::KernelState::Active);  // resumed after the copy
    send_values(*k, 100, 1, 2);                       // and it goes on (counting itself out as it does)
    ASSERT_EQ(receive_n(*k, 1).size(), 1u);
    EXPECT_EQ(paused_blocks(*k), 0);
    EXPECT_EQ(state_of(*k).count, 101u);
}

TEST(ActorState, StateSizeIsChecked) {
    rk::Runtime rt("cpu");
    rk::KernelSpec s = sum_spec("big");
    s.state_size = rk::kMaxStateBytes + 1;
    EXPECT_THROW(rt.launch(s), std::invalid_argument);
    rk::KernelSpec e = sum_spec("none");
    e.handler = rk::Handler::builtin("echo");
    e.state_size = 0;
    auto k = rt.launch(e);
    EXPECT_THROW(k->actor_state(), std::invalid_argument);
}

TEST(ActorState, PausedBlocksAreCountedAndTheCountClearsOnResume) {
    rk::Runtime rt("cpu");
    rk::KernelSpec s = sum_spec("wide");
    s.handler = rk::Handler::builtin("echo");  // four blocks: a handler writing the state would need atomics
    s.grid = 4;
    auto k = rt.launch(s);
    k->activate();
    std::vector<Rec> replies;
    for (int round = 0; round < 20; ++round) {
        send_values(*k, round * 50, 50, 1);
        (void)k->checkpoint();  // pauses all four blocks, then resumes them
        auto got = receive_n(*k, 50);
        replies.insert(replies.end(), got.begin(), got.end());
    }
    EXPECT_EQ(replies.size(), 1000u);
    k->deactivate();
    const auto deadline = std::chrono::steady_clock::now() + 5s;
    while (paused_blocks(*k) != 4 && std::chrono::steady_clock::now() < deadline)
        std::this_thread::sleep_for(1ms);
    EXPECT_EQ(paused_blocks(*k), 4);
    k->activate();  // wakes every block: each counts itself out as it resumes
    send_values(*k, 1000, 1, 1);
    EXPECT_EQ(receive_n(*k, 1).size(), 1u);
    const auto until = std::chrono::steady_clock::now() + 5s;
    while (paused_blocks(*k) != 0 && std::chrono::steady_clock::now() < until)
        std::this_thread::sleep_for(1ms);
    EXPECT_EQ(paused_blocks(*k), 0);
}

TEST(ActorState, CheckpointRestoreCarriesStateAndPendingInput) {
    rk::Runtime rt("cpu");
    auto k = rt.launch(sum_spec("a"));
    k->activate();
    send_values(*k, 0, 10, 3);
    ASSERT_EQ(receive_n(*k, 10).size(), 10u);
    k->deactivate();
    send_values(*k, 10, 5, 3);
    const std::string blob = k->checkpoint();
    EXPECT_EQ(k->input()->size(), 5u);  // copied, not taken

    rk::Runtime rt2("cpu");
    auto k2 = rt2.launch(sum_spec("a"));
    k2->restore(blob);
    EXPECT_EQ(state_of(*k2).count, 10u);
    EXPECT_GE(k2->hlc(), k->hlc());  // its clock is past every stamp the checkpoint saw
    k2->activate();
    auto replies = receive_n(*k2, 5);
    ASSERT_EQ(replies.size(), 5u);
    for (std::size_t i = 0; i < 5; ++i) {
        EXPECT_EQ(replies[i].seq, 10 + i);
        EXPECT_EQ(replies[i].value, 3 * (11 + i));
    }
}

TEST(ActorState, RestoreRefusesWhatDoesNotFitAndChangesNothing) {
    rk::Runtime rt("cpu");
    auto k = rt.launch(sum_spec("src"));
    send_values(*k, 0, 3, 1);
    const std::string blob = k->checkpoint();
    auto target = rt.launch(sum_spec("dst"));
    std::string corrupt = blob;
    corrupt[corrupt.size() / 2] ^= 0x01;
    EXPECT_THROW(target->restore(corrupt), rk::MessageFormatError);
    EXPECT_THROW(target->restore(blob.substr(0, 40)), rk::MessageFormatError);
    rk::KernelSpec other = sum_spec("other");
    other.state_type = 8;
    auto k_other = rt.launch(other);
    EXPECT_THROW(k_other->restore(blob), rk::MessageFormatError);
    EXPECT_EQ(target->input()->size(), 0u);
    EXPECT_EQ(state_of(*target).count, 0u);
    target->restore(blob);
    EXPECT_EQ(target->input()->size(), 3u);
}

struct Throwing final : rk::HostHandler {
    int handle(rk_ctx *, const void *in, void *out) override {
        Rec r;
        std::memcpy(&r, in, sizeof r);
        if (r.value == 13) throw std::runtime_error("unlucky " + std::to_string(r.seq));
        std::memcpy(out, &r, sizeof r);
        return RK_REPLY;
    }
};

TEST(DeadLetters, FailedRequestsAreKeptWithWhatTheHandlerSaid) {
    rk::Runtime rt("cpu");
    for (bool host : {false, true}) {
        rk::KernelSpec s = sum_spec(host ? "host" : "source");
        if (host) {
            s.handler = rk::Handler::on_host(std::make_shared<Throwing>());
            s.state_size = 0;
        }
        s.options.set_dead_letter_capacity(16);
        auto k = rt.launch(s);
        k->activate();
        for (std::uint64_t i = 0; i < 30; ++i) {
            Rec r{i, i % 3 == 0 ? 13u : 1u};
            rk::SendOptions o;
            o.has_id = true;
            o.id = 100 + i;
            ASSERT_TRUE(k->input()->send(&r, o, secs(5)));
        }
        EXPECT_EQ(receive_n(*k, 20).size(), 20u);
        const auto deadline = std::chrono::steady_clock::now() + 5s;
        while (k->messages_processed() < 30 && std::chrono::steady_clock::now() < deadline) std::this_thread::sleep_for(1ms);
        std::vector<rk::DeadLetter> dead = k->dead_letters();
        ASSERT_EQ(dead.size(), 10u);
        for (std::size_t j = 0; j < dead.size(); ++j) {
            Rec r;
            std::memcpy(&r, dead[j].record.data(), sizeof r);
            EXPECT_EQ(r.seq, 3 * j);
            EXPECT_EQ(dead[j].envelope.message_id, 100 + 3 * j);
            EXPECT_EQ(dead[j].attempts, 1u);
            if (host) {
                EXPECT_EQ(dead[j].code, RK_ERR_HOST);
                EXPECT_EQ(dead[j].error, "unlucky " + std::to_string(r.seq));
            } else {
                EXPECT_EQ(dead[j].code, RK_ERR_INPUT);
                EXPECT_NE(dead[j].error.find("RK_ERR_INPUT"), std::string::npos) << dead[j].error;
            }
        }
        rk::DeadLetterCounts c = k->dead_letter_counts();
        EXPECT_EQ(c.total, 10u);
        EXPECT_EQ(c.held, 10u);
        EXPECT_EQ(c.dropped, 0u);
        EXPECT_EQ(k->dead_letters(true).size(), 10u);
        c = k->dead_letter_counts();
        EXPECT_EQ(c.held, 0u);
        EXPECT_EQ(c.total, 10u);
    }
}

struct AtFault final : rk::HostHandler {
    int handle(rk_ctx *, const void *in, void *out) override {
        Rec r;
        std::memcpy(&r, in, sizeof r);
        if (r.seq == 1) throw rk::KernelAtFault("state is broken");
        std::memcpy(out, &r, sizeof r);
        return RK_REPLY;
    }
};

TEST(DeadLetters, AHandlerSayingItsKernelIsAtFaultFailsThatMessageWithoutAPolicy) {
    rk::Runtime rt("cpu");
    rk::KernelSpec s = sum_spec("at_fault");
    s.handler = rk::Handler::on_host(std::make_shared<AtFault>());
    s.state_size = 0;
    auto k = rt.launch(s);
    k->activate();
    send_values(*k, 0, 3, 1);
    EXPECT_EQ(receive_n(*k, 2).size(), 2u);
    const auto deadline = std::chrono::steady_clock::now() + 5s;
    while (k->messages_processed() < 3 && std::chrono::steady_clock::now() < deadline) std::this_thread::sleep_for(1ms);
    std::vector<rk::DeadLetter> dead = k->dead_letters();
    ASSERT_EQ(dead.size(), 1u);
    EXPECT_EQ(dead[0].code, RK_ERR_FAULT);
    EXPECT_EQ(dead[0].error, "state is broken");
    EXPECT_EQ(k->state(), rk::KernelState::Active);
}

TEST(Drain, AStoppedKernelGivesBackWhatItNeverProcessed) {
    rk::Runtime rt("cpu");
    auto k = rt.launch(sum_spec("d"));
    EXPECT_THROW(k->drain(), rk::LifecycleError);
    send_values(*k, 0, 7, 1);  // never activated
    EXPECT_EQ(k->terminate(), rk::KernelState::Terminated);
    std::vector<rk::DeadLetter> left = k->drain();
    ASSERT_EQ(left.size(), 7u);
    for (std::size_t i = 0; i < left.size(); ++i) {
        Rec r;
        std::memcpy(&r, left[i].record.data(), sizeof r);
        EXPECT_EQ(r.seq, i);
    }
    EXPECT_TRUE(k->drain().empty());
}

}  // namespace
