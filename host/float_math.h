/*
 * Float helpers shared by the CPU reference and the kernels: bit moves, and
 * exp and log written from + - * / and exact operations (floorf, bit moves)
 * only, every product through DP_MUL. The device's expf/logf and glibc's
 * differ by an ulp here and there; decisions that depend on an exponential
 * or a logarithm (a decoded box's emptiness, a soft-NMS decay) must come out
 * the same on both backends, so they use these. Both are accurate to about
 * 2 ulp; dp_exp(0) is exactly 1.
 */
#ifndef DETPOST_FLOAT_MATH_H
#define DETPOST_FLOAT_MATH_H

#include <stdint.h>
#include <string.h>

#include "box_math.h"

DP_HD uint32_t dp_float_bits(float x)
{
#if defined(__CUDA_ARCH__)
    return __float_as_uint(x);
#else
    uint32_t u;
    memcpy(&u, &x, sizeof u);
    return u;
#endif
}

DP_HD float dp_bits_float(uint32_t u)
{
#if defined(__CUDA_ARCH__)
    return __uint_as_float(u);
#else
    float x;
    memcpy(&x, &u, sizeof x);
    return x;
#endif
}

#define DP_LN2_HI 0.693145751953125f       /* ln 2 with 12 trailing zero bits: n * DP_LN2_HI is exact */
#define DP_LN2_LO 1.42860682030941723212e-6f /* ln 2 - DP_LN2_HI */
#define DP_LOG2E 1.44269504088896340736f
#define DP_SQRT2 1.41421356237309504880f
#define DP_EXP_MAX 88.7228390f  /* beyond: exp overflows */
#define DP_EXP_MIN -103.972084f /* below: exp underflows to 0 */

/* x * 2^n for n in [-152, 129], in steps that keep each factor a normal float. */
DP_HD float dp_scale_pow2(float x, int n)
{
    if (n > 127) {
        x = DP_MUL(x, dp_bits_float(254u << 23));
        n -= 127;
    } else if (n < -126) {
        x = DP_MUL(x, dp_bits_float(1u << 23));
        n += 126;
    }
    return DP_MUL(x, dp_bits_float((uint32_t)(n + 127) << 23));
}

/* e^x: x = n ln 2 + r with |r| <= ln 2 / 2 (Cody and Waite), e^r from its
 * Taylor series to r^7 (truncation below 2^-27 there), scaled by 2^n. */
DP_HD float dp_exp(float x)
{
    if (!(x == x)) return x;
    if (x > DP_EXP_MAX) return INFINITY;
    if (x < DP_EXP_MIN) return 0.0f;
    const float n = floorf(DP_MUL(x, DP_LOG2E) + 0.5f);
    const float r = (x - DP_MUL(n, DP_LN2_HI)) - DP_MUL(n, DP_LN2_LO);
    float p = 1.0f / 5040.0f;
    p = DP_MUL(p, r) + 1.0f / 720.0f;
    p = DP_MUL(p, r) + 1.0f / 120.0f;
    p = DP_MUL(p, r) + 1.0f / 24.0f;
    p = DP_MUL(p, r) + 1.0f / 6.0f;
    p = DP_MUL(p, r) + 0.5f;
    p = DP_MUL(p, r) + 1.0f;
    p = DP_MUL(p, r) + 1.0f;
    return dp_scale_pow2(p, (int)n);
}

/* ln x for x > 0: x = m 2^e with m in [sqrt(1/2), sqrt(2)), and
 * ln m = 2 atanh(s), s = (m - 1) / (m + 1), |s| <= 0.172, from its series to
 * s^9 (truncation below 2^-28). 0 gives -inf, +inf gives +inf, anything
 * else (negative, NaN) NaN. */
DP_HD float dp_log(float x)
{
    if (!(x > 0.0f)) return x == 0.0f ? -INFINITY : NAN;
    if (x > DP_FLT_MAX) return x;
    int e = 0;
    if (x < 1.17549435e-38f) { /* subnormal: make it normal first (exact) */
        x = DP_MUL(x, 33554432.0f);
        e = -25;
    }
    const uint32_t bits = dp_float_bits(x);
    e += (int)(bits >> 23) - 127;
    float m = dp_bits_float((bits & 0x007fffffu) | 0x3f800000u);
    if (m > DP_SQRT2) {
        m = DP_MUL(m, 0.5f);
        e += 1;
    }
    const float f = m - 1.0f;
    const float s = f / (2.0f + f);
    const float s2 = DP_MUL(s, s);
    float p = 2.0f / 9.0f;
    p = DP_MUL(p, s2) + 2.0f / 7.0f;
    p = DP_MUL(p, s2) + 2.0f / 5.0f;
    p = DP_MUL(p, s2) + 2.0f / 3.0f;
    p = DP_MUL(p, s2) + 2.0f;
    const float fe = (float)e;
    return DP_MUL(fe, DP_LN2_HI) + (DP_MUL(fe, DP_LN2_LO) + DP_MUL(s, p));
}

#endif
