/* Benchmark cases: box decode and encode, cascade resampling (with and
 * without low-quality matching) and refine, at detector-like shapes. */
#include <stdlib.h>
#include <string.h>

#include "bench.h"

#define IMAGE_W 1333.0f
#define IMAGE_H 800.0f

/* Ground truth spread over the image and proposals jittered around it (a
 * fifth anywhere), as a region proposal network would hand them over. */
static void scene(uint64_t seed, int64_t batch, int64_t num_gt, int64_t num_proposals, float *gt, int32_t *labels,
                  float *proposals)
{
    uint64_t s = seed;
    for (int64_t i = 0; i < batch * num_gt; ++i) {
        const float w = IMAGE_W * (0.03f + 0.3f * bench_uniform(&s)), h = IMAGE_H * (0.03f + 0.3f * bench_uniform(&s));
        const float x = (IMAGE_W - w) * bench_uniform(&s), y = (IMAGE_H - h) * bench_uniform(&s);
        const float box[4] = {x, y, x + w, y + h};
        memcpy(gt + i * 4, box, sizeof box);
        labels[i] = (int32_t)(bench_uniform(&s) * 80.0f);
    }
    for (int64_t b = 0; b < batch; ++b)
        for (int64_t i = 0; i < num_proposals; ++i) {
            float *p = proposals + (b * num_proposals + i) * 4;
            if (bench_uniform(&s) < 0.2f) {
                bench_boxes(seed + (uint64_t)(b * num_proposals + i), p, 1, IMAGE_W, IMAGE_H);
                continue;
            }
            const float *g = gt + (b * num_gt + (int64_t)(bench_uniform(&s) * (float)num_gt) % num_gt) * 4;
            const float w = g[2] - g[0], h = g[3] - g[1], j = 0.3f * bench_uniform(&s);
            p[0] = g[0] + w * j * (bench_uniform(&s) * 2 - 1);
            p[1] = g[1] + h * j * (bench_uniform(&s) * 2 - 1);
            p[2] = g[2] + w * j * (bench_uniform(&s) * 2 - 1);
            p[3] = g[3] + h * j * (bench_uniform(&s) * 2 - 1);
        }
}

/* ---- decode / encode ------------------------------------------------------- */

typedef struct coding_state {
    float *rois, *boxes, *deltas, *sizes, *out;
    int64_t n, images;
    detpost_box_coder coder;
} coding_state;

static void coding_free(detpost_ctx *ctx, coding_state *s)
{
    detpost_free(ctx, s->rois), detpost_free(ctx, s->boxes), detpost_free(ctx, s->deltas);
    detpost_free(ctx, s->sizes), detpost_free(ctx, s->out);
    free(s);
}

static void *coding_setup(detpost_ctx *ctx, const bench_case *c)
{
    coding_state *s = calloc(1, sizeof *s);
    s->n = c->arg[0];
    s->images = 16;
    s->coder = detpost_box_coder_default();
    float *boxes = malloc((size_t)s->n * 16), *rois = malloc((size_t)s->n * 20), *deltas = malloc((size_t)s->n * 16);
    float sizes[32];
    bench_boxes(3, boxes, s->n, IMAGE_W, IMAGE_H);
    uint64_t seed = 5;
    for (int64_t i = 0; i < s->n; ++i) {
        rois[i * 5] = (float)(i % s->images);
        memcpy(rois + i * 5 + 1, boxes + i * 4, 16);
        for (int k = 0; k < 4; ++k) deltas[i * 4 + k] = 4.0f * bench_uniform(&seed) - 2.0f;
    }
    for (int b = 0; b < 16; ++b) sizes[b * 2] = IMAGE_H, sizes[b * 2 + 1] = IMAGE_W;
    s->rois = bench_upload(ctx, rois, (size_t)s->n * 20);
    s->boxes = bench_upload(ctx, boxes, (size_t)s->n * 16);
    s->deltas = bench_upload(ctx, deltas, (size_t)s->n * 16);
    s->sizes = bench_upload(ctx, sizes, sizeof sizes);
    s->out = bench_alloc(ctx, (size_t)s->n * 20);
    free(boxes), free(rois), free(deltas);
    if (!s->rois || !s->boxes || !s->deltas || !s->sizes || !s->out) {
        coding_free(ctx, s);
        return NULL;
    }
    return s;
}

static detpost_status decode_run(detpost_ctx *ctx, void *state)
{
    coding_state *s = state;
    return detpost_box_decode(ctx, &s->coder, s->rois, s->deltas, s->n, 1, NULL, s->sizes, s->images, s->out);
}

static detpost_status encode_run(detpost_ctx *ctx, void *state)
{
    coding_state *s = state;
    return detpost_box_encode(ctx, &s->coder, s->boxes, s->boxes, s->n, s->out);
}

static void coding_teardown(detpost_ctx *ctx, void *state) { coding_free(ctx, state); }

/* ---- resample and refine --------------------------------------------------- */

typedef struct resample_state {
    detpost_stage_params p;
    int64_t batch, max_p, max_g, rows;
    float *proposals, *gt, *rois, *targets, *max_iou, *deltas, *next, *sizes;
    int32_t *gt_labels, *num_p, *num_g, *labels, *num_samples, *num_pos;
    uint8_t *is_gt;
    int64_t *num_next;
} resample_state;

static void resample_free(detpost_ctx *ctx, resample_state *s)
{
    void *bufs[] = {s->proposals, s->gt,        s->rois,  s->targets,   s->max_iou,     s->deltas,
                    s->next,      s->sizes,     s->gt_labels, s->num_p, s->num_g,       s->labels,
                    s->num_samples, s->num_pos, s->is_gt, s->num_next};
    for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; ++i) detpost_free(ctx, bufs[i]);
    free(s);
}

static void *resample_setup(detpost_ctx *ctx, const bench_case *c)
{
    resample_state *s = calloc(1, sizeof *s);
    s->batch = c->arg[0], s->max_p = c->arg[1], s->max_g = c->arg[2];
    s->p = detpost_stage_params_default(0);
    s->p.match_low_quality = (int32_t)c->arg[3];
    s->rows = s->batch * s->p.num_samples;
    float *gt = malloc((size_t)(s->batch * s->max_g) * 16), *props = malloc((size_t)(s->batch * s->max_p) * 16);
    int32_t *labels = malloc((size_t)(s->batch * s->max_g) * 4), *np = malloc((size_t)s->batch * 4);
    int32_t *ng = malloc((size_t)s->batch * 4);
    float *sizes = malloc((size_t)s->batch * 8), *deltas = malloc((size_t)s->rows * 16);
    scene(7, s->batch, s->max_g, s->max_p, gt, labels, props);
    uint64_t seed = 9;
    for (int64_t b = 0; b < s->batch; ++b) np[b] = (int32_t)s->max_p, ng[b] = (int32_t)s->max_g;
    for (int64_t b = 0; b < s->batch; ++b) sizes[b * 2] = IMAGE_H, sizes[b * 2 + 1] = IMAGE_W;
    for (int64_t i = 0; i < s->rows * 4; ++i) deltas[i] = bench_uniform(&seed) - 0.5f;
    s->proposals = bench_upload(ctx, props, (size_t)(s->batch * s->max_p) * 16);
    s->gt = bench_upload(ctx, gt, (size_t)(s->batch * s->max_g) * 16);
    s->gt_labels = bench_upload(ctx, labels, (size_t)(s->batch * s->max_g) * 4);
    s->num_p = bench_upload(ctx, np, (size_t)s->batch * 4);
    s->num_g = bench_upload(ctx, ng, (size_t)s->batch * 4);
    s->sizes = bench_upload(ctx, sizes, (size_t)s->batch * 8);
    s->deltas = bench_upload(ctx, deltas, (size_t)s->rows * 16);
    s->rois = bench_alloc(ctx, (size_t)s->rows * 20);
    s->next = bench_alloc(ctx, (size_t)s->rows * 20);
    s->targets = bench_alloc(ctx, (size_t)s->rows * 16);
    s->max_iou = bench_alloc(ctx, (size_t)s->rows * 4);
    s->labels = bench_alloc(ctx, (size_t)s->rows * 4);
    s->is_gt = bench_alloc(ctx, (size_t)s->rows);
    s->num_samples = bench_alloc(ctx, (size_t)s->batch * 4);
    s->num_pos = bench_alloc(ctx, (size_t)s->batch * 4);
    s->num_next = bench_alloc(ctx, 8);
    free(gt), free(props), free(labels), free(np), free(ng), free(sizes), free(deltas);
    if (!s->proposals || !s->gt || !s->gt_labels || !s->num_p || !s->num_g || !s->sizes || !s->deltas || !s->rois ||
        !s->next || !s->targets || !s->max_iou || !s->labels || !s->is_gt || !s->num_samples || !s->num_pos ||
        !s->num_next) {
        resample_free(ctx, s);
        return NULL;
    }
    return s;
}

static detpost_status resample_run(detpost_ctx *ctx, void *state)
{
    resample_state *s = state;
    return detpost_cascade_resample(ctx, &s->p, s->batch, s->proposals, s->num_p, s->max_p, s->gt, s->gt_labels,
                                    s->num_g, s->max_g, s->rois, s->labels, s->targets, s->max_iou, s->is_gt,
                                    s->num_samples, s->num_pos);
}

/* Refine of a resampled batch: its rois are made once, outside the timing. */
static void *refine_setup(detpost_ctx *ctx, const bench_case *c)
{
    resample_state *s = resample_setup(ctx, c);
    if (s && (resample_run(ctx, s) != DETPOST_OK || detpost_synchronize(ctx) != DETPOST_OK)) {
        resample_free(ctx, s);
        return NULL;
    }
    return s;
}

static detpost_status refine_run(detpost_ctx *ctx, void *state)
{
    resample_state *s = state;
    return detpost_cascade_refine(ctx, &s->p.coder, DETPOST_REFINE_MMDET, s->rois, s->deltas, s->rows, 1, NULL,
                                  s->is_gt, s->max_iou, s->sizes, s->batch, s->next, s->num_next);
}

static void resample_teardown(detpost_ctx *ctx, void *state) { resample_free(ctx, state); }

static const bench_case cascade_cases[] = {
    {"box_decode", "100000", coding_setup, decode_run, coding_teardown, {100000}, 20},
    {"box_encode", "100000", coding_setup, encode_run, coding_teardown, {100000}, 20},
    {"cascade_resample", "B16xP2000xG100", resample_setup, resample_run, resample_teardown, {16, 2000, 100, 0}, 10},
    {"cascade_resample_lowq", "B16xP2000xG100", resample_setup, resample_run, resample_teardown, {16, 2000, 100, 1},
     10},
    {"cascade_refine", "B16xS512", refine_setup, refine_run, resample_teardown, {16, 2000, 100, 0}, 20},
};
BENCH_REGISTER(cascade_cases)
