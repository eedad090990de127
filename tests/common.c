#include "common.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

detpost_ctx *t_ctx(detpost_backend backend)
{
    detpost_ctx *ctx = NULL;
    if (backend == DETPOST_CUDA && detpost_cuda_device_count() == 0) {
        cr_skip_test("no CUDA device in this machine: this test needs a GPU (the sim suite runs the same kernels)");
    }
    detpost_status st = detpost_create(&ctx, backend, 0);
    cr_assert_eq(st, DETPOST_OK, "detpost_create(%d): %s: %s", (int)backend, detpost_status_name(st),
                 ctx ? detpost_last_error(ctx) : "");
    return ctx;
}

void *t_alloc(detpost_ctx *ctx, size_t bytes)
{
    void *dev = NULL;
    detpost_status st = detpost_alloc(ctx, &dev, bytes);
    cr_assert_eq(st, DETPOST_OK, "detpost_alloc(%zu): %s", bytes, detpost_last_error(ctx));
    return dev;
}

void t_free(detpost_ctx *ctx, void *dev) { cr_assert_eq(detpost_free(ctx, dev), DETPOST_OK); }

void *t_up(detpost_ctx *ctx, const void *host, size_t bytes)
{
    void *dev = t_alloc(ctx, bytes);
    if (bytes) cr_assert_eq(detpost_to_ctx(ctx, dev, host, bytes), DETPOST_OK, "%s", detpost_last_error(ctx));
    return dev;
}

void *t_down(detpost_ctx *ctx, const void *dev, size_t bytes)
{
    void *host = malloc(bytes ? bytes : 1);
    cr_assert_not_null(host);
    if (bytes) cr_assert_eq(detpost_to_host(ctx, host, dev, bytes), DETPOST_OK, "%s", detpost_last_error(ctx));
    return host;
}

void t_expect_fault(detpost_ctx *ctx, const char *needle)
{
    detpost_status st = detpost_synchronize(ctx);
    cr_assert_eq(st, DETPOST_ERR_INVALID_ARGUMENT, "the recorded fault was not answered: %s", detpost_status_name(st));
    cr_assert(strstr(detpost_last_error(ctx), needle) != NULL, "'%s' lacks '%s'", detpost_last_error(ctx), needle);
    cr_assert_eq(detpost_synchronize(ctx), DETPOST_OK, "a fault is answered once: %s", detpost_last_error(ctx));
}

#if defined(DETPOST_SIM)
static const char *const schedules[] = {"forward", "reverse", "random:20261128"};
#else
static const char *const schedules[] = {NULL};
#endif

int t_schedule_count(void) { return (int)(sizeof schedules / sizeof schedules[0]); }
const char *t_schedule(int i) { return schedules[i]; }

void t_set_schedule(const char *s)
{
#if defined(DETPOST_SIM)
    cr_assert_eq(simt_set_schedule(s), 0, "bad schedule %s", s);
#else
    (void)s;
#endif
}

uint64_t t_next(t_rng *r)
{
    uint64_t z = (r->s += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

float t_uniform(t_rng *r, float lo, float hi)
{
    return lo + (hi - lo) * (float)((double)(t_next(r) >> 11) / 9007199254740992.0);
}

void t_detector_boxes(t_rng *r, float *boxes, int64_t n, float w, float h, int degenerate)
{
    enum { MAX_OBJECTS = 8 };
    float obj[MAX_OBJECTS][4];
    const int objects = 1 + (int)(t_next(r) % MAX_OBJECTS);
    for (int k = 0; k < objects; ++k) {
        const float bw = t_uniform(r, 0.05f * w, 0.5f * w), bh = t_uniform(r, 0.05f * h, 0.5f * h);
        const float x = t_uniform(r, 0, w - bw), y = t_uniform(r, 0, h - bh);
        obj[k][0] = x, obj[k][1] = y, obj[k][2] = x + bw, obj[k][3] = y + bh;
    }
    for (int64_t i = 0; i < n; ++i) {
        float *b = boxes + i * 4;
        const float *o = obj[t_next(r) % (uint64_t)objects];
        const float ow = o[2] - o[0], oh = o[3] - o[1];
        const float jitter = t_uniform(r, 0.0f, 0.3f);
        b[0] = o[0] + ow * t_uniform(r, -jitter, jitter);
        b[1] = o[1] + oh * t_uniform(r, -jitter, jitter);
        b[2] = o[2] + ow * t_uniform(r, -jitter, jitter);
        b[3] = o[3] + oh * t_uniform(r, -jitter, jitter);
        if (t_next(r) % 16 == 0) { /* a duplicate of the previous box: exact ties */
            if (i > 0) memcpy(b, b - 4, 4 * sizeof(float));
        }
        if (degenerate && t_next(r) % 32 == 0) {
            switch (t_next(r) % 3) {
            case 0: b[2] = b[0]; break;                             /* zero width */
            case 1: { float t = b[1]; b[1] = b[3]; b[3] = t; } break; /* inverted */
            case 2: b[0] = NAN; break;
            }
        }
    }
}

void t_assert_close(const float *got, const float *want, int64_t n, float atol, float rtol, const char *what)
{
    for (int64_t i = 0; i < n; ++i) {
        const float g = got[i], w = want[i];
        int ok;
        if (isnan(w) || isnan(g)) ok = isnan(w) && isnan(g);
        else ok = fabsf(g - w) <= atol + rtol * fabsf(w);
        if (!ok) cr_assert_fail("%s: element %lld is %.9g, expected %.9g", what, (long long)i, (double)g, (double)w);
    }
}

cJSON *t_golden(const char *name)
{
    const char *dir = getenv("DETPOST_TEST_DATA");
    char path[1024];
    snprintf(path, sizeof path, "%s/%s", dir ? dir : "tests/data", name);
    cJSON *root = NULL;
    dpj_error err;
    detpost_status st = dpj_load(path, &root, &err);
    cr_assert_eq(st, DETPOST_OK, "%s", err.text);
    return root;
}

float *t_json_floats(const cJSON *node, const char *what, int cols, int64_t *rows)
{
    float *out = NULL;
    dpj_error err;
    detpost_status st = dpj_float_rows(node, what, cols, &out, rows, &err);
    cr_assert_eq(st, DETPOST_OK, "%s", err.text);
    return out;
}

float *t_golden_floats(const cJSON *c, const char *field, int cols, int64_t *rows)
{
    const cJSON *node = cJSON_GetObjectItemCaseSensitive(c, field);
    cr_assert_not_null(node, "golden case lacks '%s'", field);
    return t_json_floats(node, field, cols, rows);
}

double t_golden_number(const cJSON *c, const char *field, double fallback)
{
    const cJSON *node = cJSON_GetObjectItemCaseSensitive(c, field);
    double v;
    return node && dpj_number(node, &v) ? v : fallback;
}

const char *t_golden_string(const cJSON *c, const char *field, const char *fallback)
{
    const cJSON *node = cJSON_GetObjectItemCaseSensitive(c, field);
    return cJSON_IsString(node) ? node->valuestring : fallback;
}

#if TEST_HAS_CUDA
void *t_own_stream(detpost_ctx *ctx)
{
    void *stream = t_stream_create();
    cr_assert_not_null(stream, "cudaStreamCreate failed");
    cr_assert_eq(detpost_set_stream(ctx, stream), DETPOST_OK, "%s", detpost_last_error(ctx));
    return stream;
}

static void poison(detpost_ctx *ctx, const t_region *outs, int num_outs, const unsigned char *pattern)
{
    for (int i = 0; i < num_outs; ++i)
        cr_assert_eq(detpost_to_ctx(ctx, outs[i].ptr, pattern, outs[i].bytes), DETPOST_OK, "%s",
                     detpost_last_error(ctx));
}

/* The regions as the calls leave them: poisoned first, so bytes the calls leave alone compare equal. */
static void **run_direct(detpost_ctx *ctx, void (*ops)(detpost_ctx *, void *), void *state, const t_region *outs,
                         int num_outs, const unsigned char *pattern)
{
    void **got = calloc((size_t)num_outs, sizeof *got);
    cr_assert_not_null(got);
    poison(ctx, outs, num_outs, pattern);
    ops(ctx, state);
    cr_assert_eq(detpost_synchronize(ctx), DETPOST_OK, "%s", detpost_last_error(ctx));
    for (int i = 0; i < num_outs; ++i) got[i] = t_down(ctx, outs[i].ptr, outs[i].bytes);
    return got;
}

static void free_regions(void **r, int num_outs)
{
    for (int i = 0; i < num_outs; ++i) free(r[i]);
    free(r);
}

void t_check_graph_replay(detpost_ctx *ctx, void *stream, void (*ops)(detpost_ctx *, void *), void *state,
                          const t_region *outs, int num_outs, void (*new_inputs)(detpost_ctx *, void *, int))
{
    size_t largest = 1;
    for (int i = 0; i < num_outs; ++i) largest = outs[i].bytes > largest ? outs[i].bytes : largest;
    unsigned char *pattern = malloc(largest);
    cr_assert_not_null(pattern);
    memset(pattern, 0xA5, largest);

    free_regions(run_direct(ctx, ops, state, outs, num_outs, pattern), num_outs); /* the arena grows */
    poison(ctx, outs, num_outs, pattern);
    int err = t_capture_begin(stream);
    cr_assert_eq(err, 0, "cudaStreamBeginCapture: %s", t_cuda_error(err));
    ops(ctx, state);
    cr_assert_eq(t_capture_status(stream), 1, "the capture was invalidated during the calls");
    void *exec = NULL;
    err = t_capture_end(stream, &exec);
    cr_assert_eq(err, 0, "ending the capture: %s", t_cuda_error(err));
    for (int i = 0; i < num_outs; ++i) {
        unsigned char *got = t_down(ctx, outs[i].ptr, outs[i].bytes);
        cr_assert_eq(memcmp(got, pattern, outs[i].bytes), 0, "output %d was written during the capture", i);
        free(got);
    }
    for (int launch = 0; launch < 2; ++launch) {
        if (new_inputs) new_inputs(ctx, state, launch);
        void **want = run_direct(ctx, ops, state, outs, num_outs, pattern);
        poison(ctx, outs, num_outs, pattern);
        err = t_graph_launch(exec, stream);
        cr_assert_eq(err, 0, "cudaGraphLaunch: %s", t_cuda_error(err));
        cr_assert_eq(detpost_synchronize(ctx), DETPOST_OK, "%s", detpost_last_error(ctx));
        for (int i = 0; i < num_outs; ++i) {
            unsigned char *got = t_down(ctx, outs[i].ptr, outs[i].bytes);
            size_t at = 0;
            while (at < outs[i].bytes && got[at] == ((unsigned char *)want[i])[at]) ++at;
            cr_assert_eq(at, outs[i].bytes, "launch %d of the graph: output %d differs from the direct run at byte %zu",
                         launch, i, at);
            free(got);
        }
        free_regions(want, num_outs);
    }
    t_graph_destroy(exec);
    free(pattern);
}
#endif
