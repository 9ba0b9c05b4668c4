// checkpoint.cpp — a kernel's accepted but unprocessed input (DESIGN §11): Kernel::checkpoint / restore (with
// its state, copied while the blocks are paused, in a versioned format with a checksum) and Kernel::drain
// (taken out of a stopped kernel).
//
// Format (little-endian), version 1:
//     header   CheckpointHeader (64 bytes): magic "RKCKPT01", version, sizes and type ids of the input, output
//              and state records, the number of messages, the kernel's HLC when it was taken
//     state    state_size bytes
//     messages n x (56 envelope bytes, as they travel (layout.h), + input_size payload bytes), oldest first
//     crc      CRC-32 (IEEE 802.3, zlib's crc32) of everything before it, 4 bytes
#include <algorithm>
#include <array>
#include <chrono>
#include <cstring>
#include <sstream>
#include <stdexcept>
#include <thread>

#include "kernel_core.hpp"
#include "rk_kernel.h"

namespace rk {

namespace {

constexpr char kMagic[8] = {'R', 'K', 'C', 'K', 'P', 'T', '0', '1'};
constexpr std::uint32_t kVersion = 1;

struct CheckpointHeader {
    char magic[8];
    std::uint32_t version;
    std::uint32_t header_bytes;
    std::uint32_t input_size, output_size, state_size;
    std::uint16_t input_type, output_type, state_type, reserved0;
    std::uint32_t reserved1;
    std::uint64_t messages;
    std::uint64_t hlc;
    std::uint64_t reserved2;
};
static_assert(sizeof(CheckpointHeader) == 64, "checkpoint header layout");

// CRC-32 (reflected polynomial 0xEDB88320, as zlib's crc32), eight bytes a step ("slicing by 8").
std::uint32_t crc32(const std::uint8_t *p, std::size_t n) {
    static const auto tables = [] {
        std::array<std::array<std::uint32_t, 256>, 8> t{};
        for (std::uint32_t i = 0; i < 256; ++i) {
            std::uint32_t c = i;
            for (int k = 0; k < 8; ++k) c = (c & 1u) ? 0xEDB88320u ^ (c >> 1) : c >> 1;
            t[0][i] = c;
        }
        for (std::uint32_t i = 0; i < 256; ++i)
            for (int k = 1; k < 8; ++k) t[k][i] = (t[k - 1][i] >> 8) ^ t[0][t[k - 1][i] & 0xFFu];
        return t;
    }();
    std::uint32_t c = 0xFFFFFFFFu;
    for (; n >= 8; n -= 8, p += 8) {
        std::uint32_t lo, hi;
        std::memcpy(&lo, p, 4);
        std::memcpy(&hi, p + 4, 4);
        lo ^= c;
        c = tables[7][lo & 0xFFu] ^ tables[6][(lo >> 8) & 0xFFu] ^ tables[5][(lo >> 16) & 0xFFu] ^ tables[4][lo >> 24] ^
            tables[3][hi & 0xFFu] ^ tables[2][(hi >> 8) & 0xFFu] ^ tables[1][(hi >> 16) & 0xFFu] ^ tables[0][hi >> 24];
    }
    for (; n; --n, ++p) c = tables[0][(c ^ *p) & 0xFFu] ^ (c >> 8);
    return c ^ 0xFFFFFFFFu;
}

[[noreturn]] void refuse(const std::string &kernel, const std::string &why) {
    throw MessageFormatError("restore() into kernel '" + kernel + "': " + why + "; nothing was changed");
}

// The messages waiting in `r` (published, not taken), oldest first, appended to `out` as the format stores
// them. The blocks are paused; a DROP_OLDEST sender may still evict: a slot whose turn changed while it
// was copied is left out (it was dropped, and counted so by its queue).
std::uint64_t copy_waiting(rk_ring_header *r, std::uint32_t in_size, std::string &out) {
    const std::size_t record = RK_ENVELOPE_MESSAGE_BYTES + in_size;
    const std::uint64_t head = rk_atomic_load_u64(&r->head, RK_ACQUIRE, RK_SCOPE_SYSTEM);
    const std::uint64_t tail = rk_atomic_load_u64(&r->tail, RK_ACQUIRE, RK_SCOPE_SYSTEM);
    const std::uint64_t most = tail > head ? std::min<std::uint64_t>(tail - head, r->capacity) : 0;
    const std::size_t start = out.size();
    out.resize(start + most * record);  // written in place, trimmed to what was copied
    char *dst = &out[start];
    std::uint64_t n = 0;
    for (std::uint64_t pos = head; pos != head + most; ++pos) {
        rk_envelope *slot = rk_ring_slot(r, pos);
        const std::uint64_t seq = rk_atomic_load_u64(&slot->sequence, RK_ACQUIRE, RK_SCOPE_SYSTEM);
        if (seq != pos + 1) {
            if (static_cast<std::int64_t>(seq - (pos + 1)) < 0) break;  // not published yet: its send has not returned
            continue;                                                   // evicted meanwhile
        }
        std::memcpy(dst, slot, RK_ENVELOPE_MESSAGE_BYTES);
        std::memcpy(dst + RK_ENVELOPE_MESSAGE_BYTES, rk_envelope_payload(slot), in_size);
        if (rk_atomic_load_u64(&slot->sequence, RK_ACQUIRE, RK_SCOPE_SYSTEM) != seq) continue;  // evicted while copied
        dst += record;
        ++n;
    }
    out.resize(start + n * record);
    return n;
}

// Every ring the kernel takes input from (its own, K2K, topics), as its current routes name them.
std::vector<rk_ring_header *> input_rings(KernelCore &core) {
    std::lock_guard<std::mutex> lock(core.routes_mu);
    const rk_routes &r = core.routes();
    std::vector<rk_ring_header *> rings;
    for (rk_u32 i = 0; i < r.n_inputs; ++i) rings.push_back(r.inputs[i].ring);
    return rings;
}

}  // namespace

std::string Kernel::checkpoint(std::int64_t timeout_ns) {
    check_process("checkpoint()");
    std::lock_guard<std::mutex> lock(mu_);
    require({KernelState::Launched, KernelState::Active, KernelState::Deactivated}, "checkpoint()",
            "a checkpoint is taken of a running kernel; a stopped one's input is read with drain()");
    CheckpointHeader h{};
    std::memcpy(h.magic, kMagic, sizeof kMagic);
    h.version = kVersion;
    h.header_bytes = sizeof h;
    h.input_size = spec_.input_size;
    h.output_size = spec_.output_size;
    h.state_size = spec_.state_size;
    h.input_type = spec_.input_type;
    h.output_type = spec_.output_type;
    h.state_type = spec_.state_type;
    std::string blob(sizeof h, '\0');
    const bool was_active = pause("checkpoint()", timeout_ns);
    try {
        if (core_->state) blob.append(static_cast<const char *>(core_->state), spec_.state_size);
        // Held for redelivery by the supervisor (with a device block's fault it has not decided yet): accepted
        // before anything in the rings.
        auto serving = core_->supervision->serving();
        {
            std::lock_guard<std::mutex> letters(core_->dead_mu);
            core_->collect_dead_letters();
        }
        for (const HeldMessage &m : core_->supervision->copy_all()) {
            rk_envelope env = m.envelope;
            env.sequence = 0;
            blob.append(reinterpret_cast<const char *>(&env), RK_ENVELOPE_MESSAGE_BYTES);
            blob.append(reinterpret_cast<const char *>(m.payload.data()), spec_.input_size);
            ++h.messages;
        }
        for (rk_ring_header *r : input_rings(*core_)) {
            if (r->flags & RK_RING_FLAG_DEVICE_LOCAL)
                throw std::invalid_argument("checkpoint(): kernel '" + name() + "' is fed by a kernel-to-kernel ring in "
                                            "GPU memory, which the host cannot read; checkpoint the pipeline's first "
                                            "kernel, or connect through host memory");
            h.messages += copy_waiting(r, spec_.input_size, blob);
        }
        h.hlc = rk_atomic_load_u64(&core_->cb->hlc, RK_ACQUIRE, RK_SCOPE_SYSTEM);
    } catch (...) {
        resume(was_active);
        throw;
    }
    resume(was_active);
    std::memcpy(blob.data(), &h, sizeof h);
    const std::uint32_t crc = crc32(reinterpret_cast<const std::uint8_t *>(blob.data()), blob.size());
    blob.append(reinterpret_cast<const char *>(&crc), sizeof crc);
    return blob;
}

void Kernel::restore(const std::string &blob, std::int64_t timeout_ns) {
    check_process("restore()");
    std::lock_guard<std::mutex> lock(mu_);
    require({KernelState::Launched, KernelState::Active, KernelState::Deactivated}, "restore()",
            "a checkpoint is restored into a kernel that is running or ready to run");
    // Check everything before anything is changed.
    CheckpointHeader h{};
    if (blob.size() < sizeof h + 4)
        refuse(name(), "a checkpoint is at least " + std::to_string(sizeof h + 4) + " bytes, got " +
                           std::to_string(blob.size()));
    std::memcpy(&h, blob.data(), sizeof h);
    if (std::memcmp(h.magic, kMagic, sizeof kMagic) != 0) refuse(name(), "the bytes are not a ringkernel checkpoint");
    if (h.version != kVersion || h.header_bytes != sizeof h)
        refuse(name(), "checkpoint format version " + std::to_string(h.version) + " is not the version this build reads (" +
                           std::to_string(kVersion) + ")");
    std::uint32_t stored_crc;
    std::memcpy(&stored_crc, blob.data() + blob.size() - 4, 4);
    if (crc32(reinterpret_cast<const std::uint8_t *>(blob.data()), blob.size() - 4) != stored_crc)
        refuse(name(), "the checksum does not match: the checkpoint is corrupt or truncated");
    auto describe = [](std::uint32_t size, std::uint16_t type) {
        return std::to_string(size) + " bytes, type id " + std::to_string(type);
    };
    if (h.input_size != spec_.input_size || h.input_type != spec_.input_type)
        refuse(name(), "the checkpoint's input records are " + describe(h.input_size, h.input_type) + ", the kernel's " +
                           describe(spec_.input_size, spec_.input_type));
    if (h.output_size != spec_.output_size || h.output_type != spec_.output_type)
        refuse(name(), "the checkpoint's output records are " + describe(h.output_size, h.output_type) +
                           ", the kernel's " + describe(spec_.output_size, spec_.output_type));
    if (h.state_size != spec_.state_size || h.state_type != spec_.state_type)
        refuse(name(), "the checkpoint's state is " + describe(h.state_size, h.state_type) + ", the kernel's " +
                           describe(spec_.state_size, spec_.state_type));
    const std::size_t record = RK_ENVELOPE_MESSAGE_BYTES + spec_.input_size;
    const std::size_t body = blob.size() - 4 - sizeof h - spec_.state_size;
    if (blob.size() - 4 < sizeof h + spec_.state_size || body % record != 0 || body / record != h.messages)
        refuse(name(), "its length does not match its header (" + std::to_string(h.messages) + " messages)");
    const char *msgs = blob.data() + sizeof h + spec_.state_size;
    for (std::uint64_t i = 0; i < h.messages; ++i) {
        rk_envelope env;
        std::memcpy(&env, msgs + i * record, RK_ENVELOPE_MESSAGE_BYTES);
        if (env.payload_size != spec_.input_size || (spec_.input_type && env.type_id != spec_.input_type))
            refuse(name(), "message " + std::to_string(i) + " does not match the kernel's input records");
    }
    Ring *ring = input_->ring();
    if (!ring) refuse(name(), "its input queue is not a ring");  // priority queues are refused at launch
    const bool was_active = pause("restore()", timeout_ns);
    const std::uint64_t free_slots = ring->capacity() - std::min<std::uint64_t>(ring->size(), ring->capacity());
    if (h.messages > free_slots) {
        resume(was_active);
        throw std::invalid_argument("restore() into kernel '" + name() + "': the checkpoint holds " +
                                    std::to_string(h.messages) + " messages and its input queue has room for " +
                                    std::to_string(free_slots) + " now (capacity " + std::to_string(ring->capacity()) +
                                    "); restore into a kernel with a larger queue_capacity. Nothing was changed");
    }
    if (core_->state) std::memcpy(core_->state, blob.data() + sizeof h, spec_.state_size);
    // The kernel's clock goes past every stamp the checkpoint saw, so its replies come after them.
    std::uint64_t latest = h.hlc;
    std::uint64_t pushed = 0;
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(5);
    for (std::uint64_t i = 0; i < h.messages;) {
        rk_envelope env;
        std::memcpy(&env, msgs + i * record, RK_ENVELOPE_MESSAGE_BYTES);
        env.sequence = 0;
        latest = std::max<std::uint64_t>(latest, env.timestamp);
        if (ring->try_push(env, msgs + i * record + RK_ENVELOPE_MESSAGE_BYTES)) {
            ++i;
            ++pushed;
            continue;
        }
        // The room was there a moment ago: another sender took it. Wait a little for the kernel's consumers...
        // they are paused, so resume them and go on pushing behind them.
        resume(was_active);
        if (!was_active || std::chrono::steady_clock::now() > deadline)
            throw KernelFaultError("restore() into kernel '" + name() + "': other senders filled the input queue while "
                                   "the checkpoint's messages went in; " + std::to_string(pushed) + " of " +
                                   std::to_string(h.messages) + " entered (the state was restored)");
        std::this_thread::sleep_for(std::chrono::microseconds(50));
    }
    std::uint64_t cur = rk_atomic_load_u64(&core_->cb->hlc, RK_RELAXED, RK_SCOPE_SYSTEM);
    while (latest > cur && !rk_atomic_cas_u64(&core_->cb->hlc, &cur, latest, RK_ACQ_REL, RK_RELAXED, RK_SCOPE_SYSTEM)) {
    }
    input_->notify_readable();
    resume(was_active);
}

std::vector<DeadLetter> Kernel::drain() {
    check_process("drain()");
    std::lock_guard<std::mutex> lock(mu_);
    require({KernelState::Terminated, KernelState::Faulted}, "drain()",
            "drain() takes the input of a stopped kernel; checkpoint() copies a running one's");
    std::vector<DeadLetter> out;
    auto serving = core_->supervision->serving();
    {
        std::lock_guard<std::mutex> letters(core_->dead_mu);
        core_->collect_dead_letters();  // a device block's fault its supervisor had not taken yet comes first
    }
    for (HeldMessage &m : core_->supervision->take_all()) {
        DeadLetter d;
        d.envelope = m.envelope;
        d.record = std::move(m.payload);
        d.attempts = d.envelope.reserved0;
        d.error = "never processed: kernel '" + name() + "' stopped first";
        out.push_back(std::move(d));
    }
    for (rk_ring_header *r : input_rings(*core_)) {
        if (r->flags & RK_RING_FLAG_DEVICE_LOCAL) continue;  // in GPU memory: the host cannot read it
        DeadLetter d;
        d.record.resize(spec_.input_size);
        while (rk_ring_try_pop(r, &d.envelope, d.record.data(), spec_.input_size, 0, RK_SCOPE_SYSTEM)) {
            d.code = 0;
            d.attempts = d.envelope.reserved0;
            d.error = "never processed: kernel '" + name() + "' stopped first";
            out.push_back(d);
        }
    }
    input_->notify_space();
    return out;
}

}  // namespace rk
