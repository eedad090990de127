/*
 * Scalar box math shared by the CPU reference (C) and the kernels (CUDA C++,
 * or g++ in the sim flavor). Written once so both backends take the same
 * decisions: every product goes through DP_MUL, which the device compiler may
 * not fuse into an FMA, and the host build disables contraction
 * (-ffp-contract=off), so a value computed here is bit-identical on both.
 */
#ifndef DETPOST_BOX_MATH_H
#define DETPOST_BOX_MATH_H

#include <math.h>

#if defined(__CUDACC__)
#define DP_HD static __host__ __device__ __forceinline__
#else
#define DP_HD static inline
#endif

#if defined(__CUDA_ARCH__)
#define DP_MUL(a, b) __fmul_rn((a), (b))
#else
#define DP_MUL(a, b) ((a) * (b))
#endif

#define DP_FLT_MAX 3.402823466e+38f
#define DP_DIOU_EPS 1e-7f
#define DP_FOUR_OVER_PI2 0.40528473456935108578f

#define DP_PI_2_HI 1.57079637f              /* pi / 2 rounded to float (above it) */
#define DP_PI_2_LO -4.37113883e-8f          /* pi / 2 - DP_PI_2_HI */
#define DP_PI_4_HI 0.785398185f             /* pi / 4 rounded to float */
#define DP_PI_4_LO -2.18556941e-8f          /* pi / 4 - DP_PI_4_HI */
#define DP_TAN_PI_8 0.414213562f            /* tan(pi / 8) */
#define DP_TAN_3PI_8 2.41421356f            /* tan(3 pi / 8) */

/* arctan x from + - * / only, so that CIoU's aspect term is the same on both
 * backends (the device's atanf and glibc's differ by an ulp or two).
 * |x| is reduced to |t| <= tan(pi / 8): x > tan(3 pi / 8) gives
 * pi / 2 + atan(-1 / x), x > tan(pi / 8) gives pi / 4 + atan((x - 1) / (x + 1))
 * (x - 1 is exact from 1 / 2 up); atan t = t - t^3 / 3 + t^5 / 5 - ... to t^17, whose
 * truncation is below 2^-26 of t. Accurate to about 2 ulp; atan(+-inf) is
 * +-pi / 2, NaN stays NaN. */
DP_HD float dp_atan(float x)
{
    if (!(x == x)) return x;
    const float ax = fabsf(x);
    float t, hi, lo;
    if (ax > DP_TAN_3PI_8) {
        t = -1.0f / ax;
        hi = DP_PI_2_HI, lo = DP_PI_2_LO;
    } else if (ax > DP_TAN_PI_8) {
        t = (ax - 1.0f) / (ax + 1.0f);
        hi = DP_PI_4_HI, lo = DP_PI_4_LO;
    } else {
        t = ax;
        hi = lo = 0.0f;
    }
    const float z = DP_MUL(t, t);
    float p = 1.0f / 17.0f;
    p = DP_MUL(p, z) - 1.0f / 15.0f;
    p = DP_MUL(p, z) + 1.0f / 13.0f;
    p = DP_MUL(p, z) - 1.0f / 11.0f;
    p = DP_MUL(p, z) + 1.0f / 9.0f;
    p = DP_MUL(p, z) - 1.0f / 7.0f;
    p = DP_MUL(p, z) + 1.0f / 5.0f;
    p = DP_MUL(p, z) - 1.0f / 3.0f;
    const float r = hi + (lo + (t + DP_MUL(DP_MUL(t, z), p)));
    return x < 0.0f ? -r : r;
}

/* Must match detpost_overlap_mode. */
enum { DP_MODE_IOU = 0, DP_MODE_IOF = 1, DP_MODE_GIOU = 2, DP_MODE_DIOU = 3, DP_MODE_CIOU = 4 };

/* Width or height of a box side: the legacy convention adds `offset` (1). */
DP_HD float dp_extent(float lo, float hi, float offset) { return hi - lo + offset; }

/* A box is usable when its width and height are > 0 and its area is a
 * positive finite float: an area that underflows to 0 (a 1e-30 square)
 * would make IoU 0 / 0. NaN fails every comparison, so NaN coordinates make
 * a box empty. */
DP_HD int dp_box_nonempty(float w, float h, float area)
{
    return w > 0.0f && h > 0.0f && area > 0.0f && area <= DP_FLT_MAX;
}

/* A box with the quantities every overlap mode needs, computed once so a
 * kernel comparing one box against many can reuse them. */
typedef struct dp_pbox {
    float x1, y1, x2, y2, w, h, area;
    int nonempty;
} dp_pbox;

DP_HD dp_pbox dp_prepare_box(float x1, float y1, float x2, float y2, float offset)
{
    dp_pbox b;
    b.x1 = x1, b.y1 = y1, b.x2 = x2, b.y2 = y2;
    b.w = dp_extent(x1, x2, offset);
    b.h = dp_extent(y1, y2, offset);
    b.area = DP_MUL(b.w, b.h);
    b.nonempty = dp_box_nonempty(b.w, b.h, b.area);
    return b;
}

/* The overlap of box a with box b in one of the modes; 0 when either box is
 * empty; never NaN (torchvision's 0/0 cases give 0 here). */
DP_HD float dp_overlap_prepared(const dp_pbox *a, const dp_pbox *b, int mode, float offset)
{
    if (!a->nonempty || !b->nonempty) return 0.0f;
    float iw = dp_extent(fmaxf(a->x1, b->x1), fminf(a->x2, b->x2), offset);
    float ih = dp_extent(fmaxf(a->y1, b->y1), fminf(a->y2, b->y2), offset);
    iw = iw > 0.0f ? iw : 0.0f;
    ih = ih > 0.0f ? ih : 0.0f;
    const float inter = DP_MUL(iw, ih);
    if (mode == DP_MODE_IOF) return inter / a->area;

    const float uni = a->area + b->area - inter;
    const float iou = inter / uni;
    if (mode == DP_MODE_IOU) return iou;

    const float cw = dp_extent(fminf(a->x1, b->x1), fmaxf(a->x2, b->x2), offset);
    const float ch = dp_extent(fminf(a->y1, b->y1), fmaxf(a->y2, b->y2), offset);
    float r;
    if (mode == DP_MODE_GIOU) {
        const float enclosing = DP_MUL(cw, ch);
        r = iou - (enclosing - uni) / enclosing;
    } else {
        const float diag = DP_MUL(cw, cw) + DP_MUL(ch, ch) + DP_DIOU_EPS;
        const float dx = (b->x1 + b->x2) / 2.0f - (a->x1 + a->x2) / 2.0f;
        const float dy = (b->y1 + b->y2) / 2.0f - (a->y1 + a->y2) / 2.0f;
        r = iou - (DP_MUL(dx, dx) + DP_MUL(dy, dy)) / diag;
        if (mode == DP_MODE_CIOU) {
            const float da = dp_atan(b->w / b->h) - dp_atan(a->w / a->h);
            const float v = DP_MUL(DP_FOUR_OVER_PI2, DP_MUL(da, da));
            const float alpha = v / (1.0f - iou + v + DP_DIOU_EPS);
            r = r - DP_MUL(alpha, v);
        }
    }
    return r == r ? r : 0.0f;
}

DP_HD float dp_overlap(float ax1, float ay1, float ax2, float ay2, float bx1, float by1, float bx2, float by2,
                       int mode, float offset)
{
    const dp_pbox a = dp_prepare_box(ax1, ay1, ax2, ay2, offset);
    const dp_pbox b = dp_prepare_box(bx1, by1, bx2, by2, offset);
    return dp_overlap_prepared(&a, &b, mode, offset);
}

#endif
