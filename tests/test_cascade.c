/* Box coding and cascade resampling: the library's exp and log, golden
 * cases worked out by hand (tests/data/cascade.json), CPU against the CUDA
 * backend on seeded detector-like images under every schedule, the
 * reproducibility of sampling, workspace, and bad input. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "common.h"
#include "../host/box_coder.h"
#include "../host/cascade_math.h"

/* ---- helpers --------------------------------------------------------------- */

static const cJSON *field(const cJSON *c, const char *name) { return cJSON_GetObjectItemCaseSensitive(c, name); }

static int32_t *golden_ints(const cJSON *c, const char *name, int64_t *n)
{
    float *f = t_golden_floats(c, name, 0, n);
    int32_t *v = malloc((size_t)(*n + 1) * sizeof *v);
    for (int64_t i = 0; i < *n; ++i) v[i] = (int32_t)f[i];
    free(f);
    return v;
}

static detpost_box_coder golden_coder(const cJSON *c)
{
    detpost_box_coder k = detpost_box_coder_default();
    const cJSON *j = field(c, "coder");
    if (j == NULL) return k;
    int64_t n;
    float *means = t_golden_floats(j, "means", 0, &n), *stds = t_golden_floats(j, "stds", 0, &n);
    memcpy(k.means, means, sizeof k.means);
    memcpy(k.stds, stds, sizeof k.stds);
    k.offset = (float)t_golden_number(j, "offset", 0);
    free(means), free(stds);
    return k;
}

/* Host buffer -> new context buffer; NULL for an empty one. */
static void *up(detpost_ctx *ctx, const void *host, size_t bytes) { return bytes ? t_up(ctx, host, bytes) : NULL; }

/* The message of the last run_resample call (the frees after it clear the
 * context's). */
static char resample_message[512];

static void check_status(detpost_ctx *ctx, detpost_status st, const char *what)
{
    cr_assert_eq(st, DETPOST_OK, "%s: %s: %s", what, detpost_status_name(st),
                 detpost_last_error(ctx)[0] ? detpost_last_error(ctx) : resample_message);
}

/* ---- exp and log ------------------------------------------------------------ */

/* Distance in units in the last place between two finite floats of one sign. */
static int64_t ulps_apart(float a, float b) { return llabs((int64_t)dp_float_bits(a) - (int64_t)dp_float_bits(b)); }

Test(coder, library_exp_and_log_are_accurate)
{
    int64_t worst_exp = 0, worst_log = 0;
    for (int i = 0; i <= 400000; ++i) {
        const float x = -87.0f + 175.0f * (float)i / 400000.0f;
        const int64_t u = ulps_apart(dp_exp(x), (float)exp((double)x));
        if (u > worst_exp) worst_exp = u;
    }
    t_rng rng = {17};
    for (int i = 0; i < 400000; ++i) {
        const float x = i < 20000 ? 1.0f + t_uniform(&rng, -1e-2f, 1e-2f)
                                  : ldexpf(t_uniform(&rng, 1.0f, 2.0f), (int)(t_next(&rng) % 250) - 125);
        if (x == 1.0f) continue;
        const int64_t u = ulps_apart(dp_log(x), (float)log((double)x));
        if (u > worst_log) worst_log = u;
    }
    /* against the correctly rounded results */
    cr_assert_leq(worst_exp, 1, "dp_exp is %lld ulp off", (long long)worst_exp);
    cr_assert_leq(worst_log, 3, "dp_log is %lld ulp off", (long long)worst_log);
    cr_assert_eq(dp_exp(0.0f), 1.0f);
    cr_assert_eq(dp_log(1.0f), 0.0f);
    cr_assert(isinf(dp_exp(100.0f)) && dp_exp(-200.0f) == 0.0f && isnan(dp_exp(NAN)));
    cr_assert(isinf(dp_log(0.0f)) && dp_log(0.0f) < 0 && isnan(dp_log(-1.0f)) && isinf(dp_log(INFINITY)));
    const float tiny = 1e-40f; /* subnormal */
    cr_assert_lt(fabs((double)dp_log(tiny) - log((double)tiny)), 1e-5);
}

/* CIoU's aspect term: the same arctan on both backends, close to the
 * correctly rounded one over every range it reduces to. */
Test(coder, library_atan_is_accurate)
{
    int64_t worst = 0;
    float worst_x = 0.0f;
    t_rng rng = {23};
    for (int i = 0; i < 600000; ++i) {
        float x = i < 200000 ? t_uniform(&rng, -3.0f, 3.0f)
                             : ldexpf(t_uniform(&rng, 1.0f, 2.0f), (int)(t_next(&rng) % 120) - 60);
        if (i % 2) x = -x;
        const int64_t u = ulps_apart(dp_atan(x), (float)atan((double)x));
        if (u > worst) worst = u, worst_x = x;
    }
    cr_assert_leq(worst, 2, "dp_atan is %lld ulp off at %.9g", (long long)worst, (double)worst_x);
    cr_assert_eq(dp_atan(0.0f), 0.0f);
    cr_assert_eq(dp_atan(1.0f), (float)(M_PI / 4));
    cr_assert_eq(dp_atan(INFINITY), (float)(M_PI / 2));
    cr_assert_eq(dp_atan(-INFINITY), -(float)(M_PI / 2));
    cr_assert_eq(dp_atan(1e-30f), 1e-30f);
    cr_assert(isnan(dp_atan(NAN)));
}

Test(coder, defaults)
{
    const detpost_box_coder c = detpost_box_coder_default();
    const float stds[4] = {0.1f, 0.1f, 0.2f, 0.2f};
    for (int k = 0; k < 4; ++k) cr_assert(c.means[k] == 0.0f && c.stds[k] == stds[k]);
    cr_assert_float_eq(c.clamp, fabsf(logf(16.0f / 1000.0f)), 1e-6f);
    cr_assert_eq(c.offset, 0.0f);

    static const float iou[3] = {0.5f, 0.6f, 0.7f};
    static const float want_stds[3][4] = {{0.1f, 0.1f, 0.2f, 0.2f}, {0.05f, 0.05f, 0.1f, 0.1f},
                                          {0.033f, 0.033f, 0.067f, 0.067f}};
    for (int s = 0; s < 3; ++s) {
        const detpost_stage_params p = detpost_stage_params_default(s);
        cr_assert(p.pos_iou == iou[s] && p.neg_iou == iou[s] && p.min_pos_iou == iou[s], "stage %d", s);
        for (int k = 0; k < 4; ++k) cr_assert(p.coder.stds[k] == want_stds[s][k] && p.coder.means[k] == 0.0f);
        cr_assert(p.coder.clamp == c.clamp && p.coder.offset == 0.0f);
        cr_assert(p.num_samples == 512 && p.pos_fraction == 0.25f && p.neg_pos_ub == -1.0f);
        cr_assert(p.add_gt_as_proposals == 1 && p.match_low_quality == 0 && p.neg_iou_lo == 0.0f);
        cr_assert(p.background_label == -1 && p.seed == 0 && p.stage == s);
    }
    const detpost_stage_params deep = detpost_stage_params_default(5);
    cr_assert(deep.pos_iou == 0.7f && deep.stage == 5, "a deeper stage repeats the last one");
}

/* ---- encode / decode golden cases -------------------------------------------- */

static void golden_coding(detpost_backend backend)
{
    cJSON *root = t_golden("cascade.json");
    detpost_ctx *ctx = t_ctx(backend);
    const cJSON *c;
    int cases = 0;
    cJSON_ArrayForEach(c, field(root, "encode"))
    {
        int64_t n, m, k;
        float *props = t_golden_floats(c, "proposals", 4, &n), *tg = t_golden_floats(c, "targets", 4, &m);
        float *want = t_golden_floats(c, "expected", 4, &k);
        cr_assert(n == m && n == k);
        const detpost_box_coder coder = golden_coder(c);
        float *dp = up(ctx, props, (size_t)n * 16), *dt = up(ctx, tg, (size_t)n * 16);
        float *dd = t_alloc(ctx, (size_t)n * 16);
        check_status(ctx, detpost_box_encode(ctx, &coder, dp, dt, n, dd), "encode");
        float *got = t_down(ctx, dd, (size_t)n * 16);
        t_assert_close(got, want, n * 4, 1e-5f, 1e-5f, t_golden_string(c, "name", "?"));
        free(props), free(tg), free(want), free(got);
        t_free(ctx, dp), t_free(ctx, dt), t_free(ctx, dd);
        ++cases;
    }
    cJSON_ArrayForEach(c, field(root, "decode"))
    {
        const int64_t classes = (int64_t)t_golden_number(c, "num_classes", 1);
        int64_t n, m, k, nl = 0, ns = 0;
        float *rois = t_golden_floats(c, "rois", 5, &n), *deltas = t_golden_floats(c, "deltas", (int)(4 * classes), &m);
        float *want = t_golden_floats(c, "expected", 5, &k);
        int32_t *labels = field(c, "labels") ? golden_ints(c, "labels", &nl) : NULL;
        float *sizes = field(c, "image_sizes") ? t_golden_floats(c, "image_sizes", 2, &ns) : NULL;
        cr_assert(n == m && n == k);
        const detpost_box_coder coder = golden_coder(c);
        for (int s = 0; s < t_schedule_count(); ++s) {
            t_set_schedule(t_schedule(s));
            float *dr = up(ctx, rois, (size_t)n * 20), *dd = up(ctx, deltas, (size_t)(n * classes) * 16);
            int32_t *dl = up(ctx, labels, (size_t)nl * 4);
            float *dsz = up(ctx, sizes, (size_t)ns * 8), *dout = t_alloc(ctx, (size_t)n * 20);
            check_status(ctx, detpost_box_decode(ctx, &coder, dr, dd, n, classes, dl, dsz, ns, dout), "decode");
            float *got = t_down(ctx, dout, (size_t)n * 20);
            t_assert_close(got, want, n * 5, 1e-5f, 1e-5f, t_golden_string(c, "name", "?"));
            free(got);
            t_free(ctx, dr), t_free(ctx, dd), t_free(ctx, dl), t_free(ctx, dsz), t_free(ctx, dout);
        }
        free(rois), free(deltas), free(want), free(labels), free(sizes);
        ++cases;
    }
    cr_assert_geq(cases, 12);
    detpost_destroy(ctx);
    cJSON_Delete(root);
}

Test(coder, golden_cpu) { golden_coding(DETPOST_CPU); }
#if TEST_HAS_CUDA
Test(coder, golden_cuda) { golden_coding(DETPOST_CUDA); }
#endif

/* Encoding targets against proposals and decoding the deltas on the
 * proposals gives the targets back: within 1e-5 in unit coordinates, and
 * within 1e-6 of the image size in pixels. */
static void round_trip(detpost_backend backend)
{
    detpost_ctx *ctx = t_ctx(backend);
    enum { N = 3000 };
    t_rng rng = {2024};
    for (int scale_kind = 0; scale_kind < 2; ++scale_kind) {
        const float scale = scale_kind ? 1333.0f : 1.0f;
        float *props = malloc(N * 16), *tg = malloc(N * 16), *rois = malloc(N * 20), *back = malloc(N * 20);
        for (int i = 0; i < N; ++i) {
            const float w = t_uniform(&rng, 0.01f, 0.5f), h = t_uniform(&rng, 0.01f, 0.5f);
            const float x = t_uniform(&rng, 0, 1 - w), y = t_uniform(&rng, 0, 1 - h);
            const float tw = w * t_uniform(&rng, 0.3f, 3.0f), th = h * t_uniform(&rng, 0.3f, 3.0f);
            const float tx = x + w * t_uniform(&rng, -0.5f, 0.5f), ty = y + h * t_uniform(&rng, -0.5f, 0.5f);
            const float p[4] = {x, y, x + w, y + h}, t[4] = {tx, ty, tx + tw, ty + th};
            for (int k = 0; k < 4; ++k) props[i * 4 + k] = p[k] * scale, tg[i * 4 + k] = t[k] * scale;
            rois[i * 5] = 0.0f;
            memcpy(rois + i * 5 + 1, props + i * 4, 16);
        }
        detpost_box_coder coder = detpost_box_coder_default();
        coder.means[0] = 0.01f, coder.stds[3] = 0.3f;
        float *dp = t_up(ctx, props, N * 16), *dt = t_up(ctx, tg, N * 16), *dd = t_alloc(ctx, N * 16);
        float *dr = t_up(ctx, rois, N * 20), *dout = t_alloc(ctx, N * 20);
        check_status(ctx, detpost_box_encode(ctx, &coder, dp, dt, N, dd), "encode");
        check_status(ctx, detpost_box_decode(ctx, &coder, dr, dd, N, 1, NULL, NULL, 0, dout), "decode");
        cr_assert_eq(detpost_to_host(ctx, back, dout, N * 20), DETPOST_OK);
        for (int i = 0; i < N; ++i)
            for (int k = 0; k < 4; ++k) {
                const float got = back[i * 5 + 1 + k], want = tg[i * 4 + k];
                cr_assert_leq(fabsf(got - want), scale_kind ? 1e-6f * scale : 1e-5f,
                              "box %d coordinate %d: %.9g back, %.9g encoded (scale %g)", i, k, (double)got,
                              (double)want, (double)scale);
            }
        free(props), free(tg), free(rois), free(back);
        t_free(ctx, dp), t_free(ctx, dt), t_free(ctx, dd), t_free(ctx, dr), t_free(ctx, dout);
    }
    detpost_destroy(ctx);
}

Test(coder, encode_decode_round_trip_cpu) { round_trip(DETPOST_CPU); }
#if TEST_HAS_CUDA
Test(coder, encode_decode_round_trip_cuda) { round_trip(DETPOST_CUDA); }
#endif

Test(coder, clamp_bounds_every_scale_factor)
{
    detpost_ctx *cpu = t_ctx(DETPOST_CPU);
    detpost_box_coder coder = detpost_box_coder_default();
    coder.clamp = 1.0f;
    const float rois[3 * 5] = {0, 0, 0, 10, 10, 0, 0, 0, 10, 10, 0, 0, 0, 10, 10};
    /* de-normalised dw, dh: 4 and -4 (clamped to +-1), 0.5 and -0.5 (kept), 1e30 and -1e30 */
    const float deltas[3 * 4] = {0, 0, 20, -20, 0, 0, 2.5f, -2.5f, 0, 0, 5e30f, -5e30f};
    float out[15];
    cr_assert_eq(detpost_box_decode(cpu, &coder, rois, deltas, 3, 1, NULL, NULL, 0, out), DETPOST_OK);
    const double e = exp(1.0), h = exp(0.5);
    const float want[15] = {0, (float)(5 - 5 * e), (float)(5 - 5 / e), (float)(5 + 5 * e), (float)(5 + 5 / e),
                            0, (float)(5 - 5 * h), (float)(5 - 5 / h), (float)(5 + 5 * h), (float)(5 + 5 / h),
                            0, (float)(5 - 5 * e), (float)(5 - 5 / e), (float)(5 + 5 * e), (float)(5 + 5 / e)};
    t_assert_close(out, want, 15, 1e-5f, 1e-6f, "clamped decode");
    coder.clamp = 0.0f;
    cr_assert_eq(detpost_box_decode(cpu, &coder, rois, deltas, 1, 1, NULL, NULL, 0, out), DETPOST_OK);
    t_assert_close(out, rois, 5, 0, 0, "clamp 0 keeps the size");
    detpost_destroy(cpu);
}

/* A NaN delta decodes as a delta of 0, also where the coder's means would
 * move a de-normalised 0. */
Test(coder, nan_deltas_decode_as_zero_with_means)
{
    detpost_ctx *cpu = t_ctx(DETPOST_CPU);
    detpost_box_coder coder = detpost_box_coder_default();
    coder.means[0] = 0.5f, coder.means[1] = -0.25f, coder.means[2] = 0.1f, coder.means[3] = -0.2f;
    const float rois[2 * 5] = {0, 0, 0, 10, 10, 0, 0, 0, 10, 10};
    const float deltas[2 * 4] = {NAN, NAN, NAN, NAN, 0, 0, 0, 0};
    float out[10];
    cr_assert_eq(detpost_box_decode(cpu, &coder, rois, deltas, 2, 1, NULL, NULL, 0, out), DETPOST_OK);
    cr_assert_neq(out[1], rois[1], "the means move a zero delta (x1 %g)", (double)out[1]);
    for (int k = 0; k < 5; ++k)
        cr_assert_eq(out[k], out[5 + k], "column %d: NaN gives %g, 0 gives %g", k, (double)out[k], (double)out[5 + k]);
    detpost_destroy(cpu);
}

#if TEST_HAS_CUDA
/* Decode is bit-identical on both backends: every decision made on decoded
 * boxes (empty-box drops, the next stage's IoU) is the same. */
Test(coder, cpu_vs_cuda_bit_identical)
{
    static const int64_t sizes[] = {1, 300, 1000};
    detpost_ctx *cpu = t_ctx(DETPOST_CPU), *gpu = t_ctx(DETPOST_CUDA);
    t_rng rng = {77};
    for (int s = 0; s < t_schedule_count(); ++s) {
        t_set_schedule(t_schedule(s));
        for (size_t si = 0; si < sizeof sizes / sizeof sizes[0]; ++si) {
            const int64_t n = sizes[si], classes = 1 + (int64_t)(t_next(&rng) % 2) * 4, images = 3;
            float *boxes = malloc((size_t)n * 16), *rois = malloc((size_t)n * 20);
            float *deltas = malloc((size_t)(n * classes) * 16), *props = malloc((size_t)n * 16);
            int32_t *labels = malloc((size_t)n * 4);
            const float img_sizes[6] = {480, 640, 300, 300, 1000, 50};
            t_detector_boxes(&rng, boxes, n, 640, 480, 1);
            t_detector_boxes(&rng, props, n, 640, 480, 1);
            for (int64_t i = 0; i < n; ++i) {
                const uint64_t pick = t_next(&rng) % 20;
                rois[i * 5] = pick == 0 ? -1.0f : pick == 1 ? 2.5f : pick == 2 ? 3.0f : (float)(t_next(&rng) % 3);
                memcpy(rois + i * 5 + 1, boxes + i * 4, 16);
                labels[i] = (int32_t)(t_next(&rng) % (uint64_t)(classes + 2)) - 1;
            }
            for (int64_t i = 0; i < n * classes * 4; ++i)
                deltas[i] = t_next(&rng) % 50 == 0 ? NAN : t_uniform(&rng, -3.0f, 3.0f) * (t_next(&rng) % 8 ? 1 : 40);
            detpost_box_coder coder = detpost_box_coder_default();
            coder.offset = (float)(t_next(&rng) % 2);
            coder.means[1] = 0.05f;
            float *dr = t_up(gpu, rois, (size_t)n * 20), *dd = t_up(gpu, deltas, (size_t)(n * classes) * 16);
            float *dsz = t_up(gpu, img_sizes, sizeof img_sizes), *dout = t_alloc(gpu, (size_t)n * 20);
            int32_t *dl = t_up(gpu, labels, (size_t)n * 4);
            float *want = malloc((size_t)n * 20);
            for (int clip = 0; clip < 2; ++clip) {
                cr_assert_eq(detpost_box_decode(cpu, &coder, rois, deltas, n, classes, labels, clip ? img_sizes : NULL,
                                                images, want), DETPOST_OK);
                check_status(
                    gpu, detpost_box_decode(gpu, &coder, dr, dd, n, classes, dl, clip ? dsz : NULL, images, dout),
                    "decode");
                float *got = t_down(gpu, dout, (size_t)n * 20);
                cr_assert_eq(memcmp(got, want, (size_t)n * 20), 0, "decode differs (n %lld, classes %lld, clip %d, %s)",
                             (long long)n, (long long)classes, clip, t_schedule(s) ? t_schedule(s) : "gpu");
                free(got);
            }
            /* encode too: the library's log makes it bit-identical as well */
            float *dp = t_up(gpu, props, (size_t)n * 16), *dt = t_up(gpu, boxes, (size_t)n * 16);
            cr_assert_eq(detpost_box_encode(cpu, &coder, props, boxes, n, want), DETPOST_OK);
            check_status(gpu, detpost_box_encode(gpu, &coder, dp, dt, n, dd), "encode");
            float *got = t_down(gpu, dd, (size_t)n * 16);
            cr_assert_eq(memcmp(got, want, (size_t)n * 16), 0, "encode differs");
            free(got);
            free(boxes), free(rois), free(deltas), free(props), free(labels), free(want);
            t_free(gpu, dr), t_free(gpu, dd), t_free(gpu, dsz), t_free(gpu, dout), t_free(gpu, dl);
            t_free(gpu, dp), t_free(gpu, dt);
        }
    }
    detpost_destroy(cpu);
    detpost_destroy(gpu);
}
#endif

/* ---- resampling harness --------------------------------------------------------- */

typedef struct images {
    int64_t batch, max_p, max_g;
    float *proposals; /* [batch, max_p, 4] */
    int32_t *num_p;
    float *gt; /* [batch, max_g, 4] */
    int32_t *gt_labels;
    int32_t *num_g;
} images;

typedef struct samples {
    int64_t batch, s;
    float *rois, *targets, *max_iou;
    int32_t *labels, *num_samples, *num_pos;
    uint8_t *is_gt;
} samples;

static void images_alloc(images *im, int64_t batch, int64_t max_p, int64_t max_g)
{
    im->batch = batch, im->max_p = max_p, im->max_g = max_g;
    im->proposals = malloc((size_t)(batch * max_p + 1) * 16);
    im->gt = malloc((size_t)(batch * max_g + 1) * 16);
    im->gt_labels = malloc((size_t)(batch * max_g + 1) * 4);
    im->num_p = calloc((size_t)batch + 1, 4);
    im->num_g = calloc((size_t)batch + 1, 4);
    /* padding the op must never read as boxes */
    for (int64_t i = 0; i < batch * max_p * 4; ++i) im->proposals[i] = NAN;
    for (int64_t i = 0; i < batch * max_g * 4; ++i) im->gt[i] = NAN;
    for (int64_t i = 0; i < batch * max_g; ++i) im->gt_labels[i] = -77;
}

static void images_free(images *im)
{
    free(im->proposals), free(im->gt), free(im->gt_labels), free(im->num_p), free(im->num_g);
}

static void samples_free(samples *o)
{
    free(o->rois), free(o->targets), free(o->max_iou), free(o->labels), free(o->num_samples), free(o->num_pos);
    free(o->is_gt);
}

/* Runs resample on the context with the images uploaded there, and brings
 * the outputs back to the host. */
/* When set, a CUDA run must answer this recorded fault at its next wait. */
static const char *expected_fault;

static detpost_status run_resample(detpost_ctx *ctx, const detpost_stage_params *p, const images *im, samples *o)
{
    const int64_t b = im->batch, s = p->num_samples, rows = b * s;
    float *dp = up(ctx, im->proposals, (size_t)(b * im->max_p) * 16);
    float *dg = up(ctx, im->gt, (size_t)(b * im->max_g) * 16);
    int32_t *dgl = up(ctx, im->gt_labels, (size_t)(b * im->max_g) * 4);
    int32_t *dnp = up(ctx, im->num_p, (size_t)b * 4), *dng = up(ctx, im->num_g, (size_t)b * 4);
    float *rois = t_alloc(ctx, (size_t)rows * 20), *targets = t_alloc(ctx, (size_t)rows * 16);
    float *max_iou = t_alloc(ctx, (size_t)rows * 4);
    int32_t *labels = t_alloc(ctx, (size_t)rows * 4);
    int32_t *ns = t_alloc(ctx, (size_t)b * 4), *npos = t_alloc(ctx, (size_t)b * 4);
    uint8_t *is_gt = t_alloc(ctx, (size_t)rows);
    const detpost_status st = detpost_cascade_resample(ctx, p, b, dp, dnp, im->max_p, dg, dgl, dng, im->max_g, rois,
                                                       labels, targets, max_iou, is_gt, ns, npos);
    snprintf(resample_message, sizeof resample_message, "%s", detpost_last_error(ctx));
    if (st == DETPOST_OK && expected_fault != NULL && detpost_get_backend(ctx) == DETPOST_CUDA)
        t_expect_fault(ctx, expected_fault);
    o->batch = b, o->s = s;
    if (st == DETPOST_OK) {
        o->rois = t_down(ctx, rois, (size_t)rows * 20);
        o->targets = t_down(ctx, targets, (size_t)rows * 16);
        o->max_iou = t_down(ctx, max_iou, (size_t)rows * 4);
        o->labels = t_down(ctx, labels, (size_t)rows * 4);
        o->num_samples = t_down(ctx, ns, (size_t)b * 4);
        o->num_pos = t_down(ctx, npos, (size_t)b * 4);
        o->is_gt = t_down(ctx, is_gt, (size_t)rows);
    }
    t_free(ctx, dp), t_free(ctx, dg), t_free(ctx, dgl), t_free(ctx, dnp), t_free(ctx, dng);
    t_free(ctx, rois), t_free(ctx, targets), t_free(ctx, max_iou), t_free(ctx, labels), t_free(ctx, ns);
    t_free(ctx, npos), t_free(ctx, is_gt);
    return st;
}

/* Bitwise equality of every output (NaN proposals copied to rois included). */
static void assert_samples_equal(const samples *a, const samples *b, const char *what)
{
    const size_t rows = (size_t)(a->batch * a->s), batch = (size_t)a->batch;
    cr_assert_eq(memcmp(a->num_samples, b->num_samples, batch * 4), 0, "%s: num_samples differ", what);
    cr_assert_eq(memcmp(a->num_pos, b->num_pos, batch * 4), 0, "%s: num_pos differ", what);
    for (size_t r = 0; r < rows; ++r) {
        cr_assert_eq(memcmp(a->rois + r * 5, b->rois + r * 5, 20), 0, "%s: roi row %zu differs", what, r);
        cr_assert_eq(a->labels[r], b->labels[r], "%s: label row %zu differs", what, r);
        cr_assert_eq(memcmp(a->targets + r * 4, b->targets + r * 4, 16), 0, "%s: targets row %zu differ", what, r);
        cr_assert_eq(memcmp(a->max_iou + r, b->max_iou + r, 4), 0, "%s: max_iou row %zu differs", what, r);
        cr_assert_eq(a->is_gt[r], b->is_gt[r], "%s: is_gt row %zu differs", what, r);
    }
}

static void assert_padding(const samples *o, int64_t b, int64_t from, const char *what)
{
    for (int64_t row = from; row < o->s; ++row) {
        const int64_t r = b * o->s + row;
        const float pad[5] = {-1, 0, 0, 0, 0}, zero[4] = {0, 0, 0, 0};
        cr_assert_eq(memcmp(o->rois + r * 5, pad, 20), 0, "%s: image %lld row %lld is not padding", what,
                     (long long)b, (long long)row);
        cr_assert(o->labels[r] == -1 && o->max_iou[r] == 0.0f && o->is_gt[r] == 0, "%s: padding row %lld", what,
                  (long long)row);
        cr_assert_eq(memcmp(o->targets + r * 4, zero, 16), 0);
    }
}

/* ---- resampling golden cases ------------------------------------------------------ */

static detpost_stage_params golden_params(const cJSON *c)
{
    detpost_stage_params p = detpost_stage_params_default((int)t_golden_number(c, "stage", 0));
    const cJSON *j = field(c, "params");
    p.pos_iou = (float)t_golden_number(j, "pos_iou", p.pos_iou);
    p.neg_iou = (float)t_golden_number(j, "neg_iou", p.neg_iou);
    p.neg_iou_lo = (float)t_golden_number(j, "neg_iou_lo", p.neg_iou_lo);
    p.min_pos_iou = (float)t_golden_number(j, "min_pos_iou", p.min_pos_iou);
    p.pos_fraction = (float)t_golden_number(j, "pos_fraction", p.pos_fraction);
    p.neg_pos_ub = (float)t_golden_number(j, "neg_pos_ub", p.neg_pos_ub);
    p.num_samples = (int32_t)t_golden_number(j, "num_samples", p.num_samples);
    p.add_gt_as_proposals = (int32_t)t_golden_number(j, "add_gt_as_proposals", p.add_gt_as_proposals);
    p.match_low_quality = (int32_t)t_golden_number(j, "match_low_quality", p.match_low_quality);
    p.background_label = (int32_t)t_golden_number(j, "background_label", p.background_label);
    p.seed = (uint64_t)t_golden_number(j, "seed", 0);
    return p;
}

/* The images of a golden case, padded with NaN boxes. */
static void golden_images(const cJSON *c, images *im)
{
    const cJSON *list = field(c, "images"), *img;
    int64_t batch = cJSON_GetArraySize(list), max_p = 0, max_g = 0, n;
    cJSON_ArrayForEach(img, list)
    {
        const int64_t np = cJSON_GetArraySize(field(img, "proposals")), ng = cJSON_GetArraySize(field(img, "gt"));
        max_p = np > max_p ? np : max_p;
        max_g = ng > max_g ? ng : max_g;
    }
    images_alloc(im, batch, max_p + 1, max_g + 1); /* one padding row at least */
    int64_t b = 0;
    cJSON_ArrayForEach(img, list)
    {
        float *p = t_json_floats(field(img, "proposals"), "proposals", 4, &n);
        im->num_p[b] = (int32_t)n;
        memcpy(im->proposals + b * im->max_p * 4, p, (size_t)n * 16);
        free(p);
        float *g = t_json_floats(field(img, "gt"), "gt", 4, &n);
        im->num_g[b] = (int32_t)n;
        memcpy(im->gt + b * im->max_g * 4, g, (size_t)n * 16);
        free(g);
        if (field(img, "gt_labels")) {
            int32_t *l = golden_ints(img, "gt_labels", &n);
            memcpy(im->gt_labels + b * im->max_g, l, (size_t)n * 4);
            free(l);
        }
        ++b;
    }
}

/* The candidate (ground truth first when added, then proposals) a row
 * holds: the first at or after `from` with its box, as rows of one class
 * ascend and boxes may repeat. */
static int64_t candidate_of(const images *im, const detpost_stage_params *p, const samples *o, int64_t b, int64_t r,
                            int64_t from)
{
    const int64_t gt_rows = p->add_gt_as_proposals ? im->num_g[b] : 0;
    const float *roi = o->rois + (b * o->s + r) * 5;
    for (int64_t c = from; c < gt_rows + im->num_p[b]; ++c) {
        const float *box =
            c < gt_rows ? im->gt + (b * im->max_g + c) * 4 : im->proposals + (b * im->max_p + c - gt_rows) * 4;
        if (memcmp(roi + 1, box, 16) == 0 && o->is_gt[b * o->s + r] == (c < gt_rows)) return c;
    }
    cr_assert_fail("image %lld row %lld holds no candidate", (long long)b, (long long)r);
    return -1;
}

static int compare_u64(const void *a, const void *b)
{
    const uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return (x > y) - (x < y);
}

/* Rows [first, first + count) must be the `count` candidates of `from` with
 * the smallest (key, candidate), in candidate order. */
static void check_smallest_keys(const images *im, const detpost_stage_params *p, const samples *o, int64_t b,
                                const cJSON *pool, int64_t first, int64_t count, const char *what)
{
    int64_t n;
    float *f = t_json_floats(pool, "candidates", 0, &n);
    uint64_t *keys = malloc((size_t)(n + 1) * 8);
    for (int64_t k = 0; k < n; ++k)
        keys[k] = (uint64_t)dp_sample_key(p->seed, b, p->stage, (int64_t)f[k]) << 32 | (uint64_t)f[k];
    qsort(keys, (size_t)n, 8, compare_u64);
    cr_assert_leq(count, n, "%s", what);
    uint64_t *want = malloc((size_t)(count + 1) * 8);
    for (int64_t k = 0; k < count; ++k) want[k] = keys[k] & 0xffffffffu;
    qsort(want, (size_t)count, 8, compare_u64);
    int64_t from = 0;
    for (int64_t k = 0; k < count; ++k) {
        const int64_t c = candidate_of(im, p, o, b, first + k, from);
        cr_assert_eq(c, (int64_t)want[k], "%s: row %lld", what, (long long)(first + k));
        from = c + 1;
    }
    free(f), free(keys), free(want);
}

static void check_golden_image(const images *im, const detpost_stage_params *p, const samples *o, int64_t b,
                               const cJSON *e, const char *name)
{
    const int64_t ns = (int64_t)t_golden_number(e, "num_samples", -1);
    const int64_t npos = (int64_t)t_golden_number(e, "num_pos", -1);
    cr_assert_eq(o->num_samples[b], ns, "%s: image %lld num_samples", name, (long long)b);
    cr_assert_eq(o->num_pos[b], npos, "%s: image %lld num_pos", name, (long long)b);
    const cJSON *rows = field(e, "rows");
    if (rows) {
        int64_t r = 0, from = 0;
        const cJSON *row;
        cJSON_ArrayForEach(row, rows)
        {
            if (r == npos) from = 0; /* the negatives start over */
            int64_t cols;
            float *v = t_json_floats(row, "row", 0, &cols);
            const int64_t at = b * o->s + r;
            char what[300];
            snprintf(what, sizeof what, "%s: image %lld row %lld", name, (long long)b, (long long)r);
            const int64_t c = candidate_of(im, p, o, b, r, from);
            cr_assert_eq(c, (int64_t)v[0], "%s: candidate", what);
            from = c + 1;
            cr_assert_eq(o->rois[at * 5], (float)b, "%s: batch index", what);
            cr_assert_eq(o->labels[at], (int32_t)v[1], "%s: label %d", what, o->labels[at]);
            t_assert_close(o->max_iou + at, v + 2, 1, 1e-6f, 0, what);
            cr_assert_eq(o->is_gt[at], (uint8_t)v[3], "%s: is_gt", what);
            t_assert_close(o->targets + at * 4, v + 4, 4, 1e-5f, 1e-5f, what);
            free(v);
            ++r;
        }
        cr_assert_eq(r, ns, "%s: the case lists %lld rows", name, (long long)r);
    } else {
        check_smallest_keys(im, p, o, b, field(e, "pos_from"), 0, npos, name);
        check_smallest_keys(im, p, o, b, field(e, "neg_from"), npos, ns - npos, name);
    }
    assert_padding(o, b, ns, name);
}

static void golden_resample(detpost_backend backend)
{
    cJSON *root = t_golden("cascade.json");
    detpost_ctx *ctx = t_ctx(backend);
    const cJSON *c;
    int cases = 0;
    cJSON_ArrayForEach(c, field(root, "resample"))
    {
        const char *name = t_golden_string(c, "name", "?");
        detpost_stage_params p = golden_params(c);
        images im;
        golden_images(c, &im);
        for (int s = 0; s < t_schedule_count(); ++s) {
            t_set_schedule(t_schedule(s));
            for (int seed = 0; seed < 3; ++seed) {
                p.seed = (uint64_t)seed * 1000003u;
                samples o;
                check_status(ctx, run_resample(ctx, &p, &im, &o), name);
                const cJSON *e;
                int64_t b = 0;
                cJSON_ArrayForEach(e, field(c, "expected")) check_golden_image(&im, &p, &o, b++, e, name);
                cr_assert_eq(b, im.batch);
                samples_free(&o);
            }
        }
        images_free(&im);
        ++cases;
    }
    cr_assert_geq(cases, 14);
    detpost_destroy(ctx);
    cJSON_Delete(root);
}

Test(resample, golden_cpu) { golden_resample(DETPOST_CPU); }
#if TEST_HAS_CUDA
Test(resample, golden_cuda) { golden_resample(DETPOST_CUDA); }
#endif

/* ---- seeded random images ------------------------------------------------------------ */

/* Ground truth scattered over a 640 x 480 image; proposals jittered around
 * it (some exact copies, so IoU ties happen), some anywhere, a few
 * degenerate. Counts vary per image unless `full`. */
static void random_images(t_rng *r, images *im, int64_t batch, int64_t max_p, int64_t max_g, int full)
{
    images_alloc(im, batch, max_p, max_g);
    for (int64_t b = 0; b < batch; ++b) {
        const int32_t np = (int32_t)(full ? max_p : (int64_t)(t_next(r) % (uint64_t)(max_p + 1)));
        const int32_t ng = (int32_t)(full ? max_g : (int64_t)(t_next(r) % (uint64_t)(max_g + 1)));
        im->num_p[b] = np, im->num_g[b] = ng;
        float *gt = im->gt + b * max_g * 4;
        t_detector_boxes(r, gt, ng, 640, 480, 0);
        for (int32_t g = 0; g < ng; ++g) im->gt_labels[b * max_g + g] = (int32_t)(t_next(r) % 80);
        float *props = im->proposals + b * max_p * 4;
        t_detector_boxes(r, props, np, 640, 480, 1);
        for (int32_t i = 0; i < np && ng > 0; ++i) {
            const uint64_t kind = t_next(r) % 10;
            const float *o = gt + (int64_t)(t_next(r) % (uint64_t)ng) * 4;
            float *q = props + (int64_t)i * 4;
            if (kind < 6) { /* around a ground truth */
                const float w = o[2] - o[0], h = o[3] - o[1], j = t_uniform(r, 0.0f, 0.25f);
                q[0] = o[0] + w * t_uniform(r, -j, j), q[1] = o[1] + h * t_uniform(r, -j, j);
                q[2] = o[2] + w * t_uniform(r, -j, j), q[3] = o[3] + h * t_uniform(r, -j, j);
            } else if (kind == 6) {
                memcpy(q, o, 16);
            }
        }
    }
}

#if TEST_HAS_CUDA
static detpost_stage_params random_params(t_rng *r)
{
    static const int32_t sizes[] = {1, 64, 512, 600, 0};
    static const float fractions[] = {0.25f, 0.5f, 1.0f, 0.0f};
    static const float ubs[] = {-1.0f, 0.0f, 2.5f};
    detpost_stage_params p = detpost_stage_params_default((int)(t_next(r) % 3));
    p.num_samples = sizes[t_next(r) % 5];
    p.pos_fraction = fractions[t_next(r) % 4];
    p.neg_pos_ub = ubs[t_next(r) % 3];
    p.neg_iou_lo = t_next(r) % 2 ? 0.1f : 0.0f;
    p.add_gt_as_proposals = (int32_t)(t_next(r) % 2);
    p.match_low_quality = (int32_t)(t_next(r) % 2);
    p.min_pos_iou = t_next(r) % 2 ? 0.3f : p.pos_iou;
    p.coder.offset = t_next(r) % 5 == 0 ? 1.0f : 0.0f;
    p.background_label = (int32_t)(t_next(r) % 2) * 80;
    p.seed = t_next(r);
    return p;
}

/* Sizes across the proposal block (256), the ground-truth tile (256) and the
 * sampling block (512). */
Test(resample, cpu_vs_cuda_random)
{
    static const int64_t shapes[][3] = {{1, 1, 1},    {2, 255, 3}, {3, 257, 40},  {2, 700, 300},
                                        {1, 1100, 0}, {2, 40, 1},  {2, 2000, 100}};
    detpost_ctx *cpu = t_ctx(DETPOST_CPU), *gpu = t_ctx(DETPOST_CUDA);
    t_rng rng = {4242};
    for (int s = 0; s < t_schedule_count(); ++s) {
        t_set_schedule(t_schedule(s));
        for (size_t k = 0; k < sizeof shapes / sizeof shapes[0]; ++k)
            for (int rep = 0; rep < 5; ++rep) {
                images im;
                random_images(&rng, &im, shapes[k][0], shapes[k][1], shapes[k][2], rep == 0);
                const detpost_stage_params p = random_params(&rng);
                samples want, got;
                check_status(cpu, run_resample(cpu, &p, &im, &want), "cpu resample");
                check_status(gpu, run_resample(gpu, &p, &im, &got), "cuda resample");
                char what[200];
                snprintf(what, sizeof what, "shape %zu rep %d (S %d, lq %d, gt %d, stage %d, %s)", k, rep,
                         (int)p.num_samples, (int)p.match_low_quality, (int)p.add_gt_as_proposals, (int)p.stage,
                         t_schedule(s) ? t_schedule(s) : "gpu");
                assert_samples_equal(&got, &want, what);
                samples_free(&want), samples_free(&got);
                images_free(&im);
            }
    }
    detpost_destroy(cpu);
    detpost_destroy(gpu);
}
#endif

/* The same seed gives the same sample on every backend of this build;
 * another seed or stage gives another sample. */
static void seeds_drive_the_sample(detpost_backend backend)
{
    detpost_ctx *ctx = t_ctx(backend), *cpu = t_ctx(DETPOST_CPU);
    t_rng rng = {99};
    images im;
    random_images(&rng, &im, 2, 800, 20, 1);
    detpost_stage_params p = detpost_stage_params_default(0);
    p.num_samples = 64;
    p.seed = 12345;
    samples a, b, c, d, ref;
    check_status(ctx, run_resample(ctx, &p, &im, &a), "first run");
    check_status(ctx, run_resample(ctx, &p, &im, &b), "second run");
    check_status(cpu, run_resample(cpu, &p, &im, &ref), "cpu run");
    assert_samples_equal(&a, &b, "the same seed twice");
    assert_samples_equal(&a, &ref, "the same seed on the CPU");
    for (int64_t img = 0; img < 2; ++img)
        cr_assert(a.num_samples[img] == 64 && a.num_pos[img] > 0 && a.num_pos[img] < 64,
                  "the case must sample both classes with choice left (%d, %d)", a.num_samples[img], a.num_pos[img]);
    p.seed = 12346;
    check_status(ctx, run_resample(ctx, &p, &im, &c), "another seed");
    p.seed = 12345;
    p.stage = 1;
    check_status(ctx, run_resample(ctx, &p, &im, &d), "another stage");
    for (int k = 0; k < 2; ++k) {
        const samples *o = k ? &d : &c;
        int differs = 0;
        for (int64_t r = 0; r < a.batch * a.s; ++r) differs |= memcmp(o->rois + r * 5, a.rois + r * 5, 20) != 0;
        cr_assert(differs, "%s chose the same sample", k ? "another stage" : "another seed");
        cr_assert_eq(memcmp(o->num_pos, a.num_pos, 8), 0, "the counts do not depend on the seed");
    }
    samples_free(&a), samples_free(&b), samples_free(&c), samples_free(&d), samples_free(&ref);
    images_free(&im);
    detpost_destroy(ctx);
    detpost_destroy(cpu);
}

Test(resample, seeds_drive_the_sample_cpu) { seeds_drive_the_sample(DETPOST_CPU); }
#if TEST_HAS_CUDA
Test(resample, seeds_drive_the_sample_cuda) { seeds_drive_the_sample(DETPOST_CUDA); }
#endif

/* Two candidates with the same 32-bit key straddling the k-th place: the
 * lower index is taken first. Random inputs almost never collide, so the
 * test searches seeds until 20000 candidates of image 0 hold a colliding
 * pair, and sets num_samples to take none, one or both of them. Image 1
 * follows, so that a row written past image 0's shows up. */
static void ties_at_the_threshold(detpost_backend backend)
{
    enum { N = 20000 };
    uint64_t *keys = malloc(N * sizeof *keys);
    uint64_t seed = 0;
    int64_t rank = -1;
    for (; rank < 0; ++seed) {
        for (int64_t c = 0; c < N; ++c) keys[c] = (uint64_t)dp_sample_key(seed, 0, 0, c) << 32 | (uint64_t)c;
        qsort(keys, N, sizeof *keys, compare_u64);
        for (int64_t k = 0; k + 1 < N && rank < 0; ++k)
            if (keys[k] >> 32 == keys[k + 1] >> 32) rank = k;
    }
    --seed;
    detpost_ctx *ctx = t_ctx(backend), *cpu = t_ctx(DETPOST_CPU);
    images im;
    images_alloc(&im, 2, N, 1);
    for (int64_t b = 0; b < 2; ++b) {
        im.num_p[b] = N;
        for (int64_t i = 0; i < N; ++i) { /* box i starts at x = i: rows name their candidate */
            const float box[4] = {(float)i, 0.0f, (float)i + 1.0f, 1.0f};
            memcpy(im.proposals + (b * N + i) * 4, box, 16);
        }
    }
    detpost_stage_params p = detpost_stage_params_default(0);
    p.seed = seed;
    for (int s = 0; s < (backend == DETPOST_CPU ? 1 : t_schedule_count()); ++s) {
        if (backend != DETPOST_CPU) t_set_schedule(t_schedule(s));
        for (int extra = 0; extra <= 2; ++extra) {
            p.num_samples = (int32_t)(rank + extra);
            samples o, ref;
            check_status(ctx, run_resample(ctx, &p, &im, &o), "resample");
            check_status(cpu, run_resample(cpu, &p, &im, &ref), "cpu resample");
            cr_assert_eq(o.num_samples[0], p.num_samples);
            uint64_t *want = malloc((size_t)(p.num_samples + 1) * sizeof *want);
            for (int64_t k = 0; k < p.num_samples; ++k) want[k] = keys[k] & 0xffffffffu;
            qsort(want, (size_t)p.num_samples, sizeof *want, compare_u64);
            for (int64_t k = 0; k < p.num_samples; ++k)
                cr_assert_eq((uint64_t)o.rois[k * 5 + 1], want[k], "seed %llu, %d of the tied pair: row %lld",
                             (unsigned long long)seed, extra, (long long)k);
            assert_samples_equal(&o, &ref, "ties against the CPU");
            free(want);
            samples_free(&o), samples_free(&ref);
        }
    }
    images_free(&im);
    free(keys);
    detpost_destroy(ctx);
    detpost_destroy(cpu);
}

Test(resample, ties_at_the_threshold_cpu) { ties_at_the_threshold(DETPOST_CPU); }
#if TEST_HAS_CUDA
Test(resample, ties_at_the_threshold_cuda) { ties_at_the_threshold(DETPOST_CUDA); }
#endif

/* ---- resampling: bad input ------------------------------------------------------------ */

typedef struct resample_call {
    detpost_stage_params p;
    int64_t batch, max_p, max_g;
    const float *proposals, *gt;
    const int32_t *num_p, *gt_labels, *num_g;
    float *rois, *targets, *max_iou;
    int32_t *labels, *num_samples, *num_pos;
    uint8_t *is_gt;
} resample_call;

static detpost_status call_resample(detpost_ctx *ctx, const resample_call *c)
{
    return detpost_cascade_resample(ctx, &c->p, c->batch, c->proposals, c->num_p, c->max_p, c->gt, c->gt_labels,
                                    c->num_g, c->max_g, c->rois, c->labels, c->targets, c->max_iou, c->is_gt,
                                    c->num_samples, c->num_pos);
}

Test(resample, bad_input_gets_status_and_message)
{
    detpost_ctx *cpu = t_ctx(DETPOST_CPU);
    const float props[2 * 3 * 4] = {0, 0, 10, 10, 1, 1, 9, 9, 0, 0, 5, 5, 0, 0, 10, 10, 1, 1, 9, 9, 0, 0, 5, 5};
    const float gt[2 * 2 * 4] = {0, 0, 10, 10, 5, 5, 9, 9, 0, 0, 10, 10, 5, 5, 9, 9};
    const int32_t gt_labels[4] = {1, 2, 3, 4}, num_p[2] = {3, 2}, num_g[2] = {2, 1};
    enum { S = 4, ROWS = 2 * S };
    float rois[ROWS * 5], targets[ROWS * 4], max_iou[ROWS];
    int32_t labels[ROWS], num_samples[2], num_pos[2];
    uint8_t is_gt[ROWS];
    memset(rois, 0x5a, sizeof rois), memset(targets, 0x5a, sizeof targets), memset(max_iou, 0x5a, sizeof max_iou);
    memset(labels, 0x5a, sizeof labels), memset(num_samples, 0x5a, sizeof num_samples);
    memset(num_pos, 0x5a, sizeof num_pos), memset(is_gt, 0x5a, sizeof is_gt);
    resample_call base = {detpost_stage_params_default(0), 2, 3, 2, props, gt, num_p, gt_labels, num_g,
                          rois, targets, max_iou, labels, num_samples, num_pos, is_gt};
    base.p.num_samples = S;
    const int32_t too_many_p[2] = {3, 4}, negative_g[2] = {-1, 0}, too_many_g[2] = {2, 3};

#define BAD(change, status, needle)                                                                                  \
    do {                                                                                                             \
        resample_call c = base;                                                                                      \
        change;                                                                                                      \
        const detpost_status st = call_resample(cpu, &c);                                                            \
        cr_assert_eq(st, status, "%s: %s", #change, detpost_status_name(st));                                       \
        cr_assert(strstr(detpost_last_error(cpu), needle) != NULL, "%s: message '%s' lacks '%s'", #change,          \
                  detpost_last_error(cpu), needle);                                                                  \
        const uint8_t *bytes[7] = {(uint8_t *)rois, (uint8_t *)targets, (uint8_t *)max_iou, (uint8_t *)labels,       \
                                   (uint8_t *)num_samples, (uint8_t *)num_pos, is_gt};                               \
        const size_t sizes[7] = {sizeof rois, sizeof targets, sizeof max_iou, sizeof labels, sizeof num_samples,    \
                                 sizeof num_pos, sizeof is_gt};                                                      \
        for (int k = 0; k < 7; ++k)                                                                                  \
            for (size_t i = 0; i < sizes[k]; ++i) cr_assert_eq(bytes[k][i], 0x5a, "%s wrote output %d", #change, k); \
    } while (0)
    const detpost_status INVALID = DETPOST_ERR_INVALID_ARGUMENT;
    BAD(c.p.pos_iou = 1.5f, INVALID, "p->pos_iou");
    BAD(c.p.pos_iou = NAN, INVALID, "p->pos_iou");
    BAD(c.p.neg_iou = -0.1f, INVALID, "p->neg_iou");
    BAD(c.p.neg_iou_lo = 0.6f, INVALID, "p->neg_iou_lo");
    BAD(c.p.min_pos_iou = 2.0f, INVALID, "p->min_pos_iou");
    BAD(c.p.pos_fraction = 1.25f, INVALID, "p->pos_fraction");
    BAD(c.p.pos_fraction = -0.5f, INVALID, "p->pos_fraction");
    BAD(c.p.pos_fraction = NAN, INVALID, "p->pos_fraction");
    BAD(c.p.neg_pos_ub = NAN, INVALID, "p->neg_pos_ub");
    BAD(c.p.num_samples = -1, INVALID, "p->num_samples");
    BAD(c.p.add_gt_as_proposals = 2, INVALID, "p->add_gt_as_proposals");
    BAD(c.p.match_low_quality = -1, INVALID, "p->match_low_quality");
    BAD(c.p.stage = -1, INVALID, "p->stage");
    BAD(c.p.coder.stds[0] = 0.0f, INVALID, "p->coder->stds[0]");
    BAD(c.p.coder.stds[2] = NAN, INVALID, "p->coder->stds[2]");
    BAD(c.p.coder.means[1] = INFINITY, INVALID, "p->coder->means[1]");
    BAD(c.p.coder.clamp = NAN, INVALID, "p->coder->clamp");
    BAD(c.p.coder.clamp = -1.0f, INVALID, "p->coder->clamp");
    BAD(c.p.coder.offset = 0.5f, INVALID, "p->coder->offset");
    BAD(c.batch = -1, INVALID, "batch is negative");
    BAD(c.max_p = -3, INVALID, "max_proposals is negative");
    BAD(c.max_g = -1, INVALID, "max_gt is negative");
    BAD(c.max_p = INT32_MAX, DETPOST_ERR_UNSUPPORTED, "max_proposals + max_gt");
    BAD(c.proposals = NULL, INVALID, "proposals is NULL");
    BAD(c.num_p = NULL, INVALID, "num_proposals is NULL");
    BAD(c.gt = NULL, INVALID, "gt_boxes is NULL");
    BAD(c.gt_labels = NULL, INVALID, "gt_labels is NULL");
    BAD(c.num_g = NULL, INVALID, "num_gt is NULL");
    BAD(c.rois = NULL, INVALID, "rois is NULL");
    BAD(c.labels = NULL, INVALID, "labels is NULL");
    BAD(c.targets = NULL, INVALID, "targets is NULL");
    BAD(c.max_iou = NULL, INVALID, "max_iou is NULL");
    BAD(c.is_gt = NULL, INVALID, "is_gt is NULL");
    BAD(c.num_samples = NULL, INVALID, "num_samples is NULL");
    BAD(c.num_pos = NULL, INVALID, "num_pos is NULL");
    BAD(c.num_p = too_many_p, INVALID, "num_proposals[1] is 4");
    BAD(c.num_g = negative_g, INVALID, "num_gt[0] is -1");
    BAD(c.num_g = too_many_g, INVALID, "num_gt[1] is 3");
    BAD(c.batch = INT64_MAX / 4, INVALID, "overflow");
#undef BAD
    cr_assert_eq(detpost_cascade_resample(NULL, &base.p, 2, props, num_p, 3, gt, gt_labels, num_g, 2, rois, labels,
                                          targets, max_iou, is_gt, num_samples, num_pos),
                 DETPOST_ERR_INVALID_ARGUMENT);
    /* the base call is good, clears the message, and p NULL means stage 0 defaults */
    cr_assert_eq(call_resample(cpu, &base), DETPOST_OK, "%s", detpost_last_error(cpu));
    cr_assert_str_empty(detpost_last_error(cpu));
    cr_assert(num_samples[0] == 2 && num_pos[0] == 1, "floor(4 * 0.25) = 1 of 4 positives, then the one negative");
    detpost_destroy(cpu);
}

#if TEST_HAS_CUDA
/* On a CUDA context the counts are never read by the host: an image whose
 * counts exceed the maxima is marked with -1 and padded, the others are
 * unaffected. */
Test(resample, cuda_marks_images_with_bad_counts)
{
    detpost_ctx *cpu = t_ctx(DETPOST_CPU), *gpu = t_ctx(DETPOST_CUDA);
    t_rng rng = {8};
    images im;
    random_images(&rng, &im, 3, 50, 5, 1);
    detpost_stage_params p = detpost_stage_params_default(0);
    p.num_samples = 32;
    samples want, got;
    check_status(cpu, run_resample(cpu, &p, &im, &want), "cpu");
    im.num_p[1] = 51;
    im.num_g[2] = -2;
    expected_fault = "image 1 with num_proposals or num_gt outside";
    check_status(gpu, run_resample(gpu, &p, &im, &got), "cuda with bad counts");
    cr_assert(got.num_samples[0] == want.num_samples[0] && got.num_pos[0] == want.num_pos[0]);
    cr_assert_eq(memcmp(got.rois, want.rois, 32 * 20), 0, "image 0 is unaffected");
    for (int b = 1; b < 3; ++b) {
        cr_assert(got.num_samples[b] == -1 && got.num_pos[b] == -1, "image %d is marked", b);
        assert_padding(&got, b, 0, "bad counts");
    }
    samples_free(&want), samples_free(&got);
    images_free(&im);
    detpost_destroy(cpu);
    detpost_destroy(gpu);
}
#endif

/* ---- workspace ------------------------------------------------------------------------ */

static void caller_workspace(detpost_backend backend)
{
    detpost_ctx *ctx = t_ctx(backend);
    t_rng rng = {31};
    images im;
    random_images(&rng, &im, 2, 300, 10, 1);
    detpost_stage_params p = detpost_stage_params_default(1);
    p.match_low_quality = 1;
    size_t need = 0, need_plain = 0;
    cr_assert_eq(detpost_cascade_resample_workspace_size(ctx, &p, 2, 300, 10, &need), DETPOST_OK);
    p.match_low_quality = 0;
    cr_assert_eq(detpost_cascade_resample_workspace_size(ctx, &p, 2, 300, 10, &need_plain), DETPOST_OK);
    p.match_low_quality = 1;
    if (backend == DETPOST_CUDA) cr_assert_gt(need, need_plain, "low-quality matching needs its own scratch");
    cr_assert_geq(need, (size_t)(2 * 300 * 8));
    samples want, got;
    check_status(ctx, run_resample(ctx, &p, &im, &want), "owned arena");
    void *small = t_alloc(ctx, need / 2);
    cr_assert_eq(detpost_set_workspace(ctx, small, need / 2), DETPOST_OK);
    cr_assert_eq(run_resample(ctx, &p, &im, &got), DETPOST_ERR_WORKSPACE_TOO_SMALL);
    cr_assert(strstr(resample_message, "workspace") != NULL, "%s", resample_message);
    char *big = t_alloc(ctx, need + 1);
    cr_assert_eq(detpost_set_workspace(ctx, big + 1, need), DETPOST_OK);
    check_status(ctx, run_resample(ctx, &p, &im, &got), "the queried size, misaligned");
    assert_samples_equal(&got, &want, "caller workspace");
    cr_assert_eq(detpost_set_workspace(ctx, NULL, 0), DETPOST_OK);
    size_t refine_bytes = 1;
    cr_assert_eq(detpost_cascade_refine_workspace_size(ctx, 5000, &refine_bytes), DETPOST_OK);
    cr_assert(backend == DETPOST_CPU ? refine_bytes == 0 : refine_bytes > 0);
    cr_assert_eq(detpost_cascade_refine_workspace_size(ctx, -1, &refine_bytes), DETPOST_ERR_INVALID_ARGUMENT);
    cr_assert_eq(detpost_cascade_resample_workspace_size(ctx, &p, 2, 300, 10, NULL), DETPOST_ERR_INVALID_ARGUMENT);
    samples_free(&want), samples_free(&got);
    t_free(ctx, small), t_free(ctx, big);
    images_free(&im);
    detpost_destroy(ctx);
}

Test(resample, caller_workspace_cpu) { caller_workspace(DETPOST_CPU); }
#if TEST_HAS_CUDA
Test(resample, caller_workspace_cuda) { caller_workspace(DETPOST_CUDA); }
#endif

/* ---- refine ---------------------------------------------------------------------------- */

static detpost_refine_policy policy_of(const char *name)
{
    if (strcmp(name, "mmdet") == 0) return DETPOST_REFINE_MMDET;
    if (strcmp(name, "detectron2") == 0) return DETPOST_REFINE_DETECTRON2;
    if (strcmp(name, "caffe") == 0) return DETPOST_REFINE_CAFFE;
    cr_assert_fail("unknown policy %s", name);
    return DETPOST_REFINE_MMDET;
}

typedef struct refine_result {
    float *rows;
    int64_t kept;
} refine_result;

static refine_result run_refine(detpost_ctx *ctx, const detpost_box_coder *coder, detpost_refine_policy policy,
                                const float *rois, const float *deltas, int64_t n, int64_t classes,
                                const int32_t *labels, const uint8_t *is_gt, const float *gt_iou, const float *sizes,
                                int64_t images)
{
    float *dr = up(ctx, rois, (size_t)n * 20), *dd = up(ctx, deltas, (size_t)(n * classes) * 16);
    int32_t *dl = labels ? up(ctx, labels, (size_t)n * 4) : NULL;
    uint8_t *dg = is_gt ? up(ctx, is_gt, (size_t)n) : NULL;
    float *di = gt_iou ? up(ctx, gt_iou, (size_t)n * 4) : NULL, *ds = sizes ? up(ctx, sizes, (size_t)images * 8) : NULL;
    float *dout = t_alloc(ctx, (size_t)n * 20);
    int64_t *dk = t_alloc(ctx, 8);
    check_status(ctx, detpost_cascade_refine(ctx, coder, policy, dr, dd, n, classes, dl, dg, di, ds, images, dout, dk),
                 "refine");
    refine_result r = {t_down(ctx, dout, (size_t)n * 20), 0};
    cr_assert_eq(detpost_to_host(ctx, &r.kept, dk, 8), DETPOST_OK);
    t_free(ctx, dr), t_free(ctx, dd), t_free(ctx, dl), t_free(ctx, dg), t_free(ctx, di), t_free(ctx, ds);
    t_free(ctx, dout), t_free(ctx, dk);
    return r;
}

static void golden_refine(detpost_backend backend)
{
    cJSON *root = t_golden("cascade.json");
    detpost_ctx *ctx = t_ctx(backend);
    const cJSON *c;
    int cases = 0;
    cJSON_ArrayForEach(c, field(root, "refine"))
    {
        const char *name = t_golden_string(c, "name", "?");
        int64_t n, m, k, ng = 0, ni = 0, ns = 0;
        float *rois = t_golden_floats(c, "rois", 5, &n), *deltas = t_golden_floats(c, "deltas", 4, &m);
        float *want = t_golden_floats(c, "expected", 5, &k);
        float *gt_iou = field(c, "gt_iou") ? t_golden_floats(c, "gt_iou", 0, &ni) : NULL;
        float *sizes = field(c, "image_sizes") ? t_golden_floats(c, "image_sizes", 2, &ns) : NULL;
        uint8_t *is_gt = NULL;
        if (field(c, "is_gt")) {
            int32_t *v = golden_ints(c, "is_gt", &ng);
            is_gt = malloc((size_t)ng);
            for (int64_t i = 0; i < ng; ++i) is_gt[i] = (uint8_t)v[i];
            free(v);
        }
        const detpost_box_coder coder = detpost_box_coder_default();
        for (int s = 0; s < t_schedule_count(); ++s) {
            t_set_schedule(t_schedule(s));
            refine_result r = run_refine(ctx, &coder, policy_of(t_golden_string(c, "policy", "?")), rois, deltas, n, 1,
                                         NULL, is_gt, gt_iou, sizes, ns);
            cr_assert_eq(r.kept, (int64_t)t_golden_number(c, "num_next", -1), "%s: num_next %lld", name,
                         (long long)r.kept);
            t_assert_close(r.rows, want, n * 5, 1e-5f, 1e-5f, name);
            free(r.rows);
        }
        free(rois), free(deltas), free(want), free(gt_iou), free(sizes), free(is_gt);
        ++cases;
    }
    cr_assert_eq(cases, 4);
    detpost_destroy(ctx);
    cJSON_Delete(root);
}

Test(refine, golden_cpu) { golden_refine(DETPOST_CPU); }
#if TEST_HAS_CUDA
Test(refine, golden_cuda) { golden_refine(DETPOST_CUDA); }

/* Across the scatter block (256), the tile (1024) and the tile-scan block
 * (256 tiles) boundaries, every policy, class-agnostic and per-class deltas. */
Test(refine, cpu_vs_cuda_random)
{
    static const int64_t sizes[] = {1, 255, 1025, 4500, 256 * 1024 + 700};
    detpost_ctx *cpu = t_ctx(DETPOST_CPU), *gpu = t_ctx(DETPOST_CUDA);
    t_rng rng = {555};
    const float img_sizes[4] = {480, 640, 200, 150};
    for (int s = 0; s < t_schedule_count(); ++s) {
        t_set_schedule(t_schedule(s));
        for (size_t si = 0; si < sizeof sizes / sizeof sizes[0]; ++si) {
            const int64_t n = sizes[si], classes = t_next(&rng) % 2 ? 1 : 3;
            if (n > 100000 && s > 0) continue; /* the scan's chunks need no other schedules */
            float *boxes = malloc((size_t)n * 16), *rois = malloc((size_t)n * 20);
            float *deltas = malloc((size_t)(n * classes) * 16), *gt_iou = malloc((size_t)n * 4);
            int32_t *labels = malloc((size_t)n * 4);
            uint8_t *is_gt = malloc((size_t)n);
            t_detector_boxes(&rng, boxes, n, 640, 480, 1);
            for (int64_t i = 0; i < n; ++i) {
                rois[i * 5] = t_next(&rng) % 10 == 0 ? -1.0f : (float)(t_next(&rng) % 2);
                memcpy(rois + i * 5 + 1, boxes + i * 4, 16);
                labels[i] = (int32_t)(t_next(&rng) % 4) - 1;
                is_gt[i] = t_next(&rng) % 5 == 0;
                gt_iou[i] = t_next(&rng) % 4 == 0 ? 0.95f : t_uniform(&rng, 0, 1);
            }
            for (int64_t i = 0; i < n * classes * 4; ++i) deltas[i] = t_uniform(&rng, -4.0f, 4.0f);
            for (int policy = DETPOST_REFINE_MMDET; policy <= DETPOST_REFINE_CAFFE; ++policy)
                for (int clip = 0; clip < 2; ++clip) {
                    detpost_box_coder coder = detpost_box_coder_default();
                    coder.offset = (float)(t_next(&rng) % 2);
                    const detpost_refine_policy pol = (detpost_refine_policy)policy;
                    const float *sz = clip ? img_sizes : NULL;
                    refine_result want =
                        run_refine(cpu, &coder, pol, rois, deltas, n, classes, labels, is_gt, gt_iou, sz, 2);
                    refine_result got =
                        run_refine(gpu, &coder, pol, rois, deltas, n, classes, labels, is_gt, gt_iou, sz, 2);
                    cr_assert_eq(got.kept, want.kept, "policy %d n %lld: kept %lld, cpu %lld", policy, (long long)n,
                                 (long long)got.kept, (long long)want.kept);
                    cr_assert_eq(memcmp(got.rows, want.rows, (size_t)n * 20), 0, "policy %d n %lld clip %d (%s)",
                                 policy, (long long)n, clip, t_schedule(s) ? t_schedule(s) : "gpu");
                    cr_assert(n < 10 || (want.kept > 0 && want.kept < n), "the case must drop some rows and keep some");
                    free(want.rows), free(got.rows);
                }
            free(boxes), free(rois), free(deltas), free(gt_iou), free(labels), free(is_gt);
        }
    }
    detpost_destroy(cpu);
    detpost_destroy(gpu);
}
#endif

Test(refine, bad_input_gets_status_and_message)
{
    detpost_ctx *cpu = t_ctx(DETPOST_CPU);
    const float rois[10] = {0, 0, 0, 10, 10, 0, 5, 5, 9, 9}, deltas[8] = {0}, gt_iou[2] = {0.5f, 0.9f};
    const uint8_t is_gt[2] = {0, 1};
    const int32_t labels[2] = {0, 1};
    const float sizes[2] = {100, 100};
    float out[10];
    int64_t kept = -5;
    for (int i = 0; i < 10; ++i) out[i] = -7;
    const detpost_box_coder coder = detpost_box_coder_default(), bad_coder = {{0}, {1, 1, 1, -1}, 1, 0};
#define TRY(call, needle)                                                                                            \
    do {                                                                                                             \
        cr_assert_eq(call, DETPOST_ERR_INVALID_ARGUMENT, "%s", #call);                                              \
        cr_assert(strstr(detpost_last_error(cpu), needle) != NULL, "%s: '%s'", #call, detpost_last_error(cpu));    \
    } while (0)
    TRY(detpost_cascade_refine(cpu, &coder, (detpost_refine_policy)7, rois, deltas, 2, 1, NULL, is_gt, gt_iou, NULL, 0,
                               out, &kept), "policy");
    TRY(detpost_cascade_refine(cpu, &coder, DETPOST_REFINE_MMDET, rois, deltas, 2, 1, NULL, NULL, gt_iou, NULL, 0, out,
                               &kept), "is_gt is NULL");
    TRY(detpost_cascade_refine(cpu, &coder, DETPOST_REFINE_CAFFE, rois, deltas, 2, 1, NULL, is_gt, NULL, NULL, 0, out,
                               &kept), "gt_iou is NULL");
    TRY(detpost_cascade_refine(cpu, &coder, DETPOST_REFINE_CAFFE, rois, deltas, 2, 1, NULL, is_gt, gt_iou, NULL, 0, out,
                               NULL), "num_next is NULL");
    TRY(detpost_cascade_refine(cpu, &coder, DETPOST_REFINE_CAFFE, rois, deltas, 2, 1, NULL, is_gt, gt_iou, NULL, 0,
                               NULL, &kept), "next_rois is NULL");
    TRY(detpost_cascade_refine(cpu, &coder, DETPOST_REFINE_MMDET, rois, deltas, -2, 1, NULL, is_gt, gt_iou, NULL, 0,
                               out, &kept), "num_rois is negative");
    TRY(detpost_cascade_refine(cpu, &coder, DETPOST_REFINE_MMDET, rois, deltas, 2, 2, NULL, is_gt, gt_iou, NULL, 0, out,
                               &kept), "labels is NULL");
    TRY(detpost_cascade_refine(cpu, &bad_coder, DETPOST_REFINE_MMDET, rois, deltas, 2, 1, NULL, is_gt, gt_iou, NULL, 0,
                               out, &kept), "coder->stds[3]");
    TRY(detpost_box_decode(cpu, &coder, NULL, deltas, 2, 1, NULL, NULL, 0, out), "rois is NULL");
    TRY(detpost_box_decode(cpu, &coder, rois, NULL, 2, 1, NULL, NULL, 0, out), "deltas is NULL");
    TRY(detpost_box_decode(cpu, &coder, rois, deltas, 2, 1, NULL, NULL, 0, NULL), "out is NULL");
    TRY(detpost_box_decode(cpu, &coder, rois, deltas, -1, 1, NULL, NULL, 0, out), "n is negative");
    TRY(detpost_box_decode(cpu, &coder, rois, deltas, 2, 0, labels, NULL, 0, out), "num_classes");
    TRY(detpost_box_decode(cpu, &coder, rois, deltas, 2, 1, NULL, sizes, 0, out), "num_images");
    TRY(detpost_box_decode(cpu, &coder, rois, deltas, INT64_MAX / 4, 1, NULL, NULL, 0, out), "overflow");
    TRY(detpost_box_encode(cpu, &bad_coder, rois, rois, 1, out), "coder->stds[3]");
#undef TRY
    for (int i = 0; i < 10; ++i) cr_assert_eq(out[i], -7.0f, "a failed call wrote its output");
    cr_assert_eq(kept, -5);
    cr_assert_eq(detpost_box_encode(cpu, NULL, NULL, rois, 1, out), DETPOST_ERR_INVALID_ARGUMENT);
    cr_assert(strstr(detpost_last_error(cpu), "proposals is NULL") != NULL);
    cr_assert_eq(detpost_box_encode(cpu, NULL, rois, rois, -1, out), DETPOST_ERR_INVALID_ARGUMENT);
    cr_assert_eq(detpost_box_encode(NULL, NULL, rois, rois, 1, out), DETPOST_ERR_INVALID_ARGUMENT);
    /* empty inputs are fine; refine still reports its count */
    cr_assert_eq(detpost_cascade_refine(cpu, NULL, DETPOST_REFINE_DETECTRON2, NULL, NULL, 0, 1, NULL, NULL, NULL, NULL,
                                        0, NULL, &kept), DETPOST_OK, "%s", detpost_last_error(cpu));
    cr_assert_eq(kept, 0);
    cr_assert_eq(detpost_box_decode(cpu, NULL, NULL, NULL, 0, 1, NULL, NULL, 0, NULL), DETPOST_OK);
    detpost_destroy(cpu);
}

/* ---- IoU histogram --------------------------------------------------------------------- */

static int64_t *run_histogram(detpost_ctx *ctx, const images *im, int32_t bins)
{
    const int64_t b = im->batch;
    float *dp = up(ctx, im->proposals, (size_t)(b * im->max_p) * 16);
    float *dg = up(ctx, im->gt, (size_t)(b * im->max_g) * 16);
    int32_t *dnp = up(ctx, im->num_p, (size_t)b * 4), *dng = up(ctx, im->num_g, (size_t)b * 4);
    int64_t *dc = t_alloc(ctx, (size_t)bins * 8);
    check_status(ctx, detpost_iou_histogram(ctx, b, dp, dnp, im->max_p, dg, dng, im->max_g, bins, dc), "histogram");
    int64_t *counts = t_down(ctx, dc, (size_t)bins * 8);
    t_free(ctx, dp), t_free(ctx, dg), t_free(ctx, dnp), t_free(ctx, dng), t_free(ctx, dc);
    return counts;
}

static void golden_histogram(detpost_backend backend)
{
    cJSON *root = t_golden("cascade.json");
    detpost_ctx *ctx = t_ctx(backend);
    const cJSON *c;
    int cases = 0;
    cJSON_ArrayForEach(c, field(root, "histogram"))
    {
        images im;
        golden_images(c, &im);
        int64_t n;
        int32_t *want = golden_ints(c, "expected", &n);
        const int32_t bins = (int32_t)t_golden_number(c, "num_bins", 0);
        cr_assert_eq(n, bins);
        for (int s = 0; s < t_schedule_count(); ++s) {
            t_set_schedule(t_schedule(s));
            int64_t *got = run_histogram(ctx, &im, bins);
            for (int32_t k = 0; k < bins; ++k)
                cr_assert_eq(got[k], want[k], "%s: bin %d holds %lld", t_golden_string(c, "name", "?"), k,
                             (long long)got[k]);
            free(got);
        }
        free(want);
        images_free(&im);
        ++cases;
    }
    cr_assert_eq(cases, 2);
    detpost_destroy(ctx);
    cJSON_Delete(root);
}

Test(histogram, golden_cpu) { golden_histogram(DETPOST_CPU); }
#if TEST_HAS_CUDA
Test(histogram, golden_cuda) { golden_histogram(DETPOST_CUDA); }

Test(histogram, cpu_vs_cuda_random)
{
    static const int32_t bins[] = {1, 7, 100, 4096};
    detpost_ctx *cpu = t_ctx(DETPOST_CPU), *gpu = t_ctx(DETPOST_CUDA);
    t_rng rng = {66};
    for (int s = 0; s < t_schedule_count(); ++s) {
        t_set_schedule(t_schedule(s));
        images im;
        random_images(&rng, &im, 3, 600, 300, 0);
        for (size_t k = 0; k < sizeof bins / sizeof bins[0]; ++k) {
            int64_t *want = run_histogram(cpu, &im, bins[k]), *got = run_histogram(gpu, &im, bins[k]);
            int64_t total = 0;
            for (int32_t i = 0; i < bins[k]; ++i) {
                cr_assert_eq(got[i], want[i], "%d bins: bin %d", bins[k], i);
                total += want[i];
            }
            cr_assert_eq(total, (int64_t)im.num_p[0] + im.num_p[1] + im.num_p[2]);
            free(want), free(got);
        }
        images_free(&im);
    }
    detpost_destroy(cpu);
    detpost_destroy(gpu);
}
#endif

Test(histogram, bad_input_gets_status_and_message)
{
    detpost_ctx *cpu = t_ctx(DETPOST_CPU);
    const float boxes[8] = {0, 0, 1, 1, 0, 0, 2, 2};
    const int32_t one[1] = {1}, three[1] = {3};
    int64_t counts[4] = {-7, -7, -7, -7};
    cr_assert_eq(detpost_iou_histogram(cpu, 1, boxes, one, 2, boxes, one, 2, 0, counts), DETPOST_ERR_INVALID_ARGUMENT);
    cr_assert(strstr(detpost_last_error(cpu), "num_bins") != NULL);
    cr_assert_eq(detpost_iou_histogram(cpu, 1, boxes, one, 2, boxes, one, 2, 4097, counts),
                 DETPOST_ERR_INVALID_ARGUMENT);
    cr_assert_eq(detpost_iou_histogram(cpu, 1, boxes, one, 2, boxes, one, 2, 4, NULL), DETPOST_ERR_INVALID_ARGUMENT);
    cr_assert(strstr(detpost_last_error(cpu), "counts is NULL") != NULL);
    cr_assert_eq(detpost_iou_histogram(cpu, 1, boxes, three, 2, boxes, one, 2, 4, counts),
                 DETPOST_ERR_INVALID_ARGUMENT);
    cr_assert(strstr(detpost_last_error(cpu), "num_proposals[0] is 3") != NULL, "%s", detpost_last_error(cpu));
    cr_assert_eq(detpost_iou_histogram(cpu, -1, boxes, one, 2, boxes, one, 2, 4, counts), DETPOST_ERR_INVALID_ARGUMENT);
    cr_assert_eq(detpost_iou_histogram(cpu, 1, NULL, one, 2, boxes, one, 2, 4, counts), DETPOST_ERR_INVALID_ARGUMENT);
    cr_assert(strstr(detpost_last_error(cpu), "proposals is NULL") != NULL);
    for (int i = 0; i < 4; ++i) cr_assert_eq(counts[i], -7);
    cr_assert_eq(detpost_iou_histogram(cpu, 0, NULL, NULL, 0, NULL, NULL, 0, 4, counts), DETPOST_OK);
    for (int i = 0; i < 4; ++i) cr_assert_eq(counts[i], 0, "an empty batch gives an empty histogram");
    /* sizes whose sum or product passes int64 are refused, not wrapped */
    cr_assert_eq(detpost_iou_histogram(cpu, 1, boxes, one, INT64_MAX, boxes, one, 1, 4, counts),
                 DETPOST_ERR_INVALID_ARGUMENT);
    cr_assert(strstr(detpost_last_error(cpu), "proposals") != NULL, "%s", detpost_last_error(cpu));
    detpost_destroy(cpu);
}

/* The size queries see only sizes: a product or sum past int64 is an error,
 * not a wrapped (small) answer. */
static void huge_workspace_queries(detpost_backend backend)
{
    detpost_ctx *ctx = t_ctx(backend);
    size_t bytes = 7;
    cr_assert_neq(detpost_cascade_resample_workspace_size(ctx, NULL, 1, INT64_MAX, (int64_t)1 << 61, &bytes),
                  DETPOST_OK);
    cr_assert_neq(detpost_cascade_resample_workspace_size(ctx, NULL, (int64_t)1 << 40, ((int64_t)1 << 24) + 1, 0,
                                                          &bytes),
                  DETPOST_OK);
    cr_assert(strstr(detpost_last_error(ctx), "proposals") != NULL, "%s", detpost_last_error(ctx));
    cr_assert_neq(detpost_cascade_refine_workspace_size(ctx, INT64_MAX, &bytes), DETPOST_OK);
    cr_assert(strstr(detpost_last_error(ctx), "rois") != NULL, "%s", detpost_last_error(ctx));
    cr_assert_eq(bytes, 7, "nothing written");
    detpost_destroy(ctx);
}

/* Images with no proposal and no ground-truth slots at all: every image
 * samples nothing and is padded, on both backends. */
static void no_slots(detpost_backend backend)
{
    detpost_ctx *ctx = t_ctx(backend);
    images im;
    images_alloc(&im, 2, 0, 0);
    im.num_p[0] = im.num_p[1] = im.num_g[0] = im.num_g[1] = 0;
    detpost_stage_params p = detpost_stage_params_default(0);
    p.num_samples = 4;
    samples got;
    check_status(ctx, run_resample(ctx, &p, &im, &got), "no slots");
    for (int b = 0; b < 2; ++b) {
        cr_assert(got.num_samples[b] == 0 && got.num_pos[b] == 0, "image %d samples nothing", b);
        assert_padding(&got, b, 0, "no slots");
    }
    samples_free(&got);
    images_free(&im);
    detpost_destroy(ctx);
}

Test(resample, no_slots_cpu) { no_slots(DETPOST_CPU); }
#if TEST_HAS_CUDA
Test(resample, no_slots_cuda) { no_slots(DETPOST_CUDA); }
#endif

Test(resample, huge_workspace_queries_cpu) { huge_workspace_queries(DETPOST_CPU); }
#if TEST_HAS_CUDA
Test(resample, huge_workspace_queries_cuda) { huge_workspace_queries(DETPOST_CUDA); }

/* With no proposal slots at all, the counts are still checked on CUDA. */
Test(histogram, cuda_checks_counts_without_proposal_slots)
{
    detpost_ctx *gpu = t_ctx(DETPOST_CUDA);
    const float gt[4] = {0, 0, 10, 10};
    const int32_t num_p[2] = {0, -1}, num_g[2] = {2, 1};
    float *dgt = t_up(gpu, gt, sizeof gt);
    int32_t *dp = t_up(gpu, num_p, sizeof num_p), *dg = t_up(gpu, num_g, sizeof num_g);
    int64_t *dc = t_alloc(gpu, 4 * sizeof(int64_t));
    cr_assert_eq(detpost_iou_histogram(gpu, 2, NULL, dp, 0, dgt, dg, 1, 4, dc), DETPOST_OK, "%s",
                 detpost_last_error(gpu));
    t_expect_fault(gpu, "image 0 with num_proposals or num_gt outside");
    t_free(gpu, dgt), t_free(gpu, dp), t_free(gpu, dg), t_free(gpu, dc);
    detpost_destroy(gpu);
}
#endif

#if TEST_HAS_CUDA
/* The stage-to-stage chain, each op into its own outputs. */
typedef struct cascade_graph {
    const float *proposals, *gt;
    const int32_t *gt_labels, *num_p, *num_g;
    int64_t b, max_p, max_g, rows;
    float *rois, *targets, *max_iou, *deltas, *decoded, *next;
    int32_t *labels, *num_samples, *num_pos;
    uint8_t *is_gt;
    int64_t *kept, *counts;
} cascade_graph;

static void cascade_graph_ops(detpost_ctx *ctx, void *arg)
{
    const cascade_graph *g = arg;
    detpost_stage_params p = detpost_stage_params_default(0);
    p.num_samples = 64;
    p.match_low_quality = 1;
    const detpost_box_coder coder = detpost_box_coder_default();
    check_status(ctx, detpost_cascade_resample(ctx, &p, g->b, g->proposals, g->num_p, g->max_p, g->gt, g->gt_labels,
                                               g->num_g, g->max_g, g->rois, g->labels, g->targets, g->max_iou,
                                               g->is_gt, g->num_samples, g->num_pos),
                 "resample");
    check_status(ctx, detpost_box_encode(ctx, &coder, g->rois, g->rois, g->rows, g->deltas), "encode");
    check_status(ctx, detpost_box_decode(ctx, &coder, g->rois, g->targets, g->rows, 1, NULL, NULL, 0, g->decoded),
                 "decode");
    check_status(ctx, detpost_cascade_refine(ctx, &coder, DETPOST_REFINE_MMDET, g->rois, g->targets, g->rows, 1, NULL,
                                             g->is_gt, g->max_iou, NULL, 0, g->next, g->kept),
                 "refine");
    check_status(ctx, detpost_iou_histogram(ctx, g->b, g->proposals, g->num_p, g->max_p, g->gt, g->num_g, g->max_g,
                                            20, g->counts),
                 "histogram");
}

/* Two images of up to 300 proposals and 20 ground-truth boxes (all of them
 * in round -1, random counts after). */
static void cascade_graph_inputs(detpost_ctx *ctx, void *arg, int round)
{
    const cascade_graph *g = arg;
    t_rng rng = {2 + (uint64_t)round};
    images im;
    random_images(&rng, &im, g->b, g->max_p, g->max_g, round < 0);
    cr_assert_eq(detpost_to_ctx(ctx, (void *)g->proposals, im.proposals, (size_t)(g->b * g->max_p) * 16), DETPOST_OK);
    cr_assert_eq(detpost_to_ctx(ctx, (void *)g->gt, im.gt, (size_t)(g->b * g->max_g) * 16), DETPOST_OK);
    cr_assert_eq(detpost_to_ctx(ctx, (void *)g->gt_labels, im.gt_labels, (size_t)(g->b * g->max_g) * 4), DETPOST_OK);
    cr_assert_eq(detpost_to_ctx(ctx, (void *)g->num_p, im.num_p, (size_t)g->b * 4), DETPOST_OK);
    cr_assert_eq(detpost_to_ctx(ctx, (void *)g->num_g, im.num_g, (size_t)g->b * 4), DETPOST_OK);
    images_free(&im);
}

/* Resample, encode, decode, refine and the histogram captured in a CUDA
 * graph: the capture runs nothing, and launched on other images in the same
 * buffers the graph writes what direct calls on them write. */
Test(resample, cuda_graph_replay)
{
    detpost_ctx *gpu = t_ctx(DETPOST_CUDA);
    void *stream = t_own_stream(gpu);
    cascade_graph g = {.b = 2, .max_p = 300, .max_g = 20, .rows = 2 * 64};
    const size_t rows = (size_t)g.rows;
    g.proposals = t_alloc(gpu, (size_t)(g.b * g.max_p) * 16), g.gt = t_alloc(gpu, (size_t)(g.b * g.max_g) * 16);
    g.gt_labels = t_alloc(gpu, (size_t)(g.b * g.max_g) * 4);
    g.num_p = t_alloc(gpu, (size_t)g.b * 4), g.num_g = t_alloc(gpu, (size_t)g.b * 4);
    cascade_graph_inputs(gpu, &g, -1);
    g.rois = t_alloc(gpu, rows * 20), g.targets = t_alloc(gpu, rows * 16), g.max_iou = t_alloc(gpu, rows * 4);
    g.deltas = t_alloc(gpu, rows * 16), g.decoded = t_alloc(gpu, rows * 20), g.next = t_alloc(gpu, rows * 20);
    g.labels = t_alloc(gpu, rows * 4), g.num_samples = t_alloc(gpu, 8), g.num_pos = t_alloc(gpu, 8);
    g.is_gt = t_alloc(gpu, rows), g.kept = t_alloc(gpu, 8), g.counts = t_alloc(gpu, 20 * 8);
    const t_region outs[] = {{g.rois, rows * 20},   {g.targets, rows * 16}, {g.max_iou, rows * 4},
                             {g.deltas, rows * 16}, {g.decoded, rows * 20}, {g.next, rows * 20},
                             {g.labels, rows * 4},  {g.num_samples, 8},     {g.num_pos, 8},
                             {g.is_gt, rows},       {g.kept, 8},            {g.counts, 20 * 8}};
    t_check_graph_replay(gpu, stream, cascade_graph_ops, &g, outs, 12, cascade_graph_inputs);
    t_free(gpu, (void *)g.proposals), t_free(gpu, (void *)g.gt), t_free(gpu, (void *)g.gt_labels);
    t_free(gpu, (void *)g.num_p), t_free(gpu, (void *)g.num_g), t_free(gpu, g.rois), t_free(gpu, g.targets);
    t_free(gpu, g.max_iou), t_free(gpu, g.deltas), t_free(gpu, g.decoded), t_free(gpu, g.next);
    t_free(gpu, g.labels), t_free(gpu, g.num_samples), t_free(gpu, g.num_pos), t_free(gpu, g.is_gt);
    t_free(gpu, g.kept), t_free(gpu, g.counts);
    detpost_destroy(gpu);
    t_stream_destroy(stream);
}
#endif

#if defined(DETPOST_SIM)
/* Every op of the family enqueues work and returns: no host
 * synchronisation, and no allocation once the arena has grown. */
Test(resample, ops_never_synchronise)
{
    detpost_ctx *gpu = t_ctx(DETPOST_CUDA);
    t_rng rng = {1};
    images im;
    random_images(&rng, &im, 2, 300, 20, 1);
    detpost_stage_params p = detpost_stage_params_default(0);
    p.num_samples = 64;
    p.match_low_quality = 1;
    const int64_t b = 2, rows = b * p.num_samples;
    float *dp = t_up(gpu, im.proposals, (size_t)(b * im.max_p) * 16);
    float *dg = t_up(gpu, im.gt, (size_t)(b * im.max_g) * 16);
    int32_t *dgl = t_up(gpu, im.gt_labels, (size_t)(b * im.max_g) * 4);
    int32_t *dnp = t_up(gpu, im.num_p, (size_t)b * 4), *dng = t_up(gpu, im.num_g, (size_t)b * 4);
    float *rois = t_alloc(gpu, (size_t)rows * 20), *targets = t_alloc(gpu, (size_t)rows * 16);
    float *max_iou = t_alloc(gpu, (size_t)rows * 4), *next = t_alloc(gpu, (size_t)rows * 20);
    float *deltas = t_alloc(gpu, (size_t)rows * 16), *decoded = t_alloc(gpu, (size_t)rows * 20);
    int32_t *labels = t_alloc(gpu, (size_t)rows * 4), *ns = t_alloc(gpu, 8), *npos = t_alloc(gpu, 8);
    uint8_t *is_gt = t_alloc(gpu, (size_t)rows);
    int64_t *kept = t_alloc(gpu, 8), *counts = t_alloc(gpu, 20 * 8);
    const detpost_box_coder coder = detpost_box_coder_default();
    unsigned long long syncs = 0;
    size_t live = 0;
    for (int round = 0; round < 3; ++round) {
        if (round == 1) { /* the first round grew the arena */
            syncs = simt_sync_count();
            live = simt_live_allocations();
        }
        check_status(gpu, detpost_cascade_resample(gpu, &p, b, dp, dnp, im.max_p, dg, dgl, dng, im.max_g, rois, labels,
                                                   targets, max_iou, is_gt, ns, npos), "resample");
        check_status(gpu, detpost_box_encode(gpu, &coder, rois, rois, rows, deltas), "encode");
        check_status(gpu, detpost_box_decode(gpu, &coder, rois, targets, rows, 1, NULL, NULL, 0, decoded), "decode");
        check_status(gpu, detpost_cascade_refine(gpu, &coder, DETPOST_REFINE_MMDET, rois, targets, rows, 1, NULL, is_gt,
                                                 max_iou, NULL, 0, next, kept), "refine");
        check_status(gpu, detpost_iou_histogram(gpu, b, dp, dnp, im.max_p, dg, dng, im.max_g, 20, counts), "histogram");
    }
    cr_assert_eq(simt_sync_count(), syncs, "an operation synchronised with the host");
    cr_assert_eq(simt_live_allocations(), live, "an operation allocated in steady state");
    t_free(gpu, dp), t_free(gpu, dg), t_free(gpu, dgl), t_free(gpu, dnp), t_free(gpu, dng), t_free(gpu, rois);
    t_free(gpu, targets), t_free(gpu, max_iou), t_free(gpu, next), t_free(gpu, deltas), t_free(gpu, decoded);
    t_free(gpu, labels), t_free(gpu, ns), t_free(gpu, npos), t_free(gpu, is_gt), t_free(gpu, kept), t_free(gpu, counts);
    images_free(&im);
    detpost_destroy(gpu);
}
#endif
