/*
 * The sort seam: CUB radix sorts under nvcc, a host implementation in the
 * sim flavor (CUB has no host backend). Both are stable, enqueue on the
 * context's stream and never wait for the device; their temporary storage
 * comes from the caller's workspace, sized by the *_temp functions.
 */
#ifndef DETPOST_SORT_CUH
#define DETPOST_SORT_CUH

#include "dp_cuda.cuh"

/* Bytes of temporary storage dp_sort_pairs_u32 needs for n items. */
size_t dp_sort_pairs_u32_temp(int64_t n);
/* keys_out/vals_out = (keys_in, vals_in) sorted by ascending key, equal keys
 * in input order. Inputs and outputs must not overlap. */
detpost_status dp_sort_pairs_u32(detpost_ctx *ctx, void *temp, size_t temp_bytes, const uint32_t *keys_in,
                                 uint32_t *keys_out, const int32_t *vals_in, int32_t *vals_out, int64_t n);

/* Bytes of temporary storage dp_segmented_sort_u64 needs. */
size_t dp_segmented_sort_u64_temp(int64_t num_items, int64_t num_segments);
/* Sorts keys_in[begin[s], end[s]) ascending into keys_out at the same place,
 * for every segment s (begin and end are device arrays). Only bits
 * [0, end_bit) of the keys are compared; keys must be zero above them or
 * all ones (which then sort last). Items outside the segments are left
 * alone. */
detpost_status dp_segmented_sort_u64(detpost_ctx *ctx, void *temp, size_t temp_bytes, const uint64_t *keys_in,
                                     uint64_t *keys_out, int64_t num_items, int64_t num_segments,
                                     const int32_t *begin, const int32_t *end, int end_bit);

#endif
