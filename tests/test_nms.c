/* NMS family: golden vectors, CPU against the CUDA backend on detector-like
 * inputs, batched limits and layouts, bad input, no host synchronisation,
 * capture in CUDA graphs. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../host/internal.h"
#include "../host/nms_math.h"
#include "common.h"

static const char *const method_names[] = {"hard", "linear", "gaussian", "diou"};

static detpost_nms_method method_of(const char *name)
{
    for (int i = 0; i < 4; ++i)
        if (strcmp(name, method_names[i]) == 0) return (detpost_nms_method)i;
    cr_assert_fail("unknown method %s", name);
    return DETPOST_NMS_HARD;
}

/* ---- running the ops on either backend --------------------------------------- */

typedef struct nms_out {
    int64_t num;
    int64_t *keep;
    float *scores;
} nms_out;

static void free_nms_out(nms_out *o) { free(o->keep), free(o->scores); }

/* Runs detpost_nms with inputs in host memory; outputs come back to host
 * memory, keep and keep_scores in full (padding included). */
static nms_out run_nms(detpost_ctx *ctx, const detpost_nms_params *p, const float *boxes, const float *scores,
                       int64_t n)
{
    nms_out o = {0, malloc((size_t)(n + 1) * sizeof(int64_t)), malloc((size_t)(n + 1) * sizeof(float))};
    const size_t nb = (size_t)n * 16, ns = (size_t)n * 4, nk = (size_t)n * 8;
    if (detpost_get_backend(ctx) == DETPOST_CPU) {
        cr_assert_eq(detpost_nms(ctx, p, boxes, scores, n, o.keep, o.scores, &o.num), DETPOST_OK, "%s",
                     detpost_last_error(ctx));
        return o;
    }
    float *db = n ? t_up(ctx, boxes, nb) : NULL, *ds = n ? t_up(ctx, scores, ns) : NULL;
    int64_t *dk = n ? t_alloc(ctx, nk) : NULL, *dnum = t_alloc(ctx, sizeof(int64_t));
    float *dks = n ? t_alloc(ctx, ns) : NULL;
    cr_assert_eq(detpost_nms(ctx, p, db, ds, n, dk, dks, dnum), DETPOST_OK, "%s", detpost_last_error(ctx));
    if (n) {
        cr_assert_eq(detpost_to_host(ctx, o.keep, dk, nk), DETPOST_OK);
        cr_assert_eq(detpost_to_host(ctx, o.scores, dks, ns), DETPOST_OK);
    }
    cr_assert_eq(detpost_to_host(ctx, &o.num, dnum, sizeof(int64_t)), DETPOST_OK);
    t_free(ctx, db), t_free(ctx, ds), t_free(ctx, dk), t_free(ctx, dnum), t_free(ctx, dks);
    return o;
}

typedef struct batched_out {
    int32_t *num_dets, *classes, *indices;
    float *boxes, *scores;
} batched_out;

static void free_batched_out(batched_out *o)
{
    free(o->num_dets), free(o->classes), free(o->indices), free(o->boxes), free(o->scores);
}

static batched_out run_batched(detpost_ctx *ctx, const detpost_batched_nms_params *p, const float *boxes,
                               const float *scores, int64_t B, int64_t N, int64_t C)
{
    const int64_t K = p->max_per_image, rows = B * K;
    const size_t box_bytes = (size_t)(B * N * (p->boxes_per_class ? C : 1) * 4) * sizeof(float);
    const size_t score_bytes = (size_t)(B * N * C) * sizeof(float);
    batched_out o = {malloc((size_t)B * 4 + 4), malloc((size_t)rows * 4 + 4), malloc((size_t)rows * 4 + 4),
                     malloc((size_t)rows * 16 + 4), malloc((size_t)rows * 4 + 4)};
    if (detpost_get_backend(ctx) == DETPOST_CPU) {
        cr_assert_eq(detpost_batched_nms(ctx, p, boxes, scores, B, N, C, o.num_dets, o.boxes, o.scores, o.classes,
                                         o.indices),
                     DETPOST_OK, "%s", detpost_last_error(ctx));
        return o;
    }
    float *db = box_bytes ? t_up(ctx, boxes, box_bytes) : NULL;
    float *ds = score_bytes ? t_up(ctx, scores, score_bytes) : NULL;
    int32_t *dn = t_alloc(ctx, (size_t)B * 4), *dc = t_alloc(ctx, (size_t)rows * 4);
    int32_t *di = t_alloc(ctx, (size_t)rows * 4);
    float *dbox = t_alloc(ctx, (size_t)rows * 16), *dsc = t_alloc(ctx, (size_t)rows * 4);
    cr_assert_eq(detpost_batched_nms(ctx, p, db, ds, B, N, C, dn, dbox, dsc, dc, di), DETPOST_OK, "%s",
                 detpost_last_error(ctx));
    cr_assert_eq(detpost_to_host(ctx, o.num_dets, dn, (size_t)B * 4), DETPOST_OK);
    cr_assert_eq(detpost_to_host(ctx, o.classes, dc, (size_t)rows * 4), DETPOST_OK);
    cr_assert_eq(detpost_to_host(ctx, o.indices, di, (size_t)rows * 4), DETPOST_OK);
    cr_assert_eq(detpost_to_host(ctx, o.boxes, dbox, (size_t)rows * 16), DETPOST_OK);
    cr_assert_eq(detpost_to_host(ctx, o.scores, dsc, (size_t)rows * 4), DETPOST_OK);
    t_free(ctx, db), t_free(ctx, ds), t_free(ctx, dn), t_free(ctx, dc), t_free(ctx, di), t_free(ctx, dbox);
    t_free(ctx, dsc);
    return o;
}

/* Scores agree within atol + rtol * |want|; equal values (infinities
 * included) always agree. */
static void assert_scores(const float *got, const float *want, int64_t n, float atol, float rtol, const char *what)
{
    for (int64_t i = 0; i < n; ++i) {
        if (got[i] == want[i]) continue;
        t_assert_close(got + i, want + i, 1, atol, rtol, what);
    }
}

/* ---- the shared exponential ----------------------------------------------------- */

Test(nms, shared_exp_is_accurate)
{
    cr_assert_eq(dp_exp(0.0f), 1.0f, "exp(0) must be exactly 1: gaussian decay leaves non-overlapping boxes alone");
    cr_assert_eq(dp_exp(-0.0f), 1.0f);
    cr_assert_eq(dp_exp(-200.0f), 0.0f);
    cr_assert(isinf(dp_exp(100.0f)));
    cr_assert(isnan(dp_exp(NAN)));
    double worst = 0;
    for (float x = -87.0f; x <= 88.0f; x += 0.0137f) {
        const double want = exp((double)x), got = dp_exp(x);
        const double ulps = fabs(got - want) / (nextafterf((float)want, INFINITY) - (float)want);
        if (ulps > worst) worst = ulps;
    }
    cr_assert_lt(worst, 4.0, "dp_exp is %g ulps off", worst);
    /* subnormal results still track exp */
    cr_assert_float_eq(dp_exp(-100.0f), (float)exp(-100.0), 1e-44f);
}

/* ---- golden vectors ------------------------------------------------------------- */

static detpost_nms_params params_of(const cJSON *c)
{
    detpost_nms_params p = detpost_nms_params_default();
    p.method = method_of(t_golden_string(c, "method", "hard"));
    p.iou_threshold = (float)t_golden_number(c, "iou_threshold", p.iou_threshold);
    p.score_threshold = (float)t_golden_number(c, "score_threshold", p.score_threshold);
    p.max_output = (int64_t)t_golden_number(c, "max_output", 0);
    p.sigma = (float)t_golden_number(c, "sigma", p.sigma);
    p.min_score = (float)t_golden_number(c, "min_score", p.min_score);
    p.offset = (float)t_golden_number(c, "offset", p.offset);
    return p;
}

static void check_golden(detpost_backend backend)
{
    cJSON *root = t_golden("nms.json");
    detpost_ctx *ctx = t_ctx(backend);
    const cJSON *c;
    int cases = 0;
    cJSON_ArrayForEach(c, cJSON_GetObjectItemCaseSensitive(root, "cases"))
    {
        int64_t n, ns, nk, nks;
        float *boxes = t_golden_floats(c, "boxes", 4, &n);
        float *scores = t_golden_floats(c, "scores", 0, &ns);
        float *want_keep = t_golden_floats(c, "keep", 0, &nk);
        float *want_scores = t_golden_floats(c, "keep_scores", 0, &nks);
        cr_assert_eq(ns, n);
        cr_assert_eq(nks, nk);
        const detpost_nms_params p = params_of(c);
        const char *name = t_golden_string(c, "name", "?");
        for (int s = 0; s < (backend == DETPOST_CPU ? 1 : t_schedule_count()); ++s) {
            if (backend == DETPOST_CUDA) t_set_schedule(t_schedule(s));
            nms_out o = run_nms(ctx, &p, boxes, scores, n);
            cr_assert_eq(o.num, nk, "%s: kept %lld, expected %lld", name, (long long)o.num, (long long)nk);
            for (int64_t k = 0; k < n; ++k) {
                const int64_t want = k < nk ? (int64_t)want_keep[k] : -1;
                cr_assert_eq(o.keep[k], want, "%s: keep[%lld] is %lld, expected %lld", name, (long long)k,
                             (long long)o.keep[k], (long long)want);
                if (k >= nk) cr_assert_eq(o.scores[k], 0.0f, "%s: padding of keep_scores", name);
            }
            assert_scores(o.scores, want_scores, nk, 1e-7f, 1e-6f, name);
            free_nms_out(&o);
        }
        free(boxes), free(scores), free(want_keep), free(want_scores);
        ++cases;
    }
    cr_assert_geq(cases, 25, "the golden file holds %d cases", cases);
    detpost_destroy(ctx);
    cJSON_Delete(root);
}

Test(nms, golden_cpu) { check_golden(DETPOST_CPU); }
#if TEST_HAS_CUDA
Test(nms, golden_cuda) { check_golden(DETPOST_CUDA); }
#endif

static float *json_rows(const cJSON *obj, const char *field, int cols, int64_t want_rows)
{
    int64_t rows;
    float *v = t_golden_floats(obj, field, cols, &rows);
    cr_assert_eq(rows, want_rows, "%s has %lld rows, expected %lld", field, (long long)rows, (long long)want_rows);
    return v;
}

static void check_batched_golden(detpost_backend backend)
{
    cJSON *root = t_golden("nms.json");
    detpost_ctx *ctx = t_ctx(backend);
    const cJSON *shared = cJSON_GetObjectItemCaseSensitive(root, "batched_input");
    const cJSON *c;
    int cases = 0;
    cJSON_ArrayForEach(c, cJSON_GetObjectItemCaseSensitive(root, "batched_cases"))
    {
        const cJSON *own = cJSON_GetObjectItemCaseSensitive(c, "input"), *in = own ? own : shared;
        const int64_t B = (int64_t)t_golden_number(in, "batch", 0), N = (int64_t)t_golden_number(in, "num_boxes", 0);
        const int64_t C = (int64_t)t_golden_number(in, "num_classes", 0);
        float *corners = json_rows(in, "boxes", 4, B * N), *scores = json_rows(in, "scores", (int)C, B * N);
        float *center = own ? NULL : json_rows(in, "boxes_center_size", 4, B * N);
        float *per_class = own ? NULL : json_rows(in, "boxes_per_class", 4, B * N * C);
        detpost_batched_nms_params p = detpost_batched_nms_params_default();
        p.nms.method = method_of(t_golden_string(c, "method", "hard"));
        p.nms.score_threshold = (float)t_golden_number(in, "score_threshold", 0);
        p.max_per_image = (int64_t)t_golden_number(c, "max_per_image", 100);
        p.pre_nms_top_k = (int64_t)t_golden_number(c, "pre_nms_top_k", p.pre_nms_top_k);
        p.max_per_class = (int64_t)t_golden_number(c, "max_per_class", 0);
        p.background_class = (int64_t)t_golden_number(c, "background_class", -1);
        p.class_agnostic = (int)t_golden_number(c, "class_agnostic", 0);
        p.boxes_per_class = (int)t_golden_number(c, "per_class_boxes", 0);
        p.box_coding = t_golden_number(c, "center_size", 0) ? DETPOST_BOX_CENTER_SIZE : DETPOST_BOX_CORNERS;
        const float *boxes = p.boxes_per_class ? per_class : p.box_coding == DETPOST_BOX_CENTER_SIZE ? center : corners;
        const int64_t K = p.max_per_image;
        const char *name = t_golden_string(c, "name", "?");
        for (int s = 0; s < (backend == DETPOST_CPU ? 1 : t_schedule_count()); ++s) {
            if (backend == DETPOST_CUDA) t_set_schedule(t_schedule(s));
            batched_out o = run_batched(ctx, &p, boxes, scores, B, N, C);
            float *want_num = json_rows(c, "num_dets", 0, B);
            for (int64_t b = 0; b < B; ++b)
                cr_assert_eq(o.num_dets[b], (int32_t)want_num[b], "%s: num_dets[%lld]", name, (long long)b);
            float *want_scores = json_rows(c, "det_scores", 0, B * K);
            assert_scores(o.scores, want_scores, B * K, 1e-7f, 1e-6f, name);
            float *want_classes = json_rows(c, "det_classes", 0, B * K);
            float *want_indices = json_rows(c, "det_indices", 0, B * K);
            for (int64_t k = 0; k < B * K; ++k) {
                cr_assert_eq(o.classes[k], (int32_t)want_classes[k], "%s: det_classes[%lld]", name, (long long)k);
                cr_assert_eq(o.indices[k], (int32_t)want_indices[k], "%s: det_indices[%lld]", name, (long long)k);
            }
            if (cJSON_GetObjectItemCaseSensitive(c, "det_boxes")) {
                float *want_boxes = json_rows(c, "det_boxes", 4, B * K);
                t_assert_close(o.boxes, want_boxes, B * K * 4, 0, 0, name);
                free(want_boxes);
            }
            free(want_num), free(want_scores), free(want_classes), free(want_indices);
            free_batched_out(&o);
        }
        free(corners), free(center), free(per_class), free(scores);
        ++cases;
    }
    cr_assert_geq(cases, 15);
    detpost_destroy(ctx);
    cJSON_Delete(root);
}

Test(batched_nms, golden_cpu) { check_batched_golden(DETPOST_CPU); }
#if TEST_HAS_CUDA
Test(batched_nms, golden_cuda) { check_batched_golden(DETPOST_CUDA); }
#endif

/* ---- detector-like inputs ------------------------------------------------------------ */

#if TEST_HAS_CUDA
/* Scores that look like a detector's: many exact ties (a coarse grid), some
 * below any threshold, a few NaN. */
static void detector_scores(t_rng *r, float *s, int64_t n)
{
    for (int64_t i = 0; i < n; ++i) {
        const uint64_t kind = t_next(r) % 16;
        if (kind == 0) s[i] = NAN;
        else if (kind < 6) s[i] = (float)(t_next(r) % 20) / 20.0f;
        else if (kind == 6) s[i] = 0.0005f;
        else s[i] = t_uniform(r, 0.0f, 1.0f);
    }
}

static detpost_nms_params random_params(t_rng *r, detpost_nms_method method)
{
    static const float ious[] = {0.3f, 0.5f, 0.7f, 0.0f, 1.0f};
    detpost_nms_params p = detpost_nms_params_default();
    p.method = method;
    p.iou_threshold = ious[t_next(r) % 5];
    p.score_threshold = t_next(r) % 3 == 0 ? 0.2f : -INFINITY;
    /* limits reached in the first window of kept rows, and some further on */
    const uint64_t limit = t_next(r) % 8;
    p.max_output = limit < 2 ? 1 + (int64_t)(t_next(r) % 40) : limit == 2 ? 60 + (int64_t)(t_next(r) % 200) : 0;
    p.sigma = t_next(r) % 2 ? 0.5f : 0.1f;
    p.min_score = t_next(r) % 2 ? 0.001f : 0.05f;
    p.offset = (float)(t_next(r) % 2);
    return p;
}

/* The same count and kept indices in the same order. */
static void assert_same_keep(const nms_out *got, const nms_out *want, int64_t n, const char *what)
{
    cr_assert_eq(got->num, want->num, "%s: kept %lld, reference %lld", what, (long long)got->num,
                 (long long)want->num);
    for (int64_t k = 0; k < n; ++k)
        cr_assert_eq(got->keep[k], want->keep[k], "%s: keep[%lld] is %lld, reference %lld", what, (long long)k,
                     (long long)got->keep[k], (long long)want->keep[k]);
}

static void compare_nms(const nms_out *got, const nms_out *want, int64_t n, const char *what)
{
    assert_same_keep(got, want, n, what);
    assert_scores(got->scores, want->scores, n, 0.0f, 1e-6f, what);
}

/* Sizes around the 64-box words, the 256-thread blocks, the 1024-row
 * windows of the resolve block and the 2048-row stripes of the kernels. */
static const int64_t cross_sizes[] = {1,    2,    31,   63,   64,   65,   129,  255,  256,
                                      257,  1000, 1025, 2047, 2048, 2049, 3100, 4097, 5000};

enum { COOP_AS_FOUND, COOP_NONE, COOP_TOO_MANY, SMALL_SHARED };

/* device: as found; single-class soft-NMS as on a device that cannot hold
 * the cooperative kernel, or as in a context that counted more blocks than
 * the device holds now (the launch is refused, and the one-block kernel
 * takes over) - set through the context's record of the count; or a device
 * that lends blocks no more than 48 KiB of shared memory (512-row resolve
 * windows, fewer soft-NMS candidates a round than threads_for asks for). */
static void cpu_vs_cuda(detpost_nms_method method, uint64_t seed, int64_t max_soft, int device)
{
    detpost_ctx *cpu = t_ctx(DETPOST_CPU), *gpu = t_ctx(DETPOST_CUDA);
    t_rng rng = {seed};
    if (device == SMALL_SHARED) gpu->smem_optin = 48 * 1024;
    if (device == COOP_NONE || device == COOP_TOO_MANY) {
        /* a first call finds the count (and readies the kernels) as usual */
        float boxes[4 * 300], scores[300];
        t_detector_boxes(&rng, boxes, 300, 640, 480, 1);
        detector_scores(&rng, scores, 300);
        detpost_nms_params p = detpost_nms_params_default();
        p.method = method;
        nms_out first = run_nms(gpu, &p, boxes, scores, 300);
        free_nms_out(&first);
    }
    if (device == COOP_NONE || device == COOP_TOO_MANY)
        gpu->soft_nms_blocks[0] = gpu->soft_nms_blocks[1] = device == COOP_NONE ? -1 : 1 << 20;
    for (size_t i = 0; i < sizeof cross_sizes / sizeof cross_sizes[0]; ++i) {
        const int64_t n = cross_sizes[i];
        if (dp_nms_is_soft(method) && n > max_soft) continue;
        float *boxes = malloc((size_t)n * 16), *scores = malloc((size_t)n * 4);
        t_detector_boxes(&rng, boxes, n, 640, 480, 1);
        detector_scores(&rng, scores, n);
        const detpost_nms_params p = random_params(&rng, method);
        nms_out want = run_nms(cpu, &p, boxes, scores, n);
        for (int s = 0; s < t_schedule_count(); ++s) {
            t_set_schedule(t_schedule(s));
            nms_out got = run_nms(gpu, &p, boxes, scores, n);
            char what[200];
            snprintf(what, sizeof what, "%s n %lld iou %g score %g max %lld offset %g schedule %s",
                     method_names[method], (long long)n, (double)p.iou_threshold, (double)p.score_threshold,
                     (long long)p.max_output, (double)p.offset, t_schedule(s) ? t_schedule(s) : "gpu");
            compare_nms(&got, &want, n, what);
            free_nms_out(&got);
        }
        free_nms_out(&want);
        free(boxes), free(scores);
    }
    detpost_destroy(cpu);
    detpost_destroy(gpu);
}

Test(nms, cpu_vs_cuda_hard) { cpu_vs_cuda(DETPOST_NMS_HARD, 101, 0, COOP_AS_FOUND); }
Test(nms, cpu_vs_cuda_diou) { cpu_vs_cuda(DETPOST_NMS_DIOU, 202, 0, COOP_AS_FOUND); }
Test(nms, cpu_vs_cuda_linear) { cpu_vs_cuda(DETPOST_NMS_LINEAR, 303, 2049, COOP_AS_FOUND); }
Test(nms, cpu_vs_cuda_gaussian) { cpu_vs_cuda(DETPOST_NMS_GAUSSIAN, 404, 5000, COOP_AS_FOUND); }
Test(nms, cpu_vs_cuda_soft_one_block) { cpu_vs_cuda(DETPOST_NMS_GAUSSIAN, 505, 2049, COOP_NONE); }
Test(nms, cpu_vs_cuda_soft_refused_grid) { cpu_vs_cuda(DETPOST_NMS_LINEAR, 606, 3100, COOP_TOO_MANY); }
Test(nms, cpu_vs_cuda_hard_small_shared) { cpu_vs_cuda(DETPOST_NMS_HARD, 707, 0, SMALL_SHARED); }
Test(nms, cpu_vs_cuda_soft_small_shared) { cpu_vs_cuda(DETPOST_NMS_GAUSSIAN, 808, 5000, SMALL_SHARED); }

/* The same input twice gives the same bits, and a call leaves no state that
 * changes the next one. */
Test(nms, cuda_is_deterministic)
{
    detpost_ctx *gpu = t_ctx(DETPOST_CUDA);
    t_rng rng = {77};
    const int64_t n = 3000;
    float *boxes = malloc((size_t)n * 16), *scores = malloc((size_t)n * 4);
    t_detector_boxes(&rng, boxes, n, 640, 480, 1);
    detector_scores(&rng, scores, n);
    for (int m = 0; m < 4; ++m) {
        detpost_nms_params p = detpost_nms_params_default();
        p.method = (detpost_nms_method)m;
        t_set_schedule("random:1");
        nms_out a = run_nms(gpu, &p, boxes, scores, n);
        t_set_schedule("random:2");
        nms_out b = run_nms(gpu, &p, boxes, scores, n);
        cr_assert_eq(a.num, b.num);
        cr_assert_arr_eq(a.keep, b.keep, (size_t)n * sizeof(int64_t), "%s", method_names[m]);
        cr_assert_arr_eq(a.scores, b.scores, (size_t)n * sizeof(float), "%s", method_names[m]);
        free_nms_out(&a), free_nms_out(&b);
    }
    free(boxes), free(scores);
    detpost_destroy(gpu);
}
#endif

/* Every box overlapping every other one heavily: hard NMS keeps one, linear
 * soft-NMS with threshold 0 keeps them all with decaying scores. */
Test(nms, dense_cluster_cpu)
{
    detpost_ctx *cpu = t_ctx(DETPOST_CPU);
    enum { N = 50 };
    float boxes[N * 4], scores[N];
    for (int i = 0; i < N; ++i) {
        boxes[i * 4 + 0] = 10.0f + 0.01f * (float)i, boxes[i * 4 + 1] = 10.0f;
        boxes[i * 4 + 2] = 110.0f, boxes[i * 4 + 3] = 110.0f;
        scores[i] = 0.5f + 0.005f * (float)((i * 7) % N);
    }
    detpost_nms_params p = detpost_nms_params_default();
    nms_out hard = run_nms(cpu, &p, boxes, scores, N);
    cr_assert_eq(hard.num, 1);
    cr_assert_eq(hard.keep[0], 7, "the best score, 0.5 + 0.005 * 49, belongs to box 7");
    p.method = DETPOST_NMS_LINEAR;
    p.iou_threshold = 0.0f;
    p.min_score = 0.0f;
    nms_out soft = run_nms(cpu, &p, boxes, scores, N);
    cr_assert_eq(soft.num, N);
    for (int k = 1; k < N; ++k) cr_assert_leq(soft.scores[k], soft.scores[k - 1], "selection scores never rise");
    free_nms_out(&hard), free_nms_out(&soft);
    detpost_destroy(cpu);
}

/* ---- batched ---------------------------------------------------------------------------- */

typedef struct batched_case {
    int64_t B, N, C;
    float score_threshold;
    int64_t pre_k, max_per_class, K, background;
    int agnostic, per_class, center, method, empty_images;
} batched_case;

static void batched_inputs(t_rng *r, const batched_case *bc, float **boxes_out, float **scores_out)
{
    const int64_t B = bc->B, N = bc->N, C = bc->C, per_box = bc->per_class ? C : 1;
    float *boxes = malloc((size_t)(B * N * per_box) * 16 + 16), *scores = malloc((size_t)(B * N * C) * 4 + 4);
    float *corners = malloc((size_t)(N * per_box) * 16 + 16);
    for (int64_t b = 0; b < B; ++b) {
        t_detector_boxes(r, corners, N * per_box, 640, 640, 1);
        for (int64_t i = 0; i < N * per_box; ++i) {
            float *o = boxes + (b * N * per_box + i) * 4;
            const float *x = corners + i * 4;
            if (bc->center) {
                o[0] = (x[0] + x[2]) / 2, o[1] = (x[1] + x[3]) / 2, o[2] = x[2] - x[0], o[3] = x[3] - x[1];
            } else {
                memcpy(o, x, 16);
            }
        }
        float *s = scores + b * N * C;
        for (int64_t k = 0; k < N * C; ++k) {
            /* mostly low like a detector's sigmoid outputs; some ties; the odd NaN */
            const uint64_t kind = t_next(r) % 64;
            const float u = t_uniform(r, 0.0f, 1.0f);
            s[k] = kind == 0 ? NAN : kind < 8 ? (float)(t_next(r) % 8) / 8.0f : u * u * u;
            if (bc->empty_images) s[k] = bc->score_threshold;
        }
    }
    free(corners);
    *boxes_out = boxes, *scores_out = scores;
}

static detpost_batched_nms_params batched_params(const batched_case *bc)
{
    detpost_batched_nms_params p = detpost_batched_nms_params_default();
    p.nms.method = (detpost_nms_method)bc->method;
    p.nms.score_threshold = bc->score_threshold;
    p.nms.iou_threshold = 0.5f;
    p.pre_nms_top_k = bc->pre_k;
    p.max_per_class = bc->max_per_class;
    p.max_per_image = bc->K;
    p.background_class = bc->background;
    p.class_agnostic = bc->agnostic;
    p.boxes_per_class = bc->per_class;
    p.box_coding = bc->center ? DETPOST_BOX_CENTER_SIZE : DETPOST_BOX_CORNERS;
    return p;
}

static const batched_case batched_grid[] = {
    /* B  N    C   thr     pre_k max_cls K    bg  agn per cen method empty */
    {1, 1, 1, 0.25f, 4096, 0, 100, -1, 0, 0, 0, DETPOST_NMS_HARD, 0},
    {3, 37, 3, 0.25f, 4096, 0, 100, -1, 0, 0, 0, DETPOST_NMS_HARD, 0},
    {8, 100, 80, 0.25f, 4096, 0, 100, -1, 0, 0, 0, DETPOST_NMS_HARD, 0},   /* K hit */
    {8, 100, 80, 0.001f, 300, 0, 1000, -1, 0, 0, 0, DETPOST_NMS_HARD, 0},  /* pre_k hit, K not */
    {4, 300, 20, 0.001f, 0, 0, 2000, -1, 0, 0, 0, DETPOST_NMS_HARD, 0},    /* no pre_k limit */
    {4, 120, 10, 0.25f, 4096, 2, 50, 0, 0, 0, 0, DETPOST_NMS_HARD, 0},     /* max_per_class hit, background */
    {4, 120, 10, 0.25f, 4096, 50, 500, 9, 0, 0, 0, DETPOST_NMS_HARD, 0},   /* max_per_class not hit */
    {2, 300, 5, 0.05f, 1000, 0, 100, -1, 1, 0, 0, DETPOST_NMS_HARD, 0},    /* class-agnostic */
    {2, 300, 5, 0.05f, 1000, 4, 100, -1, 1, 0, 0, DETPOST_NMS_HARD, 0},    /* agnostic, class limit */
    {2, 400, 40, 0.01f, 0, 3, 400, -1, 1, 0, 0, DETPOST_NMS_HARD, 0},    /* agnostic, cap over many 32-entry chunks */
    {3, 60, 7, 0.1f, 4096, 0, 100, 2, 0, 1, 0, DETPOST_NMS_HARD, 0},       /* per-class boxes */
    {3, 60, 7, 0.1f, 4096, 0, 100, -1, 0, 1, 1, DETPOST_NMS_DIOU, 0},      /* per-class, center-size, DIoU */
    {3, 60, 7, 0.1f, 4096, 0, 100, -1, 1, 1, 1, DETPOST_NMS_HARD, 0},      /* agnostic over per-class boxes */
    {3, 80, 6, 0.1f, 200, 0, 100, -1, 0, 0, 0, DETPOST_NMS_LINEAR, 0},
    {3, 80, 6, 0.1f, 200, 3, 20, 1, 0, 0, 1, DETPOST_NMS_GAUSSIAN, 0},
    {2, 300, 2, 0.01f, 0, 0, 200, -1, 1, 0, 0, DETPOST_NMS_GAUSSIAN, 0},  /* agnostic soft, > 256 per group */
    {2, 120, 3, 0.05f, 0, 3, 100, -1, 1, 0, 0, DETPOST_NMS_LINEAR, 0},    /* agnostic soft, class limit */
    {5, 50, 80, 0.25f, 4096, 0, 100, -1, 0, 0, 0, DETPOST_NMS_HARD, 1},   /* every image empty */
    {2, 0, 4, 0.25f, 4096, 0, 10, -1, 0, 0, 0, DETPOST_NMS_HARD, 0},      /* no boxes */
    {2, 5, 0, 0.25f, 4096, 0, 10, -1, 0, 0, 0, DETPOST_NMS_HARD, 0},      /* no classes */
};

#if TEST_HAS_CUDA
static void compare_batched(const batched_out *got, const batched_out *want, int64_t B, int64_t K, const char *what)
{
    for (int64_t b = 0; b < B; ++b)
        cr_assert_eq(got->num_dets[b], want->num_dets[b], "%s: num_dets[%lld] %d, reference %d", what, (long long)b,
                     got->num_dets[b], want->num_dets[b]);
    for (int64_t k = 0; k < B * K; ++k) {
        cr_assert_eq(got->classes[k], want->classes[k], "%s: det_classes[%lld]", what, (long long)k);
        cr_assert_eq(got->indices[k], want->indices[k], "%s: det_indices[%lld]", what, (long long)k);
    }
    assert_scores(got->scores, want->scores, B * K, 0.0f, 1e-6f, what);
    t_assert_close(got->boxes, want->boxes, B * K * 4, 0.0f, 0.0f, what);
}

Test(batched_nms, cpu_vs_cuda)
{
    detpost_ctx *cpu = t_ctx(DETPOST_CPU), *gpu = t_ctx(DETPOST_CUDA);
    t_rng rng = {2024};
    for (size_t i = 0; i < sizeof batched_grid / sizeof batched_grid[0]; ++i) {
        const batched_case *bc = &batched_grid[i];
        float *boxes, *scores;
        batched_inputs(&rng, bc, &boxes, &scores);
        const detpost_batched_nms_params p = batched_params(bc);
        batched_out want = run_batched(cpu, &p, boxes, scores, bc->B, bc->N, bc->C);
        for (int s = 0; s < t_schedule_count(); ++s) {
            t_set_schedule(t_schedule(s));
            batched_out got = run_batched(gpu, &p, boxes, scores, bc->B, bc->N, bc->C);
            char what[160];
            snprintf(what, sizeof what, "case %zu (B %lld N %lld C %lld %s) schedule %s", i, (long long)bc->B,
                     (long long)bc->N, (long long)bc->C, method_names[bc->method],
                     t_schedule(s) ? t_schedule(s) : "gpu");
            compare_batched(&got, &want, bc->B, bc->K, what);
            free_batched_out(&got);
        }
        free_batched_out(&want);
        free(boxes), free(scores);
    }
    detpost_destroy(cpu);
    detpost_destroy(gpu);
}
#endif

/* The limits do what they say on the reference (which the CUDA backend
 * matches above): K rows at most, per class at most max_per_class (also
 * across classes), nothing from the background class, and descending
 * scores. */
/* A score of -0 passes a threshold below 0 and comes back as +0 on both
 * backends (the CUDA backend's sort key keeps no sign; 0 and -0 tie). */
static void check_signed_zero_score(detpost_backend backend)
{
    detpost_ctx *ctx = t_ctx(backend);
    const float boxes[2 * 4] = {0, 0, 10, 10, 20, 20, 30, 30}, scores[2] = {-0.0f, 0.5f};
    detpost_batched_nms_params p = detpost_batched_nms_params_default();
    p.nms.score_threshold = -1.0f;
    p.max_per_image = 2;
    batched_out o = run_batched(ctx, &p, boxes, scores, 1, 2, 1);
    cr_assert_eq(o.num_dets[0], 2);
    cr_assert_eq(o.indices[1], 0);
    cr_assert(o.scores[1] == 0.0f && !signbit(o.scores[1]), "score %g, sign bit %d", (double)o.scores[1],
              signbit(o.scores[1]) != 0);
    free_batched_out(&o);
    detpost_destroy(ctx);
}

Test(batched_nms, signed_zero_score_cpu) { check_signed_zero_score(DETPOST_CPU); }
#if TEST_HAS_CUDA
Test(batched_nms, signed_zero_score_cuda) { check_signed_zero_score(DETPOST_CUDA); }
#endif

Test(batched_nms, limits_and_order_cpu)
{
    detpost_ctx *cpu = t_ctx(DETPOST_CPU);
    t_rng rng = {99};
    int hit_k = 0, missed_k = 0, hit_class_limit = 0;
    for (size_t i = 0; i < sizeof batched_grid / sizeof batched_grid[0]; ++i) {
        const batched_case *bc = &batched_grid[i];
        float *boxes, *scores;
        batched_inputs(&rng, bc, &boxes, &scores);
        const detpost_batched_nms_params p = batched_params(bc);
        batched_out o = run_batched(cpu, &p, boxes, scores, bc->B, bc->N, bc->C);
        for (int64_t b = 0; b < bc->B; ++b) {
            const int32_t nd = o.num_dets[b];
            cr_assert_leq(nd, bc->K);
            if (bc->pre_k > 0) cr_assert_leq(nd, bc->pre_k);
            if (bc->empty_images || bc->N == 0 || bc->C == 0) cr_assert_eq(nd, 0, "case %zu", i);
            hit_k += nd == bc->K, missed_k += nd < bc->K && nd > 0;
            int per_class[80] = {0};
            for (int64_t k = 0; k < bc->K; ++k) {
                const int64_t o_ = b * bc->K + k;
                if (k >= nd) {
                    cr_assert_eq(o.classes[o_], -1);
                    cr_assert_eq(o.indices[o_], -1);
                    cr_assert_eq(o.scores[o_], 0.0f);
                    continue;
                }
                cr_assert_neq(o.classes[o_], bc->background, "case %zu: background class detected", i);
                if (!dp_nms_is_soft(bc->method)) cr_assert_gt(o.scores[o_], bc->score_threshold);
                if (k > 0) cr_assert_leq(o.scores[o_], o.scores[o_ - 1], "case %zu: scores out of order", i);
                per_class[o.classes[o_]]++;
            }
            if (bc->max_per_class > 0)
                for (int c = 0; c < 80; ++c) {
                    cr_assert_leq(per_class[c], bc->max_per_class, "case %zu", i);
                    hit_class_limit += per_class[c] == bc->max_per_class;
                }
        }
        free_batched_out(&o);
        free(boxes), free(scores);
    }
    cr_assert_gt(hit_k, 0, "some image fills all K rows");
    cr_assert_gt(missed_k, 0, "some image keeps fewer than K");
    cr_assert_gt(hit_class_limit, 0, "some class reaches max_per_class");
    detpost_destroy(cpu);
}

/* Across classes, max_per_class keeps each class's first detections of the
 * NMS over all classes, and the ones it drops still suppressed what they
 * overlap: the capped output is the uncapped one with each class's
 * detections past the cap removed. */
Test(batched_nms, class_agnostic_caps_each_class_cpu)
{
    detpost_ctx *cpu = t_ctx(DETPOST_CPU);
    t_rng rng = {31};
    for (int method = DETPOST_NMS_HARD; method <= DETPOST_NMS_DIOU; ++method) {
        const batched_case bc = {2, 200, 4, 0.05f, 0, 0, 800, -1, 1, 0, 0, method, 0};
        float *boxes, *scores;
        batched_inputs(&rng, &bc, &boxes, &scores);
        detpost_batched_nms_params p = batched_params(&bc);
        batched_out all = run_batched(cpu, &p, boxes, scores, bc.B, bc.N, bc.C);
        p.max_per_class = 3;
        batched_out capped = run_batched(cpu, &p, boxes, scores, bc.B, bc.N, bc.C);
        int dropped = 0;
        for (int64_t b = 0; b < bc.B; ++b) {
            int per_class[4] = {0};
            int64_t k = 0;
            for (int64_t i = 0; i < all.num_dets[b]; ++i) {
                const int64_t o = b * bc.K + i;
                if (per_class[all.classes[o]]++ >= 3) {
                    ++dropped;
                    continue;
                }
                const int64_t c = b * bc.K + k++;
                cr_assert_eq(capped.indices[c], all.indices[o], "%s image %lld row %lld", method_names[method],
                             (long long)b, (long long)k - 1);
                cr_assert_eq(capped.classes[c], all.classes[o]);
                cr_assert_eq(capped.scores[c], all.scores[o]);
            }
            cr_assert_eq(capped.num_dets[b], k, "%s image %lld: %d rows, want %lld", method_names[method],
                         (long long)b, capped.num_dets[b], (long long)k);
        }
        cr_assert_gt(dropped, 0, "%s: the cap removes something", method_names[method]);
        free_batched_out(&all), free_batched_out(&capped);
        free(boxes), free(scores);
    }
    detpost_destroy(cpu);
}

/* Batched per-class NMS without limits equals single-class NMS of each
 * class's candidates, merged by score. */
Test(batched_nms, agrees_with_single_class_cpu)
{
    detpost_ctx *cpu = t_ctx(DETPOST_CPU);
    t_rng rng = {5};
    const batched_case bc = {1, 200, 4, 0.2f, 0, 0, 800, -1, 0, 0, 0, DETPOST_NMS_GAUSSIAN, 0};
    float *boxes, *scores;
    batched_inputs(&rng, &bc, &boxes, &scores);
    const detpost_batched_nms_params p = batched_params(&bc);
    batched_out o = run_batched(cpu, &p, boxes, scores, bc.B, bc.N, bc.C);
    int64_t total = 0;
    float class_scores[200];
    for (int64_t c = 0; c < bc.C; ++c) {
        for (int64_t n = 0; n < bc.N; ++n) class_scores[n] = scores[n * bc.C + c];
        nms_out single = run_nms(cpu, &p.nms, boxes, class_scores, bc.N);
        /* each kept (box, score) of the class appears among the batched rows */
        for (int64_t k = 0; k < single.num; ++k) {
            int found = 0;
            for (int64_t r = 0; r < o.num_dets[0] && !found; ++r)
                found = o.classes[r] == c && o.indices[r] == single.keep[k] && o.scores[r] == single.scores[k];
            cr_assert(found, "class %lld box %lld (score %g) is missing", (long long)c, (long long)single.keep[k],
                      (double)single.scores[k]);
        }
        total += single.num;
        free_nms_out(&single);
    }
    cr_assert_eq(o.num_dets[0], total);
    free_batched_out(&o);
    free(boxes), free(scores);
    detpost_destroy(cpu);
}

/* ---- soft-NMS rounds ------------------------------------------------------------------------ */

/* The CUDA soft-NMS takes several boxes a round: among the 32 to 64 best it
 * follows the reference while the best of them outranks every other box,
 * and stops where a decay may let an outside box overtake. These inputs are
 * built so that rounds take many boxes, stop on decays of every size, on
 * equal scores and on boxes dropping below min_score; the CUDA results must
 * be the reference's bits under every schedule. */

/* A round that must stop early. 32 boxes score >= 0.75 and all others
 * < 0.75; 0.75 has no mantissa bit below the top one, so whatever digits
 * the radix select looks at, those 32 are exactly the first round's
 * candidates. A (0.99) overlaps B (0.75) by 1/16 of a 64-pixel column, IoU
 * 4/8188 = 4.9e-4: the gaussian weight is 1 - 8 ulp (0x3f7ffff8), the
 * linear one at threshold 0 is 0.9995, so B falls just below C
 * (0.74999994, the float below 0.75), which is not a candidate. The
 * reference takes A, the 30 other high boxes, C, then B, decayed once more
 * by C (IoU 0.28); taking B once it is the best candidate would put it
 * ahead of C and decay C instead. 40 boxes below 0.1 come last. */
enum { STOP_OTHERS = 30, STOP_LOW = 40, STOP_N = 3 + STOP_OTHERS + STOP_LOW };
static const float stop_c_score = 0.7499999404f;

static void stop_scenario(float *boxes, float *scores)
{
    const float fixed[3][4] = {{0, 0, 64, 64}, {63.9375f, 0, 127.9375f, 64}, {100, 0, 164, 64}};
    memcpy(boxes, fixed, sizeof fixed);
    scores[0] = 0.99f, scores[1] = 0.75f, scores[2] = stop_c_score;
    for (int i = 0; i < STOP_OTHERS; ++i) {
        float *b = boxes + (3 + i) * 4;
        b[0] = 300.0f + 100.0f * (float)i, b[1] = 0, b[2] = b[0] + 64, b[3] = 64;
        scores[3 + i] = 0.98f - 0.0075f * (float)i;
    }
    for (int i = 0; i < STOP_LOW; ++i) {
        float *b = boxes + (3 + STOP_OTHERS + i) * 4;
        b[0] = 100.0f * (float)i, b[1] = 500, b[2] = b[0] + 64, b[3] = 564;
        scores[3 + STOP_OTHERS + i] = 0.05f + 0.001f * (float)i;
    }
}

static void check_stop_order(const nms_out *o, const char *what)
{
    cr_assert_eq(o->num, STOP_N, "%s: kept %lld", what, (long long)o->num);
    cr_assert_eq(o->keep[0], 0, "%s: A goes first", what);
    for (int i = 0; i < STOP_OTHERS; ++i) cr_assert_eq(o->keep[1 + i], 3 + i, "%s: keep[%d]", what, 1 + i);
    cr_assert_eq(o->keep[1 + STOP_OTHERS], 2, "%s: C goes before the decayed B", what);
    cr_assert_eq(o->keep[2 + STOP_OTHERS], 1, "%s: then B", what);
    cr_assert_eq(o->scores[1 + STOP_OTHERS], stop_c_score, "%s: C is not decayed", what);
    cr_assert_lt(o->scores[2 + STOP_OTHERS], 0.7f, "%s: B is decayed by A and by C", what);
    for (int i = 0; i < STOP_LOW; ++i)
        cr_assert_eq(o->keep[3 + STOP_OTHERS + i], STOP_N - 1 - i, "%s: low boxes by score", what);
}

static detpost_nms_params stop_params(detpost_nms_method method)
{
    detpost_nms_params p = detpost_nms_params_default();
    p.method = method;
    p.iou_threshold = 0.0f;
    return p;
}

Test(nms, soft_round_stop_cpu)
{
    detpost_ctx *cpu = t_ctx(DETPOST_CPU);
    float boxes[STOP_N * 4], scores[STOP_N];
    stop_scenario(boxes, scores);
    for (int m = DETPOST_NMS_LINEAR; m <= DETPOST_NMS_GAUSSIAN; ++m) {
        const detpost_nms_params p = stop_params((detpost_nms_method)m);
        nms_out o = run_nms(cpu, &p, boxes, scores, STOP_N);
        check_stop_order(&o, method_names[m]);
        free_nms_out(&o);
    }
    detpost_destroy(cpu);
}

#if TEST_HAS_CUDA
/* Boxes around objects on a grid of cols x rows cells of 100 pixels: the
 * object in each cell is `size` cells wide (above 1, neighbours overlap),
 * and box i belongs to object i % objects, its corners moved by up to
 * `jitter` of the object's size. */
static void object_grid(t_rng *r, float *boxes, int64_t n, int cols, int rows, float size, float jitter)
{
    const int objects = cols * rows;
    for (int64_t i = 0; i < n; ++i) {
        const int o = (int)(i % objects);
        const float s = 100.0f * size, x = 100.0f * (float)(o % cols), y = 100.0f * (float)(o / cols);
        float *b = boxes + i * 4;
        b[0] = x + s * t_uniform(r, -jitter, jitter);
        b[1] = y + s * t_uniform(r, -jitter, jitter);
        b[2] = x + s + s * t_uniform(r, -jitter, jitter);
        b[3] = y + s + s * t_uniform(r, -jitter, jitter);
    }
}

enum { SCORES_UNIFORM, SCORES_TIED, SCORES_NEAR_MIN, SCORES_SIGNED };

typedef struct grid_case {
    const char *what;
    int cols, rows, per_object;
    float size, jitter;
    int scores;
    float sigma, min_score, iou_threshold;
    int64_t max_output;
} grid_case;

static const grid_case grid_cases[] = {
    {"one box per object: rounds take every candidate", 25, 20, 1, 0.5f, 0.0f, SCORES_UNIFORM, 0.5f, 0.001f, 0.3f, 0},
    {"clusters on disjoint objects", 16, 12, 6, 0.6f, 0.1f, SCORES_UNIFORM, 0.5f, 0.001f, 0.3f, 0},
    {"objects overlapping their neighbours", 12, 10, 8, 1.3f, 0.15f, SCORES_UNIFORM, 0.5f, 0.001f, 0.3f, 0},
    {"objects touching their neighbours", 14, 10, 5, 1.0f, 0.02f, SCORES_UNIFORM, 0.5f, 0.001f, 0.0f, 0},
    {"equal scores across disjoint boxes", 20, 10, 3, 0.4f, 0.05f, SCORES_TIED, 0.5f, 0.001f, 0.3f, 0},
    {"drops below min_score inside rounds", 12, 12, 10, 0.9f, 0.2f, SCORES_NEAR_MIN, 0.1f, 0.3f, 0.2f, 0},
    {"max_output inside a round", 16, 12, 4, 0.6f, 0.1f, SCORES_UNIFORM, 0.5f, 0.001f, 0.3f, 157},
    /* a decay raises a negative score towards 0: boxes outside the candidates can climb */
    {"negative scores and zeros", 10, 6, 5, 1.2f, 0.15f, SCORES_SIGNED, 0.5f, -0.9f, 0.1f, 0},
};

static float grid_score(t_rng *r, int kind)
{
    switch (kind) {
    case SCORES_TIED: return (float)(1 + t_next(r) % 8) / 8.0f;
    case SCORES_NEAR_MIN: return t_uniform(r, 0.3f, 0.45f);
    case SCORES_SIGNED: return t_next(r) % 8 == 0 ? (t_next(r) % 2 ? 0.0f : -0.0f) : t_uniform(r, -1.0f, 0.4f);
    default: return t_uniform(r, 0.0f, 1.0f);
    }
}

static int64_t grid_size(const grid_case *g) { return (int64_t)g->cols * g->rows * g->per_object; }

static detpost_nms_params grid_params(const grid_case *g, detpost_nms_method method)
{
    detpost_nms_params p = detpost_nms_params_default();
    p.method = method;
    p.sigma = g->sigma, p.min_score = g->min_score, p.iou_threshold = g->iou_threshold;
    p.max_output = g->max_output;
    return p;
}

/* Selection order and scores equal the reference's, bit for bit. */
static void assert_same_nms(const nms_out *got, const nms_out *want, int64_t n, const char *what)
{
    assert_same_keep(got, want, n, what);
    for (int64_t k = 0; k < n; ++k)
        cr_assert_eq(dp_float_bits(got->scores[k]), dp_float_bits(want->scores[k]),
                     "%s: keep_scores[%lld] is %.9g, reference %.9g", what, (long long)k, (double)got->scores[k],
                     (double)want->scores[k]);
}

Test(nms, soft_round_stop_cuda)
{
    detpost_ctx *cpu = t_ctx(DETPOST_CPU), *gpu = t_ctx(DETPOST_CUDA);
    float boxes[STOP_N * 4], scores[STOP_N];
    stop_scenario(boxes, scores);
    for (int m = DETPOST_NMS_LINEAR; m <= DETPOST_NMS_GAUSSIAN; ++m) {
        const detpost_nms_params p = stop_params((detpost_nms_method)m);
        nms_out want = run_nms(cpu, &p, boxes, scores, STOP_N);
        for (int s = 0; s < t_schedule_count(); ++s) {
            t_set_schedule(t_schedule(s));
            nms_out got = run_nms(gpu, &p, boxes, scores, STOP_N);
            char what[120];
            snprintf(what, sizeof what, "%s schedule %s", method_names[m], t_schedule(s) ? t_schedule(s) : "gpu");
            check_stop_order(&got, what);
            assert_same_nms(&got, &want, STOP_N, what);
            free_nms_out(&got);
        }
        free_nms_out(&want);
    }
    detpost_destroy(cpu);
    detpost_destroy(gpu);
}

Test(nms, soft_object_grids_cuda)
{
    detpost_ctx *cpu = t_ctx(DETPOST_CPU), *gpu = t_ctx(DETPOST_CUDA);
    t_rng rng = {31337};
    for (size_t i = 0; i < sizeof grid_cases / sizeof grid_cases[0]; ++i) {
        const grid_case *g = &grid_cases[i];
        const int64_t n = grid_size(g);
        float *boxes = malloc((size_t)n * 16), *scores = malloc((size_t)n * 4);
        object_grid(&rng, boxes, n, g->cols, g->rows, g->size, g->jitter);
        for (int64_t k = 0; k < n; ++k) scores[k] = grid_score(&rng, g->scores);
        for (int m = DETPOST_NMS_LINEAR; m <= DETPOST_NMS_GAUSSIAN; ++m) {
            const detpost_nms_params p = grid_params(g, (detpost_nms_method)m);
            nms_out want = run_nms(cpu, &p, boxes, scores, n);
            cr_assert_gt(want.num, 64, "%s: more than one round's candidates are kept", g->what);
            if (g->max_output) cr_assert_eq(want.num, g->max_output, "%s: the limit is reached", g->what);
            if (g->scores == SCORES_NEAR_MIN) cr_assert_lt(want.num, n, "%s: some boxes are dropped", g->what);
            for (int s = 0; s < t_schedule_count(); ++s) {
                t_set_schedule(t_schedule(s));
                nms_out got = run_nms(gpu, &p, boxes, scores, n);
                char what[160];
                snprintf(what, sizeof what, "%s, %s, schedule %s", g->what, method_names[m],
                         t_schedule(s) ? t_schedule(s) : "gpu");
                assert_same_nms(&got, &want, n, what);
                free_nms_out(&got);
            }
            free_nms_out(&want);
        }
        free(boxes), free(scores);
    }
    detpost_destroy(cpu);
    detpost_destroy(gpu);
}

/* The same inputs through batched NMS: per-class segments (each class scores
 * every box) and one class-agnostic segment holding every class. */
Test(batched_nms, soft_object_grids_cuda)
{
    detpost_ctx *cpu = t_ctx(DETPOST_CPU), *gpu = t_ctx(DETPOST_CUDA);
    t_rng rng = {4242};
    enum { B = 2, C = 3 };
    for (size_t i = 0; i < sizeof grid_cases / sizeof grid_cases[0]; ++i) {
        const grid_case *g = &grid_cases[i];
        const int64_t N = grid_size(g) / 2, K = 3 * N;
        float *boxes = malloc((size_t)(B * N) * 16), *scores = malloc((size_t)(B * N * C) * 4);
        for (int b = 0; b < B; ++b) object_grid(&rng, boxes + b * N * 4, N, g->cols, g->rows, g->size, g->jitter);
        for (int64_t k = 0; k < B * N * C; ++k) scores[k] = grid_score(&rng, g->scores);
        for (int m = DETPOST_NMS_LINEAR; m <= DETPOST_NMS_GAUSSIAN; ++m) {
            detpost_batched_nms_params p = detpost_batched_nms_params_default();
            p.nms = grid_params(g, (detpost_nms_method)m);
            p.nms.max_output = 0;
            p.pre_nms_top_k = 0;
            p.max_per_class = g->max_output;
            p.max_per_image = K;
            p.class_agnostic = (int)(i % 2);
            batched_out want = run_batched(cpu, &p, boxes, scores, B, N, C);
            for (int s = 0; s < t_schedule_count(); ++s) {
                t_set_schedule(t_schedule(s));
                batched_out got = run_batched(gpu, &p, boxes, scores, B, N, C);
                char what[160];
                snprintf(what, sizeof what, "%s, %s%s, schedule %s", g->what, method_names[m],
                         p.class_agnostic ? " agnostic" : "", t_schedule(s) ? t_schedule(s) : "gpu");
                compare_batched(&got, &want, B, K, what);
                /* equal values are equal bits here (no NaN), but for the zeros: the output's scores come back
                 * from sort keys, in which -0 is +0 */
                for (int64_t k = 0; k < B * K; ++k)
                    cr_assert(got.scores[k] == want.scores[k], "%s: det_scores[%lld] is %.9g, reference %.9g", what,
                              (long long)k, (double)got.scores[k], (double)want.scores[k]);
                free_batched_out(&got);
            }
            free_batched_out(&want);
        }
        free(boxes), free(scores);
    }
    detpost_destroy(cpu);
    detpost_destroy(gpu);
}

/* Many boxes kept a stripe: 1,600 small objects with two jittered boxes
 * each, so the first 2048-row stripe keeps far more than the 256 boxes the
 * removal kernel holds in shared memory at once, and removes their copies
 * in later stripes. */
Test(nms, hard_many_kept_per_stripe)
{
    detpost_ctx *cpu = t_ctx(DETPOST_CPU), *gpu = t_ctx(DETPOST_CUDA);
    t_rng rng = {99};
    const int64_t n = 3200;
    float *boxes = malloc((size_t)n * 16), *scores = malloc((size_t)n * 4);
    object_grid(&rng, boxes, n, 40, 40, 0.5f, 0.05f);
    for (int64_t i = 0; i < n; ++i) scores[i] = t_uniform(&rng, 0.0f, 1.0f);
    const detpost_nms_params p = detpost_nms_params_default();
    nms_out want = run_nms(cpu, &p, boxes, scores, n);
    cr_assert_eq(want.num, 1600, "one box an object is kept, the copy removed (kept %lld)", (long long)want.num);
    for (int s = 0; s < t_schedule_count(); ++s) {
        t_set_schedule(t_schedule(s));
        nms_out got = run_nms(gpu, &p, boxes, scores, n);
        char what[96];
        snprintf(what, sizeof what, "schedule %s", t_schedule(s) ? t_schedule(s) : "gpu");
        compare_nms(&got, &want, n, what);
        free_nms_out(&got);
    }
    free_nms_out(&want);
    free(boxes), free(scores);
    detpost_destroy(cpu);
    detpost_destroy(gpu);
}

#endif

#if TEST_HAS_CUDA
/* The stopping scenario in two classes of one image: C keeps its score
 * only when it is taken before B. */
Test(batched_nms, soft_round_stop_cuda)
{
    detpost_ctx *cpu = t_ctx(DETPOST_CPU), *gpu = t_ctx(DETPOST_CUDA);
    enum { C = 2, K = C * STOP_N };
    float boxes[STOP_N * 4], single[STOP_N], scores[STOP_N * C];
    stop_scenario(boxes, single);
    for (int i = 0; i < STOP_N * C; ++i) scores[i] = single[i / C];
    for (int m = DETPOST_NMS_LINEAR; m <= DETPOST_NMS_GAUSSIAN; ++m) {
        detpost_batched_nms_params p = detpost_batched_nms_params_default();
        p.nms = stop_params((detpost_nms_method)m);
        p.max_per_image = K;
        batched_out want = run_batched(cpu, &p, boxes, scores, 1, STOP_N, C);
        cr_assert_eq(want.num_dets[0], K);
        for (int k = 0; k < K; ++k) {
            if (want.indices[k] == 2) cr_assert_eq(want.scores[k], stop_c_score, "C is not decayed");
            if (want.indices[k] == 1) cr_assert_lt(want.scores[k], 0.7f, "B is decayed by A and by C");
        }
        for (int s = 0; s < t_schedule_count(); ++s) {
            t_set_schedule(t_schedule(s));
            batched_out got = run_batched(gpu, &p, boxes, scores, 1, STOP_N, C);
            char what[120];
            snprintf(what, sizeof what, "%s schedule %s", method_names[m], t_schedule(s) ? t_schedule(s) : "gpu");
            compare_batched(&got, &want, 1, K, what);
            for (int k = 0; k < K; ++k)
                cr_assert(got.scores[k] == want.scores[k], "%s: det_scores[%d] is %.9g, reference %.9g", what, k,
                          (double)got.scores[k], (double)want.scores[k]);
            free_batched_out(&got);
        }
        free_batched_out(&want);
    }
    detpost_destroy(cpu);
    detpost_destroy(gpu);
}
#endif

/* ---- bad input ------------------------------------------------------------------------------ */

Test(nms, bad_input_gets_status_and_message)
{
    detpost_ctx *cpu = t_ctx(DETPOST_CPU);
    const float boxes[8] = {0, 0, 1, 1, 0, 0, 2, 2}, scores[2] = {0.9f, 0.8f};
    int64_t keep[2] = {-7, -7}, num = -7;
    float ks[2] = {-7, -7};
    const detpost_nms_params d = detpost_nms_params_default();
    cr_assert_eq(detpost_nms(NULL, &d, boxes, scores, 2, keep, ks, &num), DETPOST_ERR_INVALID_ARGUMENT);

    struct {
        const float *boxes, *scores;
        int64_t n;
        int64_t *keep, *num;
        detpost_nms_params p;
        const char *needle;
    } bad[] = {
        {NULL, scores, 2, keep, &num, d, "boxes is NULL"},
        {boxes, NULL, 2, keep, &num, d, "scores is NULL"},
        {boxes, scores, 2, NULL, &num, d, "keep is NULL"},
        {boxes, scores, 2, keep, NULL, d, "num_keep is NULL"},
        {boxes, scores, -1, keep, &num, d, "n is negative"},
        {boxes, scores, 2, keep, &num, {(detpost_nms_method)7, 0.5f, -INFINITY, 0, 0.5f, 0.001f, 0}, "p->method"},
        {boxes, scores, 2, keep, &num, {DETPOST_NMS_HARD, -0.1f, -INFINITY, 0, 0.5f, 0.001f, 0}, "p->iou_threshold"},
        {boxes, scores, 2, keep, &num, {DETPOST_NMS_HARD, 1.5f, -INFINITY, 0, 0.5f, 0.001f, 0}, "p->iou_threshold"},
        {boxes, scores, 2, keep, &num, {DETPOST_NMS_HARD, NAN, -INFINITY, 0, 0.5f, 0.001f, 0}, "p->iou_threshold"},
        {boxes, scores, 2, keep, &num, {DETPOST_NMS_HARD, 0.5f, NAN, 0, 0.5f, 0.001f, 0}, "p->score_threshold"},
        {boxes, scores, 2, keep, &num, {DETPOST_NMS_HARD, 0.5f, -INFINITY, -1, 0.5f, 0.001f, 0}, "p->max_output"},
        {boxes, scores, 2, keep, &num, {DETPOST_NMS_GAUSSIAN, 0.5f, -INFINITY, 0, 0.0f, 0.001f, 0}, "p->sigma"},
        {boxes, scores, 2, keep, &num, {DETPOST_NMS_GAUSSIAN, 0.5f, -INFINITY, 0, -1.0f, 0.001f, 0}, "p->sigma"},
        {boxes, scores, 2, keep, &num, {DETPOST_NMS_GAUSSIAN, 0.5f, -INFINITY, 0, NAN, 0.001f, 0}, "p->sigma"},
        {boxes, scores, 2, keep, &num, {DETPOST_NMS_GAUSSIAN, 0.5f, -INFINITY, 0, INFINITY, 0.001f, 0}, "p->sigma"},
        {boxes, scores, 2, keep, &num, {DETPOST_NMS_LINEAR, 0.5f, -INFINITY, 0, 0.5f, NAN, 0}, "p->min_score"},
        {boxes, scores, 2, keep, &num, {DETPOST_NMS_HARD, 0.5f, -INFINITY, 0, 0.5f, 0.001f, 0.5f}, "p->offset"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; ++i) {
        const detpost_status st = detpost_nms(cpu, &bad[i].p, bad[i].boxes, bad[i].scores, bad[i].n, bad[i].keep, ks,
                                              bad[i].num);
        cr_assert_eq(st, DETPOST_ERR_INVALID_ARGUMENT, "case %zu: %s", i, detpost_status_name(st));
        cr_assert(strstr(detpost_last_error(cpu), bad[i].needle) != NULL, "case %zu: message '%s' lacks '%s'", i,
                  detpost_last_error(cpu), bad[i].needle);
        cr_assert(keep[0] == -7 && keep[1] == -7 && ks[0] == -7 && ks[1] == -7 && num == -7, "case %zu wrote", i);
    }
    cr_assert_eq(detpost_nms(cpu, &d, boxes, scores, (int64_t)1 << 31, keep, ks, &num), DETPOST_ERR_UNSUPPORTED);
    cr_assert(strstr(detpost_last_error(cpu), "2^31") != NULL, "%s", detpost_last_error(cpu));
    size_t bytes = 1;
    cr_assert_eq(detpost_nms_workspace_size(cpu, &d, 2, NULL), DETPOST_ERR_INVALID_ARGUMENT);
    cr_assert_eq(detpost_nms_workspace_size(cpu, &d, -2, &bytes), DETPOST_ERR_INVALID_ARGUMENT);
    cr_assert_eq(detpost_nms_workspace_size(cpu, &d, 2, &bytes), DETPOST_OK);
    cr_assert_eq(bytes, 0, "the CPU reference needs no workspace");
    /* a good call clears the message, and NULL keep_scores is allowed */
    cr_assert_eq(detpost_nms(cpu, NULL, boxes, scores, 2, keep, NULL, &num), DETPOST_OK);
    cr_assert_str_empty(detpost_last_error(cpu));
    cr_assert_eq(num, 2, "IoU 1/4 suppresses nothing");
    cr_assert_eq(detpost_nms(cpu, NULL, NULL, NULL, 0, NULL, NULL, &num), DETPOST_OK, "n = 0 needs no arrays");
    cr_assert_eq(num, 0);
    detpost_destroy(cpu);
}

Test(batched_nms, bad_input_gets_status_and_message)
{
    detpost_ctx *cpu = t_ctx(DETPOST_CPU);
    const float boxes[8] = {0, 0, 1, 1, 0, 0, 2, 2}, scores[6] = {0.9f, 0.1f, 0.2f, 0.8f, 0.1f, 0.3f};
    int32_t nd[1] = {-7}, cls[2] = {-7, -7}, idx[2] = {-7, -7};
    float db[8], ds[2] = {-7, -7};
    for (int i = 0; i < 8; ++i) db[i] = -7;
    const detpost_batched_nms_params d = detpost_batched_nms_params_default();
    detpost_batched_nms_params q[14];
    for (int i = 0; i < 14; ++i) q[i] = d, q[i].max_per_image = 2;
    const char *needles[14] = {"p->max_per_image", "p->pre_nms_top_k", "p->max_per_class", "p->background_class",
                               "p->background_class", "p->class_agnostic", "p->boxes_per_class", "p->box_coding",
                               "p->nms.iou_threshold", "p->nms.sigma", "p->nms.method", "p->nms.min_score",
                               "p->nms.score_threshold", "p->nms.offset"};
    q[0].max_per_image = 0, q[1].pre_nms_top_k = -1, q[2].max_per_class = -5, q[3].background_class = 3;
    q[4].background_class = -2, q[5].class_agnostic = 2, q[6].boxes_per_class = -1;
    q[7].box_coding = (detpost_box_coding)4, q[8].nms.iou_threshold = NAN, q[9].nms.sigma = -0.5f;
    q[10].nms.method = (detpost_nms_method)-1, q[11].nms.min_score = NAN, q[12].nms.score_threshold = NAN;
    q[13].nms.offset = 2;
    for (int i = 0; i < 14; ++i) {
        const detpost_status st = detpost_batched_nms(cpu, &q[i], boxes, scores, 1, 2, 3, nd, db, ds, cls, idx);
        cr_assert_eq(st, DETPOST_ERR_INVALID_ARGUMENT, "case %d: %s", i, detpost_status_name(st));
        cr_assert(strstr(detpost_last_error(cpu), needles[i]) != NULL, "case %d: message '%s' lacks '%s'", i,
                  detpost_last_error(cpu), needles[i]);
    }
    detpost_batched_nms_params p = d;
    p.max_per_image = 2;
    struct {
        const float *boxes, *scores;
        int64_t B, N, C;
        int32_t *nd, *cls;
        float *db, *ds;
        const char *needle;
    } bad[] = {
        {NULL, scores, 1, 2, 3, nd, cls, db, ds, "boxes is NULL"},
        {boxes, NULL, 1, 2, 3, nd, cls, db, ds, "scores is NULL"},
        {boxes, scores, 1, 2, 3, NULL, cls, db, ds, "num_dets is NULL"},
        {boxes, scores, 1, 2, 3, nd, NULL, db, ds, "det_classes is NULL"},
        {boxes, scores, 1, 2, 3, nd, cls, NULL, ds, "det_boxes is NULL"},
        {boxes, scores, 1, 2, 3, nd, cls, db, NULL, "det_scores is NULL"},
        {boxes, scores, -1, 2, 3, nd, cls, db, ds, "batch is negative"},
        {boxes, scores, 1, -2, 3, nd, cls, db, ds, "num_boxes is negative"},
        {boxes, scores, 1, 2, -3, nd, cls, db, ds, "num_classes is negative"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; ++i) {
        const detpost_status st = detpost_batched_nms(cpu, &p, bad[i].boxes, bad[i].scores, bad[i].B, bad[i].N,
                                                      bad[i].C, bad[i].nd, bad[i].db, bad[i].ds, bad[i].cls, idx);
        cr_assert_eq(st, DETPOST_ERR_INVALID_ARGUMENT, "case %zu: %s", i, detpost_status_name(st));
        cr_assert(strstr(detpost_last_error(cpu), bad[i].needle) != NULL, "case %zu: message '%s' lacks '%s'", i,
                  detpost_last_error(cpu), bad[i].needle);
    }
    cr_assert_eq(nd[0], -7, "nothing was written");
    for (int i = 0; i < 2; ++i) cr_assert(cls[i] == -7 && idx[i] == -7 && ds[i] == -7);
    for (int i = 0; i < 8; ++i) cr_assert_eq(db[i], -7);
    cr_assert_eq(detpost_batched_nms(cpu, &p, boxes, scores, 1, 1 << 20, 1 << 12, nd, db, ds, cls, idx),
                 DETPOST_ERR_UNSUPPORTED, "2^32 pairs per image");
    size_t bytes = 1;
    cr_assert_eq(detpost_batched_nms_workspace_size(cpu, &p, 1, 2, 3, NULL), DETPOST_ERR_INVALID_ARGUMENT);
    cr_assert_eq(detpost_batched_nms_workspace_size(cpu, &q[0], 1, 2, 3, &bytes), DETPOST_ERR_INVALID_ARGUMENT);
    cr_assert_eq(detpost_batched_nms_workspace_size(cpu, &p, 1, 2, 3, &bytes), DETPOST_OK);
    cr_assert_eq(bytes, 0);
    /* batch 0 is valid and writes nothing; det_indices may be NULL */
    cr_assert_eq(detpost_batched_nms(cpu, &p, NULL, NULL, 0, 2, 3, NULL, NULL, NULL, NULL, NULL), DETPOST_OK);
    cr_assert_eq(detpost_batched_nms(cpu, &p, boxes, scores, 1, 2, 3, nd, db, ds, cls, NULL), DETPOST_OK, "%s",
                 detpost_last_error(cpu));
    cr_assert_eq(nd[0], 2);
    detpost_destroy(cpu);
}

#if TEST_HAS_CUDA
Test(nms, host_pointers_on_cuda_context)
{
    detpost_ctx *gpu = t_ctx(DETPOST_CUDA);
    const float boxes[4] = {0, 0, 1, 1}, scores[1] = {0.5f};
    int64_t *dk = t_alloc(gpu, 8), *dn = t_alloc(gpu, 8);
    cr_assert_eq(detpost_nms(gpu, NULL, boxes, scores, 1, dk, NULL, dn), DETPOST_ERR_INVALID_ARGUMENT);
    cr_assert(strstr(detpost_last_error(gpu), "boxes") && strstr(detpost_last_error(gpu), "not device memory"), "%s",
              detpost_last_error(gpu));
    t_free(gpu, dk), t_free(gpu, dn);
    detpost_destroy(gpu);
}

/* Workspace: one layout serves the query and the call; a smaller caller
 * buffer is refused before anything runs; large inputs stay within bounds. */
Test(nms, cuda_workspace)
{
    detpost_ctx *gpu = t_ctx(DETPOST_CUDA);
    detpost_nms_params p = detpost_nms_params_default();
    size_t big = 0, huge = 0;
    cr_assert_eq(detpost_nms_workspace_size(gpu, &p, 100000, &big), DETPOST_OK);
    cr_assert_lt(big, (size_t)256 << 20, "100,000 boxes need %zu bytes", big);
    cr_assert_eq(detpost_nms_workspace_size(gpu, &p, 1000000, &huge), DETPOST_OK);
    /* per box, plus one stripe's own suppression bits (2048 rows x 32 words) */
    cr_assert_lt(huge, (size_t)1000000 * 80 + ((size_t)1 << 20), "a million boxes need %zu bytes", huge);
    p.method = DETPOST_NMS_GAUSSIAN;
    cr_assert_eq(detpost_nms_workspace_size(gpu, &p, 1000000, &huge), DETPOST_OK);
    cr_assert_lt(huge, (size_t)1000000 * 80, "soft-NMS of a million boxes needs %zu bytes", huge);

    const int64_t n = 500;
    float boxes[500 * 4], scores[500];
    t_rng rng = {8};
    t_detector_boxes(&rng, boxes, n, 100, 100, 0);
    detector_scores(&rng, scores, n);
    nms_out want = run_nms(gpu, &p, boxes, scores, n);
    size_t need = 0;
    cr_assert_eq(detpost_nms_workspace_size(gpu, &p, n, &need), DETPOST_OK);
    float *db = t_up(gpu, boxes, sizeof boxes), *ds = t_up(gpu, scores, sizeof scores);
    int64_t *dk = t_alloc(gpu, (size_t)n * 8), *dn = t_alloc(gpu, 8);
    char *buf = t_alloc(gpu, need + 1);
    cr_assert_eq(detpost_set_workspace(gpu, buf, need / 2), DETPOST_OK);
    cr_assert_eq(detpost_nms(gpu, &p, db, ds, n, dk, NULL, dn), DETPOST_ERR_WORKSPACE_TOO_SMALL);
    cr_assert_eq(detpost_set_workspace(gpu, buf + 1, need), DETPOST_OK);
    cr_assert_eq(detpost_nms(gpu, &p, db, ds, n, dk, NULL, dn), DETPOST_OK, "%s", detpost_last_error(gpu));
    int64_t num = -1;
    cr_assert_eq(detpost_to_host(gpu, &num, dn, 8), DETPOST_OK);
    cr_assert_eq(num, want.num);

    detpost_batched_nms_params bp = detpost_batched_nms_params_default();
    cr_assert_eq(detpost_batched_nms_workspace_size(gpu, &bp, 16, 8400, 80, &need), DETPOST_OK);
    cr_assert_lt(need, (size_t)16 * 4096 * 80, "the YOLO shape needs %zu bytes", need);
    cr_assert_eq(detpost_set_workspace(gpu, NULL, 0), DETPOST_OK);
    free_nms_out(&want);
    t_free(gpu, db), t_free(gpu, ds), t_free(gpu, dk), t_free(gpu, dn), t_free(gpu, buf);
    detpost_destroy(gpu);
}
#endif

#if TEST_HAS_CUDA
/* ---- CUDA graphs ------------------------------------------------------------------ */

/* Every method of both calls on one set of inputs, each into its own outputs. */
typedef struct nms_graph {
    const float *boxes, *scores; /* n boxes, also [B, N, C, 4] per-class boxes with scores [B, N, C] */
    int64_t n, B, N, C, K;
    int64_t *keep[4], *num[4];
    float *keep_scores[4], *det_boxes[4], *det_scores[4];
    int32_t *num_dets[4], *classes[4], *indices[4];
} nms_graph;

enum { NMS_GRAPH_REGIONS = 4 * 8 };

static void nms_graph_init(detpost_ctx *ctx, nms_graph *g, const float *dboxes, const float *dscores)
{
    *g = (nms_graph){.boxes = dboxes, .scores = dscores, .n = 2400, .B = 2, .N = 200, .C = 6, .K = 50};
    for (int m = 0; m < 4; ++m) {
        g->keep[m] = t_alloc(ctx, (size_t)g->n * 8), g->num[m] = t_alloc(ctx, 8);
        g->keep_scores[m] = t_alloc(ctx, (size_t)g->n * 4);
        g->num_dets[m] = t_alloc(ctx, (size_t)g->B * 4), g->det_boxes[m] = t_alloc(ctx, (size_t)(g->B * g->K) * 16);
        g->det_scores[m] = t_alloc(ctx, (size_t)(g->B * g->K) * 4);
        g->classes[m] = t_alloc(ctx, (size_t)(g->B * g->K) * 4), g->indices[m] = t_alloc(ctx, (size_t)(g->B * g->K) * 4);
    }
}

static int nms_graph_regions(const nms_graph *g, t_region *r)
{
    int k = 0;
    const size_t rows = (size_t)(g->B * g->K);
    for (int m = 0; m < 4; ++m) {
        r[k++] = (t_region){g->keep[m], (size_t)g->n * 8};
        r[k++] = (t_region){g->num[m], 8};
        r[k++] = (t_region){g->keep_scores[m], (size_t)g->n * 4};
        r[k++] = (t_region){g->num_dets[m], (size_t)g->B * 4};
        r[k++] = (t_region){g->det_boxes[m], rows * 16};
        r[k++] = (t_region){g->det_scores[m], rows * 4};
        r[k++] = (t_region){g->classes[m], rows * 4};
        r[k++] = (t_region){g->indices[m], rows * 4};
    }
    return k;
}

static void nms_graph_free(detpost_ctx *ctx, nms_graph *g)
{
    t_region r[NMS_GRAPH_REGIONS];
    const int k = nms_graph_regions(g, r);
    for (int i = 0; i < k; ++i) t_free(ctx, r[i].ptr);
}

static void nms_graph_ops(detpost_ctx *ctx, void *arg)
{
    const nms_graph *g = arg;
    detpost_nms_params p = detpost_nms_params_default();
    detpost_batched_nms_params bp = detpost_batched_nms_params_default();
    bp.max_per_image = g->K;
    bp.boxes_per_class = 1;
    for (int m = 0; m < 4; ++m) {
        p.method = bp.nms.method = (detpost_nms_method)m;
        bp.class_agnostic = m & 1;
        cr_assert_eq(detpost_nms(ctx, &p, g->boxes, g->scores, g->n, g->keep[m], g->keep_scores[m], g->num[m]),
                     DETPOST_OK, "%s: %s", method_names[m], detpost_last_error(ctx));
        cr_assert_eq(detpost_batched_nms(ctx, &bp, g->boxes, g->scores, g->B, g->N, g->C, g->num_dets[m],
                                         g->det_boxes[m], g->det_scores[m], g->classes[m], g->indices[m]),
                     DETPOST_OK, "batched %s: %s", method_names[m], detpost_last_error(ctx));
    }
}

static void upload_detections(detpost_ctx *ctx, uint64_t seed, float *dboxes, float *dscores, int64_t n)
{
    t_rng rng = {seed};
    float *boxes = malloc((size_t)n * 16), *scores = malloc((size_t)n * 4);
    t_detector_boxes(&rng, boxes, n, 640, 480, 0);
    detector_scores(&rng, scores, n);
    cr_assert_eq(detpost_to_ctx(ctx, dboxes, boxes, (size_t)n * 16), DETPOST_OK);
    cr_assert_eq(detpost_to_ctx(ctx, dscores, scores, (size_t)n * 4), DETPOST_OK);
    free(boxes), free(scores);
}

static void nms_graph_inputs(detpost_ctx *ctx, void *arg, int round)
{
    nms_graph *g = arg;
    upload_detections(ctx, 43 + (uint64_t)round, (float *)g->boxes, (float *)g->scores, g->n);
}

/* Both calls, every method, captured in a CUDA graph: the capture runs
 * nothing, and launched on new detections in the same buffers the graph
 * writes what direct calls on them write. */
Test(nms, cuda_graph_replay)
{
    detpost_ctx *gpu = t_ctx(DETPOST_CUDA);
    void *stream = t_own_stream(gpu);
    const int64_t n = 2400;
    float *db = t_alloc(gpu, (size_t)n * 16), *ds = t_alloc(gpu, (size_t)n * 4);
    upload_detections(gpu, 41, db, ds, n);
    nms_graph g;
    nms_graph_init(gpu, &g, db, ds);
    t_region r[NMS_GRAPH_REGIONS];
    t_check_graph_replay(gpu, stream, nms_graph_ops, &g, r, nms_graph_regions(&g, r), nms_graph_inputs);
    nms_graph_free(gpu, &g);
    t_free(gpu, db), t_free(gpu, ds);
    detpost_destroy(gpu);
    t_stream_destroy(stream);
}

/* A call captured before the arena has grown is refused, and so are calls
 * that wait, allocate or release the arena, the capture left intact; a
 * workspace lent beforehand lets the first call be captured. */
Test(nms, cuda_graph_capture_needs_a_workspace)
{
    detpost_ctx *gpu = t_ctx(DETPOST_CUDA);
    void *stream = t_own_stream(gpu);
    const int64_t n = 2400;
    float *db = t_alloc(gpu, (size_t)n * 16), *ds = t_alloc(gpu, (size_t)n * 4);
    upload_detections(gpu, 46, db, ds, n);
    int64_t *dk = t_alloc(gpu, (size_t)n * 8), *dnum = t_alloc(gpu, 8);
    float *dks = t_alloc(gpu, (size_t)n * 4);
    detpost_nms_params p = detpost_nms_params_default();
    p.method = DETPOST_NMS_GAUSSIAN;

    int err = t_capture_begin(stream);
    cr_assert_eq(err, 0, "%s", t_cuda_error(err));
    cr_assert_eq(detpost_nms(gpu, &p, db, ds, n, dk, dks, dnum), DETPOST_ERR_WORKSPACE_TOO_SMALL);
    cr_assert(strstr(detpost_last_error(gpu), "capturing a CUDA graph") &&
                  strstr(detpost_last_error(gpu), "detpost_set_workspace"),
              "%s", detpost_last_error(gpu));
    cr_assert_eq(t_capture_status(stream), 1, "the refused call invalidated the capture");
    /* what cannot be part of a graph is refused without spoiling the capture */
    cr_assert_eq(detpost_set_workspace(gpu, db, 64), DETPOST_ERR_UNSUPPORTED);
    cr_assert(strstr(detpost_last_error(gpu), "detpost_set_workspace") != NULL, "%s", detpost_last_error(gpu));
    cr_assert_eq(detpost_set_stream(gpu, NULL), DETPOST_ERR_UNSUPPORTED);
    cr_assert_eq(detpost_set_stream(gpu, stream), DETPOST_OK, "the same stream again changes nothing");
    int64_t num = -1;
    void *more = NULL;
    cr_assert_eq(detpost_synchronize(gpu), DETPOST_ERR_UNSUPPORTED);
    cr_assert_eq(detpost_to_host(gpu, &num, dnum, 8), DETPOST_ERR_UNSUPPORTED);
    cr_assert_eq(num, -1, "nothing was copied");
    cr_assert_eq(detpost_to_ctx(gpu, dnum, &num, 8), DETPOST_ERR_UNSUPPORTED);
    cr_assert_eq(detpost_alloc(gpu, &more, 64), DETPOST_ERR_UNSUPPORTED);
    cr_assert(strstr(detpost_last_error(gpu), "detpost_alloc") && strstr(detpost_last_error(gpu), "capturing"), "%s",
              detpost_last_error(gpu));
    cr_assert_eq(detpost_free(gpu, dnum), DETPOST_ERR_UNSUPPORTED);
    cr_assert_eq(t_capture_status(stream), 1, "the refused calls invalidated the capture");
    void *exec = NULL;
    err = t_capture_end(stream, &exec);
    cr_assert_eq(err, 0, "%s", t_cuda_error(err));
    t_graph_destroy(exec);
    cr_assert_eq(detpost_workspace_capacity(gpu), 0, "nothing was allocated");

    size_t need = 0;
    cr_assert_eq(detpost_nms_workspace_size(gpu, &p, n, &need), DETPOST_OK);
    void *ws = t_alloc(gpu, need);
    cr_assert_eq(detpost_set_workspace(gpu, ws, need), DETPOST_OK);
    err = t_capture_begin(stream);
    cr_assert_eq(err, 0, "%s", t_cuda_error(err));
    cr_assert_eq(detpost_nms(gpu, &p, db, ds, n, dk, dks, dnum), DETPOST_OK, "%s", detpost_last_error(gpu));
    err = t_capture_end(stream, &exec);
    cr_assert_eq(err, 0, "%s", t_cuda_error(err));
    err = t_graph_launch(exec, stream);
    cr_assert_eq(err, 0, "%s", t_cuda_error(err));
    cr_assert_eq(detpost_to_host(gpu, &num, dnum, 8), DETPOST_OK, "%s", detpost_last_error(gpu));
    int64_t *keep = t_down(gpu, dk, (size_t)n * 8);
    float *boxes = t_down(gpu, db, (size_t)n * 16), *scores = t_down(gpu, ds, (size_t)n * 4);
    detpost_ctx *cpu = t_ctx(DETPOST_CPU);
    nms_out want = run_nms(cpu, &p, boxes, scores, n);
    cr_assert_eq(num, want.num);
    cr_assert_eq(memcmp(keep, want.keep, (size_t)num * 8), 0, "the graph kept other boxes than the CPU");
    free_nms_out(&want), free(keep), free(boxes), free(scores);
    t_graph_destroy(exec);
    cr_assert_eq(detpost_set_workspace(gpu, NULL, 0), DETPOST_OK);
    t_free(gpu, ws), t_free(gpu, db), t_free(gpu, ds), t_free(gpu, dk), t_free(gpu, dnum), t_free(gpu, dks);
    detpost_destroy(cpu);
    detpost_destroy(gpu);
    t_stream_destroy(stream);
}
#endif

#if defined(DETPOST_SIM)
/* No host synchronisation and no allocation in steady state, for every
 * method of both calls. */
Test(nms, ops_never_synchronise)
{
    detpost_ctx *gpu = t_ctx(DETPOST_CUDA);
    t_rng rng = {31};
    const int64_t n = 2400, B = 2, N = 200, C = 6, K = 50;
    float *boxes = malloc((size_t)n * 16), *scores = malloc((size_t)n * 4);
    t_detector_boxes(&rng, boxes, n, 640, 480, 0);
    detector_scores(&rng, scores, n);
    float *db = t_up(gpu, boxes, (size_t)n * 16), *ds = t_up(gpu, scores, (size_t)n * 4);
    int64_t *dk = t_alloc(gpu, (size_t)n * 8), *dnum = t_alloc(gpu, 8);
    float *dks = t_alloc(gpu, (size_t)n * 4), *dbox = t_alloc(gpu, (size_t)(B * K) * 16);
    float *dsc = t_alloc(gpu, (size_t)(B * K) * 4);
    int32_t *dnd = t_alloc(gpu, (size_t)B * 4), *dcl = t_alloc(gpu, (size_t)(B * K) * 4);
    int32_t *dix = t_alloc(gpu, (size_t)(B * K) * 4);
    detpost_nms_params p = detpost_nms_params_default();
    detpost_batched_nms_params bp = detpost_batched_nms_params_default();
    bp.max_per_image = K;
    bp.boxes_per_class = 1;
    for (int pass = 0; pass < 2; ++pass) {
        const unsigned long long syncs = simt_sync_count();
        const size_t live = simt_live_allocations();
        for (int m = 0; m < 4; ++m) {
            p.method = bp.nms.method = (detpost_nms_method)m;
            cr_assert_eq(detpost_nms(gpu, &p, db, ds, n, dk, dks, dnum), DETPOST_OK, "%s", detpost_last_error(gpu));
            cr_assert_eq(detpost_batched_nms(gpu, &bp, db, ds, B, N, C, dnd, dbox, dsc, dcl, dix), DETPOST_OK, "%s",
                         detpost_last_error(gpu));
            bp.class_agnostic ^= 1;
        }
        /* the first pass grows the arena; the second must neither wait nor allocate */
        if (pass == 1) {
            cr_assert_eq(simt_sync_count(), syncs, "an NMS call synchronised with the host");
            cr_assert_eq(simt_live_allocations(), live, "an NMS call allocated in steady state");
        }
    }
    free(boxes), free(scores);
    t_free(gpu, db), t_free(gpu, ds), t_free(gpu, dk), t_free(gpu, dnum), t_free(gpu, dks), t_free(gpu, dbox);
    t_free(gpu, dsc), t_free(gpu, dnd), t_free(gpu, dcl), t_free(gpu, dix);
    detpost_destroy(gpu);
}
#endif
