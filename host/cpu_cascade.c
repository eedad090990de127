/*
 * CPU reference of box coding and cascade resampling. Resampling follows
 * the definition step by step: the full IoU table of each image, the
 * assignment rules, then a sort of the (key, candidate) pairs of each class
 * to take the smallest keys; the kernels reach the same subset by a radix
 * select, so the two check each other.
 */
#include <stdlib.h>
#include <string.h>

#include "box_coder.h"
#include "cascade.h"
#include "cascade_math.h"

void cpu_box_encode(const detpost_box_coder *coder, const float *proposals, const float *targets, int64_t n,
                    float *deltas)
{
    for (int64_t i = 0; i < n; ++i) dp_box_encode(coder, proposals + i * 4, targets + i * 4, deltas + i * 4);
}

static const float *row_deltas(const dp_decode_args *a, int64_t i)
{
    return dp_row_deltas(a->deltas, a->labels, a->num_classes, i);
}

void cpu_box_decode(const detpost_box_coder *coder, const dp_decode_args *a, float *out)
{
    for (int64_t i = 0; i < a->n; ++i)
        dp_decode_row(coder, a->rois + i * 5, row_deltas(a, i), a->image_sizes, a->num_images, out + i * 5);
}

void cpu_cascade_refine(const detpost_box_coder *coder, detpost_refine_policy policy, const dp_decode_args *a,
                        const uint8_t *is_gt, const float *gt_iou, float *next_rois, int64_t *num_next)
{
    int64_t kept = 0;
    for (int64_t i = 0; i < a->n; ++i) {
        float row[5];
        dp_decode_row(coder, a->rois + i * 5, row_deltas(a, i), a->image_sizes, a->num_images, row);
        if (dp_refine_keep(policy, row, coder->offset, is_gt ? is_gt[i] : 0, gt_iou ? gt_iou[i] : 0.0f))
            memcpy(next_rois + 5 * kept++, row, sizeof row);
    }
    for (int64_t i = kept; i < a->n; ++i) {
        float *r = next_rois + i * 5;
        r[0] = -1.0f;
        r[1] = r[2] = r[3] = r[4] = 0.0f;
    }
    *num_next = kept;
}

/* Best IoU of a box with the first `num_gt` ground-truth boxes (ties: the
 * lower index); 0 and -1 without ground truth. gt_max, when given, keeps
 * each ground truth's best IoU over the boxes seen. */
static float best_overlap(const float *box, const float *gt, int32_t num_gt, float offset, int32_t *best_gt,
                          float *gt_max)
{
    float best = -1.0f;
    *best_gt = -1;
    for (int32_t g = 0; g < num_gt; ++g) {
        const float *t = gt + (int64_t)g * 4;
        const float iou = dp_overlap(box[0], box[1], box[2], box[3], t[0], t[1], t[2], t[3], DP_MODE_IOU, offset);
        if (iou > best) {
            best = iou;
            *best_gt = g;
        }
        if (gt_max && iou > gt_max[g]) gt_max[g] = iou;
    }
    return num_gt > 0 ? best : 0.0f;
}

void cpu_iou_histogram(int64_t batch, const float *proposals, const int32_t *num_proposals, int64_t max_proposals,
                       const float *gt_boxes, const int32_t *num_gt, int64_t max_gt, int32_t num_bins,
                       int64_t *counts)
{
    memset(counts, 0, (size_t)num_bins * sizeof *counts);
    for (int64_t b = 0; b < batch; ++b)
        for (int32_t i = 0; i < num_proposals[b]; ++i) {
            int32_t g;
            const float iou = best_overlap(proposals + (b * max_proposals + i) * 4, gt_boxes + b * max_gt * 4,
                                           num_gt[b], 0.0f, &g, NULL);
            const int32_t bin = (int32_t)DP_MUL(iou, (float)num_bins);
            counts[bin < num_bins ? bin : num_bins - 1]++;
        }
}

/* ---- resampling --------------------------------------------------------- */

/* Scratch of one image, reused image after image. */
typedef struct cpu_resample_ws {
    float *best_iou;          /* [P] */
    int32_t *best_gt;         /* [P] */
    float *gt_max;            /* [G] each ground truth's best IoU */
    int32_t *cand_gt;         /* [G + P] matched ground truth of each candidate, -1 if none */
    uint8_t *cand_class;      /* [G + P] */
    uint8_t *chosen;          /* [G + P] */
    uint64_t *sort_keys;      /* [G + P] (key << 32 | candidate) of one class */
} cpu_resample_ws;

static size_t cpu_resample_layout(dp_carver *c, int64_t max_proposals, int64_t max_gt, cpu_resample_ws *ws)
{
    const size_t cand = (size_t)(max_proposals + max_gt);
    ws->best_iou = dp_carve(c, (size_t)max_proposals * sizeof(float));
    ws->best_gt = dp_carve(c, (size_t)max_proposals * sizeof(int32_t));
    ws->gt_max = dp_carve(c, (size_t)max_gt * sizeof(float));
    ws->cand_gt = dp_carve(c, cand * sizeof(int32_t));
    ws->cand_class = dp_carve(c, cand);
    ws->chosen = dp_carve(c, cand);
    ws->sort_keys = dp_carve(c, cand * sizeof(uint64_t));
    return c->used;
}

size_t cpu_cascade_resample_workspace(int64_t max_proposals, int64_t max_gt)
{
    dp_carver c = {NULL, 0};
    cpu_resample_ws ws;
    return cpu_resample_layout(&c, max_proposals, max_gt, &ws);
}

static int compare_u64(const void *a, const void *b)
{
    const uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return (x > y) - (x < y);
}

/* Marks in ws->chosen the `take` candidates of class `cls` with the smallest
 * (key, index). */
static void choose_smallest_keys(const detpost_stage_params *p, int64_t image, int64_t candidates, int cls,
                                 int64_t take, cpu_resample_ws *ws)
{
    int64_t n = 0;
    for (int64_t c = 0; c < candidates; ++c)
        if (ws->cand_class[c] == cls)
            ws->sort_keys[n++] = (uint64_t)dp_sample_key(p->seed, image, p->stage, c) << 32 | (uint64_t)c;
    if (n > 1) qsort(ws->sort_keys, (size_t)n, sizeof(uint64_t), compare_u64); /* with no slots, sort_keys is NULL */
    for (int64_t k = 0; k < take && k < n; ++k) ws->chosen[ws->sort_keys[k] & 0xffffffffu] = 1;
}

/* Writes one output row of image b: candidate c (a ground-truth box when
 * c < gt_rows) with its class and matched ground truth. */
static void write_row(const detpost_stage_params *p, const dp_resample_args *a, const cpu_resample_ws *ws, int64_t b,
                      int64_t row, int64_t c, int64_t gt_rows)
{
    const int64_t r = b * p->num_samples + row;
    const float *gt = a->gt_boxes + b * a->max_gt * 4;
    const int32_t g = ws->cand_gt[c];
    const float *box = c < gt_rows ? gt + c * 4 : a->proposals + (b * a->max_proposals + (c - gt_rows)) * 4;
    float *roi = a->rois + r * 5;
    roi[0] = (float)b;
    memcpy(roi + 1, box, 4 * sizeof(float));
    float *t = a->targets + r * 4;
    if (ws->cand_class[c] == DP_POSITIVE) {
        a->labels[r] = a->gt_labels[b * a->max_gt + g];
        dp_box_encode(&p->coder, box, gt + (int64_t)g * 4, t);
    } else {
        a->labels[r] = p->background_label;
        t[0] = t[1] = t[2] = t[3] = 0.0f;
    }
    a->max_iou[r] = c < gt_rows ? 1.0f : ws->best_iou[c - gt_rows];
    a->is_gt[r] = (uint8_t)(c < gt_rows);
}

static void write_padding(const detpost_stage_params *p, const dp_resample_args *a, int64_t b, int64_t from)
{
    for (int64_t row = from; row < p->num_samples; ++row) {
        const int64_t r = b * p->num_samples + row;
        float *roi = a->rois + r * 5;
        roi[0] = -1.0f;
        roi[1] = roi[2] = roi[3] = roi[4] = 0.0f;
        a->labels[r] = -1;
        memset(a->targets + r * 4, 0, 4 * sizeof(float));
        a->max_iou[r] = 0.0f;
        a->is_gt[r] = 0;
    }
}

static void resample_image(const detpost_stage_params *p, const dp_resample_args *a, int64_t b, cpu_resample_ws *ws)
{
    const int32_t np = a->num_proposals[b], ng = a->num_gt[b];
    const float offset = p->coder.offset;
    const float *gt = a->gt_boxes + b * a->max_gt * 4;
    const float *props = a->proposals + b * a->max_proposals * 4;

    float *gt_max = p->match_low_quality ? ws->gt_max : NULL;
    for (int32_t g = 0; g < ng && gt_max; ++g) gt_max[g] = 0.0f;
    for (int32_t i = 0; i < np; ++i)
        ws->best_iou[i] = best_overlap(props + (int64_t)i * 4, gt, ng, offset, &ws->best_gt[i], gt_max);

    const int64_t gt_rows = p->add_gt_as_proposals ? ng : 0, candidates = gt_rows + np;
    for (int64_t c = 0; c < gt_rows; ++c) {
        ws->cand_class[c] = DP_POSITIVE;
        ws->cand_gt[c] = (int32_t)c;
    }
    for (int32_t i = 0; i < np; ++i)
        ws->cand_class[gt_rows + i] =
            (uint8_t)dp_proposal_class(ws->best_iou[i], ws->best_gt[i], -1, ng, p, &ws->cand_gt[gt_rows + i]);

    if (p->match_low_quality) {
        /* Each ground truth in turn claims the proposals at its own best
         * IoU, so a later one overrides an earlier one (mmdetection's loop). */
        for (int32_t g = 0; g < ng; ++g) {
            const float *t = gt + (int64_t)g * 4;
            const float m = ws->gt_max[g];
            if (!(m >= p->min_pos_iou)) continue;
            for (int32_t i = 0; i < np; ++i) {
                const float *x = props + (int64_t)i * 4;
                if (dp_overlap(x[0], x[1], x[2], x[3], t[0], t[1], t[2], t[3], DP_MODE_IOU, offset) == m) {
                    ws->cand_class[gt_rows + i] = DP_POSITIVE;
                    ws->cand_gt[gt_rows + i] = g;
                }
            }
        }
    }

    int64_t positives = 0, negatives = 0;
    for (int64_t c = 0; c < candidates; ++c) {
        positives += ws->cand_class[c] == DP_POSITIVE;
        negatives += ws->cand_class[c] == DP_NEGATIVE;
    }
    const int64_t pos_quota = dp_positive_quota(p);
    const int64_t take_pos = positives < pos_quota ? positives : pos_quota;
    const int64_t neg_quota = dp_negative_quota(p, take_pos);
    const int64_t take_neg = negatives < neg_quota ? negatives : neg_quota;

    if (candidates > 0) memset(ws->chosen, 0, (size_t)candidates); /* with none, nothing was carved (NULL) */
    choose_smallest_keys(p, b, candidates, DP_POSITIVE, take_pos, ws);
    choose_smallest_keys(p, b, candidates, DP_NEGATIVE, take_neg, ws);
    int64_t row = 0;
    for (int cls = DP_POSITIVE; cls <= DP_NEGATIVE; ++cls)
        for (int64_t c = 0; c < candidates; ++c)
            if (ws->chosen[c] && ws->cand_class[c] == cls) write_row(p, a, ws, b, row++, c, gt_rows);
    write_padding(p, a, b, row);
    a->num_samples[b] = (int32_t)row;
    a->num_pos[b] = (int32_t)take_pos;
}

detpost_status cpu_cascade_resample(detpost_ctx *ctx, const detpost_stage_params *p, const dp_resample_args *a)
{
    void *base = NULL;
    detpost_status st = dp_workspace(ctx, cpu_cascade_resample_workspace(a->max_proposals, a->max_gt), &base);
    if (st != DETPOST_OK) return st;
    dp_carver c = {(char *)base, 0};
    cpu_resample_ws ws;
    cpu_resample_layout(&c, a->max_proposals, a->max_gt, &ws);
    for (int64_t b = 0; b < a->batch; ++b) resample_image(p, a, b, &ws);
    return DETPOST_OK;
}
