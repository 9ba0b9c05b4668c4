/*
 * rk_status.h — what a handler returns, and the error codes a kernel records (control block
 * last_error, telemetry error_code as its negation, Kernel::last_error on the host). Shared by the
 * host API (a C++ HostHandler returns them) and the device dialect (rk_handler.h); part of the layout
 * contract, as the values are stored in the control block. Plain C preprocessor: every target.
 */
#ifndef RK_STATUS_H
#define RK_STATUS_H

/* Handler results. */
#define RK_REPLY 1
#define RK_NO_REPLY 0
#define RK_ERR_HANDLER (-1)   /* the handler reported a failure */
#define RK_ERR_BUFFER (-2)    /* a buffer handle did not resolve, or its buffer is too small */
#define RK_ERR_INPUT (-3)     /* the request is malformed (e.g. length out of range) */
#define RK_ERR_HOST (-4)      /* a host (Python) handler raised */
#define RK_ERR_CHANNEL (-5)   /* rk_emit on a channel the kernel does not have */
#define RK_ERR_OPERATION (-6) /* an operation code the handler does not know */
#define RK_ERR_LAUNCH (-7)    /* the backend could not launch the kernel (see the kernel's error message) */
#define RK_ERR_RETURN (-8)    /* the handler returned a positive value other than RK_REPLY */
#define RK_ERR_FAULT (-9)     /* a fault of the kernel: a block faulted (a signal in a native handler, a device
                                 fault: FAULTED), or a handler said so (rk_fault(ctx), rk.KernelFault, a C++
                                 rk::KernelAtFault: that message fails and is dead-lettered) */
#define RK_ERR_TIMEOUT (-10)  /* the watchdog: a handler ran past LaunchOptions handler_timeout on one message */

#endif /* RK_STATUS_H */
