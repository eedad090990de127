/*
 * Box overlaps and mask IoU on the GPU.
 *
 * Pairwise overlaps write batch * na * nb floats and read almost nothing, so
 * the kernel is built around the writes: a block owns IOU_ROWS rows of `a`
 * (staged once in shared memory) and a run of columns; each thread keeps its
 * `b` box in registers and walks the rows, so every warp store covers 128
 * consecutive bytes of one output row. The mode is a template parameter so
 * the shared scalar math (host/box_math.h) is specialised per mode. Aligned
 * overlaps are a plain grid-stride map.
 *
 * Mask IoU: one pass per mask set turns bytes into half-precision 0/1 and
 * counts each mask's pixels; one GEMM (gemm.cuh) gives every intersection;
 * a final map turns intersections into IoU in place.
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
    DP_SHARED(float, tile, [IOU_ROWS][4]);
    const int64_t row_tiles = (na + IOU_ROWS - 1) / IOU_ROWS;
    for (int64_t t = blockIdx.y; t < batch * row_tiles; t += gridDim.y) {
        const int64_t img = t / row_tiles;
        const int64_t r0 = (t % row_tiles) * IOU_ROWS;
        const int rows = (int)(na - r0 < IOU_ROWS ? na - r0 : IOU_ROWS);
        __syncthreads(); /* the previous tile is no longer read */
        for (int k = threadIdx.x; k < rows * 4; k += blockDim.x)
            tile[k / 4][k % 4] = a[(img * na + r0) * 4 + k];
        __syncthreads();
        for (int64_t col = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; col < nb;
             col += (int64_t)gridDim.x * blockDim.x) {
            const float *bb = b + (img * nb + col) * 4;
            const float bx1 = bb[0], by1 = bb[1], bx2 = bb[2], by2 = bb[3];
            float *o = out + (img * na + r0) * nb + col;
            for (int r = 0; r < rows; ++r)
                o[r * nb] = dp_overlap(tile[r][0], tile[r][1], tile[r][2], tile[r][3], bx1, by1, bx2, by2, MODE,
                                       offset);
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
#define HALF_ONE 0x3C00u

/* One block per mask: half-precision 0/1 copy and the pixel count. */
__global__ void mask_to_half(const uint8_t *__restrict__ masks, int64_t pixels, uint16_t *__restrict__ halves,
                             float *__restrict__ counts)
{
    DP_SHARED(unsigned, partial, [MASK_THREADS / 32]);
    const int64_t row = blockIdx.x;
    const uint8_t *m = masks + row * pixels;
    uint16_t *h = halves + row * pixels;
    unsigned count = 0;
    for (int64_t k = threadIdx.x; k < pixels; k += blockDim.x) {
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
        counts[row] = (float)total;
    }
}

/* out holds intersections (or nothing when pixels == 0); turn them into IoU. */
__global__ void mask_iou_finish(float *__restrict__ out, const float *__restrict__ count_a,
                                const float *__restrict__ count_b, int64_t na, int64_t nb, int have_inter)
{
    const int64_t n = na * nb;
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x) {
        const float inter = have_inter ? out[i] : 0.0f;
        const float uni = count_a[i / nb] + count_b[i % nb] - inter;
        out[i] = uni > 0.0f ? inter / uni : 0.0f;
    }
}

struct mask_iou_ws {
    uint16_t *half_a, *half_b;
    float *count_a, *count_b;
};

static size_t mask_iou_layout(dp_carver *c, int64_t na, int64_t nb, int64_t pixels, mask_iou_ws *ws)
{
    ws->half_a = (uint16_t *)dp_carve(c, (size_t)(na * pixels) * sizeof(uint16_t));
    ws->half_b = (uint16_t *)dp_carve(c, (size_t)(nb * pixels) * sizeof(uint16_t));
    ws->count_a = (float *)dp_carve(c, (size_t)na * sizeof(float));
    ws->count_b = (float *)dp_carve(c, (size_t)nb * sizeof(float));
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

    const uint8_t *masks[2] = {a, b};
    const int64_t rows[2] = {na, nb};
    uint16_t *halves[2] = {ws.half_a, ws.half_b};
    float *counts[2] = {ws.count_a, ws.count_b};
    for (int side = 0; side < 2; ++side) {
        if (rows[side] == 0) continue;
        dp_launch_cfg cfg(dim3((unsigned)rows[side]), dim3(MASK_THREADS), 0, s);
        cfg.out(halves[side], (size_t)(rows[side] * pixels) * sizeof(uint16_t));
        cfg.out(counts[side], (size_t)rows[side] * sizeof(float));
        DP_CUDA_TRY(ctx, DP_LAUNCH(mask_to_half, cfg, masks[side], pixels, halves[side], counts[side]),
                    "launching the mask conversion kernel");
    }
    if (pixels > 0) {
        st = dp_gemm_abt_f16(ctx, ws.half_a, (int)na, ws.half_b, (int)nb, (int)pixels, out);
        if (st != DETPOST_OK) return st;
    }
    dp_launch_cfg cfg(dim3(dp_blocks_for(na * nb, 256)), dim3(256), 0, s);
    if (pixels == 0) cfg.out(out, (size_t)(na * nb) * sizeof(float));
    DP_CUDA_TRY(ctx, DP_LAUNCH(mask_iou_finish, cfg, out, ws.count_a, ws.count_b, na, nb, (int)(pixels > 0)),
                "launching the mask IoU kernel");
    return DETPOST_OK;
}
