/*
 * Internal interface of the RoI family (RoI Align, RoI Pool, multi-level
 * RoI Align): the job description that host/roi.c builds once the arguments
 * are checked, and the CPU reference and CUDA entry points that run it.
 */
#ifndef DETPOST_ROI_H
#define DETPOST_ROI_H

#include "internal.h"

#ifdef __cplusplus
extern "C" {
#endif

#define DP_ROI_MAX_POOLED 256

typedef struct dp_roi_level {
    const void *features;
    int64_t h, w;
    float scale;
} dp_roi_level;

/* Everything an op needs besides its outputs, already validated. A
 * single-level op is a one-level job. Passed by value to the kernels. */
typedef struct dp_roi_job {
    dp_roi_level level[DETPOST_MAX_PYRAMID_LEVELS];
    int num_levels;
    int k_min;           /* canonical level of level[0] */
    int canonical_level;
    float canonical_scale, eps;
    int64_t n, c;
    int pooled_h, pooled_w, sampling_ratio, aligned;
    int mode, layout, dtype;
    const float *rois;
    int64_t num_rois;
} dp_roi_job;

/* Where a backward pass accumulates (carved from the workspace by host/roi.c):
 * float32 with atomics straight into grad_features; float16 with atomics into
 * acc_float; deterministic into acc_fixed (int64 fixed point) scaled from the
 * largest |grad_out|, whose float bits go to max_bits. weight_log2 bounds the
 * total weight reaching one feature element (2^weight_log2 >= rois * bins). */
typedef struct dp_roi_grad {
    void *grad_features;
    float *acc_float;
    int64_t *acc_fixed;
    uint32_t *max_bits;
    int weight_log2;
    int64_t elements; /* of grad_features */
} dp_roi_grad;

/* Host scratch of the CPU reference: per-channel accumulators of one bin. */
typedef struct dp_roi_cpu_scratch {
    float *value;
    int32_t *best_y, *best_x;
} dp_roi_cpu_scratch;

/* ---- CPU reference (host/cpu_roi.c); rois are valid ---------------------- */
void cpu_roi_align(const dp_roi_job *job, void *out, int32_t *levels, const dp_roi_cpu_scratch *s);
void cpu_roi_align_backward(const dp_roi_job *job, const void *grad_out, const dp_roi_grad *g,
                            const dp_roi_cpu_scratch *s);
void cpu_roi_pool(const dp_roi_job *job, void *out, int32_t *argmax);
void cpu_roi_pool_backward(const dp_roi_job *job, const void *grad_out, const int32_t *argmax, const dp_roi_grad *g);
/* Index of the first invalid row, -1 when all are valid. */
int64_t cpu_roi_first_invalid(const float *rois, int64_t num_rois, int64_t n);

/* ---- CUDA backend (cuda/roi.cu) ----------------------------------------- */
/* Enqueues a check of every row that records the first invalid one in the
 * context's fault word (the ops' kernels skip such rows themselves). */
detpost_status cuda_roi_flag_rows(detpost_ctx *ctx, const float *rois, int64_t num_rois, int64_t n);
detpost_status cuda_roi_align(detpost_ctx *ctx, const dp_roi_job *job, void *out, int32_t *levels);
detpost_status cuda_roi_align_backward(detpost_ctx *ctx, const dp_roi_job *job, const void *grad_out,
                                       const dp_roi_grad *g);
detpost_status cuda_roi_pool(detpost_ctx *ctx, const dp_roi_job *job, void *out, int32_t *argmax);
detpost_status cuda_roi_pool_backward(detpost_ctx *ctx, const dp_roi_job *job, const void *grad_out,
                                      const int32_t *argmax, const dp_roi_grad *g);
detpost_status cuda_roi_check(detpost_ctx *ctx, const float *rois, int64_t num_rois, int64_t n,
                              int64_t *first_invalid);

#ifdef __cplusplus
}
#endif

#endif
