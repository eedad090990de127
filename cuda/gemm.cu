/*
 * GEMM seam (see gemm.cuh). Under nvcc: cublasGemmEx with half inputs and
 * CUBLAS_COMPUTE_32F, on a per-context handle bound to the context's stream.
 * Under the emulator: the same product as a plain loop in a one-thread kernel.
 */
#include "gemm.cuh"

#ifdef DETPOST_SIM

detpost_status dp_gemm_create(detpost_ctx *ctx)
{
    ctx->cuda = NULL;
    return DETPOST_OK;
}

void dp_gemm_destroy(detpost_ctx *ctx) { ctx->cuda = NULL; }

static float half_bits_to_float(uint16_t h)
{
    const int sign = h >> 15, exp = (h >> 10) & 0x1f, mant = h & 0x3ff;
    float v;
    if (exp == 0) v = std::ldexp((float)mant, -24);
    else if (exp == 31) v = mant ? NAN : INFINITY;
    else v = std::ldexp((float)(mant | 0x400), exp - 25);
    return sign ? -v : v;
}

/* One thread computes the whole product, on the context's stream like the
 * work around it (and captured into graphs with it). */
__global__ void sim_gemm_abt_f16(const uint16_t *a, int m, const uint16_t *b, int n, int k_len, float *out)
{
    for (int i = 0; i < m; ++i)
        for (int j = 0; j < n; ++j) {
            float acc = 0.0f;
            for (int k = 0; k < k_len; ++k)
                acc += half_bits_to_float(a[(int64_t)i * k_len + k]) * half_bits_to_float(b[(int64_t)j * k_len + k]);
            out[(int64_t)i * n + j] = acc;
        }
}

detpost_status dp_gemm_abt_f16(detpost_ctx *ctx, const uint16_t *a, int m, const uint16_t *b, int n, int k_len,
                               float *out, void *workspace)
{
    /* the host product needs no scratch, but the workspace must be there as on a GPU */
    if (!simt::is_device_range(a, (size_t)m * k_len * 2) || !simt::is_device_range(b, (size_t)n * k_len * 2) ||
        !simt::is_device_range(out, (size_t)m * n * 4) || !simt::is_device_range(workspace, DP_GEMM_WORKSPACE_BYTES))
        return dp_fail(ctx, DETPOST_ERR_INTERNAL, "GEMM operands are not device memory");
    dp_launch_cfg cfg(dim3(1), dim3(1), 0, dp_stream(ctx));
    cfg.out(out, (size_t)m * n * 4);
    DP_CUDA_TRY(ctx, DP_LAUNCH(sim_gemm_abt_f16, cfg, a, m, b, n, k_len, out), "the mask GEMM");
    return DETPOST_OK;
}

#else

#include <cublas_v2.h>

static detpost_status blas_status(detpost_ctx *ctx, cublasStatus_t s, const char *what)
{
    return dp_fail(ctx, DETPOST_ERR_CUDA, "%s: %s (%s)", what, cublasGetStatusString(s), cublasGetStatusName(s));
}

detpost_status dp_gemm_create(detpost_ctx *ctx)
{
    cublasHandle_t h = NULL;
    cublasStatus_t s = cublasCreate(&h);
    if (s != CUBLAS_STATUS_SUCCESS) return blas_status(ctx, s, "creating the cuBLAS handle");
    ctx->cuda = h;
    return DETPOST_OK;
}

void dp_gemm_destroy(detpost_ctx *ctx)
{
    if (ctx->cuda) cublasDestroy((cublasHandle_t)ctx->cuda);
    ctx->cuda = NULL;
}

detpost_status dp_gemm_abt_f16(detpost_ctx *ctx, const uint16_t *a, int m, const uint16_t *b, int n, int k_len,
                               float *out, void *workspace)
{
    cublasHandle_t h = (cublasHandle_t)ctx->cuda;
    cublasStatus_t s = cublasSetStream(h, dp_stream(ctx));
    if (s != CUBLAS_STATUS_SUCCESS) return blas_status(ctx, s, "binding cuBLAS to the stream");
    /* after the stream, which resets it: cuBLAS then allocates nothing of its own */
    s = cublasSetWorkspace(h, workspace, DP_GEMM_WORKSPACE_BYTES);
    if (s != CUBLAS_STATUS_SUCCESS) return blas_status(ctx, s, "lending cuBLAS its workspace");
    const float one = 1.0f, zero = 0.0f;
    /* Column-major view: out^T [n, m] = b [n, k] * a^T [k, m]. */
    s = cublasGemmEx(h, CUBLAS_OP_T, CUBLAS_OP_N, n, m, k_len, &one, b, CUDA_R_16F, k_len, a, CUDA_R_16F, k_len,
                     &zero, out, CUDA_R_32F, n, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT);
    if (s != CUBLAS_STATUS_SUCCESS) return blas_status(ctx, s, "cublasGemmEx");
    return DETPOST_OK;
}

#endif
