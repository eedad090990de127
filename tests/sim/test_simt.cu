/*
 * The SIMT emulator itself: reductions through shared memory and warp
 * shuffles under every schedule, shuffle exchange semantics, a planted
 * missing __syncthreads() that only the forward order hides, a divergent
 * barrier, launches a GPU would reject, poisoning, pointer tracking, and
 * cooperative launches: grid-wide sync across interleaved blocks, per-block
 * shared memory and barriers inside them, their failures and their limit.
 */
#include "../../cuda/dp_cuda.cuh"

#include <criterion/criterion.h>

#include <functional>
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

/* __reduce_max_sync over the whole warp and over the odd lanes alone, with
 * values past 2^31 (compared unsigned). */
__global__ void reduce_max(unsigned *out)
{
    const unsigned lane = threadIdx.x;
    out[lane] = __reduce_max_sync(0xffffffffu, 0x80000000u + (lane * 7u) % 32u);
    if (lane % 2) out[32 + lane] = __reduce_max_sync(0xaaaaaaaau, lane == 5 ? 0xfffffff0u : lane);
    /* the int overload compares signed values: -1 is the smallest, not the largest */
    out[64 + lane] = (unsigned)__reduce_max_sync(0xffffffffu, lane == 0 ? -1 : (int)(lane % 6));
}

Test(simt, warp_reduce_max)
{
    unsigned *out = dev_alloc<unsigned>(96);
    for (const char *s : kSchedules) {
        simt_set_schedule(s);
        dp_launch_cfg cfg(dim3(1), dim3(32), 0, nullptr);
        cr_assert_eq(DP_LAUNCH(reduce_max, cfg, out), cudaSuccess, "%s", simt_last_message());
        std::vector<unsigned> g = dev_read(out, 96);
        for (int l = 0; l < 32; ++l) {
            cr_assert_eq(g[l], 0x80000000u + 31u, "full warp, lane %d (%s)", l, s);
            if (l % 2) cr_assert_eq(g[32 + l], 0xfffffff0u, "odd lanes, lane %d (%s)", l, s);
            cr_assert_eq((int)g[64 + l], 5, "signed, lane %d (%s)", l, s);
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

/* Every thread reaches a __syncthreads, but not the same one. */
__global__ void split_barrier(int *out)
{
    if (threadIdx.x < 16) __syncthreads();
    else __syncthreads();
    out[threadIdx.x] = 1;
}

Test(simt, barriers_at_different_places_are_reported)
{
    int *out = dev_alloc<int>(64);
    for (int cooperative = 0; cooperative < 2; ++cooperative)
        for (const char *s : kSchedules) {
            simt_set_schedule(s);
            dp_launch_cfg cfg(dim3(2), dim3(32), 0, nullptr);
            const cudaError_t e =
                cooperative ? DP_LAUNCH_COOP(split_barrier, cfg, out) : DP_LAUNCH(split_barrier, cfg, out);
            cr_assert_eq(e, cudaErrorLaunchFailure, "%s, cooperative %d", s, cooperative);
            cr_assert(strstr(simt_last_message(), "different __syncthreads") != nullptr, "%s",
                      simt_last_message());
            cr_assert(strstr(simt_last_message(), "test_simt.cu") != nullptr, "the message names the places");
            (void)cudaGetLastError();
        }
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

__global__ void static_and_dynamic(int *out)
{
    DP_SHARED(int, fixed, [4096]); /* 16 KiB */
    DP_SHARED_DYNAMIC(int, dyn);
    fixed[threadIdx.x] = (int)threadIdx.x;
    dyn[threadIdx.x] = 2 * (int)threadIdx.x;
    __syncthreads();
    out[threadIdx.x] = fixed[threadIdx.x] + dyn[threadIdx.x];
}

/* The opt-in attribute bounds the dynamic part alone, as on a GPU: 64 KiB of
 * dynamic memory beside 16 KiB of static memory runs with the attribute at
 * 64 KiB; without the opt-in the two together must fit in 48 KiB. */
Test(simt, dynamic_limit_excludes_static_memory)
{
    int *out = dev_alloc<int>(32);
    dp_launch_cfg within(dim3(1), dim3(32), 40 * 1024, nullptr);
    cr_assert_eq(DP_LAUNCH(static_and_dynamic, within, out), cudaErrorLaunchFailure, "56 KiB without the opt-in");
    cr_assert(strstr(simt_last_message(), "exceeds the block's limit") != nullptr, "%s", simt_last_message());
    cr_assert_eq(cudaFuncSetAttribute(static_and_dynamic, cudaFuncAttributeMaxDynamicSharedMemorySize, 64 * 1024),
                 cudaSuccess);
    dp_launch_cfg big(dim3(1), dim3(32), 64 * 1024, nullptr);
    cr_assert_eq(DP_LAUNCH(static_and_dynamic, big, out), cudaSuccess, "%s", simt_last_message());
    std::vector<int> g = dev_read(out, 32);
    for (int i = 0; i < 32; ++i) cr_assert_eq(g[i], 3 * i);
    dp_launch_cfg over(dim3(1), dim3(32), 64 * 1024 + 4, nullptr);
    cr_assert_eq(DP_LAUNCH(static_and_dynamic, over, out), cudaErrorInvalidValue, "above the attribute");
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

/* A GPU hands back whatever memory held before: fresh allocations are
 * poisoned, so code that reads scratch before writing it fails here too. */
Test(simt, fresh_allocations_are_poisoned)
{
    void *plain = nullptr, *ordered = nullptr;
    cr_assert_eq(cudaMalloc(&plain, 4096), cudaSuccess);
    cr_assert_eq(cudaMallocAsync(&ordered, 4096, nullptr), cudaSuccess);
    for (void *p : {plain, ordered}) {
        std::vector<unsigned> g = dev_read(static_cast<unsigned *>(p), 1024);
        for (int i = 0; i < 1024; ++i) cr_assert_eq(g[i], 0x7FC0DEADu, "word %d", i);
    }
    cudaFree(plain);
    cudaFreeAsync(ordered, nullptr);
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

/* ---- cooperative launches ----------------------------------------------- */

/* Rounds of a reduction across the grid: each block sums its values (warp
 * shuffles, then shared memory across warps), publishes the sum, and after a
 * grid sync every block reads every other block's sum to update its values.
 * The sums share one slot per block across rounds, so a second grid sync
 * must keep a fast block from overwriting a sum another block still reads. */
template <bool SECOND_SYNC>
__global__ void grid_rounds(int *value, int *partial, int *totals, int *where, int rounds)
{
    DP_SHARED(int, warp_sums, [32]);
    const int block = (int)(blockIdx.x + blockIdx.y * gridDim.x);
    const int blocks = (int)(gridDim.x * gridDim.y);
    const int gid = block * (int)blockDim.x + (int)threadIdx.x;
    int v = value[gid];
    for (int round = 0; round < rounds; ++round) {
        int s = v;
        for (int d = 16; d > 0; d /= 2) s += __shfl_xor_sync(0xffffffffu, s, d);
        if (threadIdx.x % 32 == 0) warp_sums[threadIdx.x / 32] = s;
        __syncthreads();
        if (threadIdx.x == 0) {
            int block_sum = 0;
            for (int w = 0; w < (int)blockDim.x / 32; ++w) block_sum += warp_sums[w];
            partial[block] = block_sum;
        }
        dp_grid_sync();
        int total = 0;
        for (int b = 0; b < blocks; ++b) total += (b + 1) * partial[b];
        if (threadIdx.x == 0) totals[round * blocks + block] = total;
        v = (v * 3 + total + block) % 1000;
        if (SECOND_SYNC) dp_grid_sync();
    }
    value[gid] = v;
    where[gid] = (int)(blockIdx.y * 100000 + blockIdx.x * 1000 + threadIdx.x);
}

/* Runs grid_rounds on a 3 x 2 grid and compares with the same rounds worked
 * out on the host; blockIdx must be right either way. */
static bool grid_rounds_right(bool second_sync, const char *schedule)
{
    const dim3 grid(3, 2);
    const int blocks = 6, threads = 96, n = blocks * threads, rounds = 4;
    std::vector<int> start(n);
    for (int i = 0; i < n; ++i) start[i] = (i * 29) % 53;
    std::vector<int> want_value = start, want_totals(rounds * blocks);
    for (int round = 0; round < rounds; ++round) {
        std::vector<int> partial(blocks, 0);
        for (int i = 0; i < n; ++i) partial[i / threads] += want_value[i];
        int total = 0;
        for (int b = 0; b < blocks; ++b) total += (b + 1) * partial[b];
        for (int i = 0; i < n; ++i) want_value[i] = (want_value[i] * 3 + total + i / threads) % 1000;
        for (int b = 0; b < blocks; ++b) want_totals[round * blocks + b] = total;
    }
    int *value = dev_alloc<int>(n), *partial = dev_alloc<int>(blocks), *totals = dev_alloc<int>(rounds * blocks),
        *where = dev_alloc<int>(n);
    cr_assert_eq(simt_set_schedule(schedule), 0);
    cudaMemcpy(value, start.data(), n * sizeof(int), cudaMemcpyHostToDevice);
    dp_launch_cfg cfg(grid, dim3(threads), 0, nullptr);
    cfg.out(partial, blocks * sizeof(int)).out(totals, rounds * blocks * sizeof(int)).out(where, n * sizeof(int));
    const cudaError_t e = second_sync ? DP_LAUNCH_COOP(grid_rounds<true>, cfg, value, partial, totals, where, rounds)
                                      : DP_LAUNCH_COOP(grid_rounds<false>, cfg, value, partial, totals, where, rounds);
    cr_assert_eq(e, cudaSuccess, "%s: %s", schedule, simt_last_message());
    std::vector<int> got_totals = dev_read(totals, rounds * blocks), got_value = dev_read(value, n),
                     got_where = dev_read(where, n);
    cudaFree(value);
    cudaFree(partial);
    cudaFree(totals);
    cudaFree(where);
    for (int i = 0; i < n; ++i)
        cr_assert_eq(got_where[i], (i / threads / 3) * 100000 + (i / threads % 3) * 1000 + i % threads,
                     "blockIdx of thread %d (%s)", i, schedule);
    return got_totals == want_totals && got_value == want_value;
}

Test(simt, grid_sync_reduction_rounds_every_schedule)
{
    for (const char *s : kSchedules) cr_assert(grid_rounds_right(true, s), "schedule %s", s);
}

Test(simt, missing_grid_sync_is_caught_by_random_schedules)
{
    cr_assert(grid_rounds_right(false, "forward"), "forward order hides the race");
    cr_assert(!grid_rounds_right(false, "random:1"), "random order must expose the missing grid sync");
    cr_assert(!grid_rounds_right(false, "random:987654321"), "random order must expose the missing grid sync");
}

/* Each block fills its own static and dynamic shared memory, votes at
 * __syncthreads_count/_or, and reads both back after a grid sync, by which
 * time every other block has filled its own copies. */
__global__ void own_shared(int *out, int *unwritten)
{
    DP_SHARED(int, mine, [64]);
    DP_SHARED(int, never_written, [2]);
    DP_SHARED_DYNAMIC(int, dyn);
    const int t = (int)threadIdx.x, b = (int)blockIdx.x;
    mine[t] = b * 1000 + t;
    dyn[t] = -(b * 1000 + t);
    const int count = __syncthreads_count(t <= b);
    const int any = __syncthreads_or(t == b + 40);
    dp_grid_sync();
    const int right = (t + 1) % (int)blockDim.x;
    int *o = out + (b * (int)blockDim.x + t) * 5;
    o[0] = mine[right];
    o[1] = dyn[right];
    o[2] = count;
    o[3] = any;
    o[4] = (int)blockIdx.x;
    if (t == 0) unwritten[b] = never_written[b % 2];
}

Test(simt, cooperative_blocks_keep_their_own_shared_memory_and_barriers)
{
    const int blocks = 12, threads = 64;
    int *out = dev_alloc<int>(blocks * threads * 5), *unwritten = dev_alloc<int>(blocks);
    for (const char *s : kSchedules) {
        cr_assert_eq(simt_set_schedule(s), 0);
        for (int repeat = 0; repeat < 2; ++repeat) {
            dp_launch_cfg cfg(dim3(blocks), dim3(threads), threads * sizeof(int), nullptr);
            cfg.out(out, blocks * threads * 5 * sizeof(int)).out(unwritten, blocks * sizeof(int));
            cr_assert_eq(DP_LAUNCH_COOP(own_shared, cfg, out, unwritten), cudaSuccess, "%s: %s", s,
                         simt_last_message());
            std::vector<int> g = dev_read(out, blocks * threads * 5), u = dev_read(unwritten, blocks);
            for (int b = 0; b < blocks; ++b) {
                cr_assert_eq((unsigned)u[b], 0x7FC0DEADu, "block %d sees another launch's shared memory (%s)", b, s);
                for (int t = 0; t < threads; ++t) {
                    const int *o = &g[(b * threads + t) * 5];
                    const int right = (t + 1) % threads;
                    cr_assert_eq(o[0], b * 1000 + right, "static shared memory, block %d thread %d (%s)", b, t, s);
                    cr_assert_eq(o[1], -(b * 1000 + right), "dynamic shared memory, block %d thread %d (%s)", b, t, s);
                    cr_assert_eq(o[2], b + 1, "__syncthreads_count of block %d (%s)", b, s);
                    cr_assert_eq(o[3], b + 40 < threads, "__syncthreads_or of block %d (%s)", b, s);
                    cr_assert_eq(o[4], b, "blockIdx of block %d thread %d (%s)", b, t, s);
                }
            }
        }
    }
    cudaFree(out);
    cudaFree(unwritten);
}

__global__ void grid_sync_once(int *out)
{
    out[blockIdx.x * blockDim.x + threadIdx.x] = 1;
    dp_grid_sync();
}

Test(simt, grid_sync_needs_a_cooperative_launch)
{
    int *out = dev_alloc<int>(64);
    dp_launch_cfg cfg(dim3(2), dim3(32), 0, nullptr);
    cr_assert_eq(DP_LAUNCH(grid_sync_once, cfg, out), cudaErrorLaunchFailure);
    cr_assert(strstr(simt_last_message(), "not cooperative") != nullptr, "%s", simt_last_message());
    cr_assert_eq(DP_LAUNCH_COOP(grid_sync_once, cfg, out), cudaSuccess, "%s", simt_last_message());
    cudaFree(out);
}

Test(simt, cooperative_grid_larger_than_the_device_is_rejected)
{
    /* 256 threads: min(32, 2048 / 256) = 8 blocks per multiprocessor, 32 on 4 */
    const int n = 33 * 256;
    int *out = dev_alloc<int>(n);
    cudaMemset(out, 0, n * sizeof(int));
    dp_launch_cfg too_many(dim3(33), dim3(256), 0, nullptr);
    too_many.out(out, n * sizeof(int));
    cr_assert_eq(DP_LAUNCH_COOP(grid_sync_once, too_many, out), cudaErrorCooperativeLaunchTooLarge);
    cr_assert_eq((int)cudaErrorCooperativeLaunchTooLarge, 720);
    cr_assert(strstr(simt_last_message(), "cooperative grid of 33 blocks exceeds the 32") != nullptr, "%s",
              simt_last_message());
    cr_assert_eq(cudaGetLastError(), cudaErrorCooperativeLaunchTooLarge);
    cr_assert_str_eq(cudaGetErrorName(cudaErrorCooperativeLaunchTooLarge), "cudaErrorCooperativeLaunchTooLarge");
    std::vector<int> g = dev_read(out, n);
    for (int i = 0; i < n; ++i) cr_assert_eq(g[i], 0, "a rejected launch writes nothing (element %d)", i);
    dp_launch_cfg fits(dim3(32), dim3(256), 0, nullptr);
    cr_assert_eq(DP_LAUNCH_COOP(grid_sync_once, fits, out), cudaSuccess, "%s", simt_last_message());
    /* 100 KiB of dynamic shared memory: 227 KiB / 100 KiB = 2 blocks per multiprocessor, 8 on 4 */
    cr_assert_eq(cudaFuncSetAttribute(grid_sync_once, cudaFuncAttributeMaxDynamicSharedMemorySize, 100 * 1024),
                 cudaSuccess);
    dp_launch_cfg big_smem(dim3(9), dim3(32), 100 * 1024, nullptr);
    cr_assert_eq(DP_LAUNCH_COOP(grid_sync_once, big_smem, out), cudaErrorCooperativeLaunchTooLarge);
    dp_launch_cfg big_smem_fits(dim3(8), dim3(32), 100 * 1024, nullptr);
    cr_assert_eq(DP_LAUNCH_COOP(grid_sync_once, big_smem_fits, out), cudaSuccess, "%s", simt_last_message());
    cudaFree(out);
}

__global__ void leaves_before_grid_sync(int *out)
{
    if (blockIdx.x == 2 && threadIdx.x == 5) return;
    out[blockIdx.x * blockDim.x + threadIdx.x] = 1;
    dp_grid_sync();
}

__global__ void waits_at_different_barriers(int *out)
{
    if (blockIdx.x == 1 && threadIdx.x == 0)
        __syncthreads(); /* its block's other threads wait at the grid sync instead */
    else
        dp_grid_sync();
    out[blockIdx.x * blockDim.x + threadIdx.x] = 1;
}

__global__ void divergent_in_one_block(int *out)
{
    if (blockIdx.x != 3 || threadIdx.x < 8) __syncthreads();
    out[blockIdx.x * blockDim.x + threadIdx.x] = 1;
}

Test(simt, cooperative_stalls_are_reported)
{
    int *out = dev_alloc<int>(4 * 64);
    dp_launch_cfg cfg(dim3(4), dim3(64), 0, nullptr);
    for (const char *s : kSchedules) {
        cr_assert_eq(simt_set_schedule(s), 0);
        cr_assert_eq(DP_LAUNCH_COOP(leaves_before_grid_sync, cfg, out), cudaErrorLaunchFailure, "%s", s);
        cr_assert(strstr(simt_last_message(), "grid sync reached by 255 of 256 threads while 1 exited") != nullptr,
                  "%s: %s", s, simt_last_message());
        cr_assert_eq(DP_LAUNCH_COOP(waits_at_different_barriers, cfg, out), cudaErrorLaunchFailure, "%s", s);
        cr_assert(strstr(simt_last_message(), "deadlock: threads wait at different barriers: 255 at grid sync, 1 at "
                                              "__syncthreads") != nullptr,
                  "%s: %s", s, simt_last_message());
        cr_assert_eq(DP_LAUNCH_COOP(divergent_in_one_block, cfg, out), cudaErrorLaunchFailure, "%s", s);
        cr_assert(strstr(simt_last_message(), "block (3, 0, 0): __syncthreads() reached by 8 of 64 threads") != nullptr,
                  "%s: %s", s, simt_last_message());
    }
    cudaFree(out);
}

Test(simt, coop_max_blocks_follows_the_occupancy_model)
{
    detpost_ctx *ctx = nullptr;
    cr_assert_eq(detpost_create(&ctx, DETPOST_CUDA, 0), DETPOST_OK);
    cr_assert_eq(ctx->multiprocessors, 4);
    cr_assert_eq(dp_coop_max_blocks(ctx, grid_sync_once, 32, 0), 4 * 32, "at most 32 blocks per multiprocessor");
    cr_assert_eq(dp_coop_max_blocks(ctx, grid_sync_once, 256, 0), 4 * 8, "2048 threads per multiprocessor");
    cr_assert_eq(dp_coop_max_blocks(ctx, grid_sync_once, 1024, 0), 4 * 2);
    cr_assert_eq(dp_coop_max_blocks(ctx, grid_sync_once, 96, 40 * 1024), 4 * 5, "227 KiB of shared memory");
    cr_assert_eq(dp_coop_max_blocks(ctx, touch, 32, 64 * 1024), 0, "more than touch may ask for without opt-in");
    cr_assert_eq(cudaFuncSetAttribute(touch, cudaFuncAttributeMaxDynamicSharedMemorySize, 64 * 1024), cudaSuccess);
    cr_assert_eq(dp_coop_max_blocks(ctx, touch, 32, 64 * 1024), 4 * 3);
    cr_assert_eq(dp_coop_max_blocks(ctx, touch, 0, 0), 0, "a failed query");
    cr_assert_eq(cudaGetLastError(), cudaSuccess, "leaves no error behind");
    cr_assert_eq(dp_coop_max_blocks(ctx, touch, 2048, 0), 0, "a block no device launches");
    detpost_destroy(ctx);
}

__global__ void rotate_across_grid(int *first, int *second, int shift)
{
    const int n = (int)(gridDim.x * blockDim.x), gid = (int)(blockIdx.x * blockDim.x + threadIdx.x);
    first[gid] = gid * 7;
    dp_grid_sync();
    second[gid] = first[(gid + shift) % n];
}

Test(simt, largest_cooperative_grids_run)
{
    detpost_ctx *ctx = nullptr;
    cr_assert_eq(detpost_create(&ctx, DETPOST_CUDA, 0), DETPOST_OK);
    const int n = 8192; /* 4 multiprocessors x 2048 threads */
    int *first = dev_alloc<int>(n), *second = dev_alloc<int>(n);
    for (unsigned threads : {64u, 1024u}) {
        const int blocks = dp_coop_max_blocks(ctx, rotate_across_grid, threads, 0);
        cr_assert_eq(blocks * (int)threads, n, "%u threads a block", threads);
        for (const char *s : {"forward", "random:5"}) {
            cr_assert_eq(simt_set_schedule(s), 0);
            dp_launch_cfg cfg(dim3(blocks), dim3(threads), 0, nullptr);
            cfg.out(first, n * sizeof(int)).out(second, n * sizeof(int));
            cr_assert_eq(DP_LAUNCH_COOP(rotate_across_grid, cfg, first, second, n / 2 + 1), cudaSuccess, "%s: %s", s,
                         simt_last_message());
            std::vector<int> g = dev_read(second, n);
            for (int i = 0; i < n; ++i)
                cr_assert_eq(g[i], (i + n / 2 + 1) % n * 7, "element %d (%u threads, %s)", i, threads, s);
        }
    }
    cudaFree(first);
    cudaFree(second);
    detpost_destroy(ctx);
}

/* ---- stream capture ---------------------------------------------------------- */

__global__ void add_to_all(int *data, int amount) { data[blockIdx.x * blockDim.x + threadIdx.x] += amount; }

Test(simt, capture_records_and_a_graph_replays)
{
    cudaStream_t s = nullptr;
    cr_assert_eq(cudaStreamCreate(&s), cudaSuccess);
    int *a = dev_alloc<int>(64), *b = dev_alloc<int>(64), *poisoned = dev_alloc<int>(64);
    cr_assert_eq(cudaMemset(a, 0, 256), cudaSuccess);
    cr_assert_eq(cudaStreamBeginCapture(s, cudaStreamCaptureModeGlobal), cudaSuccess);
    cudaStreamCaptureStatus status = cudaStreamCaptureStatusNone;
    cr_assert_eq(cudaStreamIsCapturing(s, &status), cudaSuccess);
    cr_assert_eq(status, cudaStreamCaptureStatusActive);
    const unsigned long long launches = simt_launch_count();
    dp_launch_cfg cfg(dim3(2), dim3(32), 0, s);
    cr_assert_eq(DP_LAUNCH(add_to_all, cfg, a, 5), cudaSuccess, "%s", simt_last_message());
    cr_assert_eq(DP_LAUNCH_COOP(add_to_all, cfg, a, 1), cudaSuccess, "%s", simt_last_message());
    cr_assert_eq(cudaMemcpyAsync(b, a, 256, cudaMemcpyDeviceToDevice, s), cudaSuccess);
    cr_assert_eq(cudaMemsetAsync(a, 0, 128, s), cudaSuccess);
    dp_launch_cfg one(dim3(1), dim3(32), 0, s);
    one.out(poisoned, 256); /* declared, written only in its first half */
    cr_assert_eq(DP_LAUNCH(touch, one, poisoned), cudaSuccess);
    dp_launch_cfg bad(dim3(1), dim3(2048), 0, s);
    cr_assert_eq(DP_LAUNCH(touch, bad, poisoned), cudaErrorInvalidConfiguration, "checked when captured");
    cr_assert_eq(simt_launch_count(), launches, "nothing ran during the capture");
    cudaGraph_t graph = nullptr;
    cr_assert_eq(cudaStreamEndCapture(s, &graph), cudaSuccess, "%s", simt_last_message());
    for (int v : dev_read(a, 64)) cr_assert_eq(v, 0, "nothing ran during the capture");
    cr_assert_eq(cudaStreamIsCapturing(s, &status), cudaSuccess);
    cr_assert_eq(status, cudaStreamCaptureStatusNone);
    cudaGraphExec_t exec = nullptr;
    cr_assert_eq(cudaGraphInstantiate(&exec, graph, 0), cudaSuccess);
    cr_assert_eq(cudaGraphDestroy(graph), cudaSuccess, "an instance outlives its graph");
    for (int launch = 1; launch <= 2; ++launch) {
        cr_assert_eq(cudaGraphLaunch(exec, s), cudaSuccess, "%s", simt_last_message());
        std::vector<int> ga = dev_read(a, 64), gb = dev_read(b, 64), gp = dev_read(poisoned, 64);
        for (int i = 0; i < 64; ++i) {
            cr_assert_eq(gb[i], i < 32 ? 6 : 6 * launch, "b[%d] after launch %d", i, launch);
            cr_assert_eq(ga[i], i < 32 ? 0 : 6 * launch, "a[%d] after launch %d", i, launch);
            cr_assert_eq((unsigned)gp[i], i < 32 ? (unsigned)i : 0x7FC0DEADu, "outputs are poisoned at each replay");
        }
    }
    cudaFree(poisoned);
    cr_assert_eq(cudaGraphLaunch(exec, s), cudaErrorInvalidDevicePointer, "a replay after a free is caught");
    cr_assert(strstr(simt_last_message(), "not device memory") != nullptr, "%s", simt_last_message());
    cr_assert_eq(cudaGraphExecDestroy(exec), cudaSuccess);
    cudaFree(a), cudaFree(b);
    cr_assert_eq(cudaStreamDestroy(s), cudaSuccess);
}

/* Each call a GPU refuses during a global-mode capture fails and invalidates
 * the capture, which then ends without a graph. */
Test(simt, capture_refuses_what_a_gpu_refuses)
{
    cudaStream_t s = nullptr, other = nullptr;
    cr_assert_eq(cudaStreamCreate(&s), cudaSuccess);
    cr_assert_eq(cudaStreamCreate(&other), cudaSuccess);
    int *a = dev_alloc<int>(32);
    int host[32] = {0};
    void *p = nullptr;
    struct unsafe {
        const char *what;
        cudaError_t expect;
        std::function<cudaError_t()> call;
    };
    dp_launch_cfg legacy(dim3(1), dim3(32), 0, nullptr);
    const unsafe calls[] = {
        {"cudaMalloc", cudaErrorStreamCaptureUnsupported, [&] { return cudaMalloc(&p, 64); }},
        {"cudaFree", cudaErrorStreamCaptureUnsupported, [&] { return cudaFree(a); }},
        {"cudaMemcpy", cudaErrorStreamCaptureUnsupported,
         [&] { return cudaMemcpy(host, a, 128, cudaMemcpyDeviceToHost); }},
        {"cudaMemset", cudaErrorStreamCaptureUnsupported, [&] { return cudaMemset(a, 0, 128); }},
        {"cudaDeviceSynchronize", cudaErrorStreamCaptureUnsupported, [&] { return cudaDeviceSynchronize(); }},
        {"cudaStreamSynchronize", cudaErrorStreamCaptureUnsupported, [&] { return cudaStreamSynchronize(s); }},
        {"cudaMallocAsync", cudaErrorStreamCaptureUnsupported, [&] { return cudaMallocAsync(&p, 64, s); }},
        {"cudaMemcpyAsync to the host", cudaErrorStreamCaptureUnsupported,
         [&] { return cudaMemcpyAsync(host, a, 128, cudaMemcpyDeviceToHost, s); }},
        {"a launch on the legacy stream", cudaErrorStreamCaptureImplicit,
         [&] { return DP_LAUNCH(touch, legacy, a); }},
        {"cudaMemsetAsync on the legacy stream", cudaErrorStreamCaptureImplicit,
         [&] { return cudaMemsetAsync(a, 0, 128, nullptr); }},
    };
    for (const unsafe &u : calls) {
        cr_assert_eq(cudaStreamBeginCapture(s, cudaStreamCaptureModeGlobal), cudaSuccess);
        cr_assert_eq(u.call(), u.expect, "%s: %s", u.what, simt_last_message());
        cudaStreamCaptureStatus status = cudaStreamCaptureStatusNone;
        cr_assert_eq(cudaStreamIsCapturing(s, &status), cudaSuccess);
        cr_assert_eq(status, cudaStreamCaptureStatusInvalidated, "%s invalidates the capture", u.what);
        dp_launch_cfg cfg(dim3(1), dim3(32), 0, s);
        cr_assert_eq(DP_LAUNCH(touch, cfg, a), cudaErrorStreamCaptureInvalidated, "%s", u.what);
        cudaGraph_t graph = reinterpret_cast<cudaGraph_t>(&status);
        cr_assert_eq(cudaStreamEndCapture(s, &graph), cudaErrorStreamCaptureInvalidated, "%s", u.what);
        cr_assert_null(graph);
    }

    /* other streams keep running, and relaxed mode allows what global mode refuses */
    cr_assert_eq(cudaStreamBeginCapture(s, cudaStreamCaptureModeRelaxed), cudaSuccess);
    cr_assert_eq(cudaMemsetAsync(a, 0x11, 128, other), cudaSuccess);
    cr_assert_eq(cudaMalloc(&p, 64), cudaSuccess, "%s", simt_last_message());
    cr_assert_eq(cudaFree(p), cudaSuccess);
    cudaGraph_t graph = nullptr;
    cr_assert_eq(cudaStreamEndCapture(s, &graph), cudaSuccess, "%s", simt_last_message());
    cr_assert_eq(dev_read(a, 1)[0], 0x11111111, "work on another stream ran at once");
    cr_assert_eq(cudaGraphDestroy(graph), cudaSuccess);

    /* misuse of the capture calls themselves */
    cr_assert_eq(cudaStreamBeginCapture(nullptr, cudaStreamCaptureModeGlobal), cudaErrorStreamCaptureUnsupported);
    cr_assert_eq(cudaStreamEndCapture(s, &graph), cudaErrorIllegalState);
    cr_assert_eq(cudaStreamBeginCapture(s, cudaStreamCaptureModeGlobal), cudaSuccess);
    cr_assert_eq(cudaStreamBeginCapture(s, cudaStreamCaptureModeGlobal), cudaErrorIllegalState);
    cr_assert_eq(cudaStreamDestroy(s), cudaSuccess, "destroying a capturing stream ends its capture");
    cr_assert_eq(cudaMalloc(&p, 64), cudaSuccess, "no capture is left active");
    cudaFree(p), cudaFree(a);
    cr_assert_eq(cudaStreamDestroy(other), cudaSuccess);
}

__global__ void fails_on_bad_value(const int *values, int *out)
{
    const int v = values[threadIdx.x];
    if (v < 0) simt::kernel_fail("value %d at %u is negative", v, threadIdx.x);
    out[threadIdx.x] = v;
}

Test(simt, kernel_fail_fails_the_launch_with_its_message)
{
    int *values = dev_alloc<int>(32), *out = dev_alloc<int>(32);
    std::vector<int> host(32, 1);
    host[17] = -4;
    cr_assert_eq(cudaMemcpy(values, host.data(), 128, cudaMemcpyHostToDevice), cudaSuccess);
    dp_launch_cfg cfg(dim3(1), dim3(32), 0, nullptr);
    cr_assert_eq(DP_LAUNCH(fails_on_bad_value, cfg, values, out), cudaErrorLaunchFailure);
    cr_assert(strstr(simt_last_message(), "value -4 at 17 is negative") != nullptr, "%s", simt_last_message());
    host[17] = 4;
    cr_assert_eq(cudaMemcpy(values, host.data(), 128, cudaMemcpyHostToDevice), cudaSuccess);
    cr_assert_eq(DP_LAUNCH(fails_on_bad_value, cfg, values, out), cudaSuccess, "the emulator recovers");
    cr_assert_eq(dev_read(out, 32)[17], 4);
    cudaFree(values), cudaFree(out);
}
