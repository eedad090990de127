/*
 * Public entry points of the NMS family: argument checks, then dispatch to
 * the CPU reference or the CUDA launchers, and the workspace size queries.
 */
#include <math.h>

#include "nms.h"

detpost_nms_params detpost_nms_params_default(void)
{
    detpost_nms_params p = {DETPOST_NMS_HARD, 0.5f, -INFINITY, 0, 0.5f, 0.001f, 0.0f};
    return p;
}

detpost_batched_nms_params detpost_batched_nms_params_default(void)
{
    detpost_batched_nms_params p;
    p.nms = detpost_nms_params_default();
    p.pre_nms_top_k = 4096;
    p.max_per_class = 0;
    p.max_per_image = 100;
    p.background_class = -1;
    p.class_agnostic = 0;
    p.boxes_per_class = 0;
    p.box_coding = DETPOST_BOX_CORNERS;
    return p;
}

/* `prefix` names the struct in messages: "p->" or "p->nms.". */
static detpost_status check_nms_params(detpost_ctx *ctx, const detpost_nms_params *q, const char *prefix)
{
    const detpost_status bad = DETPOST_ERR_INVALID_ARGUMENT;
    if ((int)q->method < DETPOST_NMS_HARD || (int)q->method > DETPOST_NMS_DIOU)
        return dp_fail(ctx, bad, "%smethod %d is not a detpost_nms_method", prefix, (int)q->method);
    if (!(q->iou_threshold >= 0.0f && q->iou_threshold <= 1.0f))
        return dp_fail(ctx, bad, "%siou_threshold must be in [0, 1], not %g", prefix, (double)q->iou_threshold);
    if (isnan(q->score_threshold)) return dp_fail(ctx, bad, "%sscore_threshold is NaN", prefix);
    if (q->max_output < 0)
        return dp_fail(ctx, bad, "%smax_output is negative (%lld)", prefix, (long long)q->max_output);
    if (!(q->sigma > 0.0f && isfinite(q->sigma)))
        return dp_fail(ctx, bad, "%ssigma must be > 0 and finite, not %g", prefix, (double)q->sigma);
    if (isnan(q->min_score)) return dp_fail(ctx, bad, "%smin_score is NaN", prefix);
    if (q->offset != 0.0f && q->offset != 1.0f)
        return dp_fail(ctx, bad, "%soffset must be 0 or 1, not %g", prefix, (double)q->offset);
    return DETPOST_OK;
}

static detpost_status check_nms_size(detpost_ctx *ctx, int64_t n)
{
    detpost_status st = dp_check_size(ctx, n, "n");
    if (st != DETPOST_OK) return st;
    if (n > INT32_MAX)
        return dp_fail(ctx, DETPOST_ERR_UNSUPPORTED, "n %lld exceeds 2^31 - 1 boxes", (long long)n);
    return DETPOST_OK;
}

detpost_status detpost_nms_workspace_size(detpost_ctx *ctx, const detpost_nms_params *p, int64_t n, size_t *bytes)
{
    detpost_status st = dp_begin(ctx);
    if (st != DETPOST_OK) return st;
    const detpost_nms_params q = p ? *p : detpost_nms_params_default();
    if ((st = dp_check_ptr(ctx, bytes, "bytes")) || (st = check_nms_params(ctx, &q, "p->")) ||
        (st = check_nms_size(ctx, n)))
        return st;
    *bytes = 0;
#if DETPOST_WITH_CUDA
    if (ctx->backend == DETPOST_CUDA) *bytes = dp_workspace_query(cuda_nms_workspace(&q, n));
#endif
    return DETPOST_OK;
}

detpost_status detpost_nms(detpost_ctx *ctx, const detpost_nms_params *p, const float *boxes, const float *scores,
                           int64_t n, int64_t *keep, float *keep_scores, int64_t *num_keep)
{
    detpost_status st = dp_begin(ctx);
    if (st != DETPOST_OK) return st;
    const detpost_nms_params q = p ? *p : detpost_nms_params_default();
    if ((st = check_nms_params(ctx, &q, "p->")) || (st = check_nms_size(ctx, n))) return st;
    int64_t box_elements;
    if ((st = dp_elements(ctx, "boxes", &box_elements, n, 4, 1))) return st;
    if ((st = DP_CHECK_TENSOR(ctx, boxes, box_elements, "boxes")) ||
        (st = DP_CHECK_TENSOR(ctx, scores, n, "scores")) ||
        (st = DP_CHECK_TENSOR(ctx, keep, n, "keep")) ||
        (st = DP_CHECK_TENSOR(ctx, num_keep, 1, "num_keep")))
        return st;
    if (keep_scores && (st = DP_CHECK_TENSOR(ctx, keep_scores, n, "keep_scores"))) return st;
    if (ctx->backend == DETPOST_CPU) {
        st = cpu_nms(&q, boxes, scores, n, keep, keep_scores, num_keep);
        if (st != DETPOST_OK) return dp_fail(ctx, st, "out of host memory for the NMS of %lld boxes", (long long)n);
        return DETPOST_OK;
    }
    return DP_CUDA(ctx, cuda_nms(ctx, &q, boxes, scores, n, keep, keep_scores, num_keep));
}

static detpost_status check_batched(detpost_ctx *ctx, const detpost_batched_nms_params *q, int64_t batch,
                                    int64_t num_boxes, int64_t num_classes)
{
    const detpost_status bad = DETPOST_ERR_INVALID_ARGUMENT;
    detpost_status st;
    if ((st = check_nms_params(ctx, &q->nms, "p->nms."))) return st;
    if (q->pre_nms_top_k < 0)
        return dp_fail(ctx, bad, "p->pre_nms_top_k is negative (%lld)", (long long)q->pre_nms_top_k);
    if (q->max_per_class < 0)
        return dp_fail(ctx, bad, "p->max_per_class is negative (%lld)", (long long)q->max_per_class);
    if (q->max_per_image < 1)
        return dp_fail(ctx, bad, "p->max_per_image must be >= 1, not %lld", (long long)q->max_per_image);
    if (q->class_agnostic != 0 && q->class_agnostic != 1)
        return dp_fail(ctx, bad, "p->class_agnostic must be 0 or 1, not %d", q->class_agnostic);
    if (q->boxes_per_class != 0 && q->boxes_per_class != 1)
        return dp_fail(ctx, bad, "p->boxes_per_class must be 0 or 1, not %d", q->boxes_per_class);
    if ((int)q->box_coding != DETPOST_BOX_CORNERS && (int)q->box_coding != DETPOST_BOX_CENTER_SIZE)
        return dp_fail(ctx, bad, "p->box_coding %d is not a detpost_box_coding", (int)q->box_coding);
    if ((st = dp_check_size(ctx, batch, "batch")) || (st = dp_check_size(ctx, num_boxes, "num_boxes")) ||
        (st = dp_check_size(ctx, num_classes, "num_classes")))
        return st;
    if (q->background_class != -1 && !(q->background_class >= 0 && q->background_class < num_classes))
        return dp_fail(ctx, bad, "p->background_class must be -1 or a class in [0, %lld), not %lld",
                       (long long)num_classes, (long long)q->background_class);
    if (num_boxes > INT32_MAX || num_classes > INT32_MAX)
        return dp_fail(ctx, DETPOST_ERR_UNSUPPORTED, "num_boxes (%lld) and num_classes (%lld) must be below 2^31",
                       (long long)num_boxes, (long long)num_classes);
    int64_t pairs, slots;
    if (__builtin_mul_overflow(num_boxes, num_classes, &pairs) || pairs > INT32_MAX)
        return dp_fail(ctx, DETPOST_ERR_UNSUPPORTED, "num_boxes * num_classes (%lld x %lld) must be below 2^31",
                       (long long)num_boxes, (long long)num_classes);
    const int64_t cap = dp_batched_nms_capacity(q, num_boxes, num_classes);
    if (__builtin_mul_overflow(batch, cap, &slots) || slots > INT32_MAX)
        return dp_fail(ctx, DETPOST_ERR_UNSUPPORTED,
                       "batch * candidates per image (%lld x %lld) must be below 2^31; lower p->pre_nms_top_k",
                       (long long)batch, (long long)cap);
    int64_t rows;
    if ((st = dp_elements(ctx, "det_boxes", &rows, batch, q->max_per_image, 4))) return st;
    return DETPOST_OK;
}

detpost_status detpost_batched_nms_workspace_size(detpost_ctx *ctx, const detpost_batched_nms_params *p,
                                                  int64_t batch, int64_t num_boxes, int64_t num_classes,
                                                  size_t *bytes)
{
    detpost_status st = dp_begin(ctx);
    if (st != DETPOST_OK) return st;
    const detpost_batched_nms_params q = p ? *p : detpost_batched_nms_params_default();
    if ((st = dp_check_ptr(ctx, bytes, "bytes")) || (st = check_batched(ctx, &q, batch, num_boxes, num_classes)))
        return st;
    *bytes = 0;
#if DETPOST_WITH_CUDA
    if (ctx->backend == DETPOST_CUDA)
        *bytes = dp_workspace_query(cuda_batched_nms_workspace(&q, batch, num_boxes, num_classes));
#endif
    return DETPOST_OK;
}

detpost_status detpost_batched_nms(detpost_ctx *ctx, const detpost_batched_nms_params *p, const float *boxes,
                                   const float *scores, int64_t batch, int64_t num_boxes, int64_t num_classes,
                                   int32_t *num_dets, float *det_boxes, float *det_scores, int32_t *det_classes,
                                   int32_t *det_indices)
{
    detpost_status st = dp_begin(ctx);
    if (st != DETPOST_OK) return st;
    const detpost_batched_nms_params q = p ? *p : detpost_batched_nms_params_default();
    if ((st = check_batched(ctx, &q, batch, num_boxes, num_classes))) return st;
    int64_t box_elements, score_elements, rows;
    if ((st = dp_elements(ctx, "boxes", &box_elements, batch, num_boxes, q.boxes_per_class ? num_classes * 4 : 4)) ||
        (st = dp_elements(ctx, "scores", &score_elements, batch, num_boxes, num_classes)))
        return st;
    rows = batch * q.max_per_image;
    if ((st = DP_CHECK_TENSOR(ctx, boxes, box_elements, "boxes")) ||
        (st = DP_CHECK_TENSOR(ctx, scores, score_elements, "scores")) ||
        (st = DP_CHECK_TENSOR(ctx, num_dets, batch, "num_dets")) ||
        (st = DP_CHECK_TENSOR(ctx, det_boxes, rows * 4, "det_boxes")) ||
        (st = DP_CHECK_TENSOR(ctx, det_scores, rows, "det_scores")) ||
        (st = DP_CHECK_TENSOR(ctx, det_classes, rows, "det_classes")))
        return st;
    if (det_indices && (st = DP_CHECK_TENSOR(ctx, det_indices, rows, "det_indices"))) return st;
    if (batch == 0) return DETPOST_OK;
    if (ctx->backend == DETPOST_CPU) {
        st = cpu_batched_nms(&q, boxes, scores, batch, num_boxes, num_classes, num_dets, det_boxes, det_scores,
                             det_classes, det_indices);
        if (st != DETPOST_OK) return dp_fail(ctx, st, "out of host memory for batched NMS");
        return DETPOST_OK;
    }
    return DP_CUDA(ctx, cuda_batched_nms(ctx, &q, boxes, scores, batch, num_boxes, num_classes, num_dets, det_boxes,
                                         det_scores, det_classes, det_indices));
}
