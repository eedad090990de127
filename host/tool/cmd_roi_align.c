/*
 * detpost roi-align FILE.json: RoI Align (or RoI Pool) of a small feature map
 * described in JSON, printed as JSON.
 *
 * Input: {"shape": [n, c, h, w], "features": numbers in NCHW order (flat or
 * nested arrays), "rois": [[batch, x1, y1, x2, y2], ...], "params": {"op":
 * "align" | "pool", "pooled": [ph, pw], "spatial_scale": s, "sampling_ratio":
 * k, "aligned": 0 | 1, "mode": "avg" | "max"}}; params are optional and the
 * command line overrides them. --layout and --dtype choose how the features
 * are stored for the call (the output is printed in NCHW order either way),
 * so the demo can show every storage giving the same numbers.
 */
#include <limits.h>
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

static int apply_params(const cJSON *params, roi_request *req)
{
    const cJSON *node;
    double v;
    if (params == NULL) return 1;
    if ((node = cJSON_GetObjectItemCaseSensitive(params, "op")) && cJSON_IsString(node))
        req->pool = strcmp(node->valuestring, "pool") == 0;
    if ((node = cJSON_GetObjectItemCaseSensitive(params, "mode")) && cJSON_IsString(node))
        req->p.mode = strcmp(node->valuestring, "max") == 0 ? DETPOST_ROI_MAX : DETPOST_ROI_AVG;
    if ((node = cJSON_GetObjectItemCaseSensitive(params, "pooled"))) {
        if (!cJSON_IsArray(node) || cJSON_GetArraySize(node) != 2) return 0;
        req->p.pooled_h = cJSON_GetArrayItem(node, 0)->valueint;
        req->p.pooled_w = cJSON_GetArrayItem(node, 1)->valueint;
    }
    if ((node = cJSON_GetObjectItemCaseSensitive(params, "spatial_scale")) && dpj_number(node, &v))
        req->p.spatial_scale = (float)v;
    if ((node = cJSON_GetObjectItemCaseSensitive(params, "sampling_ratio")) && dpj_number(node, &v))
        req->p.sampling_ratio = (int)v;
    if ((node = cJSON_GetObjectItemCaseSensitive(params, "aligned")))
        req->p.aligned = cJSON_IsBool(node) ? cJSON_IsTrue(node) : node->valueint;
    return 1;
}

/* Parses the command line after the file name; returns 0 on a bad option. */
static int apply_options(int argc, char **argv, roi_request *req)
{
    for (int i = 2; i < argc; ++i) {
        const char *arg = argv[i], *val = i + 1 < argc ? argv[i + 1] : NULL;
        long long k;
        double v;
        if (val == NULL) return 0;
        ++i;
        if (strcmp(arg, "--op") == 0 && (!strcmp(val, "align") || !strcmp(val, "pool"))) req->pool = val[0] == 'p';
        else if (strcmp(arg, "--mode") == 0 && (!strcmp(val, "avg") || !strcmp(val, "max")))
            req->p.mode = val[0] == 'm' ? DETPOST_ROI_MAX : DETPOST_ROI_AVG;
        else if (strcmp(arg, "--aligned") == 0 && tool_parse_int(val, INT_MIN, INT_MAX, &k)) req->p.aligned = (int)k;
        else if (strcmp(arg, "--sampling-ratio") == 0 && tool_parse_int(val, INT_MIN, INT_MAX, &k))
            req->p.sampling_ratio = (int)k;
        else if (strcmp(arg, "--scale") == 0 && tool_parse_double(val, &v)) req->p.spatial_scale = (float)v;
        else if (strcmp(arg, "--pooled") == 0) {
            int used = 0;
            if (sscanf(val, "%dx%d%n", &req->p.pooled_h, &req->p.pooled_w, &used) != 2 || val[used] != '\0') return 0;
        } else if (strcmp(arg, "--layout") == 0 && (!strcmp(val, "nchw") || !strcmp(val, "nhwc")))
            req->p.layout = val[2] == 'c' ? DETPOST_NCHW : DETPOST_NHWC;
        else if (strcmp(arg, "--dtype") == 0 && (!strcmp(val, "f32") || !strcmp(val, "f16")))
            req->p.dtype = val[1] == '3' ? DETPOST_F32 : DETPOST_F16;
        else if (strcmp(arg, "--backend") == 0 && tool_backend(val, &req->backend)) continue;
        else return 0;
    }
    return 1;
}

/* [a, c, s] float in NCHW order <-> the request's layout and dtype. */
static void *pack(const float *nchw, int64_t a, int64_t c, int64_t s, const detpost_roi_params *p, size_t *bytes)
{
    const size_t es = p->dtype == DETPOST_F16 ? 2 : 4;
    *bytes = (size_t)(a * c * s) * es;
    char *raw = malloc(*bytes ? *bytes : 1);
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
    int rc = TOOL_EXIT_FAIL;
    cJSON *root = NULL;
    float *features = NULL, *rois = NULL, *shape = NULL;
    void *packed = NULL, *host_out = NULL, *dev[4] = {NULL, NULL, NULL, NULL};
    int32_t *host_arg = NULL;
    detpost_ctx *ctx = NULL;
    dpj_error err;
    detpost_status st;
    int64_t dims, num_rois, count = 0;
    if ((st = dpj_load(argv[1], &root, &err)) != DETPOST_OK) {
        rc = tool_fail(st, err.text);
        goto done;
    }
    if (!apply_params(cJSON_GetObjectItemCaseSensitive(root, "params"), &req)) {
        rc = tool_fail(DETPOST_ERR_PARSE, "params.pooled must be [pooled_h, pooled_w]");
        goto done;
    }
    if (!apply_options(argc, argv, &req)) {
        fprintf(stderr, USAGE);
        rc = TOOL_EXIT_USAGE;
        goto done;
    }
    if ((st = dpj_float_rows(cJSON_GetObjectItemCaseSensitive(root, "shape"), "shape", 0, &shape, &dims, &err)) ||
        (st = dpj_float_rows(cJSON_GetObjectItemCaseSensitive(root, "rois"), "rois", 5, &rois, &num_rois, &err))) {
        rc = tool_fail(st, err.text);
        goto done;
    }
    if (dims != 4 || shape[0] < 0 || shape[1] < 0 || shape[2] < 0 || shape[3] < 0 ||
        (double)shape[0] * shape[1] * shape[2] * shape[3] > 1e8) {
        rc = tool_fail(DETPOST_ERR_PARSE, "shape must be [n, c, h, w] of a small feature map");
        goto done;
    }
    const int64_t n = (int64_t)shape[0], c = (int64_t)shape[1], h = (int64_t)shape[2], w = (int64_t)shape[3];
    features = malloc((size_t)(n * c * h * w + 1) * sizeof(float));
    if (!flatten(cJSON_GetObjectItemCaseSensitive(root, "features"), features, n * c * h * w, &count) ||
        count != n * c * h * w) {
        char why[160];
        snprintf(why, sizeof why, "%s: features must hold n * c * h * w = %lld numbers", argv[1],
                 (long long)(n * c * h * w));
        rc = tool_fail(DETPOST_ERR_PARSE, why);
        goto done;
    }

    size_t feature_bytes;
    packed = pack(features, n, c, h * w, &req.p, &feature_bytes);
    const int64_t out_elements = num_rois * c * (int64_t)req.p.pooled_h * req.p.pooled_w;
    const size_t out_bytes = (size_t)(out_elements > 0 ? out_elements : 0) * (req.p.dtype == DETPOST_F16 ? 2 : 4);
    const size_t arg_bytes = (size_t)(out_elements > 0 ? out_elements : 0) * sizeof(int32_t);
    if ((ctx = tool_open(req.backend)) == NULL) goto done;
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
    host_out = malloc(out_bytes + 1);
    host_arg = malloc(arg_bytes + 1);
    if ((st = detpost_to_host(ctx, host_out, dev[2], out_bytes)) ||
        (req.pool && (st = detpost_to_host(ctx, host_arg, dev[3], arg_bytes)))) {
        rc = tool_fail_ctx(st, ctx);
        goto done;
    }
    print_result(&req, host_out, req.pool ? host_arg : NULL, num_rois, c);
    rc = 0;
done:
    for (int k = 0; k < 4; ++k)
        if (ctx) detpost_free(ctx, dev[k]);
    detpost_destroy(ctx);
    cJSON_Delete(root);
    free(features), free(rois), free(shape), free(packed), free(host_out), free(host_arg);
    return rc;
}
