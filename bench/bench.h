/*
 * Benchmark harness: each op file registers cases (an op name, a shape, and
 * setup / run / teardown on a context); bench.c times every case on every
 * backend the build has, after warm-up, and reports the median.
 */
#ifndef DETPOST_BENCH_H
#define DETPOST_BENCH_H

#include <stdint.h>

#include "detpost.h"

typedef struct bench_case {
    const char *op;    /* "box_overlaps" */
    const char *shape; /* "1000x1000" */
    /* Prepares inputs in the context's memory; returns NULL on failure. */
    void *(*setup)(detpost_ctx *ctx, const struct bench_case *c);
    /* The timed call: enqueues the op once. */
    detpost_status (*run)(detpost_ctx *ctx, void *state);
    void (*teardown)(detpost_ctx *ctx, void *state);
    int64_t arg[4];    /* shape parameters for setup */
    int cpu_max_reps;  /* repetitions on the CPU backend (0: skip it there, too slow) */
} bench_case;

void bench_register(const bench_case *cases, int count);
#define BENCH_REGISTER(cases)                                                                \
    __attribute__((constructor)) static void bench_register_##cases(void)                   \
    {                                                                                         \
        bench_register(cases, (int)(sizeof cases / sizeof cases[0]));                         \
    }

/* Helpers for setup functions. */
void *bench_upload(detpost_ctx *ctx, const void *host, size_t bytes);
void *bench_alloc(detpost_ctx *ctx, size_t bytes);
/* Detector-like boxes (clusters of jittered boxes) in a w x h image. */
void bench_boxes(uint64_t seed, float *boxes, int64_t n, float w, float h);
float bench_uniform(uint64_t *state);

#endif
