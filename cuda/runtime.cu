/*
 * The CUDA backend's context plumbing: device selection, the per-context
 * library handles, memory and copies. Operations never synchronise; only
 * the calls documented as waiting (synchronize, to_ctx, to_host, destroy) do.
 * User allocations use cudaMalloc; the workspace arena grows with the
 * stream-ordered allocator so that growing it never waits either.
 */
#include "dp_cuda.cuh"
#include "gemm.cuh"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

detpost_status dp_cuda_status(detpost_ctx *ctx, cudaError_t err, const char *what)
{
    (void)cudaGetLastError(); /* clear a non-sticky error so the next call starts clean */
#ifdef DETPOST_SIM
    return dp_fail(ctx, DETPOST_ERR_CUDA, "%s: %s (%s): %s", what, cudaGetErrorString(err), cudaGetErrorName(err),
                   simt_last_message());
#else
    return dp_fail(ctx, DETPOST_ERR_CUDA, "%s: %s (%s)", what, cudaGetErrorString(err), cudaGetErrorName(err));
#endif
}

int dp_cuda_device_count(void)
{
    int n = 0;
    if (cudaGetDeviceCount(&n) != cudaSuccess) {
        (void)cudaGetLastError();
        return 0;
    }
    return n;
}

detpost_status dp_cuda_device_name(int device, char *name, size_t len)
{
#ifdef DETPOST_SIM
    (void)device;
    snprintf(name, len, "SIMT emulator on the CPU (emulated device, timings are meaningless)");
    return DETPOST_OK;
#else
    cudaDeviceProp prop;
    if (cudaGetDeviceProperties(&prop, device) != cudaSuccess) {
        (void)cudaGetLastError();
        return DETPOST_ERR_CUDA;
    }
    snprintf(name, len, "%s (compute capability %d.%d, %d multiprocessors, %.1f GiB)", prop.name, prop.major,
             prop.minor, prop.multiProcessorCount, (double)prop.totalGlobalMem / (1024.0 * 1024.0 * 1024.0));
    return DETPOST_OK;
#endif
}

static detpost_status take_device_resources(detpost_ctx *ctx)
{
    DP_CUDA_TRY(ctx, cudaSetDevice(ctx->device), "selecting the CUDA device");
    ctx->stream = NULL;
    DP_CUDA_TRY(ctx, cudaDeviceGetAttribute(&ctx->multiprocessors, cudaDevAttrMultiProcessorCount, ctx->device),
                "reading the multiprocessor count");
    DP_CUDA_TRY(ctx, cudaDeviceGetAttribute(&ctx->smem_optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, ctx->device),
                "reading the shared-memory limit");
    DP_CUDA_TRY(ctx, cudaMalloc(&ctx->fault, sizeof(unsigned long long)), "allocating the fault word");
    DP_CUDA_TRY(ctx, cudaMemset(ctx->fault, 0xff, sizeof(unsigned long long)), "clearing the fault word");
    return dp_gemm_create(ctx);
}

/* A context that fails to start keeps nothing: detpost_destroy releases only
 * what a started context holds. */
detpost_status dp_cuda_init(detpost_ctx *ctx)
{
    const detpost_status st = take_device_resources(ctx);
    if (st != DETPOST_OK) dp_cuda_release(ctx);
    return st;
}

void dp_cuda_release(detpost_ctx *ctx)
{
    if (cudaSetDevice(ctx->device) == cudaSuccess) (void)cudaStreamSynchronize(dp_stream(ctx));
    dp_gemm_destroy(ctx);
    if (ctx->fault) (void)cudaFree(ctx->fault);
    ctx->fault = NULL;
    (void)cudaGetLastError();
}

/* Waits for the stream, reading the fault word on the way: answers and
 * clears a recorded fault. */
static detpost_status wait_and_take_fault(detpost_ctx *ctx, const char *what)
{
    unsigned long long word = DP_FAULT_NONE;
    DP_CUDA_TRY(ctx, cudaMemcpyAsync(&word, ctx->fault, sizeof word, cudaMemcpyDeviceToHost, dp_stream(ctx)),
                "reading the fault word");
    DP_CUDA_TRY(ctx, cudaStreamSynchronize(dp_stream(ctx)), what);
    if (word == DP_FAULT_NONE) return DETPOST_OK;
    DP_CUDA_TRY(ctx, cudaMemsetAsync(ctx->fault, 0xff, sizeof word, dp_stream(ctx)), "clearing the fault word");
    return dp_fault_status(ctx, word);
}

detpost_status dp_cuda_set_stream(detpost_ctx *ctx, void *stream)
{
    if (stream != ctx->stream && ctx->ws.owned && ctx->ws.ptr != NULL) {
        /* release the arena in the order of the stream that last used it */
        dp_cuda_free(ctx, ctx->ws.ptr, 1);
        ctx->ws.ptr = NULL;
        ctx->ws.bytes = 0;
    }
    ctx->stream = stream;
    return DETPOST_OK;
}

detpost_status dp_cuda_synchronize(detpost_ctx *ctx)
{
    DP_CUDA_TRY(ctx, cudaSetDevice(ctx->device), "selecting the CUDA device");
    return wait_and_take_fault(ctx, "waiting for the context's stream");
}

detpost_status dp_cuda_alloc(detpost_ctx *ctx, void **ptr, size_t bytes, int stream_ordered)
{
    DP_CUDA_TRY(ctx, cudaSetDevice(ctx->device), "selecting the CUDA device");
    cudaError_t err = stream_ordered ? cudaMallocAsync(ptr, bytes, dp_stream(ctx)) : cudaMalloc(ptr, bytes);
    if (err == cudaErrorMemoryAllocation) {
        (void)cudaGetLastError();
        *ptr = NULL;
        return dp_fail(ctx, DETPOST_ERR_OUT_OF_MEMORY, "out of device memory allocating %zu bytes", bytes);
    }
    if (err != cudaSuccess) {
        *ptr = NULL;
        return dp_cuda_status(ctx, err, "allocating device memory");
    }
    return DETPOST_OK;
}

int dp_cuda_capturing(detpost_ctx *ctx)
{
    enum cudaStreamCaptureStatus status = cudaStreamCaptureStatusNone;
    if (cudaStreamIsCapturing(dp_stream(ctx), &status) != cudaSuccess) {
        /* the legacy stream while another stream captures: no allocation is safe either */
        (void)cudaGetLastError();
        return 1;
    }
    return status != cudaStreamCaptureStatusNone;
}

void dp_cuda_free(detpost_ctx *ctx, void *ptr, int stream_ordered)
{
    if (cudaSetDevice(ctx->device) != cudaSuccess ||
        (stream_ordered ? cudaFreeAsync(ptr, dp_stream(ctx)) : cudaFree(ptr)) != cudaSuccess)
        (void)cudaGetLastError();
}

detpost_status dp_cuda_to_device(detpost_ctx *ctx, void *dst, const void *src, size_t bytes)
{
    DP_CUDA_TRY(ctx, cudaSetDevice(ctx->device), "selecting the CUDA device");
    DP_CUDA_TRY(ctx, cudaMemcpyAsync(dst, src, bytes, cudaMemcpyHostToDevice, dp_stream(ctx)),
                "copying host memory to the device");
    DP_CUDA_TRY(ctx, cudaStreamSynchronize(dp_stream(ctx)), "waiting for a copy to the device");
    return DETPOST_OK;
}

detpost_status dp_cuda_to_host(detpost_ctx *ctx, void *dst, const void *src, size_t bytes)
{
    DP_CUDA_TRY(ctx, cudaSetDevice(ctx->device), "selecting the CUDA device");
    DP_CUDA_TRY(ctx, cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToHost, dp_stream(ctx)),
                "copying device memory to the host");
    return wait_and_take_fault(ctx, "waiting for a copy to the host");
}

int dp_cuda_is_device_ptr(detpost_ctx *ctx, const void *ptr)
{
    cudaPointerAttributes attr;
    if (cudaPointerGetAttributes(&attr, ptr) != cudaSuccess) {
        (void)cudaGetLastError();
        return 0;
    }
    if (attr.type == cudaMemoryTypeManaged) return 1;
    return attr.type == cudaMemoryTypeDevice && attr.device == ctx->device;
}
