/*
 * Helpers shared by the Criterion suites: contexts for each backend, moving
 * tensors in and out of context memory, seeded detector-like inputs, golden
 * vectors from tests/data, tolerant float comparison, and the list of
 * emulator schedules a CPU-vs-CUDA test repeats itself under.
 */
#ifndef DETPOST_TEST_COMMON_H
#define DETPOST_TEST_COMMON_H

#include <stddef.h>
#include <stdint.h>

#include <criterion/criterion.h>

#include "../host/tool/json_io.h"
#include "detpost.h"

#if defined(DETPOST_SIM)
#include "../cuda/simt/simt_control.h"
#endif

/* Flavors whose binary has a CUDA backend (emulated or real). */
#if DETPOST_WITH_CUDA
#define TEST_HAS_CUDA 1
#else
#define TEST_HAS_CUDA 0
#endif

/* A context that must exist; a CUDA one skips the test (with the reason)
 * when the build has a CUDA backend but no device answers. */
detpost_ctx *t_ctx(detpost_backend backend);

/* Copies n bytes to new context memory / back into a new malloc'd buffer. */
void *t_up(detpost_ctx *ctx, const void *host, size_t bytes);
void *t_down(detpost_ctx *ctx, const void *dev, size_t bytes);
void *t_alloc(detpost_ctx *ctx, size_t bytes);
void t_free(detpost_ctx *ctx, void *dev);

/* The next wait of a CUDA context answers the fault its kernels recorded
 * (INVALID_ARGUMENT, message containing `needle`), and only once. */
void t_expect_fault(detpost_ctx *ctx, const char *needle);

/* Schedules for CUDA-backend runs: forward, reverse and random:SEED under
 * the emulator, the hardware's own order (one NULL entry) on a GPU. */
int t_schedule_count(void);
const char *t_schedule(int i);
void t_set_schedule(const char *s);

/* splitmix64 stream */
typedef struct t_rng {
    uint64_t s;
} t_rng;
uint64_t t_next(t_rng *r);
float t_uniform(t_rng *r, float lo, float hi);

/* n boxes that look like detector output: clusters of jittered boxes
 * around a few objects in a w x h image, with a few degenerate ones when
 * `degenerate` is set (empty, inverted). */
void t_detector_boxes(t_rng *r, float *boxes, int64_t n, float w, float h, int degenerate);

#if TEST_HAS_CUDA
#include "graph.h"

/* A region of context memory that a sequence of calls writes. */
typedef struct t_region {
    void *ptr;
    size_t bytes;
} t_region;
/* Gives a CUDA context a stream of its own (captures cannot begin on the
 * legacy stream); destroy it with t_stream_destroy after the context. */
void *t_own_stream(detpost_ctx *ctx);
/* Runs `ops` (which asserts each call's status) once, then captures it into
 * a CUDA graph with every output region poisoned: the capture must write
 * nothing. Then twice: `new_inputs` (when not NULL) writes other inputs in
 * the same buffers (round 0, 1), `ops` runs directly, and one launch of the
 * graph must leave the regions as that direct run did, bit for bit (both
 * start from poisoned regions). The ops must be deterministic and read
 * nothing they do not write before, other than their inputs. */
void t_check_graph_replay(detpost_ctx *ctx, void *stream, void (*ops)(detpost_ctx *, void *), void *state,
                          const t_region *outs, int num_outs, void (*new_inputs)(detpost_ctx *, void *, int));
#endif

/* |a - b| <= atol + rtol * |b| for every element, NaN only against NaN;
 * reports the first mismatch with its index. */
void t_assert_close(const float *got, const float *want, int64_t n, float atol, float rtol, const char *what);

/* Parsed tests/data/NAME (directory overridable with DETPOST_TEST_DATA). */
cJSON *t_golden(const char *name);
/* A JSON array as floats (rows of `cols`, or flat for cols 0). */
float *t_json_floats(const cJSON *node, const char *what, int cols, int64_t *rows);
/* A field of a golden case as floats (rows of `cols`, or flat for cols 0). */
float *t_golden_floats(const cJSON *c, const char *field, int cols, int64_t *rows);
double t_golden_number(const cJSON *c, const char *field, double fallback);
const char *t_golden_string(const cJSON *c, const char *field, const char *fallback);

#endif
