/*
 * Scalar math of the NMS family shared by the CPU reference and the kernels,
 * written once so that both backends take the same decisions bit for bit:
 * which scores are candidates, the order of scores as sort keys, the decay
 * of soft-NMS (with an exponential built from + - * / only, because device
 * expf and glibc expf differ in the last bits), and box decoding.
 */
#ifndef DETPOST_NMS_MATH_H
#define DETPOST_NMS_MATH_H

#include <stdint.h>

#include "box_math.h"
#include "float_math.h"

/* Must match detpost_nms_method and detpost_box_coding. */
enum { DP_NMS_HARD = 0, DP_NMS_LINEAR = 1, DP_NMS_GAUSSIAN = 2, DP_NMS_DIOU = 3 };
enum { DP_BOX_CORNERS = 0, DP_BOX_CENTER_SIZE = 1 };

DP_HD int dp_nms_is_soft(int method) { return method == DP_NMS_LINEAR || method == DP_NMS_GAUSSIAN; }

/* A score enters NMS when it passes the threshold (NaN never does) and, for
 * the soft methods, is not already below min_score. */
DP_HD int dp_nms_candidate(float score, float score_threshold, int soft, float min_score)
{
    return score > score_threshold && (!soft || score >= min_score);
}

/* A 32-bit key whose ascending order is the descending order of non-NaN
 * scores: sorting keys with a stable ascending sort lists the highest score
 * first and keeps equal scores in index order. -0 is folded into +0 so that
 * the two zeros tie, as they do for the comparison operators. */
DP_HD uint32_t dp_score_key(float score)
{
    const uint32_t bits = dp_float_bits(score + 0.0f);
    const uint32_t ascending = (bits & 0x80000000u) ? ~bits : bits | 0x80000000u;
    return ~ascending;
}

/* The score a key was made from (+0 for either zero). */
DP_HD float dp_key_score(uint32_t key)
{
    const uint32_t ascending = ~key;
    return dp_bits_float((ascending & 0x80000000u) ? ascending & 0x7fffffffu : ~ascending);
}

/* The factor soft-NMS multiplies a remaining box's score by after it
 * selected a box that overlaps it by `iou`; exactly 1 where the score stays
 * as it is (linear at or below the threshold, gaussian at iou 0), and a
 * product with 1 is exact, so the decay below equals "leave it alone" there.
 * It does not depend on the score: the kernels compute it apart from the
 * multiplication. */
DP_HD float dp_soft_nms_weight(int method, float iou, float iou_threshold, float sigma)
{
    if (method == DP_NMS_LINEAR) return iou > iou_threshold ? 1.0f - iou : 1.0f;
    return dp_exp(-DP_MUL(iou, iou) / sigma);
}

/* The score of a remaining box after soft-NMS selected a box that overlaps
 * it by `iou`. */
DP_HD float dp_soft_nms_decay(int method, float score, float iou, float iou_threshold, float sigma)
{
    return DP_MUL(score, dp_soft_nms_weight(method, iou, iou_threshold, sigma));
}

/* Corners of a box stored in the given coding. */
DP_HD void dp_decode_box(int coding, const float *in, float *out)
{
    if (coding == DP_BOX_CENTER_SIZE) {
        const float half_w = DP_MUL(in[2], 0.5f), half_h = DP_MUL(in[3], 0.5f);
        out[0] = in[0] - half_w;
        out[1] = in[1] - half_h;
        out[2] = in[0] + half_w;
        out[3] = in[1] + half_h;
    } else {
        out[0] = in[0], out[1] = in[1], out[2] = in[2], out[3] = in[3];
    }
}

#endif
