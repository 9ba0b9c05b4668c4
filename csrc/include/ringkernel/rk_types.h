/*
 * rk_types.h — fixed-width types and static checks for every target, in one dispatch.
 *
 * Included by layout.h, and copied verbatim (include guard and all) at the top of the headers
 * that ringkernel.messages generates for message types, so a message declaration compiles the
 * same under C, C++, CUDA, OpenCL C and MSL whether or not this file is on the include path.
 *   RK_STATIC_ASSERT(cond, name)  a compile-time check where the language has one
 *   RK_OFFSETOF(type, field)      offsetof that also works in OpenCL C and MSL
 */
#ifndef RK_TYPES_H
#define RK_TYPES_H

#if defined(__OPENCL_VERSION__) || defined(__OPENCL_C_VERSION__) || defined(__METAL_VERSION__)
/* OpenCL C and MSL share the short type names. */
#if defined(__METAL_VERSION__)
#include <metal_stdlib>
#endif
typedef uchar rk_u8;
typedef ushort rk_u16;
typedef uint rk_u32;
typedef ulong rk_u64;
typedef char rk_i8;
typedef short rk_i16;
typedef int rk_i32;
typedef long rk_i64;
typedef float rk_f32;
/* 64-bit floats exist only where the target has them: not in MSL, and in OpenCL only with fp64. */
#if !defined(__METAL_VERSION__) && (defined(__opencl_c_fp64) || defined(cl_khr_fp64))
#if !defined(__OPENCL_C_VERSION__) || __OPENCL_C_VERSION__ < 120
#pragma OPENCL EXTENSION cl_khr_fp64 : enable
#endif
typedef double rk_f64;
#define RK_HAS_F64 1
#endif
#define RK_OFFSETOF(type, field) __builtin_offsetof(type, field)
#if defined(__METAL_VERSION__)
#define RK_STATIC_ASSERT(cond, name) static_assert(cond, #name)
#else
#define RK_STATIC_ASSERT(cond, name) typedef char rk_static_assert_##name[(cond) ? 1 : -1]
#endif
#elif defined(__CUDACC_RTC__)
/* NVRTC has no C library headers: the same types from the compiler's own. */
typedef unsigned char rk_u8;
typedef unsigned short rk_u16;
typedef unsigned int rk_u32;
typedef unsigned long long rk_u64;
typedef signed char rk_i8;
typedef short rk_i16;
typedef int rk_i32;
typedef long long rk_i64;
typedef float rk_f32;
typedef double rk_f64;
#define RK_HAS_F64 1
#define RK_OFFSETOF(type, field) __builtin_offsetof(type, field)
#define RK_STATIC_ASSERT(cond, name) static_assert(cond, #name)
#else
#include <stddef.h>
#include <stdint.h>
typedef uint8_t rk_u8;
typedef uint16_t rk_u16;
typedef uint32_t rk_u32;
typedef uint64_t rk_u64;
typedef int8_t rk_i8;
typedef int16_t rk_i16;
typedef int32_t rk_i32;
typedef int64_t rk_i64;
typedef float rk_f32;
typedef double rk_f64;
#define RK_HAS_F64 1
#define RK_OFFSETOF(type, field) offsetof(type, field)
#if defined(__cplusplus)
#define RK_STATIC_ASSERT(cond, name) static_assert(cond, #name)
#else
#define RK_STATIC_ASSERT(cond, name) _Static_assert(cond, #name)
#endif
#endif

#endif /* RK_TYPES_H */
