/*
 * IEEE binary16 ("half") storage for the CPU reference (C) and the kernels
 * (CUDA C++, or g++ in the sim flavor) without cuda_fp16.h: values travel as
 * uint16_t bit patterns and all arithmetic is float. Widening is exact and
 * narrowing rounds to nearest even, so the integer code below and the
 * device's conversion instructions give the same bits (NaN payloads aside).
 */
#ifndef DETPOST_HALF_H
#define DETPOST_HALF_H

#include <stdint.h>
#include <string.h>

#include "box_math.h"
#include "float_math.h"

DP_HD int dp_finite(float f) { return (dp_float_bits(f) & 0x7f800000u) != 0x7f800000u; }

DP_HD float dp_half_to_float(uint16_t h)
{
#if defined(__CUDA_ARCH__)
    float f;
    asm("cvt.f32.f16 %0, %1;" : "=f"(f) : "h"(h));
    return f;
#else
    const uint32_t sign = (uint32_t)(h & 0x8000u) << 16;
    const uint32_t exponent = (h >> 10) & 0x1fu, mantissa = h & 0x3ffu;
    if (exponent == 0) {
        /* zero or subnormal: mantissa * 2^-24, exact in float */
        const float magnitude = DP_MUL((float)mantissa, 5.9604644775390625e-8f);
        return dp_bits_float(dp_float_bits(magnitude) | sign);
    }
    if (exponent == 31) return dp_bits_float(sign | 0x7f800000u | (mantissa << 13));
    return dp_bits_float(sign | ((exponent + 112u) << 23) | (mantissa << 13));
#endif
}

/* Rounds `bits` right by `shift` (1 to 31) to nearest, ties to even. */
DP_HD uint32_t dp_round_shift(uint32_t bits, int shift)
{
    const uint32_t kept = bits >> shift, rest = bits & ((1u << shift) - 1u), half = 1u << (shift - 1);
    return kept + (rest > half || (rest == half && (kept & 1u)));
}

DP_HD uint16_t dp_float_to_half(float f)
{
#if defined(__CUDA_ARCH__)
    unsigned short h;
    asm("cvt.rn.f16.f32 %0, %1;" : "=h"(h) : "f"(f));
    return h;
#else
    const uint32_t x = dp_float_bits(f);
    const uint32_t sign = (x >> 16) & 0x8000u, magnitude = x & 0x7fffffffu;
    if (magnitude >= 0x7f800000u) return (uint16_t)(sign | (magnitude > 0x7f800000u ? 0x7e00u : 0x7c00u));
    /* 65520 and above round to infinity (65504 is the largest half) */
    if (magnitude >= 0x477ff000u) return (uint16_t)(sign | 0x7c00u);
    if (magnitude < 0x38800000u) {
        /* below 2^-14: a multiple of 2^-24, the mantissa (with its implicit
         * bit) shifted right by 126 - exponent; below 2^-25 that is 0 */
        if (magnitude < 0x33000000u) return (uint16_t)sign;
        const uint32_t exponent = magnitude >> 23, mantissa = (magnitude & 0x7fffffu) | 0x800000u;
        return (uint16_t)(sign | dp_round_shift(mantissa, (int)(126u - exponent)));
    }
    /* normal: rebias the exponent (127 -> 15) and drop 13 mantissa bits; a
     * carry out of the mantissa correctly bumps the exponent */
    return (uint16_t)(sign | dp_round_shift(magnitude - 0x38000000u, 13));
#endif
}

#endif
