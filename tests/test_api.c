/* The context, status, memory and workspace API. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common.h"

Test(api, version_matches_header)
{
    char want[32];
    snprintf(want, sizeof want, "%d.%d.%d", DETPOST_VERSION_MAJOR, DETPOST_VERSION_MINOR, DETPOST_VERSION_PATCH);
    cr_assert_str_eq(detpost_version_string(), want);
    cr_assert_eq(DETPOST_VERSION_NUMBER,
                 DETPOST_VERSION_MAJOR * 10000 + DETPOST_VERSION_MINOR * 100 + DETPOST_VERSION_PATCH);
}

Test(api, status_numbers_and_names_are_stable)
{
    static const char *const names[] = {"OK",  "INVALID_ARGUMENT", "UNSUPPORTED", "NO_DEVICE", "OUT_OF_MEMORY",
                                        "WORKSPACE_TOO_SMALL", "CUDA", "IO", "PARSE", "INTERNAL"};
    for (int i = 0; i < 10; ++i) cr_assert_str_eq(detpost_status_name((detpost_status)i), names[i]);
    cr_assert_eq(DETPOST_ERR_INTERNAL, 9);
    cr_assert_str_eq(detpost_status_name((detpost_status)1234), "UNKNOWN_STATUS");
}

Test(api, create_destroy_cpu)
{
    detpost_ctx *ctx = NULL;
    cr_assert_eq(detpost_create(&ctx, DETPOST_CPU, 0), DETPOST_OK);
    cr_assert_not_null(ctx);
    cr_assert_eq(detpost_get_backend(ctx), DETPOST_CPU);
    cr_assert_str_empty(detpost_last_error(ctx));
    cr_assert_eq(detpost_synchronize(ctx), DETPOST_OK);
    cr_assert_eq(detpost_set_stream(ctx, NULL), DETPOST_OK);
    int dummy;
    cr_assert_eq(detpost_set_stream(ctx, &dummy), DETPOST_ERR_INVALID_ARGUMENT);
    cr_assert(strstr(detpost_last_error(ctx), "stream") != NULL);
    detpost_destroy(ctx);
    detpost_destroy(NULL);
    cr_assert_eq(detpost_create(NULL, DETPOST_CPU, 0), DETPOST_ERR_INVALID_ARGUMENT);
    cr_assert_str_eq(detpost_last_error(NULL), "ctx is NULL");
}

Test(api, failed_create_keeps_the_reason)
{
    detpost_ctx *ctx = NULL;
    cr_assert_eq(detpost_create(&ctx, (detpost_backend)7, 0), DETPOST_ERR_INVALID_ARGUMENT);
    cr_assert_not_null(ctx);
    cr_assert(strstr(detpost_last_error(ctx), "backend") != NULL, "%s", detpost_last_error(ctx));
    void *p = NULL;
    cr_assert_eq(detpost_alloc(ctx, &p, 16), DETPOST_ERR_INVALID_ARGUMENT, "a failed context refuses work");
    cr_assert_null(p);
    detpost_destroy(ctx);
}

Test(api, cuda_context_matches_the_build)
{
    detpost_ctx *ctx = NULL;
    detpost_status st = detpost_create(&ctx, DETPOST_CUDA, 0);
#if !TEST_HAS_CUDA
    cr_assert_eq(detpost_cuda_device_count(), 0);
    cr_assert_eq(st, DETPOST_ERR_NO_DEVICE);
    cr_assert(strstr(detpost_last_error(ctx), "no CUDA backend") != NULL, "%s", detpost_last_error(ctx));
#elif defined(DETPOST_SIM)
    cr_assert_eq(detpost_cuda_device_count(), 1, "the emulator is one device");
    cr_assert_eq(st, DETPOST_OK, "%s", detpost_last_error(ctx));
#else
    if (detpost_cuda_device_count() == 0) {
        cr_assert_eq(st, DETPOST_ERR_NO_DEVICE);
        cr_assert(strstr(detpost_last_error(ctx), "no CUDA device") != NULL, "%s", detpost_last_error(ctx));
    } else {
        cr_assert_eq(st, DETPOST_OK, "%s", detpost_last_error(ctx));
    }
#endif
    detpost_destroy(ctx);
}

#if TEST_HAS_CUDA
Test(api, cuda_device_out_of_range)
{
    if (detpost_cuda_device_count() == 0) cr_skip_test("no CUDA device in this machine");
    detpost_ctx *ctx = NULL;
    cr_assert_eq(detpost_create(&ctx, DETPOST_CUDA, 4096), DETPOST_ERR_INVALID_ARGUMENT);
    cr_assert(strstr(detpost_last_error(ctx), "device 4096") != NULL, "%s", detpost_last_error(ctx));
    detpost_destroy(ctx);
    cr_assert_eq(detpost_create(&ctx, DETPOST_CUDA, -1), DETPOST_ERR_INVALID_ARGUMENT);
    detpost_destroy(ctx);
}
#endif

static void memory_round_trip(detpost_backend backend)
{
    detpost_ctx *ctx = t_ctx(backend);
    unsigned char src[1000], back[1000];
    for (int i = 0; i < 1000; ++i) src[i] = (unsigned char)(i * 7);
    void *dev = NULL;
    cr_assert_eq(detpost_alloc(ctx, &dev, sizeof src), DETPOST_OK);
    cr_assert_eq((uintptr_t)dev % 256, 0, "allocations are 256-byte aligned");
    cr_assert_eq(detpost_to_ctx(ctx, dev, src, sizeof src), DETPOST_OK);
    memset(back, 0, sizeof back);
    cr_assert_eq(detpost_to_host(ctx, back, dev, sizeof back), DETPOST_OK);
    cr_assert_arr_eq(back, src, sizeof src);
    cr_assert_eq(detpost_free(ctx, dev), DETPOST_OK);
    void *zero = (void *)1;
    cr_assert_eq(detpost_alloc(ctx, &zero, 0), DETPOST_OK);
    cr_assert_null(zero);
    cr_assert_eq(detpost_free(ctx, NULL), DETPOST_OK);
    cr_assert_eq(detpost_alloc(ctx, NULL, 8), DETPOST_ERR_INVALID_ARGUMENT);
    cr_assert_eq(detpost_to_ctx(ctx, NULL, src, 8), DETPOST_ERR_INVALID_ARGUMENT);
    cr_assert(strstr(detpost_last_error(ctx), "dst_ctx") != NULL);
    cr_assert_eq(detpost_to_host(ctx, back, NULL, 8), DETPOST_ERR_INVALID_ARGUMENT);
    cr_assert(strstr(detpost_last_error(ctx), "src_ctx") != NULL);
    detpost_destroy(ctx);
}

Test(api, memory_cpu) { memory_round_trip(DETPOST_CPU); }
#if TEST_HAS_CUDA
Test(api, memory_cuda) { memory_round_trip(DETPOST_CUDA); }

Test(api, copies_check_which_side_is_device_memory)
{
    detpost_ctx *ctx = t_ctx(DETPOST_CUDA);
    char host[64] = {0}, other[64] = {0};
    cr_assert_eq(detpost_to_ctx(ctx, other, host, sizeof host), DETPOST_ERR_INVALID_ARGUMENT);
    cr_assert(strstr(detpost_last_error(ctx), "dst_ctx") != NULL, "%s", detpost_last_error(ctx));
    cr_assert_eq(detpost_to_host(ctx, host, other, sizeof host), DETPOST_ERR_INVALID_ARGUMENT);
    cr_assert(strstr(detpost_last_error(ctx), "src_ctx") != NULL, "%s", detpost_last_error(ctx));
    cr_assert_eq(detpost_set_workspace(ctx, host, sizeof host), DETPOST_ERR_INVALID_ARGUMENT,
                 "a host buffer cannot be a CUDA workspace");
    detpost_destroy(ctx);
}
#endif

/* The arena grows only when an op needs more; a caller's buffer is used as
 * is and never grown. */
static void workspace_arena(detpost_backend backend)
{
    detpost_ctx *ctx = t_ctx(backend);
    uint8_t m[64 * 10];
    for (int i = 0; i < 640; ++i) m[i] = (uint8_t)(i % 3 == 0);
    uint8_t *dm = t_up(ctx, m, sizeof m);
    float *dout = t_alloc(ctx, 100 * sizeof(float));
    size_t need = 0;
    cr_assert_eq(detpost_mask_iou_workspace_size(ctx, 10, 10, 64, &need), DETPOST_OK);
    cr_assert_eq(detpost_mask_iou(ctx, dm, 10, dm, 10, 64, dout), DETPOST_OK, "%s", detpost_last_error(ctx));
    const size_t cap = detpost_workspace_capacity(ctx);
    cr_assert_leq(cap, need);
    cr_assert(need == 0 || cap > 0, "the first call grew the arena (%zu bytes for a need of %zu)", cap, need);
    if (backend == DETPOST_CUDA) cr_assert_gt(need, 0, "mask IoU on CUDA has scratch to hold");
    cr_assert_eq(detpost_mask_iou(ctx, dm, 5, dm, 5, 64, dout), DETPOST_OK);
    cr_assert_eq(detpost_workspace_capacity(ctx), cap, "a smaller call does not reallocate");
    cr_assert_eq(detpost_mask_iou(ctx, dm, 10, dm, 10, 64, dout), DETPOST_OK);
    cr_assert_eq(detpost_workspace_capacity(ctx), cap, "the same call does not reallocate");
    t_free(ctx, dm), t_free(ctx, dout);
    detpost_destroy(ctx);
}

Test(api, workspace_cpu) { workspace_arena(DETPOST_CPU); }
#if TEST_HAS_CUDA
Test(api, workspace_cuda) { workspace_arena(DETPOST_CUDA); }
#endif

#if TEST_HAS_CUDA
typedef struct overlap_graph {
    const float *boxes;
    const uint8_t *masks;
    float *iou, *giou, *aligned, *mask_iou;
} overlap_graph;

static void overlap_graph_ops(detpost_ctx *ctx, void *arg)
{
    const overlap_graph *g = arg;
    detpost_overlap_params p = detpost_overlap_params_default();
    cr_assert_eq(detpost_box_overlaps(ctx, &p, g->boxes, 40, g->boxes + 4, 30, 1, g->iou), DETPOST_OK, "%s",
                 detpost_last_error(ctx));
    p.mode = DETPOST_GIOU;
    cr_assert_eq(detpost_box_overlaps(ctx, &p, g->boxes, 10, g->boxes + 80, 10, 2, g->giou), DETPOST_OK, "%s",
                 detpost_last_error(ctx));
    p.mode = DETPOST_CIOU;
    p.aligned = 1;
    cr_assert_eq(detpost_box_overlaps(ctx, &p, g->boxes, 40, g->boxes + 4, 40, 1, g->aligned), DETPOST_OK, "%s",
                 detpost_last_error(ctx));
    cr_assert_eq(detpost_mask_iou(ctx, g->masks, 8, g->masks + 50, 6, 50, g->mask_iou), DETPOST_OK, "%s",
                 detpost_last_error(ctx));
}

/* 44 boxes and 14 masks of 50 pixels. */
static void overlap_graph_inputs(detpost_ctx *ctx, void *arg, int round)
{
    const overlap_graph *g = arg;
    float boxes[44 * 4];
    t_rng rng = {5 + (uint64_t)round};
    t_detector_boxes(&rng, boxes, 44, 100, 100, 1);
    uint8_t m[14 * 50];
    for (size_t i = 0; i < sizeof m; ++i) m[i] = (uint8_t)(t_next(&rng) % 2);
    cr_assert_eq(detpost_to_ctx(ctx, (void *)g->boxes, boxes, sizeof boxes), DETPOST_OK);
    cr_assert_eq(detpost_to_ctx(ctx, (void *)g->masks, m, sizeof m), DETPOST_OK);
}

/* Box overlaps and mask IoU (its GEMM included) captured in a CUDA graph:
 * the capture runs nothing, and launched on new inputs in the same buffers
 * the graph writes what direct calls on them write. */
Test(api, cuda_graph_replay)
{
    detpost_ctx *ctx = t_ctx(DETPOST_CUDA);
    void *stream = t_own_stream(ctx);
    overlap_graph g = {t_alloc(ctx, 44 * 16), t_alloc(ctx, 14 * 50), t_alloc(ctx, 40 * 30 * 4),
                       t_alloc(ctx, 2 * 10 * 10 * 4), t_alloc(ctx, 40 * 4), t_alloc(ctx, 8 * 6 * 4)};
    overlap_graph_inputs(ctx, &g, -1);
    const t_region outs[] = {{g.iou, 40 * 30 * 4}, {g.giou, 2 * 10 * 10 * 4}, {g.aligned, 40 * 4},
                             {g.mask_iou, 8 * 6 * 4}};
    t_check_graph_replay(ctx, stream, overlap_graph_ops, &g, outs, 4, overlap_graph_inputs);
    t_free(ctx, (void *)g.boxes), t_free(ctx, (void *)g.masks), t_free(ctx, g.iou), t_free(ctx, g.giou);
    t_free(ctx, g.aligned), t_free(ctx, g.mask_iou);
    detpost_destroy(ctx);
    t_stream_destroy(stream);
}
#endif

#if defined(DETPOST_SIM)
/* Operations enqueue work and return: no host synchronisation, and no
 * allocation once the arena has grown. */
Test(api, ops_never_synchronise)
{
    detpost_ctx *ctx = t_ctx(DETPOST_CUDA);
    float boxes[40 * 4];
    t_rng rng = {3};
    t_detector_boxes(&rng, boxes, 40, 100, 100, 0);
    uint8_t m[8 * 50];
    for (int i = 0; i < 400; ++i) m[i] = (uint8_t)(t_next(&rng) % 2);
    float *db = t_up(ctx, boxes, sizeof boxes);
    uint8_t *dm = t_up(ctx, m, sizeof m);
    float *dout = t_alloc(ctx, 40 * 40 * sizeof(float));
    detpost_overlap_params p = detpost_overlap_params_default();
    cr_assert_eq(detpost_mask_iou(ctx, dm, 8, dm, 8, 50, dout), DETPOST_OK); /* grows the arena */
    const unsigned long long syncs = simt_sync_count();
    const size_t live = simt_live_allocations();
    for (int k = 0; k < 3; ++k) {
        cr_assert_eq(detpost_box_overlaps(ctx, &p, db, 40, db, 40, 1, dout), DETPOST_OK);
        cr_assert_eq(detpost_mask_iou(ctx, dm, 8, dm, 8, 50, dout), DETPOST_OK);
    }
    cr_assert_eq(simt_sync_count(), syncs, "an operation synchronised with the host");
    cr_assert_eq(simt_live_allocations(), live, "an operation allocated in steady state");
    cr_assert_eq(detpost_synchronize(ctx), DETPOST_OK);
    cr_assert_gt(simt_sync_count(), syncs, "detpost_synchronize is counted");
    t_free(ctx, db), t_free(ctx, dm), t_free(ctx, dout);
    detpost_destroy(ctx);
}
#endif

/* A tensor that is not aligned to its element type (a GPU faults on such a
 * load and the context is lost with it) is refused by name on both
 * backends, before anything is written. */
static void expect_misaligned(detpost_ctx *ctx, detpost_status st, const char *name, const uint8_t *out,
                              size_t bytes)
{
    cr_assert_eq(st, DETPOST_ERR_INVALID_ARGUMENT, "%s: status %d", name, (int)st);
    char needle[64];
    snprintf(needle, sizeof needle, "%s (", name);
    cr_assert(strstr(detpost_last_error(ctx), needle) != NULL && strstr(detpost_last_error(ctx), "aligned") != NULL,
              "%s: %s", name, detpost_last_error(ctx));
    uint8_t *back = t_down(ctx, out, bytes);
    for (size_t i = 0; i < bytes; ++i) cr_assert_eq(back[i], 0xa5, "%s: byte %zu of the output was written", name, i);
    free(back);
}

static void misaligned_tensors(detpost_backend backend)
{
    detpost_ctx *ctx = t_ctx(backend);
    enum { BYTES = 4096 };
    uint8_t fill[BYTES];
    memset(fill, 0xa5, sizeof fill);
    /* in: two boxes and scores (also read as RoIs and a feature map), aligned */
    const float host_in[16] = {0, 0, 4, 4, 1, 1, 5, 5, 0.9f, 0.8f, 0, 0, 0, 4, 4, 0};
    float *in = t_up(ctx, host_in, sizeof host_in);
    uint8_t *out = t_up(ctx, fill, sizeof fill); /* 256-byte aligned */
    detpost_status st;

    st = detpost_box_overlaps(ctx, NULL, (const float *)((const char *)in + 2), 1, in, 1, 1, (float *)out);
    expect_misaligned(ctx, st, "a", out, BYTES);
    st = detpost_box_overlaps(ctx, NULL, in, 2, in, 2, 1, (float *)(out + 1));
    expect_misaligned(ctx, st, "out", out, BYTES);

    int64_t *num_keep = (int64_t *)(out + 512);
    st = detpost_nms(ctx, NULL, in, in + 8, 2, (int64_t *)(out + 4), NULL, num_keep);
    expect_misaligned(ctx, st, "keep", out, BYTES);
    st = detpost_nms(ctx, NULL, in, in + 8, 2, (int64_t *)out, NULL, (int64_t *)(out + 516));
    expect_misaligned(ctx, st, "num_keep", out, BYTES);

    detpost_batched_nms_params bp = detpost_batched_nms_params_default();
    bp.max_per_image = 2;
    st = detpost_batched_nms(ctx, &bp, in, in + 8, 1, 2, 1, (int32_t *)out, (float *)(out + 64),
                             (float *)(out + 128), (int32_t *)(out + 192), (int32_t *)(out + 258));
    expect_misaligned(ctx, st, "det_indices", out, BYTES);

    /* float16 features need 2-byte alignment, float32 outputs 4 */
    detpost_roi_params rp = detpost_roi_params_default();
    rp.pooled_h = rp.pooled_w = 1;
    const float rois[5] = {0, 0, 0, 1, 1};
    float *droi = t_up(ctx, rois, sizeof rois);
    rp.dtype = DETPOST_F16;
    st = detpost_roi_align(ctx, &rp, (const char *)in + 1, 1, 1, 2, 2, droi, 1, out);
    expect_misaligned(ctx, st, "features", out, BYTES);
    st = detpost_roi_align(ctx, &rp, in, 1, 1, 2, 2, droi, 1, out + 2);
    cr_assert_eq(st, DETPOST_OK, "a float16 output at 2 bytes is aligned: %s", detpost_last_error(ctx));
    t_free(ctx, out);
    out = t_up(ctx, fill, sizeof fill);
    rp.dtype = DETPOST_F32;
    st = detpost_roi_align(ctx, &rp, in, 1, 1, 2, 2, droi, 1, out + 2);
    expect_misaligned(ctx, st, "out", out, BYTES);

    st = detpost_box_decode(ctx, NULL, droi, (const float *)((const char *)in + 1), 1, 1, NULL, NULL, 0,
                            (float *)out);
    expect_misaligned(ctx, st, "deltas", out, BYTES);

    t_free(ctx, in), t_free(ctx, out), t_free(ctx, droi);
    detpost_destroy(ctx);
}

Test(api, misaligned_tensors_are_refused_cpu) { misaligned_tensors(DETPOST_CPU); }
#if TEST_HAS_CUDA
Test(api, misaligned_tensors_are_refused_cuda) { misaligned_tensors(DETPOST_CUDA); }
#endif
