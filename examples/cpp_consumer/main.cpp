// Embeds the ringkernel core: a queue of 64-byte records between two threads, HLC stamps, and the
// stats that prove nothing was lost; then ring kernels on the CPU backend -- the built-in vector_add
// and a C++ handler, connected kernel to kernel. Built by ctest against an installed copy.
#include <ringkernel/ringkernel.hpp>
#include <rk_builtins.h>

#include <cstring>

#include <cstdint>
#include <cstdio>
#include <thread>

struct Sample {
    std::uint64_t seq;
    double values[7];
};
static_assert(sizeof(Sample) == 64, "64-byte record");

// A C++ handler: the response's length doubled, so the pipeline's effect is visible.
struct Doubler final : rk::HostHandler {
    int handle(rk_ctx *, const void *in, void *out) override {
        std::memcpy(out, in, sizeof(rk_vector_add_response));
        static_cast<rk_vector_add_response *>(out)->length *= 2;
        return RK_REPLY;
    }
};

static bool ring_kernels() {
    rk::Runtime rt("cpu");
    rk::KernelSpec add;
    add.name = "adder";
    add.handler = rk::Handler::builtin("vector_add");
    add.input_size = sizeof(rk_vector_add_request);
    add.output_size = sizeof(rk_vector_add_response);
    add.block = 32;
    rk::KernelSpec dbl;
    dbl.name = "doubler";
    dbl.handler = rk::Handler::on_host(std::make_shared<Doubler>());
    dbl.input_size = dbl.output_size = sizeof(rk_vector_add_response);
    auto a = rt.launch(add);
    auto d = rt.launch(dbl);
    rt.connect(*a, *d);
    a->activate();
    d->activate();
    rk_vector_add_request req{};
    req.op = RK_VECTOR_ADD;
    req.length = 25;
    for (int i = 0; i < 25; ++i) {
        req.a[i] = static_cast<float>(i);
        req.b[i] = 1.0f;
    }
    if (!a->input()->send(&req)) return false;
    rk_vector_add_response resp{};
    if (!d->output()->receive(&resp, nullptr, rk::Wait::for_ns(2000000000))) return false;
    const bool ok = resp.status == 0 && resp.length == 50 && resp.result[24] == 25.0f;
    std::printf("ring kernels: adder -> doubler on '%s': result[24]=%.1f length=%u %s\n", rt.backend().c_str(),
                static_cast<double>(resp.result[24]), resp.length, ok ? "ok" : "WRONG");
    return ok;
}

int main() {
    rk::QueueConfig cfg;
    cfg.capacity = 1024;
    cfg.payload_size = sizeof(Sample);
    cfg.backpressure = rk::Backpressure::Block;
    rk::Queue q(cfg);

    constexpr std::uint64_t kCount = 100000;
    std::thread producer([&] {
        for (std::uint64_t i = 0; i < kCount; ++i) {
            Sample s{i, {static_cast<double>(i)}};
            q.send(&s);
        }
    });
    std::uint64_t expected = 0, last_stamp = 0;
    bool ordered = true;
    while (expected < kCount) {
        Sample s;
        rk_envelope env;
        if (!q.receive(&s, &env, rk::Wait::for_ns(1000000000))) break;
        ordered = ordered && s.seq == expected && env.timestamp > last_stamp;
        last_stamp = env.timestamp;
        ++expected;
    }
    producer.join();
    const rk::QueueStats st = q.stats();
    std::printf("ringkernel %s: sent=%llu received=%llu in order=%s\n", RINGKERNEL_VERSION,
                static_cast<unsigned long long>(st.sent), static_cast<unsigned long long>(st.received),
                ordered ? "yes" : "no");
    if (!ordered || st.sent != kCount || st.received != kCount) return 1;
    if (!ring_kernels()) return 1;
    std::printf("consumer ok\n");
    return 0;
}
