/*
 * detpost_bench: times every registered case on each backend of this build.
 * GPU: CUDA events on a private stream around each call, after warm-up;
 * CPU: the monotonic clock. Prints a table of medians and writes JSON.
 * The sim flavor is refused: emulated kernel timings mean nothing.
 *
 *   detpost_bench [--backend cpu|cuda|all] [--filter TEXT] [--reps N] [--out FILE] [--graph]
 *
 * --graph captures each CUDA case's call into a CUDA graph once (after the
 * warm-up) and times launches of the graph instead (dev "graph"): the cost
 * without the host's launch overhead, as in a service that replays graphs.
 *
 * --filter keeps the cases whose "op shape" contains TEXT; a TEXT ending in
 * '$' must end the name ("nms_hard 10000$" leaves out "nms_hard 100000").
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "bench.h"

#if defined(DETPOST_CUDA_BUILD)
#include <cuda_runtime_api.h>
#endif

#define MAX_CASES 256
static const bench_case *registry[MAX_CASES];
static int registered;

void bench_register(const bench_case *cases, int count)
{
    for (int i = 0; i < count && registered < MAX_CASES; ++i) registry[registered++] = &cases[i];
}

void *bench_alloc(detpost_ctx *ctx, size_t bytes)
{
    void *p = NULL;
    if (detpost_alloc(ctx, &p, bytes) != DETPOST_OK) return NULL;
    return p;
}

void *bench_upload(detpost_ctx *ctx, const void *host, size_t bytes)
{
    void *p = bench_alloc(ctx, bytes);
    if (p && detpost_to_ctx(ctx, p, host, bytes) != DETPOST_OK) {
        detpost_free(ctx, p);
        return NULL;
    }
    return p;
}

float bench_uniform(uint64_t *s)
{
    uint64_t z = (*s += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    z ^= z >> 31;
    return (float)((double)(z >> 11) / 9007199254740992.0);
}

void bench_boxes(uint64_t seed, float *boxes, int64_t n, float w, float h)
{
    uint64_t s = seed;
    const int64_t objects = 1 + n / 50;
    for (int64_t i = 0; i < n; ++i) {
        uint64_t os = seed * 7919 + (uint64_t)(i % objects);
        const float bw = w * (0.05f + 0.3f * bench_uniform(&os)), bh = h * (0.05f + 0.3f * bench_uniform(&os));
        const float x = (w - bw) * bench_uniform(&os), y = (h - bh) * bench_uniform(&os);
        const float j = 0.2f;
        boxes[i * 4 + 0] = x + bw * j * (bench_uniform(&s) - 0.5f);
        boxes[i * 4 + 1] = y + bh * j * (bench_uniform(&s) - 0.5f);
        boxes[i * 4 + 2] = x + bw + bw * j * (bench_uniform(&s) - 0.5f);
        boxes[i * 4 + 3] = y + bh + bh * j * (bench_uniform(&s) - 0.5f);
    }
}

/* TEXT anywhere in the name, or at its end when TEXT ends in '$'. */
static int name_matches(const char *name, const char *filter)
{
    const size_t n = strlen(name), f = strlen(filter);
    if (f == 0 || filter[f - 1] != '$') return strstr(name, filter) != NULL;
    return f - 1 <= n && strncmp(name + n - (f - 1), filter, f - 1) == 0;
}

static int cmp_double(const void *a, const void *b)
{
    const double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static double now_ms(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec * 1e3 + (double)t.tv_nsec / 1e6;
}

#if !defined(DETPOST_SIM)
#if defined(DETPOST_CUDA_BUILD)
/* The case's one call captured into a graph on the context's stream. */
static cudaGraphExec_t capture_case(detpost_ctx *ctx, const bench_case *c, void *state)
{
    cudaStream_t stream = (cudaStream_t)detpost_get_stream(ctx);
    cudaGraph_t graph = NULL;
    cudaGraphExec_t exec = NULL;
    if (cudaStreamBeginCapture(stream, cudaStreamCaptureModeGlobal) != cudaSuccess) return NULL;
    const detpost_status st = c->run(ctx, state);
    const cudaError_t ended = cudaStreamEndCapture(stream, &graph);
    cudaError_t err = ended;
    if (st == DETPOST_OK && ended == cudaSuccess && (err = cudaGraphInstantiate(&exec, graph, 0)) != cudaSuccess)
        exec = NULL;
    if (err != cudaSuccess)
        fprintf(stderr, "bench: capturing %s %s: %s\n", c->op, c->shape, cudaGetErrorString(err));
    if (graph) cudaGraphDestroy(graph);
    (void)cudaGetLastError();
    return exec;
}
#endif

/* Times one case; returns the median in ms, or a negative value on failure.
 * With `graph`, a CUDA case is captured once and its graph launched. */
static double time_case(detpost_ctx *ctx, const bench_case *c, int reps, double *samples, int graph)
{
    void *state = c->setup(ctx, c);
    if (state == NULL) return -1;
    double median = -1;
    /* warm-up: the arena grows, kernels load */
    for (int w = 0; w < 3; ++w)
        if (c->run(ctx, state) != DETPOST_OK) goto done;
    if (detpost_synchronize(ctx) != DETPOST_OK) goto done;
#if defined(DETPOST_CUDA_BUILD)
    if (detpost_get_backend(ctx) == DETPOST_CUDA) {
        cudaStream_t stream = (cudaStream_t)detpost_get_stream(ctx);
        cudaGraphExec_t exec = graph ? capture_case(ctx, c, state) : NULL;
        if (graph && exec == NULL) goto done;
        cudaEvent_t start, stop;
        cudaEventCreate(&start);
        cudaEventCreate(&stop);
        for (int r = 0; r < reps; ++r) {
            cudaEventRecord(start, stream);
            detpost_status st = exec ? (cudaGraphLaunch(exec, stream) == cudaSuccess ? DETPOST_OK : DETPOST_ERR_CUDA)
                                     : c->run(ctx, state);
            cudaEventRecord(stop, stream);
            cudaEventSynchronize(stop);
            float ms = 0;
            cudaEventElapsedTime(&ms, start, stop);
            samples[r] = ms;
            if (st != DETPOST_OK) goto done_events;
        }
        if (detpost_synchronize(ctx) != DETPOST_OK) goto done_events;
        qsort(samples, (size_t)reps, sizeof(double), cmp_double);
        median = samples[reps / 2];
    done_events:
        cudaEventDestroy(start);
        cudaEventDestroy(stop);
        if (exec) cudaGraphExecDestroy(exec);
        goto done;
    }
#else
    (void)graph;
#endif
    for (int r = 0; r < reps; ++r) {
        const double t0 = now_ms();
        if (c->run(ctx, state) != DETPOST_OK) goto done;
        samples[r] = now_ms() - t0;
    }
    qsort(samples, (size_t)reps, sizeof(double), cmp_double);
    median = samples[reps / 2];
done:
    if (median < 0) fprintf(stderr, "bench: %s %s failed: %s\n", c->op, c->shape, detpost_last_error(ctx));
    c->teardown(ctx, state);
    return median;
}
#endif

int main(int argc, char **argv)
{
#if defined(DETPOST_SIM)
    (void)argc, (void)argv;
    fprintf(stderr, "detpost_bench: refusing to time the sim flavor: emulated kernels run on the CPU and their "
                    "timings mean nothing. Use build/cpu or build/cuda.\n");
    return 2;
#else
    const char *backend = "all", *filter = NULL, *out_path = NULL;
    int reps = 50, graph = 0;
    for (int i = 1; i < argc; ++i) {
        if (strcmp(argv[i], "--backend") == 0 && i + 1 < argc) backend = argv[++i];
        else if (strcmp(argv[i], "--filter") == 0 && i + 1 < argc) filter = argv[++i];
        else if (strcmp(argv[i], "--reps") == 0 && i + 1 < argc) reps = atoi(argv[++i]);
        else if (strcmp(argv[i], "--out") == 0 && i + 1 < argc) out_path = argv[++i];
        else if (strcmp(argv[i], "--graph") == 0) graph = 1;
        else {
            fprintf(stderr, "usage: detpost_bench [--backend cpu|cuda|all] [--filter TEXT] [--reps N] [--out FILE] "
                            "[--graph]\n"
                            "  --graph  time each CUDA case as one launch of a CUDA graph that captured its call "
                            "(dev \"graph\")\n");
            return 2;
        }
    }
    if (reps < 1) reps = 1;
    FILE *out = out_path ? fopen(out_path, "w") : NULL;
    if (out_path && !out) {
        fprintf(stderr, "bench: cannot write %s\n", out_path);
        return 1;
    }
    if (out) fprintf(out, "{\"version\": \"%s\", \"results\": [\n", detpost_version_string());
    double *samples = malloc((size_t)reps * sizeof(double));
    int first = 1, failures = 0;
    printf("%-28s %-22s %-5s %12s %6s\n", "op", "shape", "dev", "median_ms", "reps");
    for (int b = 0; b < 2; ++b) {
        const detpost_backend be = b == 0 ? DETPOST_CPU : DETPOST_CUDA;
        if (strcmp(backend, "all") != 0 && strcmp(backend, b == 0 ? "cpu" : "cuda") != 0) continue;
        if (graph && be == DETPOST_CPU) continue; /* graphs are a CUDA matter */
        if (be == DETPOST_CUDA && detpost_cuda_device_count() == 0) {
            printf("(cuda backend skipped: no CUDA device)\n");
            continue;
        }
        detpost_ctx *ctx = NULL;
        if (detpost_create(&ctx, be, 0) != DETPOST_OK) {
            fprintf(stderr, "bench: %s\n", detpost_last_error(ctx));
            detpost_destroy(ctx);
            return 1;
        }
#if defined(DETPOST_CUDA_BUILD)
        cudaStream_t stream = NULL;
        if (be == DETPOST_CUDA) {
            cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking);
            detpost_set_stream(ctx, stream);
        }
#endif
        for (int i = 0; i < registered; ++i) {
            const bench_case *c = registry[i];
            char name[96];
            snprintf(name, sizeof name, "%s %s", c->op, c->shape);
            if (filter && !name_matches(name, filter)) continue;
            const int n = be == DETPOST_CPU ? (c->cpu_max_reps < reps ? c->cpu_max_reps : reps) : reps;
            if (n == 0) continue;
            const double ms = time_case(ctx, c, n, samples, graph);
            if (ms < 0) {
                ++failures;
                continue;
            }
            const char *dev = b == 0 ? "cpu" : graph ? "graph" : "cuda";
            printf("%-28s %-22s %-5s %12.4f %6d\n", c->op, c->shape, dev, ms, n);
            fflush(stdout);
            if (out)
                fprintf(out, "%s  {\"op\": \"%s\", \"shape\": \"%s\", \"backend\": \"%s\", \"median_ms\": %.6f, \"reps\": %d}",
                        first ? "" : ",\n", c->op, c->shape, dev, ms, n);
            first = 0;
        }
#if defined(DETPOST_CUDA_BUILD)
        detpost_destroy(ctx);
        if (stream) cudaStreamDestroy(stream);
#else
        detpost_destroy(ctx);
#endif
    }
    if (out) {
        fprintf(out, "\n]}\n");
        fclose(out);
    }
    free(samples);
    return failures ? 1 : 0;
#endif
}
