/*
 * Internal interface of box coding and cascade resampling: the CPU
 * reference (host/cpu_cascade.c) and the CUDA launchers (cuda/cascade.cu),
 * called by the public entries in host/cascade.c once every argument has
 * been checked.
 */
#ifndef DETPOST_CASCADE_H
#define DETPOST_CASCADE_H

#include "internal.h"

#ifdef __cplusplus
extern "C" {
#endif

/* The tensors of one resample call, as the public entry received them. */
typedef struct dp_resample_args {
    int64_t batch, max_proposals, max_gt;
    const float *proposals;
    const int32_t *num_proposals;
    const float *gt_boxes;
    const int32_t *gt_labels;
    const int32_t *num_gt;
    float *rois;
    int32_t *labels;
    float *targets;
    float *max_iou;
    uint8_t *is_gt;
    int32_t *num_samples;
    int32_t *num_pos;
} dp_resample_args;

/* The tensors of one decode or refine call. */
typedef struct dp_decode_args {
    const float *rois;
    const float *deltas;
    int64_t n, num_classes;
    const int32_t *labels;
    const float *image_sizes;
    int64_t num_images;
} dp_decode_args;

void cpu_box_encode(const detpost_box_coder *coder, const float *proposals, const float *targets, int64_t n,
                    float *deltas);
void cpu_box_decode(const detpost_box_coder *coder, const dp_decode_args *a, float *out);
size_t cpu_cascade_resample_workspace(int64_t max_proposals, int64_t max_gt);
detpost_status cpu_cascade_resample(detpost_ctx *ctx, const detpost_stage_params *p, const dp_resample_args *a);
void cpu_cascade_refine(const detpost_box_coder *coder, detpost_refine_policy policy, const dp_decode_args *a,
                        const uint8_t *is_gt, const float *gt_iou, float *next_rois, int64_t *num_next);
void cpu_iou_histogram(int64_t batch, const float *proposals, const int32_t *num_proposals, int64_t max_proposals,
                       const float *gt_boxes, const int32_t *num_gt, int64_t max_gt, int32_t num_bins,
                       int64_t *counts);

detpost_status cuda_box_encode(detpost_ctx *ctx, const detpost_box_coder *coder, const float *proposals,
                               const float *targets, int64_t n, float *deltas);
detpost_status cuda_box_decode(detpost_ctx *ctx, const detpost_box_coder *coder, const dp_decode_args *a, float *out);
size_t cuda_cascade_resample_workspace(const detpost_stage_params *p, int64_t batch, int64_t max_proposals,
                                       int64_t max_gt);
detpost_status cuda_cascade_resample(detpost_ctx *ctx, const detpost_stage_params *p, const dp_resample_args *a);
size_t cuda_cascade_refine_workspace(int64_t num_rois);
detpost_status cuda_cascade_refine(detpost_ctx *ctx, const detpost_box_coder *coder, detpost_refine_policy policy,
                                   const dp_decode_args *a, const uint8_t *is_gt, const float *gt_iou,
                                   float *next_rois, int64_t *num_next);
detpost_status cuda_iou_histogram(detpost_ctx *ctx, int64_t batch, const float *proposals,
                                  const int32_t *num_proposals, int64_t max_proposals, const float *gt_boxes,
                                  const int32_t *num_gt, int64_t max_gt, int32_t num_bins, int64_t *counts);

#ifdef __cplusplus
}
#endif

#endif
