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

DP_HD uint32_t dp_float_bits(float f)
{
    union {
        float f;
        uint32_t u;
    } v;
    v.f = f;
    return v.u;
}

DP_HD float dp_bits_float(uint32_t u)
{
    union {
        float f;
        uint32_t u;
    } v;
    v.u = u;
    return v.f;
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

#define DP_LOG2E 1.44269504088896341f
#define DP_LN2_HI 6.93145751953125e-1f /* ln 2 with its low bits cleared: k * DP_LN2_HI is exact */
#define DP_LN2_LO 1.42860682030941723e-6f

/* e^x with every step an IEEE-rounded + - * /: x = k ln2 + r with |r| <= ln2/2,
 * a degree-7 Taylor polynomial for e^r, then scaling by 2^k through the
 * exponent bits. Within a few ulps of the true value; 0 below -104, +inf
 * above 88.73, and exactly 1 at 0. */
DP_HD float dp_exp(float x)
{
    if (x != x) return x;
    if (x < -104.0f) return 0.0f;
    if (x > 88.73f) return dp_bits_float(0x7f800000u);
    const float k = floorf(DP_MUL(x, DP_LOG2E) + 0.5f);
    const float r = (x - DP_MUL(k, DP_LN2_HI)) - DP_MUL(k, DP_LN2_LO);
    float p = 1.0f / 5040.0f;
    p = DP_MUL(p, r) + 1.0f / 720.0f;
    p = DP_MUL(p, r) + 1.0f / 120.0f;
    p = DP_MUL(p, r) + 1.0f / 24.0f;
    p = DP_MUL(p, r) + 1.0f / 6.0f;
    p = DP_MUL(p, r) + 0.5f;
    p = DP_MUL(p, r) + 1.0f;
    p = DP_MUL(p, r) + 1.0f;
    int ki = (int)k;
    if (ki > 127) {
        p = DP_MUL(p, 2.0f);
        ki -= 1;
    } else if (ki < -126) {
        /* scale in two steps so that only the last one can round */
        p = DP_MUL(p, dp_bits_float((uint32_t)(ki + 126 + 127) << 23));
        ki = -126;
    }
    return DP_MUL(p, dp_bits_float((uint32_t)(ki + 127) << 23));
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
