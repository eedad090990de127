/*
 * detpost roi-align FILE.json: RoI Align (or RoI Pool) of a small feature map
 * described in JSON, printed as JSON.
 *
 * Input: {"shape": [n, c, h, w], "features": numbers in NCHW order (flat or
 * nested arrays), "rois": [[batch, x1, y1, x2, y2], ...], "params": {"op":
 * "align" | "pool", "pooled": [ph, pw], "spatial_scale": s, "sampling_ratio":
 * k (-1 to 64), "aligned": 0 | 1 | false | true, "mode": "avg" | "max"}};
 * params are optional, an unknown one is an error, and the command line
 * overrides them. --layout and --dtype choose how the features
 * are stored for the call (the output is printed in NCHW order either way),
 * so the demo can show every storage giving the same numbers.
 */
#include <limits.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../half.h"
#include "tool.h"

#define USAGE                                                                                            \
    "usage: detpost roi-align FILE.json [--op align|pool] [--mode avg|max] [--aligned 0|1]\n"            \
    "       [--sampling-ratio K] [--pooled PHxPW] [--scale S] [--layout nchw|nhwc] [--dtype f32|f16]\n" \
    "       [--backend cpu|cuda]\n"

typedef struct roi_request {
    int pool;
    detpost_roi_params p;
    detpost_backend backend;
} roi_request;

/* Appends every number of a (possibly nested) array to values. */
static int flatten(const cJSON *node, float *values, int64_t cap, int64_t *count)
{
    double v;
    if (cJSON_IsArray(node)) {
        const cJSON *item;
        cJSON_ArrayForEach(item, node)
        {
            if (!flatten(item, values, cap, count)) return 0;
        }
        return 1;
    }
    if (!dpj_number(node, &v) || *count >= cap) return 0;
    values[(*count)++] = (float)v;
    return 1;
}

/* "PHxPW": each half a whole integer within int (sscanf's %d would overflow silently). */
static int parse_pooled(const char *text, int *ph, int *pw)
{
    char half[32];
    const char *x = strchr(text, 'x');
    long long h, w;
    if (x == NULL || (size_t)(x - text) >= sizeof half) return 0;
    memcpy(half, text, (size_t)(x - text));
    half[x - text] = '\0';
    if (!tool_parse_int(half, INT_MIN, INT_MAX, &h) || !tool_parse_int(x + 1, INT_MIN, INT_MAX, &w)) return 0;
    *ph = (int)h, *pw = (int)w;
    return 1;
}

/* Applies the command line after the file name to req; on a bad option says
 * what was wrong and returns 0. */
static int apply_options(int argc, char **argv, roi_request *req)
{
    static const char *const options[] = {"--op",    "--mode",   "--aligned", "--sampling-ratio", "--pooled",
                                          "--scale", "--layout", "--dtype",   "--backend"};
    char ratio_range[64];
    snprintf(ratio_range, sizeof ratio_range, "an integer from -1 to %d (0 or -1: adaptive)", TOOL_MAX_SAMPLING_RATIO);
    for (int i = 2; i < argc; ++i) {
        const char *arg = argv[i];
        int known = 0;
        for (size_t k = 0; k < sizeof options / sizeof options[0]; ++k) known |= strcmp(arg, options[k]) == 0;
        if (!known) {
            fprintf(stderr, "detpost roi-align: unknown option '%s'\n", arg);
            return 0;
        }
        if (i + 1 == argc) {
            fprintf(stderr, "detpost roi-align: %s needs a value\n", arg);
            return 0;
        }
        const char *val = argv[++i], *needs = NULL;
        long long k;
        double v;
        if (strcmp(arg, "--op") == 0) {
            if (!strcmp(val, "align") || !strcmp(val, "pool")) req->pool = val[0] == 'p';
            else needs = "align or pool";
        } else if (strcmp(arg, "--mode") == 0) {
            if (!strcmp(val, "avg") || !strcmp(val, "max"))
                req->p.mode = val[0] == 'm' ? DETPOST_ROI_MAX : DETPOST_ROI_AVG;
            else needs = "avg or max";
        } else if (strcmp(arg, "--aligned") == 0) {
            if (tool_parse_int(val, 0, 1, &k)) req->p.aligned = (int)k;
            else needs = "0 or 1";
        } else if (strcmp(arg, "--sampling-ratio") == 0) {
            if (tool_parse_int(val, -1, TOOL_MAX_SAMPLING_RATIO, &k)) req->p.sampling_ratio = (int)k;
            else needs = ratio_range;
        } else if (strcmp(arg, "--pooled") == 0) {
            if (!parse_pooled(val, &req->p.pooled_h, &req->p.pooled_w)) needs = "PHxPW, two integers";
        } else if (strcmp(arg, "--scale") == 0) {
            if (tool_parse_double(val, &v)) req->p.spatial_scale = (float)v;
            else needs = "a number";
        } else if (strcmp(arg, "--layout") == 0) {
            if (!strcmp(val, "nchw") || !strcmp(val, "nhwc"))
                req->p.layout = val[2] == 'c' ? DETPOST_NCHW : DETPOST_NHWC;
            else needs = "nchw or nhwc";
        } else if (strcmp(arg, "--dtype") == 0) {
            if (!strcmp(val, "f32") || !strcmp(val, "f16")) req->p.dtype = val[1] == '3' ? DETPOST_F32 : DETPOST_F16;
            else needs = "f32 or f16";
        } else if (!tool_backend(val, &req->backend)) {
            needs = "cpu or cuda";
        }
        if (needs) {
            fprintf(stderr, "detpost roi-align: %s needs %s, not '%s'\n", arg, needs, val);
            return 0;
        }
    }
    return 1;
}

/* [a, c, s] float in NCHW order <-> the request's layout and dtype; pack
 * returns NULL when memory runs out. */
static void *pack(const float *nchw, int64_t a, int64_t c, int64_t s, const detpost_roi_params *p, size_t *bytes)
{
    const size_t es = p->dtype == DETPOST_F16 ? 2 : 4;
    *bytes = (size_t)(a * c * s) * es;
    char *raw = malloc(*bytes ? *bytes : 1);
    if (raw == NULL) return NULL;
    for (int64_t ia = 0; ia < a; ++ia)
        for (int64_t ic = 0; ic < c; ++ic)
            for (int64_t is = 0; is < s; ++is) {
                const int64_t k = p->layout == DETPOST_NCHW ? (ia * c + ic) * s + is : (ia * s + is) * c + ic;
                const float v = nchw[(ia * c + ic) * s + is];
                if (p->dtype == DETPOST_F16) ((uint16_t *)raw)[k] = dp_float_to_half(v);
                else ((float *)raw)[k] = v;
            }
    return raw;
}

static float unpacked(const void *raw, int64_t c, int64_t s, int64_t ia, int64_t ic, int64_t is,
                      const detpost_roi_params *p)
{
    const int64_t k = p->layout == DETPOST_NCHW ? (ia * c + ic) * s + is : (ia * s + is) * c + ic;
    return p->dtype == DETPOST_F16 ? dp_half_to_float(((const uint16_t *)raw)[k]) : ((const float *)raw)[k];
}

static void print_value(double v)
{
    if (v == v && v - v == 0) printf("%.9g", v);
    else printf("null");
}

/* {"output": [roi][channel][ph][pw], "argmax": same (RoI Pool)} */
static void print_result(const roi_request *req, const void *out, const int32_t *argmax, int64_t num_rois, int64_t c)
{
    const int ph = req->p.pooled_h, pw = req->p.pooled_w;
    const int64_t bins = (int64_t)ph * pw;
    for (int which = 0; which < (argmax ? 2 : 1); ++which) {
        printf(which ? ",\n \"argmax\": [" : "{\"op\": \"%s\",\n \"output\": [", req->pool ? "roi_pool" : "roi_align");
        for (int64_t r = 0; r < num_rois; ++r) {
            printf(r ? ",\n  [" : "\n  [");
            for (int64_t ch = 0; ch < c; ++ch) {
                printf(ch ? ", [" : "[");
                for (int y = 0; y < ph; ++y) {
                    printf(y ? ", [" : "[");
                    for (int x = 0; x < pw; ++x) {
                        const int64_t bin = (int64_t)y * pw + x;
                        if (x) printf(", ");
                        if (which) {
                            const int64_t k = req->p.layout == DETPOST_NCHW ? (r * c + ch) * bins + bin
                                                                            : (r * bins + bin) * c + ch;
                            printf("%d", argmax[k]);
                        } else {
                            print_value((double)unpacked(out, c, bins, r, ch, bin, &req->p));
                        }
                    }
                    printf("]");
                }
                printf("]");
            }
            printf("]");
        }
        printf("]");
    }
    printf("}\n");
}

int cmd_roi_align(int argc, char **argv)
{
    roi_request req = {0, detpost_roi_params_default(), DETPOST_CPU};
    if (argc < 2 || argv[1][0] == '-') {
        fprintf(stderr, USAGE);
        return TOOL_EXIT_USAGE;
    }
    /* The command line is checked before the file is read, and applied after the file's params: it overrides them. */
    roi_request checked = req;
    if (!apply_options(argc, argv, &checked)) {
        fprintf(stderr, USAGE);
        return TOOL_EXIT_USAGE;
    }
    const char *path = argv[1];
    int rc = TOOL_EXIT_FAIL;
    cJSON *root = NULL;
    float *features = NULL, *rois = NULL;
    void *packed = NULL, *host_out = NULL, *dev[4] = {NULL, NULL, NULL, NULL};
    int32_t *host_arg = NULL;
    detpost_ctx *ctx = NULL;
    dpj_error err;
    detpost_status st;
    int64_t dims[4], num_rois, count = 0;
    if ((st = dpj_load(path, &root, &err)) != DETPOST_OK) {
        rc = tool_fail(st, err.text);
        goto done;
    }
    if (!cJSON_IsObject(root)) {
        snprintf(err.text, sizeof err.text, "%s: expected an object with shape, features, rois and params", path);
        rc = tool_fail(DETPOST_ERR_PARSE, err.text);
        goto done;
    }
    if ((st = tool_read_roi_params(cJSON_GetObjectItemCaseSensitive(root, "params"), path, &req.p, &req.pool,
                                   &err)) ||
        (st = tool_read_shape(cJSON_GetObjectItemCaseSensitive(root, "shape"), path, dims, &err)) ||
        (st = dpj_float_rows(cJSON_GetObjectItemCaseSensitive(root, "rois"), "rois", 5, &rois, &num_rois, &err))) {
        rc = tool_fail(st, err.text);
        goto done;
    }
    apply_options(argc, argv, &req);
    const int64_t n = dims[0], c = dims[1], h = dims[2], w = dims[3], elements = n * c * h * w;
    if ((ctx = tool_open(req.backend)) == NULL) goto done;
    /* the library judges the parameters and the map before any buffer is sized by them */
    size_t unused;
    if ((st = detpost_roi_workspace_size(ctx, &req.p, n, c, h, w, &unused)) != DETPOST_OK) {
        rc = tool_fail_ctx(st, ctx);
        goto done;
    }
    int64_t out_elements;
    if (__builtin_mul_overflow(num_rois, c * req.p.pooled_h * req.p.pooled_w, &out_elements) ||
        out_elements > (int64_t)(SIZE_MAX / 4)) {
        snprintf(err.text, sizeof err.text, "%s: %lld RoIs x %lld channels x %d x %d bins do not fit in memory", path,
                 (long long)num_rois, (long long)c, req.p.pooled_h, req.p.pooled_w);
        rc = tool_fail(DETPOST_ERR_OUT_OF_MEMORY, err.text);
        goto done;
    }
    if ((features = malloc((size_t)(elements + 1) * sizeof(float))) == NULL) {
        rc = tool_fail(DETPOST_ERR_OUT_OF_MEMORY, "out of host memory for the features");
        goto done;
    }
    if (!flatten(cJSON_GetObjectItemCaseSensitive(root, "features"), features, elements, &count) ||
        count != elements) {
        snprintf(err.text, sizeof err.text, "%s: features must hold n * c * h * w = %lld numbers", path,
                 (long long)elements);
        rc = tool_fail(DETPOST_ERR_PARSE, err.text);
        goto done;
    }

    size_t feature_bytes;
    const size_t out_bytes = (size_t)out_elements * (req.p.dtype == DETPOST_F16 ? 2 : 4);
    const size_t arg_bytes = (size_t)out_elements * sizeof(int32_t);
    packed = pack(features, n, c, h * w, &req.p, &feature_bytes);
    host_out = malloc(out_bytes + 1);
    host_arg = malloc(arg_bytes + 1);
    if (packed == NULL || host_out == NULL || host_arg == NULL) {
        rc = tool_fail(DETPOST_ERR_OUT_OF_MEMORY, "out of host memory for the features and the output");
        goto done;
    }
    if ((feature_bytes && !(dev[0] = tool_upload(ctx, packed, feature_bytes))) ||
        (num_rois && !(dev[1] = tool_upload(ctx, rois, (size_t)num_rois * 5 * sizeof(float)))))
        goto done;
    if ((st = detpost_alloc(ctx, &dev[2], out_bytes)) || (req.pool && (st = detpost_alloc(ctx, &dev[3], arg_bytes)))) {
        rc = tool_fail_ctx(st, ctx);
        goto done;
    }
    st = req.pool ? detpost_roi_pool(ctx, &req.p, dev[0], n, c, h, w, dev[1], num_rois, dev[2], dev[3])
                  : detpost_roi_align(ctx, &req.p, dev[0], n, c, h, w, dev[1], num_rois, dev[2]);
    if (st != DETPOST_OK) {
        rc = tool_fail_ctx(st, ctx);
        goto done;
    }
    if ((st = detpost_to_host(ctx, host_out, dev[2], out_bytes)) ||
        (req.pool && (st = detpost_to_host(ctx, host_arg, dev[3], arg_bytes)))) {
        rc = tool_fail_ctx(st, ctx);
        goto done;
    }
    print_result(&req, host_out, req.pool ? host_arg : NULL, num_rois, c);
    rc = tool_finish_output(stdout, NULL);
done:
    for (int k = 0; k < 4; ++k)
        if (ctx) detpost_free(ctx, dev[k]);
    detpost_destroy(ctx);
    cJSON_Delete(root);
    free(features), free(rois), free(packed), free(host_out), free(host_arg);
    return rc;
}
