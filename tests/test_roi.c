/* RoI Align, RoI Pool and the multi-level RoI Align: golden vectors, CPU
 * against the CUDA backend over layouts, dtypes, modes and schedules,
 * gradients against finite differences, determinism, invalid rows, bad
 * input, and the float16 and log2 helpers both backends share. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "common.h"

#include "../host/half.h"
#include "../host/roi_math.h"

/* ---- tensors in every layout and dtype ---------------------------------------- */

/* Tensors here are [a, c, s] in NCHW order (a images or RoIs, s pixels or
 * bins); NHWC stores them as [a, s, c]. */
static int64_t layout_index(detpost_layout layout, int64_t a, int64_t ic, int64_t is, int64_t nc, int64_t ns)
{
    return layout == DETPOST_NCHW ? (a * nc + ic) * ns + is : (a * ns + is) * nc + ic;
}

static size_t dtype_size(detpost_dtype dtype) { return dtype == DETPOST_F16 ? 2 : 4; }

static void *to_layout(const float *nchw, int64_t a, int64_t c, int64_t s, detpost_layout layout, detpost_dtype dtype)
{
    const int64_t n = a * c * s;
    void *raw = malloc((size_t)(n ? n : 1) * dtype_size(dtype));
    for (int64_t ia = 0; ia < a; ++ia)
        for (int64_t ic = 0; ic < c; ++ic)
            for (int64_t is = 0; is < s; ++is) {
                const float v = nchw[(ia * c + ic) * s + is];
                const int64_t k = layout_index(layout, ia, ic, is, c, s);
                if (dtype == DETPOST_F16) ((uint16_t *)raw)[k] = dp_float_to_half(v);
                else ((float *)raw)[k] = v;
            }
    return raw;
}

static float *from_layout(const void *raw, int64_t a, int64_t c, int64_t s, detpost_layout layout, detpost_dtype dtype)
{
    const int64_t n = a * c * s;
    float *nchw = malloc((size_t)(n ? n : 1) * sizeof(float));
    for (int64_t ia = 0; ia < a; ++ia)
        for (int64_t ic = 0; ic < c; ++ic)
            for (int64_t is = 0; is < s; ++is) {
                const int64_t k = layout_index(layout, ia, ic, is, c, s);
                nchw[(ia * c + ic) * s + is] =
                    dtype == DETPOST_F16 ? dp_half_to_float(((const uint16_t *)raw)[k]) : ((const float *)raw)[k];
            }
    return nchw;
}

static int32_t *int_from_layout(const int32_t *raw, int64_t a, int64_t c, int64_t s, detpost_layout layout)
{
    const int64_t n = a * c * s;
    int32_t *nchw = malloc((size_t)(n > 0 ? n : 1) * sizeof(int32_t));
    for (int64_t ia = 0; ia < a; ++ia)
        for (int64_t ic = 0; ic < c; ++ic)
            for (int64_t is = 0; is < s; ++is)
                nchw[(ia * c + ic) * s + is] = raw[layout_index(layout, ia, ic, is, c, s)];
    return nchw;
}

/* What every op call needs: features (NCHW float, converted per params) and rois. */
typedef struct roi_input {
    const float *features;
    int64_t n, c, h, w;
    const float *rois;
    int64_t num_rois;
} roi_input;

static int64_t bins_of(const detpost_roi_params *p) { return (int64_t)p->pooled_h * p->pooled_w; }

/* Runs RoI Align (pool_argmax NULL) or RoI Pool on ctx; returns the output
 * in NCHW float, and the argmax in NCHW order for RoI Pool. */
/* When set, a CUDA run must answer this recorded fault at its next wait. */
static const char *expected_fault;

static float *run_forward(detpost_ctx *ctx, const detpost_roi_params *p, const roi_input *in, int32_t **pool_argmax)
{
    const int64_t bins = bins_of(p), out_n = in->num_rois * in->c * bins;
    const size_t es = dtype_size(p->dtype);
    void *raw = to_layout(in->features, in->n, in->c, in->h * in->w, p->layout, p->dtype);
    void *df = t_up(ctx, raw, (size_t)(in->n * in->c * in->h * in->w) * es);
    float *dr = t_up(ctx, in->rois, (size_t)in->num_rois * 5 * sizeof(float));
    void *dout = t_alloc(ctx, (size_t)out_n * es);
    int32_t *darg = pool_argmax ? t_alloc(ctx, (size_t)out_n * sizeof(int32_t)) : NULL;
    detpost_status st =
        pool_argmax ? detpost_roi_pool(ctx, p, df, in->n, in->c, in->h, in->w, dr, in->num_rois, dout, darg)
                    : detpost_roi_align(ctx, p, df, in->n, in->c, in->h, in->w, dr, in->num_rois, dout);
    cr_assert_eq(st, DETPOST_OK, "%s: %s", detpost_status_name(st), detpost_last_error(ctx));
    if (expected_fault != NULL && detpost_get_backend(ctx) == DETPOST_CUDA) t_expect_fault(ctx, expected_fault);
    void *host = t_down(ctx, dout, (size_t)out_n * es);
    float *out = from_layout(host, in->num_rois, in->c, bins, p->layout, p->dtype);
    if (pool_argmax) {
        int32_t *arg = t_down(ctx, darg, (size_t)out_n * sizeof(int32_t));
        *pool_argmax = int_from_layout(arg, in->num_rois, in->c, bins, p->layout);
        free(arg);
        t_free(ctx, darg);
    }
    free(raw), free(host);
    t_free(ctx, df), t_free(ctx, dr), t_free(ctx, dout);
    return out;
}

typedef enum { GRAD_ALIGN, GRAD_POOL } grad_op;

/* The gradient with respect to the features (NCHW float) for grad_out
 * (NCHW float); RoI Pool takes the forward's argmax (NCHW order). */
static float *run_backward(detpost_ctx *ctx, const detpost_roi_params *p, const roi_input *in, const float *grad_out,
                           grad_op op, const int32_t *argmax_nchw)
{
    const int64_t bins = bins_of(p), out_n = in->num_rois * in->c * bins, feat_n = in->n * in->c * in->h * in->w;
    const size_t es = dtype_size(p->dtype);
    void *raw_g = to_layout(grad_out, in->num_rois, in->c, bins, p->layout, p->dtype);
    void *dg = t_up(ctx, raw_g, (size_t)out_n * es);
    float *dr = t_up(ctx, in->rois, (size_t)in->num_rois * 5 * sizeof(float));
    void *dgrad = t_alloc(ctx, (size_t)feat_n * es);
    void *raw_f = NULL, *df = NULL;
    int32_t *raw_a = NULL, *da = NULL;
    detpost_status st;
    if (op == GRAD_POOL) {
        raw_a = malloc((size_t)(out_n ? out_n : 1) * sizeof(int32_t));
        for (int64_t r = 0; r < in->num_rois; ++r)
            for (int64_t c = 0; c < in->c; ++c)
                for (int64_t b = 0; b < bins; ++b)
                    raw_a[layout_index(p->layout, r, c, b, in->c, bins)] = argmax_nchw[(r * in->c + c) * bins + b];
        da = t_up(ctx, raw_a, (size_t)out_n * sizeof(int32_t));
        st = detpost_roi_pool_backward(ctx, p, dg, da, dr, in->num_rois, in->n, in->c, in->h, in->w, dgrad);
    } else if (p->mode == DETPOST_ROI_MAX) {
        raw_f = to_layout(in->features, in->n, in->c, in->h * in->w, p->layout, p->dtype);
        df = t_up(ctx, raw_f, (size_t)feat_n * es);
        st = detpost_roi_align_max_backward(ctx, p, df, dg, dr, in->num_rois, in->n, in->c, in->h, in->w, dgrad);
    } else {
        st = detpost_roi_align_backward(ctx, p, dg, dr, in->num_rois, in->n, in->c, in->h, in->w, dgrad);
    }
    cr_assert_eq(st, DETPOST_OK, "%s: %s", detpost_status_name(st), detpost_last_error(ctx));
    if (expected_fault != NULL && detpost_get_backend(ctx) == DETPOST_CUDA) t_expect_fault(ctx, expected_fault);
    void *host = t_down(ctx, dgrad, (size_t)feat_n * es);
    float *grad = from_layout(host, in->n, in->c, in->h * in->w, p->layout, p->dtype);
    free(raw_g), free(raw_f), free(raw_a), free(host);
    t_free(ctx, dg), t_free(ctx, dr), t_free(ctx, dgrad), t_free(ctx, df), t_free(ctx, da);
    return grad;
}

static const char *layout_name(detpost_layout l) { return l == DETPOST_NCHW ? "NCHW" : "NHWC"; }
static const char *dtype_name(detpost_dtype d) { return d == DETPOST_F32 ? "f32" : "f16"; }

/* Bit-for-bit equality (NaN against NaN). */
static void assert_same(const float *got, const float *want, int64_t n, const char *what)
{
    for (int64_t i = 0; i < n; ++i)
        if (memcmp(&got[i], &want[i], sizeof(float)) != 0 && !(got[i] == want[i]) && !(isnan(got[i]) && isnan(want[i])))
            cr_assert_fail("%s: element %lld is %.9g, expected %.9g", what, (long long)i, (double)got[i],
                           (double)want[i]);
}

/* ---- golden vectors -------------------------------------------------------------- */

static float *golden_features(const cJSON *c, int64_t n, int64_t ch, int64_t h, int64_t w)
{
    const cJSON *spec = cJSON_GetObjectItemCaseSensitive(c, "features");
    float *f = malloc((size_t)(n * ch * h * w) * sizeof(float));
    const cJSON *node;
    if ((node = cJSON_GetObjectItemCaseSensitive(spec, "constant"))) {
        for (int64_t i = 0; i < n * ch * h * w; ++i) f[i] = (float)node->valuedouble;
    } else if ((node = cJSON_GetObjectItemCaseSensitive(spec, "ramp"))) {
        int64_t k;
        float *r = t_json_floats(node, "ramp", 0, &k);
        cr_assert_eq(k, 5);
        for (int64_t b = 0; b < n; ++b)
            for (int64_t c = 0; c < ch; ++c)
                for (int64_t y = 0; y < h; ++y)
                    for (int64_t x = 0; x < w; ++x)
                        f[((b * ch + c) * h + y) * w + x] = r[0] * y + r[1] * x + r[2] + r[3] * c + r[4] * b;
        free(r);
    } else {
        int64_t k;
        float *v = t_golden_floats(spec, "values", 0, &k);
        cr_assert_eq(k, n * ch * h * w);
        memcpy(f, v, (size_t)k * sizeof(float));
        free(v);
    }
    return f;
}

static void check_golden(detpost_backend backend)
{
    cJSON *root = t_golden("roi.json");
    detpost_ctx *ctx = t_ctx(backend);
    const cJSON *c;
    int cases = 0;
    cJSON_ArrayForEach(c, cJSON_GetObjectItemCaseSensitive(root, "cases"))
    {
        int64_t k, num_rois, nexp;
        float *shape = t_golden_floats(c, "shape", 0, &k);
        cr_assert_eq(k, 4);
        roi_input in = {NULL, (int64_t)shape[0], (int64_t)shape[1], (int64_t)shape[2], (int64_t)shape[3], NULL, 0};
        float *features = golden_features(c, in.n, in.c, in.h, in.w);
        float *rois = t_golden_floats(c, "rois", 5, &num_rois);
        float *pooled = t_golden_floats(c, "pooled", 0, &k);
        float *want = t_golden_floats(c, "expected", 0, &nexp);
        in.features = features, in.rois = rois, in.num_rois = num_rois;
        const int pool = strcmp(t_golden_string(c, "op", "align"), "pool") == 0;
        detpost_roi_params p = detpost_roi_params_default();
        p.pooled_h = (int)pooled[0], p.pooled_w = (int)pooled[1];
        p.spatial_scale = (float)t_golden_number(c, "spatial_scale", 1);
        p.sampling_ratio = (int)t_golden_number(c, "sampling_ratio", 0);
        p.aligned = (int)t_golden_number(c, "aligned", 1);
        p.mode = strcmp(t_golden_string(c, "mode", "avg"), "max") == 0 ? DETPOST_ROI_MAX : DETPOST_ROI_AVG;
        cr_assert_eq(nexp, num_rois * in.c * bins_of(&p), "%s: expected has %lld values",
                     t_golden_string(c, "name", "?"), (long long)nexp);
        float *want_arg = pool ? t_golden_floats(c, "argmax", 0, &k) : NULL;
        for (int s = 0; s < (backend == DETPOST_CPU ? 1 : t_schedule_count()); ++s) {
            t_set_schedule(t_schedule(s));
            for (int layout = 0; layout < 2; ++layout)
                for (int dtype = 0; dtype < 2; ++dtype) {
                    p.layout = (detpost_layout)layout, p.dtype = (detpost_dtype)dtype;
                    int32_t *arg = NULL;
                    float *got = run_forward(ctx, &p, &in, pool ? &arg : NULL);
                    char what[256];
                    snprintf(what, sizeof what, "%s (%s %s)", t_golden_string(c, "name", "?"),
                             layout_name(p.layout), dtype_name(p.dtype));
                    const float tol = p.dtype == DETPOST_F16 ? 1e-3f : 2e-6f;
                    t_assert_close(got, want, nexp, tol, tol, what);
                    for (int64_t i = 0; pool && i < nexp; ++i)
                        cr_assert_eq(arg[i], (int32_t)want_arg[i], "%s: argmax %lld is %d, expected %d", what,
                                     (long long)i, arg[i], (int32_t)want_arg[i]);
                    free(got), free(arg);
                }
        }
        free(shape), free(features), free(rois), free(pooled), free(want), free(want_arg);
        ++cases;
    }
    cr_assert_geq(cases, 20, "the golden file holds %d cases", cases);
    detpost_destroy(ctx);
    cJSON_Delete(root);
}

Test(roi, golden_cpu) { check_golden(DETPOST_CPU); }
#if TEST_HAS_CUDA
Test(roi, golden_cuda) { check_golden(DETPOST_CUDA); }
#endif

/* The FPN level mapping: golden levels from the pyramid's own op (C = 0, so
 * only levels are written), on each backend. */
static void check_fpn_levels(detpost_backend backend)
{
    cJSON *root = t_golden("roi.json");
    const cJSON *g = cJSON_GetObjectItemCaseSensitive(root, "fpn_levels");
    int64_t nlev, nbox, nexp;
    float *scales = t_golden_floats(g, "scales", 0, &nlev);
    float *boxes = t_golden_floats(g, "boxes", 4, &nbox);
    float *want = t_golden_floats(g, "expected", 0, &nexp);
    cr_assert_eq(nexp, nbox);
    detpost_ctx *ctx = t_ctx(backend);
    float *rois = malloc((size_t)nbox * 5 * sizeof(float));
    for (int64_t i = 0; i < nbox; ++i) {
        rois[i * 5] = 0;
        memcpy(rois + i * 5 + 1, boxes + i * 4, 4 * sizeof(float));
    }
    detpost_feature_pyramid f = detpost_feature_pyramid_default();
    f.num_levels = (int)nlev, f.n = 1, f.c = 0;
    for (int i = 0; i < f.num_levels; ++i) {
        f.levels[i].h = 4, f.levels[i].w = 4;
        f.levels[i].spatial_scale = scales[i];
    }
    float *dr = t_up(ctx, rois, (size_t)nbox * 5 * sizeof(float));
    int32_t *dl = t_alloc(ctx, (size_t)nbox * sizeof(int32_t));
    cr_assert_eq(detpost_multilevel_roi_align(ctx, NULL, &f, dr, nbox, NULL, dl), DETPOST_OK, "%s",
                 detpost_last_error(ctx));
    int32_t *got = t_down(ctx, dl, (size_t)nbox * sizeof(int32_t));
    for (int64_t i = 0; i < nbox; ++i)
        cr_assert_eq(got[i], (int32_t)want[i], "box %lld (%g %g %g %g): level %d, expected %d", (long long)i,
                     (double)boxes[i * 4], (double)boxes[i * 4 + 1], (double)boxes[i * 4 + 2],
                     (double)boxes[i * 4 + 3], got[i], (int32_t)want[i]);
    free(got), free(rois), free(scales), free(boxes), free(want);
    t_free(ctx, dr), t_free(ctx, dl);
    detpost_destroy(ctx);
    cJSON_Delete(root);
}

Test(roi, fpn_levels_cpu) { check_fpn_levels(DETPOST_CPU); }
#if TEST_HAS_CUDA
Test(roi, fpn_levels_cuda) { check_fpn_levels(DETPOST_CUDA); }
#endif

/* ---- seeded inputs ------------------------------------------------------------------ */

static float *random_features(t_rng *r, int64_t n)
{
    float *f = malloc((size_t)(n ? n : 1) * sizeof(float));
    for (int64_t i = 0; i < n; ++i) f[i] = t_uniform(r, -1.0f, 1.0f);
    return f;
}

/* Detector-like RoIs in an image of img_w x img_h over n images, with the
 * awkward ones every op must get right: partly and wholly outside, zero
 * size, inverted, and one much larger than the image. All rows valid. */
static float *random_rois(t_rng *r, int64_t num_rois, int64_t n, float img_w, float img_h)
{
    float *boxes = malloc((size_t)(num_rois ? num_rois : 1) * 4 * sizeof(float));
    float *rois = malloc((size_t)(num_rois ? num_rois : 1) * 5 * sizeof(float));
    t_detector_boxes(r, boxes, num_rois, img_w, img_h, 0);
    for (int64_t i = 0; i < num_rois; ++i) {
        float *b = boxes + i * 4;
        switch (i % 9) {
        case 3: b[0] -= 0.6f * img_w, b[2] -= 0.6f * img_w; break;                      /* partly left */
        case 5: b[1] += img_h, b[3] += 1.5f * img_h; break;                               /* below the map */
        case 6: b[2] = b[0], b[3] = b[1]; break;                                          /* zero size */
        case 7: { float t = b[0]; b[0] = b[2], b[2] = t; } break;                         /* inverted */
        case 8: b[0] = -img_w, b[1] = -0.5f * img_h, b[2] = 2 * img_w, b[3] = 2 * img_h; break; /* huge */
        default: break;
        }
        rois[i * 5] = (float)(t_next(r) % (uint64_t)n);
        memcpy(rois + i * 5 + 1, b, 4 * sizeof(float));
    }
    free(boxes);
    return rois;
}

/* ---- CPU against the CUDA backend ------------------------------------------------------ */

#if TEST_HAS_CUDA
/* Shapes chosen to cross the kernels' boundaries: channel chunks (2048 / bins
 * channels in NCHW, 32 channel groups in NHWC), vector widths 1, 2, 4, 8
 * (C = 3, 6, 8, odd 45), more bins than threads (17 x 16), more bin rows and
 * columns than threads (130 + 140), and runs of samples longer than the
 * shared table (4 x 4 bins with 40 samples each). */
static const struct align_config {
    int ph, pw, sampling_ratio, aligned;
    int64_t c;
} align_configs[] = {
    {7, 7, 2, 0, 45},
    {2, 3, 0, 1, 8},
    {4, 4, 40, 1, 6},
    {17, 16, 1, 1, 3},
    {130, 140, 1, 0, 1},
};

/* RoI Align on the CUDA context against the CPU reference, under every schedule. */
static void check_forward_every_schedule(detpost_ctx *cpu, detpost_ctx *gpu, const detpost_roi_params *p,
                                         const roi_input *in, const char *label)
{
    float *want = run_forward(cpu, p, in, NULL);
    for (int s = 0; s < t_schedule_count(); ++s) {
        t_set_schedule(t_schedule(s));
        float *got = run_forward(gpu, p, in, NULL);
        char what[200];
        snprintf(what, sizeof what, "%s schedule %s", label, t_schedule(s) ? t_schedule(s) : "gpu");
        assert_same(got, want, in->num_rois * in->c * bins_of(p), what);
        free(got);
    }
    free(want);
}

Test(roi, align_cpu_vs_cuda)
{
    detpost_ctx *cpu = t_ctx(DETPOST_CPU), *gpu = t_ctx(DETPOST_CUDA);
    t_rng rng = {2024};
    for (size_t k = 0; k < sizeof align_configs / sizeof align_configs[0]; ++k) {
        const struct align_config *cf = &align_configs[k];
        roi_input in = {NULL, 2, cf->c, 13, 17, NULL, 20};
        float *features = random_features(&rng, in.n * in.c * in.h * in.w);
        float *rois = random_rois(&rng, in.num_rois, in.n, 68, 52);
        in.features = features, in.rois = rois;
        for (int layout = 0; layout < 2; ++layout)
            for (int dtype = 0; dtype < 2; ++dtype)
                for (int mode = 0; mode < 2; ++mode) {
                    detpost_roi_params p = {cf->ph, cf->pw, 0.25f, cf->sampling_ratio, cf->aligned,
                                            (detpost_roi_mode)mode, (detpost_layout)layout, (detpost_dtype)dtype, 0};
                    char label[120];
                    snprintf(label, sizeof label, "config %zu %s %s %s", k, layout_name(p.layout),
                             dtype_name(p.dtype), mode ? "max" : "avg");
                    check_forward_every_schedule(cpu, gpu, &p, &in, label);
                }
        free(features), free(rois);
    }
    detpost_destroy(cpu);
    detpost_destroy(gpu);
}

/* The NCHW kernel for fixed grids (lanes are sample columns, groups of the
 * power of two >= pooled_w * ratio lanes, one channel per group): every
 * group width from 1 to 32 lanes, ratios fixed at compile time (2) and not
 * (1, 3, 4; 3 x 3 samples divide by 9, not a power of two), 32 sample rows,
 * channel counts that leave a partial group and a partial chunk of 32, and
 * RoIs over several batches of 32 warps and several blocks. */
static const struct align_config row_configs[] = {
    {1, 1, 1, 0, 33},  /* 1 lane per group, 32 groups */
    {3, 1, 3, 1, 5},   /* 4 lanes, runtime ratio 3 */
    {2, 3, 2, 0, 70},  /* 8 lanes */
    {7, 7, 2, 1, 19},  /* 16 lanes */
    {4, 7, 4, 0, 3},   /* 32 lanes (28 used), runtime ratio 4 */
    {16, 16, 2, 1, 2}, /* 32 lanes, all used; 32 sample rows */
};

Test(roi, align_rows_cpu_vs_cuda)
{
    detpost_ctx *cpu = t_ctx(DETPOST_CPU), *gpu = t_ctx(DETPOST_CUDA);
    t_rng rng = {4242};
    for (size_t k = 0; k < sizeof row_configs / sizeof row_configs[0]; ++k) {
        const struct align_config *cf = &row_configs[k];
        roi_input in = {NULL, 3, cf->c, 11, 19, NULL, 70};
        float *features = random_features(&rng, in.n * in.c * in.h * in.w);
        float *rois = random_rois(&rng, in.num_rois, in.n, 76, 44);
        in.features = features, in.rois = rois;
        for (int dtype = 0; dtype < 2; ++dtype)
            for (int mode = 0; mode < 2; ++mode) {
                detpost_roi_params p = {cf->ph, cf->pw, 0.25f, cf->sampling_ratio, cf->aligned,
                                        (detpost_roi_mode)mode, DETPOST_NCHW, (detpost_dtype)dtype, 0};
                char label[120];
                snprintf(label, sizeof label, "row config %zu %s %s", k, dtype_name(p.dtype), mode ? "max" : "avg");
                check_forward_every_schedule(cpu, gpu, &p, &in, label);
            }
        free(features), free(rois);
    }
    detpost_destroy(cpu);
    detpost_destroy(gpu);
}

/* More RoIs than one sort chunk (4096): the second chunk is sorted and
 * pooled on its own, and every RoI of both is written. */
Test(roi, align_rows_two_sort_chunks)
{
    detpost_ctx *cpu = t_ctx(DETPOST_CPU), *gpu = t_ctx(DETPOST_CUDA);
    t_rng rng = {99};
    roi_input in = {NULL, 2, 2, 9, 13, NULL, 4096 + 77};
    float *features = random_features(&rng, in.n * in.c * in.h * in.w);
    float *rois = random_rois(&rng, in.num_rois, in.n, 52, 36);
    in.features = features, in.rois = rois;
    detpost_roi_params p = detpost_roi_params_default();
    p.pooled_h = 2, p.pooled_w = 3, p.sampling_ratio = 2, p.spatial_scale = 0.25f;
    float *want = run_forward(cpu, &p, &in, NULL);
    float *got = run_forward(gpu, &p, &in, NULL);
    assert_same(got, want, in.num_rois * in.c * bins_of(&p), "two sort chunks");
    free(want), free(got), free(features), free(rois);
    detpost_destroy(cpu);
    detpost_destroy(gpu);
}

Test(roi, pool_cpu_vs_cuda)
{
    detpost_ctx *cpu = t_ctx(DETPOST_CPU), *gpu = t_ctx(DETPOST_CUDA);
    t_rng rng = {77};
    roi_input in = {NULL, 2, 5, 11, 14, NULL, 25};
    float *features = random_features(&rng, in.n * in.c * in.h * in.w);
    float *rois = random_rois(&rng, in.num_rois, in.n, 56, 44);
    in.features = features, in.rois = rois;
    for (int layout = 0; layout < 2; ++layout)
        for (int dtype = 0; dtype < 2; ++dtype) {
            detpost_roi_params p = detpost_roi_params_default();
            p.pooled_h = 3, p.pooled_w = 4, p.spatial_scale = 0.25f;
            p.layout = (detpost_layout)layout, p.dtype = (detpost_dtype)dtype;
            int32_t *want_arg, *got_arg;
            float *want = run_forward(cpu, &p, &in, &want_arg);
            for (int s = 0; s < t_schedule_count(); ++s) {
                t_set_schedule(t_schedule(s));
                float *got = run_forward(gpu, &p, &in, &got_arg);
                const int64_t n = in.num_rois * in.c * bins_of(&p);
                assert_same(got, want, n, "roi pool");
                for (int64_t i = 0; i < n; ++i) cr_assert_eq(got_arg[i], want_arg[i], "argmax %lld", (long long)i);
                free(got), free(got_arg);
            }
            free(want), free(want_arg);
        }
    free(features), free(rois);
    detpost_destroy(cpu);
    detpost_destroy(gpu);
}
#endif

/* ---- multi-level RoI Align --------------------------------------------------------- */

/* The pyramid op against one single-level call per level on the RoIs the
 * pyramid sent there: same rows, bit for bit. canonical_scale 56 spreads the
 * boxes of a 128 x 160 image over all four levels. */
static void check_multilevel(detpost_backend backend, detpost_layout layout, detpost_dtype dtype)
{
    detpost_ctx *ctx = t_ctx(backend);
    t_rng rng = {31 + 2 * layout + dtype};
    const int64_t n = 2, c = 5, num_rois = 40;
    const int64_t hs[4] = {32, 16, 8, 4}, ws[4] = {40, 20, 10, 5};
    const size_t es = dtype_size(dtype);
    float *features[4];
    void *dev[4];
    detpost_feature_pyramid f = detpost_feature_pyramid_default();
    f.num_levels = 4, f.n = n, f.c = c, f.layout = layout, f.dtype = dtype, f.canonical_scale = 56;
    for (int l = 0; l < 4; ++l) {
        features[l] = random_features(&rng, n * c * hs[l] * ws[l]);
        void *raw = to_layout(features[l], n, c, hs[l] * ws[l], layout, dtype);
        dev[l] = t_up(ctx, raw, (size_t)(n * c * hs[l] * ws[l]) * es);
        free(raw);
        f.levels[l] = (detpost_pyramid_level){dev[l], hs[l], ws[l], 0.25f / (float)(1 << l)};
    }
    float *rois = random_rois(&rng, num_rois, n, 160, 128);
    for (int r = 0; r < 8; ++r) { /* one box of each level's size, twice */
        const float side = 20.0f * (float)(1 << (r % 4)), x = t_uniform(&rng, -10, 60), y = t_uniform(&rng, -10, 40);
        const float box[4] = {x, y, x + side, y + side * t_uniform(&rng, 0.8f, 1.2f)};
        memcpy(rois + r * 5 + 1, box, sizeof box);
    }
    detpost_roi_params p = detpost_roi_params_default();
    p.sampling_ratio = 2, p.aligned = 0, p.layout = layout, p.dtype = dtype;
    const int64_t bins = bins_of(&p);
    float *dr = t_up(ctx, rois, (size_t)num_rois * 5 * sizeof(float));
    void *dout = t_alloc(ctx, (size_t)(num_rois * c * bins) * es);
    int32_t *dl = t_alloc(ctx, (size_t)num_rois * sizeof(int32_t));
    for (int s = 0; s < (backend == DETPOST_CPU ? 1 : t_schedule_count()); ++s) {
        t_set_schedule(t_schedule(s));
        cr_assert_eq(detpost_multilevel_roi_align(ctx, &p, &f, dr, num_rois, dout, dl), DETPOST_OK, "%s",
                     detpost_last_error(ctx));
        void *raw = t_down(ctx, dout, (size_t)(num_rois * c * bins) * es);
        float *got = from_layout(raw, num_rois, c, bins, layout, dtype);
        int32_t *levels = t_down(ctx, dl, (size_t)num_rois * sizeof(int32_t));
        int used[4] = {0, 0, 0, 0};
        for (int l = 0; l < 4; ++l) {
            float *sub = malloc((size_t)num_rois * 5 * sizeof(float));
            int64_t k = 0, idx[40];
            for (int64_t r = 0; r < num_rois; ++r)
                if (levels[r] == l) {
                    memcpy(sub + k * 5, rois + r * 5, 5 * sizeof(float));
                    idx[k++] = r;
                }
            used[l] = (int)k;
            detpost_roi_params q = p;
            q.spatial_scale = f.levels[l].spatial_scale;
            roi_input in = {features[l], n, c, hs[l], ws[l], sub, k};
            float *want = run_forward(ctx, &q, &in, NULL);
            for (int64_t j = 0; j < k; ++j) {
                char what[128];
                snprintf(what, sizeof what, "RoI %lld on level %d (%s %s)", (long long)idx[j], l, layout_name(layout),
                         dtype_name(dtype));
                assert_same(got + idx[j] * c * bins, want + j * c * bins, c * bins, what);
            }
            free(want), free(sub);
        }
        for (int l = 0; l < 4; ++l) cr_assert_gt(used[l], 0, "no RoI went to level %d", l);
        free(raw), free(got), free(levels);
    }
    for (int l = 0; l < 4; ++l) {
        free(features[l]);
        t_free(ctx, dev[l]);
    }
    free(rois);
    t_free(ctx, dr), t_free(ctx, dout), t_free(ctx, dl);
    detpost_destroy(ctx);
}

#if TEST_HAS_CUDA
/* The pyramid op on CUDA against the CPU reference, outputs and levels bit
 * for bit (the test above compares CUDA with CUDA). */
static float *run_pyramid(detpost_ctx *ctx, const detpost_roi_params *p, float *const features[4],
                          const int64_t hs[4], const int64_t ws[4], int64_t n, int64_t c, const float *rois,
                          int64_t num_rois, int32_t **levels_out)
{
    const size_t es = dtype_size(p->dtype);
    const int64_t out_n = num_rois * c * bins_of(p);
    void *dev[4];
    detpost_feature_pyramid f = detpost_feature_pyramid_default();
    f.num_levels = 4, f.n = n, f.c = c, f.layout = p->layout, f.dtype = p->dtype, f.canonical_scale = 56;
    for (int l = 0; l < 4; ++l) {
        void *raw = to_layout(features[l], n, c, hs[l] * ws[l], p->layout, p->dtype);
        dev[l] = t_up(ctx, raw, (size_t)(n * c * hs[l] * ws[l]) * es);
        free(raw);
        f.levels[l] = (detpost_pyramid_level){dev[l], hs[l], ws[l], 0.25f / (float)(1 << l)};
    }
    float *dr = t_up(ctx, rois, (size_t)num_rois * 5 * sizeof(float));
    void *dout = t_alloc(ctx, (size_t)out_n * es);
    int32_t *dl = t_alloc(ctx, (size_t)num_rois * sizeof(int32_t));
    cr_assert_eq(detpost_multilevel_roi_align(ctx, p, &f, dr, num_rois, dout, dl), DETPOST_OK, "%s",
                 detpost_last_error(ctx));
    void *raw = t_down(ctx, dout, (size_t)out_n * es);
    float *out = from_layout(raw, num_rois, c, bins_of(p), p->layout, p->dtype);
    *levels_out = t_down(ctx, dl, (size_t)num_rois * sizeof(int32_t));
    free(raw);
    for (int l = 0; l < 4; ++l) t_free(ctx, dev[l]);
    t_free(ctx, dr), t_free(ctx, dout), t_free(ctx, dl);
    return out;
}

Test(roi, multilevel_cpu_vs_cuda)
{
    detpost_ctx *cpu = t_ctx(DETPOST_CPU), *gpu = t_ctx(DETPOST_CUDA);
    t_rng rng = {57};
    const int64_t n = 2, c = 37, num_rois = 45;
    const int64_t hs[4] = {32, 16, 8, 4}, ws[4] = {40, 20, 10, 5};
    float *features[4];
    for (int l = 0; l < 4; ++l) features[l] = random_features(&rng, n * c * hs[l] * ws[l]);
    float *rois = random_rois(&rng, num_rois, n, 160, 128);
    for (int dtype = 0; dtype < 2; ++dtype)
        for (int mode = 0; mode < 2; ++mode) {
            detpost_roi_params p = detpost_roi_params_default();
            p.sampling_ratio = 2, p.aligned = 0, p.dtype = (detpost_dtype)dtype, p.mode = (detpost_roi_mode)mode;
            int32_t *want_levels, *got_levels;
            float *want = run_pyramid(cpu, &p, features, hs, ws, n, c, rois, num_rois, &want_levels);
            for (int s = 0; s < t_schedule_count(); ++s) {
                t_set_schedule(t_schedule(s));
                float *got = run_pyramid(gpu, &p, features, hs, ws, n, c, rois, num_rois, &got_levels);
                char what[128];
                snprintf(what, sizeof what, "pyramid %s %s schedule %s", dtype_name(p.dtype), mode ? "max" : "avg",
                         t_schedule(s) ? t_schedule(s) : "gpu");
                assert_same(got, want, num_rois * c * bins_of(&p), what);
                for (int64_t r = 0; r < num_rois; ++r)
                    cr_assert_eq(got_levels[r], want_levels[r], "%s: level of RoI %lld", what, (long long)r);
                free(got), free(got_levels);
            }
            free(want), free(want_levels);
        }
    for (int l = 0; l < 4; ++l) free(features[l]);
    free(rois);
    detpost_destroy(cpu);
    detpost_destroy(gpu);
}
#endif

Test(roi, multilevel_matches_single_level_cpu)
{
    check_multilevel(DETPOST_CPU, DETPOST_NCHW, DETPOST_F32);
    check_multilevel(DETPOST_CPU, DETPOST_NHWC, DETPOST_F16);
}
#if TEST_HAS_CUDA
Test(roi, multilevel_matches_single_level_cuda)
{
    check_multilevel(DETPOST_CUDA, DETPOST_NCHW, DETPOST_F32);
    check_multilevel(DETPOST_CUDA, DETPOST_NHWC, DETPOST_F32);
    check_multilevel(DETPOST_CUDA, DETPOST_NHWC, DETPOST_F16);
}
#endif

/* ---- gradients --------------------------------------------------------------------- */

/* sum(out * weights) in double. */
static double weighted_sum(const float *out, const float *weights, int64_t n)
{
    double s = 0;
    for (int64_t i = 0; i < n; ++i) s += (double)out[i] * (double)weights[i];
    return s;
}

/* The CPU backward against central differences of the CPU forward of
 * L = sum(out * g). AVG is linear in the features, so the difference is
 * exact up to rounding; MAX and RoI Pool are piecewise linear, and an element
 * whose step moves a maximum (second difference not ~0) is skipped. */
static void check_gradient(const detpost_roi_params *p, grad_op op, uint64_t seed)
{
    detpost_ctx *cpu = t_ctx(DETPOST_CPU);
    t_rng rng = {seed};
    roi_input in = {NULL, 2, 2, 6, 7, NULL, 5};
    const int64_t feat_n = in.n * in.c * in.h * in.w, out_n = in.num_rois * in.c * bins_of(p);
    float *features = random_features(&rng, feat_n);
    float *rois = random_rois(&rng, in.num_rois, in.n, 7 / p->spatial_scale, 6 / p->spatial_scale);
    float *g = random_features(&rng, out_n);
    in.features = features, in.rois = rois;
    int32_t *argmax = NULL;
    float *base = run_forward(cpu, p, &in, op == GRAD_POOL ? &argmax : NULL);
    float *grad = run_backward(cpu, p, &in, g, op, argmax);
    const double l0 = weighted_sum(base, g, out_n);
    const float step = 1e-2f;
    int checked = 0;
    for (int64_t k = 0; k < feat_n; ++k) {
        const float keep = features[k];
        double l[2];
        for (int side = 0; side < 2; ++side) {
            features[k] = keep + (side ? -step : step);
            int32_t *unused = NULL;
            float *out = run_forward(cpu, p, &in, op == GRAD_POOL ? &unused : NULL);
            l[side] = weighted_sum(out, g, out_n);
            free(out), free(unused);
        }
        features[k] = keep;
        const double span = (double)(keep + step) - (double)(keep - step);
        if (fabs(l[0] + l[1] - 2 * l0) > 1e-5) continue; /* a maximum moved within the step */
        const double fd = (l[0] - l[1]) / span;
        cr_assert(fabs(fd - (double)grad[k]) <= 5e-4 + 1e-3 * fabs(fd),
                  "mode %d op %d: d/dfeature[%lld] is %.7g, central difference %.7g", (int)p->mode, (int)op,
                  (long long)k, (double)grad[k], fd);
        ++checked;
    }
    cr_assert_gt(checked, feat_n * 3 / 4, "only %d of %lld elements were checked", checked, (long long)feat_n);
    free(features), free(rois), free(g), free(argmax), free(base), free(grad);
    detpost_destroy(cpu);
}

Test(roi, align_gradient_matches_finite_differences)
{
    detpost_roi_params p = detpost_roi_params_default();
    p.pooled_h = 2, p.pooled_w = 3, p.spatial_scale = 0.5f;
    check_gradient(&p, GRAD_ALIGN, 5);
    p.sampling_ratio = 2, p.aligned = 0;
    check_gradient(&p, GRAD_ALIGN, 6);
    p.layout = DETPOST_NHWC;
    check_gradient(&p, GRAD_ALIGN, 7);
}

Test(roi, align_max_gradient_matches_finite_differences)
{
    detpost_roi_params p = detpost_roi_params_default();
    p.pooled_h = 2, p.pooled_w = 2, p.spatial_scale = 0.5f, p.mode = DETPOST_ROI_MAX;
    check_gradient(&p, GRAD_ALIGN, 8);
    p.sampling_ratio = 3, p.layout = DETPOST_NHWC;
    check_gradient(&p, GRAD_ALIGN, 9);
}

Test(roi, pool_gradient_matches_finite_differences)
{
    detpost_roi_params p = detpost_roi_params_default();
    p.pooled_h = 2, p.pooled_w = 2, p.spatial_scale = 0.5f;
    check_gradient(&p, GRAD_POOL, 10);
    p.layout = DETPOST_NHWC;
    check_gradient(&p, GRAD_POOL, 11);
}

/* Deterministic mode is a function of the inputs alone: the same bits twice
 * and, since both backends sum the same fixed-point numbers, on both
 * backends; it agrees with the float-atomic mode to float accuracy. */
static void check_backward_backends(grad_op op, detpost_roi_mode mode, int ph, int pw, int sampling_ratio,
                                    int64_t num_rois)
{
    detpost_ctx *cpu = t_ctx(DETPOST_CPU);
    detpost_ctx *gpu = TEST_HAS_CUDA ? t_ctx(DETPOST_CUDA) : NULL;
    t_rng rng = {400 + 10 * (uint64_t)op + (uint64_t)mode + (uint64_t)sampling_ratio};
    roi_input in = {NULL, 2, 6, 9, 11, NULL, num_rois};
    const int64_t feat_n = in.n * in.c * in.h * in.w;
    float *features = random_features(&rng, feat_n);
    float *rois = random_rois(&rng, in.num_rois, in.n, 44, 36);
    in.features = features, in.rois = rois;
    for (int layout = 0; layout < 2; ++layout)
        for (int dtype = 0; dtype < 2; ++dtype) {
            detpost_roi_params p = detpost_roi_params_default();
            p.pooled_h = ph, p.pooled_w = pw, p.sampling_ratio = sampling_ratio, p.spatial_scale = 0.25f, p.mode = mode;
            p.layout = (detpost_layout)layout, p.dtype = (detpost_dtype)dtype;
            const int64_t out_n = in.num_rois * in.c * bins_of(&p);
            float *g = random_features(&rng, out_n);
            int32_t *argmax = NULL;
            float *fwd = run_forward(cpu, &p, &in, op == GRAD_POOL ? &argmax : NULL);
            char what[160];
            snprintf(what, sizeof what, "op %d mode %d %s %s", (int)op, (int)mode, layout_name(p.layout),
                     dtype_name(p.dtype));
            const float tol = p.dtype == DETPOST_F16 ? 2e-3f : 2e-5f;
            float *atomic = run_backward(cpu, &p, &in, g, op, argmax);
            p.deterministic = 1;
            float *fixed = run_backward(cpu, &p, &in, g, op, argmax);
            float *again = run_backward(cpu, &p, &in, g, op, argmax);
            assert_same(again, fixed, feat_n, what);
            t_assert_close(fixed, atomic, feat_n, tol, tol, what);
            for (int s = 0; gpu && s < t_schedule_count(); ++s) {
                t_set_schedule(t_schedule(s));
                p.deterministic = 1;
                float *got_fixed = run_backward(gpu, &p, &in, g, op, argmax);
                assert_same(got_fixed, fixed, feat_n, what);
                p.deterministic = 0;
                float *got_atomic = run_backward(gpu, &p, &in, g, op, argmax);
                t_assert_close(got_atomic, atomic, feat_n, tol, tol, what);
                free(got_fixed), free(got_atomic);
            }
            free(g), free(argmax), free(fwd), free(atomic), free(fixed), free(again);
        }
    free(features), free(rois);
    detpost_destroy(cpu);
    detpost_destroy(gpu);
}

Test(roi, align_backward_backends_and_determinism)
{
    check_backward_backends(GRAD_ALIGN, DETPOST_ROI_AVG, 3, 2, 0, 30);
}

Test(roi, align_max_backward_backends_and_determinism)
{
    check_backward_backends(GRAD_ALIGN, DETPOST_ROI_MAX, 3, 2, 0, 30);
}

Test(roi, pool_backward_backends_and_determinism) { check_backward_backends(GRAD_POOL, DETPOST_ROI_AVG, 3, 2, 0, 30); }

/* 4 bin rows of 33 samples each: more than the kernels' shared table holds,
 * so they compute every corner as they go. */
Test(roi, align_backward_long_sample_runs)
{
    check_backward_backends(GRAD_ALIGN, DETPOST_ROI_AVG, 4, 1, 33, 4);
    check_backward_backends(GRAD_ALIGN, DETPOST_ROI_MAX, 4, 1, 33, 4);
}

/* The deterministic backward's conversion rounds the exact fixed-point sum
 * once to the output type: cases where a double in between would round
 * twice, the subnormal ranges, and random sums against long double (which
 * holds every int64 exactly, so one rounding to float is exact there). */
Test(roi, fixed_point_sums_round_once)
{
    const int64_t two60 = (int64_t)1 << 60;
    cr_assert_eq(dp_from_fixed(two60 + ((int64_t)1 << 36) + 1, 0, DETPOST_F32), 0x1.000002p60f);
    cr_assert_eq(dp_from_fixed(-(two60 + ((int64_t)1 << 36) + 1), 0, DETPOST_F32), -0x1.000002p60f);
    cr_assert_eq(dp_from_fixed(two60 + ((int64_t)1 << 36), 0, DETPOST_F32), 0x1p60f, "a tie goes to even");
    /* half: 1 + 2^-11 + 2^-40 is above the tie between 1 and 1 + 2^-10 */
    const int64_t one = (int64_t)1 << 40;
    cr_assert_eq(dp_float_to_half(dp_from_fixed(one + ((int64_t)1 << 29) + 1, 40, DETPOST_F16)), 0x3c01);
    cr_assert_eq(dp_float_to_half(dp_from_fixed(one + ((int64_t)1 << 29), 40, DETPOST_F16)), 0x3c00);
    /* subnormal ranges: half's last digit is 2^-24, float's 2^-149 */
    cr_assert_eq(dp_from_fixed(3, 25, DETPOST_F16), 0x1p-23f, "3 * 2^-25 is 1.5 digits: a tie, to even, 2");
    cr_assert_eq(dp_from_fixed(1, 25, DETPOST_F16), 0.0f, "2^-25 is a tie: to even, 0");
    cr_assert_eq(dp_from_fixed(3, 150, DETPOST_F32), 0x1p-148f, "3 * 2^-150 is 1.5 digits: a tie, to even, 2");
    cr_assert_eq(dp_from_fixed(0, 7, DETPOST_F32), 0.0f);
    t_rng rng = {404};
    for (int i = 0; i < 100000; ++i) {
        const int64_t mag = (int64_t)(t_next(&rng) >> (3 + t_next(&rng) % 60));
        const int64_t sum = t_next(&rng) % 2 ? mag : -mag;
        const int e = (int)(t_next(&rng) % 200) - 20;
        const float want = (float)ldexpl((long double)sum, -e);
        const float got = dp_from_fixed(sum, e, DETPOST_F32);
        cr_assert(got == want || (got == 0 && want == 0), "sum %lld e %d: %a, want %a", (long long)sum, e,
                  (double)got, (double)want);
    }
}

/* MAX mode where the bin's maximum is exactly 0 and samples lie off the map
 * (which count as 0): the gradient goes to the first maximum in row-major
 * sample order, so nowhere when an off-map sample comes first. One 1 x 1 bin
 * of 2 x 2 samples (aligned 0) on a 4 x 4 map; the sum of grad_features is
 * the gradient that reached the map (1 when an on-map sample won). */
static void check_max_zero_ties(detpost_backend backend)
{
    static const struct {
        float roi[5];
        float first_row; /* value of the map's row 0; the other rows are 0 */
        float want_sum;
        const char *what;
    } cases[] = {
        {{0, -3, 0, 1, 2}, 0.0f, 0.0f, "x samples -2 (off) and 0: the off-map sample is first"},
        {{0, 0, 0, 7, 1}, 0.0f, 1.0f, "x samples 1.75 and 5.25 (off): the on-map sample is first"},
        {{0, 0, 0, 7, 2}, -1.0f, 0.0f, "row 0 is -0.5 then off-map, row 1 is 0: the end of row 0 is first"},
        {{0, 0, 0, 3, 2}, -1.0f, 1.0f, "every sample on the map: row 1's 0 is the maximum"},
    };
    detpost_ctx *ctx = t_ctx(backend);
    detpost_roi_params p = detpost_roi_params_default();
    p.pooled_h = p.pooled_w = 1, p.sampling_ratio = 2, p.aligned = 0, p.mode = DETPOST_ROI_MAX;
    const float grad_out[1] = {1.0f};
    for (int sch = 0; sch < (backend == DETPOST_CUDA ? t_schedule_count() : 1); ++sch) {
        if (backend == DETPOST_CUDA) t_set_schedule(t_schedule(sch));
        for (size_t k = 0; k < sizeof cases / sizeof cases[0]; ++k) {
            float features[16] = {0};
            for (int x = 0; x < 4; ++x) features[x] = cases[k].first_row;
            const roi_input in = {features, 1, 1, 4, 4, cases[k].roi, 1};
            float *out = run_forward(ctx, &p, &in, NULL);
            cr_assert_eq(out[0], 0.0f, "%s: forward %g", cases[k].what, (double)out[0]);
            float *grad = run_backward(ctx, &p, &in, grad_out, GRAD_ALIGN, NULL);
            double sum = 0;
            for (int i = 0; i < 16; ++i) sum += grad[i];
            cr_assert_eq(sum, cases[k].want_sum, "%s: gradient sum %g, want %g", cases[k].what, sum,
                         (double)cases[k].want_sum);
            free(out), free(grad);
        }
    }
    detpost_destroy(ctx);
}

Test(roi, max_gradient_of_zero_ties_cpu) { check_max_zero_ties(DETPOST_CPU); }
#if TEST_HAS_CUDA
Test(roi, max_gradient_of_zero_ties_cuda) { check_max_zero_ties(DETPOST_CUDA); }
#endif

/* A non-finite grad_out cannot be held in fixed point: deterministic mode
 * answers NaN everywhere, on both backends, rather than a wrong number. */
static void check_nonfinite_gradient(detpost_backend backend)
{
    detpost_ctx *ctx = t_ctx(backend);
    const float features[16] = {0};
    const float rois[5] = {0, 0, 0, 3, 3};
    float g[4] = {1, INFINITY, 2, 3};
    roi_input in = {features, 1, 1, 4, 4, rois, 1};
    detpost_roi_params p = detpost_roi_params_default();
    p.pooled_h = p.pooled_w = 2, p.deterministic = 1;
    float *grad = run_backward(ctx, &p, &in, g, GRAD_ALIGN, NULL);
    for (int i = 0; i < 16; ++i) cr_assert(isnan(grad[i]), "element %d is %g", i, (double)grad[i]);
    free(grad);
    detpost_destroy(ctx);
}

Test(roi, deterministic_backward_nonfinite_cpu) { check_nonfinite_gradient(DETPOST_CPU); }
#if TEST_HAS_CUDA
Test(roi, deterministic_backward_nonfinite_cuda) { check_nonfinite_gradient(DETPOST_CUDA); }
#endif

/* ---- invalid rows ---------------------------------------------------------------------- */

static const float bad_rois[4 * 5] = {
    0, 1, 1, 6, 5,   /* valid */
    2, 1, 1, 6, 5,   /* batch index 2 of n = 2 */
    1, NAN, 1, 6, 5, /* NaN coordinate */
    -1, 0, 0, 2, 2,  /* negative batch index */
};

Test(roi, cpu_refuses_invalid_rows_before_writing)
{
    detpost_ctx *cpu = t_ctx(DETPOST_CPU);
    float features[2 * 1 * 6 * 7] = {0};
    float out[4 * 4];
    int32_t arg[4 * 4];
    for (int i = 0; i < 16; ++i) out[i] = -7.0f, arg[i] = -7;
    detpost_roi_params p = detpost_roi_params_default();
    p.pooled_h = p.pooled_w = 2;
    for (int k = 1; k < 4; ++k) {
        float rows[10];
        memcpy(rows, bad_rois, 5 * sizeof(float));
        memcpy(rows + 5, bad_rois + 5 * k, 5 * sizeof(float));
        cr_assert_eq(detpost_roi_align(cpu, &p, features, 2, 1, 6, 7, rows, 2, out), DETPOST_ERR_INVALID_ARGUMENT);
        cr_assert(strstr(detpost_last_error(cpu), "rois[1]") != NULL, "%s", detpost_last_error(cpu));
        cr_assert_eq(detpost_roi_pool(cpu, &p, features, 2, 1, 6, 7, rows, 2, out, arg), DETPOST_ERR_INVALID_ARGUMENT);
        cr_assert_eq(detpost_roi_align_backward(cpu, &p, out, rows, 2, 2, 1, 6, 7, features),
                     DETPOST_ERR_INVALID_ARGUMENT);
        for (int i = 0; i < 16; ++i) cr_assert(out[i] == -7.0f && arg[i] == -7, "case %d wrote its output", k);
        for (int i = 0; i < 84; ++i) cr_assert_eq(features[i], 0.0f, "case %d wrote grad_features", k);
    }
    int64_t first = 99;
    cr_assert_eq(detpost_roi_check(cpu, bad_rois, 4, 2, &first), DETPOST_OK);
    cr_assert_eq(first, 1);
    cr_assert_eq(detpost_roi_check(cpu, bad_rois, 1, 2, &first), DETPOST_OK);
    cr_assert_eq(first, -1);
    detpost_destroy(cpu);
}

#if TEST_HAS_CUDA
/* A CUDA context cannot refuse rows it has not seen: kernels skip them
 * (zeros, argmax -1, level -1, no gradient), the next wait answers the first
 * one as INVALID_ARGUMENT, and detpost_roi_check names it on request. */
Test(roi, cuda_skips_invalid_rows)
{
    detpost_ctx *cpu = t_ctx(DETPOST_CPU), *gpu = t_ctx(DETPOST_CUDA);
    expected_fault = "rois[1] with a batch index outside";
    t_rng rng = {12};
    roi_input in = {NULL, 2, 3, 6, 7, bad_rois, 4};
    float *features = random_features(&rng, 2 * 3 * 6 * 7);
    in.features = features;
    detpost_roi_params p = detpost_roi_params_default();
    p.pooled_h = p.pooled_w = 2, p.sampling_ratio = 2;
    roi_input first_only = in;
    first_only.num_rois = 1;
    const int64_t per_roi = 3 * 4;
    int32_t *arg, *want_arg;
    float *got = run_forward(gpu, &p, &in, NULL), *want = run_forward(cpu, &p, &first_only, NULL);
    assert_same(got, want, per_roi, "the valid row");
    for (int64_t i = per_roi; i < 4 * per_roi; ++i) cr_assert_eq(got[i], 0.0f, "invalid rows give 0");
    free(got), free(want);
    got = run_forward(gpu, &p, &in, &arg), want = run_forward(cpu, &p, &first_only, &want_arg);
    assert_same(got, want, per_roi, "the valid row (pool)");
    for (int64_t i = per_roi; i < 4 * per_roi; ++i)
        cr_assert(got[i] == 0.0f && arg[i] == -1, "invalid rows give 0, -1");
    float *g = random_features(&rng, 4 * per_roi);
    float *grad = run_backward(gpu, &p, &in, g, GRAD_ALIGN, NULL);
    float *want_grad = run_backward(cpu, &p, &first_only, g, GRAD_ALIGN, NULL);
    t_assert_close(grad, want_grad, 2 * 3 * 6 * 7, 1e-6f, 1e-5f, "only the valid row contributes");
    free(grad), free(want_grad);
    /* deterministic: an invalid row's gradient, however large, does not set the fixed-point scale */
    detpost_roi_params det = p;
    det.deterministic = 1;
    const float huge[2] = {1e30f, INFINITY};
    for (int k = 0; k < 2; ++k)
        for (int op = GRAD_ALIGN; op <= GRAD_POOL; ++op) {
            for (int64_t i = per_roi; i < 4 * per_roi; ++i) g[i] = i % 2 ? huge[k] : -huge[k];
            grad = run_backward(gpu, &det, &in, g, (grad_op)op, arg);
            want_grad = run_backward(cpu, &det, &first_only, g, (grad_op)op, arg);
            assert_same(grad, want_grad, 2 * 3 * 6 * 7, op == GRAD_POOL ? "deterministic pool" : "deterministic align");
            free(grad), free(want_grad);
        }
    free(got), free(want), free(arg), free(want_arg), free(g);

    float *dr = t_up(gpu, bad_rois, sizeof bad_rois);
    int64_t *dfirst = t_alloc(gpu, sizeof(int64_t)), first = 99;
    cr_assert_eq(detpost_roi_check(gpu, dr, 4, 2, dfirst), DETPOST_OK);
    cr_assert_eq(detpost_to_host(gpu, &first, dfirst, sizeof first), DETPOST_OK);
    cr_assert_eq(first, 1);
    cr_assert_eq(detpost_roi_check(gpu, dr + 10, 2, 2, dfirst), DETPOST_OK);
    cr_assert_eq(detpost_to_host(gpu, &first, dfirst, sizeof first), DETPOST_OK);
    cr_assert_eq(first, 0);
    cr_assert_eq(detpost_roi_check(gpu, dr, 1, 2, dfirst), DETPOST_OK);
    cr_assert_eq(detpost_to_host(gpu, &first, dfirst, sizeof first), DETPOST_OK);
    cr_assert_eq(first, -1);

    /* the pyramid marks them with level -1 */
    detpost_feature_pyramid f = detpost_feature_pyramid_default();
    f.num_levels = 1, f.n = 2, f.c = 3;
    void *dfeat = t_up(gpu, features, sizeof(float) * 2 * 3 * 6 * 7);
    f.levels[0] = (detpost_pyramid_level){dfeat, 6, 7, 1.0f};
    int32_t *dl = t_alloc(gpu, 4 * sizeof(int32_t)), levels[4];
    float *dout = t_alloc(gpu, 4 * per_roi * sizeof(float));
    cr_assert_eq(detpost_multilevel_roi_align(gpu, &p, &f, dr, 4, dout, dl), DETPOST_OK, "%s", detpost_last_error(gpu));
    t_expect_fault(gpu, expected_fault);
    cr_assert_eq(detpost_to_host(gpu, levels, dl, sizeof levels), DETPOST_OK);
    cr_assert(levels[0] == 0 && levels[1] == -1 && levels[2] == -1 && levels[3] == -1);
    /* detpost_to_host waits too: it copies, then answers the fault */
    cr_assert_eq(detpost_multilevel_roi_align(gpu, &p, &f, dr, 4, dout, dl), DETPOST_OK);
    memset(levels, 0x55, sizeof levels);
    cr_assert_eq(detpost_to_host(gpu, levels, dl, sizeof levels), DETPOST_ERR_INVALID_ARGUMENT);
    cr_assert(strstr(detpost_last_error(gpu), expected_fault) != NULL, "%s", detpost_last_error(gpu));
    cr_assert(levels[0] == 0 && levels[1] == -1, "the copy itself was made");
    /* with nothing to compute (no channels, an empty map) the rows are still answered, as on the CPU */
    cr_assert_eq(detpost_roi_align(gpu, &p, dfeat, 2, 0, 6, 7, dr, 4, dout), DETPOST_OK);
    t_expect_fault(gpu, expected_fault);
    cr_assert_eq(detpost_roi_align_backward(gpu, &p, dout, dr, 4, 2, 3, 0, 7, dout), DETPOST_OK);
    t_expect_fault(gpu, expected_fault);
    t_free(gpu, dr), t_free(gpu, dfirst), t_free(gpu, dfeat), t_free(gpu, dl), t_free(gpu, dout);
    free(features);
    detpost_destroy(cpu);
    detpost_destroy(gpu);
}

/* An argmax outside [-1, h * w) handed to RoI Pool backward: the CPU refuses
 * it (bad_input tests); a CUDA context skips that element, as if it were -1,
 * and the next wait names it. */
Test(roi, cuda_records_argmax_outside_the_map)
{
    detpost_ctx *cpu = t_ctx(DETPOST_CPU), *gpu = t_ctx(DETPOST_CUDA);
    t_rng rng = {15};
    float *features = random_features(&rng, 2 * 3 * 6 * 7), *rois = random_rois(&rng, 5, 2, 7, 6);
    const roi_input in = {features, 2, 3, 6, 7, rois, 5};
    detpost_roi_params p = detpost_roi_params_default();
    p.pooled_h = p.pooled_w = 2;
    const int64_t out_n = 5 * 3 * 4;
    int32_t *arg;
    free(run_forward(cpu, &p, &in, &arg));
    float *g = random_features(&rng, out_n);
    for (int det = 0; det <= 1; ++det) {
        p.deterministic = det;
        int32_t *bad = malloc(out_n * sizeof(int32_t)), *skipped = malloc(out_n * sizeof(int32_t));
        memcpy(bad, arg, out_n * sizeof(int32_t)), memcpy(skipped, arg, out_n * sizeof(int32_t));
        bad[17] = -2, bad[40] = 6 * 7, skipped[17] = skipped[40] = -1;
        expected_fault = "argmax[17] outside [-1, h * w)";
        float *got = run_backward(gpu, &p, &in, g, GRAD_POOL, bad);
        expected_fault = NULL;
        float *want = run_backward(cpu, &p, &in, g, GRAD_POOL, skipped);
        t_assert_close(got, want, 2 * 3 * 6 * 7, det ? 0.0f : 1e-6f, det ? 0.0f : 1e-5f, "argmax outside the map");
        free(got), free(want), free(bad), free(skipped);
    }
    free(features), free(rois), free(arg), free(g);
    detpost_destroy(cpu);
    detpost_destroy(gpu);
}

#if TEST_HAS_CUDA
/* Every RoI op, each into its own outputs; backwards deterministic so that
 * the replay can be compared bit for bit on a GPU too. */
typedef struct roi_graph {
    const float *features, *rois;
    int64_t n, c, h, w, num_rois;
    float *align, *align_grad, *pool, *pool_grad, *multi;
    int32_t *argmax, *levels;
    int64_t *first;
} roi_graph;

static void roi_graph_ops(detpost_ctx *ctx, void *arg)
{
    const roi_graph *g = arg;
    detpost_roi_params p = detpost_roi_params_default();
    p.pooled_h = p.pooled_w = 2, p.spatial_scale = 0.25f, p.deterministic = 1;
    detpost_feature_pyramid f = detpost_feature_pyramid_default();
    f.num_levels = 1, f.n = g->n, f.c = g->c;
    f.levels[0] = (detpost_pyramid_level){g->features, g->h, g->w, 0.25f};
    cr_assert_eq(detpost_roi_align(ctx, &p, g->features, g->n, g->c, g->h, g->w, g->rois, g->num_rois, g->align),
                 DETPOST_OK, "%s", detpost_last_error(ctx));
    cr_assert_eq(detpost_roi_align_backward(ctx, &p, g->align, g->rois, g->num_rois, g->n, g->c, g->h, g->w,
                                            g->align_grad),
                 DETPOST_OK, "%s", detpost_last_error(ctx));
    cr_assert_eq(detpost_roi_pool(ctx, &p, g->features, g->n, g->c, g->h, g->w, g->rois, g->num_rois, g->pool,
                                  g->argmax),
                 DETPOST_OK, "%s", detpost_last_error(ctx));
    cr_assert_eq(detpost_roi_pool_backward(ctx, &p, g->pool, g->argmax, g->rois, g->num_rois, g->n, g->c, g->h, g->w,
                                           g->pool_grad),
                 DETPOST_OK, "%s", detpost_last_error(ctx));
    cr_assert_eq(detpost_multilevel_roi_align(ctx, &p, &f, g->rois, g->num_rois, g->multi, g->levels), DETPOST_OK,
                 "%s", detpost_last_error(ctx));
    cr_assert_eq(detpost_roi_check(ctx, g->rois, g->num_rois, g->n, g->first), DETPOST_OK, "%s",
                 detpost_last_error(ctx));
}

static void roi_graph_inputs(detpost_ctx *ctx, void *arg, int round)
{
    const roi_graph *g = arg;
    t_rng rng = {9 + (uint64_t)round};
    float *features = random_features(&rng, g->n * g->c * g->h * g->w);
    float *rois = random_rois(&rng, g->num_rois, g->n, 36, 32);
    cr_assert_eq(detpost_to_ctx(ctx, (void *)g->features, features, (size_t)(g->n * g->c * g->h * g->w) * 4),
                 DETPOST_OK);
    cr_assert_eq(detpost_to_ctx(ctx, (void *)g->rois, rois, (size_t)g->num_rois * 20), DETPOST_OK);
    free(features), free(rois);
}

/* RoI Align and Pool, forward and backward, multi-level and the RoI check
 * captured in a CUDA graph: the capture runs nothing, and launched on new
 * features and RoIs in the same buffers the graph writes what direct calls
 * on them write. */
Test(roi, cuda_graph_replay)
{
    detpost_ctx *gpu = t_ctx(DETPOST_CUDA);
    void *stream = t_own_stream(gpu);
    roi_graph g = {.n = 2, .c = 4, .h = 8, .w = 9, .num_rois = 6};
    const size_t feat = (size_t)(g.n * g.c * g.h * g.w) * 4, out = (size_t)(g.num_rois * g.c * 4) * 4;
    g.features = t_alloc(gpu, feat), g.rois = t_alloc(gpu, (size_t)g.num_rois * 20);
    roi_graph_inputs(gpu, &g, -1);
    g.align = t_alloc(gpu, out), g.align_grad = t_alloc(gpu, feat), g.pool = t_alloc(gpu, out);
    g.pool_grad = t_alloc(gpu, feat), g.multi = t_alloc(gpu, out), g.argmax = t_alloc(gpu, out);
    g.levels = t_alloc(gpu, (size_t)g.num_rois * 4), g.first = t_alloc(gpu, 8);
    const t_region outs[] = {{g.align, out}, {g.align_grad, feat}, {g.pool, out}, {g.pool_grad, feat},
                             {g.multi, out},  {g.argmax, out},     {g.levels, (size_t)g.num_rois * 4},
                             {g.first, 8}};
    t_check_graph_replay(gpu, stream, roi_graph_ops, &g, outs, 8, roi_graph_inputs);
    t_free(gpu, (void *)g.features), t_free(gpu, (void *)g.rois), t_free(gpu, g.align), t_free(gpu, g.align_grad);
    t_free(gpu, g.pool), t_free(gpu, g.pool_grad), t_free(gpu, g.multi), t_free(gpu, g.argmax);
    t_free(gpu, g.levels), t_free(gpu, g.first);
    detpost_destroy(gpu);
    t_stream_destroy(stream);
}
#endif

/* Operations enqueue work and return: no host synchronisation, and no
 * allocation once the arena has grown. */
#if defined(DETPOST_SIM)
Test(roi, ops_never_synchronise)
{
    detpost_ctx *gpu = t_ctx(DETPOST_CUDA);
    t_rng rng = {8};
    const int64_t n = 1, c = 4, h = 8, w = 9, num_rois = 6, out_n = num_rois * c * 4;
    float *features = random_features(&rng, n * c * h * w), *rois = random_rois(&rng, num_rois, n, 36, 32);
    float *df = t_up(gpu, features, (size_t)(n * c * h * w) * 4), *dr = t_up(gpu, rois, (size_t)num_rois * 20);
    float *dout = t_alloc(gpu, (size_t)out_n * 4), *dgrad = t_alloc(gpu, (size_t)(n * c * h * w) * 4);
    int32_t *darg = t_alloc(gpu, (size_t)out_n * 4), *dl = t_alloc(gpu, (size_t)num_rois * 4);
    int64_t *dfirst = t_alloc(gpu, 8);
    detpost_roi_params p = detpost_roi_params_default();
    p.pooled_h = p.pooled_w = 2, p.spatial_scale = 0.25f;
    detpost_feature_pyramid f = detpost_feature_pyramid_default();
    f.num_levels = 1, f.n = n, f.c = c;
    f.levels[0] = (detpost_pyramid_level){df, h, w, 0.25f};
    unsigned long long syncs = 0;
    size_t live = 0;
    for (int round = 0; round < 2; ++round) {
        if (round == 1) syncs = simt_sync_count(), live = simt_live_allocations();
        for (int det = 0; det < 2; ++det) {
            p.deterministic = det;
            cr_assert_eq(detpost_roi_align(gpu, &p, df, n, c, h, w, dr, num_rois, dout), DETPOST_OK);
            cr_assert_eq(detpost_roi_align_backward(gpu, &p, dout, dr, num_rois, n, c, h, w, dgrad), DETPOST_OK);
            cr_assert_eq(detpost_roi_pool(gpu, &p, df, n, c, h, w, dr, num_rois, dout, darg), DETPOST_OK);
            cr_assert_eq(detpost_roi_pool_backward(gpu, &p, dout, darg, dr, num_rois, n, c, h, w, dgrad), DETPOST_OK);
            cr_assert_eq(detpost_multilevel_roi_align(gpu, &p, &f, dr, num_rois, dout, dl), DETPOST_OK);
            cr_assert_eq(detpost_roi_check(gpu, dr, num_rois, n, dfirst), DETPOST_OK);
        }
    }
    cr_assert_eq(simt_sync_count(), syncs, "an operation synchronised with the host");
    cr_assert_eq(simt_live_allocations(), live, "an operation allocated in steady state");
    free(features), free(rois);
    t_free(gpu, df), t_free(gpu, dr), t_free(gpu, dout), t_free(gpu, dgrad), t_free(gpu, darg), t_free(gpu, dl),
        t_free(gpu, dfirst);
    detpost_destroy(gpu);
}
#endif

Test(roi, caller_workspace)
{
    detpost_ctx *gpu = t_ctx(DETPOST_CUDA);
    const int64_t n = 1, c = 2, h = 5, w = 6;
    const float rois[5] = {0, 1, 1, 4, 3};
    float features[60], grad_out[2 * 49];
    for (int i = 0; i < 60; ++i) features[i] = (float)i;
    for (int i = 0; i < 98; ++i) grad_out[i] = 1.0f;
    detpost_roi_params p = detpost_roi_params_default();
    p.deterministic = 1;
    size_t need = 0;
    cr_assert_eq(detpost_roi_workspace_size(gpu, &p, n, c, h, w, &need), DETPOST_OK);
    cr_assert_geq(need, (size_t)(n * c * h * w) * 8, "fixed point needs 8 bytes per element");
    float *dr = t_up(gpu, rois, sizeof rois), *dg = t_up(gpu, grad_out, sizeof grad_out);
    float *dgrad = t_alloc(gpu, sizeof features);
    void *small = t_alloc(gpu, need / 2);
    cr_assert_eq(detpost_set_workspace(gpu, small, need / 2), DETPOST_OK);
    cr_assert_eq(detpost_roi_align_backward(gpu, &p, dg, dr, 1, n, c, h, w, dgrad), DETPOST_ERR_WORKSPACE_TOO_SMALL);
    char *big = t_alloc(gpu, need + 1);
    cr_assert_eq(detpost_set_workspace(gpu, big + 1, need), DETPOST_OK);
    cr_assert_eq(detpost_roi_align_backward(gpu, &p, dg, dr, 1, n, c, h, w, dgrad), DETPOST_OK, "%s",
                 detpost_last_error(gpu));
    p.deterministic = 0;
    cr_assert_eq(detpost_roi_workspace_size(gpu, &p, n, c, h, w, &need), DETPOST_OK);
    cr_assert_eq(need, 0, "float32 atomics need no workspace on CUDA");
    cr_assert_eq(detpost_set_workspace(gpu, NULL, 0), DETPOST_OK);
    t_free(gpu, dr), t_free(gpu, dg), t_free(gpu, dgrad), t_free(gpu, small), t_free(gpu, big);
    detpost_destroy(gpu);
}
#endif

/* ---- bad input ------------------------------------------------------------------------ */

Test(roi, bad_input_gets_status_and_message)
{
    detpost_ctx *cpu = t_ctx(DETPOST_CPU);
    float features[2 * 6 * 7] = {0}, out[8] = {-7, -7, -7, -7, -7, -7, -7, -7};
    int32_t arg[8] = {-7, -7, -7, -7, -7, -7, -7, -7};
    const float rois[10] = {0, 1, 1, 4, 4, 1, 0, 0, 2, 2};
    const detpost_roi_params d = detpost_roi_params_default();
    detpost_roi_params p = d;
    p.pooled_h = p.pooled_w = 2;
    cr_assert_eq(detpost_roi_align(NULL, &p, features, 2, 1, 6, 7, rois, 2, out), DETPOST_ERR_INVALID_ARGUMENT);

    const detpost_status INVALID = DETPOST_ERR_INVALID_ARGUMENT, UNSUPPORTED = DETPOST_ERR_UNSUPPORTED;
    const float *feat = features, *r = rois;
    const int64_t huge = (int64_t)1 << 32;
    struct {
        detpost_roi_params p;
        const void *features;
        int64_t n, c, h, w;
        const float *rois;
        int64_t num_rois;
        void *out;
        detpost_status status;
        const char *needle;
    } bad[] = {
        {p, NULL, 2, 1, 6, 7, r, 2, out, INVALID, "features is NULL"},
        {p, feat, 2, 1, 6, 7, NULL, 2, out, INVALID, "rois is NULL"},
        {p, feat, 2, 1, 6, 7, r, 2, NULL, INVALID, "out is NULL"},
        {p, feat, -2, 1, 6, 7, r, 2, out, INVALID, "n is negative"},
        {p, feat, 2, -1, 6, 7, r, 2, out, INVALID, "c is negative"},
        {p, feat, 2, 1, -6, 7, r, 2, out, INVALID, "h is negative"},
        {p, feat, 2, 1, 6, -7, r, 2, out, INVALID, "w is negative"},
        {p, feat, 2, 1, 6, 7, r, -2, out, INVALID, "num_rois is negative"},
        {p, feat, 2, 1, huge, 7, r, 2, out, UNSUPPORTED, "below 2^31"},
        {p, feat, INT64_MAX / 4, 4, 6, 7, r, 2, out, INVALID, "overflow"},
        {{0, 2, 1, 0, 1, 0, 0, 0, 0}, feat, 2, 1, 6, 7, r, 2, out, INVALID, "pooled"},
        {{2, 300, 1, 0, 1, 0, 0, 0, 0}, feat, 2, 1, 6, 7, r, 2, out, UNSUPPORTED, "pooled"},
        {{2, 2, NAN, 0, 1, 0, 0, 0, 0}, feat, 2, 1, 6, 7, r, 2, out, INVALID, "spatial_scale"},
        {{2, 2, 0, 0, 1, 0, 0, 0, 0}, feat, 2, 1, 6, 7, r, 2, out, INVALID, "spatial_scale"},
        {{2, 2, INFINITY, 0, 1, 0, 0, 0, 0}, feat, 2, 1, 6, 7, r, 2, out, INVALID, "spatial_scale"},
        {{2, 2, 1, 0, 2, 0, 0, 0, 0}, feat, 2, 1, 6, 7, r, 2, out, INVALID, "aligned"},
        {{2, 2, 1, 0, 1, (detpost_roi_mode)5, 0, 0, 0}, feat, 2, 1, 6, 7, r, 2, out, INVALID, "mode"},
        {{2, 2, 1, 0, 1, 0, (detpost_layout)2, 0, 0}, feat, 2, 1, 6, 7, r, 2, out, INVALID, "layout"},
        {{2, 2, 1, 0, 1, 0, 0, (detpost_dtype)-1, 0}, feat, 2, 1, 6, 7, r, 2, out, INVALID, "dtype"},
        {{2, 2, 1, 0, 1, 0, 0, 0, 3}, feat, 2, 1, 6, 7, r, 2, out, INVALID, "deterministic"},
        {p, feat, 1, 1, 6, 7, r, 2, out, INVALID, "rois[1] has batch index 1 outside [0, 1)"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; ++i) {
        detpost_status st = detpost_roi_align(cpu, &bad[i].p, bad[i].features, bad[i].n, bad[i].c, bad[i].h, bad[i].w,
                                              bad[i].rois, bad[i].num_rois, bad[i].out);
        cr_assert_eq(st, bad[i].status, "align case %zu: %s", i, detpost_status_name(st));
        cr_assert(strstr(detpost_last_error(cpu), bad[i].needle) != NULL, "align case %zu: message '%s' lacks '%s'", i,
                  detpost_last_error(cpu), bad[i].needle);
        st = detpost_roi_pool(cpu, &bad[i].p, bad[i].features, bad[i].n, bad[i].c, bad[i].h, bad[i].w, bad[i].rois,
                              bad[i].num_rois, bad[i].out, arg);
        cr_assert_eq(st, bad[i].status, "pool case %zu: %s", i, detpost_status_name(st));
        cr_assert(strstr(detpost_last_error(cpu), bad[i].needle) != NULL, "pool case %zu: message '%s' lacks '%s'", i,
                  detpost_last_error(cpu), bad[i].needle);
        for (int k = 0; k < 8; ++k) cr_assert(out[k] == -7.0f && arg[k] == -7, "case %zu wrote its output", i);
    }
    /* a good call clears the message; p NULL means the defaults (7 x 7) */
    cr_assert_eq(detpost_roi_align(cpu, &p, features, 2, 1, 6, 7, rois, 2, out), DETPOST_OK);
    cr_assert_str_empty(detpost_last_error(cpu));
    float big_out[2 * 49];
    cr_assert_eq(detpost_roi_align(cpu, NULL, features, 2, 1, 6, 7, rois, 2, big_out), DETPOST_OK);

    /* backward entries */
    float grad[84];
    cr_assert_eq(detpost_roi_align_backward(cpu, &p, out, rois, 2, 2, 1, 6, 7, NULL), DETPOST_ERR_INVALID_ARGUMENT);
    cr_assert(strstr(detpost_last_error(cpu), "grad_features is NULL") != NULL, "%s", detpost_last_error(cpu));
    cr_assert_eq(detpost_roi_align_backward(cpu, &p, NULL, rois, 2, 2, 1, 6, 7, grad), DETPOST_ERR_INVALID_ARGUMENT);
    cr_assert(strstr(detpost_last_error(cpu), "grad_out is NULL") != NULL, "%s", detpost_last_error(cpu));
    detpost_roi_params m = p;
    m.mode = DETPOST_ROI_MAX;
    cr_assert_eq(detpost_roi_align_backward(cpu, &m, out, rois, 2, 2, 1, 6, 7, grad), DETPOST_ERR_INVALID_ARGUMENT);
    cr_assert(strstr(detpost_last_error(cpu), "detpost_roi_align_max_backward") != NULL, "%s", detpost_last_error(cpu));
    cr_assert_eq(detpost_roi_align_max_backward(cpu, &p, features, out, rois, 2, 2, 1, 6, 7, grad),
                 DETPOST_ERR_INVALID_ARGUMENT);
    cr_assert(strstr(detpost_last_error(cpu), "p->mode") != NULL, "%s", detpost_last_error(cpu));
    cr_assert_eq(detpost_roi_align_max_backward(cpu, &m, NULL, out, rois, 2, 2, 1, 6, 7, grad),
                 DETPOST_ERR_INVALID_ARGUMENT);
    cr_assert(strstr(detpost_last_error(cpu), "features is NULL") != NULL, "%s", detpost_last_error(cpu));
    const int32_t bad_arg[8] = {0, 1, 2, 42, -1, -1, 0, 0};
    cr_assert_eq(detpost_roi_pool_backward(cpu, &p, out, bad_arg, rois, 2, 2, 1, 6, 7, grad),
                 DETPOST_ERR_INVALID_ARGUMENT);
    cr_assert(strstr(detpost_last_error(cpu), "argmax[3] = 42") != NULL, "%s", detpost_last_error(cpu));
    cr_assert_eq(detpost_roi_pool_backward(cpu, &p, out, NULL, rois, 2, 2, 1, 6, 7, grad),
                 DETPOST_ERR_INVALID_ARGUMENT);
    cr_assert(strstr(detpost_last_error(cpu), "argmax is NULL") != NULL, "%s", detpost_last_error(cpu));
    /* an invalid row is an error even where the map is empty and nothing is computed */
    cr_assert_eq(detpost_roi_align_backward(cpu, &p, out, r, 2, 1, 1, 0, 7, grad), DETPOST_ERR_INVALID_ARGUMENT);
    cr_assert(strstr(detpost_last_error(cpu), "rois[1]") != NULL, "%s", detpost_last_error(cpu));
    const int32_t empty_arg[8] = {-1, -1, -1, -1, -1, -1, -1, -1};
    cr_assert_eq(detpost_roi_pool_backward(cpu, &p, out, empty_arg, r, 2, 1, 1, 0, 7, grad),
                 DETPOST_ERR_INVALID_ARGUMENT);
    cr_assert(strstr(detpost_last_error(cpu), "rois[1]") != NULL, "%s", detpost_last_error(cpu));
    cr_assert_eq(detpost_roi_align(cpu, &p, features, 1, 0, 6, 7, r, 2, out), DETPOST_ERR_INVALID_ARGUMENT);
    cr_assert(strstr(detpost_last_error(cpu), "rois[1]") != NULL, "%s", detpost_last_error(cpu));

    /* pyramid */
    detpost_feature_pyramid f = detpost_feature_pyramid_default();
    f.num_levels = 1, f.n = 2, f.c = 1;
    f.levels[0] = (detpost_pyramid_level){features, 6, 7, 0.25f};
    cr_assert_eq(detpost_multilevel_roi_align(cpu, &p, NULL, rois, 2, out, NULL), DETPOST_ERR_INVALID_ARGUMENT);
    cr_assert(strstr(detpost_last_error(cpu), "pyramid is NULL") != NULL, "%s", detpost_last_error(cpu));
    struct {
        detpost_feature_pyramid f;
        const char *needle;
    } bad_pyr[11];
    for (int i = 0; i < 11; ++i) bad_pyr[i].f = f;
    for (int k = 0; k < 8; ++k) out[k] = -7.0f;
    bad_pyr[0].f.num_levels = 0, bad_pyr[0].needle = "num_levels";
    bad_pyr[1].f.num_levels = 9, bad_pyr[1].needle = "num_levels";
    bad_pyr[2].f.layout = DETPOST_NHWC, bad_pyr[2].needle = "layout";
    bad_pyr[3].f.canonical_scale = 0, bad_pyr[3].needle = "canonical_scale";
    bad_pyr[4].f.eps = NAN, bad_pyr[4].needle = "eps";
    bad_pyr[5].f.levels[0].features = NULL, bad_pyr[5].needle = "pyramid->levels[0].features is NULL";
    bad_pyr[6].f.levels[0].spatial_scale = -1, bad_pyr[6].needle = "levels[0].spatial_scale";
    bad_pyr[7].f.num_levels = 2, bad_pyr[7].needle = "pyramid->levels[1].features is NULL";
    bad_pyr[7].f.levels[1] = (detpost_pyramid_level){NULL, 3, 4, 0.125f};
    bad_pyr[8].f.levels[0].h = -1, bad_pyr[8].needle = "pyramid->levels[0].h is negative";
    bad_pyr[9].f.num_levels = 2, bad_pyr[9].needle = "pyramid->levels[1].w is negative";
    bad_pyr[9].f.levels[1] = (detpost_pyramid_level){features, 3, -4, 0.125f};
    bad_pyr[10].f.n = -2, bad_pyr[10].needle = "pyramid->n is negative";
    for (int i = 0; i < 11; ++i) {
        cr_assert_eq(detpost_multilevel_roi_align(cpu, &p, &bad_pyr[i].f, rois, 2, out, NULL),
                     DETPOST_ERR_INVALID_ARGUMENT, "pyramid case %d", i);
        cr_assert(strstr(detpost_last_error(cpu), bad_pyr[i].needle) != NULL, "pyramid case %d: '%s' lacks '%s'", i,
                  detpost_last_error(cpu), bad_pyr[i].needle);
        for (int k = 0; k < 8; ++k) cr_assert_eq(out[k], -7.0f, "pyramid case %d wrote its output", i);
    }

    /* check and workspace query */
    int64_t first;
    size_t bytes;
    cr_assert_eq(detpost_roi_check(cpu, rois, 2, 2, NULL), DETPOST_ERR_INVALID_ARGUMENT);
    cr_assert_eq(detpost_roi_check(cpu, NULL, 2, 2, &first), DETPOST_ERR_INVALID_ARGUMENT);
    cr_assert_eq(detpost_roi_check(cpu, rois, -1, 2, &first), DETPOST_ERR_INVALID_ARGUMENT);
    cr_assert_eq(detpost_roi_workspace_size(cpu, &p, 2, 1, 6, 7, NULL), DETPOST_ERR_INVALID_ARGUMENT);
    cr_assert_eq(detpost_roi_workspace_size(cpu, &p, 2, 1, 6, 7, &bytes), DETPOST_OK);
    detpost_destroy(cpu);
}

#if TEST_HAS_CUDA
/* Host memory handed to a CUDA context is refused before any kernel runs. */
Test(roi, host_pointer_on_cuda_context)
{
    detpost_ctx *gpu = t_ctx(DETPOST_CUDA);
    const float features[16] = {0}, rois[5] = {0, 0, 0, 2, 2};
    float *dout = t_alloc(gpu, 49 * sizeof(float));
    cr_assert_eq(detpost_roi_align(gpu, NULL, features, 1, 1, 4, 4, rois, 1, dout), DETPOST_ERR_INVALID_ARGUMENT);
    cr_assert(strstr(detpost_last_error(gpu), "features") != NULL, "%s", detpost_last_error(gpu));
    cr_assert(strstr(detpost_last_error(gpu), "not device memory") != NULL, "%s", detpost_last_error(gpu));
    t_free(gpu, dout);
    detpost_destroy(gpu);
}
#endif

/* Empty sizes are valid; a backward with no RoIs still clears grad_features. */
static void check_empty(detpost_backend backend)
{
    detpost_ctx *ctx = t_ctx(backend);
    detpost_roi_params p = detpost_roi_params_default();
    float ones[12];
    for (int i = 0; i < 12; ++i) ones[i] = 1.0f;
    float *dgrad = t_up(ctx, ones, sizeof ones);
    cr_assert_eq(detpost_roi_align(ctx, &p, NULL, 0, 3, 2, 2, NULL, 0, NULL), DETPOST_OK, "%s",
                 detpost_last_error(ctx));
    cr_assert_eq(detpost_roi_pool(ctx, &p, dgrad, 1, 3, 2, 2, NULL, 0, NULL, NULL), DETPOST_OK);
    for (int det = 0; det < 2; ++det) {
        p.deterministic = det;
        cr_assert_eq(detpost_roi_align_backward(ctx, &p, NULL, NULL, 0, 1, 3, 2, 2, dgrad), DETPOST_OK, "%s",
                     detpost_last_error(ctx));
        float *got = t_down(ctx, dgrad, sizeof ones);
        for (int i = 0; i < 12; ++i) cr_assert_eq(got[i], 0.0f);
        free(got);
    }
    t_free(ctx, dgrad);
    detpost_destroy(ctx);
}

Test(roi, empty_sizes_cpu) { check_empty(DETPOST_CPU); }
#if TEST_HAS_CUDA
Test(roi, empty_sizes_cuda) { check_empty(DETPOST_CUDA); }
#endif

/* ---- shared scalar helpers ------------------------------------------------------------ */

Test(roi, half_conversions_round_to_nearest_even)
{
    for (uint32_t h = 0; h < 65536; ++h) {
        _Float16 ref;
        const uint16_t bits = (uint16_t)h;
        memcpy(&ref, &bits, 2);
        const float f = dp_half_to_float(bits);
        if (isnan((float)ref)) {
            cr_assert(isnan(f), "half %04x", h);
            continue;
        }
        cr_assert_eq(dp_float_bits(f), dp_float_bits((float)ref), "half %04x widens to %a", h, (double)f);
        cr_assert_eq(dp_float_to_half(f), bits, "half %04x does not round-trip", h);
    }
    t_rng rng = {99};
    for (int i = 0; i < 1000000; ++i) {
        /* every exponent region, and exact ties between neighbouring halves */
        uint32_t bits = (uint32_t)t_next(&rng);
        if (i % 4 == 0) bits = (bits & 0x80000000u) | ((bits % (32u << 23)) + (100u << 23));
        if (i % 8 == 1) bits = (bits & ~0x1fffu) | 0x1000u;
        const float f = dp_bits_float(bits);
        const _Float16 ref = (_Float16)f;
        uint16_t want;
        memcpy(&want, &ref, 2);
        const uint16_t got = dp_float_to_half(f);
        if (isnan(f)) cr_assert((got & 0x7c00u) == 0x7c00u && (got & 0x3ffu), "NaN %08x", bits);
        else cr_assert_eq(got, want, "float %a (%08x) narrows to %04x, expected %04x", (double)f, bits, got, want);
    }
}

Test(roi, log2_is_accurate)
{
    t_rng rng = {5};
    for (int i = 0; i < 100000; ++i) {
        const double mantissa = 1.0 + (double)(t_next(&rng) >> 11) / 9007199254740992.0;
        const double x = ldexp(mantissa, (int)(t_next(&rng) % 300) - 150);
        cr_assert(fabs(dp_log2(x) - log2(x)) <= 2e-15 * fmax(1.0, fabs(log2(x))), "log2(%a)", x);
    }
    cr_assert_eq(dp_log2(1.0), 0.0);
    cr_assert_eq(dp_log2(0.25), -2.0);
    cr_assert_eq(dp_log2(1024.0), 10.0);
}
