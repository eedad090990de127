/*
 * Internal interface shared by host/ (C11) and the CUDA launchers in cuda/
 * (C++): the context's layout, error reporting, argument checks, workspace
 * carving and the CUDA backend's entry points. Not installed.
 */
#ifndef DETPOST_INTERNAL_H
#define DETPOST_INTERNAL_H

#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "../include/detpost.h"

#ifdef __cplusplus
extern "C" {
#endif

#ifndef DETPOST_WITH_CUDA
#define DETPOST_WITH_CUDA 0
#endif

struct detpost_ctx {
    detpost_backend backend;
    int device;
    detpost_status init_status; /* not OK: creation failed, the context only reports why */
    void *stream;               /* cudaStream_t */
    void *cuda;                 /* backend state owned by cuda/runtime.cu */
    void *fault;                /* CUDA: the device fault word, see dp_fault_kind */
    int multiprocessors;        /* CUDA: the device's SM count, read once at creation */
    int smem_optin;             /* CUDA: the most shared memory a block may opt in to, bytes */
    int soft_nms_blocks[2];     /* CUDA: cooperative soft-NMS blocks the device holds, linear and gaussian,
                                 * found on first use (0: not yet, -1: none) */
    int nms_resolve_ready;      /* CUDA: the NMS resolve kernel's shared-memory limit is raised */
    struct {
        void *ptr;
        size_t bytes;
        int owned; /* 1: the library's arena; 0: lent by the caller */
    } ws;
    char message[512];
};

/* Records the sentence for detpost_last_error and returns `status`. */
detpost_status dp_fail(detpost_ctx *ctx, detpost_status status, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 3, 4)))
#endif
    ;

/* Entry checks of every public operation, in this order: the context is
 * usable (clears its message), then each argument. Each returns DETPOST_OK or
 * the failure already recorded. */
detpost_status dp_begin(detpost_ctx *ctx);
detpost_status dp_check_ptr(detpost_ctx *ctx, const void *ptr, const char *name);
/* A tensor argument of `elements` elements of `elem_bytes` each: non-NULL
 * unless it holds no elements, aligned to its element size (a GPU faults on
 * a misaligned load, and the context is lost with it), and in the context's
 * memory space (checked on CUDA contexts). */
detpost_status dp_check_tensor(detpost_ctx *ctx, const void *ptr, int64_t elements, size_t elem_bytes,
                               const char *name);
/* dp_check_tensor for a typed pointer: its element size is the pointee's. */
#define DP_CHECK_TENSOR(ctx, ptr, elements, name) dp_check_tensor(ctx, ptr, elements, sizeof *(ptr), name)
detpost_status dp_check_size(detpost_ctx *ctx, int64_t value, const char *name);
/* *out = d0 * d1 * d2 for sizes already checked to be >= 0; fails when the
 * product (or its size in bytes, for elements up to 16 bytes) overflows. */
detpost_status dp_elements(detpost_ctx *ctx, const char *name, int64_t *out, int64_t d0, int64_t d1, int64_t d2);

/* ---- workspace ---------------------------------------------------------- */
/* One function per op lays out its scratch buffers through a carver; the
 * size query runs it with base NULL and the op runs it on the real memory,
 * so the two cannot disagree. */
typedef struct dp_carver {
    char *base; /* NULL while measuring */
    size_t used;
} dp_carver;
#define DP_WS_ALIGN 256
void *dp_carve(dp_carver *c, size_t bytes);
/* What a size query reports for an op that carves `bytes`: enough for any
 * alignment of a caller's buffer. */
size_t dp_workspace_query(size_t bytes);
/* Makes sure the workspace holds `bytes` and returns its base in *ptr. */
detpost_status dp_workspace(detpost_ctx *ctx, size_t bytes, void **ptr);

/* ---- memory of the context ---------------------------------------------- */
/* stream_ordered: on CUDA, allocate and free in the order of the context's
 * stream (the workspace arena), so that neither waits for the device. */
detpost_status dp_mem_alloc(detpost_ctx *ctx, void **ptr, size_t bytes, int stream_ordered);
void dp_mem_free(detpost_ctx *ctx, void *ptr, int stream_ordered);

/* ---- faults found on the device ------------------------------------------ */
/* Bad values inside tensors (a RoI row with a batch index out of range, a
 * count above its maximum) are answered on a CPU context with a status before
 * anything is written. A CUDA operation cannot read its inputs without
 * waiting, so its kernels handle such a row safely (they read nothing out of
 * bounds) and record the first one in the context's fault word; the next call
 * that waits for the stream (detpost_synchronize, detpost_to_host) answers it
 * as DETPOST_ERR_INVALID_ARGUMENT, names the row, and clears it. The word
 * holds min(row * DP_FAULT_KINDS + kind), all ones when clear. */
typedef enum dp_fault_kind {
    DP_FAULT_ROI_ROW = 1, /* rois[row]: batch index outside [0, n) or a non-finite coordinate */
    DP_FAULT_COUNT = 2,   /* image row: num_proposals or num_gt outside [0, its maximum] */
    DP_FAULT_ARGMAX = 3   /* element row of a RoI Pool argmax: outside [-1, h * w) */
} dp_fault_kind;
#define DP_FAULT_KINDS 16
#define DP_FAULT_NONE 0xffffffffffffffffull
/* The sentence for a fault word read back from the device. */
detpost_status dp_fault_status(detpost_ctx *ctx, unsigned long long word);

/* ---- CPU reference operations (host/cpu_*.c) ---------------------------- */
void cpu_box_overlaps(const detpost_overlap_params *p, const float *a, int64_t na, const float *b, int64_t nb,
                      int64_t batch, float *out);
void cpu_mask_iou(const uint8_t *a, int64_t na, const uint8_t *b, int64_t nb, int64_t pixels, float *out);

/* ---- CUDA backend (the cuda/ sources), present when DETPOST_WITH_CUDA ----------- */
int dp_cuda_device_count(void);
detpost_status dp_cuda_init(detpost_ctx *ctx);
void dp_cuda_release(detpost_ctx *ctx);
detpost_status dp_cuda_set_stream(detpost_ctx *ctx, void *stream);
detpost_status dp_cuda_synchronize(detpost_ctx *ctx);
detpost_status dp_cuda_alloc(detpost_ctx *ctx, void **ptr, size_t bytes, int stream_ordered);
void dp_cuda_free(detpost_ctx *ctx, void *ptr, int stream_ordered);
/* Whether the context's stream is capturing a CUDA graph (so nothing may be allocated or freed). */
int dp_cuda_capturing(detpost_ctx *ctx);
detpost_status dp_cuda_to_device(detpost_ctx *ctx, void *dst, const void *src, size_t bytes);
detpost_status dp_cuda_to_host(detpost_ctx *ctx, void *dst, const void *src, size_t bytes);
/* 1 when ptr is device (or managed) memory of the context's device. */
int dp_cuda_is_device_ptr(detpost_ctx *ctx, const void *ptr);
/* Names the device for `detpost devices` ("NVIDIA H100 ..." or the emulator). */
detpost_status dp_cuda_device_name(int device, char *name, size_t len);

detpost_status cuda_box_overlaps(detpost_ctx *ctx, const detpost_overlap_params *p, const float *a, int64_t na,
                                 const float *b, int64_t nb, int64_t batch, float *out);
detpost_status cuda_mask_iou(detpost_ctx *ctx, const uint8_t *a, int64_t na, const uint8_t *b, int64_t nb,
                             int64_t pixels, float *out);
size_t cuda_mask_iou_workspace(int64_t na, int64_t nb, int64_t pixels);

/* The CUDA half of a dispatch: `return DP_CUDA(ctx, cuda_op(...));` after the
 * CPU branch. In a build without CUDA the call is not even compiled; no CUDA
 * context can exist there. */
#if DETPOST_WITH_CUDA
#define DP_CUDA(ctx, call) (call)
#else
#define DP_CUDA(ctx, call) dp_no_cuda(ctx)
#endif
detpost_status dp_no_cuda(detpost_ctx *ctx);

#ifdef __cplusplus
}
#endif

#endif
