/*
 * Scalar math of RoI Align, RoI Pool and the FPN level mapping, shared by the
 * CPU reference and the kernels so that both take the same decisions bit for
 * bit: which samples lie on the map, their bilinear corners and weights, the
 * value of each sample, the level of each RoI and the fixed-point format of
 * the deterministic backward. Products go through DP_MUL / DP_DMUL (no FMA
 * contraction on the device; the host build disables it); the operation
 * order follows torchvision's kernels.
 */
#ifndef DETPOST_ROI_MATH_H
#define DETPOST_ROI_MATH_H

#include <math.h>
#include <stdint.h>

#include "../include/detpost.h"
#include "box_math.h"
#include "half.h"

#if defined(__CUDA_ARCH__)
#define DP_DMUL(a, b) __dmul_rn((a), (b))
#else
#define DP_DMUL(a, b) ((a) * (b))
#endif

/* Scaled coordinates saturate here so that every conversion to an integer
 * is defined; far beyond any feature map, so results do not change. */
#define DP_ROI_COORD_LIMIT 1099511627776.0f /* 2^40 */
#define DP_ROI_GRID_LIMIT 2147483647LL

/* ---- rows -------------------------------------------------------------- */

/* Batch index in [0, n) and finite coordinates (the comparison is made in
 * double, exact for every n below 2^53). */
DP_HD int dp_roi_row_valid(const float *roi, int64_t n)
{
    return (double)roi[0] >= 0.0 && (double)roi[0] < (double)n && dp_finite(roi[1]) && dp_finite(roi[2]) &&
           dp_finite(roi[3]) && dp_finite(roi[4]);
}

/* ---- FPN level mapping --------------------------------------------------- */

DP_HD double dp_pow2(int e) /* -1022 <= e <= 1023 */
{
    const uint64_t bits = (uint64_t)(e + 1023) << 52;
    double d;
    memcpy(&d, &bits, sizeof d);
    return d;
}

/* log2 of a positive finite x from + - * / only: x = m * 2^e with m in
 * [sqrt(1/2), sqrt(2)), log(m) = 2 atanh(s), s = (m - 1) / (m + 1), whose odd
 * series converges fast (s^2 < 0.03). Accurate to about 1e-16. */
DP_HD double dp_log2(double x)
{
    uint64_t bits;
    memcpy(&bits, &x, sizeof bits);
    int e = (int)((bits >> 52) & 0x7ff) - 1023;
    if (e == -1023) { /* subnormal: scale up by 2^64 first */
        x = DP_DMUL(x, 18446744073709551616.0);
        memcpy(&bits, &x, sizeof bits);
        e = (int)((bits >> 52) & 0x7ff) - 1023 - 64;
    }
    bits = (bits & 0x000fffffffffffffull) | 0x3ff0000000000000ull;
    double m;
    memcpy(&m, &bits, sizeof m);
    if (m > 1.4142135623730951) {
        m = DP_DMUL(m, 0.5);
        e += 1;
    }
    const double s = (m - 1.0) / (m + 1.0), s2 = DP_DMUL(s, s);
    double series = 1.0 / 25.0;
    for (int k = 11; k >= 0; --k) series = 1.0 / (double)(2 * k + 1) + DP_DMUL(s2, series);
    const double ln_m = DP_DMUL(DP_DMUL(2.0, s), series);
    return (double)e + DP_DMUL(ln_m, 1.4426950408889634074);
}

/* Level index in [0, num_levels) of the RoI (x1, y1, x2, y2), torchvision's
 * LevelMapper in float32: floor(k0 + log2(sqrt(area) / s0) + eps), clamped
 * to [k_min, k_min + num_levels - 1]. */
DP_HD int dp_fpn_level(const float *box, float canonical_scale, int canonical_level, float eps, int k_min,
                       int num_levels)
{
    const int k_max = k_min + num_levels - 1;
    const float area = DP_MUL(box[2] - box[0], box[3] - box[1]);
    if (!(area > 0.0f)) return 0;
    if (!(area <= DP_FLT_MAX)) return num_levels - 1;
    const float ratio = sqrtf(area) / canonical_scale;
    const float lg = (float)dp_log2((double)ratio);
    const float k = floorf((float)canonical_level + lg + eps);
    if (!(k > (float)k_min)) return 0;
    if (k >= (float)k_max) return num_levels - 1;
    return (int)k - k_min;
}

/* ---- RoI Align ----------------------------------------------------------- */

/* One axis of a RoI on a feature map. */
typedef struct dp_roi_axis {
    float start; /* first edge, in feature pixels */
    float bin;   /* bin size, in feature pixels */
    int64_t grid; /* samples per bin on this axis, 0 when there are none */
    int64_t size; /* extent of the feature map on this axis */
} dp_roi_axis;

/* torchvision: start = lo * scale - offset, extent = end - start (at least 1
 * unless aligned), bin = extent / pooled, grid = sampling_ratio or
 * ceil(extent / pooled). A grid that is not >= 1 (or a non-finite bin, from
 * coordinates overflowing after scaling) means no samples. */
DP_HD dp_roi_axis dp_roi_align_axis(float lo, float hi, float scale, int aligned, int pooled, int sampling_ratio,
                                    int64_t size)
{
    dp_roi_axis a;
    const float offset = aligned ? 0.5f : 0.0f;
    a.start = DP_MUL(lo, scale) - offset;
    const float end = DP_MUL(hi, scale) - offset;
    float extent = end - a.start;
    if (!aligned && extent < 1.0f) extent = 1.0f;
    a.bin = extent / (float)pooled;
    a.size = size;
    const float adaptive = ceilf(a.bin);
    if (!dp_finite(a.start) || !dp_finite(a.bin)) a.grid = 0;
    else if (sampling_ratio > 0) a.grid = sampling_ratio;
    else if (!(adaptive >= 1.0f)) a.grid = 0;
    else a.grid = adaptive < (float)DP_ROI_GRID_LIMIT ? (int64_t)adaptive : DP_ROI_GRID_LIMIT;
    return a;
}

/* The divisor of AVG mode: max(grid_h * grid_w, 1). */
DP_HD float dp_roi_count(const dp_roi_axis *y, const dp_roi_axis *x)
{
    const int64_t n = y->grid * x->grid;
    return n > 1 ? (float)n : 1.0f;
}

/* Position of sample i of bin p. */
DP_HD float dp_roi_sample(const dp_roi_axis *a, int64_t p, int64_t i)
{
    return a->start + DP_MUL((float)p, a->bin) + DP_MUL((float)i + 0.5f, a->bin) / (float)a->grid;
}

/* The bilinear corners of a sample on one axis and their weights. */
typedef struct dp_roi_corner {
    int32_t lo, hi;
    float w_lo, w_hi;
} dp_roi_corner;

/* torchvision's bilinear_interpolate on one axis: positions in [-1, 0] read
 * row 0, positions at or past size - 1 read row size - 1. The sample must be
 * on the map. */
DP_HD dp_roi_corner dp_roi_corner_at(float v, int64_t size)
{
    dp_roi_corner c;
    if (v <= 0.0f) v = 0.0f;
    int64_t lo = (int64_t)v, hi;
    if (lo >= size - 1) {
        hi = lo = size - 1;
        v = (float)lo;
    } else {
        hi = lo + 1;
    }
    const float frac = v - (float)lo;
    c.lo = (int32_t)lo;
    c.hi = (int32_t)hi;
    c.w_lo = 1.0f - frac;
    c.w_hi = frac;
    return c;
}

/* Corner of sample i of bin p. */
DP_HD dp_roi_corner dp_roi_sample_corner(const dp_roi_axis *a, int64_t p, int64_t i)
{
    return dp_roi_corner_at(dp_roi_sample(a, p, i), a->size);
}

/* The samples of bin p that lie on the map form one run [*lo, *hi): the
 * position is monotonic in i (increasing for bin >= 0, decreasing below), so
 * "has entered the map" and "has left it" each switch once along i and two
 * binary searches find the run. Work per bin stays bounded by the map, not
 * by the RoI, however large the grid. */
DP_HD int dp_roi_entered(const dp_roi_axis *a, int64_t p, int64_t i)
{
    const float v = dp_roi_sample(a, p, i);
    return a->bin >= 0.0f ? v >= -1.0f : v <= (float)a->size;
}

DP_HD int dp_roi_left(const dp_roi_axis *a, int64_t p, int64_t i)
{
    const float v = dp_roi_sample(a, p, i);
    return a->bin >= 0.0f ? v > (float)a->size : v < -1.0f;
}

DP_HD void dp_roi_sample_run(const dp_roi_axis *a, int64_t p, int64_t *lo, int64_t *hi)
{
    if (a->grid == 0 || a->size <= 0) {
        *lo = *hi = 0;
        return;
    }
    int64_t first = 0, last = a->grid; /* first i that has entered */
    while (first < last) {
        const int64_t mid = first + (last - first) / 2;
        if (dp_roi_entered(a, p, mid)) last = mid;
        else first = mid + 1;
    }
    *lo = first;
    last = a->grid; /* first i at or after *lo that has left */
    while (first < last) {
        const int64_t mid = first + (last - first) / 2;
        if (dp_roi_left(a, p, mid)) last = mid;
        else first = mid + 1;
    }
    *hi = first;
}

/* Weights of the four corners (y_lo x_lo, y_lo x_hi, y_hi x_lo, y_hi x_hi). */
DP_HD void dp_roi_weights(const dp_roi_corner *y, const dp_roi_corner *x, float w[4])
{
    w[0] = DP_MUL(y->w_lo, x->w_lo);
    w[1] = DP_MUL(y->w_lo, x->w_hi);
    w[2] = DP_MUL(y->w_hi, x->w_lo);
    w[3] = DP_MUL(y->w_hi, x->w_hi);
}

/* The value of one sample from its four corner values. */
DP_HD float dp_roi_mix(const float w[4], float v1, float v2, float v3, float v4)
{
    return DP_MUL(w[0], v1) + DP_MUL(w[1], v2) + DP_MUL(w[2], v3) + DP_MUL(w[3], v4);
}

/* MAX mode's value of a bin: `best` is the largest sample on the map
 * (found: there was one), `outside`: some samples lie off the map and count
 * as 0 (mmcv), so the bin takes max(best, 0) then. */
DP_HD float dp_roi_max_value(float best, int found, int outside)
{
    if (!found) return 0.0f;
    return !outside || best > 0.0f ? best : 0.0f;
}

/* Whether a sample off the map comes before on-map sample row `by` of a bin
 * in row-major sample order, when the on-map samples are the run
 * [ylo, yhi) x [xlo, xhi) of a grid `gx` samples wide: every row above the
 * run, the start of the sample's own row, or the end of an earlier row. */
DP_HD int dp_roi_off_map_first(int64_t ylo, int64_t xlo, int64_t xhi, int64_t gx, int64_t by)
{
    return ylo > 0 || xlo > 0 || (by > ylo && xhi < gx);
}

/* Whether MAX mode's gradient flows to the first largest on-map sample (its
 * row `by`, see dp_roi_off_map_first for off_map_first): it must be the first
 * maximum of all the bin's samples, the off-map ones counting as 0. So a
 * maximum of exactly 0 after an off-map sample (a map of zeros after a ReLU,
 * a RoI hanging off the map) takes no gradient, as the off-map sample won. */
DP_HD int dp_roi_max_takes_gradient(float best, int found, int outside, int off_map_first)
{
    if (!found) return 0;
    if (!outside || best > 0.0f) return 1;
    return best == 0.0f && !off_map_first;
}

/* ---- RoI Pool ------------------------------------------------------------ */

DP_HD int64_t dp_roi_round(float v)
{
    v = roundf(v);
    if (v > DP_ROI_COORD_LIMIT) v = DP_ROI_COORD_LIMIT;
    if (v < -DP_ROI_COORD_LIMIT) v = -DP_ROI_COORD_LIMIT;
    return (int64_t)v;
}

typedef struct dp_roi_pool_axis {
    int64_t start; /* rounded first edge */
    float bin;     /* (rounded extent + 1, at least 1) / pooled */
    int64_t size;
} dp_roi_pool_axis;

DP_HD dp_roi_pool_axis dp_roi_pool_make_axis(float lo, float hi, float scale, int pooled, int64_t size)
{
    dp_roi_pool_axis a;
    a.start = dp_roi_round(DP_MUL(lo, scale));
    int64_t extent = dp_roi_round(DP_MUL(hi, scale)) - a.start + 1;
    if (extent < 1) extent = 1;
    a.bin = (float)extent / (float)pooled;
    a.size = size;
    return a;
}

/* Pixels [*lo, *hi) of bin p, clipped to the map. */
DP_HD void dp_roi_pool_bin(const dp_roi_pool_axis *a, int64_t p, int64_t *lo, int64_t *hi)
{
    int64_t s = (int64_t)floorf(DP_MUL((float)p, a->bin)) + a->start;
    int64_t e = (int64_t)ceilf(DP_MUL((float)(p + 1), a->bin)) + a->start;
    s = s < 0 ? 0 : s > a->size ? a->size : s;
    e = e < 0 ? 0 : e > a->size ? a->size : e;
    *lo = s;
    *hi = e;
}

/* ---- fixed point for the deterministic backward ------------------------------ */

/* Contributions are bounded by the largest |grad_out| (max_abs_bits, the
 * bits of a finite non-negative float) times weights that sum to at most
 * 2^weight_log2 per feature element. The exponent e makes every element's sum
 * times 2^e stay below 2^61, so int64 accumulation cannot overflow and keeps
 * 61 bits relative to the largest possible sum. */
DP_HD int dp_fixed_exponent(uint32_t max_abs_bits, int weight_log2)
{
    if (max_abs_bits == 0) return 0;
    int top = (int)(max_abs_bits >> 23) - 126; /* max_abs < 2^top */
    if ((max_abs_bits >> 23) == 0) top = -126;
    return 60 - top - weight_log2;
}

DP_HD int64_t dp_to_fixed(float v, int e)
{
    const double scaled = DP_DMUL((double)v, dp_pow2(e));
#if defined(__CUDA_ARCH__)
    return __double2ll_rn(scaled);
#else
    return llrint(scaled);
#endif
}

/* sum * 2^-e rounded once, to nearest even, to the precision of `dtype`
 * (float: 24 significant bits, normal from 2^-126; half: 11 bits, normal
 * from 2^-14), so that storing the result as dtype rounds nothing again.
 * Going through a double first would round twice: 2^60 + 2^36 + 1 became
 * 2^60 instead of 2^60 + 2^37. */
DP_HD float dp_from_fixed(int64_t sum, int e, int dtype)
{
    if (sum == 0) return 0.0f;
    const int digits = dtype == DETPOST_F16 ? 11 : 24, min_exp = dtype == DETPOST_F16 ? -14 : -126;
    uint64_t mag = sum < 0 ? 0 - (uint64_t)sum : (uint64_t)sum;
#if defined(__CUDA_ARCH__)
    const int top = 63 - __clzll((long long)mag);
#else
    const int top = 63 - __builtin_clzll(mag);
#endif
    /* the exponent of the result's leading digit (the subnormal range keeps min_exp's last digit) */
    const int lead = top - e > min_exp ? top - e : min_exp;
    const int drop = lead - (digits - 1) + e; /* bits of mag below the result's last digit */
    if (drop >= 63) return sum < 0 ? -0.0f : 0.0f; /* |sum| < 2^61: under half of that digit */
    if (drop > 0) {
        const uint64_t rest = mag & ((1ull << drop) - 1), half = 1ull << (drop - 1);
        mag >>= drop;
        if (rest > half || (rest == half && (mag & 1u))) ++mag;
        mag <<= drop;
    }
    const float v = (float)DP_DMUL((double)mag, dp_pow2(-e)); /* exact: at most digits + 1 significant bits */
    return sum < 0 ? -v : v;
}

#endif
