/*
 * Sort seam (see sort.cuh). Under nvcc: cub::DeviceRadixSort::SortPairs and
 * cub::DeviceSegmentedRadixSort::SortKeys, both stable, neither waits for
 * the device (DeviceSegmentedSort is avoided: it copies segment statistics
 * to the host). Under the emulator: std::stable_sort in a one-thread kernel
 * on the context's stream (so it is ordered, and captured into graphs, like
 * the work around it), with the temporary storage used as its scratch so
 * that a layout that gives the sort too little room shows up in the sim
 * suite too.
 */
#include "sort.cuh"

#ifdef DETPOST_SIM

#include <algorithm>

/* The emulator's sorts run as one-thread kernels on the context's stream, so
 * that they are ordered (and captured in graphs) like the work around them. */
__global__ void sim_sort_pairs(const uint32_t *keys_in, uint32_t *keys_out, const int32_t *vals_in,
                               int32_t *vals_out, int32_t *order, int64_t n)
{
    for (int64_t i = 0; i < n; ++i) order[i] = (int32_t)i;
    std::stable_sort(order, order + n, [keys_in](int32_t a, int32_t b) { return keys_in[a] < keys_in[b]; });
    for (int64_t i = 0; i < n; ++i) {
        keys_out[i] = keys_in[order[i]];
        vals_out[i] = vals_in[order[i]];
    }
}

__global__ void sim_segmented_sort(const uint64_t *keys_in, uint64_t *keys_out, uint64_t *scratch, int64_t num_items,
                                   int64_t num_segments, const int32_t *begin, const int32_t *end)
{
    for (int64_t s = 0; s < num_segments; ++s) {
        const int64_t lo = begin[s], hi = end[s];
        if (hi <= lo) continue;
        if (lo < 0 || hi > num_items)
            simt::kernel_fail("segment %lld [%lld, %lld) lies outside %lld items", (long long)s, (long long)lo,
                              (long long)hi, (long long)num_items);
        std::copy(keys_in + lo, keys_in + hi, scratch + lo);
        std::stable_sort(scratch + lo, scratch + hi);
        std::copy(scratch + lo, scratch + hi, keys_out + lo);
    }
}

size_t dp_sort_pairs_u32_temp(int64_t n) { return (size_t)n * sizeof(int32_t); }

detpost_status dp_sort_pairs_u32(detpost_ctx *ctx, void *temp, size_t temp_bytes, const uint32_t *keys_in,
                                 uint32_t *keys_out, const int32_t *vals_in, int32_t *vals_out, int64_t n)
{
    if (n == 0) return DETPOST_OK;
    if (temp_bytes < dp_sort_pairs_u32_temp(n) || !simt::is_device_range(temp, temp_bytes) ||
        !simt::is_device_range(keys_in, (size_t)n * 4) || !simt::is_device_range(keys_out, (size_t)n * 4) ||
        !simt::is_device_range(vals_in, (size_t)n * 4) || !simt::is_device_range(vals_out, (size_t)n * 4))
        return dp_fail(ctx, DETPOST_ERR_INTERNAL, "sort operands are not device memory of the right size");
    dp_launch_cfg cfg(dim3(1), dim3(1), 0, dp_stream(ctx));
    cfg.out(keys_out, (size_t)n * 4).out(vals_out, (size_t)n * 4);
    DP_CUDA_TRY(ctx, DP_LAUNCH(sim_sort_pairs, cfg, keys_in, keys_out, vals_in, vals_out, (int32_t *)temp, n),
                "sorting scores");
    return DETPOST_OK;
}

size_t dp_segmented_sort_u64_temp(int64_t num_items, int64_t num_segments)
{
    (void)num_segments;
    return (size_t)num_items * sizeof(uint64_t);
}

detpost_status dp_segmented_sort_u64(detpost_ctx *ctx, void *temp, size_t temp_bytes, const uint64_t *keys_in,
                                     uint64_t *keys_out, int64_t num_items, int64_t num_segments,
                                     const int32_t *begin, const int32_t *end, int end_bit)
{
    (void)end_bit;
    if (num_items == 0 || num_segments == 0) return DETPOST_OK;
    if (temp_bytes < dp_segmented_sort_u64_temp(num_items, num_segments) ||
        !simt::is_device_range(temp, temp_bytes) || !simt::is_device_range(keys_in, (size_t)num_items * 8) ||
        !simt::is_device_range(keys_out, (size_t)num_items * 8) ||
        !simt::is_device_range(begin, (size_t)num_segments * 4) ||
        !simt::is_device_range(end, (size_t)num_segments * 4))
        return dp_fail(ctx, DETPOST_ERR_INTERNAL, "segmented sort operands are not device memory of the right size");
    dp_launch_cfg cfg(dim3(1), dim3(1), 0, dp_stream(ctx));
    DP_CUDA_TRY(ctx,
                DP_LAUNCH(sim_segmented_sort, cfg, keys_in, keys_out, (uint64_t *)temp, num_items, num_segments,
                          begin, end),
                "sorting candidates per image");
    return DETPOST_OK;
}

#else

#include <cub/device/device_radix_sort.cuh>
#include <cub/device/device_segmented_radix_sort.cuh>

size_t dp_sort_pairs_u32_temp(int64_t n)
{
    size_t bytes = 0;
    if (n > 0)
        cub::DeviceRadixSort::SortPairs(nullptr, bytes, (const uint32_t *)nullptr, (uint32_t *)nullptr,
                                        (const int32_t *)nullptr, (int32_t *)nullptr, n, 0, 32, (cudaStream_t)0);
    return bytes;
}

detpost_status dp_sort_pairs_u32(detpost_ctx *ctx, void *temp, size_t temp_bytes, const uint32_t *keys_in,
                                 uint32_t *keys_out, const int32_t *vals_in, int32_t *vals_out, int64_t n)
{
    if (n == 0) return DETPOST_OK;
    DP_CUDA_TRY(ctx,
                cub::DeviceRadixSort::SortPairs(temp, temp_bytes, keys_in, keys_out, vals_in, vals_out, n, 0, 32,
                                                dp_stream(ctx)),
                "sorting scores (cub::DeviceRadixSort::SortPairs)");
    return DETPOST_OK;
}

size_t dp_segmented_sort_u64_temp(int64_t num_items, int64_t num_segments)
{
    size_t bytes = 0;
    if (num_items > 0 && num_segments > 0)
        cub::DeviceSegmentedRadixSort::SortKeys(nullptr, bytes, (const uint64_t *)nullptr, (uint64_t *)nullptr,
                                                (int)num_items, (int)num_segments, (const int32_t *)nullptr,
                                                (const int32_t *)nullptr, 0, 64, (cudaStream_t)0);
    return bytes;
}

detpost_status dp_segmented_sort_u64(detpost_ctx *ctx, void *temp, size_t temp_bytes, const uint64_t *keys_in,
                                     uint64_t *keys_out, int64_t num_items, int64_t num_segments,
                                     const int32_t *begin, const int32_t *end, int end_bit)
{
    if (num_items == 0 || num_segments == 0) return DETPOST_OK;
    DP_CUDA_TRY(ctx,
                cub::DeviceSegmentedRadixSort::SortKeys(temp, temp_bytes, keys_in, keys_out, (int)num_items,
                                                        (int)num_segments, begin, end, 0, end_bit, dp_stream(ctx)),
                "sorting candidates per image (cub::DeviceSegmentedRadixSort::SortKeys)");
    return DETPOST_OK;
}

#endif
