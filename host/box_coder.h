/*
 * Box coding shared by the CPU reference (C) and the kernels (CUDA C++, or
 * g++ in the sim flavor): encode, decode and clipping.
 *
 * Decoded boxes feed decisions (the empty-box test of a refine policy, and
 * the IoU of the next cascade stage), so they must be bit-identical on both
 * backends: exp and log come from float_math.h, and every product goes
 * through DP_MUL (no FMA on the device, -ffp-contract=off on the host).
 */
#ifndef DETPOST_BOX_CODER_H
#define DETPOST_BOX_CODER_H

#include <stdint.h>
#include <string.h>

#include "../include/detpost.h"
#include "box_math.h"
#include "float_math.h"

/* Centre and size of a box; returns 0 when the box is empty (the same test
 * as the overlaps: width and height > 0, finite area). */
DP_HD int dp_box_geometry(const float *b, float offset, float *cx, float *cy, float *w, float *h)
{
    *w = dp_extent(b[0], b[2], offset);
    *h = dp_extent(b[1], b[3], offset);
    *cx = DP_MUL(b[0] + b[2], 0.5f);
    *cy = DP_MUL(b[1] + b[3], 0.5f);
    return dp_box_nonempty(*w, *h, DP_MUL(*w, *h));
}

/* ln(num / den) for positive finite num and den, without overflow of the
 * quotient: the direct form when the quotient is a normal float, the
 * difference of logarithms otherwise. */
DP_HD float dp_log_ratio(float num, float den)
{
    const float q = num / den;
    if (q >= 1.17549435e-38f && q <= DP_FLT_MAX) return dp_log(q);
    return dp_log(num) - dp_log(den);
}

/* deltas (normalised) of box g against reference p; 0 when either is empty. */
DP_HD void dp_box_encode(const detpost_box_coder *c, const float *p, const float *g, float *deltas)
{
    float px, py, pw, ph, gx, gy, gw, gh;
    const int ok_p = dp_box_geometry(p, c->offset, &px, &py, &pw, &ph);
    const int ok_g = dp_box_geometry(g, c->offset, &gx, &gy, &gw, &gh);
    if (!ok_p || !ok_g) {
        deltas[0] = deltas[1] = deltas[2] = deltas[3] = 0.0f;
        return;
    }
    const float d[4] = {(gx - px) / pw, (gy - py) / ph, dp_log_ratio(gw, pw), dp_log_ratio(gh, ph)};
    for (int k = 0; k < 4; ++k) deltas[k] = (d[k] - c->means[k]) / c->stds[k];
}

/* The box the normalised deltas make of RoI p (x1, y1, x2, y2), unclipped.
 * An empty p comes back unchanged; NaN deltas count as 0. */
DP_HD void dp_box_decode(const detpost_box_coder *c, const float *p, const float *deltas, float *out)
{
    float px, py, pw, ph;
    if (!dp_box_geometry(p, c->offset, &px, &py, &pw, &ph)) {
        out[0] = p[0], out[1] = p[1], out[2] = p[2], out[3] = p[3];
        return;
    }
    float d[4];
    for (int k = 0; k < 4; ++k) {
        const float raw = deltas[k] == deltas[k] ? deltas[k] : 0.0f; /* before the means, which may be non-zero */
        d[k] = DP_MUL(raw, c->stds[k]) + c->means[k];
    }
    const float dw = fminf(fmaxf(d[2], -c->clamp), c->clamp);
    const float dh = fminf(fmaxf(d[3], -c->clamp), c->clamp);
    const float gw = DP_MUL(pw, dp_exp(dw)), gh = DP_MUL(ph, dp_exp(dh));
    const float gx = px + DP_MUL(pw, d[0]), gy = py + DP_MUL(ph, d[1]);
    const float half_w = DP_MUL(gw - c->offset, 0.5f), half_h = DP_MUL(gh - c->offset, 0.5f);
    out[0] = gx - half_w;
    out[1] = gy - half_h;
    out[2] = gx + half_w;
    out[3] = gy + half_h;
}

/* The deltas row i of a decode uses: [n, 4] class-agnostic, else the class
 * labels[i] of [n, num_classes, 4]; NULL when the label names no class. */
DP_HD const float *dp_row_deltas(const float *deltas, const int32_t *labels, int64_t num_classes, int64_t i)
{
    if (num_classes == 1) return deltas + i * 4;
    const int32_t label = labels[i];
    if (label < 0 || label >= num_classes) return 0;
    return deltas + (i * num_classes + label) * 4;
}

/* One row of detpost_box_decode: roi and out are (batch_index, x1, y1, x2, y2);
 * deltas NULL keeps the RoI (a label outside the classes); sizes NULL: no
 * clipping. */
DP_HD void dp_decode_row(const detpost_box_coder *c, const float *roi, const float *deltas, const float *sizes,
                         int64_t num_images, float *out)
{
    float box[4];
    if (deltas) dp_box_decode(c, roi + 1, deltas, box);
    else box[0] = roi[1], box[1] = roi[2], box[2] = roi[3], box[3] = roi[4];
    float batch_index = roi[0];
    if (sizes) {
        const float bi = roi[0];
        if (!(bi >= 0.0f && bi < (float)num_images && bi == floorf(bi))) {
            out[0] = -1.0f;
            out[1] = out[2] = out[3] = out[4] = 0.0f;
            return;
        }
        const float *hw = sizes + (int64_t)bi * 2;
        const float xmax = hw[1] - c->offset, ymax = hw[0] - c->offset;
        box[0] = fminf(fmaxf(box[0], 0.0f), xmax);
        box[1] = fminf(fmaxf(box[1], 0.0f), ymax);
        box[2] = fminf(fmaxf(box[2], 0.0f), xmax);
        box[3] = fminf(fmaxf(box[3], 0.0f), ymax);
    }
    out[0] = batch_index;
    out[1] = box[0], out[2] = box[1], out[3] = box[2], out[4] = box[3];
}

#endif
