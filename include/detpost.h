/*
 * detpost: post-processing operations for object detectors (IoU matrices,
 * NMS, RoI pooling, box coding, cascade resampling) with a CPU reference
 * backend and a CUDA backend that compute the same function.
 *
 * Conventions
 * - Every fallible call returns a detpost_status (0 = DETPOST_OK). On failure
 *   detpost_last_error(ctx) holds a sentence naming the argument at fault and
 *   nothing has been written to the outputs (detpost_alloc alone sets *ptr
 *   to NULL).
 * - Tensor pointers passed to operations live in the context's memory space:
 *   host memory for a DETPOST_CPU context, device memory for DETPOST_CUDA,
 *   each aligned to its element type (float16 tensors to 2 bytes); a
 *   misaligned one is refused with DETPOST_ERR_INVALID_ARGUMENT.
 *   detpost_alloc / detpost_to_ctx / detpost_to_host move data between spaces.
 * - CUDA operations are enqueued on the context's stream and return without
 *   waiting; counts (num_keep, num_dets, ...) are written to context memory.
 *   Only detpost_synchronize, detpost_to_ctx and detpost_to_host wait, and
 *   detpost_alloc / detpost_free / detpost_destroy, which allocate or release
 *   device memory as cudaMalloc / cudaFree do (both may wait for the device):
 *   call them at setup, not per frame.
 * - Parameters beyond the tensors travel in detpost_*_params structs; start
 *   from detpost_*_params_default() so fields added later keep their defaults.
 * - Sizes are int64_t. A context must be used by one host thread at a time.
 * - The library keeps no global state, never prints and never exits.
 */
#ifndef DETPOST_H
#define DETPOST_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define DETPOST_VERSION_MAJOR 0
#define DETPOST_VERSION_MINOR 1
#define DETPOST_VERSION_PATCH 0
#define DETPOST_VERSION_NUMBER \
    (DETPOST_VERSION_MAJOR * 10000 + DETPOST_VERSION_MINOR * 100 + DETPOST_VERSION_PATCH)

/* "MAJOR.MINOR.PATCH" of the library actually linked. */
const char *detpost_version_string(void);

/* Status codes. The numbers are stable: new codes are only ever appended. */
typedef enum detpost_status {
    DETPOST_OK = 0,
    DETPOST_ERR_INVALID_ARGUMENT = 1, /* a NULL pointer, a bad size or parameter */
    DETPOST_ERR_UNSUPPORTED = 2,      /* valid request this build or op cannot do */
    DETPOST_ERR_NO_DEVICE = 3,        /* CUDA asked for but no usable GPU or driver */
    DETPOST_ERR_OUT_OF_MEMORY = 4,    /* host or device allocation failed */
    DETPOST_ERR_WORKSPACE_TOO_SMALL = 5, /* caller-owned workspace cannot hold the op */
    DETPOST_ERR_CUDA = 6,             /* a CUDA runtime or library call failed */
    DETPOST_ERR_IO = 7,               /* a file could not be read or written */
    DETPOST_ERR_PARSE = 8,            /* malformed input text (JSON) */
    DETPOST_ERR_INTERNAL = 9          /* a bug in detpost: please report it */
} detpost_status;

/* Upper-case name of a status ("OK", "INVALID_ARGUMENT", ...); never NULL. */
const char *detpost_status_name(detpost_status status);

/* ------------------------------------------------------------------------ */
/* Context                                                                   */
/* ------------------------------------------------------------------------ */

typedef enum detpost_backend {
    DETPOST_CPU = 0,  /* the reference implementation, host memory */
    DETPOST_CUDA = 1  /* CUDA kernels, device memory, asynchronous on a stream */
} detpost_backend;

typedef struct detpost_ctx detpost_ctx;

/* Creates a context for one backend; `device` is the CUDA device ordinal
 * (ignored for DETPOST_CPU). On success *ctx is ready to use.
 * On failure *ctx still receives a context that holds the reason, readable
 * with detpost_last_error(*ctx); every other call on it fails, and it must be
 * released with detpost_destroy. Only when even that context cannot be
 * allocated is *ctx set to NULL (DETPOST_ERR_OUT_OF_MEMORY).
 * A CUDA context where there is no GPU answers DETPOST_ERR_NO_DEVICE. */
detpost_status detpost_create(detpost_ctx **ctx, detpost_backend backend, int device);

/* Releases the context, its workspace arena and its library handles.
 * Waits for the context's stream first. NULL is accepted and ignored. */
void detpost_destroy(detpost_ctx *ctx);

/* The sentence describing the last failure on this context, "" if none.
 * The string belongs to the context and changes with the next failing call. */
const char *detpost_last_error(const detpost_ctx *ctx);

detpost_backend detpost_get_backend(const detpost_ctx *ctx);

/* Sets the CUDA stream (a cudaStream_t passed as void *; NULL = the legacy
 * default stream) on which the context enqueues its work. DETPOST_CPU
 * contexts accept only NULL. */
detpost_status detpost_set_stream(detpost_ctx *ctx, void *stream);
void *detpost_get_stream(const detpost_ctx *ctx);

/* Waits until all work enqueued on the context's stream has finished.
 * Bad values that CUDA kernels found inside tensors since the last wait (a
 * RoI row out of range, a count above its maximum: the ops' comments say
 * which) are answered here as DETPOST_ERR_INVALID_ARGUMENT naming the first
 * one, once; detpost_to_host, which also waits, answers them the same way
 * after making its copy. */
detpost_status detpost_synchronize(detpost_ctx *ctx);

/* Number of usable CUDA devices: 0 when the build has no CUDA backend or
 * there is no GPU or driver (any CUDA error counts as none). The emulated
 * build reports its one emulated device. */
int detpost_cuda_device_count(void);

/* ------------------------------------------------------------------------ */
/* Memory                                                                    */
/* ------------------------------------------------------------------------ */

/* Allocates `bytes` in the context's memory space (256-byte aligned; on
 * CUDA with cudaMalloc, usable from any stream). A request of 0 bytes yields
 * *ptr == NULL and DETPOST_OK; a failure sets *ptr to NULL. */
detpost_status detpost_alloc(detpost_ctx *ctx, void **ptr, size_t bytes);
/* Frees memory from detpost_alloc on the same context; NULL is ignored.
 * On CUDA this is cudaFree, which waits for the work in flight on the device
 * before the memory is released. */
detpost_status detpost_free(detpost_ctx *ctx, void *ptr);
/* Copies `bytes` from host memory into context memory and waits for it. */
detpost_status detpost_to_ctx(detpost_ctx *ctx, void *dst_ctx, const void *src_host, size_t bytes);
/* Copies `bytes` from context memory into host memory and waits for it
 * (and for the work before it on the context's stream). */
detpost_status detpost_to_host(detpost_ctx *ctx, void *dst_host, const void *src_ctx, size_t bytes);

/* Workspace. By default the context owns an arena in its memory space that
 * grows only when an operation needs more than it holds, so repeated calls
 * of the same shapes allocate nothing. A caller may instead lend its own
 * buffer (context memory, any alignment is rounded up internally): from then
 * on the library never allocates scratch and an operation that needs more
 * answers DETPOST_ERR_WORKSPACE_TOO_SMALL. ptr == NULL returns to the owned
 * arena. The buffer must stay valid until the work using it has finished.
 *
 * CUDA graphs. Every operation can be captured (cudaStreamBeginCapture on the
 * context's stream, which must not be the legacy default stream): it only
 * enqueues work. The arena never grows during a capture, since the graph
 * would then own the allocation and replay work on a freed arena: an
 * operation that would need to grow it answers DETPOST_ERR_WORKSPACE_TOO_SMALL
 * and records nothing, the capture left intact. Make each call once before
 * capturing (the arena then holds what it needs), or lend a workspace sized
 * with the *_workspace_size queries. The calls that wait, allocate or release
 * the arena cannot be part of a graph: while the context's stream captures,
 * detpost_synchronize, detpost_to_ctx, detpost_to_host, detpost_alloc,
 * detpost_free, detpost_set_stream (to another stream) and
 * detpost_set_workspace answer DETPOST_ERR_UNSUPPORTED, the capture left
 * intact. A graph reads its inputs and writes its outputs at the addresses
 * captured, each time it is launched. */
detpost_status detpost_set_workspace(detpost_ctx *ctx, void *ptr, size_t bytes);
/* Bytes currently held by the owned arena (0 with a caller workspace). */
size_t detpost_workspace_capacity(const detpost_ctx *ctx);

/* ------------------------------------------------------------------------ */
/* Box overlaps                                                              */
/* ------------------------------------------------------------------------ */

/* Boxes are float32 (x1, y1, x2, y2); width = x2 - x1 + offset. A box whose
 * width or height is not > 0 (NaN included), or whose float area is not > 0
 * and finite (it overflows, or underflows to 0), is empty: every overlap mode
 * gives 0 for it. No mode yields NaN. */
typedef enum detpost_overlap_mode {
    DETPOST_IOU = 0,  /* intersection / union */
    DETPOST_IOF = 1,  /* intersection / area of the box from `a` */
    DETPOST_GIOU = 2, /* IoU - (enclosing area - union) / enclosing area */
    DETPOST_DIOU = 3, /* IoU - centre distance^2 / (enclosing diagonal^2 + 1e-7) */
    DETPOST_CIOU = 4  /* DIoU - alpha * v, v the aspect-ratio term (torchvision) */
} detpost_overlap_mode;

typedef struct detpost_overlap_params {
    detpost_overlap_mode mode;
    int aligned;  /* 0: every a against every b; 1: a[i] against b[i] */
    float offset; /* 0 (continuous) or 1 (legacy pixel convention) */
} detpost_overlap_params;

/* mode DETPOST_IOU, aligned 0, offset 0 */
detpost_overlap_params detpost_overlap_params_default(void);

/* a is [batch, na, 4], b is [batch, nb, 4]; out is [batch, na, nb], or
 * [batch, na] when p->aligned (then na must equal nb). p may be NULL for the
 * defaults. Empty sizes (na, nb or batch 0) are valid and write nothing. */
detpost_status detpost_box_overlaps(detpost_ctx *ctx, const detpost_overlap_params *p,
                                    const float *a, int64_t na, const float *b, int64_t nb,
                                    int64_t batch, float *out);

/* Binary masks a [na, pixels] and b [nb, pixels] (bytes, nonzero = set);
 * out [na, nb] = |a & b| / |a | b|, 0 where the union is empty.
 * On CUDA the intersections come from one half-precision GEMM with float
 * accumulation, exact up to 2^24 pixels; more pixels, or na or nb of 2^31
 * or more (the GEMM's int dimensions), answer DETPOST_ERR_UNSUPPORTED on
 * both backends, so they agree. */
detpost_status detpost_mask_iou(detpost_ctx *ctx, const uint8_t *a, int64_t na,
                                const uint8_t *b, int64_t nb, int64_t pixels, float *out);
/* Workspace bytes detpost_mask_iou needs for these sizes on this context. */
detpost_status detpost_mask_iou_workspace_size(detpost_ctx *ctx, int64_t na, int64_t nb,
                                               int64_t pixels, size_t *bytes);

/* ------------------------------------------------------------------------ */
/* Non-maximum suppression                                                   */
/* ------------------------------------------------------------------------ */

/* Boxes are (x1, y1, x2, y2) as for overlaps. A box is a candidate when its
 * score is > score_threshold (a NaN score never is) and, for the soft
 * methods, also >= min_score. Candidates are visited by score, highest
 * first; equal scores go to the lower index (batched: lower box index, then
 * lower class). Every decision is the same on both backends, bit for bit.
 *
 * HARD      greedy: a candidate is dropped when its IoU with a box kept
 *           before it is > iou_threshold (torchvision / ONNX convention).
 * DIOU      as HARD with IoU - d^2 / c^2 (DIoU, eps 1e-7) in place of IoU.
 * LINEAR    soft-NMS (Bodla et al. 2017): repeatedly take the remaining box
 * GAUSSIAN  with the highest current score, emit it with that score, then
 *           decay every other remaining box: LINEAR s *= 1 - iou when
 *           iou > iou_threshold; GAUSSIAN s *= exp(-iou^2 / sigma) (the
 *           mmcv / OpenCV sigma; TensorFlow's sigma is half of it). A box
 *           whose score falls below min_score (or becomes NaN) is dropped.
 *           The exponential is computed with + - * / only, so both backends
 *           decay to the same bits. */
typedef enum detpost_nms_method {
    DETPOST_NMS_HARD = 0,
    DETPOST_NMS_LINEAR = 1,
    DETPOST_NMS_GAUSSIAN = 2,
    DETPOST_NMS_DIOU = 3
} detpost_nms_method;

typedef struct detpost_nms_params {
    detpost_nms_method method;
    float iou_threshold;   /* in [0, 1] */
    float score_threshold; /* candidates have score > this; not NaN (-INFINITY: every non-NaN score) */
    int64_t max_output;    /* keep at most this many (>= 0; 0: no limit) */
    float sigma;           /* GAUSSIAN decay width, > 0 and finite */
    float min_score;       /* soft methods: boxes below it are dropped; not NaN */
    float offset;          /* 0 (continuous) or 1 (legacy pixel convention) */
} detpost_nms_params;

/* method DETPOST_NMS_HARD, iou_threshold 0.5, score_threshold -INFINITY,
 * max_output 0, sigma 0.5, min_score 0.001, offset 0. Every field is checked
 * by the calls below, whatever the method. */
detpost_nms_params detpost_nms_params_default(void);

/* Single-class NMS of boxes [n, 4] with scores [n] (p NULL: the defaults).
 * Writes keep [n]: the indices of the kept boxes in selection order, then -1;
 * keep_scores [n] (may be NULL): their scores (the decayed score at selection
 * for the soft methods), then 0; *num_keep: how many were kept. All pointers
 * are context memory, num_keep included: on CUDA nothing is read back to the
 * host, so the call never waits and can be captured in a CUDA graph.
 * n must be below 2^31 (DETPOST_ERR_UNSUPPORTED above). The CUDA backend's
 * scratch grows linearly with n (about 60 bytes a box, plus 512 KiB of
 * suppression bit masks for the hard methods). */
detpost_status detpost_nms(detpost_ctx *ctx, const detpost_nms_params *p, const float *boxes, const float *scores,
                           int64_t n, int64_t *keep, float *keep_scores, int64_t *num_keep);
/* Workspace bytes detpost_nms needs for n boxes with these parameters. */
detpost_status detpost_nms_workspace_size(detpost_ctx *ctx, const detpost_nms_params *p, int64_t n, size_t *bytes);

typedef enum detpost_box_coding {
    DETPOST_BOX_CORNERS = 0,    /* (x1, y1, x2, y2) */
    DETPOST_BOX_CENTER_SIZE = 1 /* (cx, cy, w, h): x1 = cx - w/2, x2 = cx + w/2 */
} detpost_box_coding;

typedef struct detpost_batched_nms_params {
    detpost_nms_params nms;   /* method, thresholds, sigma, min_score, offset; nms.max_output is unused */
    int64_t pre_nms_top_k;    /* per image, the best this many candidates enter NMS (>= 0; 0: all) */
    int64_t max_per_class;    /* at most this many kept of each class (>= 0; 0: no limit) */
    int64_t max_per_image;    /* K, the rows of every output per image (>= 1) */
    int64_t background_class; /* a class in [0, num_classes) that is never a candidate, or -1 for none */
    int class_agnostic;       /* 0: one NMS group per class; 1: one group per image, across classes */
    int boxes_per_class;      /* 0: boxes [B, N, 4] shared by all classes; 1: boxes [B, N, C, 4] */
    detpost_box_coding box_coding;
} detpost_batched_nms_params;

/* nms = detpost_nms_params_default(), pre_nms_top_k 4096, max_per_class 0,
 * max_per_image 100, background_class -1, class_agnostic 0,
 * boxes_per_class 0, box_coding DETPOST_BOX_CORNERS. */
detpost_batched_nms_params detpost_batched_nms_params_default(void);

/* Multi-class NMS of a batch of images with fixed-shape outputs (the
 * TensorRT EfficientNMS layout). boxes [B, N, 4] (or [B, N, C, 4] with
 * boxes_per_class), scores [B, N, C]. Per image: candidates are the
 * (box, class) pairs whose score passes (see above) and whose class is not
 * the background class; the best pre_nms_top_k of them by score (ties: lower
 * box index, then lower class) go through NMS within each class (or across
 * classes when class_agnostic), keeping at most max_per_class of each class:
 * a class's NMS stops there; across classes, each class keeps its first
 * max_per_class of the NMS over all of them (those past it still took part,
 * suppressing or decaying what they overlap). Of the kept detections the best
 * max_per_image by score (same ties) are written in that order. Outputs: num_dets [B]; det_boxes [B, K, 4], always
 * corners; det_scores [B, K] (decayed scores for the soft methods);
 * det_classes [B, K]; det_indices [B, K] (may be NULL): the box index n.
 * Rows past num_dets hold 0 for boxes and scores, -1 for classes and indices.
 * All pointers are context memory; the CUDA backend never waits.
 * num_boxes * num_classes must be below 2^31, and so must batch times the
 * candidates an image can hold (DETPOST_ERR_UNSUPPORTED otherwise). The
 * CUDA backend's scratch is about 60 bytes per candidate slot: batch x
 * pre_nms_top_k, or batch x num_boxes x num_classes when there is no limit. */
detpost_status detpost_batched_nms(detpost_ctx *ctx, const detpost_batched_nms_params *p, const float *boxes,
                                   const float *scores, int64_t batch, int64_t num_boxes, int64_t num_classes,
                                   int32_t *num_dets, float *det_boxes, float *det_scores, int32_t *det_classes,
                                   int32_t *det_indices);
/* Workspace bytes detpost_batched_nms needs for these sizes and parameters. */
detpost_status detpost_batched_nms_workspace_size(detpost_ctx *ctx, const detpost_batched_nms_params *p,
                                                  int64_t batch, int64_t num_boxes, int64_t num_classes,
                                                  size_t *bytes);

/* ------------------------------------------------------------------------ */
/* RoI Align and RoI Pool                                                    */
/* ------------------------------------------------------------------------ */

/* Regions of interest are float32 rows (batch_index, x1, y1, x2, y2) in image
 * coordinates; spatial_scale (1 / stride) maps them onto a feature map of n
 * images. A row is valid when its batch index b satisfies 0 <= b < n (the
 * image is b truncated to an integer) and its four coordinates are finite.
 *
 * Invalid rows never make an op read outside the feature map. A CPU context
 * finds them before touching anything and answers
 * DETPOST_ERR_INVALID_ARGUMENT naming the row. A CUDA context cannot look at
 * device memory without waiting for the device, so its kernels check every
 * row as they load it: an invalid row reads no features, its outputs are 0
 * (argmax -1, level -1) and it contributes no gradient; the first such row
 * is recorded and the next call that waits (detpost_synchronize,
 * detpost_to_host) answers DETPOST_ERR_INVALID_ARGUMENT naming it, the way
 * CUDA reports an asynchronous error. detpost_roi_check finds invalid rows on
 * either backend without waiting.
 *
 * Semantics are torchvision's (ops/roi_align, ops/roi_pool, poolers):
 * - RoI Align samples each of the pooled_h x pooled_w bins on a grid of
 *   sampling_ratio points per axis, or ceil(roi size / pooled size) points per
 *   RoI and axis when sampling_ratio <= 0; a sample outside [-1, h] x [-1, w]
 *   counts as 0; AVG divides the sum by max(grid_h * grid_w, 1). aligned
 *   shifts the RoI by -0.5 pixel and keeps its size as given; not aligned
 *   raises width and height to at least 1. MAX (mmcv) takes the largest
 *   bilinear sample instead (its gradient goes to the first such sample in
 *   row-major sample order); samples outside the map count as 0 there too and
 *   take no gradient, and a bin without a sample gives 0.
 * - RoI Pool rounds the scaled corners, uses the legacy +1 size, and takes the
 *   maximum over the pixels of each bin; an empty bin gives 0 and argmax -1,
 *   otherwise argmax is y * w + x within the feature plane.
 * Feature maps hold at most 2^31 - 1 rows and columns (and, for RoI Pool,
 * at most 2^31 - 1 pixels per plane, the range of argmax). So that no integer
 * conversion can overflow, RoI Pool's rounded coordinates saturate at +-2^40
 * pixels and RoI Align's adaptive grid at 2^31 - 1 samples per axis; only
 * RoIs that large (where torchvision's own int conversions overflow) differ.
 * Work per bin is bounded by the map, however large the RoI. */

typedef enum detpost_layout {
    DETPOST_NCHW = 0, /* features [n, c, h, w]; RoI outputs [num_rois, c, pooled_h, pooled_w] */
    DETPOST_NHWC = 1  /* features [n, h, w, c]; RoI outputs [num_rois, pooled_h, pooled_w, c] */
} detpost_layout;

typedef enum detpost_dtype {
    DETPOST_F32 = 0, /* float */
    DETPOST_F16 = 1  /* IEEE binary16 bit patterns (uint16_t); arithmetic is float, results round to nearest even */
} detpost_dtype;

typedef enum detpost_roi_mode {
    DETPOST_ROI_AVG = 0, /* mean of the bilinear samples of a bin (torchvision) */
    DETPOST_ROI_MAX = 1  /* largest bilinear sample of a bin (mmcv) */
} detpost_roi_mode;

typedef struct detpost_roi_params {
    int pooled_h, pooled_w; /* bins per RoI, 1 to 256 each */
    float spatial_scale;    /* feature pixels per image pixel, finite and > 0 (the multi-level op ignores it) */
    int sampling_ratio;     /* RoI Align samples per bin and axis; <= 0: adaptive */
    int aligned;            /* RoI Align: 1 pixel-centre aligned (shift -0.5), 0 legacy */
    detpost_roi_mode mode;  /* RoI Align only; RoI Pool always takes the maximum */
    detpost_layout layout;  /* of features, outputs and their gradients */
    detpost_dtype dtype;    /* of features, outputs and their gradients */
    int deterministic;      /* backward: 0 float atomics (order varies in the last bits on a GPU),
                               1 fixed-point accumulation, bit-identical run to run and across backends */
} detpost_roi_params;

/* pooled 7 x 7, spatial_scale 1, sampling_ratio 0 (adaptive), aligned 1,
 * mode AVG, layout NCHW, dtype F32, deterministic 0 */
detpost_roi_params detpost_roi_params_default(void);

/* RoI Align forward. features [n, c, h, w] (or NHWC) of p->dtype, rois
 * [num_rois, 5], out [num_rois, c, pooled_h, pooled_w] (or NHWC) of p->dtype,
 * written entirely. p may be NULL for the defaults. */
detpost_status detpost_roi_align(detpost_ctx *ctx, const detpost_roi_params *p, const void *features, int64_t n,
                                 int64_t c, int64_t h, int64_t w, const float *rois, int64_t num_rois, void *out);

/* Gradient of detpost_roi_align in AVG mode with respect to its features:
 * grad_out has the shape of the forward's out, grad_features the shape of its
 * features; grad_features is overwritten (not accumulated into). MAX mode
 * needs the forward's input: use detpost_roi_align_max_backward.
 * Workspace (detpost_roi_workspace_size): none for float32 with atomics, one
 * float per feature element for float16 with atomics, 8 bytes per feature
 * element with p->deterministic (plus 12 bytes per channel on a CPU context).
 * deterministic costs that workspace, a pass clearing it, a reduction of
 * |grad_out| and a conversion pass; its result is the exact sum of the
 * contributions, each rounded to 2^-e with e chosen so the largest possible
 * sum stays below 2^61, then rounded once to the output type. */
detpost_status detpost_roi_align_backward(detpost_ctx *ctx, const detpost_roi_params *p, const void *grad_out,
                                          const float *rois, int64_t num_rois, int64_t n, int64_t c, int64_t h,
                                          int64_t w, void *grad_features);

/* Gradient of detpost_roi_align in MAX mode (p->mode must be DETPOST_ROI_MAX):
 * each bin's gradient flows to the four pixels around its largest sample,
 * found again in `features` (the forward's input) with the forward's exact
 * arithmetic. Otherwise as detpost_roi_align_backward. */
detpost_status detpost_roi_align_max_backward(detpost_ctx *ctx, const detpost_roi_params *p, const void *features,
                                              const void *grad_out, const float *rois, int64_t num_rois, int64_t n,
                                              int64_t c, int64_t h, int64_t w, void *grad_features);

/* RoI Pool forward (max over the pixels of each bin). out as for RoI Align;
 * argmax (int32, same shape as out, may be NULL when no backward follows)
 * receives y * w + x of each maximum, -1 for an empty bin. */
detpost_status detpost_roi_pool(detpost_ctx *ctx, const detpost_roi_params *p, const void *features, int64_t n,
                                int64_t c, int64_t h, int64_t w, const float *rois, int64_t num_rois, void *out,
                                int32_t *argmax);

/* Gradient of detpost_roi_pool: grad_features[image of the RoI, channel,
 * argmax] receives each grad_out element (argmax -1 contributes nothing);
 * grad_features is overwritten. rois gives each RoI's image. An argmax
 * outside [-1, h * w) is an error on a CPU context; on a CUDA context it
 * contributes nothing and is recorded like an invalid RoI row (the next call
 * that waits answers DETPOST_ERR_INVALID_ARGUMENT naming the element).
 * Workspace as for detpost_roi_align_backward. */
detpost_status detpost_roi_pool_backward(detpost_ctx *ctx, const detpost_roi_params *p, const void *grad_out,
                                         const int32_t *argmax, const float *rois, int64_t num_rois, int64_t n,
                                         int64_t c, int64_t h, int64_t w, void *grad_features);

#define DETPOST_MAX_PYRAMID_LEVELS 8

typedef struct detpost_pyramid_level {
    const void *features; /* [n, c, h, w] or [n, h, w, c] in context memory */
    int64_t h, w;
    float spatial_scale;  /* 1 / stride of this level, finite and > 0 */
} detpost_pyramid_level;

/* A feature pyramid for detpost_multilevel_roi_align. Level i is canonical
 * level k_min + i, k_min = round(-log2(levels[0].spatial_scale)) (2 for
 * stride 4), so levels run from the finest map to the coarsest. A RoI goes to
 * k = floor(canonical_level + log2(sqrt(area) / canonical_scale) + eps),
 * clamped to the pyramid, area = (x2 - x1) * (y2 - y1) in image pixels
 * (torchvision's LevelMapper); a RoI whose area is not > 0 goes to the
 * finest level. log2 is computed by detpost itself so that both backends
 * take the same decision. */
typedef struct detpost_feature_pyramid {
    int num_levels;         /* 1 to DETPOST_MAX_PYRAMID_LEVELS */
    int64_t n, c;           /* images and channels, shared by every level */
    detpost_layout layout;  /* must equal the params' layout */
    detpost_dtype dtype;    /* must equal the params' dtype */
    detpost_pyramid_level levels[DETPOST_MAX_PYRAMID_LEVELS];
    float canonical_scale;  /* 224 */
    int canonical_level;    /* 4 */
    float eps;              /* 1e-6 */
} detpost_feature_pyramid;

/* No levels; canonical_scale 224, canonical_level 4, eps 1e-6, layout NCHW, dtype F32. */
detpost_feature_pyramid detpost_feature_pyramid_default(void);

/* RoI Align over a feature pyramid (FPN): maps every RoI to its level and
 * pools all of them in one pass (one kernel launch on CUDA). out is
 * [num_rois, c, pooled_h, pooled_w] (or NHWC); levels (int32 [num_rois], may be
 * NULL) receives each RoI's level index (0 = levels[0]), -1 for an invalid
 * row on CUDA. p->spatial_scale is not used: each level has its own. */
detpost_status detpost_multilevel_roi_align(detpost_ctx *ctx, const detpost_roi_params *p,
                                            const detpost_feature_pyramid *pyramid, const float *rois,
                                            int64_t num_rois, void *out, int32_t *levels);

/* Writes to *first_invalid (context memory, one int64) the index of the first
 * invalid row of rois (see above) for a batch of n images, or -1 when every
 * row is valid. Asynchronous on CUDA like every op: read the answer with
 * detpost_to_host. */
detpost_status detpost_roi_check(detpost_ctx *ctx, const float *rois, int64_t num_rois, int64_t n,
                                 int64_t *first_invalid);

/* Workspace bytes that any RoI op with these params and features [n, c, h, w]
 * needs on this context (the most of forward and backward). */
detpost_status detpost_roi_workspace_size(detpost_ctx *ctx, const detpost_roi_params *p, int64_t n, int64_t c,
                                          int64_t h, int64_t w, size_t *bytes);


/* ------------------------------------------------------------------------ */
/* Box coding and cascade resampling                                         */
/* ------------------------------------------------------------------------ */

/* Delta coding of a box g against a reference box p (R-CNN's
 * parameterisation, mmdetection's DeltaXYWHBBoxCoder). With centres
 * px = (x1 + x2) / 2 and sizes pw = x2 - x1 + offset (likewise y, h, and g):
 *   dx = (gx - px) / pw   dy = (gy - py) / ph   dw = log(gw / pw)   dh = log(gh / ph)
 * each stored normalised as (d - mean) / std. Decoding inverts this:
 * gw = pw * exp(dw) with dw, dh first clamped to [-clamp, clamp], then
 * x1 = gx - (gw - offset) / 2, x2 = gx + (gw - offset) / 2.
 * exp and log are the library's own (not the math library's), so the CPU and
 * CUDA backends produce bit-identical boxes and take identical decisions on
 * them. */
typedef struct detpost_box_coder {
    float means[4]; /* dx, dy, dw, dh; finite */
    float stds[4];  /* dx, dy, dw, dh; finite and > 0 */
    float clamp;    /* largest |dw|, |dh| a decode applies; finite and >= 0 */
    float offset;   /* 0 (continuous coordinates) or 1 (legacy pixel convention) */
} detpost_box_coder;

/* means 0, stds {0.1, 0.1, 0.2, 0.2}, clamp |log(16 / 1000)|, offset 0 */
detpost_box_coder detpost_box_coder_default(void);

/* deltas[i] = the coder's encoding of targets[i] against proposals[i]; all
 * three are [n, 4]. A pair where either box is empty (width or height not
 * > 0, NaN, an area that overflows or underflows to 0) encodes as 0. coder
 * NULL means the default. */
detpost_status detpost_box_encode(detpost_ctx *ctx, const detpost_box_coder *coder, const float *proposals,
                                  const float *targets, int64_t n, float *deltas);

/* Applies deltas to RoIs: rois [n, 5] (batch_index, x1, y1, x2, y2) -> out
 * [n, 5] (batch_index, decoded box). deltas is [n, 4] when num_classes == 1
 * (class-agnostic; labels unused, may be NULL), else [n, num_classes, 4] and
 * labels[n] picks each row's class. A row whose label is outside
 * [0, num_classes), or whose RoI is empty, keeps its RoI unchanged (still
 * clipped); NaN deltas count as 0.
 * image_sizes [num_images, 2] holds (height, width) per image, or is NULL
 * for no clipping (num_images is then ignored). With sizes, x is clipped to
 * [0, width - offset] and y to [0, height - offset], and a row whose batch
 * index is not an integer in [0, num_images) comes out as (-1, 0, 0, 0, 0).
 * out may not overlap rois or deltas. */
detpost_status detpost_box_decode(detpost_ctx *ctx, const detpost_box_coder *coder, const float *rois,
                                  const float *deltas, int64_t n, int64_t num_classes, const int32_t *labels,
                                  const float *image_sizes, int64_t num_images, float *out);

/* One stage of Cascade R-CNN training: how proposals are matched to ground
 * truth (mmdetection's MaxIoUAssigner), sampled (RandomSampler, with the
 * library's counter-based randomness) and encoded (the stage's coder). */
typedef struct detpost_stage_params {
    detpost_box_coder coder; /* regression targets; its offset also sets the IoU convention */
    float pos_iou;           /* positive when the best IoU >= pos_iou; in [0, 1] */
    float neg_iou;           /* negative when the best IoU is in [neg_iou_lo, neg_iou); in [0, 1] */
    float neg_iou_lo;        /* in [0, neg_iou] */
    float min_pos_iou;       /* low-quality matching: a ground truth's best IoU must reach this; in [0, 1] */
    float pos_fraction;      /* at most floor(num_samples * pos_fraction) positives; in [0, 1] */
    float neg_pos_ub;        /* >= 0: at most floor(neg_pos_ub * max(1, positives)) negatives; < 0: no cap */
    int32_t num_samples;     /* S, rows per image in the outputs; >= 0 */
    int32_t add_gt_as_proposals; /* 0 or 1: ground-truth boxes join the candidates, ahead of the proposals */
    int32_t match_low_quality;   /* 0 or 1: each ground truth also takes the proposals at its own best IoU */
    int32_t background_label;    /* label written for negatives */
    int32_t stage;               /* >= 0; with seed, image and candidate index, drives the sampling hash */
    uint64_t seed;
} detpost_stage_params;

/* The defaults of Cascade R-CNN stage 0, 1 or 2: pos_iou = neg_iou =
 * min_pos_iou 0.5 / 0.6 / 0.7; coder stds {0.1, 0.1, 0.2, 0.2},
 * {0.05, 0.05, 0.1, 0.1}, {0.033, 0.033, 0.067, 0.067} (means 0, default
 * clamp and offset 0); num_samples 512, pos_fraction 0.25, neg_pos_ub -1,
 * add_gt_as_proposals 1, match_low_quality 0, neg_iou_lo 0,
 * background_label -1, seed 0. A stage beyond 2 takes stage 2's values
 * (a deeper cascade repeats its last stage), a negative one stage 0's; the
 * `stage` field keeps the number given. */
detpost_stage_params detpost_stage_params_default(int stage);

/* Resamples the proposals of `batch` images for one cascade stage.
 * Inputs: proposals [batch, max_proposals, 4] of which image b uses the
 * first num_proposals[b]; gt_boxes [batch, max_gt, 4] and gt_labels
 * [batch, max_gt] of which image b uses the first num_gt[b].
 * Assignment, per image: each proposal's best IoU over the ground truth
 * (ties: the lower ground-truth index) makes it positive (>= pos_iou, that
 * ground truth), negative ([neg_iou_lo, neg_iou)) or ignored; with
 * match_low_quality, every ground truth whose best IoU is >= min_pos_iou
 * also takes each proposal at exactly that IoU (when several do, the highest
 * ground-truth index wins, as mmdetection's loop leaves it). No ground truth:
 * every proposal is negative. With add_gt_as_proposals the image's ground
 * truth is prepended to the candidates, each positive for itself.
 * Sampling: every candidate c (ground truth first, then proposals, counted
 * from 0 per image) gets key hash(seed, image, stage, c); the positives with
 * the smallest keys, at most floor(num_samples * pos_fraction), then the
 * negatives with the smallest keys, at most num_samples minus the positives
 * taken (and the neg_pos_ub cap). The same inputs and seed choose the same
 * subset on both backends.
 * Outputs, S = p->num_samples rows per image, positives first then
 * negatives, each in ascending candidate order; rows past num_samples[b] are
 * padding:
 *   rois [batch, S, 5]     (b, x1, y1, x2, y2); padding (-1, 0, 0, 0, 0)
 *   labels [batch, S]      gt_labels of the matched ground truth for positives,
 *                          background_label for negatives; padding -1
 *   targets [batch, S, 4]  the stage coder's encoding of the matched ground
 *                          truth against the row's box; 0 for negatives, padding
 *   max_iou [batch, S]     the candidate's best IoU with the image's ground truth
 *                          (1 for ground-truth rows, 0 without ground truth); padding 0
 *   is_gt [batch, S]       1 for rows that are ground-truth boxes; padding 0
 *   num_samples [batch], num_pos [batch]  rows written, of which positives.
 * Counts above their maxima (or negative) are an error on a CPU context. On
 * a CUDA context the counts stay in device memory, unread by the host: such
 * an image gets num_samples[b] = num_pos[b] = -1 and padding rows only, and
 * the next call that waits (detpost_synchronize, detpost_to_host) answers
 * DETPOST_ERR_INVALID_ARGUMENT naming the first such image.
 * p NULL means detpost_stage_params_default(0). */
detpost_status detpost_cascade_resample(detpost_ctx *ctx, const detpost_stage_params *p, int64_t batch,
                                        const float *proposals, const int32_t *num_proposals, int64_t max_proposals,
                                        const float *gt_boxes, const int32_t *gt_labels, const int32_t *num_gt,
                                        int64_t max_gt, float *rois, int32_t *labels, float *targets, float *max_iou,
                                        uint8_t *is_gt, int32_t *num_samples, int32_t *num_pos);
/* Workspace bytes detpost_cascade_resample needs for these sizes and params
 * on this context. */
detpost_status detpost_cascade_resample_workspace_size(detpost_ctx *ctx, const detpost_stage_params *p, int64_t batch,
                                                       int64_t max_proposals, int64_t max_gt, size_t *bytes);

/* Which of a stage's regressed boxes go on as the next stage's proposals. */
typedef enum detpost_refine_policy {
    DETPOST_REFINE_MMDET = 0,      /* keep every row except ground-truth rows (is_gt) */
    DETPOST_REFINE_DETECTRON2 = 1, /* keep every row whose decoded (clipped) box is not empty */
    DETPOST_REFINE_CAFFE = 2       /* drop rows whose gt_iou is >= 0.95 (the original Cascade R-CNN code) */
} detpost_refine_policy;

/* Decodes a stage's regression output as detpost_box_decode does (rois
 * [num_rois, 5], deltas, num_classes, labels, image_sizes, num_images alike)
 * and keeps the rows the policy keeps, in their order, in next_rois
 * [num_rois, 5]; rows past the kept ones become (-1, 0, 0, 0, 0).
 * *num_next (context memory) receives the number kept. Rows whose decoded
 * batch index is negative (resample's padding, or a batch index outside
 * [0, num_images) when sizes are given) are dropped under every policy.
 * is_gt [num_rois] is needed by DETPOST_REFINE_MMDET and gt_iou [num_rois]
 * (resample's max_iou) by DETPOST_REFINE_CAFFE; otherwise they may be NULL.
 * next_rois may not overlap the inputs. */
detpost_status detpost_cascade_refine(detpost_ctx *ctx, const detpost_box_coder *coder, detpost_refine_policy policy,
                                      const float *rois, const float *deltas, int64_t num_rois, int64_t num_classes,
                                      const int32_t *labels, const uint8_t *is_gt, const float *gt_iou,
                                      const float *image_sizes, int64_t num_images, float *next_rois,
                                      int64_t *num_next);
/* Workspace bytes detpost_cascade_refine needs for num_rois on this context. */
detpost_status detpost_cascade_refine_workspace_size(detpost_ctx *ctx, int64_t num_rois, size_t *bytes);

/* Histogram over [0, 1] of each proposal's best IoU (offset 0) with the
 * ground truth of its image, summed over the batch: counts[num_bins] (int64,
 * context memory) gets, in bin k, the proposals with floor(iou * num_bins)
 * == k (IoU 1 in the last bin; no ground truth counts as IoU 0). Layout and
 * counts as in detpost_cascade_resample; num_bins in [1, 4096]. Counts above
 * their maxima are an error on a CPU context; on a CUDA context such an image
 * is left out of the histogram and reported at the next wait, as above. */
detpost_status detpost_iou_histogram(detpost_ctx *ctx, int64_t batch, const float *proposals,
                                     const int32_t *num_proposals, int64_t max_proposals, const float *gt_boxes,
                                     const int32_t *num_gt, int64_t max_gt, int32_t num_bins, int64_t *counts);

#ifdef __cplusplus
}
#endif

#endif /* DETPOST_H */
