/* Benchmark cases: box overlaps (pairwise IoU, GIoU) and mask IoU. */
#include <stdlib.h>

#include "bench.h"

typedef struct overlaps_state {
    float *a, *b, *out;
    int64_t na, nb;
    detpost_overlap_params p;
} overlaps_state;

static void *overlaps_setup(detpost_ctx *ctx, const bench_case *c)
{
    overlaps_state *s = calloc(1, sizeof *s);
    s->na = c->arg[0];
    s->nb = c->arg[1];
    s->p = detpost_overlap_params_default();
    s->p.mode = (detpost_overlap_mode)c->arg[2];
    float *ha = malloc((size_t)s->na * 16), *hb = malloc((size_t)s->nb * 16);
    bench_boxes(1, ha, s->na, 1333, 800);
    bench_boxes(2, hb, s->nb, 1333, 800);
    s->a = bench_upload(ctx, ha, (size_t)s->na * 16);
    s->b = bench_upload(ctx, hb, (size_t)s->nb * 16);
    s->out = bench_alloc(ctx, (size_t)(s->na * s->nb) * sizeof(float));
    free(ha), free(hb);
    if (!s->a || !s->b || !s->out) {
        detpost_free(ctx, s->a), detpost_free(ctx, s->b), detpost_free(ctx, s->out);
        free(s);
        return NULL;
    }
    return s;
}

static detpost_status overlaps_run(detpost_ctx *ctx, void *state)
{
    overlaps_state *s = state;
    return detpost_box_overlaps(ctx, &s->p, s->a, s->na, s->b, s->nb, 1, s->out);
}

static void overlaps_teardown(detpost_ctx *ctx, void *state)
{
    overlaps_state *s = state;
    detpost_free(ctx, s->a), detpost_free(ctx, s->b), detpost_free(ctx, s->out);
    free(s);
}

typedef struct mask_state {
    uint8_t *a, *b;
    float *out;
    int64_t na, nb, pixels;
} mask_state;

static void *mask_setup(detpost_ctx *ctx, const bench_case *c)
{
    mask_state *s = calloc(1, sizeof *s);
    s->na = c->arg[0], s->nb = c->arg[1], s->pixels = c->arg[2];
    uint64_t seed = 11;
    uint8_t *h = malloc((size_t)((s->na + s->nb) * s->pixels));
    for (int64_t i = 0; i < (s->na + s->nb) * s->pixels; ++i) h[i] = bench_uniform(&seed) < 0.3f;
    s->a = bench_upload(ctx, h, (size_t)(s->na * s->pixels));
    s->b = bench_upload(ctx, h + s->na * s->pixels, (size_t)(s->nb * s->pixels));
    s->out = bench_alloc(ctx, (size_t)(s->na * s->nb) * sizeof(float));
    free(h);
    if (!s->a || !s->b || !s->out) {
        detpost_free(ctx, s->a), detpost_free(ctx, s->b), detpost_free(ctx, s->out);
        free(s);
        return NULL;
    }
    return s;
}

static detpost_status mask_run(detpost_ctx *ctx, void *state)
{
    mask_state *s = state;
    return detpost_mask_iou(ctx, s->a, s->na, s->b, s->nb, s->pixels, s->out);
}

static void mask_teardown(detpost_ctx *ctx, void *state)
{
    mask_state *s = state;
    detpost_free(ctx, s->a), detpost_free(ctx, s->b), detpost_free(ctx, s->out);
    free(s);
}

static const bench_case iou_cases[] = {
    {"box_overlaps_iou", "1000x1000", overlaps_setup, overlaps_run, overlaps_teardown, {1000, 1000, DETPOST_IOU}, 20},
    {"box_overlaps_iou", "4000x4000", overlaps_setup, overlaps_run, overlaps_teardown, {4000, 4000, DETPOST_IOU}, 5},
    {"box_overlaps_iou", "10000x10000", overlaps_setup, overlaps_run, overlaps_teardown, {10000, 10000, DETPOST_IOU}, 3},
    {"box_overlaps_giou", "4000x4000", overlaps_setup, overlaps_run, overlaps_teardown, {4000, 4000, DETPOST_GIOU}, 5},
    {"mask_iou", "100x100@256x256", mask_setup, mask_run, mask_teardown, {100, 100, 256 * 256}, 3},
    {"mask_iou", "300x300@112x112", mask_setup, mask_run, mask_teardown, {300, 300, 112 * 112}, 3},
};
BENCH_REGISTER(iou_cases)
