/*
 * NMS on the GPU, without a single host synchronisation: candidate counts,
 * kept counts and every loop bound that depends on the data live in device
 * memory; launch shapes come from the sizes the caller passed.
 *
 * Single-class NMS (detpost_nms)
 *   1. keys: one 32-bit key per box whose ascending order is the descending
 *      score order (non-candidates get the largest key); a stable radix sort
 *      of (key, index) pairs (sort.cuh) lists candidates best first with
 *      equal scores in index order, and the boxes are gathered in that order.
 *      Soft-NMS does not need that order (it ranks by current score) and
 *      sorts by a spatial key instead, so that consecutive slots hold nearby
 *      boxes (see 3).
 *   2. hard / DIoU: blocked greedy over "stripes" of at most 2048 sorted
 *      boxes, so no N x N/64 bit mask is ever resident: only a stripe's
 *      bits within itself are (512 KiB). Per stripe:
 *        mask      a block per pair of the stripe's 64-row tiles computes
 *                  the suppression bits among its rows, skipping rows and
 *                  columns removed by earlier stripes;
 *        resolve   one block stages those words in shared memory, 1024 rows
 *                  at a time, and one warp of it walks them 64 rows at a
 *                  time: one lane runs the sequential greedy inside a word,
 *                  the others OR the kept rows into the later words;
 *        remove    a block per 64-column tile right of the stripe tests its
 *                  live columns against the stripe's kept boxes alone.
 *      Only kept rows ever need the columns right of their stripe, so those
 *      are the only ones computed (an earlier version computed every live
 *      row's, the mask then being a third of 10k-box NMS on an H200), and a
 *      later stripe only looks at rows no earlier kept box removed:
 *      clustered detections cost far less than N^2 / 2 overlaps.
 *   3. soft (linear, gaussian): in rounds that each take several boxes,
 *      because a pass over every box per kept box would make a chain of
 *      hundreds of passes. A round makes the boxes of highest current rank
 *      (score, then lower index) its candidates, half to all of a block's
 *      threads - a radix select on the ranks - and the block then takes
 *      candidates exactly as the reference does (best first by a block-wide
 *      maximum, one barrier a look - two boxes a look where the best cannot
 *      touch the second -, each other candidate decayed by its weight
 *      against the boxes taken) for as long as the best candidate
 *      still ranks at or above the lowest initial candidate: every other box
 *      ranks below that, and a decay (a product with a weight in [0, 1])
 *      only lowers a positive score, so none of them can be the reference's
 *      next choice; while negative scores, which decays raise towards 0, are
 *      in, a round's later choices must also beat a score of 0. Detections
 *      of different objects barely overlap, so a round takes many boxes (575
 *      kept boxes of the 10,000-box benchmark took 43 rounds of 64 candidates
 *      instead of 575; more candidates a round, fewer rounds). The next round
 *      first applies the round's decays to every box in selection order,
 *      skipping taken boxes that miss a warp's 32 neighbouring boxes (hence
 *      the spatial order) and computing the weights of the rest densely
 *      across the warp. That update was most of the work (83% of the
 *      one-block kernel's time on an H200), so the single-class kernel is a
 *      cooperative launch with one block per 256 boxes: every block updates
 *      its slots, and block 0 alone picks the candidates and takes boxes,
 *      between two grid-wide barriers. Batched soft-NMS keeps one block per
 *      segment (the segments fill the device).
 *      Every score is the reference's product of the same weights (shared
 *      scalar code, nms_math.h) in the same order, so scores and the
 *      selection order are bit-identical to it.
 *
 * Batched multi-class NMS (detpost_batched_nms), work segmented by
 * (image, class), no coordinate-offset trick:
 *   1. select: one block per image radix-selects its best pre_nms_top_k
 *      candidates by (score, box index, class), 11 bits a pass over a shared
 *      histogram, and writes each one's sort key (class, score, box);
 *   2. a segmented radix sort per image groups the candidates by class in
 *      score order, and they are gathered (boxes decoded) into slots;
 *   3. one block per (image, class) segment - found by binary search, so an
 *      image's classes need no host-side count - runs hard / DIoU NMS (a
 *      window of 256 candidates against the kept boxes, then a sequential
 *      pass over the window's 256 x 256 bit mask in shared memory) or
 *      soft-NMS as above, and writes a (score, box, class) key per slot (a
 *      class-agnostic segment, one per image, first drops each class's kept
 *      detections past max_per_class: one warp walks the kept list);
 *   4. a second segmented sort orders each image's kept detections, and the
 *      best max_per_image are written with their padding.
 * Every key is unique (it carries the box index), so the results do not
 * depend on the order of atomics or blocks: the output is deterministic.
 */
#include "dp_cuda.cuh"
#include "sort.cuh"
#include "../host/nms.h"
#include "../host/nms_math.h"


#define FULL_MASK 0xffffffffu
#define NMS_THREADS 256
#define STRIPE_MAX_ROWS 2048            /* the resolve block keeps one removal word per 64 rows */
#define RESOLVE_THREADS 1024
#define RESOLVE_WINDOW_WORDS 16         /* 1024 rows x 16 words of mask staged: 128 KiB of shared memory */
#define MASK_THREADS 256                /* four threads a row of a 64 x 64 tile */
#define REMOVE_THREADS 256              /* four threads a column right of the stripe */
#define HARD_WINDOW 256                 /* candidates a hard segment block decides at once (its threads) */
#define SELECT_THREADS 1024
#define SELECT_BITS 11
#define NO_KEY 0xffffffffffffffffull
#define SOFT_TAKE_MAX 256     /* boxes a soft-NMS round takes at most */
#define SOFT_COOP_SLICE 256   /* boxes per block of the cooperative kernel's update */
#define SOFT_RADIX_BITS 8

typedef unsigned long long word_t;

struct alignas(16) dp_box {
    float x1, y1, x2, y2;
};

template <int MODE>
__device__ __forceinline__ float box_overlap(const dp_box &a, const dp_box &b, float offset)
{
    return dp_overlap(a.x1, a.y1, a.x2, a.y2, b.x1, b.y1, b.x2, b.y2, MODE, offset);
}

/* The index of the lowest set bit, which is cleared. */
__device__ __forceinline__ int take_lowest(word_t &bits)
{
    const int i = __ffsll((long long)bits) - 1;
    bits &= bits - 1;
    return i;
}

__device__ __forceinline__ dp_pbox prepared(const dp_box &b, float offset)
{
    return dp_prepare_box(b.x1, b.y1, b.x2, b.y2, offset);
}

/* Bits of word `word` that are sorted positions below m. */
__device__ __forceinline__ word_t valid_bits(int64_t word, int64_t m)
{
    const int64_t lo = word * 64;
    if (lo + 64 <= m) return ~0ull;
    if (lo >= m) return 0;
    return (1ull << (m - lo)) - 1;
}

/* Bits needed to write every value below `count`. */
static int bits_for(int64_t count)
{
    int b = 0;
    while (b < 63 && ((int64_t)1 << b) < count) ++b;
    return b;
}

static unsigned threads_for(int64_t expected)
{
    int64_t t = (expected / 4 + 31) / 32 * 32;
    return (unsigned)(t < 64 ? 64 : t > 1024 ? 1024 : t);
}

/* ---- segments of candidate slots ------------------------------------------ */

/* Slots [image * cap, image * cap + count[image]) hold an image's candidates
 * in score order, grouped by class when cls is given (a segment per class),
 * else one segment per image. */
struct dp_segments {
    const int32_t *count;
    const int32_t *cls;
    int64_t cap, per_image, total;
};

struct segment_view {
    int64_t lo, hi, image;
};

__device__ __forceinline__ int64_t first_not_below(const int32_t *a, int64_t n, int64_t value)
{
    int64_t lo = 0, hi = n;
    while (lo < hi) {
        const int64_t mid = (lo + hi) / 2;
        if (a[mid] < value) lo = mid + 1;
        else hi = mid;
    }
    return lo;
}

__device__ __forceinline__ segment_view find_segment(const dp_segments &s, int64_t seg)
{
    segment_view v;
    v.image = seg / s.per_image;
    const int64_t base = v.image * s.cap, n = s.count[v.image];
    if (s.cls == nullptr) {
        v.lo = base;
        v.hi = base + n;
    } else {
        const int64_t c = seg % s.per_image;
        v.lo = base + first_not_below(s.cls + base, n, c);
        v.hi = base + first_not_below(s.cls + base, n, c + 1);
    }
    return v;
}

/* What a segment kept: its count is added to kept_count[image]; with
 * final_keys, every slot of the segment gets the sort key of the detection
 * kept at that rank, or NO_KEY. */
__device__ __forceinline__ void finish_segment(const segment_view &v, int64_t kept, const int32_t *kept_pos,
                                               const float *kept_score, const int32_t *tiebreak,
                                               int32_t *kept_count, uint64_t *final_keys, int fbits)
{
    if (threadIdx.x == 0 && kept > 0) atomicAdd(&kept_count[v.image], (int)kept);
    if (final_keys == nullptr) return;
    for (int64_t p = v.lo + threadIdx.x; p < v.hi; p += blockDim.x) {
        const int64_t j = p - v.lo;
        final_keys[p] = j < kept ? ((uint64_t)dp_score_key(kept_score[v.lo + j]) << fbits) |
                                       (uint64_t)tiebreak[kept_pos[v.lo + j]]
                                 : NO_KEY;
    }
}

/* Class-agnostic batched NMS keeps at most `limit` detections of each class:
 * the first ones of the class in selection order. The group's NMS runs
 * without the limit, so the detections dropped here still suppressed what
 * they overlap, as the CPU reference has it. */
struct dp_class_cap {
    const int32_t *cls;     /* the class of every slot */
    int32_t *counts;        /* [images, classes] scratch */
    int64_t limit, classes; /* limit 0: no cap */
};

/* Compacts a segment's kept list (kept_pos, kept_score in selection order)
 * to the detections under the cap; returns the new count to every thread.
 * The cap only applies to class-agnostic groups, one per image, whose kept
 * list is in selection order, so one warp walks it 32 entries at a time: an
 * entry's rank in its class is the class's count before the chunk plus the
 * chunk's earlier entries of that class (found by shuffles), and the chunk's
 * last entry of each class stores the class's new count. */
__device__ int64_t cap_per_class(const dp_class_cap &cap, const segment_view &v, int64_t kept, int32_t *kept_pos,
                                 float *kept_score)
{
    DP_SHARED(int64_t, capped, [1]);
    int32_t *counts = cap.counts + v.image * cap.classes;
    for (int64_t c = threadIdx.x; c < cap.classes; c += blockDim.x) counts[c] = 0;
    __syncthreads();
    if (threadIdx.x < 32) {
        const unsigned lane = threadIdx.x;
        int64_t w = 0;
        for (int64_t first = 0; first < kept; first += 32) {
            const int64_t k = first + lane;
            const bool in = k < kept;
            const int32_t pos = in ? kept_pos[v.lo + k] : 0;
            const float score = in ? kept_score[v.lo + k] : 0.0f;
            const int32_t cls = in ? cap.cls[pos] : -1; /* classes are >= 0 */
            const int64_t before = in ? counts[cls] : 0;
            int64_t earlier = 0;
            bool last = in;
            for (unsigned j = 0; j < 32; ++j) {
                const int32_t other = __shfl_sync(0xffffffffu, cls, j);
                if (!in || other != cls) continue;
                if (j < lane) ++earlier;
                if (j > lane) last = false;
            }
            const int64_t rank = before + earlier;
            const bool take = in && rank < cap.limit;
            const unsigned taken = __ballot_sync(0xffffffffu, take);
            __syncwarp(); /* every lane has read its entry and count before any is overwritten */
            if (take) {
                const int64_t at = v.lo + w + __popc(taken & ((1u << lane) - 1u));
                kept_pos[at] = pos;
                kept_score[at] = score;
            }
            if (last) counts[cls] = (int32_t)(rank + 1);
            w += __popc(taken);
            __syncwarp();
        }
        if (lane == 0) capped[0] = w;
    }
    __syncthreads();
    return capped[0];
}

/* ---- single-class: keys, gather, output ------------------------------------ */

/* Float bits as an unsigned integer in the order of the values. */
__device__ __forceinline__ uint32_t ordered_bits(float f)
{
    const uint32_t u = dp_float_bits(f);
    return (u & 0x80000000u) ? ~u : u | 0x80000000u;
}

/* The 16 low bits of x moved to the even bit positions. */
__device__ __forceinline__ uint32_t spread_bits(uint32_t x)
{
    x &= 0xffffu;
    x = (x | (x << 8)) & 0x00ff00ffu;
    x = (x | (x << 4)) & 0x0f0f0f0fu;
    x = (x | (x << 2)) & 0x33333333u;
    return (x | (x << 1)) & 0x55555555u;
}

/* A key below 0xffffffff under which nearby boxes sort close together: the
 * Z-order of the box centre (the top 16 ordered bits of each coordinate sum,
 * so no extent is needed; finer where the values are smaller). */
__device__ __forceinline__ uint32_t spatial_key(const float *b)
{
    const uint32_t x = ordered_bits(b[0] + b[2]) >> 16, y = ordered_bits(b[1] + b[3]) >> 16;
    return (spread_bits(x) << 1 | spread_bits(y)) >> 1;
}

__global__ void nms_keys(const float *__restrict__ boxes, const float *__restrict__ scores, int64_t n,
                         float score_threshold, int soft, float min_score, uint32_t *__restrict__ keys,
                         int32_t *__restrict__ vals, int32_t *__restrict__ state)
{
    for (int64_t base = (int64_t)blockIdx.x * blockDim.x; base < n; base += (int64_t)gridDim.x * blockDim.x) {
        const int64_t i = base + threadIdx.x;
        int candidate = 0;
        if (i < n) {
            const float s = scores[i];
            candidate = dp_nms_candidate(s, score_threshold, soft, min_score);
            keys[i] = !candidate ? 0xffffffffu : soft ? spatial_key(boxes + i * 4) : dp_score_key(s);
            vals[i] = (int32_t)i;
        }
        const int count = __syncthreads_count(candidate);
        if (threadIdx.x == 0 && count > 0) atomicAdd(&state[0], count);
    }
}

__global__ void nms_gather(const float *__restrict__ boxes, const float *__restrict__ scores,
                           const int32_t *__restrict__ order, int64_t n, dp_box *__restrict__ box,
                           float *__restrict__ score)
{
    for (int64_t p = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; p < n; p += (int64_t)gridDim.x * blockDim.x) {
        const int64_t i = order[p];
        const float *b = boxes + i * 4;
        box[p] = dp_box{b[0], b[1], b[2], b[3]};
        score[p] = scores[i];
    }
}

/* keep / keep_scores from the kept positions, padded with -1 / 0. */
__global__ void nms_write_keep(const int32_t *__restrict__ state, const int32_t *__restrict__ kept_pos,
                               const float *__restrict__ kept_score, const int32_t *__restrict__ order, int64_t n,
                               int64_t *__restrict__ keep, float *__restrict__ keep_scores,
                               int64_t *__restrict__ num_keep)
{
    const int64_t kept = state[1];
    for (int64_t k = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; k < n; k += (int64_t)gridDim.x * blockDim.x) {
        const int here = k < kept;
        keep[k] = here ? order[kept_pos[k]] : -1;
        if (keep_scores) keep_scores[k] = here ? kept_score[k] : 0.0f;
    }
    if (blockIdx.x == 0 && threadIdx.x == 0) *num_keep = kept;
}

/* ---- single-class hard / DIoU: stripes ------------------------------------- */

/* state: [0] candidates m, [1] kept so far, [2] kept before this stripe.
 * The stripe's own suppression bits: a block takes one pair of the stripe's
 * 64-row tiles (the row tile at or left of the column tile), four threads a
 * row, each testing 16 of the columns; rows and columns that earlier stripes
 * removed are skipped, and so are tiles with none left. mask holds a row of
 * `stride` words per row of the stripe. */
template <int MODE>
__global__ void __launch_bounds__(MASK_THREADS)
    nms_stripe_mask(const dp_box *__restrict__ box, const word_t *__restrict__ remv, word_t *__restrict__ mask,
                    int64_t stride, int64_t r0, const int32_t *__restrict__ state, float iou_threshold, float offset,
                    int64_t limit)
{
    DP_SHARED(dp_pbox, cols, [64]);
    DP_SHARED(word_t, part, [MASK_THREADS / 64][64]);
    if (blockIdx.x < blockIdx.y) return;
    const int64_t m = state[0];
    if (r0 >= m || (limit > 0 && state[1] >= limit)) return;
    const int64_t rt = r0 / 64 + blockIdx.y, ct = r0 / 64 + blockIdx.x;
    const word_t row_alive = ~remv[rt] & valid_bits(rt, m), col_alive = ~remv[ct] & valid_bits(ct, m);
    if (row_alive == 0 || col_alive == 0) return;
    const int t = threadIdx.x, row = t % 64, quarter = t / 64;
    if (t < 64 && ct * 64 + t < m) cols[t] = prepared(box[ct * 64 + t], offset);
    __syncthreads();
    const bool mine = (row_alive >> row) & 1;
    word_t bits = 0;
    if (mine) {
        const dp_pbox me = prepared(box[rt * 64 + row], offset);
        /* only columns still alive matter; on the diagonal only those after the row */
        const word_t after = ct != rt ? ~0ull : row == 63 ? 0 : ~0ull << (row + 1);
        for (word_t todo = col_alive & after & (0xffffull << (16 * quarter)); todo;) {
            const int j = take_lowest(todo);
            if (dp_overlap_prepared(&me, &cols[j], MODE, offset) > iou_threshold) bits |= 1ull << j;
        }
    }
    part[quarter][row] = bits;
    __syncthreads();
    if (t < 64 && mine) {
        word_t all = 0;
        for (int q = 0; q < MASK_THREADS / 64; ++q) all |= part[q][t];
        mask[(rt * 64 + t - r0) * stride + blockIdx.x] = all;
    }
}

/* One block: the sequential greedy over the stripe's rows, with every mask
 * word it reads in shared memory. The stripe is taken in windows of up to
 * win_words 64-row groups: the whole block first stages each window's
 * words that a walk can read (a live row's own group and the window's later
 * groups), then warp 0 walks the window with no global load in its chain
 * (a walk that fetched kept rows from global memory spent about 0.8 us a
 * group on an H200, most of the time of 10k-box NMS), and last the block
 * ORs the window's kept rows into the removal words of the stripe's later
 * windows, one warp a word. */
__global__ void __launch_bounds__(RESOLVE_THREADS)
    nms_stripe_resolve(const word_t *__restrict__ mask, const word_t *__restrict__ remv, int64_t stride, int64_t r0,
                       int64_t rows, int win_words, int32_t *__restrict__ state, int32_t *__restrict__ kept_pos,
                       int64_t limit)
{
    DP_SHARED_DYNAMIC(word_t, staged); /* [win_words * 64][win_words] */
    DP_SHARED(word_t, rem, [STRIPE_MAX_ROWS / 64]);
    DP_SHARED(int32_t, win_kept, [RESOLVE_WINDOW_WORDS * 64]); /* the window's kept rows, within the stripe */
    DP_SHARED(int64_t, shared_kept, [1]);
    DP_SHARED(int, shared_count, [1]);
    const int64_t m = state[0];
    if (r0 >= m || (limit > 0 && state[1] >= limit)) return;
    const int tid = threadIdx.x, lane = tid % 32, warp = tid / 32, warps = blockDim.x / 32;
    const int64_t w0 = r0 / 64;
    const int groups = (int)((rows + 63) / 64);
    for (int g = tid; g < groups; g += blockDim.x) rem[g] = remv[w0 + g] | ~valid_bits(w0 + g, m);
    if (tid == 0) state[2] = state[1], shared_kept[0] = state[1];
    __syncthreads();
    /* lanes split a window's words: lane l ORs word l % win_words over every parts-th kept row */
    const int parts = 32 / win_words, part = lane / win_words, my_word = lane % win_words;
    for (int first = 0; first < groups; first += win_words) {
        const int here = groups - first < win_words ? groups - first : win_words;
        for (int e = tid; e < here * 64 * here; e += blockDim.x) {
            const int row = e / here, w = e - row * here, g = row / 64;
            if (w < g || (rem[first + g] >> (row % 64)) & 1) continue; /* never read by the walk */
            staged[row * here + w] = mask[(int64_t)(first * 64 + row) * stride + first + w];
        }
        __syncthreads();
        if (warp == 0) {
            int64_t kept = shared_kept[0];
            int count = 0;
            for (int g = 0; g < here; ++g) {
                const word_t removed = rem[first + g];
                if (removed == ~0ull) continue;
                word_t kept_bits = 0;
                if (lane == 0) {
                    /* the lowest row neither removed nor taken is the next kept one */
                    word_t now = removed;
                    while (~now) {
                        const int i = __ffsll((long long)~now) - 1;
                        kept_bits |= 1ull << i;
                        now |= staged[(g * 64 + i) * here + g] | (1ull << i);
                        if (limit > 0 && kept + __popcll(kept_bits) >= limit) break;
                    }
                }
                kept_bits = __shfl_sync(FULL_MASK, kept_bits, 0);
                for (int i = lane; i < 64; i += 32)
                    if ((kept_bits >> i) & 1) {
                        const int k = __popcll(kept_bits & ((1ull << i) - 1));
                        kept_pos[kept + k] = (int32_t)(r0 + (first + g) * 64 + i);
                        win_kept[count + k] = (first + g) * 64 + i;
                    }
                kept += __popcll(kept_bits);
                count += __popcll(kept_bits);
                word_t acc = 0;
                if (my_word > g && my_word < here) {
                    int k = 0;
                    for (word_t todo = kept_bits; todo; ++k) {
                        const int i = take_lowest(todo);
                        if (k % parts == part) acc |= staged[(g * 64 + i) * here + my_word];
                    }
                }
                for (int d = win_words; d < 32; d *= 2) acc |= __shfl_xor_sync(FULL_MASK, acc, d);
                if (part == 0 && acc) rem[first + my_word] |= acc;
                __syncwarp();
                if (limit > 0 && kept >= limit) break;
            }
            if (lane == 0) shared_kept[0] = kept, shared_count[0] = count;
        }
        __syncthreads();
        if (limit > 0 && shared_kept[0] >= limit) break;
        const int count = shared_count[0];
        for (int w = first + here + warp; w < groups && count > 0; w += warps) {
            word_t acc = 0;
            for (int k = lane; k < count; k += 32) acc |= mask[(int64_t)win_kept[k] * stride + w];
            for (int d = 16; d > 0; d /= 2) acc |= __shfl_xor_sync(FULL_MASK, acc, d);
            if (lane == 0) rem[w] |= acc;
        }
        __syncthreads();
    }
    if (tid == 0) state[1] = (int32_t)shared_kept[0];
}

/* The stripe's kept boxes remove the columns right of the stripe that they
 * overlap above the threshold: a block takes 64-column tiles in turn
 * (skipping those with no column left), four threads a column, each testing
 * every fourth kept box until one hits. The kept boxes are read into shared
 * memory once when they fit in it (the usual case), else REMOVE_THREADS at a
 * time for each tile. Only kept rows ever need the columns right of their
 * stripe, so no other row's are computed. */
template <int MODE>
__global__ void __launch_bounds__(REMOVE_THREADS)
    nms_stripe_remove(const dp_box *__restrict__ box, word_t *__restrict__ remv, int64_t words, int64_t r0,
                      int64_t w_begin, const int32_t *__restrict__ state, const int32_t *__restrict__ kept_pos,
                      float iou_threshold, float offset, int64_t limit)
{
    DP_SHARED(dp_pbox, kept_box, [REMOVE_THREADS]);
    DP_SHARED(unsigned, hits, [REMOVE_THREADS / 32]);
    const int64_t m = state[0], k0 = state[2], k1 = state[1];
    if (r0 >= m || k1 == k0 || (limit > 0 && k1 >= limit)) return;
    const int t = threadIdx.x, col = t % 64, slice = t / 64, slices = REMOVE_THREADS / 64;
    const bool resident = k1 - k0 <= REMOVE_THREADS;
    if (resident) {
        if (t < k1 - k0) kept_box[t] = prepared(box[kept_pos[k0 + t]], offset);
        __syncthreads();
    }
    for (int64_t ct = w_begin + blockIdx.x; ct < words; ct += gridDim.x) {
        const word_t alive = ~remv[ct] & valid_bits(ct, m);
        if (alive == 0) continue;
        const bool mine = (alive >> col) & 1;
        const dp_pbox me = prepared(mine ? box[ct * 64 + col] : dp_box{0.0f, 0.0f, 0.0f, 0.0f}, offset);
        bool hit = false;
        for (int64_t base = k0; base < k1; base += REMOVE_THREADS) {
            const int here = k1 - base < REMOVE_THREADS ? (int)(k1 - base) : REMOVE_THREADS;
            if (!resident) {
                __syncthreads(); /* the previous chunk is no longer read */
                if (t < here) kept_box[t] = prepared(box[kept_pos[base + t]], offset);
                __syncthreads();
            }
            for (int k = slice; mine && !hit && k < here; k += slices)
                hit = dp_overlap_prepared(&kept_box[k], &me, MODE, offset) > iou_threshold;
        }
        const unsigned ballot = __ballot_sync(FULL_MASK, hit);
        if (t % 32 == 0) hits[t / 32] = ballot;
        __syncthreads();
        if (t == 0) {
            word_t bits = 0;
            for (int w = 0; w < REMOVE_THREADS / 32; ++w) bits |= (word_t)hits[w] << (32 * (w % 2));
            remv[ct] |= bits;
        }
        __syncthreads(); /* hits is refilled by the next tile */
    }
}

/* ---- hard / DIoU per segment (batched) ------------------------------------- */

template <int MODE>
__global__ void __launch_bounds__(HARD_WINDOW)
    nms_segment_hard(dp_segments segs, const dp_box *__restrict__ box, const float *__restrict__ score,
                     const int32_t *__restrict__ tiebreak, float iou_threshold, float offset, int64_t limit,
                     dp_class_cap cap, int32_t *__restrict__ kept_pos, float *__restrict__ kept_score,
                     int32_t *__restrict__ kept_count, uint64_t *__restrict__ final_keys, int fbits)
{
    constexpr int WORDS = HARD_WINDOW / 64;
    DP_SHARED(dp_box, window, [HARD_WINDOW]);
    DP_SHARED(word_t, rows, [HARD_WINDOW][WORDS]);
    DP_SHARED(unsigned, alive_words, [HARD_WINDOW / 32]);
    DP_SHARED(int64_t, shared_kept, [1]);
    const int t = threadIdx.x;
    for (int64_t seg = blockIdx.x; seg < segs.total; seg += gridDim.x) {
        const segment_view v = find_segment(segs, seg);
        int64_t kept = 0;
        for (int64_t w0 = v.lo; w0 < v.hi; w0 += HARD_WINDOW) {
            const int64_t p = w0 + t;
            const int span = (int)(v.hi - w0 < HARD_WINDOW ? v.hi - w0 : HARD_WINDOW);
            dp_box me = {0.0f, 0.0f, 0.0f, 0.0f};
            int alive = p < v.hi;
            if (alive) {
                me = box[p];
                for (int64_t k = 0; k < kept; ++k)
                    if (box_overlap<MODE>(box[kept_pos[v.lo + k]], me, offset) > iou_threshold) {
                        alive = 0;
                        break;
                    }
            }
            window[t] = me;
            const unsigned ballot = __ballot_sync(FULL_MASK, alive);
            if (t % 32 == 0) alive_words[t / 32] = ballot;
            __syncthreads();
            if (alive) {
                for (int q = 0; q < WORDS; ++q) {
                    word_t bits = 0;
                    for (int j = q * 64 > t + 1 ? q * 64 : t + 1; j < (q + 1) * 64 && j < span; ++j)
                        if (((alive_words[j / 32] >> (j % 32)) & 1) &&
                            box_overlap<MODE>(me, window[j], offset) > iou_threshold)
                            bits |= 1ull << (j % 64);
                    rows[t][q] = bits;
                }
            }
            __syncthreads();
            if (t == 0) {
                word_t removed[WORDS];
                for (int q = 0; q < WORDS; ++q)
                    removed[q] = ~((word_t)alive_words[2 * q] | (word_t)alive_words[2 * q + 1] << 32);
                for (int i = 0; i < span; ++i) {
                    if ((removed[i / 64] >> (i % 64)) & 1) continue;
                    kept_pos[v.lo + kept] = (int32_t)(w0 + i);
                    kept_score[v.lo + kept] = score[w0 + i];
                    if (++kept == limit) break;
                    for (int q = i / 64; q < WORDS; ++q) removed[q] |= rows[i][q];
                }
                shared_kept[0] = kept;
            }
            __syncthreads();
            kept = shared_kept[0];
            if (limit > 0 && kept >= limit) break;
        }
        if (cap.limit > 0) kept = cap_per_class(cap, v, kept, kept_pos, kept_score);
        finish_segment(v, kept, kept_pos, kept_score, tiebreak, kept_count, final_keys, fbits);
        __syncthreads(); /* shared memory is reused by the next segment */
    }
}

/* ---- soft-NMS per segment (single-class and batched) ----------------------- */

/* Larger means a higher score, then a lower tie-break; every box still in
 * has a rank above 0, which therefore stands for "out". */
__device__ __forceinline__ word_t soft_rank(float score, int32_t tiebreak)
{
    return ((word_t)~dp_score_key(score) << 32) | (word_t)(~(uint32_t)tiebreak);
}

__device__ __forceinline__ word_t warp_max(word_t v)
{
    for (int d = 16; d > 0; d /= 2) {
        const word_t o = __shfl_xor_sync(FULL_MASK, v, d);
        v = o > v ? o : v;
    }
    return v;
}

__device__ __forceinline__ word_t warp_min(word_t v)
{
    for (int d = 16; d > 0; d /= 2) {
        const word_t o = __shfl_xor_sync(FULL_MASK, v, d);
        v = o < v ? o : v;
    }
    return v;
}

/* True when the boxes share no area, so their IoU is 0 and soft-NMS leaves
 * the score exactly as it is (weight 1 for both methods): the same test
 * dp_overlap makes first, without the rest of the arithmetic. The test only
 * grows with b, so a box that misses the bounding box of several boxes
 * misses each of them. */
template <typename A, typename B>
__device__ __forceinline__ bool disjoint(const A &a, const B &b, float offset)
{
    return !(dp_extent(fmaxf(a.x1, b.x1), fminf(a.x2, b.x2), offset) > 0.0f &&
             dp_extent(fmaxf(a.y1, b.y1), fminf(a.y2, b.y2), offset) > 0.0f);
}

/* The factor b's score is multiplied by when `taken` is selected, computed
 * as the reference computes it (dp_overlap is dp_overlap_prepared of the
 * prepared boxes, taken first). */
template <int METHOD>
__device__ __forceinline__ float soft_weight(const dp_pbox &taken, const dp_pbox &b, float iou_threshold, float sigma,
                                             float offset)
{
    return dp_soft_nms_weight(METHOD, dp_overlap_prepared(&taken, &b, DP_MODE_IOU, offset), iou_threshold, sigma);
}

struct soft_segment {
    segment_view v;
    const dp_box *box;
    const float *score;
    const int32_t *tiebreak;
    float *cur;   /* score after every decay applied so far; NaN once taken */
    word_t *rank; /* soft_rank of cur, 0 for a box that is out */
    float iou_threshold, sigma, min_score, offset;
};

/* What the threads of a soft-NMS block share between the steps of a round. */
struct soft_state {
    word_t hi_rank, lo_rank; /* highest and lowest rank of the boxes still in */
    word_t prefix;           /* radix select: the digits chosen so far */
    word_t threshold;        /* the round's candidates rank at or above it */
    int64_t above;           /* radix select: boxes above the prefix */
    int64_t kept;            /* boxes the segment kept so far */
    unsigned alive;          /* boxes still in */
    unsigned candidates;     /* boxes the round decides among */
    int taken;               /* boxes the last round took */
    int done;                /* radix select: the threshold is found */
};

/* Applies to each lane's score c the decays of the taken boxes its bits name
 * (bit j: taken[j]; bits in selection order), which are all the taken boxes
 * with a weight other than 1. The weights are the expensive part, so the
 * warp computes them 32 (box, taken box) pairs at a time whichever lanes the
 * pairs belong to, and a lane with many overlaps does not hold the other 31
 * back; each lane then multiplies its own weights in selection order with
 * the reference's drop test before each multiplication. */
template <int METHOD>
__device__ float soft_decay_warp(const soft_segment &s, float c, word_t bits, const dp_box &b, const dp_pbox *taken,
                                 int32_t *queue_pair, float *queue_weight)
{
    const int lane = threadIdx.x % 32;
    const int count = __popcll(bits);
    int end = count;
    for (int d = 1; d < 32; d *= 2) {
        const int o = __shfl_up_sync(FULL_MASK, end, d);
        if (lane >= d) end += o;
    }
    const int total = __shfl_sync(FULL_MASK, end, 31), begin = end - count;
    for (int base = 0; base < total; base += 32) {
        const int from = begin > base ? begin : base, to = end < base + 32 ? end : base + 32;
        for (int q = from; q < to; ++q) {
            queue_pair[q - base] = lane << 6 | (__ffsll((long long)bits) - 1);
            bits &= bits - 1;
        }
        __syncwarp();
        const bool busy = base + lane < total;
        const int pair = busy ? queue_pair[lane] : lane << 6, owner = pair >> 6;
        const dp_pbox other =
            dp_prepare_box(__shfl_sync(FULL_MASK, b.x1, owner), __shfl_sync(FULL_MASK, b.y1, owner),
                           __shfl_sync(FULL_MASK, b.x2, owner), __shfl_sync(FULL_MASK, b.y2, owner), s.offset);
        queue_weight[lane] =
            busy ? soft_weight<METHOD>(taken[pair & 63], other, s.iou_threshold, s.sigma, s.offset) : 1.0f;
        __syncwarp();
        for (int q = from; q < to; ++q)
            if (c >= s.min_score) c = DP_MUL(c, queue_weight[q - base]);
        __syncwarp(); /* the queue is refilled */
    }
    return c;
}

/* Brings every box still in up to date with the decays of the boxes the last
 * round took (taken[0, t), in selection order: the reference's sequence of
 * multiplications for each box) and stores its score and rank; adds up the
 * boxes still in and their highest and lowest rank in `st`, and with
 * fixed >= 0 counts their ranks' digit below the first `fixed` bits in
 * `hist` (the radix select's first pass). A warp visits 32 consecutive slots
 * at a time (single-class slots are in spatial order): a taken box that
 * misses the bounding box of the warp's boxes misses each of them, and only
 * the others are tested box by box. The first pass starts from the input
 * scores and writes every slot. */
template <int METHOD>
__device__ void soft_update(const soft_segment &s, const dp_pbox *taken, int t, bool first, int fixed,
                            int32_t *queue_pair, float *queue_weight, unsigned *hist, soft_state &st)
{
    const int width = 64 - fixed < SOFT_RADIX_BITS ? 64 - fixed : SOFT_RADIX_BITS, shift = 64 - fixed - width;
    const int lane = threadIdx.x % 32, warp = threadIdx.x / 32, warps = blockDim.x / 32;
    word_t hi = 0, lo = ~0ull;
    unsigned alive_count = 0;
    for (int64_t base = s.v.lo + (int64_t)warp * 32; base < s.v.hi; base += (int64_t)warps * 32) {
        const int64_t p = base + lane;
        const bool in = p < s.v.hi;
        float c = in ? (first ? s.score[p] : s.cur[p]) : NAN;
        bool alive = c >= s.min_score;
        if (!first && !__any_sync(FULL_MASK, alive)) continue;
        const dp_box b = alive ? s.box[p] : dp_box{0.0f, 0.0f, 0.0f, 0.0f};
        const int32_t tiebreak = alive ? s.tiebreak[p] : 0;
        if (t > 0) {
            const bool counted = alive && dp_prepare_box(b.x1, b.y1, b.x2, b.y2, s.offset).nonempty;
            dp_box u = {counted ? b.x1 : INFINITY, counted ? b.y1 : INFINITY, counted ? b.x2 : -INFINITY,
                        counted ? b.y2 : -INFINITY};
            for (int d = 16; d > 0; d /= 2) {
                u.x1 = fminf(u.x1, __shfl_xor_sync(FULL_MASK, u.x1, d));
                u.y1 = fminf(u.y1, __shfl_xor_sync(FULL_MASK, u.y1, d));
                u.x2 = fmaxf(u.x2, __shfl_xor_sync(FULL_MASK, u.x2, d));
                u.y2 = fmaxf(u.y2, __shfl_xor_sync(FULL_MASK, u.y2, d));
            }
            bool decayed = false;
            for (int c0 = 0; c0 < t; c0 += 64) { /* 64 taken boxes at a time, in selection order */
                const dp_pbox *chunk = taken + c0;
                const int tc = t - c0 < 64 ? t - c0 : 64;
                const word_t near =
                    (word_t)__ballot_sync(FULL_MASK, lane < tc && !disjoint(chunk[lane], u, s.offset)) |
                    (word_t)__ballot_sync(FULL_MASK, lane + 32 < tc && !disjoint(chunk[lane + 32], u, s.offset))
                        << 32;
                word_t bits = 0;
                if (counted)
                    for (word_t todo = near; todo; todo &= todo - 1) {
                        const int j = __ffsll((long long)todo) - 1;
                        if (!disjoint(chunk[j], b, s.offset)) bits |= 1ull << j;
                    }
                c = soft_decay_warp<METHOD>(s, c, bits, b, chunk, queue_pair, queue_weight);
                decayed = decayed || bits != 0;
            }
            if (decayed) s.cur[p] = c;
            alive = c >= s.min_score;
        }
        if (first && in) s.cur[p] = c;
        word_t r = 0;
        if (alive) {
            r = soft_rank(c, tiebreak);
            hi = r > hi ? r : hi;
            lo = r < lo ? r : lo;
            ++alive_count;
            if (fixed >= 0) atomicAdd(&hist[(int)(r >> shift) & ((1 << width) - 1)], 1u);
        }
        if (in) s.rank[p] = r;
    }
    hi = warp_max(hi);
    lo = warp_min(lo);
    for (int d = 16; d > 0; d /= 2) alive_count += __shfl_xor_sync(FULL_MASK, alive_count, d);
    if (lane == 0 && alive_count > 0) {
        atomicMax(&st.hi_rank, hi);
        atomicMin(&st.lo_rank, lo);
        atomicAdd(&st.alive, alive_count);
    }
}

/* A rank threshold with between cap / 2 and cap boxes at or above it, or 0
 * (all of them) when no more than cap are in: a radix select, 8 bits a pass
 * over a shared histogram, from a bit above which every rank still in is
 * the same (`fixed` of them, whose histogram the update already made; -1:
 * from the highest bit in which the ranks differ). It stops at the first
 * digit that lands in the range, so the update's pass is usually the only
 * one. */
__device__ word_t soft_threshold(const soft_segment &s, int fixed, unsigned *hist, soft_state &st, int cap)
{
    if (st.alive <= (unsigned)cap) return 0;
    const int lane = threadIdx.x % 32;
    bool counted = fixed >= 0;
    if (!counted) fixed = __clzll((long long)(st.hi_rank ^ st.lo_rank));
    word_t prefix = fixed ? st.hi_rank >> (64 - fixed) : 0;
    int64_t above = 0;
    for (;;) {
        const int width = 64 - fixed < SOFT_RADIX_BITS ? 64 - fixed : SOFT_RADIX_BITS, shift = 64 - fixed - width;
        const int bins = 1 << width;
        if (!counted) {
            for (int i = threadIdx.x; i < bins; i += blockDim.x) hist[i] = 0;
            __syncthreads();
            for (int64_t p = s.v.lo + threadIdx.x; p < s.v.hi; p += blockDim.x) {
                const word_t r = s.rank[p];
                if (r != 0 && (fixed == 0 || r >> (64 - fixed) == prefix))
                    atomicAdd(&hist[(int)(r >> shift) & (bins - 1)], 1u);
            }
            __syncthreads();
        }
        counted = false;
        if (threadIdx.x < 32) {
            /* lane l counts its bins from the top down; one lane sees the count reach cap / 2 */
            const int per_lane = (bins + 31) / 32;
            int64_t sum = 0;
            for (int k = 0; k < per_lane; ++k) {
                const int bin = bins - 1 - (lane * per_lane + k);
                if (bin >= 0) sum += hist[bin];
            }
            int64_t upto = sum;
            for (int d = 1; d < 32; d *= 2) {
                const int64_t o = __shfl_up_sync(FULL_MASK, upto, d);
                if (lane >= d) upto += o;
            }
            int64_t cum = above + upto - sum;
            if (cum < cap / 2 && cum + sum >= cap / 2) {
                for (int k = 0; k < per_lane; ++k) {
                    const int bin = bins - 1 - (lane * per_lane + k);
                    cum += hist[bin];
                    if (cum >= cap / 2) {
                        st.prefix = (prefix << width) | (word_t)bin;
                        st.threshold = st.prefix << shift;
                        st.above = cum - hist[bin];
                        st.done = cum <= cap;
                        break;
                    }
                }
            }
        }
        __syncthreads();
        if (st.done) return st.threshold;
        prefix = st.prefix, above = st.above, fixed += width;
    }
}

/* The highest rank across the warp. */
__device__ __forceinline__ word_t warp_rank_max(word_t v)
{
#if defined(DETPOST_SIM) || (defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800)
    /* two single-instruction reductions instead of five 64-bit shuffle steps */
    const unsigned hi = __reduce_max_sync(FULL_MASK, (unsigned)(v >> 32));
    const unsigned lo = __reduce_max_sync(FULL_MASK, (unsigned)(v >> 32) == hi ? (unsigned)v : 0u);
    return (word_t)hi << 32 | lo;
#else
    return warp_max(v);
#endif
}

/* A block's shared memory for soft-NMS rounds. A round's candidates, as
 * many as the block has threads (one each in the resolve), are the launch's
 * dynamic shared memory: SOFT_CANDIDATE_BYTES a thread. */
struct soft_smem {
    soft_state *st;
    dp_pbox *taken; /* [SOFT_TAKE_MAX] boxes the round took, in selection order */
    dp_pbox *cand_box;
    word_t *cand_rank;
    float *cand_score;
    int32_t *cand_slot, *cand_tiebreak;
    int32_t (*queue_pair)[32];
    float (*queue_weight)[32];
    unsigned *hist;
    word_t (*red_rank)[32]; /* [2][32]: each warp's best rank, a buffer per parity of the look */
    word_t (*red_second)[32]; /* ... and second best */
    int32_t (*red_index)[32];
    int32_t (*red_index_second)[32];
};

__device__ __forceinline__ soft_smem soft_shared()
{
    DP_SHARED(soft_state, st, [1]);
    DP_SHARED(dp_pbox, taken, [SOFT_TAKE_MAX]);
    DP_SHARED(int32_t, queue_pair, [32][32]);
    DP_SHARED(float, queue_weight, [32][32]);
    DP_SHARED(unsigned, hist, [1 << SOFT_RADIX_BITS]);
    DP_SHARED(word_t, red_rank, [2][32]);
    DP_SHARED(word_t, red_second, [2][32]);
    DP_SHARED(int32_t, red_index, [2][32]);
    DP_SHARED(int32_t, red_index_second, [2][32]);
    DP_SHARED_DYNAMIC(unsigned char, dynamic);
    const int cap = blockDim.x;
    dp_pbox *cand_box = reinterpret_cast<dp_pbox *>(dynamic);
    word_t *cand_rank = reinterpret_cast<word_t *>(cand_box + cap);
    float *cand_score = reinterpret_cast<float *>(cand_rank + cap);
    int32_t *cand_slot = reinterpret_cast<int32_t *>(cand_score + cap);
    return soft_smem{st,         taken,        cand_box, cand_rank,  cand_score, cand_slot,       cand_slot + cap,
                     queue_pair, queue_weight, hist,     red_rank,   red_second, red_index,       red_index_second};
}

/* The rank of min_score (the lowest a box still in can have) and the
 * highest rank of a score of 0 (see nms_segment_soft). */
__device__ __forceinline__ word_t soft_lowest(float min_score) { return (word_t)~dp_score_key(min_score) << 32; }
__device__ __forceinline__ word_t soft_zero_max() { return (word_t)~dp_score_key(0.0f) << 32 | 0xffffffffu; }

/* Bits above which every rank still in agrees, given the highest and lowest
 * rank they can have; -1 where the update is not to count them. */
__device__ __forceinline__ int soft_fixed(bool first, word_t highest, word_t lowest)
{
    return first || highest == lowest ? -1 : __clzll((long long)(highest ^ lowest));
}

/* After a round: every box still in was a candidate and the round took all
 * it could (not stopped by SOFT_TAKE_MAX), or the limit is reached. */
__device__ __forceinline__ bool soft_done(word_t threshold, const soft_state &st, int64_t limit)
{
    return (threshold == 0 && st.taken < SOFT_TAKE_MAX) || (limit > 0 && st.kept >= limit);
}

/* The block takes boxes among the round's candidates, one a thread, the way
 * the reference does: the highest current rank (a block-wide maximum, one
 * barrier a look), then each other candidate's decay by its weight against
 * the box taken, computed where the two overlap. The first is the best box
 * of all; another is taken only while the best candidate ranks above
 * `bound`, the highest rank any other box can reach by then (a decay
 * multiplies by a weight in [0, 1]: it lowers a positive score and raises a
 * negative one towards 0). A look also finds the second-best candidate: when
 * its score is positive and its box misses the best one, the best one's
 * decays leave it unchanged and lower every other positive score, so it is
 * the reference's next choice too and is taken in the same look (the decays
 * then apply in selection order). A round takes at most SOFT_TAKE_MAX boxes;
 * the next round goes on from there. */
template <int METHOD>
__device__ void soft_resolve(const soft_segment &s, word_t bound, int64_t limit, const soft_smem &sm,
                             int32_t *kept_pos, float *kept_score)
{
    soft_state &st = *sm.st;
    const int tid = threadIdx.x, lane = tid % 32, warp = tid / 32, warps = blockDim.x / 32;
    const bool have = tid < (int)st.candidates;
    float sc = have ? sm.cand_score[tid] : 0.0f;
    word_t rk = have ? sm.cand_rank[tid] : 0;
    const int32_t tb = have ? sm.cand_tiebreak[tid] : 0;
    const dp_pbox me = have ? sm.cand_box[tid] : dp_prepare_box(0.0f, 0.0f, 0.0f, 0.0f, s.offset);
    const word_t positive = soft_zero_max(); /* ranks above it have a positive score */
    int64_t kept = st.kept;
    int t = 0;
    for (int par = 0; (limit <= 0 || kept < limit) && t < SOFT_TAKE_MAX; par ^= 1) {
        /* ranks are unique: one thread holds each; the buffers alternate, so one barrier a look is enough */
        const word_t first = warp_rank_max(rk), second = warp_rank_max(rk != first ? rk : 0);
        const unsigned at_first = __ballot_sync(FULL_MASK, rk != 0 && rk == first);
        const unsigned at_second = __ballot_sync(FULL_MASK, rk != 0 && rk == second);
        if (lane == 0) {
            sm.red_rank[par][warp] = first, sm.red_second[par][warp] = second;
            sm.red_index[par][warp] = warp * 32 + (at_first ? __ffs((int)at_first) - 1 : 0);
            sm.red_index_second[par][warp] = warp * 32 + (at_second ? __ffs((int)at_second) - 1 : 0);
        }
        __syncthreads();
        const word_t v = lane < warps ? sm.red_rank[par][lane] : 0;
        const word_t best = warp_rank_max(v);
        if (best == 0 || (t > 0 && best <= bound)) break;
        const int from = __ffs((int)__ballot_sync(FULL_MASK, lane < warps && v == best)) - 1;
        const int i = sm.red_index[par][from];
        /* the second best: another warp's best or the best warp's second */
        const word_t w = lane == from ? (lane < warps ? sm.red_second[par][lane] : 0) : v;
        const word_t next = warp_rank_max(w);
        const int next_from = __ffs((int)__ballot_sync(FULL_MASK, lane < warps && next != 0 && w == next)) - 1;
        const int j = next == 0 ? -1
                      : next_from == from ? sm.red_index_second[par][next_from]
                                          : sm.red_index[par][next_from];
        const bool two = next > positive && next > bound && (limit <= 0 || kept + 1 < limit) &&
                         t + 1 < SOFT_TAKE_MAX && disjoint(sm.cand_box[i], sm.cand_box[j], s.offset);
        if (tid == i || (two && tid == j)) {
            const int64_t k = tid == i ? kept : kept + 1;
            const int32_t slot = sm.cand_slot[tid];
            kept_pos[s.v.lo + k] = slot;
            kept_score[s.v.lo + k] = sc;
            s.cur[slot] = NAN;
            s.rank[slot] = 0;
            sm.taken[tid == i ? t : t + 1] = me;
            rk = 0;
        }
        kept += two ? 2 : 1, t += two ? 2 : 1;
        for (int q = 0; q < (two ? 2 : 1); ++q) {
            if (rk == 0) break;
            const dp_pbox by = sm.cand_box[q == 0 ? i : j];
            if (!disjoint(by, me, s.offset)) {
                sc = DP_MUL(sc, soft_weight<METHOD>(by, me, s.iou_threshold, s.sigma, s.offset));
                rk = sc >= s.min_score ? soft_rank(sc, tb) : 0;
            }
        }
    }
    __syncthreads(); /* the taken boxes are written */
    if (tid == 0) st.taken = t, st.kept = kept;
    __syncthreads();
}

/* What one block does in a round once every box still in is up to date,
 * its ranks counted in sm.hist (at `fixed`, see soft_threshold) and st.alive,
 * hi_rank and lo_rank hold the segment's totals: the blockDim.x / 2 to
 * blockDim.x best boxes become the round's candidates, and the block takes
 * boxes among them while the best of them outranks anything another box can
 * reach. Returns the threshold (0: every box still in was a candidate). */
template <int METHOD>
__device__ word_t soft_lead(const soft_segment &s, int fixed, bool negative, int64_t limit, const soft_smem &sm,
                            int32_t *kept_pos, float *kept_score)
{
    soft_state &st = *sm.st;
    const int cap = blockDim.x;
    const word_t zero_max = soft_zero_max();
    const word_t threshold = soft_threshold(s, fixed, sm.hist, st, cap);
    /* the highest rank a box outside the candidates can reach: below the threshold, or up to 0 */
    const word_t bound = threshold == 0 ? 0 : negative && threshold <= zero_max ? zero_max : threshold - 1;
    /* the candidates: eight ranks a thread are read before any is tested, so the loads overlap */
    for (int64_t base = s.v.lo + threadIdx.x; base < s.v.hi; base += 8 * (int64_t)blockDim.x) {
        word_t r[8];
        for (int k = 0; k < 8; ++k) {
            const int64_t p = base + (int64_t)k * blockDim.x;
            r[k] = p < s.v.hi ? s.rank[p] : 0;
        }
        for (int k = 0; k < 8; ++k) {
            if (r[k] == 0 || r[k] < threshold) continue;
            const int64_t p = base + (int64_t)k * blockDim.x;
            const unsigned i = atomicAdd(&st.candidates, 1u);
            if (i >= (unsigned)cap) continue; /* the threshold admits at most cap: never taken */
            const dp_box b = s.box[p];
            sm.cand_box[i] = dp_prepare_box(b.x1, b.y1, b.x2, b.y2, s.offset);
            sm.cand_score[i] = s.cur[p];
            sm.cand_rank[i] = r[k];
            sm.cand_slot[i] = (int32_t)p;
            sm.cand_tiebreak[i] = s.tiebreak[p];
        }
    }
    __syncthreads();
    soft_resolve<METHOD>(s, bound, limit, sm, kept_pos, kept_score);
    return threshold;
}

/* Soft-NMS of one segment per block, in rounds that each take several boxes
 * (see the top of the file): every box still in applies the decays of the
 * last round's boxes and gets its rank (soft_update), then soft_lead picks
 * the round's candidates and takes boxes among them. The scores are the
 * reference's bits: each is the same product of the same weights in the
 * same order (a candidate's is recomputed by the next update from its score
 * before the round). */
template <int METHOD>
__global__ void __launch_bounds__(1024)
    nms_segment_soft(dp_segments segs, const dp_box *__restrict__ box, const float *__restrict__ score,
                     const int32_t *__restrict__ tiebreak, float *__restrict__ cur, word_t *__restrict__ rank,
                     float iou_threshold, float sigma, float min_score, float offset, int64_t limit,
                     dp_class_cap cap, int32_t *__restrict__ kept_pos, float *__restrict__ kept_score,
                     int32_t *__restrict__ kept_count, uint64_t *__restrict__ final_keys, int fbits)
{
    const soft_smem sm = soft_shared();
    soft_state &state = *sm.st;
    const int warp = threadIdx.x / 32;
    for (int64_t seg = blockIdx.x; seg < segs.total; seg += gridDim.x) {
        const soft_segment s = {find_segment(segs, seg), box, score, tiebreak, cur, rank,
                                iou_threshold, sigma, min_score, offset};
        if (threadIdx.x == 0) state.kept = 0, state.taken = 0;
        /* after the first pass, the ranks still in lie between that of min_score and the last highest one,
         * or the highest of a score of 0 while negative scores, which decays raise, are in */
        const word_t lowest = soft_lowest(min_score), zero = soft_lowest(0.0f), zero_max = soft_zero_max();
        word_t highest = lowest;
        for (bool first = true;; first = false) {
            const int fixed = soft_fixed(first, highest, lowest);
            for (int i = threadIdx.x; i < (1 << SOFT_RADIX_BITS); i += blockDim.x) sm.hist[i] = 0;
            if (threadIdx.x == 0) state.hi_rank = 0, state.lo_rank = ~0ull, state.alive = 0, state.candidates = 0;
            __syncthreads();
            soft_update<METHOD>(s, sm.taken, first ? 0 : state.taken, first, fixed, sm.queue_pair[warp],
                                sm.queue_weight[warp], sm.hist, state);
            __syncthreads();
            if (state.alive == 0) break;
            const bool negative = state.lo_rank < zero;
            highest = negative && state.hi_rank < zero_max ? zero_max : state.hi_rank;
            const word_t threshold = soft_lead<METHOD>(s, fixed, negative, limit, sm, kept_pos, kept_score);
            if (soft_done(threshold, state, limit)) break;
        }
        const int64_t kept = cap.limit > 0 ? cap_per_class(cap, s.v, state.kept, kept_pos, kept_score) : state.kept;
        finish_segment(s.v, kept, kept_pos, kept_score, tiebreak, kept_count, final_keys, fbits);
        __syncthreads(); /* the shared state is reset for the next segment */
    }
}

/* What the blocks of a cooperative soft-NMS launch share, in the workspace
 * (cleared before the launch). Round r adds its counts into [r % 2]; the
 * leading block clears the other half for round r + 1. */
struct soft_coop_shared {
    unsigned hist[2][1 << SOFT_RADIX_BITS];
    word_t hi_rank[2], lo_inv[2]; /* the lowest rank, complemented so that a cleared word is neutral */
    unsigned alive[2];
    int taken; /* boxes the last round took */
    int stop;  /* the segment is done */
    dp_pbox taken_box[SOFT_TAKE_MAX];
};

/* Single-class soft-NMS over every multiprocessor: the rounds of
 * nms_segment_soft, with the update - most of the work, the decays of
 * every box still in - split among the blocks of a cooperative launch, each
 * taking consecutive slots (nearby boxes: the slots are in spatial order).
 * Two grid-wide barriers a round: after the update, when the blocks have
 * added their histograms and totals, block 0 alone picks the candidates and
 * takes boxes (soft_lead); after it, every block reads the boxes taken. */
template <int METHOD>
__global__ void __launch_bounds__(1024)
    nms_soft_coop(const int32_t *__restrict__ count, const dp_box *__restrict__ box, const float *__restrict__ score,
                  const int32_t *__restrict__ tiebreak, float *__restrict__ cur, word_t *__restrict__ rank,
                  float iou_threshold, float sigma, float min_score, float offset, int64_t limit,
                  int32_t *__restrict__ kept_pos, float *__restrict__ kept_score, int32_t *__restrict__ kept_count,
                  soft_coop_shared *__restrict__ g)
{
    const soft_smem sm = soft_shared();
    soft_state &state = *sm.st;
    const int warp = threadIdx.x / 32;
    const int64_t n = count[0];
    const int64_t per = ((n + gridDim.x - 1) / gridDim.x + 31) / 32 * 32;
    const int64_t lo = (int64_t)blockIdx.x * per < n ? (int64_t)blockIdx.x * per : n;
    const segment_view all = {0, n, 0}, part = {lo, lo + per < n ? lo + per : n, 0};
    const soft_segment whole = {all, box, score, tiebreak, cur, rank, iou_threshold, sigma, min_score, offset};
    soft_segment mine = whole;
    mine.v = part;
    if (threadIdx.x == 0) state.kept = 0, state.taken = 0;
    const word_t lowest = soft_lowest(min_score), zero = soft_lowest(0.0f), zero_max = soft_zero_max();
    word_t highest = lowest;
    int taken = 0, half = 0;
    for (bool first = true;; first = false, half ^= 1) {
        const int fixed = soft_fixed(first, highest, lowest);
        for (int i = threadIdx.x; i < (1 << SOFT_RADIX_BITS); i += blockDim.x) sm.hist[i] = 0;
        for (int i = threadIdx.x; i < taken; i += blockDim.x) sm.taken[i] = g->taken_box[i];
        if (threadIdx.x == 0) state.hi_rank = 0, state.lo_rank = ~0ull, state.alive = 0, state.candidates = 0;
        __syncthreads();
        soft_update<METHOD>(mine, sm.taken, taken, first, fixed, sm.queue_pair[warp], sm.queue_weight[warp], sm.hist,
                            state);
        __syncthreads();
        if (fixed >= 0)
            for (int i = threadIdx.x; i < (1 << SOFT_RADIX_BITS); i += blockDim.x)
                if (sm.hist[i]) atomicAdd(&g->hist[half][i], sm.hist[i]);
        if (threadIdx.x == 0 && state.alive > 0) {
            atomicMax(&g->hi_rank[half], state.hi_rank);
            atomicMax(&g->lo_inv[half], ~state.lo_rank);
            atomicAdd(&g->alive[half], state.alive);
        }
        dp_grid_sync();
        const unsigned alive = g->alive[half];
        if (alive == 0) break;
        const word_t hi = g->hi_rank[half], lo_rank = ~g->lo_inv[half];
        const bool negative = lo_rank < zero;
        highest = negative && hi < zero_max ? zero_max : hi;
        if (blockIdx.x == 0) {
            for (int i = threadIdx.x; i < (1 << SOFT_RADIX_BITS); i += blockDim.x) {
                if (fixed >= 0) sm.hist[i] = g->hist[half][i];
                g->hist[half ^ 1][i] = 0;
            }
            if (threadIdx.x == 0) {
                state.alive = alive, state.hi_rank = hi, state.lo_rank = lo_rank;
                g->hi_rank[half ^ 1] = 0, g->lo_inv[half ^ 1] = 0, g->alive[half ^ 1] = 0;
            }
            __syncthreads();
            const word_t threshold = soft_lead<METHOD>(whole, fixed, negative, limit, sm, kept_pos, kept_score);
            for (int i = threadIdx.x; i < state.taken; i += blockDim.x) g->taken_box[i] = sm.taken[i];
            if (threadIdx.x == 0)
                g->taken = state.taken, g->stop = soft_done(threshold, state, limit);
        }
        dp_grid_sync();
        if (g->stop) break;
        taken = g->taken;
    }
    if (blockIdx.x == 0) finish_segment(all, state.kept, kept_pos, kept_score, tiebreak, kept_count, nullptr, 0);
}

/* ---- workspace: single-class ----------------------------------------------- */

static int64_t stripe_rows(int64_t n)
{
    const int64_t padded = (n + 63) / 64 * 64;
    return padded < STRIPE_MAX_ROWS ? padded : STRIPE_MAX_ROWS;
}

struct nms_ws {
    int32_t *state;
    uint32_t *keys_in, *keys_out;
    int32_t *order_in, *order;
    void *sort_temp;
    size_t sort_temp_bytes;
    dp_box *box;
    float *score;
    int32_t *kept_pos;
    float *kept_score;
    float *cur;     /* soft */
    word_t *rank;   /* soft: the sort keys' space, free once the boxes are gathered */
    soft_coop_shared *coop; /* soft: what the blocks of the cooperative kernel share */
    word_t *remv;   /* hard: removal bits of every sorted position */
    word_t *mask;   /* hard: one stripe's suppression bits within it, stripe_rows x stripe_rows / 64 */
};

static size_t nms_layout(dp_carver *c, const detpost_nms_params *p, int64_t n, nms_ws *ws)
{
    *ws = nms_ws();
    const size_t un = (size_t)n;
    ws->state = (int32_t *)dp_carve(c, 4 * sizeof(int32_t));
    ws->keys_in = (uint32_t *)dp_carve(c, 2 * un * sizeof(uint32_t));
    ws->keys_out = ws->keys_in ? ws->keys_in + un : NULL;
    ws->order_in = (int32_t *)dp_carve(c, un * sizeof(int32_t));
    ws->order = (int32_t *)dp_carve(c, un * sizeof(int32_t));
    ws->sort_temp_bytes = dp_sort_pairs_u32_temp(n);
    ws->sort_temp = dp_carve(c, ws->sort_temp_bytes);
    ws->box = (dp_box *)dp_carve(c, un * sizeof(dp_box));
    ws->score = (float *)dp_carve(c, un * sizeof(float));
    ws->kept_pos = (int32_t *)dp_carve(c, un * sizeof(int32_t));
    ws->kept_score = (float *)dp_carve(c, un * sizeof(float));
    if (dp_nms_is_soft(p->method)) {
        ws->cur = (float *)dp_carve(c, un * sizeof(float));
        ws->rank = (word_t *)ws->keys_in;
        ws->coop = (soft_coop_shared *)dp_carve(c, sizeof(soft_coop_shared));
    } else {
        const int64_t words = (n + 63) / 64;
        ws->remv = (word_t *)dp_carve(c, (size_t)words * sizeof(word_t));
        const int64_t rows = stripe_rows(n);
        ws->mask = (word_t *)dp_carve(c, (size_t)(rows * (rows / 64)) * sizeof(word_t));
    }
    return c->used;
}

size_t cuda_nms_workspace(const detpost_nms_params *p, int64_t n)
{
    if (n == 0) return 0;
    dp_carver c = {NULL, 0};
    nms_ws ws;
    return nms_layout(&c, p, n, &ws);
}

/* Original scores of the kept boxes, for the hard methods. */
__global__ void nms_kept_scores(const int32_t *__restrict__ state, const int32_t *__restrict__ kept_pos,
                                const float *__restrict__ score, int64_t n, float *__restrict__ kept_score)
{
    const int64_t kept = state[1];
    for (int64_t k = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; k < kept && k < n;
         k += (int64_t)gridDim.x * blockDim.x)
        kept_score[k] = score[kept_pos[k]];
}

template <int MODE>
static detpost_status run_stripes(detpost_ctx *ctx, const detpost_nms_params *p, int64_t n, const nms_ws &ws)
{
    cudaStream_t s = dp_stream(ctx);
    const int64_t words = (n + 63) / 64, rows = stripe_rows(n), limit = p->max_output;
    /* the resolve block stages 16-group windows where the device lends it 128 KiB of shared memory, else 8 */
    const int win_words = ctx->smem_optin >= 136 * 1024 ? RESOLVE_WINDOW_WORDS : RESOLVE_WINDOW_WORDS / 2;
    const size_t resolve_bytes = (size_t)win_words * 64 * win_words * sizeof(word_t);
    if (!ctx->nms_resolve_ready) {
        DP_CUDA_TRY(ctx,
                    cudaFuncSetAttribute(nms_stripe_resolve, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                         (int)resolve_bytes),
                    "raising the NMS resolve kernel's shared-memory limit");
        ctx->nms_resolve_ready = 1;
    }
    DP_CUDA_TRY(ctx, cudaMemsetAsync(ws.remv, 0, (size_t)words * sizeof(word_t), s), "clearing the removal bits");
    const int64_t stride = rows / 64;
    for (int64_t r0 = 0; r0 < n; r0 += rows) {
        const int64_t here = n - r0 < rows ? n - r0 : rows, tiles = (here + 63) / 64;
        const int64_t w_end = (r0 + here + 63) / 64;
        dp_launch_cfg mask_cfg(dim3((unsigned)tiles, (unsigned)tiles), dim3(MASK_THREADS), 0, s);
        DP_CUDA_TRY(ctx,
                    DP_LAUNCH(nms_stripe_mask<MODE>, mask_cfg, ws.box, ws.remv, ws.mask, stride, r0, ws.state,
                              p->iou_threshold, p->offset, limit),
                    "launching the NMS mask kernel");
        dp_launch_cfg resolve_cfg(dim3(1), dim3(RESOLVE_THREADS), resolve_bytes, s);
        DP_CUDA_TRY(ctx,
                    DP_LAUNCH(nms_stripe_resolve, resolve_cfg, ws.mask, ws.remv, stride, r0, here, win_words,
                              ws.state, ws.kept_pos, limit),
                    "launching the NMS resolve kernel");
        if (w_end < words) {
            /* enough blocks to fill the device; each loops over its tiles, most of which can be skipped */
            const int64_t most = (int64_t)ctx->multiprocessors * (2048 / REMOVE_THREADS);
            const int64_t tiles = words - w_end < most ? words - w_end : most;
            dp_launch_cfg remove_cfg(dim3((unsigned)tiles), dim3(REMOVE_THREADS), 0, s);
            DP_CUDA_TRY(ctx,
                        DP_LAUNCH(nms_stripe_remove<MODE>, remove_cfg, ws.box, ws.remv, words, r0, w_end, ws.state,
                                  ws.kept_pos, p->iou_threshold, p->offset, limit),
                        "launching the NMS removal kernel");
        }
    }
    dp_launch_cfg cfg(dim3(dp_blocks_for(n, NMS_THREADS)), dim3(NMS_THREADS), 0, s);
    DP_CUDA_TRY(ctx, DP_LAUNCH(nms_kept_scores, cfg, ws.state, ws.kept_pos, ws.score, n, ws.kept_score),
                "launching the kept-score kernel");
    return DETPOST_OK;
}

/* Shared memory of a soft-NMS block: each thread's candidate (dynamic),
 * beside the static arrays of soft_shared (with room for alignment). */
#define SOFT_CANDIDATE_BYTES (sizeof(dp_pbox) + sizeof(word_t) + sizeof(float) + 2 * sizeof(int32_t))
#define SOFT_STATIC_BYTES                                                                                           \
    (sizeof(soft_state) + SOFT_TAKE_MAX * sizeof(dp_pbox) + 32 * 32 * (sizeof(int32_t) + sizeof(float)) +          \
     (1 << SOFT_RADIX_BITS) * sizeof(unsigned) + 2 * 2 * 32 * (sizeof(word_t) + sizeof(int32_t)) + 512)

/* The most threads a soft-NMS block can have on the context's device. */
static unsigned soft_max_threads(const detpost_ctx *ctx)
{
    const int64_t room = ((int64_t)ctx->smem_optin - (int64_t)SOFT_STATIC_BYTES) / (int64_t)SOFT_CANDIDATE_BYTES;
    return room >= 1024 ? 1024u : room >= 64 ? (unsigned)(room / 32 * 32) : 64u;
}

/* The context's record of a method's cooperative soft-NMS blocks. */
template <int METHOD>
static int &soft_blocks_record(detpost_ctx *ctx)
{
    return ctx->soft_nms_blocks[METHOD == DP_NMS_LINEAR ? 0 : 1];
}

/* Readies a method's soft-NMS kernels on the context's first soft-NMS call:
 * their dynamic shared-memory limit, and the blocks of the cooperative one
 * the device holds at once (recorded; -1: none, or a device without
 * cooperative launches: the one-block kernel does the work). */
template <int METHOD>
static detpost_status soft_prepare(detpost_ctx *ctx)
{
    int &known = soft_blocks_record<METHOD>(ctx);
    if (known != 0) return DETPOST_OK;
    const unsigned threads = soft_max_threads(ctx);
    const int bytes = (int)(threads * SOFT_CANDIDATE_BYTES);
    DP_CUDA_TRY(ctx, cudaFuncSetAttribute(nms_segment_soft<METHOD>, cudaFuncAttributeMaxDynamicSharedMemorySize, bytes),
                "raising the soft-NMS kernel's shared-memory limit");
    int blocks = 0, cooperative = 0;
    if (cudaDeviceGetAttribute(&cooperative, cudaDevAttrCooperativeLaunch, ctx->device) == cudaSuccess &&
        cooperative &&
        cudaFuncSetAttribute(nms_soft_coop<METHOD>, cudaFuncAttributeMaxDynamicSharedMemorySize, bytes) ==
            cudaSuccess)
        blocks = dp_coop_max_blocks(ctx, nms_soft_coop<METHOD>, threads, (size_t)bytes);
    (void)cudaGetLastError(); /* a device that refuses leaves no error for the next launch */
    known = blocks > 0 ? blocks : -1;
    return DETPOST_OK;
}

/* One block per segment; threads (as many as the segments' expected size
 * calls for) are also the most candidates a round decides among. */
template <int METHOD>
static detpost_status launch_soft(detpost_ctx *ctx, const dp_segments &segs, int64_t expected,
                                  const detpost_nms_params *p, int64_t limit, const dp_class_cap &cap,
                                  const dp_box *box, const float *score,
                                  const int32_t *tiebreak, float *cur, word_t *rank, int32_t *kept_pos,
                                  float *kept_score, int32_t *kept_count, uint64_t *final_keys, int fbits)
{
    const detpost_status st = soft_prepare<METHOD>(ctx);
    if (st != DETPOST_OK) return st;
    unsigned threads = threads_for(expected);
    if (threads > soft_max_threads(ctx)) threads = soft_max_threads(ctx);
    const int64_t blocks = segs.total < 65535 ? segs.total : 65535;
    dp_launch_cfg cfg(dim3((unsigned)blocks), dim3(threads), threads * SOFT_CANDIDATE_BYTES, dp_stream(ctx));
    DP_CUDA_TRY(ctx,
                DP_LAUNCH(nms_segment_soft<METHOD>, cfg, segs, box, score, tiebreak, cur, rank, p->iou_threshold,
                          p->sigma, p->min_score, p->offset, limit, cap, kept_pos, kept_score, kept_count,
                          final_keys, fbits),
                "launching the soft-NMS kernel");
    return DETPOST_OK;
}

/* Single-class soft-NMS: the cooperative kernel with one block per
 * SOFT_COOP_SLICE boxes, as many as the device holds at once (counted for
 * the largest blocks a launch uses). */
template <int METHOD>
static detpost_status run_soft(detpost_ctx *ctx, const detpost_nms_params *p, int64_t n, const nms_ws &ws)
{
    cudaStream_t s = dp_stream(ctx);
    const detpost_status st = soft_prepare<METHOD>(ctx);
    if (st != DETPOST_OK) return st;
    int &known = soft_blocks_record<METHOD>(ctx);
    if (known > 0) {
        const int64_t want = (n + SOFT_COOP_SLICE - 1) / SOFT_COOP_SLICE;
        const int64_t blocks = want < known ? want : known;
        /* fewer threads for fewer boxes: block 0's scans over every slot, and its rounds' candidates, need many */
        unsigned threads = threads_for(n);
        if (threads > soft_max_threads(ctx)) threads = soft_max_threads(ctx);
        DP_CUDA_TRY(ctx, cudaMemsetAsync(ws.coop, 0, sizeof(soft_coop_shared), s), "clearing the soft-NMS state");
        dp_launch_cfg cfg(dim3((unsigned)blocks), dim3(threads), threads * SOFT_CANDIDATE_BYTES, s);
        const cudaError_t err =
            DP_LAUNCH_COOP(nms_soft_coop<METHOD>, cfg, ws.state, ws.box, ws.score, ws.order, ws.cur, ws.rank,
                           p->iou_threshold, p->sigma, p->min_score, p->offset, p->max_output, ws.kept_pos,
                           ws.kept_score, ws.state + 1, ws.coop);
        if (err == cudaSuccess) return DETPOST_OK;
        /* fewer multiprocessors than the device has (a shared device, MPS): the one-block kernel from now on */
        if (err != cudaErrorCooperativeLaunchTooLarge) return dp_cuda_status(ctx, err, "launching the soft-NMS kernel");
        (void)cudaGetLastError();
        known = -1;
    }
    const dp_segments segs = {ws.state, nullptr, n, 1, 1};
    const dp_class_cap no_cap = {nullptr, nullptr, 0, 0};
    return launch_soft<METHOD>(ctx, segs, n, p, p->max_output, no_cap, ws.box, ws.score, ws.order, ws.cur, ws.rank,
                               ws.kept_pos, ws.kept_score, ws.state + 1, nullptr, 0);
}

detpost_status cuda_nms(detpost_ctx *ctx, const detpost_nms_params *p, const float *boxes, const float *scores,
                        int64_t n, int64_t *keep, float *keep_scores, int64_t *num_keep)
{
    DP_CUDA_TRY(ctx, cudaSetDevice(ctx->device), "selecting the CUDA device");
    cudaStream_t s = dp_stream(ctx);
    if (n == 0) {
        DP_CUDA_TRY(ctx, cudaMemsetAsync(num_keep, 0, sizeof(int64_t), s), "writing num_keep");
        return DETPOST_OK;
    }
    void *base = NULL;
    detpost_status st = dp_workspace(ctx, cuda_nms_workspace(p, n), &base);
    if (st != DETPOST_OK) return st;
    dp_carver c = {(char *)base, 0};
    nms_ws ws;
    nms_layout(&c, p, n, &ws);
    const int soft = dp_nms_is_soft(p->method);
    const dim3 grid(dp_blocks_for(n, NMS_THREADS)), block(NMS_THREADS);

    DP_CUDA_TRY(ctx, cudaMemsetAsync(ws.state, 0, 4 * sizeof(int32_t), s), "clearing the NMS counters");
    dp_launch_cfg keys_cfg(grid, block, 0, s);
    keys_cfg.out(ws.keys_in, (size_t)n * sizeof(uint32_t)).out(ws.order_in, (size_t)n * sizeof(int32_t));
    DP_CUDA_TRY(ctx,
                DP_LAUNCH(nms_keys, keys_cfg, boxes, scores, n, p->score_threshold, soft, p->min_score, ws.keys_in,
                          ws.order_in, ws.state),
                "launching the NMS key kernel");
    st = dp_sort_pairs_u32(ctx, ws.sort_temp, ws.sort_temp_bytes, ws.keys_in, ws.keys_out, ws.order_in, ws.order, n);
    if (st != DETPOST_OK) return st;
    dp_launch_cfg gather_cfg(grid, block, 0, s);
    gather_cfg.out(ws.box, (size_t)n * sizeof(dp_box)).out(ws.score, (size_t)n * sizeof(float));
    DP_CUDA_TRY(ctx, DP_LAUNCH(nms_gather, gather_cfg, boxes, scores, ws.order, n, ws.box, ws.score),
                "launching the NMS gather kernel");

    if (soft) {
        st = p->method == DETPOST_NMS_LINEAR ? run_soft<DP_NMS_LINEAR>(ctx, p, n, ws)
                                             : run_soft<DP_NMS_GAUSSIAN>(ctx, p, n, ws);
        if (st != DETPOST_OK) return st;
    } else {
        st = p->method == DETPOST_NMS_DIOU ? run_stripes<DP_MODE_DIOU>(ctx, p, n, ws)
                                           : run_stripes<DP_MODE_IOU>(ctx, p, n, ws);
        if (st != DETPOST_OK) return st;
    }
    dp_launch_cfg out_cfg(grid, block, 0, s);
    out_cfg.out(keep, (size_t)n * sizeof(int64_t)).out(num_keep, sizeof(int64_t));
    if (keep_scores) out_cfg.out(keep_scores, (size_t)n * sizeof(float));
    DP_CUDA_TRY(ctx,
                DP_LAUNCH(nms_write_keep, out_cfg, ws.state, ws.kept_pos, ws.kept_score, ws.order, n, keep,
                          keep_scores, num_keep),
                "launching the NMS output kernel");
    return DETPOST_OK;
}

/* ---- batched ------------------------------------------------------------- */

struct batched_shape {
    int64_t batch, boxes, classes, pairs, cap, background, top_k;
    int agnostic, per_class_boxes, coding;
    int nbits, cbits, fbits; /* bits of a box index, a class, a (box, class) pair */
    int group_bits;          /* bits of the key that groups candidates by class in score order */
};

static batched_shape shape_of(const detpost_batched_nms_params *p, int64_t batch, int64_t num_boxes,
                              int64_t num_classes)
{
    batched_shape sh;
    sh.batch = batch, sh.boxes = num_boxes, sh.classes = num_classes, sh.pairs = num_boxes * num_classes;
    sh.cap = dp_batched_nms_capacity(p, num_boxes, num_classes);
    sh.background = p->background_class;
    sh.top_k = p->pre_nms_top_k;
    sh.agnostic = p->class_agnostic, sh.per_class_boxes = p->boxes_per_class, sh.coding = (int)p->box_coding;
    sh.nbits = bits_for(num_boxes), sh.cbits = bits_for(num_classes), sh.fbits = bits_for(sh.pairs);
    sh.group_bits = sh.agnostic ? 32 + sh.fbits : sh.cbits + 32 + sh.nbits;
    return sh;
}

/* Visits pair indices f = start, start + stride, ... of one image with
 * c = f % classes kept up to date without a division per pair. */
struct pair_walk {
    int64_t f, c, stride, step, classes;
    __device__ pair_walk(int64_t start, int64_t stride_, int64_t classes_)
        : f(start), c(start % classes_), stride(stride_), step(stride_ % classes_), classes(classes_)
    {
    }
    __device__ void next()
    {
        f += stride;
        c += step;
        if (c >= classes) c -= classes;
    }
};

__device__ __forceinline__ int batched_candidate(const float *scores, const pair_walk &w, const batched_shape &sh,
                                                 float score_threshold, int soft, float min_score)
{
    return w.c != sh.background && dp_nms_candidate(scores[w.f], score_threshold, soft, min_score);
}

/* One block per image: the best top_k candidates by (score, box, class),
 * found by radix select on the 64-bit rank (score key << 32 | pair index),
 * SELECT_BITS bits a pass, then compacted with their grouping sort keys. */
__global__ void __launch_bounds__(SELECT_THREADS)
    batched_select(const float *__restrict__ scores, batched_shape sh, float score_threshold, int soft,
                   float min_score, uint64_t *__restrict__ cand_keys, int32_t *__restrict__ cand_count,
                   int32_t *__restrict__ seg_begin, int32_t *__restrict__ seg_end, int32_t *__restrict__ kept_count)
{
    DP_SHARED(unsigned, hist, [1 << SELECT_BITS]);
    DP_SHARED(unsigned long long, total, [1]);
    DP_SHARED(unsigned long long, filled, [1]);
    DP_SHARED(int64_t, pick, [3]); /* bin, candidates before it, candidates in it */
    const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
    for (int64_t img = blockIdx.x; img < sh.batch; img += gridDim.x) {
        const float *s = scores + img * sh.pairs;
        if (threadIdx.x == 0) total[0] = 0, filled[0] = 0;
        __syncthreads();
        int64_t mine = 0;
        for (pair_walk w(threadIdx.x, blockDim.x, sh.classes); w.f < sh.pairs; w.next())
            mine += batched_candidate(s, w, sh, score_threshold, soft, min_score);
        if (mine) atomicAdd(&total[0], (unsigned long long)mine);
        __syncthreads();
        const int64_t count = (int64_t)total[0];
        const int64_t want = sh.top_k > 0 && count > sh.top_k ? sh.top_k : count;
        /* taken: candidates whose rank, cut to its top `bits` bits, is <= prefix */
        uint64_t prefix = NO_KEY;
        int bits = 64;
        if (want < count) {
            prefix = 0, bits = 0;
            int64_t need = want;
            while (bits < 64) {
                const int width = 64 - bits < SELECT_BITS ? 64 - bits : SELECT_BITS, shift = 64 - bits - width;
                const int bins = 1 << width;
                for (int i = threadIdx.x; i < bins; i += blockDim.x) hist[i] = 0;
                __syncthreads();
                for (pair_walk w(threadIdx.x, blockDim.x, sh.classes); w.f < sh.pairs; w.next()) {
                    if (!batched_candidate(s, w, sh, score_threshold, soft, min_score)) continue;
                    const uint64_t r = ((uint64_t)dp_score_key(s[w.f]) << 32) | (uint64_t)w.f;
                    if (bits == 0 || (r >> (64 - bits)) == prefix) atomicAdd(&hist[(r >> shift) & (bins - 1)], 1u);
                }
                __syncthreads();
                if (warp == 0) {
                    const int per_lane = bins / 32;
                    int64_t sum = 0;
                    for (int k = 0; k < per_lane; ++k) sum += hist[lane * per_lane + k];
                    int64_t upto = sum;
                    for (int d = 1; d < 32; d *= 2) {
                        const int64_t o = __shfl_up_sync(FULL_MASK, upto, d);
                        if (lane >= d) upto += o;
                    }
                    int64_t before = upto - sum;
                    if (before < need && need <= upto) {
                        for (int k = 0; k < per_lane; ++k) {
                            const int64_t here = hist[lane * per_lane + k];
                            if (before + here >= need) {
                                pick[0] = lane * per_lane + k, pick[1] = before, pick[2] = here;
                                break;
                            }
                            before += here;
                        }
                    }
                }
                __syncthreads();
                need -= pick[1];
                prefix = (prefix << width) | (uint64_t)pick[0];
                bits += width;
                const int done = pick[2] == need;
                __syncthreads(); /* pick is rewritten by the next pass */
                if (done) break;
            }
        }
        uint64_t *out = cand_keys + img * sh.cap;
        for (pair_walk w(threadIdx.x, blockDim.x, sh.classes); w.f < sh.pairs; w.next()) {
            if (!batched_candidate(s, w, sh, score_threshold, soft, min_score)) continue;
            const uint32_t key = dp_score_key(s[w.f]);
            const uint64_t r = ((uint64_t)key << 32) | (uint64_t)w.f;
            if ((r >> (64 - bits)) > prefix) continue;
            const uint64_t n = (uint64_t)((w.f - w.c) / sh.classes), c = (uint64_t)w.c;
            const uint64_t group = sh.agnostic ? ((uint64_t)key << sh.fbits) | (uint64_t)w.f
                                               : (c << (32 + sh.nbits)) | ((uint64_t)key << sh.nbits) | n;
            out[atomicAdd(&filled[0], 1ull)] = group;
        }
        if (threadIdx.x == 0) {
            cand_count[img] = (int32_t)want;
            seg_begin[img] = (int32_t)(img * sh.cap);
            seg_end[img] = (int32_t)(img * sh.cap + want);
            kept_count[img] = 0;
        }
        __syncthreads(); /* shared counters are reset for the next image */
    }
}

__device__ __forceinline__ dp_box decoded_box(const float *boxes, const batched_shape &sh, int64_t img, int64_t n,
                                              int64_t c)
{
    const int64_t row = sh.per_class_boxes ? (img * sh.boxes + n) * sh.classes + c : img * sh.boxes + n;
    float corners[4];
    dp_decode_box(sh.coding, boxes + row * 4, corners);
    return dp_box{corners[0], corners[1], corners[2], corners[3]};
}

/* Candidate slots in grouped score order: box (corners), score, pair index, class. */
__global__ void batched_gather(const uint64_t *__restrict__ sorted, const int32_t *__restrict__ cand_count,
                               const float *__restrict__ boxes, const float *__restrict__ scores, batched_shape sh,
                               dp_box *__restrict__ box, float *__restrict__ score, int32_t *__restrict__ tiebreak,
                               int32_t *__restrict__ cls)
{
    const int64_t slots = sh.batch * sh.cap;
    for (int64_t q = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; q < slots; q += (int64_t)gridDim.x * blockDim.x) {
        const int64_t img = q / sh.cap;
        if (q - img * sh.cap >= cand_count[img]) continue;
        const uint64_t key = sorted[q];
        int64_t n, c;
        if (sh.agnostic) {
            const int64_t f = (int64_t)(key & ((1ull << sh.fbits) - 1));
            n = f / sh.classes, c = f % sh.classes;
        } else {
            n = (int64_t)(key & ((1ull << sh.nbits) - 1));
            c = (int64_t)(key >> (32 + sh.nbits));
        }
        box[q] = decoded_box(boxes, sh, img, n, c);
        score[q] = scores[img * sh.pairs + n * sh.classes + c];
        tiebreak[q] = (int32_t)(n * sh.classes + c);
        cls[q] = (int32_t)c;
    }
}

/* The best K kept detections of each image, then padding. */
__global__ void batched_output(const uint64_t *__restrict__ sorted, const int32_t *__restrict__ kept_count,
                               const float *__restrict__ boxes, batched_shape sh, int64_t K,
                               int32_t *__restrict__ num_dets, float *__restrict__ det_boxes,
                               float *__restrict__ det_scores, int32_t *__restrict__ det_classes,
                               int32_t *__restrict__ det_indices)
{
    for (int64_t img = blockIdx.x; img < sh.batch; img += gridDim.x) {
        const int64_t kept = sh.cap > 0 ? kept_count[img] : 0, dets = kept < K ? kept : K;
        if (threadIdx.x == 0) num_dets[img] = (int32_t)dets;
        for (int64_t k = threadIdx.x; k < K; k += blockDim.x) {
            const int64_t o = img * K + k;
            if (k >= dets) {
                det_boxes[o * 4 + 0] = det_boxes[o * 4 + 1] = det_boxes[o * 4 + 2] = det_boxes[o * 4 + 3] = 0.0f;
                det_scores[o] = 0.0f;
                det_classes[o] = -1;
                if (det_indices) det_indices[o] = -1;
                continue;
            }
            const uint64_t key = sorted[img * sh.cap + k];
            const int64_t f = (int64_t)(key & ((1ull << sh.fbits) - 1)), n = f / sh.classes, c = f % sh.classes;
            const dp_box b = decoded_box(boxes, sh, img, n, c);
            det_boxes[o * 4 + 0] = b.x1, det_boxes[o * 4 + 1] = b.y1;
            det_boxes[o * 4 + 2] = b.x2, det_boxes[o * 4 + 3] = b.y2;
            det_scores[o] = dp_key_score((uint32_t)(key >> sh.fbits));
            det_classes[o] = (int32_t)c;
            if (det_indices) det_indices[o] = (int32_t)n;
        }
    }
}

struct batched_ws {
    uint64_t *keys, *sorted;
    int32_t *cand_count, *kept_count, *seg_begin, *seg_end;
    dp_box *box;
    float *score;
    int32_t *tiebreak, *cls, *kept_pos;
    float *kept_score, *cur;
    int32_t *class_counts; /* [batch, classes]: class-agnostic groups with max_per_class */
    void *sort_temp;
    size_t sort_temp_bytes;
};

static size_t batched_layout(dp_carver *c, const detpost_batched_nms_params *p, const batched_shape &sh,
                             batched_ws *ws)
{
    *ws = batched_ws();
    const size_t slots = (size_t)(sh.batch * sh.cap), images = (size_t)sh.batch;
    ws->keys = (uint64_t *)dp_carve(c, slots * sizeof(uint64_t));
    ws->sorted = (uint64_t *)dp_carve(c, slots * sizeof(uint64_t));
    ws->cand_count = (int32_t *)dp_carve(c, images * sizeof(int32_t));
    ws->kept_count = (int32_t *)dp_carve(c, images * sizeof(int32_t));
    ws->seg_begin = (int32_t *)dp_carve(c, images * sizeof(int32_t));
    ws->seg_end = (int32_t *)dp_carve(c, images * sizeof(int32_t));
    ws->box = (dp_box *)dp_carve(c, slots * sizeof(dp_box));
    ws->score = (float *)dp_carve(c, slots * sizeof(float));
    ws->tiebreak = (int32_t *)dp_carve(c, slots * sizeof(int32_t));
    ws->cls = (int32_t *)dp_carve(c, slots * sizeof(int32_t));
    ws->kept_pos = (int32_t *)dp_carve(c, slots * sizeof(int32_t));
    ws->kept_score = (float *)dp_carve(c, slots * sizeof(float));
    if (dp_nms_is_soft(p->nms.method)) ws->cur = (float *)dp_carve(c, slots * sizeof(float));
    if (sh.agnostic && p->max_per_class > 0)
        ws->class_counts = (int32_t *)dp_carve(c, images * (size_t)sh.classes * sizeof(int32_t));
    ws->sort_temp_bytes = dp_segmented_sort_u64_temp((int64_t)slots, sh.batch);
    ws->sort_temp = dp_carve(c, ws->sort_temp_bytes);
    return c->used;
}

size_t cuda_batched_nms_workspace(const detpost_batched_nms_params *p, int64_t batch, int64_t num_boxes,
                                  int64_t num_classes)
{
    const batched_shape sh = shape_of(p, batch, num_boxes, num_classes);
    if (sh.batch * sh.cap == 0) return 0;
    dp_carver c = {NULL, 0};
    batched_ws ws;
    return batched_layout(&c, p, sh, &ws);
}

template <int MODE>
static cudaError_t launch_hard(const dp_segments &segs, const detpost_nms_params *p, int64_t limit,
                               const dp_class_cap &cap, const batched_ws &ws, int fbits, cudaStream_t s)
{
    const int64_t blocks = segs.total < 65535 ? segs.total : 65535;
    dp_launch_cfg cfg(dim3((unsigned)blocks), dim3(HARD_WINDOW), 0, s);
    return DP_LAUNCH(nms_segment_hard<MODE>, cfg, segs, ws.box, ws.score, ws.tiebreak, p->iou_threshold, p->offset,
                     limit, cap, ws.kept_pos, ws.kept_score, ws.kept_count, ws.keys, fbits);
}

detpost_status cuda_batched_nms(detpost_ctx *ctx, const detpost_batched_nms_params *p, const float *boxes,
                                const float *scores, int64_t batch, int64_t num_boxes, int64_t num_classes,
                                int32_t *num_dets, float *det_boxes, float *det_scores, int32_t *det_classes,
                                int32_t *det_indices)
{
    DP_CUDA_TRY(ctx, cudaSetDevice(ctx->device), "selecting the CUDA device");
    cudaStream_t s = dp_stream(ctx);
    const batched_shape sh = shape_of(p, batch, num_boxes, num_classes);
    const int64_t K = p->max_per_image, slots = sh.batch * sh.cap;
    const unsigned image_blocks = (unsigned)(batch < 65535 ? batch : 65535);
    void *base = NULL;
    detpost_status st = dp_workspace(ctx, cuda_batched_nms_workspace(p, batch, num_boxes, num_classes), &base);
    if (st != DETPOST_OK) return st;
    dp_carver c = {(char *)base, 0};
    batched_ws ws;
    batched_layout(&c, p, sh, &ws);

    if (slots > 0) {
        dp_launch_cfg select_cfg(dim3(image_blocks), dim3(SELECT_THREADS), 0, s);
        select_cfg.out(ws.cand_count, (size_t)batch * 4).out(ws.kept_count, (size_t)batch * 4);
        select_cfg.out(ws.seg_begin, (size_t)batch * 4).out(ws.seg_end, (size_t)batch * 4);
        DP_CUDA_TRY(ctx,
                    DP_LAUNCH(batched_select, select_cfg, scores, sh, p->nms.score_threshold,
                              dp_nms_is_soft(p->nms.method), p->nms.min_score, ws.keys, ws.cand_count, ws.seg_begin,
                              ws.seg_end, ws.kept_count),
                    "launching the candidate selection kernel");
        st = dp_segmented_sort_u64(ctx, ws.sort_temp, ws.sort_temp_bytes, ws.keys, ws.sorted, slots, batch,
                                   ws.seg_begin, ws.seg_end, sh.group_bits);
        if (st != DETPOST_OK) return st;
        dp_launch_cfg gather_cfg(dim3(dp_blocks_for(slots, NMS_THREADS)), dim3(NMS_THREADS), 0, s);
        DP_CUDA_TRY(ctx,
                    DP_LAUNCH(batched_gather, gather_cfg, ws.sorted, ws.cand_count, boxes, scores, sh, ws.box,
                              ws.score, ws.tiebreak, ws.cls),
                    "launching the candidate gather kernel");

        const dp_segments segs = {ws.cand_count, sh.agnostic ? nullptr : ws.cls, sh.cap,
                                  sh.agnostic ? 1 : sh.classes, sh.batch * (sh.agnostic ? 1 : sh.classes)};
        /* a class's group stops at max_per_class; a class-agnostic group is capped per class after its NMS */
        const int64_t limit = sh.agnostic ? 0 : p->max_per_class;
        const dp_class_cap cap = {ws.cls, ws.class_counts, sh.agnostic ? p->max_per_class : 0, sh.classes};
        cudaError_t err = cudaSuccess;
        switch (p->nms.method) {
        case DETPOST_NMS_HARD: err = launch_hard<DP_MODE_IOU>(segs, &p->nms, limit, cap, ws, sh.fbits, s); break;
        case DETPOST_NMS_DIOU: err = launch_hard<DP_MODE_DIOU>(segs, &p->nms, limit, cap, ws, sh.fbits, s); break;
        case DETPOST_NMS_LINEAR:
        case DETPOST_NMS_GAUSSIAN: {
            const int64_t expected = sh.agnostic ? sh.cap : 4 * sh.cap / (sh.classes > 0 ? sh.classes : 1);
            word_t *rank = (word_t *)ws.sorted; /* free until the final sort writes it */
            st = p->nms.method == DETPOST_NMS_LINEAR
                     ? launch_soft<DP_NMS_LINEAR>(ctx, segs, expected, &p->nms, limit, cap, ws.box, ws.score,
                                                  ws.tiebreak, ws.cur, rank, ws.kept_pos, ws.kept_score,
                                                  ws.kept_count, ws.keys, sh.fbits)
                     : launch_soft<DP_NMS_GAUSSIAN>(ctx, segs, expected, &p->nms, limit, cap, ws.box, ws.score,
                                                    ws.tiebreak, ws.cur, rank, ws.kept_pos, ws.kept_score,
                                                    ws.kept_count, ws.keys, sh.fbits);
            if (st != DETPOST_OK) return st;
            break;
        }
        }
        DP_CUDA_TRY(ctx, err, "launching the per-class NMS kernel");
        st = dp_segmented_sort_u64(ctx, ws.sort_temp, ws.sort_temp_bytes, ws.keys, ws.sorted, slots, batch,
                                   ws.seg_begin, ws.seg_end, 32 + sh.fbits);
        if (st != DETPOST_OK) return st;
    }
    dp_launch_cfg out_cfg(dim3(image_blocks), dim3(128), 0, s);
    out_cfg.out(num_dets, (size_t)batch * 4).out(det_boxes, (size_t)(batch * K * 4) * sizeof(float));
    out_cfg.out(det_scores, (size_t)(batch * K) * sizeof(float)).out(det_classes, (size_t)(batch * K) * 4);
    if (det_indices) out_cfg.out(det_indices, (size_t)(batch * K) * 4);
    DP_CUDA_TRY(ctx,
                DP_LAUNCH(batched_output, out_cfg, ws.sorted, ws.kept_count, boxes, sh, K, num_dets, det_boxes,
                          det_scores, det_classes, det_indices),
                "launching the detection output kernel");
    return DETPOST_OK;
}
