/*
 * The GEMM seam: cuBLAS under nvcc, a host loop in the sim flavor (cuBLAS
 * has no host backend). One entry point per product the library needs.
 */
#ifndef DETPOST_GEMM_CUH
#define DETPOST_GEMM_CUH

#include "dp_cuda.cuh"

detpost_status dp_gemm_create(detpost_ctx *ctx);
void dp_gemm_destroy(detpost_ctx *ctx);

/* The scratch a product takes from the caller: cuBLAS's own workspace, which
 * it would otherwise allocate itself per stream (cublasSetStream resets it
 * to its default pool), an allocation a lent workspace must rule out and a
 * graph capture must not see. 4 MiB is cuBLAS's recommendation before
 * Hopper; with less it only picks kernels that need less. */
#define DP_GEMM_WORKSPACE_BYTES ((size_t)4 << 20)

/* out[i * n + j] = sum over k of a[i * k_len + k] * b[j * k_len + k], with a
 * [m, k_len] and b [n, k_len] row-major IEEE half-precision bit patterns and
 * float accumulation, enqueued on the context's stream; workspace holds
 * DP_GEMM_WORKSPACE_BYTES of context memory (256-byte aligned). */
detpost_status dp_gemm_abt_f16(detpost_ctx *ctx, const uint16_t *a, int m, const uint16_t *b, int n, int k_len,
                               float *out, void *workspace);

#endif
