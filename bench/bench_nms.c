/* Benchmark cases: single-class NMS (hard, gaussian soft-NMS) and batched
 * multi-class NMS at a YOLO-style head shape. */
#include <stdlib.h>

#include "bench.h"

typedef struct nms_state {
    float *boxes, *scores, *keep_scores;
    int64_t *keep, *num_keep;
    int64_t n;
    detpost_nms_params p;
} nms_state;

static void nms_teardown(detpost_ctx *ctx, void *state)
{
    nms_state *s = state;
    detpost_free(ctx, s->boxes), detpost_free(ctx, s->scores), detpost_free(ctx, s->keep_scores);
    detpost_free(ctx, s->keep), detpost_free(ctx, s->num_keep);
    free(s);
}

/* arg: n, method */
static void *nms_setup(detpost_ctx *ctx, const bench_case *c)
{
    nms_state *s = calloc(1, sizeof *s);
    s->n = c->arg[0];
    s->p = detpost_nms_params_default();
    s->p.method = (detpost_nms_method)c->arg[1];
    float *hb = malloc((size_t)s->n * 16), *hs = malloc((size_t)s->n * 4);
    bench_boxes(3, hb, s->n, 1333, 800);
    uint64_t seed = 17;
    for (int64_t i = 0; i < s->n; ++i) hs[i] = bench_uniform(&seed);
    s->boxes = bench_upload(ctx, hb, (size_t)s->n * 16);
    s->scores = bench_upload(ctx, hs, (size_t)s->n * 4);
    s->keep = bench_alloc(ctx, (size_t)s->n * 8);
    s->keep_scores = bench_alloc(ctx, (size_t)s->n * 4);
    s->num_keep = bench_alloc(ctx, 8);
    free(hb), free(hs);
    if (!s->boxes || !s->scores || !s->keep || !s->keep_scores || !s->num_keep) {
        nms_teardown(ctx, s);
        return NULL;
    }
    return s;
}

static detpost_status nms_run(detpost_ctx *ctx, void *state)
{
    nms_state *s = state;
    return detpost_nms(ctx, &s->p, s->boxes, s->scores, s->n, s->keep, s->keep_scores, s->num_keep);
}

typedef struct batched_state {
    float *boxes, *scores, *det_boxes, *det_scores;
    int32_t *num_dets, *det_classes, *det_indices;
    int64_t batch, num_boxes, num_classes;
    detpost_batched_nms_params p;
} batched_state;

static void batched_teardown(detpost_ctx *ctx, void *state)
{
    batched_state *s = state;
    detpost_free(ctx, s->boxes), detpost_free(ctx, s->scores), detpost_free(ctx, s->det_boxes);
    detpost_free(ctx, s->det_scores), detpost_free(ctx, s->num_dets), detpost_free(ctx, s->det_classes);
    detpost_free(ctx, s->det_indices);
    free(s);
}

/* arg: batch, boxes, classes, score threshold in thousandths. Scores look
 * like a YOLO head's sigmoid outputs: each box has one likely class with a
 * score spread over [0, 1) and small scores (below 0.01) for the others. */
static void *batched_setup(detpost_ctx *ctx, const bench_case *c)
{
    batched_state *s = calloc(1, sizeof *s);
    s->batch = c->arg[0], s->num_boxes = c->arg[1], s->num_classes = c->arg[2];
    s->p = detpost_batched_nms_params_default();
    s->p.nms.score_threshold = (float)c->arg[3] / 1000.0f;
    s->p.nms.iou_threshold = 0.45f;
    s->p.max_per_image = 300;
    const int64_t B = s->batch, N = s->num_boxes, C = s->num_classes, K = s->p.max_per_image;
    float *hb = malloc((size_t)(B * N) * 16), *hs = malloc((size_t)(B * N * C) * 4);
    uint64_t seed = 23;
    for (int64_t b = 0; b < B; ++b) {
        bench_boxes(100 + (uint64_t)b, hb + b * N * 4, N, 640, 640);
        for (int64_t i = 0; i < N; ++i) {
            const int64_t likely = (int64_t)(bench_uniform(&seed) * (float)C);
            for (int64_t k = 0; k < C; ++k) {
                const float u = bench_uniform(&seed);
                hs[(b * N + i) * C + k] = k == likely ? u : 0.01f * u;
            }
        }
    }
    s->boxes = bench_upload(ctx, hb, (size_t)(B * N) * 16);
    s->scores = bench_upload(ctx, hs, (size_t)(B * N * C) * 4);
    s->num_dets = bench_alloc(ctx, (size_t)B * 4);
    s->det_boxes = bench_alloc(ctx, (size_t)(B * K) * 16);
    s->det_scores = bench_alloc(ctx, (size_t)(B * K) * 4);
    s->det_classes = bench_alloc(ctx, (size_t)(B * K) * 4);
    s->det_indices = bench_alloc(ctx, (size_t)(B * K) * 4);
    free(hb), free(hs);
    if (!s->boxes || !s->scores || !s->num_dets || !s->det_boxes || !s->det_scores || !s->det_classes ||
        !s->det_indices) {
        batched_teardown(ctx, s);
        return NULL;
    }
    return s;
}

static detpost_status batched_run(detpost_ctx *ctx, void *state)
{
    batched_state *s = state;
    return detpost_batched_nms(ctx, &s->p, s->boxes, s->scores, s->batch, s->num_boxes, s->num_classes,
                               s->num_dets, s->det_boxes, s->det_scores, s->det_classes, s->det_indices);
}

static const bench_case nms_cases[] = {
    {"nms_hard", "1000", nms_setup, nms_run, nms_teardown, {1000, DETPOST_NMS_HARD}, 50},
    {"nms_hard", "10000", nms_setup, nms_run, nms_teardown, {10000, DETPOST_NMS_HARD}, 10},
    {"nms_hard", "100000", nms_setup, nms_run, nms_teardown, {100000, DETPOST_NMS_HARD}, 1},
    {"nms_gaussian", "1000", nms_setup, nms_run, nms_teardown, {1000, DETPOST_NMS_GAUSSIAN}, 20},
    {"nms_gaussian", "10000", nms_setup, nms_run, nms_teardown, {10000, DETPOST_NMS_GAUSSIAN}, 3},
    {"batched_nms", "16x8400x80@0.25", batched_setup, batched_run, batched_teardown, {16, 8400, 80, 250}, 1},
    {"batched_nms", "16x8400x80@0.001", batched_setup, batched_run, batched_teardown, {16, 8400, 80, 1}, 1},
};
BENCH_REGISTER(nms_cases)
