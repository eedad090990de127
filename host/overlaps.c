/*
 * Public entry points of box overlaps and mask IoU: argument checks, then
 * dispatch to the CPU reference or the CUDA launchers.
 */
#include <math.h>

#include "internal.h"

/* Pixels per mask up to which float accumulation of 0/1 products is exact. */
#define DP_MASK_IOU_MAX_PIXELS (1LL << 24)

detpost_overlap_params detpost_overlap_params_default(void)
{
    detpost_overlap_params p = {DETPOST_IOU, 0, 0.0f};
    return p;
}

detpost_status detpost_box_overlaps(detpost_ctx *ctx, const detpost_overlap_params *p, const float *a, int64_t na,
                                    const float *b, int64_t nb, int64_t batch, float *out)
{
    detpost_status st = dp_begin(ctx);
    if (st != DETPOST_OK) return st;
    const detpost_overlap_params q = p ? *p : detpost_overlap_params_default();
    if ((int)q.mode < DETPOST_IOU || (int)q.mode > DETPOST_CIOU)
        return dp_fail(ctx, DETPOST_ERR_INVALID_ARGUMENT, "p->mode %d is not a detpost_overlap_mode", (int)q.mode);
    if (q.aligned != 0 && q.aligned != 1)
        return dp_fail(ctx, DETPOST_ERR_INVALID_ARGUMENT, "p->aligned must be 0 or 1, not %d", q.aligned);
    if (q.offset != 0.0f && q.offset != 1.0f)
        return dp_fail(ctx, DETPOST_ERR_INVALID_ARGUMENT, "p->offset must be 0 or 1, not %g", (double)q.offset);
    if ((st = dp_check_size(ctx, na, "na")) || (st = dp_check_size(ctx, nb, "nb")) ||
        (st = dp_check_size(ctx, batch, "batch")))
        return st;
    if (q.aligned && na != nb)
        return dp_fail(ctx, DETPOST_ERR_INVALID_ARGUMENT, "aligned overlaps need na == nb (na %lld, nb %lld)",
                       (long long)na, (long long)nb);
    int64_t ea, eb, eo;
    if ((st = dp_elements(ctx, "a", &ea, batch, na, 4)) || (st = dp_elements(ctx, "b", &eb, batch, nb, 4)) ||
        (st = dp_elements(ctx, "out", &eo, batch, na, q.aligned ? 1 : nb)))
        return st;
    if ((st = DP_CHECK_TENSOR(ctx, a, ea, "a")) || (st = DP_CHECK_TENSOR(ctx, b, eb, "b")) ||
        (st = DP_CHECK_TENSOR(ctx, out, eo, "out")))
        return st;
    if (eo == 0) return DETPOST_OK;
    if (ctx->backend == DETPOST_CPU) {
        cpu_box_overlaps(&q, a, na, b, nb, batch, out);
        return DETPOST_OK;
    }
    return DP_CUDA(ctx, cuda_box_overlaps(ctx, &q, a, na, b, nb, batch, out));
}

/* The sizes of mask IoU: the size query and the op refuse the same ones.
 * *ea, *eb, *eo: elements of a, b and out. */
static detpost_status check_mask_sizes(detpost_ctx *ctx, int64_t na, int64_t nb, int64_t pixels, int64_t *ea,
                                       int64_t *eb, int64_t *eo)
{
    detpost_status st;
    if ((st = dp_check_size(ctx, na, "na")) || (st = dp_check_size(ctx, nb, "nb")) ||
        (st = dp_check_size(ctx, pixels, "pixels")))
        return st;
    if (pixels > DP_MASK_IOU_MAX_PIXELS)
        return dp_fail(ctx, DETPOST_ERR_UNSUPPORTED,
                       "pixels %lld exceeds 2^24, beyond which float accumulation of the intersections is not exact",
                       (long long)pixels);
    if (na > INT32_MAX || nb > INT32_MAX)
        return dp_fail(ctx, DETPOST_ERR_UNSUPPORTED, "na and nb must be below 2^31 (na %lld, nb %lld)",
                       (long long)na, (long long)nb);
    if ((st = dp_elements(ctx, "a", ea, na, pixels, 1)) || (st = dp_elements(ctx, "b", eb, nb, pixels, 1)) ||
        (st = dp_elements(ctx, "out", eo, na, nb, 1)))
        return st;
    return DETPOST_OK;
}

detpost_status detpost_mask_iou_workspace_size(detpost_ctx *ctx, int64_t na, int64_t nb, int64_t pixels,
                                               size_t *bytes)
{
    detpost_status st = dp_begin(ctx);
    if (st != DETPOST_OK) return st;
    int64_t ea, eb, eo;
    if ((st = dp_check_ptr(ctx, bytes, "bytes")) || (st = check_mask_sizes(ctx, na, nb, pixels, &ea, &eb, &eo)))
        return st;
    *bytes = 0;
#if DETPOST_WITH_CUDA
    if (ctx->backend == DETPOST_CUDA) *bytes = dp_workspace_query(cuda_mask_iou_workspace(na, nb, pixels));
#endif
    return DETPOST_OK;
}

detpost_status detpost_mask_iou(detpost_ctx *ctx, const uint8_t *a, int64_t na, const uint8_t *b, int64_t nb,
                                int64_t pixels, float *out)
{
    detpost_status st = dp_begin(ctx);
    if (st != DETPOST_OK) return st;
    int64_t ea, eb, eo;
    if ((st = check_mask_sizes(ctx, na, nb, pixels, &ea, &eb, &eo))) return st;
    if ((st = DP_CHECK_TENSOR(ctx, a, ea, "a")) || (st = DP_CHECK_TENSOR(ctx, b, eb, "b")) ||
        (st = DP_CHECK_TENSOR(ctx, out, eo, "out")))
        return st;
    if (eo == 0) return DETPOST_OK;
    if (ctx->backend == DETPOST_CPU) {
        cpu_mask_iou(a, na, b, nb, pixels, out);
        return DETPOST_OK;
    }
    return DP_CUDA(ctx, cuda_mask_iou(ctx, a, na, b, nb, pixels, out));
}
