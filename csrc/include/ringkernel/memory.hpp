// memory.hpp — where rings, control blocks and buffers live. The host's default is aligned heap
// memory; a device backend supplies memory both sides can reach while a kernel runs (OpenCL
// fine-grained SVM, CUDA page-locked mapped memory), and every ring, control block and buffer of its
// kernels is allocated from it.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <memory>

namespace rk {

class MemoryResource {
public:
    virtual ~MemoryResource() = default;
    // Zeroed memory of at least `bytes`, aligned to `align` (a power of two); throws std::bad_alloc.
    virtual void *allocate(std::size_t bytes, std::size_t align) = 0;
    virtual void deallocate(void *p, std::size_t bytes) noexcept = 0;
    virtual const char *name() const noexcept = 0;
    // -1: host memory the CPU reads and writes directly. Otherwise the ordinal of the CUDA device whose
    // memory this is: the host reaches it only through copy_in/copy_out (or DLPack and
    // __cuda_array_interface__ in Python).
    virtual int device() const noexcept { return -1; }
    // Copy n bytes from host memory into an allocation of this resource, and back out.
    virtual void copy_in(void *dst, const void *src, std::size_t n) { std::memcpy(dst, src, n); }
    virtual void copy_out(void *dst, const void *src, std::size_t n) { std::memcpy(dst, src, n); }
    // Order the copies issued so far before the work another library queues next on `stream`, a stream of
    // this memory's device in DLPack's convention (CUDA: 1 the legacy default stream, 2 the per-thread
    // default stream, else a cudaStream_t). Host memory has nothing to order.
    virtual void order_before(std::intptr_t stream) { (void)stream; }
};

// Aligned host heap memory.
std::shared_ptr<MemoryResource> host_memory();

}  // namespace rk
