/*
 * Box coding and Cascade R-CNN stage resampling on the GPU.
 *
 * Encode and decode are one thread per row over the shared math of
 * host/box_coder.h, whose exp and log are the library's own, so the boxes
 * are bit-identical to the CPU reference's.
 *
 * Resampling enqueues up to three kernels and stores no [B, P, G] table:
 *  1. cascade_assign, grid (proposal tiles, images): a block stages
 *     GT_TILE ground-truth boxes of its image in shared memory and each
 *     thread keeps its proposal's best IoU (strict >, so ties stay with the
 *     lower index). With low-quality matching the block also folds each
 *     ground truth's best IoU into shared memory and then into global memory
 *     with atomicMax on the float's bits (IoU is never negative or NaN, and
 *     the bits of non-negative floats order like their values), so the
 *     result does not depend on the order of the atomics.
 *  2. cascade_low_quality (only with match_low_quality), same grid: the IoU
 *     again, by the same function, hence bit-identical, compared for
 *     equality with each ground truth's best; the highest index that matches
 *     wins, as in mmdetection's loop.
 *  3. cascade_sample, one block per image: counts positives and negatives,
 *     then finds each class's k-th smallest 32-bit sampling key with a
 *     four-pass radix select (8-bit digits, shared histogram) instead of a
 *     sort, then walks the candidates in ascending order, a block at a time,
 *     with one 64-bit block scan of four packed counters (per class: keys
 *     below the threshold, keys equal to it). That places every chosen row
 *     in candidate order and gives the threshold's ties to the lowest
 *     indices: exactly the k smallest (key, index) pairs that the CPU
 *     reference finds by sorting.
 *
 * Refine is a stable compaction in three launches: kept rows per tile, one
 * block scans the tile counts (and writes num_next), each tile scatters.
 * The IoU histogram bins in shared memory and adds to the output with
 * 64-bit integer atomics (exact, so order-independent).
 */
#include "dp_cuda.cuh"
#include "../host/box_coder.h"
#include "../host/cascade.h"
#include "../host/cascade_math.h"

#define FULL_MASK 0xffffffffu
#define CODER_THREADS 256
#define ASSIGN_THREADS 256
#define GT_TILE 256
#define SAMPLE_THREADS 512
#define SAMPLE_WARPS (SAMPLE_THREADS / 32)
#define REFINE_THREADS 256
#define REFINE_TILE 1024
#define SCAN_THREADS 256
#define MAX_GRID_Y 65535u
#define MAX_IMAGE_BLOCKS (1u << 20)

/* ---- block-wide helpers ------------------------------------------------- */

/* Sum over the block; every thread gets it. scratch holds one value per warp. */
__device__ int64_t block_sum(int64_t v, int64_t *scratch)
{
    for (int d = 16; d > 0; d /= 2) v += __shfl_xor_sync(FULL_MASK, v, d);
    const int warp = threadIdx.x / 32, warps = blockDim.x / 32;
    __syncthreads(); /* scratch may still be read by an earlier call */
    if (threadIdx.x % 32 == 0) scratch[warp] = v;
    __syncthreads();
    int64_t total = 0;
    for (int w = 0; w < warps; ++w) total += scratch[w];
    return total;
}

/* Exclusive prefix sum over the block in thread order; *total gets the sum. */
__device__ uint64_t block_exclusive_scan(uint64_t v, uint64_t *scratch, uint64_t *total)
{
    const int lane = threadIdx.x % 32, warp = threadIdx.x / 32, warps = blockDim.x / 32;
    uint64_t incl = v;
    for (int d = 1; d < 32; d *= 2) {
        const uint64_t y = __shfl_up_sync(FULL_MASK, incl, d);
        if (lane >= d) incl += y;
    }
    __syncthreads();
    if (lane == 31) scratch[warp] = incl;
    __syncthreads();
    uint64_t before = 0, sum = 0;
    for (int w = 0; w < warps; ++w) {
        if (w < warp) before += scratch[w];
        sum += scratch[w];
    }
    *total = sum;
    return before + incl - v;
}

/* ---- encode / decode ---------------------------------------------------- */

__global__ void box_encode_kernel(detpost_box_coder coder, const float *__restrict__ proposals,
                                  const float *__restrict__ targets, int64_t n, float *__restrict__ deltas)
{
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x)
        dp_box_encode(&coder, proposals + i * 4, targets + i * 4, deltas + i * 4);
}

__global__ void box_decode_kernel(detpost_box_coder coder, dp_decode_args a, float *__restrict__ out)
{
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < a.n; i += (int64_t)gridDim.x * blockDim.x)
        dp_decode_row(&coder, a.rois + i * 5, dp_row_deltas(a.deltas, a.labels, a.num_classes, i), a.image_sizes,
                      a.num_images, out + i * 5);
}

detpost_status cuda_box_encode(detpost_ctx *ctx, const detpost_box_coder *coder, const float *proposals,
                               const float *targets, int64_t n, float *deltas)
{
    DP_CUDA_TRY(ctx, cudaSetDevice(ctx->device), "selecting the CUDA device");
    dp_launch_cfg cfg(dim3(dp_blocks_for(n, CODER_THREADS)), dim3(CODER_THREADS), 0, dp_stream(ctx));
    cfg.out(deltas, (size_t)n * 4 * sizeof(float));
    DP_CUDA_TRY(ctx, DP_LAUNCH(box_encode_kernel, cfg, *coder, proposals, targets, n, deltas),
                "launching the box encode kernel");
    return DETPOST_OK;
}

detpost_status cuda_box_decode(detpost_ctx *ctx, const detpost_box_coder *coder, const dp_decode_args *a, float *out)
{
    DP_CUDA_TRY(ctx, cudaSetDevice(ctx->device), "selecting the CUDA device");
    dp_launch_cfg cfg(dim3(dp_blocks_for(a->n, CODER_THREADS)), dim3(CODER_THREADS), 0, dp_stream(ctx));
    cfg.out(out, (size_t)a->n * 5 * sizeof(float));
    DP_CUDA_TRY(ctx, DP_LAUNCH(box_decode_kernel, cfg, *coder, *a, out), "launching the box decode kernel");
    return DETPOST_OK;
}

/* ---- best IoU of proposals against tiles of ground truth ---------------- */

__device__ bool counts_in_range(int32_t np, int32_t ng, int64_t max_proposals, int64_t max_gt)
{
    return np >= 0 && np <= max_proposals && ng >= 0 && ng <= max_gt;
}

/* The block's proposals (box, active) against the image's ng ground-truth
 * boxes, GT_TILE at a time through shared memory. Returns the best IoU
 * (0 without ground truth) and its index in *arg (-1 without). With GT_MAX,
 * folds each ground truth's best IoU into gt_max[ng] (float bits). Every
 * thread of the block must call it. */
template <bool GT_MAX>
__device__ float best_overlap_tiled(const float *__restrict__ gt, int32_t ng, const float *box, bool active,
                                    float offset, float (*tile)[4], unsigned *tile_max, unsigned *gt_max, int32_t *arg)
{
    float best = -1.0f;
    *arg = -1;
    for (int32_t t0 = 0; t0 < ng; t0 += GT_TILE) {
        const int rows = ng - t0 < GT_TILE ? ng - t0 : GT_TILE;
        __syncthreads(); /* the previous tile is no longer read */
        for (int k = threadIdx.x; k < rows * 4; k += blockDim.x) tile[k / 4][k % 4] = gt[(int64_t)t0 * 4 + k];
        if (GT_MAX)
            for (int k = threadIdx.x; k < rows; k += blockDim.x) tile_max[k] = 0u;
        __syncthreads();
        if (active) {
            for (int g = 0; g < rows; ++g) {
                const float iou = dp_overlap(box[0], box[1], box[2], box[3], tile[g][0], tile[g][1], tile[g][2],
                                             tile[g][3], DP_MODE_IOU, offset);
                if (iou > best) {
                    best = iou;
                    *arg = t0 + g;
                }
                if (GT_MAX) {
                    const unsigned bits = __float_as_uint(iou);
                    if (bits > tile_max[g]) atomicMax(&tile_max[g], bits);
                }
            }
        }
        if (GT_MAX) {
            __syncthreads();
            for (int k = threadIdx.x; k < rows; k += blockDim.x)
                if (tile_max[k] != 0u) atomicMax(&gt_max[t0 + k], tile_max[k]);
        }
    }
    return ng > 0 ? best : 0.0f;
}

/* The proposal of image img that this thread handles in the block's tile of
 * proposals starting at `first` (blocks along x stride over the image's
 * proposals, a tile at a time); inactive past the image's count. */
struct proposal_slot {
    int64_t i;
    bool active;
    float box[4];
};
__device__ proposal_slot load_proposal(const dp_resample_args &a, int64_t img, int32_t np, int64_t first)
{
    proposal_slot s;
    s.i = first + threadIdx.x;
    s.active = s.i < np;
    for (int k = 0; k < 4; ++k) s.box[k] = s.active ? a.proposals[(img * a.max_proposals + s.i) * 4 + k] : 0.0f;
    return s;
}

template <bool GT_MAX>
__global__ void cascade_assign(dp_resample_args a, float offset, float *__restrict__ best_iou,
                               int32_t *__restrict__ best_gt, unsigned *__restrict__ gt_max)
{
    DP_SHARED(float, tile, [GT_TILE][4]);
    DP_SHARED(unsigned, tile_max, [GT_TILE]);
    for (int64_t img = blockIdx.y; img < a.batch; img += gridDim.y) {
        const int32_t np = a.num_proposals[img], ng = a.num_gt[img];
        if (!counts_in_range(np, ng, a.max_proposals, a.max_gt)) continue;
        for (int64_t first = (int64_t)blockIdx.x * blockDim.x; first < np; first += (int64_t)gridDim.x * blockDim.x) {
            const proposal_slot slot = load_proposal(a, img, np, first);
            int32_t arg;
            const float best =
                best_overlap_tiled<GT_MAX>(a.gt_boxes + img * a.max_gt * 4, ng, slot.box, slot.active, offset, tile,
                                           tile_max, GT_MAX ? gt_max + img * a.max_gt : nullptr, &arg);
            if (slot.active) {
                best_iou[img * a.max_proposals + slot.i] = best;
                best_gt[img * a.max_proposals + slot.i] = arg;
            }
        }
    }
}

__global__ void cascade_low_quality(dp_resample_args a, float offset, float min_pos_iou,
                                    const unsigned *__restrict__ gt_max, int32_t *__restrict__ low_quality_gt)
{
    DP_SHARED(float, tile, [GT_TILE][4]);
    DP_SHARED(float, tile_max, [GT_TILE]);
    for (int64_t img = blockIdx.y; img < a.batch; img += gridDim.y) {
        const int32_t np = a.num_proposals[img], ng = a.num_gt[img];
        if (!counts_in_range(np, ng, a.max_proposals, a.max_gt)) continue;
        const float *gt = a.gt_boxes + img * a.max_gt * 4;
        for (int64_t first = (int64_t)blockIdx.x * blockDim.x; first < np; first += (int64_t)gridDim.x * blockDim.x) {
            const proposal_slot slot = load_proposal(a, img, np, first);
            const float *box = slot.box;
            int32_t claimed = -1;
            for (int32_t t0 = 0; t0 < ng; t0 += GT_TILE) {
                const int rows = ng - t0 < GT_TILE ? ng - t0 : GT_TILE;
                __syncthreads();
                for (int k = threadIdx.x; k < rows * 4; k += blockDim.x) tile[k / 4][k % 4] = gt[(int64_t)t0 * 4 + k];
                for (int k = threadIdx.x; k < rows; k += blockDim.x)
                    tile_max[k] = __uint_as_float(gt_max[img * a.max_gt + t0 + k]);
                __syncthreads();
                if (!slot.active) continue;
                for (int g = 0; g < rows; ++g) {
                    const float m = tile_max[g];
                    if (m >= min_pos_iou && dp_overlap(box[0], box[1], box[2], box[3], tile[g][0], tile[g][1],
                                                       tile[g][2], tile[g][3], DP_MODE_IOU, offset) == m)
                        claimed = t0 + g;
                }
            }
            if (slot.active) low_quality_gt[img * a.max_proposals + slot.i] = claimed;
        }
    }
}

/* ---- sampling ------------------------------------------------------------ */

/* What the sampling kernel knows of one image. */
struct sample_image {
    const detpost_stage_params *p;
    const dp_resample_args *a;
    const float *best_iou;
    const int32_t *best_gt, *low_quality_gt; /* this image's rows; low_quality_gt NULL when unused */
    int64_t img;
    int32_t num_gt;
    int64_t gt_rows, candidates;
};

struct candidate {
    int cls;
    int32_t gt;
    uint32_t key;
};

__device__ candidate evaluate(const sample_image &s, int64_t c)
{
    candidate r;
    if (c < s.gt_rows) {
        r.cls = DP_POSITIVE;
        r.gt = (int32_t)c;
    } else {
        const int64_t i = c - s.gt_rows;
        r.cls = dp_proposal_class(s.best_iou[i], s.best_gt[i], s.low_quality_gt ? s.low_quality_gt[i] : -1,
                                  s.num_gt, s.p, &r.gt);
    }
    r.key = dp_sample_key(s.p->seed, s.img, s.p->stage, c);
    return r;
}

/* The `take` smallest keys of class `cls` (of `available`) are those below
 * *threshold plus the first *quota (in candidate order) equal to it. */
__device__ void select_threshold(const sample_image &s, int cls, int64_t take, int64_t available, unsigned *hist,
                                 int64_t *state, uint32_t *threshold, int64_t *quota)
{
    if (take >= available) { /* everything: no key is above the largest */
        *threshold = 0xffffffffu;
        *quota = INT64_MAX;
        return;
    }
    uint32_t prefix = 0u, mask = 0u;
    int64_t remaining = take;
    if (take == 0) {
        *threshold = 0u;
        *quota = 0;
        return;
    }
    for (int shift = 24; shift >= 0; shift -= 8) {
        __syncthreads(); /* hist and state of the previous pass are read */
        for (int k = threadIdx.x; k < 256; k += blockDim.x) hist[k] = 0u;
        __syncthreads();
        for (int64_t c = threadIdx.x; c < s.candidates; c += blockDim.x) {
            const candidate x = evaluate(s, c);
            if (x.cls == cls && (x.key & mask) == prefix) atomicAdd(&hist[(x.key >> shift) & 0xffu], 1u);
        }
        __syncthreads();
        if (threadIdx.x < 32) {
            const int lane = threadIdx.x;
            int64_t sum = 0;
            for (int j = 0; j < 8; ++j) sum += hist[lane * 8 + j];
            int64_t incl = sum;
            for (int d = 1; d < 32; d *= 2) {
                const int64_t y = __shfl_up_sync(FULL_MASK, incl, d);
                if (lane >= d) incl += y;
            }
            int64_t acc = incl - sum;
            if (acc < remaining && remaining <= incl) { /* exactly one lane holds the digit */
                for (int j = 0; j < 8; ++j) {
                    const int64_t h = hist[lane * 8 + j];
                    if (acc + h >= remaining) {
                        state[0] = lane * 8 + j;
                        state[1] = remaining - acc;
                        break;
                    }
                    acc += h;
                }
            }
        }
        __syncthreads();
        prefix |= (uint32_t)state[0] << shift;
        mask |= 0xffu << shift;
        remaining = state[1];
    }
    *threshold = prefix;
    *quota = remaining;
}

__device__ void write_padding_row(const dp_resample_args &a, int64_t r)
{
    float *roi = a.rois + r * 5;
    roi[0] = -1.0f;
    roi[1] = roi[2] = roi[3] = roi[4] = 0.0f;
    a.labels[r] = -1;
    float *t = a.targets + r * 4;
    t[0] = t[1] = t[2] = t[3] = 0.0f;
    a.max_iou[r] = 0.0f;
    a.is_gt[r] = 0;
}

__device__ void write_sample_row(const sample_image &s, int64_t row, int64_t c, const candidate &x)
{
    const dp_resample_args &a = *s.a;
    const int64_t r = s.img * s.p->num_samples + row;
    const float *gt = a.gt_boxes + s.img * a.max_gt * 4;
    const float *box = c < s.gt_rows ? gt + c * 4 : a.proposals + (s.img * a.max_proposals + (c - s.gt_rows)) * 4;
    float b[4] = {box[0], box[1], box[2], box[3]};
    float *roi = a.rois + r * 5;
    roi[0] = (float)s.img;
    roi[1] = b[0], roi[2] = b[1], roi[3] = b[2], roi[4] = b[3];
    float *t = a.targets + r * 4;
    if (x.cls == DP_POSITIVE) {
        a.labels[r] = a.gt_labels[s.img * a.max_gt + x.gt];
        float d[4];
        dp_box_encode(&s.p->coder, b, gt + (int64_t)x.gt * 4, d);
        t[0] = d[0], t[1] = d[1], t[2] = d[2], t[3] = d[3];
    } else {
        a.labels[r] = s.p->background_label;
        t[0] = t[1] = t[2] = t[3] = 0.0f;
    }
    a.max_iou[r] = c < s.gt_rows ? 1.0f : s.best_iou[c - s.gt_rows];
    a.is_gt[r] = (uint8_t)(c < s.gt_rows);
}

__device__ int64_t packed_field(uint64_t v, int k) { return (int64_t)((v >> (16 * k)) & 0xffffu); }

__global__ void __launch_bounds__(SAMPLE_THREADS)
    cascade_sample(detpost_stage_params p, dp_resample_args a, int64_t positive_quota, const float *best_iou,
                   const int32_t *best_gt, const int32_t *low_quality_gt, unsigned long long *fault)
{
    DP_SHARED(unsigned, hist, [256]);
    DP_SHARED(int64_t, state, [2]);
    DP_SHARED(int64_t, sums, [SAMPLE_WARPS]);
    DP_SHARED(uint64_t, scan, [SAMPLE_WARPS]);
    const int64_t rows_per_image = p.num_samples;
    for (int64_t img = blockIdx.x; img < a.batch; img += gridDim.x) {
        const int32_t np = a.num_proposals[img], ng = a.num_gt[img];
        if (!counts_in_range(np, ng, a.max_proposals, a.max_gt)) {
            for (int64_t row = threadIdx.x; row < rows_per_image; row += blockDim.x)
                write_padding_row(a, img * rows_per_image + row);
            if (threadIdx.x == 0) {
                a.num_samples[img] = a.num_pos[img] = -1;
                dp_record_fault(fault, img, DP_FAULT_COUNT);
            }
            continue;
        }
        sample_image s;
        s.p = &p;
        s.a = &a;
        s.best_iou = best_iou + img * a.max_proposals;
        s.best_gt = best_gt + img * a.max_proposals;
        s.low_quality_gt = low_quality_gt ? low_quality_gt + img * a.max_proposals : nullptr;
        s.img = img;
        s.num_gt = ng;
        s.gt_rows = p.add_gt_as_proposals ? ng : 0;
        s.candidates = s.gt_rows + np;

        int64_t pos = 0, neg = 0;
        for (int64_t c = threadIdx.x; c < s.candidates; c += blockDim.x) {
            const candidate x = evaluate(s, c);
            pos += x.cls == DP_POSITIVE;
            neg += x.cls == DP_NEGATIVE;
        }
        pos = block_sum(pos, sums);
        neg = block_sum(neg, sums);
        const int64_t take_pos = pos < positive_quota ? pos : positive_quota;
        const int64_t neg_quota = dp_negative_quota(&p, take_pos);
        const int64_t take_neg = neg < neg_quota ? neg : neg_quota;

        uint32_t pos_key, neg_key;
        int64_t pos_ties, neg_ties;
        select_threshold(s, DP_POSITIVE, take_pos, pos, hist, state, &pos_key, &pos_ties);
        select_threshold(s, DP_NEGATIVE, take_neg, neg, hist, state, &neg_key, &neg_ties);

        /* counters: 0 positives below pos_key, 1 positives at it, 2 and 3 the same for negatives */
        int64_t run[4] = {0, 0, 0, 0};
        for (int64_t c0 = 0; c0 < s.candidates; c0 += blockDim.x) {
            const int64_t c = c0 + threadIdx.x;
            candidate x = {DP_IGNORE, -1, 0u};
            uint64_t flags = 0;
            if (c < s.candidates) {
                x = evaluate(s, c);
                if (x.cls == DP_POSITIVE) flags = x.key < pos_key ? 1ull : x.key == pos_key ? 1ull << 16 : 0ull;
                if (x.cls == DP_NEGATIVE) flags = x.key < neg_key ? 1ull << 32 : x.key == neg_key ? 1ull << 48 : 0ull;
            }
            uint64_t total;
            const uint64_t before = block_exclusive_scan(flags, scan, &total);
            if (flags != 0) {
                const int k = x.cls == DP_POSITIVE ? 0 : 2;
                const int64_t ties = k == 0 ? pos_ties : neg_ties;
                const int64_t below = run[k] + packed_field(before, k), at = run[k + 1] + packed_field(before, k + 1);
                const bool is_below = packed_field(flags, k) != 0;
                if (is_below || at < ties)
                    write_sample_row(s, (k == 0 ? 0 : take_pos) + below + (at < ties ? at : ties), c, x);
            }
            for (int k = 0; k < 4; ++k) run[k] += packed_field(total, k);
        }
        for (int64_t row = take_pos + take_neg + threadIdx.x; row < rows_per_image; row += blockDim.x)
            write_padding_row(a, img * rows_per_image + row);
        if (threadIdx.x == 0) {
            a.num_samples[img] = (int32_t)(take_pos + take_neg);
            a.num_pos[img] = (int32_t)take_pos;
        }
    }
}

struct resample_ws {
    float *best_iou;         /* [B, P] */
    int32_t *best_gt;        /* [B, P] */
    int32_t *low_quality_gt; /* [B, P], match_low_quality only */
    unsigned *gt_max;        /* [B, G] float bits, match_low_quality only */
};

/* An empty buffer is NULL: a pointer at the end of the workspace is not
 * memory a kernel may be handed. */
static void *carve_or_null(dp_carver *c, size_t bytes, bool wanted)
{
    return wanted && bytes > 0 ? dp_carve(c, bytes) : nullptr;
}

static size_t resample_layout(dp_carver *c, const detpost_stage_params *p, int64_t batch, int64_t max_proposals,
                              int64_t max_gt, resample_ws *ws)
{
    const size_t rows = (size_t)(batch * max_proposals), gts = (size_t)(batch * max_gt);
    ws->best_iou = (float *)carve_or_null(c, rows * sizeof(float), true);
    ws->best_gt = (int32_t *)carve_or_null(c, rows * sizeof(int32_t), true);
    ws->low_quality_gt = (int32_t *)carve_or_null(c, rows * sizeof(int32_t), p->match_low_quality != 0);
    ws->gt_max = (unsigned *)carve_or_null(c, gts * sizeof(unsigned), p->match_low_quality != 0);
    return c->used;
}

size_t cuda_cascade_resample_workspace(const detpost_stage_params *p, int64_t batch, int64_t max_proposals,
                                       int64_t max_gt)
{
    dp_carver c = {nullptr, 0};
    resample_ws ws;
    return resample_layout(&c, p, batch, max_proposals, max_gt, &ws);
}

detpost_status cuda_cascade_resample(detpost_ctx *ctx, const detpost_stage_params *p, const dp_resample_args *a)
{
    DP_CUDA_TRY(ctx, cudaSetDevice(ctx->device), "selecting the CUDA device");
    void *base = nullptr;
    detpost_status st =
        dp_workspace(ctx, cuda_cascade_resample_workspace(p, a->batch, a->max_proposals, a->max_gt), &base);
    if (st != DETPOST_OK) return st;
    dp_carver c = {(char *)base, 0};
    resample_ws ws;
    resample_layout(&c, p, a->batch, a->max_proposals, a->max_gt, &ws);
    cudaStream_t s = dp_stream(ctx);
    const float offset = p->coder.offset;

    if (a->max_proposals > 0) {
        const dim3 grid(dp_blocks_for(a->max_proposals, ASSIGN_THREADS),
                        (unsigned)(a->batch < MAX_GRID_Y ? a->batch : MAX_GRID_Y));
        if (p->match_low_quality) {
            if (a->max_gt > 0)
                DP_CUDA_TRY(ctx, cudaMemsetAsync(ws.gt_max, 0, (size_t)(a->batch * a->max_gt) * sizeof(unsigned), s),
                            "clearing the ground-truth maxima");
            dp_launch_cfg cfg(grid, dim3(ASSIGN_THREADS), 0, s);
            DP_CUDA_TRY(ctx, DP_LAUNCH(cascade_assign<true>, cfg, *a, offset, ws.best_iou, ws.best_gt, ws.gt_max),
                        "launching the assignment kernel");
            dp_launch_cfg lq(grid, dim3(ASSIGN_THREADS), 0, s);
            DP_CUDA_TRY(ctx, DP_LAUNCH(cascade_low_quality, lq, *a, offset, p->min_pos_iou, ws.gt_max,
                                       ws.low_quality_gt),
                        "launching the low-quality matching kernel");
        } else {
            dp_launch_cfg cfg(grid, dim3(ASSIGN_THREADS), 0, s);
            DP_CUDA_TRY(ctx, DP_LAUNCH(cascade_assign<false>, cfg, *a, offset, ws.best_iou, ws.best_gt, ws.gt_max),
                        "launching the assignment kernel");
        }
    }
    const size_t rows = (size_t)(a->batch * p->num_samples);
    dp_launch_cfg cfg(dim3((unsigned)(a->batch < MAX_IMAGE_BLOCKS ? a->batch : MAX_IMAGE_BLOCKS)),
                      dim3(SAMPLE_THREADS), 0, s);
    cfg.out(a->rois, rows * 5 * sizeof(float)).out(a->labels, rows * sizeof(int32_t));
    cfg.out(a->targets, rows * 4 * sizeof(float)).out(a->max_iou, rows * sizeof(float)).out(a->is_gt, rows);
    cfg.out(a->num_samples, (size_t)a->batch * sizeof(int32_t)).out(a->num_pos, (size_t)a->batch * sizeof(int32_t));
    DP_CUDA_TRY(ctx, DP_LAUNCH(cascade_sample, cfg, *p, *a, (int64_t)dp_positive_quota(p), ws.best_iou, ws.best_gt,
                               ws.low_quality_gt, dp_fault_word(ctx)),
                "launching the sampling kernel");
    return DETPOST_OK;
}

/* ---- refine --------------------------------------------------------------- */

struct refine_args {
    detpost_box_coder coder;
    detpost_refine_policy policy;
    dp_decode_args a;
    const uint8_t *is_gt;
    const float *gt_iou;
};

__device__ bool refine_row(const refine_args &r, int64_t i, float *row)
{
    dp_decode_row(&r.coder, r.a.rois + i * 5, dp_row_deltas(r.a.deltas, r.a.labels, r.a.num_classes, i),
                  r.a.image_sizes, r.a.num_images, row);
    return dp_refine_keep(r.policy, row, r.coder.offset, r.is_gt ? r.is_gt[i] : (uint8_t)0,
                          r.gt_iou ? r.gt_iou[i] : 0.0f) != 0;
}

__global__ void refine_count(refine_args r, int64_t tiles, int64_t *__restrict__ tile_counts)
{
    DP_SHARED(int64_t, sums, [REFINE_THREADS / 32]);
    for (int64_t t = blockIdx.x; t < tiles; t += gridDim.x) {
        const int64_t end = (t + 1) * REFINE_TILE < r.a.n ? (t + 1) * REFINE_TILE : r.a.n;
        int64_t kept = 0;
        for (int64_t i = t * REFINE_TILE + threadIdx.x; i < end; i += blockDim.x) {
            float row[5];
            kept += refine_row(r, i, row);
        }
        kept = block_sum(kept, sums);
        if (threadIdx.x == 0) tile_counts[t] = kept;
    }
}

/* One block: tile counts -> exclusive offsets in place; the total is num_next. */
__global__ void refine_scan(int64_t *__restrict__ tile_offsets, int64_t tiles, int64_t *__restrict__ num_next)
{
    DP_SHARED(uint64_t, scan, [SCAN_THREADS / 32]);
    uint64_t run = 0;
    for (int64_t t0 = 0; t0 < tiles; t0 += blockDim.x) {
        const int64_t t = t0 + threadIdx.x;
        const uint64_t v = t < tiles ? (uint64_t)tile_offsets[t] : 0u;
        uint64_t total;
        const uint64_t before = block_exclusive_scan(v, scan, &total);
        if (t < tiles) tile_offsets[t] = (int64_t)(run + before);
        run += total;
    }
    if (threadIdx.x == 0) *num_next = (int64_t)run;
}

__global__ void refine_scatter(refine_args r, int64_t tiles, const int64_t *__restrict__ tile_offsets,
                               const int64_t *__restrict__ num_next, float *__restrict__ next_rois)
{
    DP_SHARED(uint64_t, scan, [REFINE_THREADS / 32]);
    const int64_t kept_total = *num_next;
    for (int64_t t = blockIdx.x; t < tiles; t += gridDim.x) {
        const int64_t end = (t + 1) * REFINE_TILE < r.a.n ? (t + 1) * REFINE_TILE : r.a.n;
        int64_t out = tile_offsets[t];
        for (int64_t i0 = t * REFINE_TILE; i0 < end; i0 += blockDim.x) {
            const int64_t i = i0 + threadIdx.x;
            float row[5];
            const bool keep = i < end && refine_row(r, i, row);
            uint64_t total;
            const uint64_t before = block_exclusive_scan(keep ? 1u : 0u, scan, &total);
            if (keep)
                for (int k = 0; k < 5; ++k) next_rois[(out + (int64_t)before) * 5 + k] = row[k];
            if (i < end && i >= kept_total) {
                float *pad = next_rois + i * 5;
                pad[0] = -1.0f;
                pad[1] = pad[2] = pad[3] = pad[4] = 0.0f;
            }
            out += (int64_t)total;
        }
    }
}

static size_t refine_layout(dp_carver *c, int64_t num_rois, int64_t **tile_offsets)
{
    const int64_t tiles = (num_rois + REFINE_TILE - 1) / REFINE_TILE;
    *tile_offsets = (int64_t *)carve_or_null(c, (size_t)tiles * sizeof(int64_t), true);
    return c->used;
}

size_t cuda_cascade_refine_workspace(int64_t num_rois)
{
    dp_carver c = {nullptr, 0};
    int64_t *offsets;
    return refine_layout(&c, num_rois, &offsets);
}

detpost_status cuda_cascade_refine(detpost_ctx *ctx, const detpost_box_coder *coder, detpost_refine_policy policy,
                                   const dp_decode_args *a, const uint8_t *is_gt, const float *gt_iou,
                                   float *next_rois, int64_t *num_next)
{
    DP_CUDA_TRY(ctx, cudaSetDevice(ctx->device), "selecting the CUDA device");
    cudaStream_t s = dp_stream(ctx);
    if (a->n == 0) {
        DP_CUDA_TRY(ctx, cudaMemsetAsync(num_next, 0, sizeof(int64_t), s), "clearing num_next");
        return DETPOST_OK;
    }
    void *base = nullptr;
    detpost_status st = dp_workspace(ctx, cuda_cascade_refine_workspace(a->n), &base);
    if (st != DETPOST_OK) return st;
    dp_carver c = {(char *)base, 0};
    int64_t *tile_offsets;
    refine_layout(&c, a->n, &tile_offsets);
    const int64_t tiles = (a->n + REFINE_TILE - 1) / REFINE_TILE;
    const refine_args r = {*coder, policy, *a, is_gt, gt_iou};
    const dim3 grid(dp_blocks_for(tiles, 1));

    dp_launch_cfg count(grid, dim3(REFINE_THREADS), 0, s);
    count.out(tile_offsets, (size_t)tiles * sizeof(int64_t));
    DP_CUDA_TRY(ctx, DP_LAUNCH(refine_count, count, r, tiles, tile_offsets), "launching the refine count kernel");
    dp_launch_cfg scan(dim3(1), dim3(SCAN_THREADS), 0, s);
    scan.out(num_next, sizeof(int64_t));
    DP_CUDA_TRY(ctx, DP_LAUNCH(refine_scan, scan, tile_offsets, tiles, num_next), "launching the refine scan kernel");
    dp_launch_cfg scatter(grid, dim3(REFINE_THREADS), 0, s);
    scatter.out(next_rois, (size_t)a->n * 5 * sizeof(float));
    DP_CUDA_TRY(ctx, DP_LAUNCH(refine_scatter, scatter, r, tiles, tile_offsets, num_next, next_rois),
                "launching the refine scatter kernel");
    return DETPOST_OK;
}

/* ---- IoU histogram ------------------------------------------------------- */

__global__ void iou_histogram_kernel(dp_resample_args a, int32_t num_bins, unsigned long long *__restrict__ counts,
                                     unsigned long long *fault)
{
    DP_SHARED(float, tile, [GT_TILE][4]);
    DP_SHARED_DYNAMIC(unsigned, hist);
    for (int k = threadIdx.x; k < num_bins; k += blockDim.x) hist[k] = 0u;
    for (int64_t img = blockIdx.y; img < a.batch; img += gridDim.y) {
        const int32_t np = a.num_proposals[img], ng = a.num_gt[img];
        const bool counts_ok = counts_in_range(np, ng, a.max_proposals, a.max_gt);
        if (!counts_ok && blockIdx.x == 0 && threadIdx.x == 0) dp_record_fault(fault, img, DP_FAULT_COUNT);
        if (!counts_ok) continue;
        for (int64_t first = (int64_t)blockIdx.x * blockDim.x; first < np; first += (int64_t)gridDim.x * blockDim.x) {
            const proposal_slot slot = load_proposal(a, img, np, first);
            int32_t arg;
            const float best = best_overlap_tiled<false>(a.gt_boxes + img * a.max_gt * 4, ng, slot.box, slot.active,
                                                         0.0f, tile, nullptr, nullptr, &arg);
            __syncthreads(); /* the bins are cleared before anyone counts */
            if (slot.active) {
                const int32_t bin = (int32_t)DP_MUL(best, (float)num_bins);
                atomicAdd(&hist[bin < num_bins ? bin : num_bins - 1], 1u);
            }
        }
    }
    __syncthreads();
    for (int k = threadIdx.x; k < num_bins; k += blockDim.x)
        if (hist[k] != 0u) atomicAdd(&counts[k], (unsigned long long)hist[k]);
}

detpost_status cuda_iou_histogram(detpost_ctx *ctx, int64_t batch, const float *proposals,
                                  const int32_t *num_proposals, int64_t max_proposals, const float *gt_boxes,
                                  const int32_t *num_gt, int64_t max_gt, int32_t num_bins, int64_t *counts)
{
    DP_CUDA_TRY(ctx, cudaSetDevice(ctx->device), "selecting the CUDA device");
    cudaStream_t s = dp_stream(ctx);
    DP_CUDA_TRY(ctx, cudaMemsetAsync(counts, 0, (size_t)num_bins * sizeof(int64_t), s), "clearing the histogram");
    if (batch == 0) return DETPOST_OK; /* with no proposal slots the kernel still checks every image's counts */
    dp_resample_args a = {};
    a.batch = batch;
    a.max_proposals = max_proposals;
    a.max_gt = max_gt;
    a.proposals = proposals;
    a.num_proposals = num_proposals;
    a.gt_boxes = gt_boxes;
    a.num_gt = num_gt;
    const dim3 grid(dp_blocks_for(max_proposals, ASSIGN_THREADS), (unsigned)(batch < MAX_GRID_Y ? batch : MAX_GRID_Y));
    dp_launch_cfg cfg(grid, dim3(ASSIGN_THREADS), (size_t)num_bins * sizeof(unsigned), s);
    DP_CUDA_TRY(ctx,
                DP_LAUNCH(iou_histogram_kernel, cfg, a, num_bins, (unsigned long long *)counts, dp_fault_word(ctx)),
                "launching the IoU histogram kernel");
    return DETPOST_OK;
}
