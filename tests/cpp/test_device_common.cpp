// test_device_common.cpp — what the device backends share on the host side: the per-device count of
// compute units (claims, refusals, give-backs, abandoned launches) and the record of a kernel's fault.
#include <gtest/gtest.h>

#include <stdexcept>
#include <string>

#include "../../csrc/backends/device_common.hpp"
#include "ringkernel/memory.hpp"

namespace rk {
namespace {

using Claim = DeviceUnits::Claim;
using Held = DeviceUnits::Held;

TEST(DeviceUnits, ClaimsAreCountedAndGivenBackOnce) {
    auto units = std::make_shared<DeviceUnits>();
    auto a = units->claim([](const Held &h) {
        EXPECT_EQ(h.resident, 0);
        return Claim{3, false};
    });
    auto d = units->claim([](const Held &h) {
        EXPECT_EQ(h.resident, 3);
        return Claim{2, true};
    });
    EXPECT_EQ(units->held().resident, 3);
    EXPECT_EQ(units->held().dispatch, 1u);
    a->release();
    a->release();  // the second is a no-op
    EXPECT_EQ(units->held().resident, 0);
    d.reset();     // destruction gives back too
    EXPECT_EQ(units->held().dispatch, 0u);
}

TEST(DeviceUnits, ARefusedClaimCountsNothing) {
    auto units = std::make_shared<DeviceUnits>();
    auto a = units->claim([](const Held &) { return Claim{4, false}; });
    EXPECT_THROW(units->claim([](const Held &h) -> Claim {
        if (h.resident + 1 > 4) throw std::invalid_argument("full");
        return Claim{1, false};
    }),
                 std::invalid_argument);
    EXPECT_EQ(units->held().resident, 4);
    EXPECT_EQ(units->held().dispatch, 0u);
}

TEST(DeviceUnits, AnAbandonedDispatchLaunchHoldsItsUnitsForGood) {
    auto units = std::make_shared<DeviceUnits>();
    auto d = units->claim([](const Held &) { return Claim{2, true}; });
    d->hold_forever();
    EXPECT_EQ(units->held().dispatch, 0u);  // no longer a dispatch kernel needing a free unit ...
    EXPECT_EQ(units->held().resident, 2);   // ... but its work-groups hold two units
    d->release();
    d.reset();
    EXPECT_EQ(units->held().resident, 2);   // never given back
    auto r = units->claim([](const Held &) { return Claim{1, false}; });
    r->hold_forever();                       // a resident kernel abandoned: its claim just stays
    r.reset();
    EXPECT_EQ(units->held().resident, 3);
}

TEST(DeviceUnits, FractionalSharesSumBackToExactlyZero) {
    // CUDA claims fractions of the GPU's block slots: 0.1 + 0.2 + 0.7 - 0.1 - 0.7 - 0.2 is 5.6e-17 in
    // floating point, and "no kernel is resident" must still be true once all of them are gone.
    auto units = std::make_shared<DeviceUnits>();
    for (int round = 0; round < 50; ++round) {
        auto a = units->claim([](const Held &) { return Claim{0.1, false}; });
        auto b = units->claim([](const Held &) { return Claim{0.2, false}; });
        auto c = units->claim([](const Held &) { return Claim{0.7, false}; });
        a.reset();
        c.reset();
        b.reset();
        ASSERT_EQ(units->held().resident, 0.0) << "round " << round;
    }
}

TEST(DeviceFault, TheFirstReasonIsRecordedEverywhereOnce) {
    KernelCore core(host_memory());
    core.spec.name = "k";
    DeviceFault fault;
    int first_calls = 0;
    std::string seen;
    auto first = [&](const std::string &why) {
        ++first_calls;
        seen = why;
        EXPECT_FALSE(core.faulted.load());  // runs before the kernel reads FAULTED
    };
    EXPECT_TRUE(fault.record(core, "the device was lost", RK_ERR_LAUNCH, first));
    EXPECT_FALSE(fault.record(core, "a later error", RK_ERR_FAULT, first));
    EXPECT_EQ(first_calls, 1);
    EXPECT_EQ(seen, "the device was lost");
    EXPECT_EQ(fault.why(), "the device was lost");
    EXPECT_TRUE(core.faulted.load());
    EXPECT_EQ(core.fault_text(), "the device was lost");
    EXPECT_EQ(core.cb->last_error, RK_ERR_LAUNCH);
    EXPECT_EQ(core.cb->should_terminate, 1);  // the other blocks are told to leave
}

}  // namespace
}  // namespace rk
