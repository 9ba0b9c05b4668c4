/*
 * rk_builtins.h — the built-in handler catalog (DESIGN.md §6), in the device dialect.
 *
 *   echo        the request, unchanged, as the reply (input type = output type)
 *   vector_add  element-wise ADD / SUBTRACT / MULTIPLY / DIVIDE of two float32 vectors: up to
 *               RK_VECTOR_INLINE elements inline in the message, longer ones through buffer handles
 *   count       no reply; counts messages (for throughput measurements without an output ring)
 *
 * The message structs here are the C side of ringkernel.builtins (VectorAddRequest/Response); the
 * test suite checks that both sides agree on every size and offset.
 */
#ifndef RK_BUILTINS_H
#define RK_BUILTINS_H

#include "rk_kernel.h"

#define RK_VECTOR_INLINE 25u
#define RK_VECTOR_MAX_LENGTH 0x40000000u /* 2^30 elements */

#define RK_VECTOR_ADD 0u
#define RK_VECTOR_SUBTRACT 1u
#define RK_VECTOR_MULTIPLY 2u
#define RK_VECTOR_DIVIDE 3u

typedef struct rk_vector_add_request {
    rk_u8 op;                        /* RK_VECTOR_* */
    rk_u32 length;                   /* elements */
    rk_f32 a[RK_VECTOR_INLINE];
    rk_f32 b[RK_VECTOR_INLINE];
    rk_u64 a_buf, b_buf, out_buf;    /* buffer handles, used when length > RK_VECTOR_INLINE */
} rk_vector_add_request;

typedef struct rk_vector_add_response {
    rk_u32 length;
    rk_f32 result[RK_VECTOR_INLINE];
    rk_u64 out_buf;
    rk_i32 status;                   /* 0 = ok, else an RK_ERR_* code */
} rk_vector_add_response;

RK_STATIC_ASSERT(sizeof(rk_vector_add_request) == 232, vector_add_request_size);
RK_STATIC_ASSERT(RK_OFFSETOF(rk_vector_add_request, a_buf) == 208, vector_add_request_a_buf);
RK_STATIC_ASSERT(sizeof(rk_vector_add_response) == 120, vector_add_response_size);
RK_STATIC_ASSERT(RK_OFFSETOF(rk_vector_add_response, status) == 112, vector_add_response_status);

RK_FN int rk_builtin_echo(rk_ctx *ctx, RK_GLOBAL const void *in, RK_LOCAL void *out) {
    if (rk_thread_rank(ctx) == 0) {
        rk_u32 n = ctx->in_size < ctx->out_size ? ctx->in_size : ctx->out_size;
        rk_copy_to_local((RK_LOCAL rk_u8 *)out, (RK_GLOBAL const rk_u8 *)in, n);
    }
    return RK_REPLY;
}

RK_FN int rk_builtin_count(rk_ctx *ctx, RK_GLOBAL const void *in, RK_LOCAL void *out) {
    (void)ctx;
    (void)in;
    (void)out;
    return RK_NO_REPLY;
}

RK_FN rk_f32 rk_vector_apply(rk_u32 op, rk_f32 a, rk_f32 b) {
    return op == RK_VECTOR_ADD ? a + b : op == RK_VECTOR_SUBTRACT ? a - b : op == RK_VECTOR_MULTIPLY ? a * b : a / b;
}

/* The block's threads share the elements: thread t takes t, t + n, t + 2n, ... */
RK_FN int rk_builtin_vector_add(rk_ctx *ctx, RK_GLOBAL const void *in, RK_LOCAL void *out) {
    RK_GLOBAL const rk_vector_add_request *req = (RK_GLOBAL const rk_vector_add_request *)in;
    RK_LOCAL rk_vector_add_response *resp = (RK_LOCAL rk_vector_add_response *)out;
    rk_u32 rank = rk_thread_rank(ctx), threads = rk_thread_count(ctx);
    rk_u32 op = req->op, n = req->length;
    int status = 0;
    if (op > RK_VECTOR_DIVIDE) status = RK_ERR_OPERATION;
    else if (n > RK_VECTOR_MAX_LENGTH) status = RK_ERR_INPUT;
    if (status == 0 && n <= RK_VECTOR_INLINE) {
        for (rk_u32 i = rank; i < n; i += threads) resp->result[i] = rk_vector_apply(op, req->a[i], req->b[i]);
    } else if (status == 0) {
        rk_u64 bytes = (rk_u64)n * sizeof(rk_f32);
        RK_GLOBAL const rk_f32 *a = (RK_GLOBAL const rk_f32 *)rk_buffer(ctx, req->a_buf, bytes);
        RK_GLOBAL const rk_f32 *b = (RK_GLOBAL const rk_f32 *)rk_buffer(ctx, req->b_buf, bytes);
        RK_GLOBAL rk_f32 *o = (RK_GLOBAL rk_f32 *)rk_buffer(ctx, req->out_buf, bytes);
        if (a == RK_NULL || b == RK_NULL || o == RK_NULL) status = RK_ERR_BUFFER;
        else
            for (rk_u32 i = rank; i < n; i += threads) o[i] = rk_vector_apply(op, a[i], b[i]);
    }
    if (rank == 0) {
        resp->length = status == 0 ? n : 0;
        resp->out_buf = n > RK_VECTOR_INLINE ? req->out_buf : 0;
        resp->status = status;
        /* A bad request is answered (status tells the client) and also recorded as an error. */
        if (status != 0) rk_report_error(ctx, status);
    }
    return RK_REPLY;
}

/* The built-in catalog, listed once: X(name, handler function, records) for every built-in, where records is
 * what the handler needs of the kernel's record types: RK_BUILTIN_SAME_SIZE (input and output of one
 * size), RK_BUILTIN_VECTOR (rk_vector_add_request in, rk_vector_add_response out) or RK_BUILTIN_ANY. Each
 * backend expands it into its steps or kernels, the runtime into the list of names and the record checks. */
#define RK_BUILTIN_ANY 0
#define RK_BUILTIN_SAME_SIZE 1
#define RK_BUILTIN_VECTOR 2
#define RK_BUILTINS(X)                                       \
    X(echo, rk_builtin_echo, RK_BUILTIN_SAME_SIZE)           \
    X(vector_add, rk_builtin_vector_add, RK_BUILTIN_VECTOR)  \
    X(count, rk_builtin_count, RK_BUILTIN_ANY)

#endif /* RK_BUILTINS_H */
