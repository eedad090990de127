/*
 * CPU reference for box overlaps and mask IoU: the plain double loop over
 * box pairs with the shared scalar math, and a direct count of mask bits.
 */
#include "box_math.h"
#include "internal.h"

void cpu_box_overlaps(const detpost_overlap_params *p, const float *a, int64_t na, const float *b, int64_t nb,
                      int64_t batch, float *out)
{
    for (int64_t img = 0; img < batch; ++img) {
        const float *ai = a + img * na * 4;
        const float *bi = b + img * nb * 4;
        for (int64_t i = 0; i < na; ++i) {
            const float *x = ai + i * 4;
            if (p->aligned) {
                const float *y = bi + i * 4;
                out[img * na + i] = dp_overlap(x[0], x[1], x[2], x[3], y[0], y[1], y[2], y[3], p->mode, p->offset);
                continue;
            }
            float *row = out + (img * na + i) * nb;
            for (int64_t j = 0; j < nb; ++j) {
                const float *y = bi + j * 4;
                row[j] = dp_overlap(x[0], x[1], x[2], x[3], y[0], y[1], y[2], y[3], p->mode, p->offset);
            }
        }
    }
}

void cpu_mask_iou(const uint8_t *a, int64_t na, const uint8_t *b, int64_t nb, int64_t pixels, float *out)
{
    for (int64_t i = 0; i < na; ++i) {
        const uint8_t *x = a + i * pixels;
        for (int64_t j = 0; j < nb; ++j) {
            const uint8_t *y = b + j * pixels;
            int64_t inter = 0, uni = 0;
            for (int64_t k = 0; k < pixels; ++k) {
                inter += x[k] && y[k];
                uni += x[k] || y[k];
            }
            out[i * nb + j] = uni > 0 ? (float)inter / (float)uni : 0.0f;
        }
    }
}
