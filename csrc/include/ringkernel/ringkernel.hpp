// ringkernel.hpp — everything the C++ core offers, in one include.
#pragma once

#include "ringkernel/clock.hpp"
#include "ringkernel/errors.hpp"
#include "ringkernel/hlc.hpp"
#include "ringkernel/ids.hpp"
#include "ringkernel/layout.h"
#include "ringkernel/message_plan.hpp"
#include "ringkernel/options.hpp"
#include "ringkernel/queue.hpp"
#include "ringkernel/ring.hpp"
#include "ringkernel/runtime.hpp"
#include "ringkernel/version.hpp"
