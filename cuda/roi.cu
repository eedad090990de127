/*
 * RoI Align (AVG and MAX, forward and backward), RoI Pool and the multi-level
 * RoI Align on the GPU.
 *
 * RoI Align forward, NCHW with a fixed sampling grid (sampling_ratio > 0)
 * whose sample columns and rows each fit a warp (the detector case, 7 x 7
 * bins of 2 x 2 samples): one block of 32 warps per multiprocessor. Each
 * block sorts the RoIs (up to 4096 at a time, bitonic, in shared memory) by
 * image, level and the Morton code of their centre, and works through items
 * (32 consecutive sorted RoIs, 32 channels): warp w takes RoI w of the item.
 * Sorted RoIs overlap, so the 32 warps read largely the same pixels of the
 * same channels at about the same time and L1 serves them, instead of every
 * RoI pulling its own patch of every channel from L2. Within a warp, lanes
 * are the RoI's sample columns (bin column * ratio + sample), in groups of
 * a power of two >= pooled_w * ratio lanes with one channel per group: a
 * load instruction then reads one image row at 14 nearby columns (few
 * sectors per value), and a bin row's loads are all issued before the first
 * is used. The lanes of a bin add their samples in the reference's order
 * through shuffles (a sample off the map adds the neutral element); the
 * bin's first lane writes it.
 *
 * RoI Align forward otherwise (NHWC, adaptive grids, large grids): one block
 * per (RoI, chunk of channels). The block first works out its RoI once:
 * validity, FPN level (the multi-level op is the same kernel with more than
 * one level, so the whole pyramid is one launch), sampling grid, and per bin
 * row / column the run of samples that lie on the map (binary search, so a
 * huge RoI costs no more than the map it covers). The sampling grid is
 * separable, so when the runs are short (the usual case: a few samples per
 * bin) the bilinear corners and weights of every sample row and column go
 * into shared memory, and each output element pays only for four weight
 * products, its loads and multiply-adds; otherwise each thread computes them
 * as it goes. Threads then take output elements: NCHW in (channel, bin)
 * order, so a warp writes a contiguous run and reads nearby pixels of one
 * plane; NHWC in (bin, channel group) order, so a warp reads whole rows of
 * channels at each corner (coalesced), with 8- or 16-byte vector loads when
 * the channel count and alignment allow.
 *
 * Backward: the same traversal scatters each grad_out element onto the
 * corners of its samples, with float atomics by default; in deterministic
 * mode into int64 fixed point (integer addition is associative, so the
 * result does not depend on the order of the atomics), scaled from the
 * largest |grad_out| found by a reduction first, then converted back.
 *
 * RoI Pool: one thread per output element (bins are small rectangles of
 * pixels, no per-sample weights to share); backward scatters through argmax.
 *
 * Every RoI row is checked as it is loaded; an invalid one reads nothing and
 * yields zeros (argmax -1, level -1), since the host cannot see device memory
 * without waiting for the device.
 */
#include "dp_cuda.cuh"

#include <limits.h>

#include "../host/roi.h"
#include "../host/roi_math.h"

#define ROI_THREADS 256
#define ROI_TABLE 128            /* bilinear corners per axis cached in shared memory */
#define ROI_ITEMS_PER_BLOCK 2048 /* output elements one block aims at */

#ifdef DETPOST_SIM
#define ROI_NOINLINE __attribute__((noinline))
#else
#define ROI_NOINLINE __noinline__
#endif

/* Everything up to the launchers is private to this file. */
namespace {

/* ---- element access ------------------------------------------------------ */

__device__ __forceinline__ float to_float(float v) { return v; }
__device__ __forceinline__ float to_float(uint16_t v) { return dp_half_to_float(v); }
template <typename T>
__device__ __forceinline__ T from_float(float v);
template <>
__device__ __forceinline__ float from_float<float>(float v) { return v; }
template <>
__device__ __forceinline__ uint16_t from_float<uint16_t>(float v) { return dp_float_to_half(v); }

template <typename T, int VEC>
struct alignas(sizeof(T) * VEC) roi_pack {
    T e[VEC];
};

template <typename T, int VEC>
__device__ __forceinline__ void load_vec(const T *p, float (&v)[VEC])
{
    const roi_pack<T, VEC> k = *reinterpret_cast<const roi_pack<T, VEC> *>(p);
    for (int l = 0; l < VEC; ++l) v[l] = to_float(k.e[l]);
}

template <typename T, int VEC>
__device__ __forceinline__ void store_vec(T *p, const float (&v)[VEC])
{
    roi_pack<T, VEC> k;
    for (int l = 0; l < VEC; ++l) k.e[l] = from_float<T>(v[l]);
    *reinterpret_cast<roi_pack<T, VEC> *>(p) = k;
}

__device__ __forceinline__ void scatter(float *acc, int64_t i, float v, int) { atomicAdd(acc + i, v); }
__device__ __forceinline__ void scatter(unsigned long long *acc, int64_t i, float v, int exponent)
{
    atomicAdd(acc + i, (unsigned long long)dp_to_fixed(v, exponent));
}

/* ---- the block's RoI ------------------------------------------------------- */

struct roi_head {
    dp_roi_axis y, x;
    float count;
    int level;
    int valid;
    int use_table;
    int64_t image;
};

/* Per bin row (y) and column (x): the run [lo, hi) of samples on the map and,
 * when use_table, their corners from tab[off]. */
struct roi_runs {
    int32_t ylo[DP_ROI_MAX_POOLED], yhi[DP_ROI_MAX_POOLED], yoff[DP_ROI_MAX_POOLED];
    int32_t xlo[DP_ROI_MAX_POOLED], xhi[DP_ROI_MAX_POOLED], xoff[DP_ROI_MAX_POOLED];
    dp_roi_corner ytab[ROI_TABLE], xtab[ROI_TABLE];
};

__device__ __forceinline__ dp_roi_axis no_samples(int64_t size)
{
    dp_roi_axis a;
    a.start = 0.0f;
    a.bin = 0.0f;
    a.grid = 0;
    a.size = size;
    return a;
}

/* The RoI's setup runs once per block and RoI; kept out of line (with
 * scalar arguments, so the kernel's parameters stay where they are) so that
 * its registers (double-precision level mapping, binary searches) do not
 * add to those of the per-element loops, which need many warps in flight. */
ROI_NOINLINE __device__ int roi_level_of(const float *row, int64_t n, int num_levels, float canonical_scale,
                                         int canonical_level, float eps, int k_min)
{
    if (!dp_roi_row_valid(row, n)) return -1;
    return num_levels > 1 ? dp_fpn_level(row + 1, canonical_scale, canonical_level, eps, k_min, num_levels) : 0;
}

ROI_NOINLINE __device__ void compute_axes(const float *row, float scale, int aligned, int ph, int pw,
                                          int sampling_ratio, int64_t h, int64_t w, roi_head &head)
{
    head.y = dp_roi_align_axis(row[2], row[4], scale, aligned, ph, sampling_ratio, h);
    head.x = dp_roi_align_axis(row[1], row[3], scale, aligned, pw, sampling_ratio, w);
    head.count = dp_roi_count(&head.y, &head.x);
    head.image = (int64_t)row[0];
}

__device__ __forceinline__ void compute_head(const dp_roi_job &job, int64_t r, roi_head &head)
{
    const float *row = job.rois + r * 5;
    const int level = roi_level_of(row, job.n, job.num_levels, job.canonical_scale, job.canonical_level, job.eps,
                                   job.k_min);
    head.valid = level >= 0;
    head.level = level >= 0 ? level : 0;
    const dp_roi_level &lv = job.level[head.level];
    if (head.valid) {
        compute_axes(row, lv.scale, job.aligned, job.pooled_h, job.pooled_w, job.sampling_ratio, lv.h, lv.w, head);
    } else {
        head.y = no_samples(lv.h);
        head.x = no_samples(lv.w);
        head.count = 1.0f;
        head.image = 0;
    }
}

/* Runs of on-map samples per bin row (k < ph) and column (the rest). */
ROI_NOINLINE __device__ void compute_runs(int ph, int pw, const roi_head &head, roi_runs &runs)
{
    for (int k = threadIdx.x; k < ph + pw; k += blockDim.x) {
        int64_t lo, hi;
        if (k < ph) {
            dp_roi_sample_run(&head.y, k, &lo, &hi);
            runs.ylo[k] = (int32_t)lo, runs.yhi[k] = (int32_t)hi;
        } else {
            dp_roi_sample_run(&head.x, k - ph, &lo, &hi);
            runs.xlo[k - ph] = (int32_t)lo, runs.xhi[k - ph] = (int32_t)hi;
        }
    }
}

/* Table offsets of the runs, and whether they all fit the tables. */
ROI_NOINLINE __device__ void plan_tables(int ph, int pw, roi_head &head, roi_runs &runs)
{
    int64_t ny = 0, nx = 0;
    for (int p = 0; p < ph; ++p) {
        runs.yoff[p] = (int32_t)(ny < ROI_TABLE ? ny : ROI_TABLE);
        ny += runs.yhi[p] - runs.ylo[p];
    }
    for (int q = 0; q < pw; ++q) {
        runs.xoff[q] = (int32_t)(nx < ROI_TABLE ? nx : ROI_TABLE);
        nx += runs.xhi[q] - runs.xlo[q];
    }
    head.use_table = ny <= ROI_TABLE && nx <= ROI_TABLE;
}

ROI_NOINLINE __device__ void fill_tables(int ph, int pw, const roi_head &head, roi_runs &runs)
{
    for (int k = threadIdx.x; k < ph + pw; k += blockDim.x) {
        if (k < ph)
            for (int i = runs.ylo[k]; i < runs.yhi[k]; ++i)
                runs.ytab[runs.yoff[k] + i - runs.ylo[k]] = dp_roi_sample_corner(&head.y, k, i);
        else
            for (int i = runs.xlo[k - ph]; i < runs.xhi[k - ph]; ++i)
                runs.xtab[runs.xoff[k - ph] + i - runs.xlo[k - ph]] = dp_roi_sample_corner(&head.x, k - ph, i);
    }
}

__device__ __forceinline__ void roi_setup(const dp_roi_job &job, int64_t r, roi_head &head, roi_runs &runs)
{
    __syncthreads(); /* the previous RoI's head and tables are no longer read */
    if (threadIdx.x == 0) compute_head(job, r, head);
    __syncthreads();
    compute_runs(job.pooled_h, job.pooled_w, head, runs);
    __syncthreads();
    if (threadIdx.x == 0) plan_tables(job.pooled_h, job.pooled_w, head, runs);
    __syncthreads();
    if (head.use_table) fill_tables(job.pooled_h, job.pooled_w, head, runs);
    __syncthreads();
}

/* Corner of sample i of bin row p (column q): from the table, or computed. */
template <bool TABLE>
__device__ __forceinline__ dp_roi_corner corner_y(const roi_head &h, const roi_runs &t, int p, int i)
{
    return TABLE ? t.ytab[t.yoff[p] + i - t.ylo[p]] : dp_roi_sample_corner(&h.y, p, i);
}

template <bool TABLE>
__device__ __forceinline__ dp_roi_corner corner_x(const roi_head &h, const roi_runs &t, int q, int i)
{
    return TABLE ? t.xtab[t.xoff[q] + i - t.xlo[q]] : dp_roi_sample_corner(&h.x, q, i);
}

/* Whether bin (p, q) has samples off the map, which count as 0 in MAX mode. */
__device__ __forceinline__ int bin_has_outside(const roi_head &h, const roi_runs &t, int p, int q)
{
    return (int64_t)(t.yhi[p] - t.ylo[p]) * (t.xhi[q] - t.xlo[q]) < h.y.grid * h.x.grid;
}

/* The pooled value of bin (p, q) for VEC consecutive channels starting at
 * `base` (the channel's element (0, 0)); rows are sy apart, columns sx. */
template <typename T, int VEC, int MODE, bool TABLE>
__device__ __forceinline__ void align_bin(const T *__restrict__ base, int64_t sy, int64_t sx, const roi_head &h,
                                          const roi_runs &t, int p, int q, float (&res)[VEC])
{
    float acc[VEC];
    for (int l = 0; l < VEC; ++l) acc[l] = MODE == DETPOST_ROI_AVG ? 0.0f : -INFINITY;
    const int ylo = t.ylo[p], yhi = t.yhi[p], xlo = t.xlo[q], xhi = t.xhi[q];
    for (int iy = ylo; iy < yhi; ++iy) {
        const dp_roi_corner cy = corner_y<TABLE>(h, t, p, iy);
        const T *row_lo = base + cy.lo * sy, *row_hi = base + cy.hi * sy;
        for (int ix = xlo; ix < xhi; ++ix) {
            const dp_roi_corner cx = corner_x<TABLE>(h, t, q, ix);
            float w[4], v1[VEC], v2[VEC], v3[VEC], v4[VEC];
            dp_roi_weights(&cy, &cx, w);
            load_vec<T, VEC>(row_lo + cx.lo * sx, v1);
            load_vec<T, VEC>(row_lo + cx.hi * sx, v2);
            load_vec<T, VEC>(row_hi + cx.lo * sx, v3);
            load_vec<T, VEC>(row_hi + cx.hi * sx, v4);
            for (int l = 0; l < VEC; ++l) {
                const float v = dp_roi_mix(w, v1[l], v2[l], v3[l], v4[l]);
                if (MODE == DETPOST_ROI_AVG) acc[l] += v;
                else if (v > acc[l]) acc[l] = v;
            }
        }
    }
    if (MODE == DETPOST_ROI_AVG) {
        for (int l = 0; l < VEC; ++l) res[l] = acc[l] / h.count;
    } else {
        const int outside = bin_has_outside(h, t, p, q);
        for (int l = 0; l < VEC; ++l) res[l] = dp_roi_max_value(acc[l], acc[l] > -INFINITY, outside);
    }
}

/* Output elements of one block: channel range [c0, c1) (NCHW) or channel
 * group range (NHWC) of its RoI, chunk at a time along blockIdx.y. */
__device__ __forceinline__ void chunk_range(int64_t total, int64_t chunk, int64_t *lo, int64_t *hi)
{
    *lo = (int64_t)blockIdx.y * chunk;
    *hi = *lo + chunk < total ? *lo + chunk : total;
}

template <typename T, int LAYOUT, int MODE, int VEC>
__global__ void __launch_bounds__(ROI_THREADS)
    roi_align_forward(dp_roi_job job, T *__restrict__ out, int32_t *__restrict__ levels, int64_t chunk)
{
    DP_SHARED(roi_head, head, );
    DP_SHARED(roi_runs, runs, );
    const int64_t bins = (int64_t)job.pooled_h * job.pooled_w, C = job.c;
    for (int64_t r = blockIdx.x; r < job.num_rois; r += gridDim.x) {
        roi_setup(job, r, head, runs);
        if (levels != nullptr && blockIdx.y == 0 && threadIdx.x == 0) levels[r] = head.valid ? head.level : -1;
        const dp_roi_level &lv = job.level[head.level];
        const T *feat = static_cast<const T *>(lv.features);
        const int64_t H = lv.h, W = lv.w;
        int64_t lo, hi;
        if (LAYOUT == DETPOST_NCHW) {
            chunk_range(C, chunk, &lo, &hi);
            const int64_t items = hi > lo ? (hi - lo) * bins : 0;
            for (int64_t it = threadIdx.x; it < items; it += blockDim.x) {
                const int64_t c = lo + it / bins;
                const int bin = (int)(it % bins);
                const T *plane = feat + (head.image * C + c) * H * W;
                const int p = bin / job.pooled_w, q = bin % job.pooled_w;
                float res[1];
                if (head.use_table) align_bin<T, 1, MODE, true>(plane, W, 1, head, runs, p, q, res);
                else align_bin<T, 1, MODE, false>(plane, W, 1, head, runs, p, q, res);
                out[(r * C + c) * bins + bin] = from_float<T>(res[0]);
            }
        } else {
            chunk_range(C / VEC, chunk, &lo, &hi);
            const int64_t groups = hi > lo ? hi - lo : 0, items = groups * bins;
            for (int64_t it = threadIdx.x; it < items; it += blockDim.x) {
                const int bin = (int)(it / groups);
                const int64_t c = (lo + it % groups) * VEC;
                const T *plane = feat + head.image * H * W * C + c;
                const int p = bin / job.pooled_w, q = bin % job.pooled_w;
                float res[VEC];
                if (head.use_table) align_bin<T, VEC, MODE, true>(plane, W * C, C, head, runs, p, q, res);
                else align_bin<T, VEC, MODE, false>(plane, W * C, C, head, runs, p, q, res);
                store_vec<T, VEC>(out + (r * bins + bin) * C + c, res);
            }
        }
    }
}

/* ---- RoI Align forward, NCHW, fixed sampling grid -------------------------------- */

#define ROWS_THREADS 1024
#define ROWS_WARPS (ROWS_THREADS / 32)
#define ROWS_SORT 4096    /* RoIs ordered together: the index takes the key's low 12 bits */
#define ROWS_CHANNELS 32  /* channels of one work item */
#define ROWS_LANES 32     /* sample columns (and sample rows) one RoI may have */

/* One warp's RoI: its head, where its image starts (read back from shared
 * memory, so the compiler keeps it as a plain pointer and each load's address
 * is one 32-bit offset from it) and, per sample row p * ratio + iy, the
 * corner (lo = -1 when the sample is off the map) and per bin row the number
 * of on-map sample rows. */
struct rows_roi {
    roi_head head;
    const void *image; /* element (image, 0, 0, 0) of the RoI's level */
    dp_roi_corner y[ROWS_LANES];
    int32_t ylen[ROWS_LANES];
};

/* The work of a launch: items (sort chunk, channel chunk, batch of
 * ROWS_WARPS sorted RoIs), channels per item, lanes per channel group (the
 * power of two >= pooled_w * ratio) and the sampling ratio. */
struct rows_plan {
    int64_t items, channels, channel_chunks;
    int lanes, ratio;
};

/* 7 bits of v spread to the even bit positions. */
__device__ __forceinline__ uint32_t spread7(uint32_t v)
{
    v = (v | (v << 4)) & 0x0f0fu;
    v = (v | (v << 2)) & 0x3333u;
    return (v | (v << 1)) & 0x5555u;
}

/* Which of 128 cells along an axis of `size` pixels holds the centre of
 * [lo, hi] (image pixels) at `scale`; NaN and overflow clamp. */
__device__ __forceinline__ uint32_t cell_of(float lo, float hi, float scale, int64_t size)
{
    const float centre = DP_MUL(DP_MUL(lo + hi, 0.5f), scale);
    const float cell = fminf(fmaxf(DP_MUL(centre / (float)size, 128.0f), 0.0f), 127.0f);
    return (uint32_t)cell;
}

/* Sort key of RoI r, `index` within its sort chunk: image, level and the
 * Morton code of the centre's cell, so RoIs that overlap sort next to each
 * other; invalid rows go last. Only the order depends on it. */
__device__ uint32_t rows_key(const dp_roi_job &job, int64_t r, uint32_t index)
{
    const float *row = job.rois + r * 5;
    const int level =
        roi_level_of(row, job.n, job.num_levels, job.canonical_scale, job.canonical_level, job.eps, job.k_min);
    if (level < 0) return 0xfffff000u | index;
    const dp_roi_level &lv = job.level[level];
    const uint32_t x = cell_of(row[1], row[3], lv.scale, lv.w), y = cell_of(row[2], row[4], lv.scale, lv.h);
    const uint32_t image = (uint32_t)(int64_t)row[0] & 7u;
    return image << 29 | (uint32_t)level << 26 | (spread7(x) | spread7(y) << 1) << 12 | index;
}

/* Bitonic sort of the keys of RoIs [first, first + n) into keys[0, n). */
__device__ void rows_sort(const dp_roi_job &job, int64_t first, int n, uint32_t *keys)
{
    __syncthreads(); /* the previous order is no longer read */
    int m = 1;
    while (m < n) m <<= 1;
    for (int i = threadIdx.x; i < m; i += blockDim.x) keys[i] = i < n ? rows_key(job, first + i, (uint32_t)i) : ~0u;
    __syncthreads();
    for (int size = 2; size <= m; size <<= 1)
        for (int stride = size / 2; stride > 0; stride /= 2) {
            for (int i = threadIdx.x; i < m / 2; i += blockDim.x) {
                const int lo = 2 * i - (i & (stride - 1)), hi = lo + stride;
                const uint32_t a = keys[lo], b = keys[hi];
                if ((a > b) == ((lo & size) == 0)) {
                    keys[lo] = b;
                    keys[hi] = a;
                }
            }
            __syncthreads();
        }
}

/* The warp's RoI r: head, image, and the corners of its sample rows. */
template <typename T>
__device__ __forceinline__ void rows_setup(const dp_roi_job &job, int64_t r, int ratio, rows_roi &s)
{
    const int lane = threadIdx.x % 32;
    __syncwarp(); /* the previous RoI is no longer read */
    if (lane == 0) {
        compute_head(job, r, s.head);
        const dp_roi_level &lv = job.level[s.head.level];
        s.image = static_cast<const T *>(lv.features) + s.head.image * job.c * lv.h * lv.w;
    }
    __syncwarp();
    if (lane < job.pooled_h * ratio) {
        const int p = lane / ratio, iy = lane % ratio;
        int64_t lo, hi;
        dp_roi_sample_run(&s.head.y, p, &lo, &hi);
        dp_roi_corner cy = {-1, -1, 0.0f, 0.0f};
        if (iy >= lo && iy < hi) cy = dp_roi_sample_corner(&s.head.y, p, iy);
        s.y[lane] = cy;
        if (iy == 0) s.ylen[p] = (int32_t)(hi - lo);
    }
    __syncwarp();
}

/* Element `offset` of an image, read only when `on` (a predicated load, so
 * a bin row's loads can all be in flight before the first is used), through
 * the read-only global path: the image pointer came from shared memory. */
template <typename T>
__device__ __forceinline__ float rows_load(const T *__restrict__ image, uint32_t offset, bool on)
{
    return on ? to_float(__ldg(image + offset)) : 0.0f;
}

/* Sample value of the lane's column at row corner cy of the plane that
 * starts at element `plane` of the image, or the neutral element of the
 * mode when the sample is off the map or the lane idle. Offsets within an
 * image fit 32 bits (rows_fit); unsigned arithmetic keeps them 32-bit adds. */
template <typename T, int MODE>
__device__ __forceinline__ float rows_sample(const T *__restrict__ image, uint32_t plane, uint32_t w, bool on,
                                             const dp_roi_corner &cy, const dp_roi_corner &cx)
{
    const uint32_t lo = plane + (uint32_t)cy.lo * w, hi = plane + (uint32_t)cy.hi * w;
    const float v1 = rows_load(image, lo + (uint32_t)cx.lo, on), v2 = rows_load(image, lo + (uint32_t)cx.hi, on);
    const float v3 = rows_load(image, hi + (uint32_t)cx.lo, on), v4 = rows_load(image, hi + (uint32_t)cx.hi, on);
    float wt[4];
    dp_roi_weights(&cy, &cx, wt);
    const float v = dp_roi_mix(wt, v1, v2, v3, v4);
    return on ? v : MODE == DETPOST_ROI_AVG ? 0.0f : -INFINITY;
}

/* Adds (AVG) or takes the maximum of (MAX) the ratio samples of the bin that
 * start at this lane, in column order. Adding 0 for a missing sample leaves
 * the sum as it is: the sum starts at +0 and so is never -0. */
template <int MODE>
__device__ __forceinline__ void rows_gather(float &acc, float v, int ratio, int lanes)
{
    for (int k = 0; k < ratio; ++k) {
        const float t = k == 0 ? v : __shfl_down_sync(0xffffffffu, v, k, lanes);
        if (MODE == DETPOST_ROI_AVG) acc += t;
        else if (t > acc) acc = t;
    }
}

/* NCHW RoI Align with sampling_ratio > 0, pooled_w * ratio <= 32 and
 * pooled_h * ratio <= 32 (R: the ratio when fixed at compile time, else 0).
 * Lanes are the sample columns of a RoI (in groups of plan.lanes, one
 * channel per group), so each load instruction reads along image rows. */
template <typename T, int MODE, int R>
__global__ void __launch_bounds__(ROWS_THREADS, 1)
    roi_align_nchw_rows(dp_roi_job job, T *__restrict__ out, int32_t *__restrict__ levels, rows_plan plan)
{
    DP_SHARED(uint32_t, keys, [ROWS_SORT]);
    DP_SHARED(rows_roi, warp_rois, [ROWS_WARPS]);
    const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
    const int ratio = R > 0 ? R : plan.ratio, lanes = plan.lanes;
    const int col = lane % lanes, group = lane / lanes, groups = 32 / lanes;
    const int q = col / ratio, ix = col % ratio;
    const int ph = job.pooled_h, pw = job.pooled_w;
    const int64_t C = job.c, per_chunk = (ROWS_SORT / ROWS_WARPS) * plan.channel_chunks;
    rows_roi &s = warp_rois[warp];
    int64_t sorted = -1;
    for (int64_t item = blockIdx.x; item < plan.items; item += gridDim.x) {
        const int64_t chunk = item / per_chunk, rest = item % per_chunk, first = chunk * ROWS_SORT;
        const int n = (int)(job.num_rois - first < ROWS_SORT ? job.num_rois - first : ROWS_SORT);
        const int64_t batches = (n + ROWS_WARPS - 1) / ROWS_WARPS;
        const int64_t k = rest / batches, pos = (rest % batches) * ROWS_WARPS + warp;
        if (chunk != sorted) {
            rows_sort(job, first, n, keys);
            sorted = chunk;
        }
        if (pos >= n) continue;
        const int64_t r = first + (keys[pos] & (ROWS_SORT - 1));
        rows_setup<T>(job, r, ratio, s);
        if (levels != nullptr && k == 0 && lane == 0) levels[r] = s.head.valid ? s.head.level : -1;

        /* the lane's sample column */
        dp_roi_corner cx = {-1, -1, 0.0f, 0.0f};
        int64_t xlen = 0;
        if (q < pw) {
            int64_t lo, hi;
            dp_roi_sample_run(&s.head.x, q, &lo, &hi);
            xlen = hi - lo;
            if (ix >= lo && ix < hi) cx = dp_roi_sample_corner(&s.head.x, q, ix);
        }
        const bool stores = ix == 0 && q < pw;
        const dp_roi_level &lv = job.level[s.head.level];
        const int64_t plane_size = lv.h * lv.w;
        const T *image = static_cast<const T *>(s.image);
        const uint32_t w = (uint32_t)lv.w;
        const int64_t grid = s.head.y.grid * s.head.x.grid;
        /* dividing by a power of two and multiplying by its reciprocal round
         * the same real number, so they give the same bits */
        const float count = s.head.count, inverse = 1.0f / count;
        const bool exact_inverse = (dp_float_bits(count) & 0x007fffffu) == 0;
        const int64_t c_end = (k + 1) * plan.channels < C ? (k + 1) * plan.channels : C;
        for (int64_t c0 = k * plan.channels; c0 < c_end; c0 += groups) {
            const int64_t c = c0 + group < c_end ? c0 + group : c0;
            const bool live = c0 + group < c_end;
            const uint32_t plane = (uint32_t)(c * plane_size);
            T *dst = out + (r * C + c) * ph * pw + (stores ? q : 0); /* idle lanes stay inside out */
            const bool on_x = live && cx.lo >= 0;
            for (int p = 0; p < ph; ++p) {
                float acc = MODE == DETPOST_ROI_AVG ? 0.0f : -INFINITY;
                if (R > 0) {
                    /* every load of the bin row first, then the sums */
                    float v[R > 0 ? R : 1];
                    for (int iy = 0; iy < R; ++iy) {
                        const dp_roi_corner cy = s.y[p * R + iy];
                        v[iy] = rows_sample<T, MODE>(image, plane, w, on_x && cy.lo >= 0, cy, cx);
                    }
                    for (int iy = 0; iy < R; ++iy) rows_gather<MODE>(acc, v[iy], R, lanes);
                } else {
                    for (int iy = 0; iy < ratio; ++iy) {
                        const dp_roi_corner cy = s.y[p * ratio + iy];
                        rows_gather<MODE>(acc, rows_sample<T, MODE>(image, plane, w, on_x && cy.lo >= 0, cy, cx), ratio,
                                          lanes);
                    }
                }
                if (stores && live) {
                    float res;
                    if (MODE == DETPOST_ROI_AVG) res = exact_inverse ? DP_MUL(acc, inverse) : acc / count;
                    else res = dp_roi_max_value(acc, acc > -INFINITY, s.ylen[p] * xlen < grid);
                    dst[p * pw] = from_float<T>(res);
                }
            }
        }
    }
}

/* Gradient of one bin of one channel: AVG spreads it over every sample's
 * corners; MAX finds the forward's winning sample again and gives it all. */
template <typename T, int MODE, bool TABLE, typename ACC>
__device__ __forceinline__ void align_bin_backward(const T *__restrict__ base, int64_t plane, int64_t sy, int64_t sx,
                                                   float g, const roi_head &h, const roi_runs &t, int p, int q,
                                                   ACC *acc, int exponent)
{
    if (MODE == DETPOST_ROI_AVG) {
        for (int iy = t.ylo[p]; iy < t.yhi[p]; ++iy) {
            const dp_roi_corner cy = corner_y<TABLE>(h, t, p, iy);
            for (int ix = t.xlo[q]; ix < t.xhi[q]; ++ix) {
                const dp_roi_corner cx = corner_x<TABLE>(h, t, q, ix);
                float w[4];
                dp_roi_weights(&cy, &cx, w);
                scatter(acc, plane + cy.lo * sy + cx.lo * sx, DP_MUL(g, w[0]) / h.count, exponent);
                scatter(acc, plane + cy.lo * sy + cx.hi * sx, DP_MUL(g, w[1]) / h.count, exponent);
                scatter(acc, plane + cy.hi * sy + cx.lo * sx, DP_MUL(g, w[2]) / h.count, exponent);
                scatter(acc, plane + cy.hi * sy + cx.hi * sx, DP_MUL(g, w[3]) / h.count, exponent);
            }
        }
        return;
    }
    float best = -INFINITY;
    dp_roi_corner best_y = {0, 0, 0.0f, 0.0f}, best_x = best_y;
    int best_row = t.ylo[p];
    for (int iy = t.ylo[p]; iy < t.yhi[p]; ++iy) {
        const dp_roi_corner cy = corner_y<TABLE>(h, t, p, iy);
        for (int ix = t.xlo[q]; ix < t.xhi[q]; ++ix) {
            const dp_roi_corner cx = corner_x<TABLE>(h, t, q, ix);
            float w[4];
            dp_roi_weights(&cy, &cx, w);
            const T *row_lo = base + cy.lo * sy, *row_hi = base + cy.hi * sy;
            const float v = dp_roi_mix(w, to_float(row_lo[cx.lo * sx]), to_float(row_lo[cx.hi * sx]),
                                       to_float(row_hi[cx.lo * sx]), to_float(row_hi[cx.hi * sx]));
            if (v > best) {
                best = v;
                best_y = cy;
                best_x = cx;
                best_row = iy;
            }
        }
    }
    const int off_map_first = dp_roi_off_map_first(t.ylo[p], t.xlo[q], t.xhi[q], h.x.grid, best_row);
    if (!dp_roi_max_takes_gradient(best, best > -INFINITY, bin_has_outside(h, t, p, q), off_map_first)) return;
    float w[4];
    dp_roi_weights(&best_y, &best_x, w);
    scatter(acc, plane + best_y.lo * sy + best_x.lo * sx, DP_MUL(g, w[0]), exponent);
    scatter(acc, plane + best_y.lo * sy + best_x.hi * sx, DP_MUL(g, w[1]), exponent);
    scatter(acc, plane + best_y.hi * sy + best_x.lo * sx, DP_MUL(g, w[2]), exponent);
    scatter(acc, plane + best_y.hi * sy + best_x.hi * sx, DP_MUL(g, w[3]), exponent);
}

/* The fixed-point exponent, or -1 in `stop` when grad_out holds a non-finite
 * value (the conversion then writes NaN everywhere). */
__device__ __forceinline__ int fixed_exponent_of(const uint32_t *max_bits, int weight_log2, int *stop)
{
    *stop = 0;
    if (max_bits == nullptr) return 0;
    const uint32_t bits = *max_bits;
    *stop = bits >= 0x7f800000u;
    return *stop ? 0 : dp_fixed_exponent(bits, weight_log2);
}

template <typename T, int LAYOUT, int MODE, typename ACC>
__global__ void __launch_bounds__(ROI_THREADS)
    roi_align_backward(dp_roi_job job, const T *__restrict__ grad_out, ACC *__restrict__ acc,
                       const uint32_t *__restrict__ max_bits, int weight_log2, int64_t chunk)
{
    DP_SHARED(roi_head, head, );
    DP_SHARED(roi_runs, runs, );
    int stop;
    const int exponent = fixed_exponent_of(max_bits, weight_log2, &stop);
    if (stop) return; /* uniform across the grid, before any barrier */
    const int64_t bins = (int64_t)job.pooled_h * job.pooled_w, C = job.c;
    const int64_t H = job.level[0].h, W = job.level[0].w;
    const T *feat = static_cast<const T *>(job.level[0].features);
    int64_t lo, hi;
    chunk_range(C, chunk, &lo, &hi);
    const int64_t channels = hi > lo ? hi - lo : 0, items = channels * bins;
    for (int64_t r = blockIdx.x; r < job.num_rois; r += gridDim.x) {
        roi_setup(job, r, head, runs);
        for (int64_t it = threadIdx.x; it < items; it += blockDim.x) {
            int64_t c, bin, o, plane, sy, sx;
            if (LAYOUT == DETPOST_NCHW) {
                c = lo + it / bins, bin = it % bins;
                o = (r * C + c) * bins + bin;
                plane = (head.image * C + c) * H * W, sy = W, sx = 1;
            } else {
                bin = it / channels, c = lo + it % channels;
                o = (r * bins + bin) * C + c;
                plane = head.image * H * W * C + c, sy = W * C, sx = C;
            }
            const T *base = MODE == DETPOST_ROI_MAX ? feat + plane : nullptr;
            const float g = to_float(grad_out[o]);
            const int p = (int)(bin / job.pooled_w), q = (int)(bin % job.pooled_w);
            if (head.use_table)
                align_bin_backward<T, MODE, true>(base, plane, sy, sx, g, head, runs, p, q, acc, exponent);
            else
                align_bin_backward<T, MODE, false>(base, plane, sy, sx, g, head, runs, p, q, acc, exponent);
        }
    }
}

/* ---- RoI Pool ---------------------------------------------------------------- */

/* (roi, channel, bin) of output element i. */
template <int LAYOUT>
__device__ __forceinline__ void decode_out(int64_t i, int64_t C, int64_t bins, int64_t *r, int64_t *c, int64_t *bin)
{
    *r = i / (C * bins);
    const int64_t rest = i % (C * bins);
    if (LAYOUT == DETPOST_NCHW) *c = rest / bins, *bin = rest % bins;
    else *bin = rest / C, *c = rest % C;
}

template <typename T, int LAYOUT>
__global__ void roi_pool_forward(dp_roi_job job, T *__restrict__ out, int32_t *__restrict__ argmax)
{
    const int64_t bins = (int64_t)job.pooled_h * job.pooled_w, C = job.c, total = job.num_rois * C * bins;
    const int64_t H = job.level[0].h, W = job.level[0].w;
    const T *feat = static_cast<const T *>(job.level[0].features);
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < total; i += (int64_t)gridDim.x * blockDim.x) {
        int64_t r, c, bin;
        decode_out<LAYOUT>(i, C, bins, &r, &c, &bin);
        const float *roi = job.rois + r * 5;
        float best = 0.0f;
        int64_t where = -1;
        if (dp_roi_row_valid(roi, job.n)) {
            const dp_roi_pool_axis ay = dp_roi_pool_make_axis(roi[2], roi[4], job.level[0].scale, job.pooled_h, H);
            const dp_roi_pool_axis ax = dp_roi_pool_make_axis(roi[1], roi[3], job.level[0].scale, job.pooled_w, W);
            int64_t ys, ye, xs, xe;
            dp_roi_pool_bin(&ay, bin / job.pooled_w, &ys, &ye);
            dp_roi_pool_bin(&ax, bin % job.pooled_w, &xs, &xe);
            if (ye > ys && xe > xs) best = -DP_FLT_MAX;
            const int64_t image = (int64_t)roi[0];
            const T *plane = LAYOUT == DETPOST_NCHW ? feat + (image * C + c) * H * W : feat + image * H * W * C + c;
            const int64_t sx = LAYOUT == DETPOST_NCHW ? 1 : C;
            for (int64_t y = ys; y < ye; ++y)
                for (int64_t x = xs; x < xe; ++x) {
                    const float v = to_float(plane[(y * W + x) * sx]);
                    if (v > best) {
                        best = v;
                        where = y * W + x;
                    }
                }
        }
        out[i] = from_float<T>(best);
        if (argmax != nullptr) argmax[i] = (int32_t)where;
    }
}

/* An argmax outside [-1, H * W) contributes nothing and is recorded in the
 * fault word (the CPU refuses it): checked even when a non-finite grad_out
 * leaves nothing else to do. */
template <typename T, int LAYOUT, typename ACC>
__global__ void roi_pool_backward(dp_roi_job job, const T *__restrict__ grad_out, const int32_t *__restrict__ argmax,
                                  ACC *__restrict__ acc, const uint32_t *__restrict__ max_bits, int weight_log2,
                                  unsigned long long *fault)
{
    int stop;
    const int exponent = fixed_exponent_of(max_bits, weight_log2, &stop);
    const int64_t bins = (int64_t)job.pooled_h * job.pooled_w, C = job.c, total = job.num_rois * C * bins;
    const int64_t H = job.level[0].h, W = job.level[0].w;
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < total; i += (int64_t)gridDim.x * blockDim.x) {
        const int64_t where = argmax[i];
        const bool on_map = where >= 0 && where < H * W;
        if (!on_map && where != -1) dp_record_fault(fault, i, DP_FAULT_ARGMAX);
        if (stop || !on_map) continue;
        int64_t r, c, bin;
        decode_out<LAYOUT>(i, C, bins, &r, &c, &bin);
        const float *roi = job.rois + r * 5;
        if (!dp_roi_row_valid(roi, job.n)) continue;
        const int64_t image = (int64_t)roi[0];
        const int64_t at = LAYOUT == DETPOST_NCHW ? (image * C + c) * H * W + where : (image * H * W + where) * C + c;
        scatter(acc, at, to_float(grad_out[i]), exponent);
    }
}

/* ---- backward plumbing ---------------------------------------------------------- */

/* max |grad_out| over the valid RoIs' rows of per_roi elements: an invalid
 * RoI contributes no gradient, so its values must not set the scale either. */
template <typename T>
__global__ void max_abs_bits(const T *__restrict__ v, int64_t count, const float *__restrict__ rois, int64_t n,
                             int64_t per_roi, uint32_t *__restrict__ max_bits)
{
    DP_SHARED(uint32_t, part, [ROI_THREADS / 32]);
    uint32_t m = 0;
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < count; i += (int64_t)gridDim.x * blockDim.x)
        if (dp_roi_row_valid(rois + i / per_roi * 5, n)) m = max(m, dp_float_bits(to_float(v[i])) & 0x7fffffffu);
    for (int d = 16; d > 0; d /= 2) m = max(m, __shfl_down_sync(0xffffffffu, m, d));
    if (threadIdx.x % 32 == 0) part[threadIdx.x / 32] = m;
    __syncthreads();
    if (threadIdx.x == 0) {
        for (int k = 1; k < ROI_THREADS / 32; ++k) m = max(m, part[k]);
        atomicMax(max_bits, m);
    }
}

template <typename T>
__global__ void fixed_to_grad(const int64_t *__restrict__ acc, const uint32_t *__restrict__ max_bits, int weight_log2,
                              int64_t n, T *__restrict__ out)
{
    int stop;
    const int exponent = fixed_exponent_of(max_bits, weight_log2, &stop);
    const int dtype = sizeof(T) == 2 ? DETPOST_F16 : DETPOST_F32;
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x)
        out[i] = from_float<T>(stop ? dp_bits_float(0x7fc00000u) : dp_from_fixed(acc[i], exponent, dtype));
}

__global__ void float_to_half_grad(const float *__restrict__ acc, int64_t n, uint16_t *__restrict__ out)
{
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x)
        out[i] = dp_float_to_half(acc[i]);
}

/* ---- row check ------------------------------------------------------------------ */

/* Every invalid row goes to the context's fault word (the smallest wins). */
__global__ void roi_flag_rows(const float *__restrict__ rois, int64_t num_rois, int64_t n,
                              unsigned long long *__restrict__ fault)
{
    for (int64_t r = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; r < num_rois; r += (int64_t)gridDim.x * blockDim.x)
        if (!dp_roi_row_valid(rois + r * 5, n)) dp_record_fault(fault, r, DP_FAULT_ROI_ROW);
}

__global__ void roi_check_rows(const float *__restrict__ rois, int64_t num_rois, int64_t n,
                               int64_t *__restrict__ first_invalid)
{
    DP_SHARED(long long, part, [ROI_THREADS / 32]);
    long long first = LLONG_MAX;
    for (int64_t r = threadIdx.x; r < num_rois; r += blockDim.x)
        if (!dp_roi_row_valid(rois + r * 5, n)) {
            first = r; /* rows rise along the loop: the first hit is this thread's smallest */
            break;
        }
    for (int d = 16; d > 0; d /= 2) {
        const long long other = __shfl_down_sync(0xffffffffu, first, d);
        first = other < first ? other : first;
    }
    if (threadIdx.x % 32 == 0) part[threadIdx.x / 32] = first;
    __syncthreads();
    if (threadIdx.x == 0) {
        for (int k = 1; k < ROI_THREADS / 32; ++k) first = part[k] < first ? part[k] : first;
        *first_invalid = first == LLONG_MAX ? -1 : (int64_t)first;
    }
}

/* The accumulator of a backward pass as the kernels see it. */
struct grad_target {
    float *as_float;              /* float atomics (grad_features or acc_float) */
    unsigned long long *as_fixed; /* fixed point */
};

} /* namespace */

/* Runs first in each RoI op: the kernels themselves skip invalid rows. */
detpost_status cuda_roi_flag_rows(detpost_ctx *ctx, const float *rois, int64_t num_rois, int64_t n)
{
    DP_CUDA_TRY(ctx, cudaSetDevice(ctx->device), "selecting the CUDA device"); /* the op's other calls rely on it */
    if (num_rois == 0) return DETPOST_OK;
    dp_launch_cfg cfg(dim3(dp_blocks_for(num_rois, ROI_THREADS)), dim3(ROI_THREADS), 0, dp_stream(ctx));
    DP_CUDA_TRY(ctx, DP_LAUNCH(roi_flag_rows, cfg, rois, num_rois, n, dp_fault_word(ctx)),
                "launching the RoI row check");
    return DETPOST_OK;
}

/* ---- launchers ------------------------------------------------------------------ */

static unsigned grid_for_rois(int64_t num_rois) { return (unsigned)(num_rois < 2147483647 ? num_rois : 2147483647); }

/* Chunk of channels (NCHW) or channel groups (NHWC) per block and the number
 * of chunks, within the grid's y limit. NHWC chunks are whole warps of groups
 * where there are that many, so each warp reads one bin's contiguous run. */
static void plan_chunks(int layout, int64_t units, int64_t bins, int64_t *chunk, unsigned *chunks)
{
    int64_t c = ROI_ITEMS_PER_BLOCK / bins;
    if (layout == DETPOST_NHWC) c = c / 32 * 32 > 32 ? c / 32 * 32 : 32;
    if (c < 1) c = 1;
    if (c > units) c = units > 0 ? units : 1;
    if ((units + c - 1) / c > 65535) c = (units + 65534) / 65535;
    *chunk = c;
    *chunks = (unsigned)((units + c - 1) / c > 0 ? (units + c - 1) / c : 1);
}

template <typename T, int LAYOUT, int MODE, int VEC>
static cudaError_t launch_align_forward(const dp_roi_job *job, void *out, int32_t *levels, cudaStream_t s)
{
    const int64_t bins = (int64_t)job->pooled_h * job->pooled_w;
    int64_t chunk;
    unsigned chunks;
    plan_chunks(LAYOUT, LAYOUT == DETPOST_NCHW ? job->c : job->c / VEC, bins, &chunk, &chunks);
    dp_launch_cfg cfg(dim3(grid_for_rois(job->num_rois), chunks), dim3(ROI_THREADS), 0, s);
    cfg.out(out, (size_t)(job->num_rois * job->c * bins) * sizeof(T));
    if (levels) cfg.out(levels, (size_t)job->num_rois * sizeof(int32_t));
    return DP_LAUNCH((roi_align_forward<T, LAYOUT, MODE, VEC>), cfg, *job, static_cast<T *>(out), levels, chunk);
}

/* The widest vector (bytes <= 16) that divides the channels and every base
 * pointer's alignment: NHWC rows of channels then load in whole vectors. */
static int nhwc_vector(const dp_roi_job *job, const void *out, int elem_bytes)
{
    for (int vec = 16 / elem_bytes; vec > 1; vec /= 2) {
        const uintptr_t bytes = (uintptr_t)(vec * elem_bytes);
        int ok = job->c % vec == 0 && (uintptr_t)out % bytes == 0;
        for (int i = 0; i < job->num_levels; ++i) ok = ok && (uintptr_t)job->level[i].features % bytes == 0;
        if (ok) return vec;
    }
    return 1;
}

template <typename T, int MODE>
static cudaError_t align_forward_for(const dp_roi_job *job, void *out, int32_t *levels, cudaStream_t s)
{
    if (job->layout == DETPOST_NCHW) return launch_align_forward<T, DETPOST_NCHW, MODE, 1>(job, out, levels, s);
    switch (nhwc_vector(job, out, (int)sizeof(T))) {
    case 8:
        if constexpr (sizeof(T) == 2) return launch_align_forward<T, DETPOST_NHWC, MODE, 8>(job, out, levels, s);
        break;
    case 4: return launch_align_forward<T, DETPOST_NHWC, MODE, 4>(job, out, levels, s);
    case 2: return launch_align_forward<T, DETPOST_NHWC, MODE, 2>(job, out, levels, s);
    default: break;
    }
    return launch_align_forward<T, DETPOST_NHWC, MODE, 1>(job, out, levels, s);
}

/* Whether the NCHW kernel that reads along image rows takes the job: a
 * fixed grid whose sample columns and rows each fit a warp, and images
 * (c planes) small enough for 32-bit offsets. */
static int rows_fit(const dp_roi_job *job)
{
    if (job->layout != DETPOST_NCHW || job->sampling_ratio < 1 || job->c < 1) return 0;
    if ((int64_t)job->pooled_w * job->sampling_ratio > ROWS_LANES ||
        (int64_t)job->pooled_h * job->sampling_ratio > ROWS_LANES)
        return 0;
    for (int i = 0; i < job->num_levels; ++i)
        if (job->level[i].h * job->level[i].w > (int64_t)UINT32_MAX / job->c) return 0;
    return 1;
}

static rows_plan plan_rows(const dp_roi_job *job)
{
    rows_plan plan;
    plan.ratio = job->sampling_ratio;
    plan.lanes = 1;
    while (plan.lanes < job->pooled_w * plan.ratio) plan.lanes *= 2;
    plan.channels = job->c < ROWS_CHANNELS ? job->c : ROWS_CHANNELS;
    plan.channel_chunks = (job->c + plan.channels - 1) / plan.channels;
    const int64_t full = job->num_rois / ROWS_SORT, rest = job->num_rois % ROWS_SORT;
    plan.items = (full * (ROWS_SORT / ROWS_WARPS) + (rest + ROWS_WARPS - 1) / ROWS_WARPS) * plan.channel_chunks;
    return plan;
}

/* One block per multiprocessor: each sorts its RoIs once (per sort chunk)
 * and then takes every gridDim.x-th item. */
template <typename T, int MODE, int R>
static cudaError_t launch_rows(const dp_roi_job *job, const rows_plan &plan, int sms, void *out, int32_t *levels,
                               cudaStream_t s)
{
    const int64_t blocks = plan.items < sms ? plan.items : sms;
    dp_launch_cfg cfg(dim3((unsigned)blocks), dim3(ROWS_THREADS), 0, s);
    cfg.out(out, (size_t)(job->num_rois * job->c * job->pooled_h * job->pooled_w) * sizeof(T));
    if (levels) cfg.out(levels, (size_t)job->num_rois * sizeof(int32_t));
    return DP_LAUNCH((roi_align_nchw_rows<T, MODE, R>), cfg, *job, static_cast<T *>(out), levels, plan);
}

template <typename T, int MODE>
static cudaError_t rows_forward_for(const dp_roi_job *job, int sms, void *out, int32_t *levels, cudaStream_t s)
{
    const rows_plan plan = plan_rows(job);
    return plan.ratio == 2 ? launch_rows<T, MODE, 2>(job, plan, sms, out, levels, s)
                           : launch_rows<T, MODE, 0>(job, plan, sms, out, levels, s);
}

detpost_status cuda_roi_align(detpost_ctx *ctx, const dp_roi_job *job, void *out, int32_t *levels)
{
    const detpost_status flagged = cuda_roi_flag_rows(ctx, job->rois, job->num_rois, job->n);
    if (flagged != DETPOST_OK) return flagged;
    cudaStream_t s = dp_stream(ctx);
    cudaError_t err;
    if (rows_fit(job)) {
        const int sms = ctx->multiprocessors;
        if (job->dtype == DETPOST_F32)
            err = job->mode == DETPOST_ROI_AVG ? rows_forward_for<float, DETPOST_ROI_AVG>(job, sms, out, levels, s)
                                               : rows_forward_for<float, DETPOST_ROI_MAX>(job, sms, out, levels, s);
        else
            err = job->mode == DETPOST_ROI_AVG
                      ? rows_forward_for<uint16_t, DETPOST_ROI_AVG>(job, sms, out, levels, s)
                      : rows_forward_for<uint16_t, DETPOST_ROI_MAX>(job, sms, out, levels, s);
        DP_CUDA_TRY(ctx, err, "launching the RoI Align kernel");
        return DETPOST_OK;
    }
    if (job->dtype == DETPOST_F32)
        err = job->mode == DETPOST_ROI_AVG ? align_forward_for<float, DETPOST_ROI_AVG>(job, out, levels, s)
                                           : align_forward_for<float, DETPOST_ROI_MAX>(job, out, levels, s);
    else
        err = job->mode == DETPOST_ROI_AVG ? align_forward_for<uint16_t, DETPOST_ROI_AVG>(job, out, levels, s)
                                           : align_forward_for<uint16_t, DETPOST_ROI_MAX>(job, out, levels, s);
    DP_CUDA_TRY(ctx, err, "launching the RoI Align kernel");
    return DETPOST_OK;
}

static grad_target target_of(const dp_roi_grad *g)
{
    grad_target t;
    t.as_fixed = reinterpret_cast<unsigned long long *>(g->acc_fixed);
    t.as_float = g->acc_fixed ? nullptr : g->acc_float ? g->acc_float : static_cast<float *>(g->grad_features);
    return t;
}

/* Clears the accumulator and, in deterministic mode, reduces max |grad_out|
 * (grad_out_elements of them, the job's RoIs' rows). */
template <typename T>
static detpost_status begin_backward(detpost_ctx *ctx, const dp_roi_job *job, const dp_roi_grad *g,
                                     const void *grad_out, int64_t grad_out_elements)
{
    cudaStream_t s = dp_stream(ctx);
    if (g->acc_fixed) {
        DP_CUDA_TRY(ctx, cudaMemsetAsync(g->acc_fixed, 0, (size_t)g->elements * sizeof(int64_t), s),
                    "clearing the gradient accumulator");
        DP_CUDA_TRY(ctx, cudaMemsetAsync(g->max_bits, 0, sizeof(uint32_t), s), "clearing the gradient scale");
        if (grad_out_elements > 0) {
            dp_launch_cfg cfg(dim3(dp_blocks_for(grad_out_elements, ROI_THREADS)), dim3(ROI_THREADS), 0, s);
            DP_CUDA_TRY(ctx,
                        DP_LAUNCH(max_abs_bits<T>, cfg, static_cast<const T *>(grad_out), grad_out_elements,
                                  job->rois, job->n, grad_out_elements / job->num_rois, g->max_bits),
                        "launching the gradient scale reduction");
        }
    } else if (g->acc_float) {
        DP_CUDA_TRY(ctx, cudaMemsetAsync(g->acc_float, 0, (size_t)g->elements * sizeof(float), s),
                    "clearing the gradient accumulator");
    } else {
        DP_CUDA_TRY(ctx, cudaMemsetAsync(g->grad_features, 0, (size_t)g->elements * sizeof(float), s),
                    "clearing grad_features");
    }
    return DETPOST_OK;
}

/* Turns the accumulator into grad_features where they differ. */
template <typename T>
static detpost_status finish_backward(detpost_ctx *ctx, const dp_roi_grad *g)
{
    cudaStream_t s = dp_stream(ctx);
    dp_launch_cfg cfg(dim3(dp_blocks_for(g->elements, ROI_THREADS)), dim3(ROI_THREADS), 0, s);
    cfg.out(g->grad_features, (size_t)g->elements * sizeof(T));
    if (g->acc_fixed)
        DP_CUDA_TRY(ctx,
                    DP_LAUNCH(fixed_to_grad<T>, cfg, g->acc_fixed, g->max_bits, g->weight_log2, g->elements,
                              static_cast<T *>(g->grad_features)),
                    "launching the gradient conversion");
    else if (g->acc_float)
        DP_CUDA_TRY(ctx,
                    DP_LAUNCH(float_to_half_grad, cfg, g->acc_float, g->elements,
                              static_cast<uint16_t *>(g->grad_features)),
                    "launching the gradient conversion");
    return DETPOST_OK;
}

template <typename T, int LAYOUT, int MODE>
static cudaError_t launch_align_backward(const dp_roi_job *job, const void *grad_out, const dp_roi_grad *g,
                                         cudaStream_t s)
{
    const int64_t bins = (int64_t)job->pooled_h * job->pooled_w;
    int64_t chunk;
    unsigned chunks;
    plan_chunks(LAYOUT, job->c, bins, &chunk, &chunks);
    dp_launch_cfg cfg(dim3(grid_for_rois(job->num_rois), chunks), dim3(ROI_THREADS), 0, s);
    const grad_target t = target_of(g);
    const T *go = static_cast<const T *>(grad_out);
    if (t.as_fixed)
        return DP_LAUNCH((roi_align_backward<T, LAYOUT, MODE, unsigned long long>), cfg, *job, go, t.as_fixed,
                         (const uint32_t *)g->max_bits, g->weight_log2, chunk);
    return DP_LAUNCH((roi_align_backward<T, LAYOUT, MODE, float>), cfg, *job, go, t.as_float,
                     (const uint32_t *)nullptr, g->weight_log2, chunk);
}

template <typename T>
static detpost_status align_backward_for(detpost_ctx *ctx, const dp_roi_job *job, const void *grad_out,
                                         const dp_roi_grad *g)
{
    const int64_t grad_out_elements = job->num_rois * job->c * job->pooled_h * job->pooled_w;
    detpost_status st = begin_backward<T>(ctx, job, g, grad_out, grad_out_elements);
    if (st != DETPOST_OK) return st;
    if (grad_out_elements > 0) {
        cudaStream_t s = dp_stream(ctx);
        cudaError_t err;
        const int nchw = job->layout == DETPOST_NCHW, avg = job->mode == DETPOST_ROI_AVG;
        if (nchw)
            err = avg ? launch_align_backward<T, DETPOST_NCHW, DETPOST_ROI_AVG>(job, grad_out, g, s)
                      : launch_align_backward<T, DETPOST_NCHW, DETPOST_ROI_MAX>(job, grad_out, g, s);
        else
            err = avg ? launch_align_backward<T, DETPOST_NHWC, DETPOST_ROI_AVG>(job, grad_out, g, s)
                      : launch_align_backward<T, DETPOST_NHWC, DETPOST_ROI_MAX>(job, grad_out, g, s);
        DP_CUDA_TRY(ctx, err, "launching the RoI Align backward kernel");
    }
    return finish_backward<T>(ctx, g);
}

detpost_status cuda_roi_align_backward(detpost_ctx *ctx, const dp_roi_job *job, const void *grad_out,
                                       const dp_roi_grad *g)
{
    const detpost_status flagged = cuda_roi_flag_rows(ctx, job->rois, job->num_rois, job->n);
    if (flagged != DETPOST_OK) return flagged;
    return job->dtype == DETPOST_F32 ? align_backward_for<float>(ctx, job, grad_out, g)
                                     : align_backward_for<uint16_t>(ctx, job, grad_out, g);
}

template <typename T, int LAYOUT>
static cudaError_t launch_pool_forward(const dp_roi_job *job, void *out, int32_t *argmax, cudaStream_t s)
{
    const int64_t n = job->num_rois * job->c * job->pooled_h * job->pooled_w;
    dp_launch_cfg cfg(dim3(dp_blocks_for(n, ROI_THREADS)), dim3(ROI_THREADS), 0, s);
    cfg.out(out, (size_t)n * sizeof(T));
    if (argmax) cfg.out(argmax, (size_t)n * sizeof(int32_t));
    return DP_LAUNCH((roi_pool_forward<T, LAYOUT>), cfg, *job, static_cast<T *>(out), argmax);
}

detpost_status cuda_roi_pool(detpost_ctx *ctx, const dp_roi_job *job, void *out, int32_t *argmax)
{
    const detpost_status flagged = cuda_roi_flag_rows(ctx, job->rois, job->num_rois, job->n);
    if (flagged != DETPOST_OK) return flagged;
    cudaStream_t s = dp_stream(ctx);
    const int nchw = job->layout == DETPOST_NCHW;
    cudaError_t err;
    if (job->dtype == DETPOST_F32)
        err = nchw ? launch_pool_forward<float, DETPOST_NCHW>(job, out, argmax, s)
                   : launch_pool_forward<float, DETPOST_NHWC>(job, out, argmax, s);
    else
        err = nchw ? launch_pool_forward<uint16_t, DETPOST_NCHW>(job, out, argmax, s)
                   : launch_pool_forward<uint16_t, DETPOST_NHWC>(job, out, argmax, s);
    DP_CUDA_TRY(ctx, err, "launching the RoI Pool kernel");
    return DETPOST_OK;
}

template <typename T, int LAYOUT>
static cudaError_t launch_pool_backward(const dp_roi_job *job, const void *grad_out, const int32_t *argmax,
                                        const dp_roi_grad *g, int64_t n, cudaStream_t s, unsigned long long *fault)
{
    dp_launch_cfg cfg(dim3(dp_blocks_for(n, ROI_THREADS)), dim3(ROI_THREADS), 0, s);
    const grad_target t = target_of(g);
    const T *go = static_cast<const T *>(grad_out);
    if (t.as_fixed)
        return DP_LAUNCH((roi_pool_backward<T, LAYOUT, unsigned long long>), cfg, *job, go, argmax, t.as_fixed,
                         (const uint32_t *)g->max_bits, g->weight_log2, fault);
    return DP_LAUNCH((roi_pool_backward<T, LAYOUT, float>), cfg, *job, go, argmax, t.as_float,
                     (const uint32_t *)nullptr, g->weight_log2, fault);
}

template <typename T>
static detpost_status pool_backward_for(detpost_ctx *ctx, const dp_roi_job *job, const void *grad_out,
                                        const int32_t *argmax, const dp_roi_grad *g)
{
    const int64_t n = job->num_rois * job->c * job->pooled_h * job->pooled_w;
    detpost_status st = begin_backward<T>(ctx, job, g, grad_out, n);
    if (st != DETPOST_OK) return st;
    if (n > 0) {
        cudaStream_t s = dp_stream(ctx);
        unsigned long long *fault = dp_fault_word(ctx);
        const cudaError_t err = job->layout == DETPOST_NCHW
                                    ? launch_pool_backward<T, DETPOST_NCHW>(job, grad_out, argmax, g, n, s, fault)
                                    : launch_pool_backward<T, DETPOST_NHWC>(job, grad_out, argmax, g, n, s, fault);
        DP_CUDA_TRY(ctx, err, "launching the RoI Pool backward kernel");
    }
    return finish_backward<T>(ctx, g);
}

detpost_status cuda_roi_pool_backward(detpost_ctx *ctx, const dp_roi_job *job, const void *grad_out,
                                      const int32_t *argmax, const dp_roi_grad *g)
{
    const detpost_status flagged = cuda_roi_flag_rows(ctx, job->rois, job->num_rois, job->n);
    if (flagged != DETPOST_OK) return flagged;
    return job->dtype == DETPOST_F32 ? pool_backward_for<float>(ctx, job, grad_out, argmax, g)
                                     : pool_backward_for<uint16_t>(ctx, job, grad_out, argmax, g);
}

detpost_status cuda_roi_check(detpost_ctx *ctx, const float *rois, int64_t num_rois, int64_t n,
                              int64_t *first_invalid)
{
    DP_CUDA_TRY(ctx, cudaSetDevice(ctx->device), "selecting the CUDA device");
    dp_launch_cfg cfg(dim3(1), dim3(ROI_THREADS), 0, dp_stream(ctx));
    cfg.out(first_invalid, sizeof(int64_t));
    DP_CUDA_TRY(ctx, DP_LAUNCH(roi_check_rows, cfg, rois, num_rois, n, first_invalid), "launching the RoI row check");
    return DETPOST_OK;
}
