/*
 * Context, errors, memory and workspace: everything an operation relies on
 * before it dispatches to a backend.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

#define DP_STR2(x) #x
#define DP_STR(x) DP_STR2(x)

const char *detpost_version_string(void)
{
    return DP_STR(DETPOST_VERSION_MAJOR) "." DP_STR(DETPOST_VERSION_MINOR) "." DP_STR(DETPOST_VERSION_PATCH);
}

const char *detpost_status_name(detpost_status status)
{
    switch (status) {
    case DETPOST_OK: return "OK";
    case DETPOST_ERR_INVALID_ARGUMENT: return "INVALID_ARGUMENT";
    case DETPOST_ERR_UNSUPPORTED: return "UNSUPPORTED";
    case DETPOST_ERR_NO_DEVICE: return "NO_DEVICE";
    case DETPOST_ERR_OUT_OF_MEMORY: return "OUT_OF_MEMORY";
    case DETPOST_ERR_WORKSPACE_TOO_SMALL: return "WORKSPACE_TOO_SMALL";
    case DETPOST_ERR_CUDA: return "CUDA";
    case DETPOST_ERR_IO: return "IO";
    case DETPOST_ERR_PARSE: return "PARSE";
    case DETPOST_ERR_INTERNAL: return "INTERNAL";
    }
    return "UNKNOWN_STATUS";
}

detpost_status dp_fail(detpost_ctx *ctx, detpost_status status, const char *fmt, ...)
{
    if (ctx != NULL) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(ctx->message, sizeof ctx->message, fmt, ap);
        va_end(ap);
    }
    return status;
}

detpost_status dp_fault_status(detpost_ctx *ctx, unsigned long long word)
{
    if (word == DP_FAULT_NONE) return DETPOST_OK;
    const long long row = (long long)(word / DP_FAULT_KINDS);
    switch ((dp_fault_kind)(word % DP_FAULT_KINDS)) {
    case DP_FAULT_ROI_ROW:
        return dp_fail(ctx, DETPOST_ERR_INVALID_ARGUMENT,
                       "an earlier RoI operation on this context met rois[%lld] with a batch index outside [0, n) or "
                       "a non-finite coordinate; that RoI's outputs were written as zeros and it took no gradient",
                       row);
    case DP_FAULT_COUNT:
        return dp_fail(ctx, DETPOST_ERR_INVALID_ARGUMENT,
                       "an earlier cascade operation on this context met image %lld with num_proposals or num_gt "
                       "outside [0, max_proposals] / [0, max_gt]; that image was skipped (counts -1)",
                       row);
    case DP_FAULT_ARGMAX:
        return dp_fail(ctx, DETPOST_ERR_INVALID_ARGUMENT,
                       "an earlier RoI Pool backward on this context met argmax[%lld] outside [-1, h * w); that "
                       "element contributed no gradient",
                       row);
    }
    return dp_fail(ctx, DETPOST_ERR_INTERNAL, "unknown device fault word %llu", word);
}

detpost_status dp_no_cuda(detpost_ctx *ctx)
{
    return dp_fail(ctx, DETPOST_ERR_NO_DEVICE, "this build of detpost has no CUDA backend");
}

int detpost_cuda_device_count(void)
{
#if DETPOST_WITH_CUDA
    return dp_cuda_device_count();
#else
    return 0;
#endif
}

detpost_status detpost_create(detpost_ctx **out, detpost_backend backend, int device)
{
    if (out == NULL) return DETPOST_ERR_INVALID_ARGUMENT;
    detpost_ctx *ctx = (detpost_ctx *)calloc(1, sizeof *ctx);
    *out = ctx;
    if (ctx == NULL) return DETPOST_ERR_OUT_OF_MEMORY;
    ctx->backend = backend;
    ctx->device = device;
    ctx->ws.owned = 1;
    detpost_status st = DETPOST_OK;
    if (backend == DETPOST_CPU) {
        ctx->device = 0;
    } else if (backend != DETPOST_CUDA) {
        st = dp_fail(ctx, DETPOST_ERR_INVALID_ARGUMENT, "backend %d is neither DETPOST_CPU nor DETPOST_CUDA",
                     (int)backend);
    } else {
        int count = detpost_cuda_device_count();
        if (count == 0)
            st = dp_fail(ctx, DETPOST_ERR_NO_DEVICE,
                         DETPOST_WITH_CUDA ? "no CUDA device is available (no GPU, or no driver)"
                                           : "this build of detpost has no CUDA backend");
        else if (device < 0 || device >= count)
            st = dp_fail(ctx, DETPOST_ERR_INVALID_ARGUMENT, "device %d is out of range: %d CUDA device%s", device,
                         count, count == 1 ? "" : "s");
#if DETPOST_WITH_CUDA
        else
            st = dp_cuda_init(ctx);
#endif
    }
    ctx->init_status = st;
    return st;
}

void detpost_destroy(detpost_ctx *ctx)
{
    if (ctx == NULL) return;
    if (ctx->init_status == DETPOST_OK) {
        if (ctx->ws.owned) dp_mem_free(ctx, ctx->ws.ptr, 1);
#if DETPOST_WITH_CUDA
        if (ctx->backend == DETPOST_CUDA) dp_cuda_release(ctx);
#endif
    }
    free(ctx);
}

const char *detpost_last_error(const detpost_ctx *ctx)
{
    if (ctx == NULL) return "ctx is NULL";
    return ctx->message;
}

detpost_backend detpost_get_backend(const detpost_ctx *ctx) { return ctx ? ctx->backend : DETPOST_CPU; }

detpost_status dp_begin(detpost_ctx *ctx)
{
    if (ctx == NULL) return DETPOST_ERR_INVALID_ARGUMENT;
    if (ctx->init_status != DETPOST_OK) return ctx->init_status;
    ctx->message[0] = '\0';
    return DETPOST_OK;
}

/* Calls that wait for the device, allocate, or release the owned arena cannot be part of a CUDA graph: on a
 * capturing stream CUDA would refuse them and invalidate the capture, or (a stream-ordered free) record a free of
 * memory the graph does not own while earlier captured work still reads it. They are refused here instead, with
 * the capture left intact. */
static int capturing(detpost_ctx *ctx)
{
#if DETPOST_WITH_CUDA
    return ctx->backend == DETPOST_CUDA && dp_cuda_capturing(ctx);
#else
    (void)ctx;
    return 0;
#endif
}

static detpost_status refuse_while_capturing(detpost_ctx *ctx, const char *what)
{
    if (capturing(ctx))
        return dp_fail(ctx, DETPOST_ERR_UNSUPPORTED,
                       "%s cannot be part of a CUDA graph, and the context's stream is capturing one: call it before "
                       "or after the capture",
                       what);
    return DETPOST_OK;
}

detpost_status detpost_set_stream(detpost_ctx *ctx, void *stream)
{
    detpost_status st = dp_begin(ctx);
    if (st != DETPOST_OK) return st;
    if (ctx->backend == DETPOST_CPU) {
        if (stream != NULL)
            return dp_fail(ctx, DETPOST_ERR_INVALID_ARGUMENT, "stream must be NULL on a CPU context");
        return DETPOST_OK;
    }
    if (stream != ctx->stream &&
        (st = refuse_while_capturing(ctx, "detpost_set_stream (it releases the workspace arena)")) != DETPOST_OK)
        return st;
    return DP_CUDA(ctx, dp_cuda_set_stream(ctx, stream));
}

void *detpost_get_stream(const detpost_ctx *ctx) { return ctx ? ctx->stream : NULL; }

detpost_status detpost_synchronize(detpost_ctx *ctx)
{
    detpost_status st = dp_begin(ctx);
    if (st != DETPOST_OK) return st;
    if (ctx->backend == DETPOST_CPU) return DETPOST_OK;
    if ((st = refuse_while_capturing(ctx, "detpost_synchronize (it waits for the device)")) != DETPOST_OK) return st;
    return DP_CUDA(ctx, dp_cuda_synchronize(ctx));
}

/* ---- argument checks ---------------------------------------------------- */

detpost_status dp_check_ptr(detpost_ctx *ctx, const void *ptr, const char *name)
{
    if (ptr == NULL) return dp_fail(ctx, DETPOST_ERR_INVALID_ARGUMENT, "%s is NULL", name);
    return DETPOST_OK;
}

detpost_status dp_check_tensor(detpost_ctx *ctx, const void *ptr, int64_t elements, size_t elem_bytes,
                               const char *name)
{
    if (elements == 0) return DETPOST_OK;
    if (ptr == NULL) return dp_fail(ctx, DETPOST_ERR_INVALID_ARGUMENT, "%s is NULL", name);
    if ((uintptr_t)ptr % elem_bytes != 0)
        return dp_fail(ctx, DETPOST_ERR_INVALID_ARGUMENT, "%s (%p) is not aligned to its %zu-byte elements", name,
                       ptr, elem_bytes);
#if DETPOST_WITH_CUDA
    if (ctx->backend == DETPOST_CUDA && !dp_cuda_is_device_ptr(ctx, ptr))
        return dp_fail(ctx, DETPOST_ERR_INVALID_ARGUMENT,
                       "%s (%p) is not device memory of this context's device; copy it with detpost_to_ctx", name,
                       ptr);
#endif
    return DETPOST_OK;
}

detpost_status dp_check_size(detpost_ctx *ctx, int64_t value, const char *name)
{
    if (value < 0)
        return dp_fail(ctx, DETPOST_ERR_INVALID_ARGUMENT, "%s is negative (%lld)", name, (long long)value);
    return DETPOST_OK;
}

detpost_status dp_elements(detpost_ctx *ctx, const char *name, int64_t *out, int64_t d0, int64_t d1, int64_t d2)
{
    int64_t t;
    if (__builtin_mul_overflow(d0, d1, &t) || __builtin_mul_overflow(t, d2, &t) || t > INT64_MAX / 16)
        return dp_fail(ctx, DETPOST_ERR_INVALID_ARGUMENT, "%s: %lld x %lld x %lld elements overflow", name,
                       (long long)d0, (long long)d1, (long long)d2);
    *out = t;
    return DETPOST_OK;
}

/* ---- memory ------------------------------------------------------------- */

detpost_status dp_mem_alloc(detpost_ctx *ctx, void **ptr, size_t bytes, int stream_ordered)
{
    *ptr = NULL;
    if (bytes == 0) return DETPOST_OK;
    if (ctx->backend == DETPOST_CPU) {
        size_t rounded = (bytes + DP_WS_ALIGN - 1) / DP_WS_ALIGN * DP_WS_ALIGN;
        if (rounded < bytes || (*ptr = aligned_alloc(DP_WS_ALIGN, rounded)) == NULL)
            return dp_fail(ctx, DETPOST_ERR_OUT_OF_MEMORY, "out of host memory allocating %zu bytes", bytes);
        return DETPOST_OK;
    }
    return DP_CUDA(ctx, dp_cuda_alloc(ctx, ptr, bytes, stream_ordered));
}

void dp_mem_free(detpost_ctx *ctx, void *ptr, int stream_ordered)
{
    if (ptr == NULL) return;
    if (ctx->backend == DETPOST_CPU) {
        free(ptr);
        return;
    }
#if DETPOST_WITH_CUDA
    dp_cuda_free(ctx, ptr, stream_ordered);
#else
    (void)stream_ordered;
#endif
}

detpost_status detpost_alloc(detpost_ctx *ctx, void **ptr, size_t bytes)
{
    detpost_status st = dp_begin(ctx);
    if (st != DETPOST_OK) return st;
    if ((st = dp_check_ptr(ctx, ptr, "ptr")) != DETPOST_OK) return st;
    if (bytes > 0 && (st = refuse_while_capturing(ctx, "detpost_alloc (cudaMalloc)")) != DETPOST_OK) return st;
    return dp_mem_alloc(ctx, ptr, bytes, 0);
}

detpost_status detpost_free(detpost_ctx *ctx, void *ptr)
{
    detpost_status st = dp_begin(ctx);
    if (st != DETPOST_OK) return st;
    if (ptr != NULL && ptr == ctx->ws.ptr && ctx->ws.owned)
        return dp_fail(ctx, DETPOST_ERR_INVALID_ARGUMENT, "ptr is the context's own workspace");
    if (ptr != NULL && (st = refuse_while_capturing(ctx, "detpost_free (cudaFree)")) != DETPOST_OK) return st;
    dp_mem_free(ctx, ptr, 0);
    return DETPOST_OK;
}

detpost_status detpost_to_ctx(detpost_ctx *ctx, void *dst_ctx, const void *src_host, size_t bytes)
{
    detpost_status st = dp_begin(ctx);
    if (st != DETPOST_OK) return st;
    if (bytes == 0) return DETPOST_OK;
    if ((st = dp_check_tensor(ctx, dst_ctx, 1, 1, "dst_ctx")) != DETPOST_OK) return st;
    if ((st = dp_check_ptr(ctx, src_host, "src_host")) != DETPOST_OK) return st;
    if (ctx->backend == DETPOST_CPU) {
        memmove(dst_ctx, src_host, bytes);
        return DETPOST_OK;
    }
    if ((st = refuse_while_capturing(ctx, "detpost_to_ctx (it waits for the copy)")) != DETPOST_OK) return st;
    return DP_CUDA(ctx, dp_cuda_to_device(ctx, dst_ctx, src_host, bytes));
}

detpost_status detpost_to_host(detpost_ctx *ctx, void *dst_host, const void *src_ctx, size_t bytes)
{
    detpost_status st = dp_begin(ctx);
    if (st != DETPOST_OK) return st;
    if (bytes == 0) return DETPOST_OK;
    if ((st = dp_check_ptr(ctx, dst_host, "dst_host")) != DETPOST_OK) return st;
    if ((st = dp_check_tensor(ctx, src_ctx, 1, 1, "src_ctx")) != DETPOST_OK) return st;
    if (ctx->backend == DETPOST_CPU) {
        memmove(dst_host, src_ctx, bytes);
        return DETPOST_OK;
    }
    if ((st = refuse_while_capturing(ctx, "detpost_to_host (it waits for the device)")) != DETPOST_OK) return st;
    return DP_CUDA(ctx, dp_cuda_to_host(ctx, dst_host, src_ctx, bytes));
}

/* ---- workspace ---------------------------------------------------------- */

void *dp_carve(dp_carver *c, size_t bytes)
{
    size_t offset = (c->used + DP_WS_ALIGN - 1) / DP_WS_ALIGN * DP_WS_ALIGN;
    c->used = offset + bytes;
    return c->base ? c->base + offset : NULL;
}

size_t dp_workspace_query(size_t bytes) { return bytes ? bytes + DP_WS_ALIGN - 1 : 0; }

detpost_status dp_workspace(detpost_ctx *ctx, size_t bytes, void **ptr)
{
    if (bytes == 0) {
        *ptr = NULL;
        return DETPOST_OK;
    }
    /* the caller's buffer may be unaligned: reserve room to align its base */
    size_t need = ctx->ws.owned ? bytes : dp_workspace_query(bytes);
    if (need > ctx->ws.bytes) {
        if (!ctx->ws.owned)
            return dp_fail(ctx, DETPOST_ERR_WORKSPACE_TOO_SMALL,
                           "the workspace set with detpost_set_workspace holds %zu bytes; this call needs %zu",
                           ctx->ws.bytes, need);
        /* growing inside a capture would record an allocation the graph then owns, and free the arena earlier
         * captured work still reads */
        if (capturing(ctx))
            return dp_fail(ctx, DETPOST_ERR_WORKSPACE_TOO_SMALL,
                           "the context's stream is capturing a CUDA graph and the workspace arena holds %zu bytes; "
                           "this call needs %zu: make the call once before capturing, or lend a workspace with "
                           "detpost_set_workspace",
                           ctx->ws.bytes, need);
        void *grown = NULL;
        dp_mem_free(ctx, ctx->ws.ptr, 1);
        ctx->ws.ptr = NULL;
        ctx->ws.bytes = 0;
        detpost_status st = dp_mem_alloc(ctx, &grown, need, 1);
        if (st != DETPOST_OK) return st;
        ctx->ws.ptr = grown;
        ctx->ws.bytes = need;
    }
    uintptr_t base = (uintptr_t)ctx->ws.ptr;
    *ptr = (void *)((base + DP_WS_ALIGN - 1) / DP_WS_ALIGN * DP_WS_ALIGN);
    return DETPOST_OK;
}

detpost_status detpost_set_workspace(detpost_ctx *ctx, void *ptr, size_t bytes)
{
    detpost_status st = dp_begin(ctx);
    if (st != DETPOST_OK) return st;
    if (ptr != NULL && bytes > 0 && (st = dp_check_tensor(ctx, ptr, 1, 1, "ptr")) != DETPOST_OK) return st;
    if ((st = refuse_while_capturing(ctx, "detpost_set_workspace (it releases the workspace arena)")) != DETPOST_OK)
        return st;
    if (ctx->ws.owned) dp_mem_free(ctx, ctx->ws.ptr, 1);
    ctx->ws.ptr = ptr;
    ctx->ws.bytes = ptr ? bytes : 0;
    ctx->ws.owned = ptr == NULL;
    return DETPOST_OK;
}

size_t detpost_workspace_capacity(const detpost_ctx *ctx)
{
    return ctx && ctx->ws.owned ? ctx->ws.bytes : 0;
}
