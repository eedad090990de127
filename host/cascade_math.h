/*
 * The discrete rules of cascade resampling, written once for the CPU
 * reference and the kernels: the sampling key of a candidate, a proposal's
 * class from its assignment, the sample quotas, and the refine policies'
 * keep test. Integer and comparison logic only, so both backends agree bit
 * for bit.
 */
#ifndef DETPOST_CASCADE_MATH_H
#define DETPOST_CASCADE_MATH_H

#include <stdint.h>

#include "../include/detpost.h"
#include "box_math.h"

/* The threshold of DETPOST_REFINE_CAFFE. */
#define DP_CAFFE_DROP_IOU 0.95f

enum { DP_IGNORE = 0, DP_POSITIVE = 1, DP_NEGATIVE = 2 };

/* splitmix64's finaliser: a bijection of 64-bit words that mixes every bit. */
DP_HD uint64_t dp_mix64(uint64_t z)
{
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

/* The counter-based sampling key of candidate `index` of image `image` at
 * `stage`: a pure function of its arguments, so any backend, thread order
 * or rerun computes the same key. Sampling takes the smallest keys; equal
 * keys are ordered by candidate index. */
DP_HD uint32_t dp_sample_key(uint64_t seed, int64_t image, int32_t stage, int64_t index)
{
    uint64_t h = dp_mix64(seed + 0x9E3779B97F4A7C15ull);
    h = dp_mix64(h ^ (uint64_t)image);
    h = dp_mix64(h ^ ((uint64_t)(uint32_t)stage << 32) ^ (uint64_t)index);
    return (uint32_t)(h >> 32);
}

/* The class of a proposal (not a ground-truth candidate) given its best IoU
 * and the ground truth holding it (ties to the lower index), and the ground
 * truth that claimed it through low-quality matching (-1: none). *gt gets
 * the matched ground truth of a positive, -1 otherwise. */
DP_HD int dp_proposal_class(float iou, int32_t best_gt, int32_t low_quality_gt, int32_t num_gt,
                            const detpost_stage_params *p, int32_t *gt)
{
    *gt = -1;
    if (num_gt == 0) return DP_NEGATIVE;
    if (low_quality_gt >= 0) {
        *gt = low_quality_gt;
        return DP_POSITIVE;
    }
    if (iou >= p->pos_iou) {
        *gt = best_gt;
        return DP_POSITIVE;
    }
    return iou >= p->neg_iou_lo && iou < p->neg_iou ? DP_NEGATIVE : DP_IGNORE;
}

/* How many positives a sample may hold: floor(num_samples * pos_fraction). */
DP_HD int64_t dp_positive_quota(const detpost_stage_params *p)
{
    return (int64_t)((double)p->num_samples * (double)p->pos_fraction);
}

/* How many negatives may join `positives` sampled positives. */
DP_HD int64_t dp_negative_quota(const detpost_stage_params *p, int64_t positives)
{
    int64_t quota = (int64_t)p->num_samples - positives;
    if (p->neg_pos_ub >= 0.0f) {
        const double bound = (double)p->neg_pos_ub * (double)(positives > 1 ? positives : 1);
        if (bound < (double)quota) quota = (int64_t)bound;
    }
    return quota;
}

/* Whether a decoded row (batch_index, x1, y1, x2, y2) goes on to the next
 * stage under `policy`. */
DP_HD int dp_refine_keep(detpost_refine_policy policy, const float *row, float offset, uint8_t is_gt, float gt_iou)
{
    if (!(row[0] >= 0.0f)) return 0;
    switch (policy) {
    case DETPOST_REFINE_MMDET: return is_gt == 0;
    case DETPOST_REFINE_DETECTRON2: {
        const float w = dp_extent(row[1], row[3], offset), h = dp_extent(row[2], row[4], offset);
        return dp_box_nonempty(w, h, DP_MUL(w, h));
    }
    case DETPOST_REFINE_CAFFE: return !(gt_iou >= DP_CAFFE_DROP_IOU);
    }
    return 0;
}

#endif
