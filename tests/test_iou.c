/* Box overlaps and mask IoU: golden vectors, CPU against the CUDA backend,
 * bad input. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "common.h"

static detpost_overlap_mode mode_of(const char *name)
{
    static const char *const names[] = {"iou", "iof", "giou", "diou", "ciou"};
    for (int i = 0; i < 5; ++i)
        if (strcmp(name, names[i]) == 0) return (detpost_overlap_mode)i;
    cr_assert_fail("unknown mode %s", name);
    return DETPOST_IOU;
}

/* Runs every golden case of tests/data/iou.json on one backend. */
static void check_golden(detpost_backend backend)
{
    cJSON *root = t_golden("iou.json");
    detpost_ctx *ctx = t_ctx(backend);
    const cJSON *c;
    int cases = 0;
    cJSON_ArrayForEach(c, cJSON_GetObjectItemCaseSensitive(root, "cases"))
    {
        int64_t na, nb;
        float *a = t_golden_floats(c, "a", 4, &na);
        float *b = t_golden_floats(c, "b", 4, &nb);
        const cJSON *exp = cJSON_GetObjectItemCaseSensitive(c, "expected");
        const int aligned = (int)t_golden_number(c, "aligned", 0);
        const int64_t cols_want = aligned ? 1 : nb, n_out = na * cols_want;
        /* expected is [na][nb], or [na][1] when aligned: flatten row by row */
        float *want = malloc((size_t)(na * nb + 1) * sizeof(float));
        int64_t k = 0;
        const cJSON *row;
        cJSON_ArrayForEach(row, exp)
        {
            int64_t cols;
            float *r = t_json_floats(row, "expected row", 0, &cols);
            cr_assert_eq(cols, cols_want);
            memcpy(want + k, r, (size_t)cols * sizeof(float));
            k += cols;
            free(r);
        }
        cr_assert_eq(k, n_out);

        detpost_overlap_params p = detpost_overlap_params_default();
        p.mode = mode_of(t_golden_string(c, "mode", "iou"));
        p.offset = (float)t_golden_number(c, "offset", 0);
        p.aligned = aligned;
        for (int s = 0; s < t_schedule_count(); ++s) {
            t_set_schedule(t_schedule(s));
            float *da = t_up(ctx, a, (size_t)na * 16), *db = t_up(ctx, b, (size_t)nb * 16);
            float *dout = t_alloc(ctx, (size_t)n_out * sizeof(float));
            cr_assert_eq(detpost_box_overlaps(ctx, &p, da, na, db, nb, 1, dout), DETPOST_OK, "%s",
                         detpost_last_error(ctx));
            float *got = t_down(ctx, dout, (size_t)n_out * sizeof(float));
            char what[256];
            snprintf(what, sizeof what, "%s (%s%s, offset %g)", t_golden_string(c, "name", "?"),
                     t_golden_string(c, "mode", "?"), aligned ? ", aligned" : "", (double)p.offset);
            t_assert_close(got, want, n_out, 1e-6f, 1e-5f, what);
            free(got);
            t_free(ctx, da), t_free(ctx, db), t_free(ctx, dout);
        }
        free(a), free(b), free(want);
        ++cases;
    }
    cr_assert_gt(cases, 20, "the golden file holds %d cases", cases);
    detpost_destroy(ctx);
    cJSON_Delete(root);
}

Test(iou, golden_cpu) { check_golden(DETPOST_CPU); }

#if TEST_HAS_CUDA
Test(iou, golden_cuda) { check_golden(DETPOST_CUDA); }

/* CPU against CUDA on detector-like boxes, across the row tile (32) and
 * column block (128) boundaries, every mode, both layouts and offsets. */
Test(iou, cpu_vs_cuda_random)
{
    static const int64_t nas[] = {1, 31, 32, 33, 70};
    static const int64_t nbs[] = {1, 127, 128, 129, 300};
    detpost_ctx *cpu = t_ctx(DETPOST_CPU), *gpu = t_ctx(DETPOST_CUDA);
    t_rng rng = {42};
    for (int s = 0; s < t_schedule_count(); ++s) {
        t_set_schedule(t_schedule(s));
        for (int ia = 0; ia < 5; ++ia)
            for (int ib = 0; ib < 5; ++ib) {
                const int64_t na = nas[ia], nb = nbs[ib], batch = 1 + (int64_t)(t_next(&rng) % 3);
                float *a = malloc((size_t)(batch * na) * 16), *b = malloc((size_t)(batch * nb) * 16);
                t_detector_boxes(&rng, a, batch * na, 640, 480, 1);
                t_detector_boxes(&rng, b, batch * nb, 640, 480, 1);
                float *da = t_up(gpu, a, (size_t)(batch * na) * 16), *db = t_up(gpu, b, (size_t)(batch * nb) * 16);
                const int64_t nout = batch * na * nb;
                float *want = malloc((size_t)nout * sizeof(float));
                float *dout = t_alloc(gpu, (size_t)nout * sizeof(float));
                for (int mode = DETPOST_IOU; mode <= DETPOST_CIOU; ++mode)
                    for (int aligned = 0; aligned <= (na == nb); ++aligned) {
                        detpost_overlap_params p = {(detpost_overlap_mode)mode, aligned, (float)(t_next(&rng) % 2)};
                        const int64_t n = aligned ? batch * na : nout;
                        cr_assert_eq(detpost_box_overlaps(cpu, &p, a, na, b, nb, batch, want), DETPOST_OK);
                        cr_assert_eq(detpost_box_overlaps(gpu, &p, da, na, db, nb, batch, dout), DETPOST_OK, "%s",
                                     detpost_last_error(gpu));
                        float *got = t_down(gpu, dout, (size_t)n * sizeof(float));
                        char what[160];
                        snprintf(what, sizeof what, "mode %d aligned %d na %lld nb %lld batch %lld schedule %s", mode,
                                 aligned, (long long)na, (long long)nb, (long long)batch,
                                 t_schedule(s) ? t_schedule(s) : "gpu");
                        /* the same arithmetic on both sides, CIoU's arctan included */
                        t_assert_close(got, want, n, 0.0f, 0.0f, what);
                        for (int64_t i = 0; i < n; ++i) cr_assert(!isnan(got[i]), "%s: NaN at %lld", what, (long long)i);
                        free(got);
                    }
                t_free(gpu, da), t_free(gpu, db), t_free(gpu, dout);
                free(a), free(b), free(want);
            }
    }
    detpost_destroy(cpu);
    detpost_destroy(gpu);
}

/* Aligned overlaps (one pair per box) over sizes that cross the kernel's
 * 256-thread blocks, with several images: the grid above only reaches them
 * with one box. */
Test(iou, aligned_cpu_vs_cuda_random)
{
    static const int64_t sizes[] = {1, 31, 255, 256, 257, 1000};
    detpost_ctx *cpu = t_ctx(DETPOST_CPU), *gpu = t_ctx(DETPOST_CUDA);
    t_rng rng = {43};
    for (int s = 0; s < t_schedule_count(); ++s) {
        t_set_schedule(t_schedule(s));
        for (size_t k = 0; k < sizeof sizes / sizeof sizes[0]; ++k) {
            const int64_t n = sizes[k], batch = 1 + (int64_t)(k % 3), total = batch * n;
            float *a = malloc((size_t)total * 16), *b = malloc((size_t)total * 16);
            t_detector_boxes(&rng, a, total, 640, 480, 1);
            for (int64_t i = 0; i < total * 4; ++i) b[i] = a[i] + t_uniform(&rng, -8.0f, 8.0f); /* overlapping pairs */
            float *da = t_up(gpu, a, (size_t)total * 16), *db = t_up(gpu, b, (size_t)total * 16);
            float *want = malloc((size_t)total * sizeof(float)), *dout = t_alloc(gpu, (size_t)total * sizeof(float));
            for (int mode = DETPOST_IOU; mode <= DETPOST_CIOU; ++mode) {
                const detpost_overlap_params p = {(detpost_overlap_mode)mode, 1, (float)(t_next(&rng) % 2)};
                cr_assert_eq(detpost_box_overlaps(cpu, &p, a, n, b, n, batch, want), DETPOST_OK);
                cr_assert_eq(detpost_box_overlaps(gpu, &p, da, n, db, n, batch, dout), DETPOST_OK, "%s",
                             detpost_last_error(gpu));
                float *got = t_down(gpu, dout, (size_t)total * sizeof(float));
                char what[128];
                snprintf(what, sizeof what, "aligned mode %d n %lld batch %lld schedule %s", mode, (long long)n,
                         (long long)batch, t_schedule(s) ? t_schedule(s) : "gpu");
                t_assert_close(got, want, total, 0.0f, 0.0f, what);
                int overlapping = 0;
                for (int64_t i = 0; i < total; ++i) overlapping += want[i] > 0.0f;
                cr_assert_gt(overlapping, total / 2, "%s: most pairs overlap (%d of %lld)", what, overlapping,
                             (long long)total);
                free(got);
            }
            t_free(gpu, da), t_free(gpu, db), t_free(gpu, dout);
            free(a), free(b), free(want);
        }
    }
    detpost_destroy(cpu);
    detpost_destroy(gpu);
}

Test(iou, cuda_batch_zero_sizes)
{
    detpost_ctx *gpu = t_ctx(DETPOST_CUDA);
    detpost_overlap_params p = detpost_overlap_params_default();
    float *db = t_alloc(gpu, 2 * 5 * 16);
    cr_assert_eq(detpost_box_overlaps(gpu, &p, NULL, 0, db, 5, 2, NULL), DETPOST_OK, "%s", detpost_last_error(gpu));
    cr_assert_eq(detpost_box_overlaps(gpu, &p, NULL, 3, NULL, 3, 0, NULL), DETPOST_OK);
    cr_assert_eq(detpost_box_overlaps(gpu, &p, NULL, 0, NULL, 5, 2, NULL), DETPOST_ERR_INVALID_ARGUMENT,
                 "b holds 10 boxes and may not be NULL");
    t_free(gpu, db);
    detpost_destroy(gpu);
}
#endif

/* ---- mask IoU ------------------------------------------------------------ */

static void random_masks(t_rng *r, uint8_t *m, int64_t n, int64_t pixels)
{
    for (int64_t i = 0; i < n; ++i) {
        const int kind = (int)(t_next(r) % 8);
        for (int64_t k = 0; k < pixels; ++k) {
            uint8_t v = (uint8_t)(t_next(r) % 3 == 0 ? 1 + t_next(r) % 255 : 0);
            if (kind == 0) v = 0;            /* an empty mask */
            if (kind == 1 && i > 0) v = m[(i - 1) * pixels + k]; /* a copy */
            m[i * pixels + k] = v;
        }
    }
}

/* The CPU reference against counts done here, mask by mask. */
Test(mask_iou, cpu_against_direct_count)
{
    detpost_ctx *cpu = t_ctx(DETPOST_CPU);
    t_rng rng = {7};
    const int64_t na = 5, nb = 4, pixels = 37;
    uint8_t a[5 * 37], b[4 * 37];
    random_masks(&rng, a, na, pixels);
    random_masks(&rng, b, nb, pixels);
    float out[20];
    cr_assert_eq(detpost_mask_iou(cpu, a, na, b, nb, pixels, out), DETPOST_OK);
    for (int64_t i = 0; i < na; ++i)
        for (int64_t j = 0; j < nb; ++j) {
            int inter = 0, uni = 0;
            for (int64_t k = 0; k < pixels; ++k) {
                const int x = a[i * pixels + k] != 0, y = b[j * pixels + k] != 0;
                inter += x & y;
                uni += x | y;
            }
            const float want = uni ? (float)inter / (float)uni : 0.0f;
            cr_assert_float_eq(out[i * nb + j], want, 0.0f, "(%lld, %lld)", (long long)i, (long long)j);
        }
    detpost_destroy(cpu);
}

Test(mask_iou, hand_cases)
{
    detpost_ctx *cpu = t_ctx(DETPOST_CPU);
    /* 2x2 images: full, left column, empty */
    const uint8_t a[3 * 4] = {1, 1, 1, 1, 1, 0, 1, 0, 0, 0, 0, 0};
    float out[9];
    cr_assert_eq(detpost_mask_iou(cpu, a, 3, a, 3, 4, out), DETPOST_OK);
    const float want[9] = {1, 0.5f, 0, 0.5f, 1, 0, 0, 0, 0};
    t_assert_close(out, want, 9, 0, 0, "full/left/empty masks");
    detpost_destroy(cpu);
}

Test(mask_iou, too_many_pixels_is_unsupported)
{
    detpost_ctx *cpu = t_ctx(DETPOST_CPU);
    uint8_t byte = 1;
    float out = -1;
    cr_assert_eq(detpost_mask_iou(cpu, &byte, 1, &byte, 1, (1LL << 24) + 1, &out), DETPOST_ERR_UNSUPPORTED);
    cr_assert(strstr(detpost_last_error(cpu), "pixels") != NULL);
    cr_assert_eq(out, -1);
    detpost_destroy(cpu);
}

#if TEST_HAS_CUDA
Test(mask_iou, cpu_vs_cuda)
{
    /* the conversion kernel takes 4096-pixel chunks of every mask: 9000 pixels cross two chunk boundaries */
    static const int64_t shapes[][3] = {{1, 1, 1}, {3, 5, 64}, {17, 9, 300}, {2, 33, 1000}, {4, 4, 0}, {5, 3, 9000}};
    detpost_ctx *cpu = t_ctx(DETPOST_CPU), *gpu = t_ctx(DETPOST_CUDA);
    t_rng rng = {99};
    for (int s = 0; s < t_schedule_count(); ++s) {
        t_set_schedule(t_schedule(s));
        for (size_t k = 0; k < sizeof shapes / sizeof shapes[0]; ++k) {
            const int64_t na = shapes[k][0], nb = shapes[k][1], pixels = shapes[k][2];
            uint8_t *a = malloc((size_t)(na * pixels) + 1), *b = malloc((size_t)(nb * pixels) + 1);
            random_masks(&rng, a, na, pixels);
            random_masks(&rng, b, nb, pixels);
            float *want = malloc((size_t)(na * nb) * sizeof(float));
            cr_assert_eq(detpost_mask_iou(cpu, a, na, b, nb, pixels, want), DETPOST_OK);
            uint8_t *da = t_up(gpu, a, (size_t)(na * pixels)), *db = t_up(gpu, b, (size_t)(nb * pixels));
            float *dout = t_alloc(gpu, (size_t)(na * nb) * sizeof(float));
            cr_assert_eq(detpost_mask_iou(gpu, da, na, db, nb, pixels, dout), DETPOST_OK, "%s", detpost_last_error(gpu));
            float *got = t_down(gpu, dout, (size_t)(na * nb) * sizeof(float));
            t_assert_close(got, want, na * nb, 0, 0, "mask IoU");
            free(got), free(want), free(a), free(b);
            t_free(gpu, da), t_free(gpu, db), t_free(gpu, dout);
        }
    }
    detpost_destroy(cpu);
    detpost_destroy(gpu);
}

/* At 2^24 pixels two counts add up past 2^24, where a float sum rounds: a
 * mask of every pixel but the first against a mask of the first two has
 * intersection 1 and union 2^24, so IoU 2^-24 exactly on both backends. */
Test(mask_iou, union_past_2_24_is_exact, .timeout = 120)
{
    const int64_t pixels = 1LL << 24;
    uint8_t *a = malloc((size_t)pixels), *b = calloc((size_t)pixels, 1);
    memset(a, 1, (size_t)pixels);
    a[0] = 0;
    b[0] = b[1] = 1;
    const float want = 1.0f / (float)(1 << 24);
    detpost_ctx *cpu = t_ctx(DETPOST_CPU), *gpu = t_ctx(DETPOST_CUDA);
    float got = -1.0f;
    cr_assert_eq(detpost_mask_iou(cpu, a, 1, b, 1, pixels, &got), DETPOST_OK, "%s", detpost_last_error(cpu));
    cr_assert_eq(got, want, "cpu: %.10g, want 2^-24", (double)got);
    uint8_t *da = t_up(gpu, a, (size_t)pixels), *db = t_up(gpu, b, (size_t)pixels);
    float *dout = t_alloc(gpu, sizeof(float));
    cr_assert_eq(detpost_mask_iou(gpu, da, 1, db, 1, pixels, dout), DETPOST_OK, "%s", detpost_last_error(gpu));
    float *back = t_down(gpu, dout, sizeof(float));
    cr_assert_eq(*back, want, "cuda: %.10g, want 2^-24", (double)*back);
    free(back), free(a), free(b);
    t_free(gpu, da), t_free(gpu, db), t_free(gpu, dout);
    detpost_destroy(cpu);
    detpost_destroy(gpu);
}

Test(mask_iou, caller_workspace)
{
    detpost_ctx *gpu = t_ctx(DETPOST_CUDA);
    const int64_t na = 3, nb = 2, pixels = 50;
    size_t need = 0;
    cr_assert_eq(detpost_mask_iou_workspace_size(gpu, na, nb, pixels, &need), DETPOST_OK);
    cr_assert_geq(need, (size_t)((na + nb) * pixels * 2));
    uint8_t a[150], b[100];
    t_rng rng = {5};
    random_masks(&rng, a, na, pixels);
    random_masks(&rng, b, nb, pixels);
    uint8_t *da = t_up(gpu, a, sizeof a), *db = t_up(gpu, b, sizeof b);
    float *dout = t_alloc(gpu, 6 * sizeof(float));
    void *small = t_alloc(gpu, need / 2);
    cr_assert_eq(detpost_set_workspace(gpu, small, need / 2), DETPOST_OK);
    cr_assert_eq(detpost_mask_iou(gpu, da, na, db, nb, pixels, dout), DETPOST_ERR_WORKSPACE_TOO_SMALL);
    cr_assert(strstr(detpost_last_error(gpu), "workspace") != NULL, "%s", detpost_last_error(gpu));
    /* a buffer of the queried size, even misaligned by one byte, is enough */
    char *big = t_alloc(gpu, need + 1);
    cr_assert_eq(detpost_set_workspace(gpu, big + 1, need), DETPOST_OK);
    cr_assert_eq(detpost_mask_iou(gpu, da, na, db, nb, pixels, dout), DETPOST_OK, "%s", detpost_last_error(gpu));
    cr_assert_eq(detpost_workspace_capacity(gpu), 0);
    cr_assert_eq(detpost_set_workspace(gpu, NULL, 0), DETPOST_OK);
    t_free(gpu, small), t_free(gpu, big), t_free(gpu, da), t_free(gpu, db), t_free(gpu, dout);
    detpost_destroy(gpu);
}
#endif

/* ---- bad input ------------------------------------------------------------ */

Test(iou, bad_input_gets_status_and_message)
{
    detpost_ctx *cpu = t_ctx(DETPOST_CPU);
    const float a[8] = {0, 0, 1, 1, 0, 0, 2, 2};
    float out[4] = {-7, -7, -7, -7};
    detpost_overlap_params p = detpost_overlap_params_default();
    cr_assert_eq(detpost_box_overlaps(NULL, &p, a, 2, a, 2, 1, out), DETPOST_ERR_INVALID_ARGUMENT);

    struct {
        const float *a, *b;
        int64_t na, nb, batch;
        float *out;
        detpost_overlap_params p;
        const char *needle;
    } bad[] = {
        {NULL, a, 2, 2, 1, out, p, "a is NULL"},
        {a, NULL, 2, 2, 1, out, p, "b is NULL"},
        {a, a, 2, 2, 1, NULL, p, "out is NULL"},
        {a, a, -1, 2, 1, out, p, "na is negative"},
        {a, a, 2, -3, 1, out, p, "nb is negative"},
        {a, a, 2, 2, -1, out, p, "batch is negative"},
        {a, a, 2, 2, 1, out, {(detpost_overlap_mode)9, 0, 0}, "mode"},
        {a, a, 2, 2, 1, out, {DETPOST_IOU, 2, 0}, "aligned"},
        {a, a, 2, 2, 1, out, {DETPOST_IOU, 0, NAN}, "offset"},
        {a, a, 2, 2, 1, out, {DETPOST_IOU, 0, 0.5f}, "offset"},
        {a, a, 2, 1, 1, out, {DETPOST_IOU, 1, 0}, "na == nb"},
        {a, a, INT64_MAX / 2, 4, 4, out, p, "overflow"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; ++i) {
        detpost_status st = detpost_box_overlaps(cpu, &bad[i].p, bad[i].a, bad[i].na, bad[i].b, bad[i].nb,
                                                 bad[i].batch, bad[i].out);
        cr_assert_eq(st, DETPOST_ERR_INVALID_ARGUMENT, "case %zu: %s", i, detpost_status_name(st));
        cr_assert(strstr(detpost_last_error(cpu), bad[i].needle) != NULL, "case %zu: message '%s' lacks '%s'", i,
                  detpost_last_error(cpu), bad[i].needle);
        for (int k = 0; k < 4; ++k) cr_assert_eq(out[k], -7.0f, "case %zu wrote its output", i);
    }
    /* a good call clears the message */
    cr_assert_eq(detpost_box_overlaps(cpu, NULL, a, 2, a, 2, 1, out), DETPOST_OK);
    cr_assert_str_empty(detpost_last_error(cpu));

    uint8_t m[4] = {1, 0, 1, 0};
    const struct {
        const uint8_t *a, *b;
        int64_t na, nb, pixels;
        float *out;
        const char *needle;
    } bad_masks[] = {
        {NULL, m, 1, 1, 4, out, "a is NULL"},        {m, NULL, 1, 1, 4, out, "b is NULL"},
        {m, m, -1, 1, 4, out, "na is negative"},     {m, m, 1, -2, 4, out, "nb is negative"},
        {m, m, 1, 1, -4, out, "pixels is negative"}, {m, m, 1, 1, 4, NULL, "out is NULL"},
    };
    for (size_t i = 0; i < sizeof bad_masks / sizeof bad_masks[0]; ++i) {
        cr_assert_eq(detpost_mask_iou(cpu, bad_masks[i].a, bad_masks[i].na, bad_masks[i].b, bad_masks[i].nb,
                                      bad_masks[i].pixels, bad_masks[i].out),
                     DETPOST_ERR_INVALID_ARGUMENT, "mask case %zu", i);
        cr_assert(strstr(detpost_last_error(cpu), bad_masks[i].needle) != NULL, "mask case %zu: '%s' lacks '%s'", i,
                  detpost_last_error(cpu), bad_masks[i].needle);
    }
    size_t bytes = 1;
    cr_assert_eq(detpost_mask_iou_workspace_size(cpu, 1, 1, 4, NULL), DETPOST_ERR_INVALID_ARGUMENT);
    cr_assert(strstr(detpost_last_error(cpu), "bytes is NULL") != NULL, "%s", detpost_last_error(cpu));
    cr_assert_eq(detpost_mask_iou_workspace_size(cpu, 1, 1, 4, &bytes), DETPOST_OK);
    cr_assert_eq(bytes, 0);
    /* sizes the op refuses, the size query refuses too */
    const int64_t big = INT32_MAX;
    cr_assert_eq(detpost_mask_iou(cpu, m, big, m, big, 4, out), DETPOST_ERR_INVALID_ARGUMENT);
    cr_assert(strstr(detpost_last_error(cpu), "overflow") != NULL, "%s", detpost_last_error(cpu));
    bytes = 1;
    cr_assert_eq(detpost_mask_iou_workspace_size(cpu, big, big, 4, &bytes), DETPOST_ERR_INVALID_ARGUMENT);
    cr_assert(strstr(detpost_last_error(cpu), "overflow") != NULL, "%s", detpost_last_error(cpu));
    cr_assert_eq(bytes, 1);
    detpost_destroy(cpu);
}

#if TEST_HAS_CUDA
/* Host memory handed to a CUDA context is refused before any kernel runs. */
Test(iou, host_pointer_on_cuda_context)
{
    detpost_ctx *gpu = t_ctx(DETPOST_CUDA);
    const float a[4] = {0, 0, 1, 1};
    float *dout = t_alloc(gpu, sizeof(float));
    cr_assert_eq(detpost_box_overlaps(gpu, NULL, a, 1, a, 1, 1, dout), DETPOST_ERR_INVALID_ARGUMENT);
    cr_assert(strstr(detpost_last_error(gpu), "not device memory") != NULL, "%s", detpost_last_error(gpu));
    t_free(gpu, dout);
    detpost_destroy(gpu);
}
#endif
