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
#include <cooperative_groups.h>
#include <cuda_runtime.h>

#include <type_traits>
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
template <typename... P, typename... A>
static inline cudaError_t dp_launch_coop(const char *name, void (*kernel)(P...), const dp_launch_cfg &cfg,
                                         A &&...args)
{
    return simt::launch_cooperative(name, kernel, cfg.grid, cfg.block, cfg.smem, cfg.stream, cfg.outs,
                                    cfg.num_outs, std::forward<A>(args)...);
}
__device__ inline void dp_grid_sync() { simt::grid_sync(); }
#else
template <typename... P, typename... A>
static inline cudaError_t dp_launch(const char *name, void (*kernel)(P...), const dp_launch_cfg &cfg, A &&...args)
{
    (void)name;
    kernel<<<cfg.grid, cfg.block, cfg.smem, cfg.stream>>>(static_cast<P>(args)...);
    return cudaGetLastError();
}
template <typename... P, typename... A>
static inline cudaError_t dp_launch_coop(const char *name, void (*kernel)(P...), const dp_launch_cfg &cfg,
                                         A &&...args)
{
    static_assert(sizeof...(P) == sizeof...(A), "kernel launched with the wrong number of arguments");
    (void)name;
    /* the runtime copies each argument from the address given, so each must
     * already have the parameter's exact type */
    auto launch = [&cfg, kernel](std::decay_t<P>... converted) {
        void *params[] = {&converted..., nullptr};
        return cudaLaunchCooperativeKernel(kernel, cfg.grid, cfg.block, params, cfg.smem, cfg.stream);
    };
    const cudaError_t err = launch(static_cast<P>(args)...);
    const cudaError_t last = cudaGetLastError();
    return err != cudaSuccess ? err : last;
}
__device__ __forceinline__ void dp_grid_sync() { cooperative_groups::this_grid().sync(); }
#endif

/* The one way kernels are launched: DP_LAUNCH(kernel, cfg, args...). */
#define DP_LAUNCH(kernel, cfg, ...) dp_launch(#kernel, kernel, cfg, __VA_ARGS__)

/* Cooperative launch: all blocks of cfg.grid run at once, so the kernel may call dp_grid_sync().
 * The grid must not exceed dp_coop_max_blocks, or the launch fails with cudaErrorCooperativeLaunchTooLarge. */
#define DP_LAUNCH_COOP(kernel, cfg, ...) dp_launch_coop(#kernel, kernel, cfg, __VA_ARGS__)
/* dp_grid_sync(): every thread of the grid waits for every other; memory written before is visible after.
 * Only in a kernel launched with DP_LAUNCH_COOP, and reached by every thread of the grid. */

/* The most blocks of `threads` threads with `smem` bytes of dynamic shared memory that a cooperative launch of
 * `kernel` can have on the context's device (0 when the query fails). The caller raises the kernel's dynamic
 * shared-memory limit with cudaFuncSetAttribute first where smem > 48 KiB. */
template <typename... P>
static inline int dp_coop_max_blocks(const detpost_ctx *ctx, void (*kernel)(P...), unsigned threads, size_t smem)
{
    int per_multiprocessor = 0;
    if (cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_multiprocessor, kernel, (int)threads, smem) !=
        cudaSuccess) {
        (void)cudaGetLastError(); /* a failed query leaves no error behind for the next launch to report */
        return 0;
    }
    return per_multiprocessor * ctx->multiprocessors;
}

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
