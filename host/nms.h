/*
 * Internal interface of the NMS family: the CPU reference (host/cpu_nms.c)
 * and the CUDA launchers (cuda/nms.cu). Arguments reach them validated.
 */
#ifndef DETPOST_NMS_H
#define DETPOST_NMS_H

#include "internal.h"

#ifdef __cplusplus
extern "C" {
#endif

detpost_status cpu_nms(const detpost_nms_params *p, const float *boxes, const float *scores, int64_t n,
                       int64_t *keep, float *keep_scores, int64_t *num_keep);
detpost_status cpu_batched_nms(const detpost_batched_nms_params *p, const float *boxes, const float *scores,
                               int64_t batch, int64_t num_boxes, int64_t num_classes, int32_t *num_dets,
                               float *det_boxes, float *det_scores, int32_t *det_classes, int32_t *det_indices);

/* Candidate slots per image of batched NMS: the pre_nms_top_k limit, or
 * every (box, class) pair when there is none. */
int64_t dp_batched_nms_capacity(const detpost_batched_nms_params *p, int64_t num_boxes, int64_t num_classes);

detpost_status cuda_nms(detpost_ctx *ctx, const detpost_nms_params *p, const float *boxes, const float *scores,
                        int64_t n, int64_t *keep, float *keep_scores, int64_t *num_keep);
size_t cuda_nms_workspace(const detpost_nms_params *p, int64_t n);
detpost_status cuda_batched_nms(detpost_ctx *ctx, const detpost_batched_nms_params *p, const float *boxes,
                                const float *scores, int64_t batch, int64_t num_boxes, int64_t num_classes,
                                int32_t *num_dets, float *det_boxes, float *det_scores, int32_t *det_classes,
                                int32_t *det_indices);
size_t cuda_batched_nms_workspace(const detpost_batched_nms_params *p, int64_t batch, int64_t num_boxes,
                                  int64_t num_classes);

#ifdef __cplusplus
}
#endif

#endif
