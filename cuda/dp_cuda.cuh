/*
 * What every the cuda/ sources includes: the CUDA runtime (or the SIMT emulator in
 * the sim flavor), the library's internal host interface, the launch helper
 * and the shared-memory declaration macros that compile both ways.
 */
#ifndef DETPOST_DP_CUDA_CUH
#define DETPOST_DP_CUDA_CUH

#ifdef DETPOST_SIM
#include "simt/simt.h"
#else
#include <cuda_runtime.h>
#define DP_SHARED(T, name, dims) __shared__ T name dims
#define DP_SHARED_DYNAMIC(T, name)                              \
    extern __shared__ __align__(16) unsigned char dp_dynamic_smem_[]; \
    T *name = reinterpret_cast<T *>(dp_dynamic_smem_)
#endif

#include <stdint.h>

#include "../host/internal.h"

/* Launch configuration. The outputs named with out() are poisoned before
 * the launch by the emulator, so an element the kernel forgets to write
 * shows up as a wrong answer; on a GPU out() costs nothing. */
struct dp_launch_cfg {
    dim3 grid, block;
    size_t smem;
    cudaStream_t stream;
#ifdef DETPOST_SIM
    simt::out_region outs[8];
    int num_outs;
#endif
    dp_launch_cfg(dim3 g, dim3 b, size_t shared_bytes, cudaStream_t s)
        : grid(g), block(b), smem(shared_bytes), stream(s)
#ifdef DETPOST_SIM
          , outs(), num_outs(0)
#endif
    {
    }
    dp_launch_cfg &out(void *ptr, size_t bytes)
    {
#ifdef DETPOST_SIM
        if (num_outs < 8) outs[num_outs++] = simt::out_region{ptr, bytes};
#else
        (void)ptr, (void)bytes;
#endif
        return *this;
    }
};

#ifdef DETPOST_SIM
template <typename... P, typename... A>
static inline cudaError_t dp_launch(const char *name, void (*kernel)(P...), const dp_launch_cfg &cfg, A &&...args)
{
    return simt::launch(name, kernel, cfg.grid, cfg.block, cfg.smem, cfg.stream, cfg.outs, cfg.num_outs,
                        std::forward<A>(args)...);
}
#else
template <typename... P, typename... A>
static inline cudaError_t dp_launch(const char *name, void (*kernel)(P...), const dp_launch_cfg &cfg, A &&...args)
{
    (void)name;
    kernel<<<cfg.grid, cfg.block, cfg.smem, cfg.stream>>>(static_cast<P>(args)...);
    return cudaGetLastError();
}
#endif

/* The one way kernels are launched: DP_LAUNCH(kernel, cfg, args...). */
#define DP_LAUNCH(kernel, cfg, ...) dp_launch(#kernel, kernel, cfg, __VA_ARGS__)

/* The context's stream as the runtime's type. */
static inline cudaStream_t dp_stream(const detpost_ctx *ctx) { return (cudaStream_t)ctx->stream; }

/* Turns a CUDA error into DETPOST_ERR_CUDA with a message naming the step. */
detpost_status dp_cuda_status(detpost_ctx *ctx, cudaError_t err, const char *what);
#define DP_CUDA_TRY(ctx, expr, what)                                  \
    do {                                                              \
        cudaError_t dp_err_ = (expr);                                 \
        if (dp_err_ != cudaSuccess) return dp_cuda_status(ctx, dp_err_, what); \
    } while (0)

/* Records a fault in the context's fault word (see dp_fault_kind): the
 * smallest row wins, whatever the order in which threads find them. */
__device__ __forceinline__ void dp_record_fault(unsigned long long *fault, int64_t row, int kind)
{
    atomicMin(fault, (unsigned long long)row * DP_FAULT_KINDS + (unsigned long long)kind);
}
static inline unsigned long long *dp_fault_word(const detpost_ctx *ctx)
{
    return static_cast<unsigned long long *>(ctx->fault);
}

/* Blocks of `threads` covering n items, capped so grid.x stays legal;
 * kernels loop with a grid stride over what the cap leaves. */
static inline unsigned dp_blocks_for(int64_t n, unsigned threads)
{
    int64_t b = (n + threads - 1) / threads;
    if (b < 1) b = 1;
    if (b > 65535LL * 16) b = 65535LL * 16;
    return (unsigned)b;
}

#endif
