/*
 * detpost cascade: three Cascade R-CNN stages on synthetic images.
 *
 * Proposals are ground-truth boxes displaced by regression errors drawn with
 * the spread Cascade R-CNN measured at the input of its first stage
 * (sigma_x = sigma_y = 0.1234, twice that for w and h, its Fig. 2). Each
 * stage resamples them at its IoU threshold, then a simulated regressor
 * moves every proposal to within the spread the paper measured at the next
 * stage's input (0.0606, then 0.0391): the true deltas come from
 * detpost_box_encode, the prediction misses them by that spread, and
 * detpost_box_decode applies it with the stage's coder. Per stage it prints
 * the share of proposals above 0.5, 0.6 and 0.7 IoU and their histogram
 * (detpost_iou_histogram), where the shift toward higher quality shows.
 * All randomness is the tool's own, so every backend prints the same.
 */
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tool.h"

#define STAGES 3
#define BINS 20
#define BAR 20
#define IMAGE_W 1333.0f
#define IMAGE_H 800.0f

/* sigma_x of the deltas entering each stage (Cascade R-CNN, Fig. 2) */
static const float stage_sigma[STAGES] = {0.1234f, 0.0606f, 0.0391f};

typedef struct rng {
    uint64_t s;
} rng;

static double uniform(rng *r)
{
    uint64_t z = (r->s += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    z ^= z >> 31;
    return ((double)(z >> 11) + 0.5) / 9007199254740992.0;
}

static double normal(rng *r) { return sqrt(-2.0 * log(uniform(r))) * cos(6.283185307179586 * uniform(r)); }

/* Bounds of the synthetic scene's size on the command line. */
#define MAX_IMAGES 64
#define MAX_PROPOSALS 20000

typedef struct scene {
    int64_t images, objects, proposals; /* per image */
    float *gt;                          /* [images, objects, 4] */
    int32_t *labels;                    /* [images, objects] */
    float *boxes;                       /* [images, proposals, 4] */
    float *origin;                      /* [images, proposals, 4] the ground truth each proposal came from */
    float *rois;                        /* [images * proposals, 5] */
    int32_t *num_gt, *num_proposals;
    float *sizes; /* [images, 2] */
} scene;

/* The box whose deltas against g are (dx, dy, dw, dh): the inverse of
 * encoding g against it. */
static void displace(const float *g, double dx, double dy, double dw, double dh, float *p)
{
    const double gw = g[2] - g[0], gh = g[3] - g[1], gx = g[0] + gw / 2, gy = g[1] + gh / 2;
    const double pw = gw / exp(dw), ph = gh / exp(dh), px = gx - dx * pw, py = gy - dy * ph;
    p[0] = (float)(px - pw / 2), p[1] = (float)(py - ph / 2), p[2] = (float)(px + pw / 2), p[3] = (float)(py + ph / 2);
}

/* Returns 0 when memory runs out (the caller frees what was allocated). */
static int make_scene(scene *s, rng *r)
{
    const int64_t ng = s->images * s->objects, np = s->images * s->proposals;
    s->gt = malloc((size_t)ng * 16), s->labels = malloc((size_t)ng * 4);
    s->boxes = malloc((size_t)np * 16), s->origin = malloc((size_t)np * 16), s->rois = malloc((size_t)np * 20);
    s->num_gt = malloc((size_t)s->images * 4), s->num_proposals = malloc((size_t)s->images * 4);
    s->sizes = malloc((size_t)s->images * 8);
    if (!s->gt || !s->labels || !s->boxes || !s->origin || !s->rois || !s->num_gt || !s->num_proposals || !s->sizes)
        return 0;
    for (int64_t b = 0; b < s->images; ++b) {
        s->num_gt[b] = (int32_t)s->objects, s->num_proposals[b] = (int32_t)s->proposals;
        s->sizes[b * 2] = IMAGE_H, s->sizes[b * 2 + 1] = IMAGE_W;
    }
    for (int64_t i = 0; i < ng; ++i) {
        const double w = IMAGE_W * (0.05 + 0.3 * uniform(r)), h = IMAGE_H * (0.05 + 0.3 * uniform(r));
        const double x = (IMAGE_W - w) * uniform(r), y = (IMAGE_H - h) * uniform(r);
        float *g = s->gt + i * 4;
        g[0] = (float)x, g[1] = (float)y, g[2] = (float)(x + w), g[3] = (float)(y + h);
        s->labels[i] = (int32_t)(uniform(r) * 80);
    }
    const double sx = stage_sigma[0], sw = 2 * stage_sigma[0];
    for (int64_t i = 0; i < np; ++i) {
        const int64_t b = i / s->proposals;
        const float *g = s->gt + (b * s->objects + (int64_t)(uniform(r) * (double)s->objects)) * 4;
        memcpy(s->origin + i * 4, g, 16);
        displace(g, sx * normal(r), sx * normal(r), sw * normal(r), sw * normal(r), s->boxes + i * 4);
    }
    return 1;
}

static void free_scene(scene *s)
{
    free(s->gt), free(s->labels), free(s->boxes), free(s->origin), free(s->rois), free(s->num_gt);
    free(s->num_proposals), free(s->sizes);
}

/* Context buffers of the demo, in one table so that they are freed together. */
enum { D_GT, D_LABELS, D_NUM_GT, D_BOXES, D_NUM_P, D_ORIGIN, D_ROIS, D_SIZES, D_DELTAS, D_DECODED, D_HIST,
       D_S_ROIS, D_S_LABELS, D_S_TARGETS, D_S_IOU, D_S_IS_GT, D_S_NUM, D_S_POS, D_COUNT };

typedef struct stage_report {
    int64_t hist[BINS];
    double mean_pos_iou, pos_per_image, samples_per_image;
} stage_report;

static double share_from(const int64_t *hist, int first_bin)
{
    int64_t above = 0, total = 0;
    for (int k = 0; k < BINS; ++k) {
        total += hist[k];
        if (k >= first_bin) above += hist[k];
    }
    return total ? 100.0 * (double)above / (double)total : 0.0;
}

static void print_report(const scene *s, const stage_report *rep, const char *backend, uint64_t seed)
{
    printf("detpost cascade: %lld images of %.0f x %.0f, %lld objects and %lld proposals each, seed %llu, %s backend\n",
           (long long)s->images, IMAGE_W, IMAGE_H, (long long)s->objects, (long long)s->proposals,
           (unsigned long long)seed, backend);
    printf("proposals enter stage 1 with deltas of spread sigma_x = sigma_y = %.4f (sigma_w = sigma_h twice that);\n"
           "each stage's regressor leaves the next one %.4f, then %.4f (Cascade R-CNN, Fig. 2)\n\n",
           stage_sigma[0], stage_sigma[1], stage_sigma[2]);
    printf("stage  sigma_x  IoU>=0.5  IoU>=0.6  IoU>=0.7 | resampled at  rows/image  positives/image  "
           "mean IoU of positives\n");
    for (int k = 0; k < STAGES; ++k) {
        const detpost_stage_params p = detpost_stage_params_default(k);
        printf("%5d  %7.4f  %7.1f%%  %7.1f%%  %7.1f%% | %12.1f  %10.1f  %15.1f  %21.3f\n", k + 1, stage_sigma[k],
               share_from(rep[k].hist, 10), share_from(rep[k].hist, 12), share_from(rep[k].hist, 14),
               (double)p.pos_iou, rep[k].samples_per_image, rep[k].pos_per_image, rep[k].mean_pos_iou);
    }
    int64_t peak = 1;
    for (int k = 0; k < STAGES; ++k)
        for (int b = 0; b < BINS; ++b) peak = rep[k].hist[b] > peak ? rep[k].hist[b] : peak;
    printf("\nbest IoU of each proposal with the ground truth (detpost_iou_histogram, %d bins)\n", BINS);
    printf("%-11s", "IoU");
    for (int k = 0; k < STAGES; ++k) printf("| stage %d%*s", k + 1, BAR - 1, "");
    printf("\n");
    for (int b = 0; b < BINS; ++b) {
        printf("%.2f-%.2f  ", (double)b / BINS, (double)(b + 1) / BINS);
        for (int k = 0; k < STAGES; ++k) {
            const int len = (int)((rep[k].hist[b] * BAR + peak - 1) / peak);
            printf("|%.*s%*s %5lld ", len, "####################", BAR - len, "", (long long)rep[k].hist[b]);
        }
        printf("\n");
    }
}

/* Runs the three stages on the context; fills one report per stage. */
static int run_stages(detpost_ctx *ctx, scene *s, uint64_t seed, rng *r, stage_report *rep)
{
    const int64_t np = s->images * s->proposals, ng = s->images * s->objects;
    const int32_t samples = detpost_stage_params_default(0).num_samples;
    const int64_t rows = s->images * samples;
    const size_t bytes[D_COUNT] = {
        [D_GT] = (size_t)ng * 16,          [D_LABELS] = (size_t)ng * 4,          [D_NUM_GT] = (size_t)s->images * 4,
        [D_BOXES] = (size_t)np * 16,       [D_NUM_P] = (size_t)s->images * 4,    [D_ORIGIN] = (size_t)np * 16,
        [D_ROIS] = (size_t)np * 20,        [D_SIZES] = (size_t)s->images * 8,    [D_DELTAS] = (size_t)np * 16,
        [D_DECODED] = (size_t)np * 20,     [D_HIST] = BINS * 8,                  [D_S_ROIS] = (size_t)rows * 20,
        [D_S_LABELS] = (size_t)rows * 4,   [D_S_TARGETS] = (size_t)rows * 16,    [D_S_IOU] = (size_t)rows * 4,
        [D_S_IS_GT] = (size_t)rows,        [D_S_NUM] = (size_t)s->images * 4,    [D_S_POS] = (size_t)s->images * 4};
    void *d[D_COUNT] = {0};
    float *deltas = malloc((size_t)np * 16), *decoded = malloc((size_t)np * 20), *iou = malloc((size_t)rows * 4);
    int32_t *num = malloc((size_t)s->images * 4), *pos = malloc((size_t)s->images * 4);
    int rc = TOOL_EXIT_FAIL;
    detpost_status st = DETPOST_OK;
    if (!deltas || !decoded || !iou || !num || !pos) {
        rc = tool_fail(DETPOST_ERR_OUT_OF_MEMORY, "out of host memory for the stages' results");
        goto done;
    }
    for (int k = 0; k < D_COUNT; ++k)
        if ((st = detpost_alloc(ctx, &d[k], bytes[k])) != DETPOST_OK) goto failed;
    const void *inputs[][2] = {{s->gt, d[D_GT]},       {s->labels, d[D_LABELS]}, {s->num_gt, d[D_NUM_GT]},
                               {s->num_proposals, d[D_NUM_P]}, {s->origin, d[D_ORIGIN]}, {s->sizes, d[D_SIZES]}};
    const int ids[] = {D_GT, D_LABELS, D_NUM_GT, D_NUM_P, D_ORIGIN, D_SIZES};
    for (int k = 0; k < 6; ++k)
        if ((st = detpost_to_ctx(ctx, d[ids[k]], inputs[k][0], bytes[ids[k]])) != DETPOST_OK) goto failed;

    detpost_box_coder raw = detpost_box_coder_default(); /* deltas in plain units */
    for (int k = 0; k < 4; ++k) raw.stds[k] = 1.0f;
    for (int stage = 0; stage < STAGES; ++stage) {
        for (int64_t i = 0; i < np; ++i) {
            s->rois[i * 5] = (float)(i / s->proposals);
            memcpy(s->rois + i * 5 + 1, s->boxes + i * 4, 16);
        }
        if ((st = detpost_to_ctx(ctx, d[D_BOXES], s->boxes, bytes[D_BOXES])) ||
            (st = detpost_to_ctx(ctx, d[D_ROIS], s->rois, bytes[D_ROIS])))
            goto failed;
        detpost_stage_params p = detpost_stage_params_default(stage);
        p.seed = seed;
        if ((st = detpost_iou_histogram(ctx, s->images, d[D_BOXES], d[D_NUM_P], s->proposals, d[D_GT], d[D_NUM_GT],
                                        s->objects, BINS, d[D_HIST])) ||
            (st = detpost_cascade_resample(ctx, &p, s->images, d[D_BOXES], d[D_NUM_P], s->proposals, d[D_GT],
                                           d[D_LABELS], d[D_NUM_GT], s->objects, d[D_S_ROIS], d[D_S_LABELS],
                                           d[D_S_TARGETS], d[D_S_IOU], d[D_S_IS_GT], d[D_S_NUM], d[D_S_POS])) ||
            (st = detpost_to_host(ctx, rep[stage].hist, d[D_HIST], bytes[D_HIST])) ||
            (st = detpost_to_host(ctx, iou, d[D_S_IOU], bytes[D_S_IOU])) ||
            (st = detpost_to_host(ctx, num, d[D_S_NUM], bytes[D_S_NUM])) ||
            (st = detpost_to_host(ctx, pos, d[D_S_POS], bytes[D_S_POS])))
            goto failed;
        double iou_sum = 0, pos_total = 0, num_total = 0;
        for (int64_t b = 0; b < s->images; ++b) {
            for (int32_t j = 0; j < pos[b]; ++j) iou_sum += iou[b * samples + j];
            pos_total += pos[b], num_total += num[b];
        }
        rep[stage].mean_pos_iou = pos_total ? iou_sum / pos_total : 0;
        rep[stage].pos_per_image = pos_total / (double)s->images;
        rep[stage].samples_per_image = num_total / (double)s->images;
        if (stage + 1 == STAGES) break;

        /* the regressor: the true deltas, missed by the next stage's spread, in the stage's units */
        if ((st = detpost_box_encode(ctx, &raw, d[D_BOXES], d[D_ORIGIN], np, d[D_DELTAS])) ||
            (st = detpost_to_host(ctx, deltas, d[D_DELTAS], bytes[D_DELTAS])))
            goto failed;
        const double miss = stage_sigma[stage + 1];
        for (int64_t i = 0; i < np * 4; ++i) {
            const int c = (int)(i % 4);
            const double predicted = deltas[i] - (c < 2 ? miss : 2 * miss) * normal(r);
            deltas[i] = (float)((predicted - p.coder.means[c]) / p.coder.stds[c]);
        }
        if ((st = detpost_to_ctx(ctx, d[D_DELTAS], deltas, bytes[D_DELTAS])) ||
            (st = detpost_box_decode(ctx, &p.coder, d[D_ROIS], d[D_DELTAS], np, 1, NULL, d[D_SIZES], s->images,
                                     d[D_DECODED])) ||
            (st = detpost_to_host(ctx, decoded, d[D_DECODED], bytes[D_DECODED])))
            goto failed;
        for (int64_t i = 0; i < np; ++i) memcpy(s->boxes + i * 4, decoded + i * 5 + 1, 16);
    }
    rc = 0;
    goto done;
failed:
    rc = tool_fail_ctx(st, ctx);
done:
    for (int k = 0; k < D_COUNT; ++k) detpost_free(ctx, d[k]);
    free(deltas), free(decoded), free(iou), free(num), free(pos);
    return rc;
}

static int cascade_usage(void)
{
    fprintf(stderr, "usage: detpost cascade [--backend cpu|cuda] [--seed N] [--images 1-%d] [--proposals 1-%d]\n",
            MAX_IMAGES, MAX_PROPOSALS);
    return TOOL_EXIT_USAGE;
}

int cmd_cascade(int argc, char **argv)
{
    detpost_backend backend = DETPOST_CPU;
    uint64_t seed = 1;
    scene s = {4, 10, 500, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL};
    for (int i = 1; i < argc; ++i) {
        const char *arg = argv[i];
        if (strcmp(arg, "--backend") != 0 && strcmp(arg, "--seed") != 0 && strcmp(arg, "--images") != 0 &&
            strcmp(arg, "--proposals") != 0) {
            fprintf(stderr, "detpost cascade: unknown option '%s'\n", arg);
            return cascade_usage();
        }
        if (i + 1 == argc) {
            fprintf(stderr, "detpost cascade: %s needs a value\n", arg);
            return cascade_usage();
        }
        const char *val = argv[++i];
        long long k;
        if (strcmp(arg, "--backend") == 0) {
            if (!tool_backend(val, &backend)) {
                fprintf(stderr, "detpost cascade: --backend must be cpu or cuda, not '%s'\n", val);
                return cascade_usage();
            }
        } else if (strcmp(arg, "--seed") == 0) {
            if (!tool_parse_int(val, 0, LLONG_MAX, &k)) {
                fprintf(stderr, "detpost cascade: --seed must be an integer from 0 to %lld, not '%s'\n", LLONG_MAX,
                        val);
                return cascade_usage();
            }
            seed = (uint64_t)k;
        } else if (strcmp(arg, "--images") == 0) {
            if (!tool_parse_int(val, 1, MAX_IMAGES, &k)) {
                fprintf(stderr, "detpost cascade: --images must be an integer from 1 to %d, not '%s'\n", MAX_IMAGES,
                        val);
                return cascade_usage();
            }
            s.images = k;
        } else {
            if (!tool_parse_int(val, 1, MAX_PROPOSALS, &k)) {
                fprintf(stderr, "detpost cascade: --proposals must be an integer from 1 to %d, not '%s'\n",
                        MAX_PROPOSALS, val);
                return cascade_usage();
            }
            s.proposals = k;
        }
    }
    rng r = {seed};
    if (!make_scene(&s, &r)) {
        free_scene(&s);
        return tool_fail(DETPOST_ERR_OUT_OF_MEMORY, "out of host memory for the synthetic images");
    }
    stage_report rep[STAGES];
    memset(rep, 0, sizeof rep);
    detpost_ctx *ctx = tool_open(backend);
    int rc = ctx ? run_stages(ctx, &s, seed, &r, rep) : TOOL_EXIT_FAIL;
    if (rc == 0) {
        print_report(&s, rep, backend == DETPOST_CPU ? "cpu" : "cuda", seed);
        rc = tool_finish_output(stdout, NULL);
    }
    detpost_destroy(ctx);
    free_scene(&s);
    return rc;
}
