/*
 * CPU reference of the NMS family: plain O(N^2) loops, one function per
 * method, written to be read. They define the answers the CUDA backend must
 * reproduce, so every decision goes through the shared scalar math
 * (box_math.h, nms_math.h).
 *
 * Each method works on a group of candidates (boxes, scores, and a
 * tie-break number where the lower wins equal scores) and appends the
 * positions it keeps, in selection order, with their scores. Single-class
 * NMS is one group; batched NMS makes one group per image and class.
 */
#include <stdlib.h>
#include <string.h>

#include "nms.h"
#include "nms_math.h"

typedef struct candidates {
    float (*box)[4];
    float *score;
    int64_t *tiebreak;
    int64_t count;
} candidates;

typedef struct selection {
    int64_t *pos;  /* candidate positions in selection order */
    float *score;  /* score at selection */
    int64_t count;
    int64_t limit; /* stop at this many (0: no limit) */
} selection;

/* Scratch the methods share, sized for the largest group. */
typedef struct scratch {
    int64_t *order;
    unsigned char *suppressed;
    float *current;
} scratch;

typedef struct ranked {
    float score;
    int64_t tiebreak;
    int64_t pos;
} ranked;

/* Highest score first; equal scores: lower tie-break first. */
static int by_rank(const void *pa, const void *pb)
{
    const ranked *a = (const ranked *)pa, *b = (const ranked *)pb;
    if (a->score != b->score) return a->score > b->score ? -1 : 1;
    return (a->tiebreak > b->tiebreak) - (a->tiebreak < b->tiebreak);
}

static void sort_by_rank(ranked *r, int64_t n) { qsort(r, (size_t)n, sizeof *r, by_rank); }

/* Candidate positions by score, highest first, ties to the lower tie-break. */
static void rank_candidates(const candidates *c, int64_t *order, ranked *tmp)
{
    for (int64_t i = 0; i < c->count; ++i) tmp[i] = (ranked){c->score[i], c->tiebreak[i], i};
    sort_by_rank(tmp, c->count);
    for (int64_t i = 0; i < c->count; ++i) order[i] = tmp[i].pos;
}

static int emit(selection *out, int64_t pos, float score)
{
    out->pos[out->count] = pos;
    out->score[out->count] = score;
    out->count++;
    return out->limit > 0 && out->count >= out->limit;
}

/* Greedy suppression by an overlap measure: visit candidates best first;
 * keep one unless a kept box overlaps it by more than the threshold. */
static void greedy(const candidates *c, const detpost_nms_params *p, int overlap_mode, const scratch *s,
                   selection *out)
{
    memset(s->suppressed, 0, (size_t)c->count);
    for (int64_t a = 0; a < c->count; ++a) {
        const int64_t i = s->order[a];
        if (s->suppressed[i]) continue;
        if (emit(out, i, c->score[i])) return;
        const float *k = c->box[i];
        for (int64_t b = a + 1; b < c->count; ++b) {
            const int64_t j = s->order[b];
            const float *x = c->box[j];
            if (!s->suppressed[j] &&
                dp_overlap(k[0], k[1], k[2], k[3], x[0], x[1], x[2], x[3], overlap_mode, p->offset) >
                    p->iou_threshold)
                s->suppressed[j] = 1;
        }
    }
}

/* Hard NMS: suppress by IoU. */
static void nms_hard(const candidates *c, const detpost_nms_params *p, const scratch *s, selection *out)
{
    greedy(c, p, DP_MODE_IOU, s, out);
}

/* DIoU-NMS: suppress by IoU minus the normalised centre distance. */
static void nms_diou(const candidates *c, const detpost_nms_params *p, const scratch *s, selection *out)
{
    greedy(c, p, DP_MODE_DIOU, s, out);
}

/* Soft-NMS: take the remaining box with the highest current score (ties: the
 * lower tie-break), emit it with that score, decay every other remaining
 * box; a box whose score is below min_score (or NaN) is out. */
static void soft(const candidates *c, const detpost_nms_params *p, int method, const scratch *s, selection *out)
{
    float *cur = s->current;
    for (int64_t i = 0; i < c->count; ++i) cur[i] = c->score[i];
    for (;;) {
        int64_t best = -1;
        for (int64_t i = 0; i < c->count; ++i) {
            if (!(cur[i] >= p->min_score)) continue;
            if (best < 0 || cur[i] > cur[best] || (cur[i] == cur[best] && c->tiebreak[i] < c->tiebreak[best]))
                best = i;
        }
        if (best < 0) return;
        const float *k = c->box[best];
        const float taken = cur[best];
        cur[best] = NAN;
        if (emit(out, best, taken)) return;
        for (int64_t i = 0; i < c->count; ++i) {
            if (!(cur[i] >= p->min_score)) continue;
            const float *x = c->box[i];
            const float iou = dp_overlap(k[0], k[1], k[2], k[3], x[0], x[1], x[2], x[3], DP_MODE_IOU, p->offset);
            cur[i] = dp_soft_nms_decay(method, cur[i], iou, p->iou_threshold, p->sigma);
        }
    }
}

/* Linear soft-NMS: s *= 1 - iou where iou > iou_threshold. */
static void nms_linear(const candidates *c, const detpost_nms_params *p, const scratch *s, selection *out)
{
    soft(c, p, DP_NMS_LINEAR, s, out);
}

/* Gaussian soft-NMS: s *= exp(-iou^2 / sigma) for every remaining box. */
static void nms_gaussian(const candidates *c, const detpost_nms_params *p, const scratch *s, selection *out)
{
    soft(c, p, DP_NMS_GAUSSIAN, s, out);
}

static void run_method(const candidates *c, const detpost_nms_params *p, const scratch *s, ranked *tmp,
                       selection *out)
{
    switch (p->method) {
    case DETPOST_NMS_HARD:
        rank_candidates(c, s->order, tmp);
        nms_hard(c, p, s, out);
        break;
    case DETPOST_NMS_DIOU:
        rank_candidates(c, s->order, tmp);
        nms_diou(c, p, s, out);
        break;
    case DETPOST_NMS_LINEAR: nms_linear(c, p, s, out); break;
    case DETPOST_NMS_GAUSSIAN: nms_gaussian(c, p, s, out); break;
    }
}

/* ---- buffers ------------------------------------------------------------- */

typedef struct buffers {
    candidates cand;
    scratch s;
    ranked *ranked;
    selection sel;
} buffers;

static void free_buffers(buffers *b)
{
    free(b->cand.box), free(b->cand.score), free(b->cand.tiebreak);
    free(b->s.order), free(b->s.suppressed), free(b->s.current);
    free(b->ranked);
    free(b->sel.pos), free(b->sel.score);
}

static int alloc_buffers(buffers *b, int64_t n)
{
    memset(b, 0, sizeof *b);
    const size_t m = (size_t)(n > 0 ? n : 1);
    b->cand.box = malloc(m * sizeof *b->cand.box);
    b->cand.score = malloc(m * sizeof(float));
    b->cand.tiebreak = malloc(m * sizeof(int64_t));
    b->s.order = malloc(m * sizeof(int64_t));
    b->s.suppressed = malloc(m);
    b->s.current = malloc(m * sizeof(float));
    b->ranked = malloc(m * sizeof(ranked));
    b->sel.pos = malloc(m * sizeof(int64_t));
    b->sel.score = malloc(m * sizeof(float));
    if (b->cand.box && b->cand.score && b->cand.tiebreak && b->s.order && b->s.suppressed && b->s.current &&
        b->ranked && b->sel.pos && b->sel.score)
        return 1;
    free_buffers(b);
    return 0;
}

/* ---- single-class NMS ------------------------------------------------------ */

detpost_status cpu_nms(const detpost_nms_params *p, const float *boxes, const float *scores, int64_t n,
                       int64_t *keep, float *keep_scores, int64_t *num_keep)
{
    buffers b;
    if (!alloc_buffers(&b, n)) return DETPOST_ERR_OUT_OF_MEMORY;
    const int soft_method = dp_nms_is_soft(p->method);
    candidates *c = &b.cand;
    for (int64_t i = 0; i < n; ++i) {
        if (!dp_nms_candidate(scores[i], p->score_threshold, soft_method, p->min_score)) continue;
        memcpy(c->box[c->count], boxes + i * 4, 4 * sizeof(float));
        c->score[c->count] = scores[i];
        c->tiebreak[c->count] = i;
        c->count++;
    }
    b.sel.limit = p->max_output;
    run_method(c, p, &b.s, b.ranked, &b.sel);
    for (int64_t k = 0; k < n; ++k) {
        const int kept = k < b.sel.count;
        keep[k] = kept ? c->tiebreak[b.sel.pos[k]] : -1;
        if (keep_scores) keep_scores[k] = kept ? b.sel.score[k] : 0.0f;
    }
    *num_keep = b.sel.count;
    free_buffers(&b);
    return DETPOST_OK;
}

/* ---- batched multi-class NMS ------------------------------------------------ */

typedef struct class_ranked {
    int64_t cls;
    int64_t rank;
    int64_t flat;
} class_ranked;

static int by_class_then_rank(const void *pa, const void *pb)
{
    const class_ranked *a = (const class_ranked *)pa, *b = (const class_ranked *)pb;
    if (a->cls != b->cls) return a->cls < b->cls ? -1 : 1;
    return (a->rank > b->rank) - (a->rank < b->rank);
}

int64_t dp_batched_nms_capacity(const detpost_batched_nms_params *p, int64_t num_boxes, int64_t num_classes)
{
    const int64_t pairs = num_boxes * num_classes;
    return p->pre_nms_top_k > 0 && p->pre_nms_top_k < pairs ? p->pre_nms_top_k : pairs;
}

detpost_status cpu_batched_nms(const detpost_batched_nms_params *p, const float *boxes, const float *scores,
                               int64_t batch, int64_t num_boxes, int64_t num_classes, int32_t *num_dets,
                               float *det_boxes, float *det_scores, int32_t *det_classes, int32_t *det_indices)
{
    const int64_t pairs = num_boxes * num_classes, K = p->max_per_image;
    const int64_t cap = dp_batched_nms_capacity(p, num_boxes, num_classes);
    const int soft_method = dp_nms_is_soft(p->nms.method);
    const int cap_classes = p->class_agnostic && p->max_per_class > 0;
    buffers b;
    ranked *pool = malloc((size_t)(pairs > 0 ? pairs : 1) * sizeof *pool);
    class_ranked *grouped = malloc((size_t)(cap > 0 ? cap : 1) * sizeof *grouped);
    ranked *kept = malloc((size_t)(cap > 0 ? cap : 1) * sizeof *kept);
    int64_t *per_class = malloc((size_t)(num_classes > 0 ? num_classes : 1) * sizeof *per_class);
    if (!pool || !grouped || !kept || !per_class || !alloc_buffers(&b, cap)) {
        free(pool), free(grouped), free(kept), free(per_class);
        return DETPOST_ERR_OUT_OF_MEMORY;
    }
    for (int64_t img = 0; img < batch; ++img) {
        const float *sc = scores + img * pairs;
        /* candidates of the image, the best pre_nms_top_k of them */
        int64_t count = 0;
        for (int64_t flat = 0; flat < pairs; ++flat)
            if (flat % num_classes != p->background_class &&
                dp_nms_candidate(sc[flat], p->nms.score_threshold, soft_method, p->nms.min_score))
                pool[count++] = (ranked){sc[flat], flat, flat};
        sort_by_rank(pool, count);
        if (p->pre_nms_top_k > 0 && count > p->pre_nms_top_k) count = p->pre_nms_top_k;

        /* groups: the whole image, or runs of one class in rank order */
        for (int64_t r = 0; r < count; ++r)
            grouped[r] = (class_ranked){p->class_agnostic ? 0 : pool[r].tiebreak % num_classes, r, pool[r].tiebreak};
        qsort(grouped, (size_t)count, sizeof *grouped, by_class_then_rank);

        int64_t num_kept = 0;
        for (int64_t g0 = 0, g1; g0 < count; g0 = g1) {
            for (g1 = g0 + 1; g1 < count && grouped[g1].cls == grouped[g0].cls; ++g1) {
            }
            candidates *c = &b.cand;
            c->count = 0;
            for (int64_t r = g0; r < g1; ++r) {
                const int64_t flat = grouped[r].flat, n = flat / num_classes, cls = flat % num_classes;
                const int64_t row = p->boxes_per_class ? (img * num_boxes + n) * num_classes + cls
                                                       : img * num_boxes + n;
                dp_decode_box(p->box_coding, boxes + row * 4, c->box[c->count]);
                c->score[c->count] = sc[flat];
                c->tiebreak[c->count] = flat;
                c->count++;
            }
            /* a class's group stops at max_per_class; across classes, every class keeps its first
             * max_per_class in selection order, the rest having taken part in the NMS */
            b.sel.count = 0;
            b.sel.limit = p->class_agnostic ? 0 : p->max_per_class;
            run_method(c, &p->nms, &b.s, b.ranked, &b.sel);
            if (cap_classes) memset(per_class, 0, (size_t)num_classes * sizeof *per_class);
            for (int64_t k = 0; k < b.sel.count; ++k) {
                const int64_t flat = c->tiebreak[b.sel.pos[k]];
                if (cap_classes && per_class[flat % num_classes]++ >= p->max_per_class) continue;
                kept[num_kept++] = (ranked){b.sel.score[k], flat, flat};
            }
        }

        /* the best max_per_image of the kept detections */
        sort_by_rank(kept, num_kept);
        const int64_t dets = num_kept < K ? num_kept : K;
        num_dets[img] = (int32_t)dets;
        for (int64_t k = 0; k < K; ++k) {
            const int64_t o = img * K + k;
            if (k >= dets) {
                memset(det_boxes + o * 4, 0, 4 * sizeof(float));
                det_scores[o] = 0.0f;
                det_classes[o] = -1;
                if (det_indices) det_indices[o] = -1;
                continue;
            }
            const int64_t flat = kept[k].tiebreak, n = flat / num_classes, cls = flat % num_classes;
            const int64_t row = p->boxes_per_class ? (img * num_boxes + n) * num_classes + cls : img * num_boxes + n;
            dp_decode_box(p->box_coding, boxes + row * 4, det_boxes + o * 4);
            det_scores[o] = kept[k].score + 0.0f; /* +0 for either zero, as the CUDA sort key has it */
            det_classes[o] = (int32_t)cls;
            if (det_indices) det_indices[o] = (int32_t)n;
        }
    }
    free(pool), free(grouped), free(kept), free(per_class);
    free_buffers(&b);
    return DETPOST_OK;
}
