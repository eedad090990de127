/*
 * Box overlaps and mask IoU on the GPU.
 *
 * Pairwise overlaps write batch * na * nb floats and read almost nothing, so
 * the kernel is built around the writes: a block owns IOU_ROWS rows of `a`
 * (staged once in shared memory with their extents and areas prepared) and a
 * run of columns; each thread keeps its prepared `b` box in registers and
 * walks the rows, so every warp store covers 128 consecutive bytes of one
 * output row and each pair costs only the intersection and the division. The mode is a template parameter so
 * the shared scalar math (host/box_math.h) is specialised per mode. Aligned
 * overlaps are a plain grid-stride map.
 *
 * Mask IoU: one pass over both mask sets (a block per 4096-pixel chunk of a
 * mask, so even a few large masks fill the GPU) turns bytes into
 * half-precision 0/1 and adds each mask's pixel count with one integer
 * atomic per block; one GEMM (gemm.cuh, its cuBLAS workspace carved from
 * the context's like the rest, so cuBLAS allocates nothing) gives every
 * intersection; a final map turns intersections into IoU in place.
 */
#include "dp_cuda.cuh"
#include "gemm.cuh"
#include "../host/box_math.h"

#define IOU_ROWS 32
#define IOU_THREADS 128

template <int MODE>
__global__ void box_overlaps_pairwise(const float *__restrict__ a, const float *__restrict__ b,
                                      float *__restrict__ out, int64_t na, int64_t nb, int64_t batch,
                                      float offset)
{
    DP_SHARED(dp_pbox, tile, [IOU_ROWS]);
    const int64_t row_tiles = (na + IOU_ROWS - 1) / IOU_ROWS;
    for (int64_t t = blockIdx.y; t < batch * row_tiles; t += gridDim.y) {
        const int64_t img = t / row_tiles;
        const int64_t r0 = (t % row_tiles) * IOU_ROWS;
        const int rows = (int)(na - r0 < IOU_ROWS ? na - r0 : IOU_ROWS);
        __syncthreads(); /* the previous tile is no longer read */
        for (int k = threadIdx.x; k < rows; k += blockDim.x) {
            const float *x = a + (img * na + r0 + k) * 4;
            tile[k] = dp_prepare_box(x[0], x[1], x[2], x[3], offset);
        }
        __syncthreads();
        for (int64_t col = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; col < nb;
             col += (int64_t)gridDim.x * blockDim.x) {
            const float *y = b + (img * nb + col) * 4;
            const dp_pbox bb = dp_prepare_box(y[0], y[1], y[2], y[3], offset);
            float *o = out + (img * na + r0) * nb + col;
            for (int r = 0; r < rows; ++r) o[r * nb] = dp_overlap_prepared(&tile[r], &bb, MODE, offset);
        }
    }
}

template <int MODE>
__global__ void box_overlaps_aligned(const float *__restrict__ a, const float *__restrict__ b,
                                     float *__restrict__ out, int64_t n, float offset)
{
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x) {
        const float *x = a + i * 4, *y = b + i * 4;
        out[i] = dp_overlap(x[0], x[1], x[2], x[3], y[0], y[1], y[2], y[3], MODE, offset);
    }
}

template <int MODE>
static cudaError_t launch_overlaps(const detpost_overlap_params *p, const float *a, int64_t na, const float *b,
                                   int64_t nb, int64_t batch, float *out, cudaStream_t stream)
{
    if (p->aligned) {
        const int64_t n = batch * na;
        dp_launch_cfg cfg(dim3(dp_blocks_for(n, 256)), dim3(256), 0, stream);
        cfg.out(out, (size_t)n * sizeof(float));
        return DP_LAUNCH(box_overlaps_aligned<MODE>, cfg, a, b, out, n, p->offset);
    }
    const int64_t tiles = batch * ((na + IOU_ROWS - 1) / IOU_ROWS);
    dim3 grid(dp_blocks_for(nb, IOU_THREADS), (unsigned)(tiles < 65535 ? tiles : 65535));
    dp_launch_cfg cfg(grid, dim3(IOU_THREADS), 0, stream);
    cfg.out(out, (size_t)(batch * na * nb) * sizeof(float));
    return DP_LAUNCH(box_overlaps_pairwise<MODE>, cfg, a, b, out, na, nb, batch, p->offset);
}

detpost_status cuda_box_overlaps(detpost_ctx *ctx, const detpost_overlap_params *p, const float *a, int64_t na,
                                 const float *b, int64_t nb, int64_t batch, float *out)
{
    DP_CUDA_TRY(ctx, cudaSetDevice(ctx->device), "selecting the CUDA device");
    cudaStream_t s = dp_stream(ctx);
    cudaError_t err = cudaErrorInvalidValue;
    switch (p->mode) {
    case DETPOST_IOU: err = launch_overlaps<DP_MODE_IOU>(p, a, na, b, nb, batch, out, s); break;
    case DETPOST_IOF: err = launch_overlaps<DP_MODE_IOF>(p, a, na, b, nb, batch, out, s); break;
    case DETPOST_GIOU: err = launch_overlaps<DP_MODE_GIOU>(p, a, na, b, nb, batch, out, s); break;
    case DETPOST_DIOU: err = launch_overlaps<DP_MODE_DIOU>(p, a, na, b, nb, batch, out, s); break;
    case DETPOST_CIOU: err = launch_overlaps<DP_MODE_CIOU>(p, a, na, b, nb, batch, out, s); break;
    }
    DP_CUDA_TRY(ctx, err, "launching the box overlap kernel");
    return DETPOST_OK;
}

/* ---- mask IoU ----------------------------------------------------------- */

#define MASK_THREADS 256
#define MASK_CHUNK 4096 /* pixels per block */
#define HALF_ONE 0x3C00u

/* Rows [0, na) are a's masks, rows [na, na + nb) b's: each block turns one
 * chunk of one mask into half-precision 0/1 and adds its pixel count. */
__global__ void masks_to_half(const uint8_t *__restrict__ a, const uint8_t *__restrict__ b, int64_t na, int64_t nb,
                              int64_t pixels, uint16_t *__restrict__ half_a, uint16_t *__restrict__ half_b,
                              unsigned *__restrict__ counts)
{
    DP_SHARED(unsigned, partial, [MASK_THREADS / 32]);
    const int64_t start = (int64_t)blockIdx.x * MASK_CHUNK;
    const int64_t end = start + MASK_CHUNK < pixels ? start + MASK_CHUNK : pixels;
    for (int64_t row = blockIdx.y; row < na + nb; row += gridDim.y) {
        const bool in_a = row < na;
        const int64_t r = in_a ? row : row - na;
        const uint8_t *m = (in_a ? a : b) + r * pixels;
        uint16_t *h = (in_a ? half_a : half_b) + r * pixels;
        unsigned count = 0;
        for (int64_t k = start + threadIdx.x; k < end; k += blockDim.x) {
            const unsigned set = m[k] != 0;
            h[k] = (uint16_t)(set ? HALF_ONE : 0u);
            count += set;
        }
        for (int d = 16; d > 0; d /= 2) count += __shfl_down_sync(0xffffffffu, count, d);
        if (threadIdx.x % 32 == 0) partial[threadIdx.x / 32] = count;
        __syncthreads();
        if (threadIdx.x == 0) {
            unsigned total = 0;
            for (int w = 0; w < MASK_THREADS / 32; ++w) total += partial[w];
            atomicAdd(&counts[row], total);
        }
        __syncthreads(); /* partial is reused by the next row */
    }
}

/* out holds intersections (or nothing when pixels == 0); turn them into IoU.
 * Each intersection is an exact integer (at most 2^24); the union is counted
 * in integers, since the sum of two counts can pass 2^24 and would round as
 * a float, and converted once, as the CPU reference converts it. */
__global__ void mask_iou_finish(float *__restrict__ out, const unsigned *__restrict__ counts, int64_t na, int64_t nb,
                                int have_inter)
{
    const int64_t n = na * nb;
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x) {
        const unsigned inter = have_inter ? (unsigned)out[i] : 0u;
        const unsigned uni = counts[i / nb] + counts[na + i % nb] - inter;
        out[i] = uni > 0u ? (float)inter / (float)uni : 0.0f;
    }
}

struct mask_iou_ws {
    uint16_t *half_a, *half_b;
    unsigned *counts; /* na + nb pixel counts */
    void *gemm;       /* cuBLAS's workspace (gemm.cuh) */
};

static size_t mask_iou_layout(dp_carver *c, int64_t na, int64_t nb, int64_t pixels, mask_iou_ws *ws)
{
    ws->half_a = (uint16_t *)dp_carve(c, (size_t)(na * pixels) * sizeof(uint16_t));
    ws->half_b = (uint16_t *)dp_carve(c, (size_t)(nb * pixels) * sizeof(uint16_t));
    ws->counts = (unsigned *)dp_carve(c, (size_t)(na + nb) * sizeof(unsigned));
    ws->gemm = pixels > 0 ? dp_carve(c, DP_GEMM_WORKSPACE_BYTES) : NULL;
    return c->used;
}

size_t cuda_mask_iou_workspace(int64_t na, int64_t nb, int64_t pixels)
{
    dp_carver c = {NULL, 0};
    mask_iou_ws ws;
    return mask_iou_layout(&c, na, nb, pixels, &ws);
}

detpost_status cuda_mask_iou(detpost_ctx *ctx, const uint8_t *a, int64_t na, const uint8_t *b, int64_t nb,
                             int64_t pixels, float *out)
{
    DP_CUDA_TRY(ctx, cudaSetDevice(ctx->device), "selecting the CUDA device");
    void *base = NULL;
    detpost_status st = dp_workspace(ctx, cuda_mask_iou_workspace(na, nb, pixels), &base);
    if (st != DETPOST_OK) return st;
    dp_carver c = {(char *)base, 0};
    mask_iou_ws ws;
    mask_iou_layout(&c, na, nb, pixels, &ws);
    cudaStream_t s = dp_stream(ctx);

    DP_CUDA_TRY(ctx, cudaMemsetAsync(ws.counts, 0, (size_t)(na + nb) * sizeof(unsigned), s), "clearing mask counts");
    if (pixels > 0) {
        const int64_t chunks = (pixels + MASK_CHUNK - 1) / MASK_CHUNK;
        dp_launch_cfg cfg(dim3((unsigned)chunks, (unsigned)(na + nb < 65535 ? na + nb : 65535)), dim3(MASK_THREADS), 0, s);
        cfg.out(ws.half_a, (size_t)(na * pixels) * sizeof(uint16_t));
        cfg.out(ws.half_b, (size_t)(nb * pixels) * sizeof(uint16_t));
        DP_CUDA_TRY(ctx, DP_LAUNCH(masks_to_half, cfg, a, b, na, nb, pixels, ws.half_a, ws.half_b, ws.counts),
                    "launching the mask conversion kernel");
    }
    if (pixels > 0) {
        st = dp_gemm_abt_f16(ctx, ws.half_a, (int)na, ws.half_b, (int)nb, (int)pixels, out, ws.gemm);
        if (st != DETPOST_OK) return st;
    }
    dp_launch_cfg cfg(dim3(dp_blocks_for(na * nb, 256)), dim3(256), 0, s);
    if (pixels == 0) cfg.out(out, (size_t)(na * nb) * sizeof(float));
    DP_CUDA_TRY(ctx, DP_LAUNCH(mask_iou_finish, cfg, out, ws.counts, na, nb, (int)(pixels > 0)),
                "launching the mask IoU kernel");
    return DETPOST_OK;
}
