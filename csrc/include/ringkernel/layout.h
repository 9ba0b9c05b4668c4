/*
 * layout.h — the memory layouts shared by the host and every device target.
 *
 * This file is the contract between the host (C/C++), CUDA, OpenCL C and MSL: it is plain C with
 * fixed-width types and no target-specific constructs beyond the small prelude below. Sizes and
 * offsets are asserted at compile time here and checked against the numpy dtypes in pytest
 * (tests/python/test_layout.py), so a drift on either side fails the build or the tests.
 */
#ifndef RINGKERNEL_LAYOUT_H
#define RINGKERNEL_LAYOUT_H

#include "ringkernel/rk_types.h"

/* Head and tail live on separate 128-byte lines: 128 rather than 64 because adjacent-line
 * prefetchers on x86 and the 128-byte L2 sectors on NVIDIA GPUs would otherwise make the producer
 * and the consumer fight over one pair of lines. */
#define RK_CACHE_LINE 128u

#define RK_RING_MAGIC 0x524b5247u /* "RKRG" */
#define RK_LAYOUT_VERSION 1u
#define RK_RING_MIN_CAPACITY 16u
#define RK_RING_MAX_CAPACITY 1048576u
/* Slots are padded to whole 64-byte lines so neighbouring slots, owned by different producers or
 * consumers of an MPMC ring, never share a line. */
#define RK_SLOT_ALIGN 64u

/* ---- ring header ------------------------------------------------------------------------------ */
/* The ring's slots follow the header in the same allocation: slot i lives at
 * (char*)header + sizeof(rk_ring_header) + i * slot_stride. */
/* What kernels drop is counted in the header, on the line of the side that drops it (consumers: expiry;
 * producers: refusals and evictions), where the host queue adds it to its own counts: kernels on a device
 * cannot call into the host. */
typedef struct rk_ring_header {
    rk_u64 head;                 /* consumer cursor: next position to dequeue */
    rk_u64 expired;              /* messages kernels dropped at dequeue because their TTL had passed */
    rk_u8 pad_head[RK_CACHE_LINE - 16];
    rk_u64 tail;                 /* producer cursor: next position to enqueue */
    rk_u64 rejected;             /* records kernels could not push into the full ring (REJECT) */
    rk_u64 dropped_new;          /* records kernels discarded at the full ring (DROP_NEW) */
    rk_u64 evicted;              /* messages kernels evicted from the full ring to push theirs (DROP_OLDEST) */
    rk_u8 pad_tail[RK_CACHE_LINE - 32];
    /* Read-only after initialisation, on a line of its own. */
    rk_u32 magic;                /* RK_RING_MAGIC */
    rk_u32 version;              /* RK_LAYOUT_VERSION */
    rk_u32 capacity;             /* slots, a power of two in [16, 1048576] */
    rk_u32 mask;                 /* capacity - 1 */
    rk_u32 slot_stride;          /* bytes per slot, a multiple of RK_SLOT_ALIGN */
    rk_u32 max_payload;          /* payload bytes a slot can carry: slot_stride - envelope */
    rk_u32 flags;                /* RK_RING_FLAG_* */
    rk_u32 supervised_upto;      /* a supervised device kernel's dead-letter ring: the host has dealt with every
                                    letter before this position (low 32 bits; see rk_finish_run) */
    rk_u8 pad_meta[RK_CACHE_LINE - 32];
} rk_ring_header;

#define RK_RING_FLAG_SINGLE_PRODUCER 1u
#define RK_RING_FLAG_SINGLE_CONSUMER 2u
/* The ring is in device memory, used only by kernels on that device (CUDA kernel-to-kernel rings): its
 * atomics are device scope, and the host never touches it after initialising it. */
#define RK_RING_FLAG_DEVICE_LOCAL 4u

/* ---- envelope --------------------------------------------------------------------------------- */
/* At the start of every slot; payload bytes follow it. `sequence` belongs to the ring protocol
 * (Vyukov's per-slot turn counter): producers and consumers never copy it as part of a message. */
typedef struct rk_envelope {
    rk_u64 message_id;
    rk_u64 correlation_id;
    rk_u64 timestamp;            /* HLC, packed: 48-bit physical ms << 16 | 16-bit logical */
    rk_u64 enqueue_ns;           /* producer's wall clock at enqueue, ns since the Unix epoch */
    rk_u32 payload_size;         /* bytes of payload that follow the envelope */
    rk_u16 type_id;
    rk_u16 source_kernel;        /* also the HLC node id of the stamp */
    rk_u8 priority;              /* 0..255, higher first where the queue honours priority */
    rk_u8 flags;                 /* RK_ENVELOPE_FLAG_* */
    rk_u16 reserved0;
    rk_u32 reserved1;
    rk_u64 reserved2;
    rk_u64 sequence;             /* ring-owned slot turn counter */
} rk_envelope;

/* Bytes of the envelope that travel with a message (everything before `sequence`). */
#define RK_ENVELOPE_MESSAGE_BYTES 56u

#define RK_ENVELOPE_FLAG_ERROR 1u     /* payload is an error reply */
#define RK_ENVELOPE_FLAG_CONTROL 2u   /* runtime control message, not user data */
#define RK_ENVELOPE_FLAG_HELD 4u      /* in a dead-letter ring: a fault under a RestartPolicy, for the supervisor */

/* ---- ring descriptor (inside the control block) ------------------------------------------------ */
typedef struct rk_ring_desc {
    rk_u64 address;              /* device-visible address of the rk_ring_header */
    rk_u32 capacity;
    rk_u32 slot_stride;
} rk_ring_desc;

/* ---- control block: exactly 128 bytes --------------------------------------------------------- */
typedef struct rk_control_block {
    rk_i32 is_active;
    rk_i32 should_terminate;
    rk_i32 has_terminated;
    rk_i32 errors_encountered;
    rk_i64 messages_processed;
    rk_i64 last_activity_ns;
    rk_ring_desc input;
    rk_ring_desc output;
    rk_u64 hlc;                  /* the kernel's hybrid logical clock, packed (see hlc.hpp) */
    rk_u64 next_reply_id;        /* ids of the replies the kernel sends: a per-kernel counter */
    rk_i32 telemetry_enabled;    /* the host's switch: blocks update rk_telemetry only when set */
    rk_i32 blocks_exited;        /* blocks that have left the persistent loop */
    rk_i32 last_error;           /* the last handler error code (negative), 0 when none */
    rk_u32 node;                 /* the kernel's id: HLC node and envelope source_kernel */
    rk_u64 messages_dropped;     /* replies discarded or evicted, inputs expired (always counted) */
    rk_u64 clock_ns;             /* wall-clock ns the host publishes for devices without a clock */
    rk_i32 blocks_started;       /* blocks that have entered the persistent loop (CUDA) */
    rk_i32 blocks_paused;        /* blocks that have seen the kernel inactive and take no run until it is active
                                    again (each counts itself in on that change and out when it resumes): the
                                    host pauses a kernel (checkpoint) by clearing is_active and waiting for all */
    rk_u64 clock_offset_ns;      /* CUDA: wall-clock ns minus the device clock, kept current by the host */
} rk_control_block;

/* ---- telemetry: exactly 64 bytes -------------------------------------------------------------- */
typedef struct rk_telemetry {
    rk_u64 messages_processed;
    rk_u64 messages_dropped;
    rk_u64 last_processed_timestamp; /* HLC, packed */
    rk_u32 queue_depth;
    rk_u32 error_code;
    rk_u64 total_latency_ns;
    rk_u64 min_latency_ns;
    rk_u64 max_latency_ns;
    rk_u64 reserved;
} rk_telemetry;

/* ---- routes, buffers, launch parameters ----------------------------------------------------------- */
/* Pointers in these structs are device-visible addresses of 64 bits on every target (the host, CUDA, and
 * OpenCL devices with 64-bit addresses, which the OpenCL backend requires); in OpenCL C they point into
 * the global address space. */
#if defined(__OPENCL_VERSION__) || defined(__OPENCL_C_VERSION__)
#define RK_LAYOUT_GLOBAL __global
#else
#define RK_LAYOUT_GLOBAL
#endif

#define RK_MAX_INPUTS 16
#define RK_MAX_CHANNELS 8
#define RK_MAX_FANOUT 16

/* Where a kernel reads and writes. Replaced as a whole (never edited in place) when kernels are
 * connected, so a block always sees a consistent set. `cookie` identifies a ring to the host. */
typedef struct rk_route {
    RK_LAYOUT_GLOBAL rk_ring_header *ring;
    rk_u64 cookie;
} rk_route;

typedef struct rk_channel {
    rk_u32 count;
    rk_u32 reserved;
    rk_route targets[RK_MAX_FANOUT];
} rk_channel;

typedef struct rk_routes {
    rk_u32 n_inputs;
    rk_u32 n_channels;
    rk_route inputs[RK_MAX_INPUTS];
    rk_channel channels[RK_MAX_CHANNELS];
} rk_routes;

/* Buffers: handle = tag << 32 | (index + 1), the tag random per buffer (a handle of another runtime or a
 * guessed one does not resolve); 0 is never a handle. */
typedef struct rk_buffer_entry {
    rk_u64 address;
    rk_u64 bytes;
    rk_u32 generation;
    rk_u32 live;
    rk_u64 reserved;
} rk_buffer_entry;

typedef struct rk_buffer_table {
    rk_u32 capacity;
    rk_u32 reserved;
    RK_LAYOUT_GLOBAL rk_buffer_entry *entries;
} rk_buffer_table;

/* What a device launch passes to its blocks (one SVM/device-visible struct, read once): addresses as
 * 64-bit integers so host and device agree on the layout. */
typedef struct rk_kernel_params {
    rk_u64 control_block;                /* rk_control_block * */
    rk_u64 telemetry;                    /* rk_telemetry * */
    rk_u64 routes_word;                  /* rk_u64 * holding the address of the current rk_routes */
    rk_u64 buffers;                      /* rk_buffer_table * (0: none) */
    rk_u64 ttl_ns;
    rk_u64 reply_id_base;
    rk_u32 in_size, out_size;
    rk_u32 backpressure;
    rk_u16 out_type, node;
    rk_u64 clock_offset_ns;              /* CUDA: wall-clock ns minus %globaltimer (mod 2^64) */
    rk_u32 run_limit;                    /* CUDA: reply buffers per block (dynamic shared memory) */
    rk_u32 idle_backoff_ns;              /* CUDA: longest idle sleep between polls */
    rk_u64 state;                        /* the kernel's state record (0: none), state_size bytes */
    rk_u64 dead_letters;                 /* rk_ring_header * of the dead-letter ring (0: none) */
    rk_u32 state_size;
    rk_u32 supervised;                   /* 1: under a RestartPolicy (a fault is the supervisor's, rk_finish_run) */
} rk_kernel_params;

/* ---- the HLC advance rule ----------------------------------------------------------------------- */
#if defined(__CUDACC__) || defined(__CUDACC_RTC__)
#define RK_LAYOUT_FN static __host__ __device__ inline
#else
#define RK_LAYOUT_FN static inline
#endif
/* The packed stamp (48-bit physical ms << 16 | 16-bit logical, DESIGN §5) that follows `state` for an event
 * whose floor is `floor` (0 for a local event, remote + 1 for a receive) at physical time `wall_ms`:
 * max(state + 1, floor, wall_ms << 16). Written once, used by the host clock (hlc.cpp) and by kernels
 * (rk_hlc_advance): both sides of a message agree on what "after" means. */
RK_LAYOUT_FN rk_u64 rk_hlc_next(rk_u64 state, rk_u64 floor, rk_u64 wall_ms) {
    rk_u64 next = state + 1u;
    if (floor > next) next = floor;
    if ((wall_ms << 16) > next) next = wall_ms << 16;
    return next;
}

/* ---- layout asserts --------------------------------------------------------------------------- */
RK_STATIC_ASSERT(sizeof(rk_ring_header) == 3 * RK_CACHE_LINE, ring_header_size);
RK_STATIC_ASSERT(RK_OFFSETOF(rk_ring_header, head) == 0, ring_head_offset);
RK_STATIC_ASSERT(RK_OFFSETOF(rk_ring_header, tail) == RK_CACHE_LINE, ring_tail_offset);
RK_STATIC_ASSERT(RK_OFFSETOF(rk_ring_header, expired) == 8, ring_expired_offset);
RK_STATIC_ASSERT(RK_OFFSETOF(rk_ring_header, rejected) == RK_CACHE_LINE + 8, ring_rejected_offset);
RK_STATIC_ASSERT(RK_OFFSETOF(rk_ring_header, evicted) == RK_CACHE_LINE + 24, ring_evicted_offset);
RK_STATIC_ASSERT(RK_OFFSETOF(rk_ring_header, magic) == 2 * RK_CACHE_LINE, ring_meta_offset);
RK_STATIC_ASSERT(RK_OFFSETOF(rk_ring_header, slot_stride) == 2 * RK_CACHE_LINE + 16,
                 ring_stride_offset);

RK_STATIC_ASSERT(sizeof(rk_envelope) == 64, envelope_size);
RK_STATIC_ASSERT(RK_OFFSETOF(rk_envelope, correlation_id) == 8, envelope_corr);
RK_STATIC_ASSERT(RK_OFFSETOF(rk_envelope, timestamp) == 16, envelope_ts);
RK_STATIC_ASSERT(RK_OFFSETOF(rk_envelope, enqueue_ns) == 24, envelope_enq);
RK_STATIC_ASSERT(RK_OFFSETOF(rk_envelope, payload_size) == 32, envelope_size_field);
RK_STATIC_ASSERT(RK_OFFSETOF(rk_envelope, type_id) == 36, envelope_type);
RK_STATIC_ASSERT(RK_OFFSETOF(rk_envelope, source_kernel) == 38, envelope_source);
RK_STATIC_ASSERT(RK_OFFSETOF(rk_envelope, priority) == 40, envelope_priority);
RK_STATIC_ASSERT(RK_OFFSETOF(rk_envelope, flags) == 41, envelope_flags);
RK_STATIC_ASSERT(RK_OFFSETOF(rk_envelope, sequence) == RK_ENVELOPE_MESSAGE_BYTES,
                 envelope_sequence);

RK_STATIC_ASSERT(sizeof(rk_ring_desc) == 16, ring_desc_size);
RK_STATIC_ASSERT(sizeof(rk_control_block) == 128, control_block_size);
RK_STATIC_ASSERT(RK_OFFSETOF(rk_control_block, messages_processed) == 16, cb_processed);
RK_STATIC_ASSERT(RK_OFFSETOF(rk_control_block, last_activity_ns) == 24, cb_activity);
RK_STATIC_ASSERT(RK_OFFSETOF(rk_control_block, input) == 32, cb_input);
RK_STATIC_ASSERT(RK_OFFSETOF(rk_control_block, output) == 48, cb_output);
RK_STATIC_ASSERT(RK_OFFSETOF(rk_control_block, hlc) == 64, cb_hlc);
RK_STATIC_ASSERT(RK_OFFSETOF(rk_control_block, telemetry_enabled) == 80, cb_tel);
RK_STATIC_ASSERT(RK_OFFSETOF(rk_control_block, node) == 92, cb_node);
RK_STATIC_ASSERT(RK_OFFSETOF(rk_control_block, messages_dropped) == 96, cb_dropped);
RK_STATIC_ASSERT(RK_OFFSETOF(rk_control_block, clock_ns) == 104, cb_clock);
RK_STATIC_ASSERT(RK_OFFSETOF(rk_control_block, blocks_started) == 112, cb_started);
RK_STATIC_ASSERT(RK_OFFSETOF(rk_control_block, blocks_paused) == 116, cb_paused);
RK_STATIC_ASSERT(RK_OFFSETOF(rk_control_block, clock_offset_ns) == 120, cb_clock_offset);

RK_STATIC_ASSERT(sizeof(rk_telemetry) == 64, telemetry_size);
RK_STATIC_ASSERT(RK_OFFSETOF(rk_telemetry, queue_depth) == 24, tel_depth);
RK_STATIC_ASSERT(RK_OFFSETOF(rk_telemetry, total_latency_ns) == 32, tel_total);
RK_STATIC_ASSERT(RK_OFFSETOF(rk_telemetry, max_latency_ns) == 48, tel_max);

RK_STATIC_ASSERT(sizeof(rk_route) == 16, route_size);
RK_STATIC_ASSERT(RK_OFFSETOF(rk_route, cookie) == 8, route_cookie);
RK_STATIC_ASSERT(sizeof(rk_channel) == 8 + 16 * RK_MAX_FANOUT, channel_size);
RK_STATIC_ASSERT(RK_OFFSETOF(rk_channel, targets) == 8, channel_targets);
RK_STATIC_ASSERT(RK_OFFSETOF(rk_routes, inputs) == 8, routes_inputs);
RK_STATIC_ASSERT(RK_OFFSETOF(rk_routes, channels) == 8 + 16 * RK_MAX_INPUTS, routes_channels);
RK_STATIC_ASSERT(sizeof(rk_routes) == 8 + 16 * RK_MAX_INPUTS + (8 + 16 * RK_MAX_FANOUT) * RK_MAX_CHANNELS, routes_size);
RK_STATIC_ASSERT(sizeof(rk_buffer_entry) == 32, buffer_entry_size);
RK_STATIC_ASSERT(RK_OFFSETOF(rk_buffer_entry, bytes) == 8, buffer_entry_bytes);
RK_STATIC_ASSERT(RK_OFFSETOF(rk_buffer_entry, generation) == 16, buffer_entry_generation);
RK_STATIC_ASSERT(RK_OFFSETOF(rk_buffer_entry, live) == 20, buffer_entry_live);
RK_STATIC_ASSERT(sizeof(rk_buffer_table) == 16, buffer_table_size);
RK_STATIC_ASSERT(RK_OFFSETOF(rk_buffer_table, entries) == 8, buffer_table_entries);
RK_STATIC_ASSERT(sizeof(rk_kernel_params) == 104, kernel_params_size);
RK_STATIC_ASSERT(RK_OFFSETOF(rk_kernel_params, ttl_ns) == 32, kernel_params_ttl);
RK_STATIC_ASSERT(RK_OFFSETOF(rk_kernel_params, in_size) == 48, kernel_params_in_size);
RK_STATIC_ASSERT(RK_OFFSETOF(rk_kernel_params, backpressure) == 56, kernel_params_backpressure);
RK_STATIC_ASSERT(RK_OFFSETOF(rk_kernel_params, out_type) == 60, kernel_params_out_type);
RK_STATIC_ASSERT(RK_OFFSETOF(rk_kernel_params, node) == 62, kernel_params_node);
RK_STATIC_ASSERT(RK_OFFSETOF(rk_kernel_params, clock_offset_ns) == 64, kernel_params_clock_offset);
RK_STATIC_ASSERT(RK_OFFSETOF(rk_kernel_params, run_limit) == 72, kernel_params_run_limit);
RK_STATIC_ASSERT(RK_OFFSETOF(rk_kernel_params, idle_backoff_ns) == 76, kernel_params_idle_backoff);
RK_STATIC_ASSERT(RK_OFFSETOF(rk_kernel_params, state) == 80, kernel_params_state);
RK_STATIC_ASSERT(RK_OFFSETOF(rk_kernel_params, dead_letters) == 88, kernel_params_dead_letters);
RK_STATIC_ASSERT(RK_OFFSETOF(rk_kernel_params, state_size) == 96, kernel_params_state_size);

#endif /* RINGKERNEL_LAYOUT_H */
