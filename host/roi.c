/*
 * Public entry points of RoI Align, RoI Pool and the multi-level RoI Align:
 * argument checks, the workspace layout (one function for the size query and
 * the ops), then dispatch to the CPU reference or the CUDA launchers.
 */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "roi.h"
#include "roi_math.h"

detpost_roi_params detpost_roi_params_default(void)
{
    detpost_roi_params p = {7, 7, 1.0f, 0, 1, DETPOST_ROI_AVG, DETPOST_NCHW, DETPOST_F32, 0};
    return p;
}

detpost_feature_pyramid detpost_feature_pyramid_default(void)
{
    detpost_feature_pyramid f;
    memset(&f, 0, sizeof f);
    f.layout = DETPOST_NCHW;
    f.dtype = DETPOST_F32;
    f.canonical_scale = 224.0f;
    f.canonical_level = 4;
    f.eps = 1e-6f;
    return f;
}

/* ---- argument checks ------------------------------------------------------ */

static detpost_status check_flag(detpost_ctx *ctx, int value, const char *name)
{
    if (value != 0 && value != 1)
        return dp_fail(ctx, DETPOST_ERR_INVALID_ARGUMENT, "%s must be 0 or 1, not %d", name, value);
    return DETPOST_OK;
}

static detpost_status check_params(detpost_ctx *ctx, const detpost_roi_params *q)
{
    detpost_status st;
    if (q->pooled_h < 1 || q->pooled_w < 1)
        return dp_fail(ctx, DETPOST_ERR_INVALID_ARGUMENT, "p->pooled_h and p->pooled_w must be >= 1 (they are %d, %d)",
                       q->pooled_h, q->pooled_w);
    if (q->pooled_h > DP_ROI_MAX_POOLED || q->pooled_w > DP_ROI_MAX_POOLED)
        return dp_fail(ctx, DETPOST_ERR_UNSUPPORTED, "p->pooled_h and p->pooled_w are at most %d (they are %d, %d)",
                       DP_ROI_MAX_POOLED, q->pooled_h, q->pooled_w);
    if (!(q->spatial_scale > 0.0f) || !dp_finite(q->spatial_scale))
        return dp_fail(ctx, DETPOST_ERR_INVALID_ARGUMENT, "p->spatial_scale must be finite and > 0, not %g",
                       (double)q->spatial_scale);
    if ((int)q->mode != DETPOST_ROI_AVG && (int)q->mode != DETPOST_ROI_MAX)
        return dp_fail(ctx, DETPOST_ERR_INVALID_ARGUMENT, "p->mode %d is not a detpost_roi_mode", (int)q->mode);
    if ((int)q->layout != DETPOST_NCHW && (int)q->layout != DETPOST_NHWC)
        return dp_fail(ctx, DETPOST_ERR_INVALID_ARGUMENT, "p->layout %d is not a detpost_layout", (int)q->layout);
    if ((int)q->dtype != DETPOST_F32 && (int)q->dtype != DETPOST_F16)
        return dp_fail(ctx, DETPOST_ERR_INVALID_ARGUMENT, "p->dtype %d is not a detpost_dtype", (int)q->dtype);
    if ((st = check_flag(ctx, q->aligned, "p->aligned")) ||
        (st = check_flag(ctx, q->deterministic, "p->deterministic")))
        return st;
    return DETPOST_OK;
}

/* The names a message gives a map's sizes: the arguments n, c, h, w of a
 * single-level op; pyramid->n ... pyramid->levels[i].w for a pyramid. */
typedef struct map_names {
    const char *n, *c, *h, *w;
} map_names;

static const map_names arguments = {"n", "c", "h", "w"};

/* Sizes of a feature tensor; *elements = n * c * h * w. */
static detpost_status check_map(detpost_ctx *ctx, const char *name, const map_names *dims, int64_t n, int64_t c,
                                int64_t h, int64_t w, int pool, int64_t *elements)
{
    detpost_status st;
    if ((st = dp_check_size(ctx, n, dims->n)) || (st = dp_check_size(ctx, c, dims->c)) ||
        (st = dp_check_size(ctx, h, dims->h)) || (st = dp_check_size(ctx, w, dims->w)))
        return st;
    if (h > INT32_MAX || w > INT32_MAX)
        return dp_fail(ctx, DETPOST_ERR_UNSUPPORTED, "%s: h and w must be below 2^31 (h %lld, w %lld)", name,
                       (long long)h, (long long)w);
    int64_t plane;
    if ((st = dp_elements(ctx, name, &plane, h, w, 1)) || (st = dp_elements(ctx, name, elements, n, c, plane)))
        return st;
    if (pool && plane > INT32_MAX)
        return dp_fail(ctx, DETPOST_ERR_UNSUPPORTED, "%s: RoI Pool's int32 argmax needs h * w below 2^31 (%lld)",
                       name, (long long)plane);
    return DETPOST_OK;
}

/* Bytes of one element of a feature map or pooled output (p->dtype). */
static size_t dtype_bytes(const detpost_roi_params *q) { return q->dtype == DETPOST_F16 ? 2 : 4; }

/* check_map, then the tensor's pointer. */
static detpost_status check_map_tensor(detpost_ctx *ctx, const detpost_roi_params *q, const char *name,
                                       const map_names *dims, const void *tensor, int64_t n, int64_t c, int64_t h,
                                       int64_t w, int pool, int64_t *elements)
{
    detpost_status st;
    if ((st = check_map(ctx, name, dims, n, c, h, w, pool, elements)) ||
        (st = dp_check_tensor(ctx, tensor, *elements, dtype_bytes(q), name)))
        return st;
    return DETPOST_OK;
}

/* Sizes and pointers of rois [num_rois, 5] and of an output [num_rois, c, bins]. */
static detpost_status check_rois_and_out(detpost_ctx *ctx, const detpost_roi_params *q, const float *rois,
                                         int64_t num_rois, int64_t c, const void *out, const char *out_name,
                                         int64_t *out_elements)
{
    detpost_status st;
    int64_t roi_elements;
    if ((st = dp_check_size(ctx, num_rois, "num_rois")) ||
        (st = dp_elements(ctx, "rois", &roi_elements, num_rois, 5, 1)) ||
        (st = dp_elements(ctx, out_name, out_elements, num_rois, c, (int64_t)q->pooled_h * q->pooled_w)) ||
        (st = DP_CHECK_TENSOR(ctx, rois, roi_elements, "rois")) ||
        (st = dp_check_tensor(ctx, out, *out_elements, dtype_bytes(q), out_name)))
        return st;
    return DETPOST_OK;
}

/* A CPU context reads its rois directly: an invalid row is an error before
 * anything is written, however little there is to compute. (A CUDA context
 * cannot read them without waiting: a kernel records the first invalid row
 * for the next call that waits, and the ops' kernels skip such rows.) */
static detpost_status check_rows_on_cpu(detpost_ctx *ctx, const float *rois, int64_t num_rois, int64_t n)
{
    if (ctx->backend != DETPOST_CPU) return DETPOST_OK;
    const int64_t r = cpu_roi_first_invalid(rois, num_rois, n);
    if (r < 0) return DETPOST_OK;
    const float *row = rois + r * 5;
    if (!((double)row[0] >= 0.0 && (double)row[0] < (double)n))
        return dp_fail(ctx, DETPOST_ERR_INVALID_ARGUMENT, "rois[%lld] has batch index %g outside [0, %lld)",
                       (long long)r, (double)row[0], (long long)n);
    return dp_fail(ctx, DETPOST_ERR_INVALID_ARGUMENT,
                   "rois[%lld] has a non-finite coordinate (%g, %g, %g, %g)", (long long)r, (double)row[1],
                   (double)row[2], (double)row[3], (double)row[4]);
}

/* An op with nothing to compute: a CUDA context still records its invalid
 * rows, as the CPU context has answered them. */
static detpost_status nothing_to_compute(detpost_ctx *ctx, const float *rois, int64_t num_rois, int64_t n)
{
    if (ctx->backend == DETPOST_CPU) return DETPOST_OK;
    return DP_CUDA(ctx, cuda_roi_flag_rows(ctx, rois, num_rois, n));
}

/* ---- workspace -------------------------------------------------------------- */

typedef struct roi_ws {
    dp_roi_cpu_scratch cpu;
    dp_roi_grad grad;
} roi_ws;

/* The one layout of an op's scratch: the CPU reference's per-channel bin
 * accumulators, and for a backward pass its accumulator (see dp_roi_grad). */
static size_t roi_layout(dp_carver *cv, detpost_backend backend, const detpost_roi_params *q, int64_t c,
                         int64_t feature_elements, int backward, roi_ws *ws)
{
    memset(ws, 0, sizeof *ws);
    if (backend == DETPOST_CPU) {
        ws->cpu.value = (float *)dp_carve(cv, (size_t)c * sizeof(float));
        ws->cpu.best_y = (int32_t *)dp_carve(cv, (size_t)c * sizeof(int32_t));
        ws->cpu.best_x = (int32_t *)dp_carve(cv, (size_t)c * sizeof(int32_t));
    }
    if (backward) {
        if (q->deterministic) {
            ws->grad.acc_fixed = (int64_t *)dp_carve(cv, (size_t)feature_elements * sizeof(int64_t));
            ws->grad.max_bits = (uint32_t *)dp_carve(cv, sizeof(uint32_t));
        } else if (q->dtype == DETPOST_F16) {
            ws->grad.acc_float = (float *)dp_carve(cv, (size_t)feature_elements * sizeof(float));
        }
    }
    return cv->used;
}

static detpost_status carve_workspace(detpost_ctx *ctx, const detpost_roi_params *q, int64_t c,
                                      int64_t feature_elements, int backward, roi_ws *ws)
{
    dp_carver measure = {NULL, 0};
    void *base = NULL;
    detpost_status st = dp_workspace(ctx, roi_layout(&measure, ctx->backend, q, c, feature_elements, backward, ws),
                                     &base);
    if (st != DETPOST_OK) return st;
    dp_carver cv = {(char *)base, 0};
    roi_layout(&cv, ctx->backend, q, c, feature_elements, backward, ws);
    return DETPOST_OK;
}

detpost_status detpost_roi_workspace_size(detpost_ctx *ctx, const detpost_roi_params *p, int64_t n, int64_t c,
                                          int64_t h, int64_t w, size_t *bytes)
{
    detpost_status st = dp_begin(ctx);
    if (st != DETPOST_OK) return st;
    const detpost_roi_params q = p ? *p : detpost_roi_params_default();
    int64_t elements;
    if ((st = dp_check_ptr(ctx, bytes, "bytes")) || (st = check_params(ctx, &q)) ||
        (st = check_map(ctx, "features", &arguments, n, c, h, w, 0, &elements)))
        return st;
    dp_carver measure = {NULL, 0};
    roi_ws ws;
    *bytes = dp_workspace_query(roi_layout(&measure, ctx->backend, &q, c, elements, 1, &ws));
    return DETPOST_OK;
}

/* ---- jobs ----------------------------------------------------------------- */

static dp_roi_job single_level_job(const detpost_roi_params *q, const void *features, int64_t n, int64_t c, int64_t h,
                                   int64_t w, const float *rois, int64_t num_rois)
{
    dp_roi_job job;
    memset(&job, 0, sizeof job);
    job.level[0].features = features;
    job.level[0].h = h;
    job.level[0].w = w;
    job.level[0].scale = q->spatial_scale;
    job.num_levels = 1;
    job.n = n;
    job.c = c;
    job.pooled_h = q->pooled_h;
    job.pooled_w = q->pooled_w;
    job.sampling_ratio = q->sampling_ratio;
    job.aligned = q->aligned;
    job.mode = (int)q->mode;
    job.layout = (int)q->layout;
    job.dtype = (int)q->dtype;
    job.rois = rois;
    job.num_rois = num_rois;
    return job;
}

/* 2^result >= num_rois * bins: the most weight one feature element can get. */
static int weight_log2(int64_t num_rois, const detpost_roi_params *q)
{
    const int64_t bound = num_rois * q->pooled_h * q->pooled_w;
    int lb = 0;
    while (lb < 62 && ((int64_t)1 << lb) < bound) ++lb;
    return lb;
}

/* A backward pass's workspace, with its accumulator aimed at grad_features. */
static detpost_status carve_grad_workspace(detpost_ctx *ctx, const detpost_roi_params *q, int64_t c,
                                           int64_t elements, int64_t num_rois, void *grad_features, roi_ws *ws)
{
    detpost_status st = carve_workspace(ctx, q, c, elements, 1, ws);
    if (st != DETPOST_OK) return st;
    ws->grad.grad_features = grad_features;
    ws->grad.elements = elements;
    ws->grad.weight_log2 = weight_log2(num_rois, q);
    return DETPOST_OK;
}

/* ---- RoI Align -------------------------------------------------------------- */

detpost_status detpost_roi_align(detpost_ctx *ctx, const detpost_roi_params *p, const void *features, int64_t n,
                                 int64_t c, int64_t h, int64_t w, const float *rois, int64_t num_rois, void *out)
{
    detpost_status st = dp_begin(ctx);
    if (st != DETPOST_OK) return st;
    const detpost_roi_params q = p ? *p : detpost_roi_params_default();
    int64_t elements, out_elements;
    if ((st = check_params(ctx, &q)) ||
        (st = check_map_tensor(ctx, &q, "features", &arguments, features, n, c, h, w, 0, &elements)) ||
        (st = check_rois_and_out(ctx, &q, rois, num_rois, c, out, "out", &out_elements)))
        return st;
    if ((st = check_rows_on_cpu(ctx, rois, num_rois, n))) return st;
    if (out_elements == 0) return nothing_to_compute(ctx, rois, num_rois, n);
    const dp_roi_job job = single_level_job(&q, features, n, c, h, w, rois, num_rois);
    roi_ws ws;
    if ((st = carve_workspace(ctx, &q, c, elements, 0, &ws))) return st;
    if (ctx->backend == DETPOST_CPU) {
        cpu_roi_align(&job, out, NULL, &ws.cpu);
        return DETPOST_OK;
    }
    return DP_CUDA(ctx, cuda_roi_align(ctx, &job, out, NULL));
}

/* `max_entry`: called as detpost_roi_align_max_backward, with the forward's
 * features; otherwise as detpost_roi_align_backward (AVG mode only). */
static detpost_status align_backward(detpost_ctx *ctx, const detpost_roi_params *p, int max_entry,
                                     const void *features, const void *grad_out, const float *rois, int64_t num_rois,
                                     int64_t n, int64_t c, int64_t h, int64_t w, void *grad_features)
{
    detpost_status st = dp_begin(ctx);
    if (st != DETPOST_OK) return st;
    const detpost_roi_params q = p ? *p : detpost_roi_params_default();
    if ((st = check_params(ctx, &q))) return st;
    if (!max_entry && q.mode == DETPOST_ROI_MAX)
        return dp_fail(ctx, DETPOST_ERR_INVALID_ARGUMENT,
                       "p->mode is DETPOST_ROI_MAX, whose gradient needs the forward's features: "
                       "use detpost_roi_align_max_backward");
    if (max_entry && q.mode != DETPOST_ROI_MAX)
        return dp_fail(ctx, DETPOST_ERR_INVALID_ARGUMENT,
                       "p->mode must be DETPOST_ROI_MAX for detpost_roi_align_max_backward (p %s)",
                       p ? "has DETPOST_ROI_AVG" : "is NULL");
    int64_t elements, out_elements;
    if ((st = check_map_tensor(ctx, &q, "grad_features", &arguments, grad_features, n, c, h, w, 0, &elements)) ||
        (max_entry && (st = dp_check_tensor(ctx, features, elements, dtype_bytes(&q), "features"))) ||
        (st = check_rois_and_out(ctx, &q, rois, num_rois, c, grad_out, "grad_out", &out_elements)))
        return st;
    if ((st = check_rows_on_cpu(ctx, rois, num_rois, n))) return st;
    if (elements == 0) return nothing_to_compute(ctx, rois, num_rois, n);
    const dp_roi_job job = single_level_job(&q, features, n, c, h, w, rois, num_rois);
    roi_ws ws;
    if ((st = carve_grad_workspace(ctx, &q, c, elements, num_rois, grad_features, &ws))) return st;
    if (ctx->backend == DETPOST_CPU) {
        cpu_roi_align_backward(&job, grad_out, &ws.grad, &ws.cpu);
        return DETPOST_OK;
    }
    return DP_CUDA(ctx, cuda_roi_align_backward(ctx, &job, grad_out, &ws.grad));
}

detpost_status detpost_roi_align_backward(detpost_ctx *ctx, const detpost_roi_params *p, const void *grad_out,
                                          const float *rois, int64_t num_rois, int64_t n, int64_t c, int64_t h,
                                          int64_t w, void *grad_features)
{
    return align_backward(ctx, p, 0, NULL, grad_out, rois, num_rois, n, c, h, w, grad_features);
}

detpost_status detpost_roi_align_max_backward(detpost_ctx *ctx, const detpost_roi_params *p, const void *features,
                                              const void *grad_out, const float *rois, int64_t num_rois, int64_t n,
                                              int64_t c, int64_t h, int64_t w, void *grad_features)
{
    return align_backward(ctx, p, 1, features, grad_out, rois, num_rois, n, c, h, w, grad_features);
}

/* ---- RoI Pool --------------------------------------------------------------- */

detpost_status detpost_roi_pool(detpost_ctx *ctx, const detpost_roi_params *p, const void *features, int64_t n,
                                int64_t c, int64_t h, int64_t w, const float *rois, int64_t num_rois, void *out,
                                int32_t *argmax)
{
    detpost_status st = dp_begin(ctx);
    if (st != DETPOST_OK) return st;
    const detpost_roi_params q = p ? *p : detpost_roi_params_default();
    int64_t elements, out_elements;
    if ((st = check_params(ctx, &q)) ||
        (st = check_map_tensor(ctx, &q, "features", &arguments, features, n, c, h, w, 1, &elements)) ||
        (st = check_rois_and_out(ctx, &q, rois, num_rois, c, out, "out", &out_elements)))
        return st;
    if (argmax != NULL && (st = DP_CHECK_TENSOR(ctx, argmax, out_elements, "argmax"))) return st;
    if ((st = check_rows_on_cpu(ctx, rois, num_rois, n))) return st;
    if (out_elements == 0) return nothing_to_compute(ctx, rois, num_rois, n);
    const dp_roi_job job = single_level_job(&q, features, n, c, h, w, rois, num_rois);
    if (ctx->backend == DETPOST_CPU) {
        cpu_roi_pool(&job, out, argmax);
        return DETPOST_OK;
    }
    return DP_CUDA(ctx, cuda_roi_pool(ctx, &job, out, argmax));
}

detpost_status detpost_roi_pool_backward(detpost_ctx *ctx, const detpost_roi_params *p, const void *grad_out,
                                         const int32_t *argmax, const float *rois, int64_t num_rois, int64_t n,
                                         int64_t c, int64_t h, int64_t w, void *grad_features)
{
    detpost_status st = dp_begin(ctx);
    if (st != DETPOST_OK) return st;
    const detpost_roi_params q = p ? *p : detpost_roi_params_default();
    int64_t elements, out_elements;
    if ((st = check_params(ctx, &q)) ||
        (st = check_map_tensor(ctx, &q, "grad_features", &arguments, grad_features, n, c, h, w, 1, &elements)) ||
        (st = check_rois_and_out(ctx, &q, rois, num_rois, c, grad_out, "grad_out", &out_elements)) ||
        (st = DP_CHECK_TENSOR(ctx, argmax, out_elements, "argmax")))
        return st;
    if ((st = check_rows_on_cpu(ctx, rois, num_rois, n))) return st;
    if (elements == 0) return nothing_to_compute(ctx, rois, num_rois, n);
    if (ctx->backend == DETPOST_CPU)
        for (int64_t i = 0; i < out_elements; ++i)
            if (argmax[i] < -1 || argmax[i] >= h * w)
                return dp_fail(ctx, DETPOST_ERR_INVALID_ARGUMENT, "argmax[%lld] = %d is outside [-1, h * w = %lld)",
                               (long long)i, argmax[i], (long long)(h * w));
    const dp_roi_job job = single_level_job(&q, NULL, n, c, h, w, rois, num_rois);
    roi_ws ws;
    if ((st = carve_grad_workspace(ctx, &q, c, elements, num_rois, grad_features, &ws))) return st;
    if (ctx->backend == DETPOST_CPU) {
        cpu_roi_pool_backward(&job, grad_out, argmax, &ws.grad);
        return DETPOST_OK;
    }
    return DP_CUDA(ctx, cuda_roi_pool_backward(ctx, &job, grad_out, argmax, &ws.grad));
}

/* ---- multi-level RoI Align ---------------------------------------------------- */

static detpost_status check_pyramid(detpost_ctx *ctx, const detpost_roi_params *q, const detpost_feature_pyramid *f)
{
    detpost_status st;
    if ((st = dp_check_ptr(ctx, f, "pyramid"))) return st;
    if (f->num_levels < 1 || f->num_levels > DETPOST_MAX_PYRAMID_LEVELS)
        return dp_fail(ctx, DETPOST_ERR_INVALID_ARGUMENT, "pyramid->num_levels must be 1 to %d, not %d",
                       DETPOST_MAX_PYRAMID_LEVELS, f->num_levels);
    if (f->layout != q->layout || f->dtype != q->dtype)
        return dp_fail(ctx, DETPOST_ERR_INVALID_ARGUMENT,
                       "pyramid->layout and pyramid->dtype (%d, %d) differ from p->layout and p->dtype (%d, %d)",
                       (int)f->layout, (int)f->dtype, (int)q->layout, (int)q->dtype);
    if (!(f->canonical_scale > 0.0f) || !dp_finite(f->canonical_scale))
        return dp_fail(ctx, DETPOST_ERR_INVALID_ARGUMENT, "pyramid->canonical_scale must be finite and > 0, not %g",
                       (double)f->canonical_scale);
    if (!dp_finite(f->eps))
        return dp_fail(ctx, DETPOST_ERR_INVALID_ARGUMENT, "pyramid->eps must be finite, not %g", (double)f->eps);
    if (f->canonical_level < -1000 || f->canonical_level > 1000)
        return dp_fail(ctx, DETPOST_ERR_INVALID_ARGUMENT, "pyramid->canonical_level %d is out of range",
                       f->canonical_level);
    for (int i = 0; i < f->num_levels; ++i) {
        const detpost_pyramid_level *lv = &f->levels[i];
        char name[64], h_name[64], w_name[64];
        snprintf(name, sizeof name, "pyramid->levels[%d].features", i);
        snprintf(h_name, sizeof h_name, "pyramid->levels[%d].h", i);
        snprintf(w_name, sizeof w_name, "pyramid->levels[%d].w", i);
        const map_names dims = {"pyramid->n", "pyramid->c", h_name, w_name};
        int64_t elements;
        if ((st = check_map_tensor(ctx, q, name, &dims, lv->features, f->n, f->c, lv->h, lv->w, 0, &elements)))
            return st;
        if (!(lv->spatial_scale > 0.0f) || !dp_finite(lv->spatial_scale))
            return dp_fail(ctx, DETPOST_ERR_INVALID_ARGUMENT,
                           "pyramid->levels[%d].spatial_scale must be finite and > 0, not %g", i,
                           (double)lv->spatial_scale);
    }
    return DETPOST_OK;
}

detpost_status detpost_multilevel_roi_align(detpost_ctx *ctx, const detpost_roi_params *p,
                                            const detpost_feature_pyramid *pyramid, const float *rois,
                                            int64_t num_rois, void *out, int32_t *levels)
{
    detpost_status st = dp_begin(ctx);
    if (st != DETPOST_OK) return st;
    const detpost_roi_params q = p ? *p : detpost_roi_params_default();
    int64_t out_elements;
    if ((st = check_params(ctx, &q)) || (st = check_pyramid(ctx, &q, pyramid)) ||
        (st = check_rois_and_out(ctx, &q, rois, num_rois, pyramid->c, out, "out", &out_elements)))
        return st;
    if (levels != NULL && (st = DP_CHECK_TENSOR(ctx, levels, num_rois, "levels"))) return st;
    if ((st = check_rows_on_cpu(ctx, rois, num_rois, pyramid->n))) return st;
    if (num_rois == 0 || (out_elements == 0 && levels == NULL))
        return nothing_to_compute(ctx, rois, num_rois, pyramid->n);

    dp_roi_job job = single_level_job(&q, NULL, pyramid->n, pyramid->c, 0, 0, rois, num_rois);
    job.num_levels = pyramid->num_levels;
    for (int i = 0; i < pyramid->num_levels; ++i) {
        job.level[i].features = pyramid->levels[i].features;
        job.level[i].h = pyramid->levels[i].h;
        job.level[i].w = pyramid->levels[i].w;
        job.level[i].scale = pyramid->levels[i].spatial_scale;
    }
    job.k_min = (int)lround(-log2((double)pyramid->levels[0].spatial_scale));
    job.canonical_scale = pyramid->canonical_scale;
    job.canonical_level = pyramid->canonical_level;
    job.eps = pyramid->eps;
    roi_ws ws;
    if ((st = carve_workspace(ctx, &q, pyramid->c, 0, 0, &ws))) return st;
    if (ctx->backend == DETPOST_CPU) {
        cpu_roi_align(&job, out, levels, &ws.cpu);
        return DETPOST_OK;
    }
    return DP_CUDA(ctx, cuda_roi_align(ctx, &job, out, levels));
}

/* ---- row check ---------------------------------------------------------------- */

detpost_status detpost_roi_check(detpost_ctx *ctx, const float *rois, int64_t num_rois, int64_t n,
                                 int64_t *first_invalid)
{
    detpost_status st = dp_begin(ctx);
    if (st != DETPOST_OK) return st;
    int64_t roi_elements;
    if ((st = dp_check_size(ctx, num_rois, "num_rois")) || (st = dp_check_size(ctx, n, "n")) ||
        (st = dp_elements(ctx, "rois", &roi_elements, num_rois, 5, 1)) ||
        (st = DP_CHECK_TENSOR(ctx, rois, roi_elements, "rois")) ||
        (st = DP_CHECK_TENSOR(ctx, first_invalid, 1, "first_invalid")))
        return st;
    if (ctx->backend == DETPOST_CPU) {
        *first_invalid = cpu_roi_first_invalid(rois, num_rois, n);
        return DETPOST_OK;
    }
    return DP_CUDA(ctx, cuda_roi_check(ctx, rois, num_rois, n, first_invalid));
}
