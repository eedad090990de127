/*
 * The SIMT emulator itself: reductions through shared memory and warp
 * shuffles under every schedule, shuffle exchange semantics, a planted
 * missing __syncthreads() that only the forward order hides, a divergent
 * barrier, launches a GPU would reject, poisoning, pointer tracking.
 */
#include "../../cuda/dp_cuda.cuh"

#include <criterion/criterion.h>

#include <vector>

static const char *const kSchedules[] = {"forward", "reverse", "random:1", "random:987654321"};

template <typename T>
static T *dev_alloc(size_t n)
{
    void *p = nullptr;
    cr_assert_eq(cudaMalloc(&p, n * sizeof(T)), cudaSuccess);
    return static_cast<T *>(p);
}

template <typename T>
static std::vector<T> dev_read(const T *d, size_t n)
{
    std::vector<T> h(n);
    cr_assert_eq(cudaMemcpy(h.data(), d, n * sizeof(T), cudaMemcpyDeviceToHost), cudaSuccess);
    return h;
}

__global__ void block_sum(const int *in, int n, int *out)
{
    DP_SHARED(int, part, [256]);
    int v = 0;
    for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += gridDim.x * blockDim.x) v += in[i];
    part[threadIdx.x] = v;
    __syncthreads();
    for (int s = blockDim.x / 2; s > 0; s /= 2) {
        if ((int)threadIdx.x < s) part[threadIdx.x] += part[threadIdx.x + s];
        __syncthreads();
    }
    if (threadIdx.x == 0) out[blockIdx.x] = part[0];
}

Test(simt, block_reduction_every_schedule)
{
    const int n = 5000;
    std::vector<int> h(n);
    long long want = 0;
    for (int i = 0; i < n; ++i) want += h[i] = (i * 37) % 101 - 50;
    int *in = dev_alloc<int>(n), *out = dev_alloc<int>(7);
    cudaMemcpy(in, h.data(), n * sizeof(int), cudaMemcpyHostToDevice);
    for (const char *s : kSchedules) {
        cr_assert_eq(simt_set_schedule(s), 0);
        dp_launch_cfg cfg(dim3(7), dim3(256), 0, nullptr);
        cfg.out(out, 7 * sizeof(int));
        cr_assert_eq(DP_LAUNCH(block_sum, cfg, in, n, out), cudaSuccess, "%s", simt_last_message());
        std::vector<int> got = dev_read(out, 7);
        long long sum = 0;
        for (int v : got) sum += v;
        cr_assert_eq(sum, want, "schedule %s", s);
    }
    cudaFree(in);
    cudaFree(out);
}

__global__ void warp_sum(const float *in, float *out)
{
    float v = in[blockIdx.x * blockDim.x + threadIdx.x];
    for (int d = 16; d > 0; d /= 2) v += __shfl_down_sync(0xffffffffu, v, d);
    const float all = __shfl_sync(0xffffffffu, v, 0); /* broadcast lane 0 */
    float x = in[blockIdx.x * blockDim.x + threadIdx.x];
    for (int d = 1; d < 32; d *= 2) x += __shfl_xor_sync(0xffffffffu, x, d);
    out[blockIdx.x * blockDim.x + threadIdx.x] = all - x; /* both are the warp total */
    if (threadIdx.x % 32 == 0) out[gridDim.x * blockDim.x + blockIdx.x * (blockDim.x / 32) + threadIdx.x / 32] = v;
}

Test(simt, warp_shuffle_reduction_every_schedule)
{
    const int blocks = 3, threads = 96, n = blocks * threads;
    std::vector<float> h(n);
    for (int i = 0; i < n; ++i) h[i] = (float)((i * 13) % 17);
    float *in = dev_alloc<float>(n), *out = dev_alloc<float>(n + n / 32);
    cudaMemcpy(in, h.data(), n * sizeof(float), cudaMemcpyHostToDevice);
    for (const char *s : kSchedules) {
        cr_assert_eq(simt_set_schedule(s), 0);
        dp_launch_cfg cfg(dim3(blocks), dim3(threads), 0, nullptr);
        cfg.out(out, (n + n / 32) * sizeof(float));
        cr_assert_eq(DP_LAUNCH(warp_sum, cfg, in, out), cudaSuccess, "%s", simt_last_message());
        std::vector<float> got = dev_read(out, n + n / 32);
        for (int i = 0; i < n; ++i) cr_assert_eq(got[i], 0.0f, "xor and down reductions disagree at %d (%s)", i, s);
        for (int w = 0; w < n / 32; ++w) {
            float want = 0;
            for (int l = 0; l < 32; ++l) want += h[w * 32 + l];
            cr_assert_eq(got[n + w], want, "warp %d (%s)", w, s);
        }
    }
    cudaFree(in);
    cudaFree(out);
}

/* Exchange semantics with widths below 32, votes and bit intrinsics. */
__global__ void exchange(int *out)
{
    const int lane = threadIdx.x;
    int *o = out + lane * 8;
    o[0] = __shfl_up_sync(0xffffffffu, lane, 3, 8);    /* within groups of 8 */
    o[1] = __shfl_down_sync(0xffffffffu, lane, 5, 16); /* within groups of 16 */
    o[2] = __shfl_xor_sync(0xffffffffu, lane, 4, 8);
    o[3] = __shfl_sync(0xffffffffu, lane, 33, 16);     /* src 33 mod 16 = 1 of each group */
    o[4] = (int)__ballot_sync(0xffffffffu, lane % 3 == 0);
    o[5] = __any_sync(0xffffffffu, lane == 17) + 2 * __all_sync(0xffffffffu, lane < 32) + 4 * __all_sync(0xffffffffu, lane < 31);
    o[6] = __popc((unsigned)lane * 0x01010101u) + 100 * __ffs(lane << 3) + 10000 * __clz(lane);
    o[7] = __popcll(0xF0F0F0F0F0ull) + 100 * __ffsll(1ll << 40) + 10000 * __clzll(1ll << 40);
}

Test(simt, shuffle_semantics)
{
    int *out = dev_alloc<int>(32 * 8);
    for (const char *s : kSchedules) {
        simt_set_schedule(s);
        dp_launch_cfg cfg(dim3(1), dim3(32), 0, nullptr);
        cfg.out(out, 32 * 8 * sizeof(int));
        cr_assert_eq(DP_LAUNCH(exchange, cfg, out), cudaSuccess, "%s", simt_last_message());
        std::vector<int> g = dev_read(out, 32 * 8);
        unsigned ballot = 0;
        for (int l = 0; l < 32; l += 3) ballot |= 1u << l;
        for (int l = 0; l < 32; ++l) {
            const int *o = &g[l * 8];
            cr_assert_eq(o[0], l % 8 >= 3 ? l - 3 : l, "up lane %d", l);
            cr_assert_eq(o[1], l % 16 + 5 < 16 ? l + 5 : l, "down lane %d", l);
            cr_assert_eq(o[2], l ^ 4, "xor lane %d", l);
            cr_assert_eq(o[3], (l / 16) * 16 + 1, "idx lane %d", l);
            cr_assert_eq((unsigned)o[4], ballot);
            cr_assert_eq(o[5], 1 + 2 + 0);
            cr_assert_eq(o[6], __builtin_popcount((unsigned)l * 0x01010101u) + 100 * (l ? __builtin_ctz(l << 3) + 1 : 0) +
                                   10000 * (l ? __builtin_clz(l) : 32));
            cr_assert_eq(o[7], 20 + 100 * 41 + 10000 * 23);
        }
    }
    cudaFree(out);
}

/* Each thread reads its left neighbour's slot. Without the barrier this is
 * right only when threads happen to run in index order. */
template <bool WITH_BARRIER>
__global__ void neighbour(int *out)
{
    DP_SHARED(int, slot, [128]);
    const int t = threadIdx.x;
    slot[t] = t * 10;
    if (WITH_BARRIER) __syncthreads();
    out[t] = slot[t > 0 ? t - 1 : 0];
}

static bool neighbour_right(bool barrier, const char *schedule)
{
    int *out = dev_alloc<int>(128);
    simt_set_schedule(schedule);
    dp_launch_cfg cfg(dim3(1), dim3(128), 0, nullptr);
    cfg.out(out, 128 * sizeof(int));
    cudaError_t e = barrier ? DP_LAUNCH(neighbour<true>, cfg, out) : DP_LAUNCH(neighbour<false>, cfg, out);
    cr_assert_eq(e, cudaSuccess, "%s", simt_last_message());
    std::vector<int> g = dev_read(out, 128);
    cudaFree(out);
    for (int t = 0; t < 128; ++t)
        if (g[t] != (t > 0 ? t - 1 : 0) * 10) return false;
    return true;
}

Test(simt, missing_syncthreads_is_caught_by_reverse_and_random)
{
    cr_assert(neighbour_right(false, "forward"), "forward order hides the race");
    cr_assert(!neighbour_right(false, "reverse"), "reverse order must expose the missing barrier");
    cr_assert(!neighbour_right(false, "random:1"), "random order must expose the missing barrier");
    cr_assert(!neighbour_right(false, "random:42"), "random order must expose the missing barrier");
    for (const char *s : kSchedules) cr_assert(neighbour_right(true, s), "with the barrier, %s is right", s);
}

__global__ void divergent(int *out)
{
    if (threadIdx.x < 16) __syncthreads();
    out[threadIdx.x] = 1;
}

Test(simt, divergent_barrier_is_reported)
{
    int *out = dev_alloc<int>(64);
    dp_launch_cfg cfg(dim3(2), dim3(64), 0, nullptr);
    cr_assert_eq(DP_LAUNCH(divergent, cfg, out), cudaErrorLaunchFailure);
    cr_assert(strstr(simt_last_message(), "divergent barrier") != nullptr, "%s", simt_last_message());
    cr_assert(strstr(simt_last_message(), "divergent") != nullptr);
    cr_assert_eq(cudaGetLastError(), cudaErrorLaunchFailure);
    cr_assert_eq(cudaGetLastError(), cudaSuccess, "the error is not sticky");
    cudaFree(out);
}

__global__ void half_warp_shuffle(int *out)
{
    int v = threadIdx.x;
    if (threadIdx.x < 16) v = __shfl_xor_sync(0xffffffffu, v, 1); /* lanes 16..31 never arrive */
    out[threadIdx.x] = v;
}

Test(simt, warp_collective_deadlock_is_reported)
{
    int *out = dev_alloc<int>(32);
    dp_launch_cfg cfg(dim3(1), dim3(32), 0, nullptr);
    cr_assert_eq(DP_LAUNCH(half_warp_shuffle, cfg, out), cudaErrorLaunchFailure);
    cr_assert(strstr(simt_last_message(), "deadlock") != nullptr, "%s", simt_last_message());
    cudaFree(out);
}

__global__ void touch(int *out) { out[threadIdx.x] = (int)threadIdx.x; }

__global__ void big_static(int *out)
{
    DP_SHARED(int, huge, [13000]);
    huge[threadIdx.x] = 1;
    out[threadIdx.x] = huge[threadIdx.x];
}

__global__ void read_dynamic(int *out)
{
    DP_SHARED_DYNAMIC(int, dyn);
    out[threadIdx.x] = dyn[threadIdx.x]; /* never written: poisoned */
}

Test(simt, launches_a_gpu_rejects)
{
    int *out = dev_alloc<int>(2048);
    dp_launch_cfg too_many(dim3(1), dim3(1025), 0, nullptr);
    cr_assert_eq(DP_LAUNCH(touch, too_many, out), cudaErrorInvalidConfiguration);
    dp_launch_cfg bad_z(dim3(1), dim3(1, 1, 65), 0, nullptr);
    cr_assert_eq(DP_LAUNCH(touch, bad_z, out), cudaErrorInvalidConfiguration);
    dp_launch_cfg empty_grid(dim3(0), dim3(32), 0, nullptr);
    cr_assert_eq(DP_LAUNCH(touch, empty_grid, out), cudaErrorInvalidConfiguration);
    dp_launch_cfg big_dyn(dim3(1), dim3(32), 64 * 1024, nullptr);
    cr_assert_eq(DP_LAUNCH(read_dynamic, big_dyn, out), cudaErrorInvalidValue);
    cr_assert(strstr(simt_last_message(), "dynamic shared memory") != nullptr, "%s", simt_last_message());
    cr_assert_eq(cudaFuncSetAttribute(read_dynamic, cudaFuncAttributeMaxDynamicSharedMemorySize, 64 * 1024), cudaSuccess);
    cr_assert_eq(DP_LAUNCH(read_dynamic, big_dyn, out), cudaSuccess, "the opt-in raises the limit");
    dp_launch_cfg one(dim3(1), dim3(32), 0, nullptr);
    cr_assert_eq(DP_LAUNCH(big_static, one, out), cudaErrorLaunchFailure);
    cr_assert(strstr(simt_last_message(), "static shared memory") != nullptr, "%s", simt_last_message());
    int host[32];
    cr_assert_eq(DP_LAUNCH(touch, one, host), cudaErrorInvalidDevicePointer);
    cr_assert(strstr(simt_last_message(), "not device memory") != nullptr, "%s", simt_last_message());
    cudaFree(out);
}

Test(simt, shared_memory_and_outputs_are_poisoned)
{
    int *out = dev_alloc<int>(64);
    dp_launch_cfg cfg(dim3(1), dim3(32), 32 * sizeof(int), nullptr);
    cfg.out(out, 64 * sizeof(int)); /* the kernel writes only the first 32 */
    cr_assert_eq(DP_LAUNCH(read_dynamic, cfg, out), cudaSuccess);
    std::vector<int> g = dev_read(out, 64);
    for (int i = 0; i < 64; ++i) cr_assert_eq((unsigned)g[i], 0x7FC0DEADu, "element %d", i);
    float f;
    memcpy(&f, &g[0], 4);
    cr_assert(std::isnan(f), "the poison is a NaN as float");
    cudaFree(out);
}

Test(simt, copies_and_sync_count)
{
    int *a = dev_alloc<int>(16), *b = dev_alloc<int>(16);
    int host[16] = {0};
    const unsigned long long before = simt_sync_count();
    cr_assert_eq(cudaMemcpyAsync(b, a, 64, cudaMemcpyDeviceToDevice, nullptr), cudaSuccess);
    cr_assert_eq(cudaMemsetAsync(a, 0, 64, nullptr), cudaSuccess);
    void *p = nullptr;
    cr_assert_eq(cudaMallocAsync(&p, 100, nullptr), cudaSuccess);
    cr_assert_eq(cudaFreeAsync(p, nullptr), cudaSuccess);
    cr_assert_eq(simt_sync_count(), before, "stream-ordered work does not wait");
    cr_assert_eq(cudaMemcpyAsync(host, a, 64, cudaMemcpyDeviceToHost, nullptr), cudaSuccess);
    cr_assert_eq(simt_sync_count(), before + 1, "a copy to pageable host memory waits");
    cr_assert_eq(cudaStreamSynchronize(nullptr), cudaSuccess);
    cr_assert_eq(simt_sync_count(), before + 2);
    cr_assert_eq(cudaMemcpyAsync(host, a, 64, cudaMemcpyHostToDevice, nullptr), cudaErrorInvalidValue,
                 "a host destination with kind HostToDevice is caught");
    cr_assert_eq(cudaMemcpyAsync(a + 8, host, 64, cudaMemcpyHostToDevice, nullptr), cudaErrorInvalidValue,
                 "a copy running past the end of an allocation is caught");
    cr_assert_eq(cudaFree(host), cudaErrorInvalidValue);
    cudaFree(a);
    cudaFree(b);
}

Test(simt, schedule_parsing)
{
    cr_assert_eq(simt_set_schedule("reverse"), 0);
    cr_assert_str_eq(simt_schedule(), "reverse");
    cr_assert_eq(simt_set_schedule("random:77"), 0);
    cr_assert_str_eq(simt_schedule(), "random:77");
    cr_assert_eq(simt_set_schedule("random:"), -1);
    cr_assert_eq(simt_set_schedule("random:-3"), -1);
    cr_assert_eq(simt_set_schedule("sideways"), -1);
    cr_assert_str_eq(simt_schedule(), "random:77", "a bad schedule leaves the old one");
}
