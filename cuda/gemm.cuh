/*
 * The GEMM seam: cuBLAS under nvcc, a host loop in the sim flavor (cuBLAS
 * has no host backend). One entry point per product the library needs.
 */
#ifndef DETPOST_GEMM_CUH
#define DETPOST_GEMM_CUH

#include "dp_cuda.cuh"

detpost_status dp_gemm_create(detpost_ctx *ctx);
void dp_gemm_destroy(detpost_ctx *ctx);

/* out[i * n + j] = sum over k of a[i * k_len + k] * b[j * k_len + k], with a
 * [m, k_len] and b [n, k_len] row-major IEEE half-precision bit patterns and
 * float accumulation, enqueued on the context's stream. */
detpost_status dp_gemm_abt_f16(detpost_ctx *ctx, const uint16_t *a, int m, const uint16_t *b, int n, int k_len,
                               float *out);

#endif
