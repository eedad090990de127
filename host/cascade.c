/*
 * Public entry points of box coding and cascade resampling: defaults,
 * argument checks, then dispatch to the CPU reference or the CUDA launchers.
 */
#include <math.h>
#include <string.h>

#include "cascade.h"

/* |log(16 / 1000)|: mmdetection's wh_ratio_clip as a bound on dw and dh */
#define DP_DEFAULT_CLAMP 4.13516655674235591f
#define DP_MAX_HISTOGRAM_BINS 4096

detpost_box_coder detpost_box_coder_default(void)
{
    detpost_box_coder c = {{0.0f, 0.0f, 0.0f, 0.0f}, {0.1f, 0.1f, 0.2f, 0.2f}, DP_DEFAULT_CLAMP, 0.0f};
    return c;
}

detpost_stage_params detpost_stage_params_default(int stage)
{
    static const float iou[3] = {0.5f, 0.6f, 0.7f};
    static const float stds[3][4] = {{0.1f, 0.1f, 0.2f, 0.2f}, {0.05f, 0.05f, 0.1f, 0.1f},
                                     {0.033f, 0.033f, 0.067f, 0.067f}};
    const int k = stage < 0 ? 0 : stage > 2 ? 2 : stage;
    detpost_stage_params p;
    memset(&p, 0, sizeof p);
    p.coder = detpost_box_coder_default();
    memcpy(p.coder.stds, stds[k], sizeof p.coder.stds);
    p.pos_iou = p.neg_iou = p.min_pos_iou = iou[k];
    p.neg_iou_lo = 0.0f;
    p.pos_fraction = 0.25f;
    p.neg_pos_ub = -1.0f;
    p.num_samples = 512;
    p.add_gt_as_proposals = 1;
    p.match_low_quality = 0;
    p.background_label = -1;
    p.stage = stage;
    p.seed = 0;
    return p;
}

/* ---- argument checks ---------------------------------------------------- */

static detpost_status check_coder(detpost_ctx *ctx, const detpost_box_coder *c, const char *name)
{
    for (int k = 0; k < 4; ++k) {
        if (!isfinite(c->means[k]))
            return dp_fail(ctx, DETPOST_ERR_INVALID_ARGUMENT, "%s->means[%d] is %g, not a finite number", name, k,
                           (double)c->means[k]);
        if (!(c->stds[k] > 0.0f) || !isfinite(c->stds[k]))
            return dp_fail(ctx, DETPOST_ERR_INVALID_ARGUMENT, "%s->stds[%d] is %g; it must be finite and > 0", name,
                           k, (double)c->stds[k]);
    }
    if (!(c->clamp >= 0.0f) || !isfinite(c->clamp))
        return dp_fail(ctx, DETPOST_ERR_INVALID_ARGUMENT, "%s->clamp is %g; it must be finite and >= 0", name,
                       (double)c->clamp);
    if (c->offset != 0.0f && c->offset != 1.0f)
        return dp_fail(ctx, DETPOST_ERR_INVALID_ARGUMENT, "%s->offset must be 0 or 1, not %g", name,
                       (double)c->offset);
    return DETPOST_OK;
}

static detpost_status check_unit(detpost_ctx *ctx, float v, const char *name)
{
    if (!(v >= 0.0f && v <= 1.0f))
        return dp_fail(ctx, DETPOST_ERR_INVALID_ARGUMENT, "%s is %g; it must be in [0, 1]", name, (double)v);
    return DETPOST_OK;
}

static detpost_status check_flag(detpost_ctx *ctx, int32_t v, const char *name)
{
    if (v != 0 && v != 1)
        return dp_fail(ctx, DETPOST_ERR_INVALID_ARGUMENT, "%s must be 0 or 1, not %d", name, (int)v);
    return DETPOST_OK;
}

static detpost_status check_stage_params(detpost_ctx *ctx, const detpost_stage_params *p)
{
    detpost_status st;
    if ((st = check_coder(ctx, &p->coder, "p->coder")) || (st = check_unit(ctx, p->pos_iou, "p->pos_iou")) ||
        (st = check_unit(ctx, p->neg_iou, "p->neg_iou")) || (st = check_unit(ctx, p->neg_iou_lo, "p->neg_iou_lo")) ||
        (st = check_unit(ctx, p->min_pos_iou, "p->min_pos_iou")) ||
        (st = check_unit(ctx, p->pos_fraction, "p->pos_fraction")) ||
        (st = check_flag(ctx, p->add_gt_as_proposals, "p->add_gt_as_proposals")) ||
        (st = check_flag(ctx, p->match_low_quality, "p->match_low_quality")))
        return st;
    if (p->neg_iou_lo > p->neg_iou)
        return dp_fail(ctx, DETPOST_ERR_INVALID_ARGUMENT, "p->neg_iou_lo (%g) is above p->neg_iou (%g)",
                       (double)p->neg_iou_lo, (double)p->neg_iou);
    if (isnan(p->neg_pos_ub))
        return dp_fail(ctx, DETPOST_ERR_INVALID_ARGUMENT, "p->neg_pos_ub is NaN");
    if (p->num_samples < 0)
        return dp_fail(ctx, DETPOST_ERR_INVALID_ARGUMENT, "p->num_samples is negative (%d)", (int)p->num_samples);
    if (p->stage < 0) return dp_fail(ctx, DETPOST_ERR_INVALID_ARGUMENT, "p->stage is negative (%d)", (int)p->stage);
    return DETPOST_OK;
}

/* Sizes of a batch of padded proposal and ground-truth lists, and the
 * elements of proposals [batch, max_proposals, 4] and gt_boxes
 * [batch, max_gt, 4] (the size queries size their scratch from these alone).
 * Candidates (ground truth plus proposals) are numbered with 32-bit indices. */
static detpost_status check_batch_sizes(detpost_ctx *ctx, int64_t batch, int64_t max_proposals, int64_t max_gt,
                                        int64_t *e_prop, int64_t *e_gt)
{
    detpost_status st;
    if ((st = dp_check_size(ctx, batch, "batch")) || (st = dp_check_size(ctx, max_proposals, "max_proposals")) ||
        (st = dp_check_size(ctx, max_gt, "max_gt")) ||
        (st = dp_elements(ctx, "proposals", e_prop, batch, max_proposals, 4)) ||
        (st = dp_elements(ctx, "gt_boxes", e_gt, batch, max_gt, 4)))
        return st;
    if (max_proposals > INT32_MAX - max_gt) /* both >= 0: the sum itself could overflow */
        return dp_fail(ctx, DETPOST_ERR_UNSUPPORTED,
                       "max_proposals + max_gt (%lld + %lld) must stay below 2^31 (candidates have 32-bit indices)",
                       (long long)max_proposals, (long long)max_gt);
    return DETPOST_OK;
}

/* Per-image counts: readable only on the CPU, where they are checked. */
static detpost_status check_counts(detpost_ctx *ctx, int64_t batch, const int32_t *counts, int64_t max,
                                   const char *name, const char *max_name)
{
    for (int64_t b = 0; b < batch; ++b)
        if (counts[b] < 0 || counts[b] > max)
            return dp_fail(ctx, DETPOST_ERR_INVALID_ARGUMENT, "%s[%lld] is %d, outside [0, %s = %lld]", name,
                           (long long)b, (int)counts[b], max_name, (long long)max);
    return DETPOST_OK;
}

/* ---- box coding --------------------------------------------------------- */

detpost_status detpost_box_encode(detpost_ctx *ctx, const detpost_box_coder *coder, const float *proposals,
                                  const float *targets, int64_t n, float *deltas)
{
    detpost_status st = dp_begin(ctx);
    if (st != DETPOST_OK) return st;
    const detpost_box_coder c = coder ? *coder : detpost_box_coder_default();
    int64_t e;
    if ((st = check_coder(ctx, &c, "coder")) || (st = dp_check_size(ctx, n, "n")) ||
        (st = dp_elements(ctx, "proposals", &e, n, 4, 1)) ||
        (st = DP_CHECK_TENSOR(ctx, proposals, e, "proposals")) ||
        (st = DP_CHECK_TENSOR(ctx, targets, e, "targets")) ||
        (st = DP_CHECK_TENSOR(ctx, deltas, e, "deltas")))
        return st;
    if (n == 0) return DETPOST_OK;
    if (ctx->backend == DETPOST_CPU) {
        cpu_box_encode(&c, proposals, targets, n, deltas);
        return DETPOST_OK;
    }
    return DP_CUDA(ctx, cuda_box_encode(ctx, &c, proposals, targets, n, deltas));
}

/* The checks decode and refine share. */
static detpost_status check_decode_args(detpost_ctx *ctx, const dp_decode_args *a, const char *n_name,
                                        const float *out, const char *out_name)
{
    detpost_status st;
    int64_t e_rois, e_deltas, e_sizes;
    if ((st = dp_check_size(ctx, a->n, n_name))) return st;
    if (a->num_classes < 1)
        return dp_fail(ctx, DETPOST_ERR_INVALID_ARGUMENT, "num_classes is %lld; it must be >= 1",
                       (long long)a->num_classes);
    if (a->image_sizes != NULL && a->num_images < 1)
        return dp_fail(ctx, DETPOST_ERR_INVALID_ARGUMENT,
                       "num_images is %lld; it must be >= 1 when image_sizes is given", (long long)a->num_images);
    if ((st = dp_elements(ctx, "rois", &e_rois, a->n, 5, 1)) ||
        (st = dp_elements(ctx, "deltas", &e_deltas, a->n, a->num_classes, 4)) ||
        (st = dp_elements(ctx, "image_sizes", &e_sizes, a->image_sizes ? a->num_images : 0, 2, 1)))
        return st;
    if ((st = DP_CHECK_TENSOR(ctx, a->rois, e_rois, "rois")) ||
        (st = DP_CHECK_TENSOR(ctx, a->deltas, e_deltas, "deltas")) ||
        (a->num_classes > 1 && (st = DP_CHECK_TENSOR(ctx, a->labels, a->n, "labels"))) ||
        (st = DP_CHECK_TENSOR(ctx, a->image_sizes, e_sizes, "image_sizes")) ||
        (st = DP_CHECK_TENSOR(ctx, out, e_rois, out_name)))
        return st;
    return DETPOST_OK;
}

detpost_status detpost_box_decode(detpost_ctx *ctx, const detpost_box_coder *coder, const float *rois,
                                  const float *deltas, int64_t n, int64_t num_classes, const int32_t *labels,
                                  const float *image_sizes, int64_t num_images, float *out)
{
    detpost_status st = dp_begin(ctx);
    if (st != DETPOST_OK) return st;
    const detpost_box_coder c = coder ? *coder : detpost_box_coder_default();
    const dp_decode_args a = {rois, deltas, n, num_classes, labels, image_sizes, num_images};
    if ((st = check_coder(ctx, &c, "coder")) || (st = check_decode_args(ctx, &a, "n", out, "out"))) return st;
    if (n == 0) return DETPOST_OK;
    if (ctx->backend == DETPOST_CPU) {
        cpu_box_decode(&c, &a, out);
        return DETPOST_OK;
    }
    return DP_CUDA(ctx, cuda_box_decode(ctx, &c, &a, out));
}

/* ---- resampling --------------------------------------------------------- */

detpost_status detpost_cascade_resample_workspace_size(detpost_ctx *ctx, const detpost_stage_params *p, int64_t batch,
                                                       int64_t max_proposals, int64_t max_gt, size_t *bytes)
{
    detpost_status st = dp_begin(ctx);
    if (st != DETPOST_OK) return st;
    const detpost_stage_params q = p ? *p : detpost_stage_params_default(0);
    int64_t e_prop, e_gt;
    if ((st = dp_check_ptr(ctx, bytes, "bytes")) || (st = check_stage_params(ctx, &q)) ||
        (st = check_batch_sizes(ctx, batch, max_proposals, max_gt, &e_prop, &e_gt)))
        return st;
    if (ctx->backend == DETPOST_CPU) {
        *bytes = dp_workspace_query(cpu_cascade_resample_workspace(max_proposals, max_gt));
        return DETPOST_OK;
    }
    *bytes = 0;
#if DETPOST_WITH_CUDA
    *bytes = dp_workspace_query(cuda_cascade_resample_workspace(&q, batch, max_proposals, max_gt));
#endif
    return DETPOST_OK;
}

detpost_status detpost_cascade_resample(detpost_ctx *ctx, const detpost_stage_params *p, int64_t batch,
                                        const float *proposals, const int32_t *num_proposals, int64_t max_proposals,
                                        const float *gt_boxes, const int32_t *gt_labels, const int32_t *num_gt,
                                        int64_t max_gt, float *rois, int32_t *labels, float *targets, float *max_iou,
                                        uint8_t *is_gt, int32_t *num_samples, int32_t *num_pos)
{
    detpost_status st = dp_begin(ctx);
    if (st != DETPOST_OK) return st;
    const detpost_stage_params q = p ? *p : detpost_stage_params_default(0);
    int64_t e_prop, e_gt, e_gt_labels, e_rois, e_rows, e_targets;
    if ((st = check_stage_params(ctx, &q)) ||
        (st = check_batch_sizes(ctx, batch, max_proposals, max_gt, &e_prop, &e_gt)))
        return st;
    const int64_t s = q.num_samples;
    if ((st = dp_elements(ctx, "gt_labels", &e_gt_labels, batch, max_gt, 1)) ||
        (st = dp_elements(ctx, "rois", &e_rois, batch, s, 5)) ||
        (st = dp_elements(ctx, "labels", &e_rows, batch, s, 1)) ||
        (st = dp_elements(ctx, "targets", &e_targets, batch, s, 4)))
        return st;
    if ((st = DP_CHECK_TENSOR(ctx, proposals, e_prop, "proposals")) ||
        (st = DP_CHECK_TENSOR(ctx, num_proposals, batch, "num_proposals")) ||
        (st = DP_CHECK_TENSOR(ctx, gt_boxes, e_gt, "gt_boxes")) ||
        (st = DP_CHECK_TENSOR(ctx, gt_labels, e_gt_labels, "gt_labels")) ||
        (st = DP_CHECK_TENSOR(ctx, num_gt, batch, "num_gt")) ||
        (st = DP_CHECK_TENSOR(ctx, rois, e_rois, "rois")) ||
        (st = DP_CHECK_TENSOR(ctx, labels, e_rows, "labels")) ||
        (st = DP_CHECK_TENSOR(ctx, targets, e_targets, "targets")) ||
        (st = DP_CHECK_TENSOR(ctx, max_iou, e_rows, "max_iou")) ||
        (st = DP_CHECK_TENSOR(ctx, is_gt, e_rows, "is_gt")) ||
        (st = DP_CHECK_TENSOR(ctx, num_samples, batch, "num_samples")) ||
        (st = DP_CHECK_TENSOR(ctx, num_pos, batch, "num_pos")))
        return st;
    if (batch == 0) return DETPOST_OK;
    const dp_resample_args a = {batch,   max_proposals, max_gt, proposals, num_proposals, gt_boxes,
                                gt_labels, num_gt,      rois,   labels,    targets,       max_iou,
                                is_gt,   num_samples,   num_pos};
    if (ctx->backend == DETPOST_CPU) {
        if ((st = check_counts(ctx, batch, num_proposals, max_proposals, "num_proposals", "max_proposals")) ||
            (st = check_counts(ctx, batch, num_gt, max_gt, "num_gt", "max_gt")))
            return st;
        return cpu_cascade_resample(ctx, &q, &a);
    }
    return DP_CUDA(ctx, cuda_cascade_resample(ctx, &q, &a));
}

/* ---- refinement --------------------------------------------------------- */

detpost_status detpost_cascade_refine_workspace_size(detpost_ctx *ctx, int64_t num_rois, size_t *bytes)
{
    detpost_status st = dp_begin(ctx);
    if (st != DETPOST_OK) return st;
    int64_t e_rois;
    if ((st = dp_check_ptr(ctx, bytes, "bytes")) || (st = dp_check_size(ctx, num_rois, "num_rois")) ||
        (st = dp_elements(ctx, "rois", &e_rois, num_rois, 5, 1)))
        return st;
    *bytes = 0;
#if DETPOST_WITH_CUDA
    if (ctx->backend == DETPOST_CUDA) *bytes = dp_workspace_query(cuda_cascade_refine_workspace(num_rois));
#endif
    return DETPOST_OK;
}

detpost_status detpost_cascade_refine(detpost_ctx *ctx, const detpost_box_coder *coder, detpost_refine_policy policy,
                                      const float *rois, const float *deltas, int64_t num_rois, int64_t num_classes,
                                      const int32_t *labels, const uint8_t *is_gt, const float *gt_iou,
                                      const float *image_sizes, int64_t num_images, float *next_rois,
                                      int64_t *num_next)
{
    detpost_status st = dp_begin(ctx);
    if (st != DETPOST_OK) return st;
    const detpost_box_coder c = coder ? *coder : detpost_box_coder_default();
    const dp_decode_args a = {rois, deltas, num_rois, num_classes, labels, image_sizes, num_images};
    if ((st = check_coder(ctx, &c, "coder"))) return st;
    if ((int)policy < DETPOST_REFINE_MMDET || (int)policy > DETPOST_REFINE_CAFFE)
        return dp_fail(ctx, DETPOST_ERR_INVALID_ARGUMENT, "policy %d is not a detpost_refine_policy", (int)policy);
    if ((st = check_decode_args(ctx, &a, "num_rois", next_rois, "next_rois")) ||
        (policy == DETPOST_REFINE_MMDET && (st = DP_CHECK_TENSOR(ctx, is_gt, num_rois, "is_gt"))) ||
        (policy == DETPOST_REFINE_CAFFE && (st = DP_CHECK_TENSOR(ctx, gt_iou, num_rois, "gt_iou"))) ||
        (st = DP_CHECK_TENSOR(ctx, num_next, 1, "num_next")))
        return st;
    if (ctx->backend == DETPOST_CPU) {
        cpu_cascade_refine(&c, policy, &a, is_gt, gt_iou, next_rois, num_next);
        return DETPOST_OK;
    }
    return DP_CUDA(ctx, cuda_cascade_refine(ctx, &c, policy, &a, is_gt, gt_iou, next_rois, num_next));
}

/* ---- IoU histogram ------------------------------------------------------ */

detpost_status detpost_iou_histogram(detpost_ctx *ctx, int64_t batch, const float *proposals,
                                     const int32_t *num_proposals, int64_t max_proposals, const float *gt_boxes,
                                     const int32_t *num_gt, int64_t max_gt, int32_t num_bins, int64_t *counts)
{
    detpost_status st = dp_begin(ctx);
    if (st != DETPOST_OK) return st;
    int64_t e_prop, e_gt;
    if ((st = check_batch_sizes(ctx, batch, max_proposals, max_gt, &e_prop, &e_gt))) return st;
    if (num_bins < 1 || num_bins > DP_MAX_HISTOGRAM_BINS)
        return dp_fail(ctx, DETPOST_ERR_INVALID_ARGUMENT, "num_bins is %d; it must be in [1, %d]", (int)num_bins,
                       DP_MAX_HISTOGRAM_BINS);
    if ((st = DP_CHECK_TENSOR(ctx, proposals, e_prop, "proposals")) ||
        (st = DP_CHECK_TENSOR(ctx, num_proposals, batch, "num_proposals")) ||
        (st = DP_CHECK_TENSOR(ctx, gt_boxes, e_gt, "gt_boxes")) ||
        (st = DP_CHECK_TENSOR(ctx, num_gt, batch, "num_gt")) ||
        (st = DP_CHECK_TENSOR(ctx, counts, num_bins, "counts")))
        return st;
    if (ctx->backend == DETPOST_CPU) {
        if ((st = check_counts(ctx, batch, num_proposals, max_proposals, "num_proposals", "max_proposals")) ||
            (st = check_counts(ctx, batch, num_gt, max_gt, "num_gt", "max_gt")))
            return st;
        cpu_iou_histogram(batch, proposals, num_proposals, max_proposals, gt_boxes, num_gt, max_gt, num_bins, counts);
        return DETPOST_OK;
    }
    return DP_CUDA(ctx, cuda_iou_histogram(ctx, batch, proposals, num_proposals, max_proposals, gt_boxes, num_gt,
                                           max_gt, num_bins, counts));
}
