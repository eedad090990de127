/*
 * SIMT emulator: the subset of CUDA C++ that detpost's kernels use, so that
 * the cuda/ sources compiles with g++ and runs on the CPU (the "sim" flavor).
 *
 * Model. A launch runs its blocks one after another on the calling thread.
 * Each thread of a block is a fiber with its own stack; a fiber runs until it
 * reaches __syncthreads(), a warp collective (__shfl_*_sync, __ballot_sync,
 * __syncwarp, ...) or its end, and the scheduler then picks the next one.
 * Between barriers the threads run in forward, reverse or seeded-random order
 * (DETPOST_SIMT_SCHEDULE=forward|reverse|random:SEED or simt_set_schedule), so
 * a kernel that relies on an order the hardware does not promise gets a wrong
 * answer here. Shared memory and the declared outputs are poisoned before
 * every launch, fresh allocations when made; launches a GPU would reject
 * fail with an error and a message, and so do threads of a block that wait
 * at different __syncthreads.
 *
 * A cooperative launch (DP_LAUNCH_COOP) runs every block of its grid at once
 * in one scheduler: the schedule orders all threads of the grid, so blocks
 * interleave, while each block keeps its own shared memory, __syncthreads and
 * warps. A block's __syncthreads opens as soon as its last thread arrives, and
 * a random schedule holds a random part of the grid back for a round while
 * the rest runs ahead, so reading another block's data without a grid sync in
 * between gives a wrong answer. grid_sync() (dp_grid_sync) waits until every
 * thread of the grid has reached it; a thread that exits before it, or
 * threads stuck at different barriers, fail the launch, and so does
 * grid_sync() in an ordinary launch.
 * As on a GPU, the grid must fit on the device at once: 4 multiprocessors
 * times the blocks per multiprocessor of the occupancy model described at
 * cudaOccupancyMaxActiveBlocksPerMultiprocessor, or the launch fails with
 * cudaErrorCooperativeLaunchTooLarge.
 *
 * Graphs. cudaStreamBeginCapture on a stream created with cudaStreamCreate
 * makes that stream record instead of run: kernel launches (checked as a
 * launch would be, their arguments copied), cudaMemsetAsync and device-to-
 * device cudaMemcpyAsync become nodes of the graph cudaStreamEndCapture
 * returns, and cudaGraphLaunch runs them in order (outputs poisoned again,
 * each launch checked again). While any capture is active the calls a GPU
 * refuses in global capture mode fail with cudaErrorStreamCaptureUnsupported
 * and invalidate every active capture: cudaMalloc, cudaFree, cudaMemcpy,
 * cudaMemset, cudaDeviceSynchronize, and synchronising, copying host memory
 * on, or allocating on a capturing stream (graph memory nodes are not
 * emulated); work on the legacy stream fails with
 * cudaErrorStreamCaptureImplicit and invalidates them too. An invalidated
 * capture ends with cudaErrorStreamCaptureInvalidated and no graph. The
 * emulator is stricter than a GPU in one place: stream-ordered allocation
 * during a capture is refused rather than recorded.
 *
 * Kernels must be launched through DP_LAUNCH or DP_LAUNCH_COOP (cuda/dp_cuda.cuh) and declare
 * shared memory with DP_SHARED / DP_SHARED_DYNAMIC: plain __shared__ does not
 * compile here, on purpose.
 */
#ifndef DETPOST_SIMT_H
#define DETPOST_SIMT_H

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <tuple>
#include <type_traits>
#include <utility>

#include "simt_control.h"

/* ---- function and variable qualifiers ---------------------------------- */
#define __global__
#define __device__
#define __host__
#define __forceinline__ inline __attribute__((always_inline))
#define __restrict__ __restrict
#define __launch_bounds__(...)
#define __shared__ DP_SHARED_must_be_used_instead_of___shared__
#define __constant__ DP_CONSTANT_is_not_supported_by_the_emulator

/* ---- vector and runtime types ------------------------------------------ */
struct uint3 {
    unsigned x, y, z;
};
struct dim3 {
    unsigned x, y, z;
    constexpr dim3(unsigned vx = 1, unsigned vy = 1, unsigned vz = 1) : x(vx), y(vy), z(vz) {}
};

enum cudaError {
    cudaSuccess = 0,
    cudaErrorInvalidValue = 1,
    cudaErrorMemoryAllocation = 2,
    cudaErrorInvalidConfiguration = 9,
    cudaErrorInvalidDevicePointer = 17,
    cudaErrorInvalidMemcpyDirection = 21,
    cudaErrorNoDevice = 100,
    cudaErrorInvalidDevice = 101,
    cudaErrorIllegalState = 401,
    cudaErrorIllegalAddress = 700,
    cudaErrorLaunchOutOfResources = 701,
    cudaErrorLaunchFailure = 719,
    cudaErrorCooperativeLaunchTooLarge = 720,
    cudaErrorStreamCaptureUnsupported = 900,
    cudaErrorStreamCaptureInvalidated = 901,
    cudaErrorStreamCaptureImplicit = 906
};
typedef enum cudaError cudaError_t;

enum cudaMemcpyKind {
    cudaMemcpyHostToHost = 0,
    cudaMemcpyHostToDevice = 1,
    cudaMemcpyDeviceToHost = 2,
    cudaMemcpyDeviceToDevice = 3,
    cudaMemcpyDefault = 4
};

enum cudaMemoryType {
    cudaMemoryTypeUnregistered = 0,
    cudaMemoryTypeHost = 1,
    cudaMemoryTypeDevice = 2,
    cudaMemoryTypeManaged = 3
};
struct cudaPointerAttributes {
    enum cudaMemoryType type;
    int device;
    void *devicePointer;
    void *hostPointer;
};

enum cudaDeviceAttr {
    cudaDevAttrMaxSharedMemoryPerBlock = 8,
    cudaDevAttrMultiProcessorCount = 16,
    cudaDevAttrCooperativeLaunch = 95,
    cudaDevAttrMaxSharedMemoryPerBlockOptin = 97
};
enum cudaFuncAttribute { cudaFuncAttributeMaxDynamicSharedMemorySize = 8 };

struct simt_stream;
typedef struct simt_stream *cudaStream_t;

enum cudaStreamCaptureStatus {
    cudaStreamCaptureStatusNone = 0,
    cudaStreamCaptureStatusActive = 1,
    cudaStreamCaptureStatusInvalidated = 2
};
enum cudaStreamCaptureMode {
    cudaStreamCaptureModeGlobal = 0,
    cudaStreamCaptureModeThreadLocal = 1,
    cudaStreamCaptureModeRelaxed = 2
};
struct simt_graph;
struct simt_graph_exec;
typedef struct simt_graph *cudaGraph_t;
typedef struct simt_graph_exec *cudaGraphExec_t;

/* ---- runtime shims (cuda/simt/simt_runtime.cpp) ------------------------ */
cudaError_t cudaGetDeviceCount(int *count);
cudaError_t cudaSetDevice(int device);
cudaError_t cudaGetDevice(int *device);
cudaError_t cudaDeviceGetAttribute(int *value, enum cudaDeviceAttr attr, int device);
cudaError_t cudaMalloc(void **ptr, size_t bytes);
cudaError_t cudaFree(void *ptr);
cudaError_t cudaMallocAsync(void **ptr, size_t bytes, cudaStream_t stream);
cudaError_t cudaFreeAsync(void *ptr, cudaStream_t stream);
cudaError_t cudaMemcpy(void *dst, const void *src, size_t bytes, enum cudaMemcpyKind kind);
cudaError_t cudaMemcpyAsync(void *dst, const void *src, size_t bytes, enum cudaMemcpyKind kind,
                            cudaStream_t stream);
cudaError_t cudaMemsetAsync(void *ptr, int value, size_t bytes, cudaStream_t stream);
cudaError_t cudaMemset(void *ptr, int value, size_t bytes);
cudaError_t cudaStreamCreate(cudaStream_t *stream);
cudaError_t cudaStreamDestroy(cudaStream_t stream);
cudaError_t cudaStreamSynchronize(cudaStream_t stream);
cudaError_t cudaDeviceSynchronize(void);
cudaError_t cudaGetLastError(void);
cudaError_t cudaPeekAtLastError(void);
const char *cudaGetErrorString(cudaError_t error);
const char *cudaGetErrorName(cudaError_t error);
cudaError_t cudaPointerGetAttributes(struct cudaPointerAttributes *attr, const void *ptr);
/* Stream capture (see "Graphs" at the top of this file). */
cudaError_t cudaStreamBeginCapture(cudaStream_t stream, enum cudaStreamCaptureMode mode);
cudaError_t cudaStreamEndCapture(cudaStream_t stream, cudaGraph_t *graph);
cudaError_t cudaStreamIsCapturing(cudaStream_t stream, enum cudaStreamCaptureStatus *status);
cudaError_t cudaGraphInstantiate(cudaGraphExec_t *exec, cudaGraph_t graph, unsigned long long flags = 0);
cudaError_t cudaGraphLaunch(cudaGraphExec_t exec, cudaStream_t stream);
cudaError_t cudaGraphDestroy(cudaGraph_t graph);
cudaError_t cudaGraphExecDestroy(cudaGraphExec_t exec);

namespace simt {
cudaError_t func_set_max_dynamic_smem(const void *func, int bytes);
cudaError_t occupancy_blocks_per_sm(int *blocks, const void *func, int threads, size_t dyn_smem);
}
template <typename F>
inline cudaError_t cudaFuncSetAttribute(F *func, enum cudaFuncAttribute attr, int value)
{
    if (attr != cudaFuncAttributeMaxDynamicSharedMemorySize) return cudaErrorInvalidValue;
    return simt::func_set_max_dynamic_smem(reinterpret_cast<const void *>(func), value);
}
/* Blocks of `threads` threads with `dyn_smem` bytes of dynamic shared memory
 * that one multiprocessor holds at once: min(32, 2048 / threads,
 * 227 KiB / max(dyn_smem, 1)); 0 when such a block cannot be launched
 * (more than 1024 threads, more dynamic shared memory than the kernel may
 * ask for). Static shared memory and registers do not count here. */
template <typename F>
inline cudaError_t cudaOccupancyMaxActiveBlocksPerMultiprocessor(int *blocks, F *func, int threads, size_t dyn_smem)
{
    return simt::occupancy_blocks_per_sm(blocks, reinterpret_cast<const void *>(func), threads, dyn_smem);
}

/* ---- the emulator's kernel-side state --------------------------------- */
namespace simt {

struct thread_state {
    uint3 idx;     /* threadIdx */
    int linear;    /* x + y * bx + z * bx * by */
};
struct block_state {
    uint3 block_idx;
    dim3 block_dim;
    dim3 grid_dim;
};

extern thread_local thread_state *tls_thread;
extern thread_local block_state tls_block;

/* Where a __syncthreads is written: threads of a block that wait at
 * different ones (undefined on a GPU, where it may seem to work) fail the
 * launch. The sites come from macros, since the call cannot tell where it
 * was made (a return address would differ wherever the compiler copied one
 * call into two branches). */
struct barrier_site {
    const char *file;
    int line;
};
void syncthreads(barrier_site at);
int syncthreads_or(int predicate, barrier_site at);
int syncthreads_count(int predicate, barrier_site at);
void grid_sync();

enum warp_op { WARP_SYNC, WARP_BALLOT, WARP_ANY, WARP_ALL, WARP_REDUCE_MAX, WARP_IDX, WARP_UP, WARP_DOWN, WARP_XOR };
uint64_t warp_collective(warp_op op, unsigned mask, uint64_t value, int param, int width);

void *shared_static(const void *site, size_t bytes, size_t align);
void *shared_dynamic();

/* A launch: validates the configuration, poisons the declared outputs and
 * runs `body(closure)` once per thread of every block; a cooperative one
 * runs all blocks at once and fails when they would not fit on the device. */
struct out_region {
    void *ptr;
    size_t bytes;
};
cudaError_t run_grid(const char *kernel_name, const void *kernel, dim3 grid, dim3 block,
                     size_t dynamic_smem, cudaStream_t stream, const out_region *outs,
                     int num_outs, void (*body)(void *), void *closure, bool cooperative);
/* Whether work on `stream` is recorded or refused rather than run: the stream
 * is capturing (or its capture was invalidated), or it is the legacy stream
 * while a capture is active. */
bool stream_capturing(cudaStream_t stream);
/* Records a launch on a capturing stream after the checks run_grid makes;
 * `closure` is owned by the graph from then on and freed with `release`
 * (at once when the launch is refused); `check` checks its pointer arguments
 * again at each replay. */
cudaError_t record_launch(const char *kernel_name, const void *kernel, dim3 grid, dim3 block, size_t dynamic_smem,
                          cudaStream_t stream, const out_region *outs, int num_outs, void (*body)(void *),
                          void *closure, void (*release)(void *), cudaError_t (*check)(const char *, void *),
                          bool cooperative);
/* Fails the launch in flight from kernel code, with a message (a device-side
 * assertion): the launch returns cudaErrorLaunchFailure. */
[[noreturn]] void kernel_fail(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* Records a launch that failed before it ran (bad argument) as the last error. */
cudaError_t fail_launch(cudaError_t code, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
bool is_device_range(const void *ptr, size_t bytes);

template <typename T>
inline cudaError_t check_arg(const char *kernel_name, int index, const T &arg)
{
    if constexpr (std::is_pointer_v<T>) {
        if (arg != nullptr && !is_device_range(static_cast<const void *>(arg), 1))
            return fail_launch(cudaErrorInvalidDevicePointer,
                               "kernel %s: argument %d (%p) is not device memory", kernel_name,
                               index, static_cast<const void *>(arg));
    }
    return cudaSuccess;
}

template <typename Tuple, size_t... I>
inline cudaError_t check_args(const char *kernel_name, const Tuple &t, std::index_sequence<I...>)
{
    cudaError_t err = cudaSuccess;
    ((err == cudaSuccess ? (err = check_arg(kernel_name, (int)I, std::get<I>(t))) : err), ...);
    return err;
}

template <typename K, typename Tuple>
struct bound_kernel {
    K kernel;
    Tuple args;
    static void invoke(void *self)
    {
        bound_kernel *b = static_cast<bound_kernel *>(self);
        std::apply(b->kernel, b->args);
    }
    static void release(void *self) { delete static_cast<bound_kernel *>(self); }
    static cudaError_t check(const char *kernel_name, void *self);
};

/* Pointer arguments must be device memory: checked at each launch, and again
 * when a graph launches the kernel (the memory may have been freed since the
 * capture). */
template <typename K, typename Tuple>
inline cudaError_t bound_kernel<K, Tuple>::check(const char *kernel_name, void *self)
{
    return check_args(kernel_name, static_cast<bound_kernel *>(self)->args,
                      std::make_index_sequence<std::tuple_size_v<Tuple>>{});
}

template <typename... P, typename... A>
inline cudaError_t launch_as(bool cooperative, const char *kernel_name, void (*kernel)(P...), dim3 grid,
                             dim3 block, size_t smem, cudaStream_t stream, const out_region *outs, int num_outs,
                             A &&...args)
{
    static_assert(sizeof...(P) == sizeof...(A), "kernel launched with the wrong number of arguments");
    using tuple_t = std::tuple<std::decay_t<P>...>;
    bound_kernel<void (*)(P...), tuple_t> bound{kernel, tuple_t(std::forward<A>(args)...)};
    cudaError_t err = decltype(bound)::check(kernel_name, &bound);
    if (err != cudaSuccess) return err;
    if (stream_capturing(stream))
        return record_launch(kernel_name, reinterpret_cast<const void *>(kernel), grid, block, smem, stream, outs,
                             num_outs, &decltype(bound)::invoke, new decltype(bound)(std::move(bound)),
                             &decltype(bound)::release, &decltype(bound)::check, cooperative);
    return run_grid(kernel_name, reinterpret_cast<const void *>(kernel), grid, block, smem, stream,
                    outs, num_outs, &decltype(bound)::invoke, &bound, cooperative);
}

template <typename... P, typename... A>
inline cudaError_t launch(const char *kernel_name, void (*kernel)(P...), dim3 grid, dim3 block,
                          size_t smem, cudaStream_t stream, const out_region *outs, int num_outs,
                          A &&...args)
{
    return launch_as(false, kernel_name, kernel, grid, block, smem, stream, outs, num_outs,
                     std::forward<A>(args)...);
}

/* As launch, with every block of the grid resident at once (see grid_sync). */
template <typename... P, typename... A>
inline cudaError_t launch_cooperative(const char *kernel_name, void (*kernel)(P...), dim3 grid, dim3 block,
                                      size_t smem, cudaStream_t stream, const out_region *outs, int num_outs,
                                      A &&...args)
{
    return launch_as(true, kernel_name, kernel, grid, block, smem, stream, outs, num_outs,
                     std::forward<A>(args)...);
}

} /* namespace simt */

#define threadIdx (simt::tls_thread->idx)
#define blockIdx (simt::tls_block.block_idx)
#define blockDim (simt::tls_block.block_dim)
#define gridDim (simt::tls_block.grid_dim)
static constexpr int warpSize = 32;

#define __syncthreads() simt::syncthreads(simt::barrier_site{__FILE__, __LINE__})
#define __syncthreads_or(p) simt::syncthreads_or((p), simt::barrier_site{__FILE__, __LINE__})
#define __syncthreads_count(p) simt::syncthreads_count((p), simt::barrier_site{__FILE__, __LINE__})
inline void __syncwarp(unsigned mask = 0xffffffffu) { simt::warp_collective(simt::WARP_SYNC, mask, 0, 0, 32); }
inline void __threadfence() { __atomic_thread_fence(__ATOMIC_SEQ_CST); }
inline void __threadfence_block() { __atomic_thread_fence(__ATOMIC_SEQ_CST); }

inline unsigned __ballot_sync(unsigned mask, int pred)
{
    return (unsigned)simt::warp_collective(simt::WARP_BALLOT, mask, pred != 0, 0, 32);
}
inline int __any_sync(unsigned mask, int pred)
{
    return (int)simt::warp_collective(simt::WARP_ANY, mask, pred != 0, 0, 32);
}
inline int __all_sync(unsigned mask, int pred)
{
    return (int)simt::warp_collective(simt::WARP_ALL, mask, pred != 0, 0, 32);
}
/* sm_80's single-instruction warp reduction: the largest value among the lanes in mask */
inline unsigned __reduce_max_sync(unsigned mask, unsigned value)
{
    return (unsigned)simt::warp_collective(simt::WARP_REDUCE_MAX, mask, value, 0, 32);
}
/* ... and its signed overload, a signed maximum (the sign bit flipped orders ints as unsigned) */
inline int __reduce_max_sync(unsigned mask, int value)
{
    return (int)(__reduce_max_sync(mask, (unsigned)value ^ 0x80000000u) ^ 0x80000000u);
}

namespace simt {
template <typename T>
inline T shfl(warp_op op, unsigned mask, T var, int param, int width)
{
    static_assert(sizeof(T) == 4 || sizeof(T) == 8, "shuffle of an unsupported type");
    uint64_t bits = 0;
    std::memcpy(&bits, &var, sizeof(T));
    bits = warp_collective(op, mask, bits, param, width);
    T out;
    std::memcpy(&out, &bits, sizeof(T));
    return out;
}
} /* namespace simt */

template <typename T>
inline T __shfl_sync(unsigned mask, T var, int src_lane, int width = 32)
{
    return simt::shfl(simt::WARP_IDX, mask, var, src_lane, width);
}
template <typename T>
inline T __shfl_up_sync(unsigned mask, T var, unsigned delta, int width = 32)
{
    return simt::shfl(simt::WARP_UP, mask, var, (int)delta, width);
}
template <typename T>
inline T __shfl_down_sync(unsigned mask, T var, unsigned delta, int width = 32)
{
    return simt::shfl(simt::WARP_DOWN, mask, var, (int)delta, width);
}
template <typename T>
inline T __shfl_xor_sync(unsigned mask, T var, int lane_mask, int width = 32)
{
    return simt::shfl(simt::WARP_XOR, mask, var, lane_mask, width);
}

/* ---- bit intrinsics ----------------------------------------------------- */
inline int __popc(unsigned x) { return __builtin_popcount(x); }
inline int __popcll(unsigned long long x) { return __builtin_popcountll(x); }
inline int __ffs(int x) { return __builtin_ffs(x); }
inline int __ffsll(long long x) { return __builtin_ffsll(x); }
inline int __clz(int x) { return x == 0 ? 32 : __builtin_clz((unsigned)x); }
inline int __clzll(long long x) { return x == 0 ? 64 : __builtin_clzll((unsigned long long)x); }
inline unsigned __brev(unsigned x)
{
    unsigned r = 0;
    for (int i = 0; i < 32; ++i) r |= ((x >> i) & 1u) << (31 - i);
    return r;
}
inline int __float_as_int(float f) { int i; std::memcpy(&i, &f, 4); return i; }
inline unsigned __float_as_uint(float f) { unsigned i; std::memcpy(&i, &f, 4); return i; }
inline float __int_as_float(int i) { float f; std::memcpy(&f, &i, 4); return f; }
inline float __uint_as_float(unsigned i) { float f; std::memcpy(&f, &i, 4); return f; }
template <typename T>
inline T __ldg(const T *p) { return *p; }

/* Correctly rounded arithmetic: on the host every float op already rounds
 * to nearest even (the build disables contraction). */
inline float __fadd_rn(float a, float b) { return a + b; }
inline float __fsub_rn(float a, float b) { return a - b; }
inline float __fmul_rn(float a, float b) { return a * b; }
inline float __fdiv_rn(float a, float b) { return a / b; }

/* CUDA's overloaded min/max for integers. */
inline int min(int a, int b) { return a < b ? a : b; }
inline int max(int a, int b) { return a > b ? a : b; }
inline unsigned min(unsigned a, unsigned b) { return a < b ? a : b; }
inline unsigned max(unsigned a, unsigned b) { return a > b ? a : b; }
inline long long min(long long a, long long b) { return a < b ? a : b; }
inline long long max(long long a, long long b) { return a > b ? a : b; }
inline long min(long a, long b) { return a < b ? a : b; }
inline long max(long a, long b) { return a > b ? a : b; }
inline unsigned long long min(unsigned long long a, unsigned long long b) { return a < b ? a : b; }
inline unsigned long long max(unsigned long long a, unsigned long long b) { return a > b ? a : b; }

/* ---- atomics (all fibers of a launch run on one host thread; the builtins
 * keep them atomic should that ever change) ------------------------------- */
template <typename T>
inline T atomicAdd(T *p, T v) { return __atomic_fetch_add(p, v, __ATOMIC_RELAXED); }
inline float atomicAdd(float *p, float v)
{
    float old = *p, want;
    do {
        want = old + v;
    } while (!__atomic_compare_exchange(p, &old, &want, false, __ATOMIC_RELAXED, __ATOMIC_RELAXED));
    return old;
}
inline double atomicAdd(double *p, double v)
{
    double old = *p, want;
    do {
        want = old + v;
    } while (!__atomic_compare_exchange(p, &old, &want, false, __ATOMIC_RELAXED, __ATOMIC_RELAXED));
    return old;
}
template <typename T>
inline T atomicSub(T *p, T v) { return __atomic_fetch_sub(p, v, __ATOMIC_RELAXED); }
template <typename T>
inline T atomicAnd(T *p, T v) { return __atomic_fetch_and(p, v, __ATOMIC_RELAXED); }
template <typename T>
inline T atomicOr(T *p, T v) { return __atomic_fetch_or(p, v, __ATOMIC_RELAXED); }
template <typename T>
inline T atomicXor(T *p, T v) { return __atomic_fetch_xor(p, v, __ATOMIC_RELAXED); }
template <typename T>
inline T atomicExch(T *p, T v) { T old; __atomic_exchange(p, &v, &old, __ATOMIC_RELAXED); return old; }
template <typename T>
inline T atomicCAS(T *p, T compare, T v)
{
    __atomic_compare_exchange(p, &compare, &v, false, __ATOMIC_RELAXED, __ATOMIC_RELAXED);
    return compare;
}
template <typename T>
inline T atomicMax(T *p, T v)
{
    T old = *p;
    while (old < v && !__atomic_compare_exchange(p, &old, &v, false, __ATOMIC_RELAXED, __ATOMIC_RELAXED)) {
    }
    return old;
}
template <typename T>
inline T atomicMin(T *p, T v)
{
    T old = *p;
    while (old > v && !__atomic_compare_exchange(p, &old, &v, false, __ATOMIC_RELAXED, __ATOMIC_RELAXED)) {
    }
    return old;
}

/* ---- shared memory declarations ----------------------------------------- */
#define DP_SHARED(T, name, dims)                                                          \
    typedef T dp_shared_t_##name dims;                                                    \
    static const char dp_shared_site_##name = 0;                                          \
    dp_shared_t_##name &name = *static_cast<dp_shared_t_##name *>(                        \
        simt::shared_static(&dp_shared_site_##name, sizeof(dp_shared_t_##name), alignof(T)))
#define DP_SHARED_DYNAMIC(T, name) T *name = static_cast<T *>(simt::shared_dynamic())

#endif /* DETPOST_SIMT_H */
