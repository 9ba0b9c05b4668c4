// The layouts of layout.h as seen by the host compiler, and the ring laid out in one allocation.
#include <gtest/gtest.h>

#include <cstddef>

#include "ringkernel/layout.h"
#include "ringkernel/ring.hpp"
#include "rk_ring.h"

extern "C" int rk_c_dialect_roundtrip(void);
extern "C" unsigned rk_c_sizeof_envelope(void);
extern "C" unsigned rk_c_sizeof_control_block(void);
extern "C" unsigned rk_c_sizeof_telemetry(void);
extern "C" unsigned rk_c_sizeof_ring_header(void);

TEST(Layout, SizesMatchTheDesign) {
    EXPECT_EQ(sizeof(rk_control_block), 128u);
    EXPECT_EQ(sizeof(rk_telemetry), 64u);
    EXPECT_EQ(sizeof(rk_envelope), 64u);
    EXPECT_EQ(sizeof(rk_ring_header), 384u);
    EXPECT_EQ(alignof(rk_envelope), 8u);
}

TEST(Layout, HeadAndTailOnSeparate128ByteLines) {
    EXPECT_EQ(offsetof(rk_ring_header, head) / 128, 0u);
    EXPECT_EQ(offsetof(rk_ring_header, tail) / 128, 1u);
    EXPECT_EQ(offsetof(rk_ring_header, capacity) / 128, 2u);
}

TEST(Layout, CCompilerAgreesWithCxxCompiler) {
    EXPECT_EQ(rk_c_sizeof_envelope(), sizeof(rk_envelope));
    EXPECT_EQ(rk_c_sizeof_control_block(), sizeof(rk_control_block));
    EXPECT_EQ(rk_c_sizeof_telemetry(), sizeof(rk_telemetry));
    EXPECT_EQ(rk_c_sizeof_ring_header(), sizeof(rk_ring_header));
}

TEST(Layout, DialectRunsWhenCompiledAsC) { EXPECT_EQ(rk_c_dialect_roundtrip(), 0); }

TEST(Layout, RingSlotsFollowTheHeaderAtTheStride) {
    rk::Ring ring(16, 64);
    auto *base = reinterpret_cast<unsigned char *>(ring.header());
    EXPECT_EQ(ring.slot_stride(), 128u);
    EXPECT_EQ(ring.max_payload(), 64u);
    EXPECT_EQ(reinterpret_cast<unsigned char *>(ring.slot(0)), base + sizeof(rk_ring_header));
    EXPECT_EQ(reinterpret_cast<unsigned char *>(ring.slot(3)), base + sizeof(rk_ring_header) + 3 * 128);
    EXPECT_EQ(ring.slot(16), ring.slot(0));  // positions wrap by the mask
    EXPECT_EQ(ring.header()->magic, RK_RING_MAGIC);
    EXPECT_EQ(ring.header()->mask, 15u);
    for (unsigned i = 0; i < 16; ++i) EXPECT_EQ(ring.slot(i)->sequence, i);
    EXPECT_EQ(reinterpret_cast<std::uintptr_t>(ring.header()) % 128, 0u);
}

TEST(Layout, SlotStrideRoundsToWholeLines) {
    EXPECT_EQ(rk_ring_slot_stride(1), 128u);
    EXPECT_EQ(rk_ring_slot_stride(64), 128u);
    EXPECT_EQ(rk_ring_slot_stride(65), 192u);
    EXPECT_EQ(rk_ring_slot_stride(0), 64u);
}
