/* detpost iou A.json B.json: the overlap matrix of two box lists as JSON. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tool.h"

static const char *const mode_names[] = {"iou", "iof", "giou", "diou", "ciou"};

int cmd_iou(int argc, char **argv)
{
    const char *paths[2] = {NULL, NULL};
    int npaths = 0;
    detpost_backend backend = DETPOST_CPU;
    detpost_overlap_params p = detpost_overlap_params_default();
    for (int i = 1; i < argc; ++i) {
        const char *arg = argv[i];
        if (strcmp(arg, "--mode") == 0 && i + 1 < argc) {
            const char *m = argv[++i];
            int found = 0;
            for (int k = 0; k < 5; ++k)
                if (strcmp(m, mode_names[k]) == 0) {
                    p.mode = (detpost_overlap_mode)k;
                    found = 1;
                }
            if (!found) {
                fprintf(stderr, "detpost iou: unknown mode '%s' (iou, iof, giou, diou, ciou)\n", m);
                return TOOL_EXIT_USAGE;
            }
        } else if (strcmp(arg, "--backend") == 0 && i + 1 < argc) {
            if (!tool_backend(argv[++i], &backend)) {
                fprintf(stderr, "detpost iou: unknown backend '%s' (cpu, cuda)\n", argv[i]);
                return TOOL_EXIT_USAGE;
            }
        } else if (strcmp(arg, "--offset") == 0 && i + 1 < argc) {
            double offset;
            if (!tool_parse_double(argv[++i], &offset)) {
                fprintf(stderr, "detpost iou: --offset needs a number, not '%s'\n", argv[i]);
                return TOOL_EXIT_USAGE;
            }
            p.offset = (float)offset;
        } else if (strcmp(arg, "--aligned") == 0) {
            p.aligned = 1;
        } else if (arg[0] != '-' && npaths < 2) {
            paths[npaths++] = arg;
        } else {
            fprintf(stderr, "detpost iou: unexpected argument '%s'\n", arg);
            return TOOL_EXIT_USAGE;
        }
    }
    if (npaths != 2) {
        fprintf(stderr, "usage: detpost iou A.json B.json [--mode iou|iof|giou|diou|ciou] [--aligned] "
                        "[--offset 0|1] [--backend cpu|cuda]\n");
        return TOOL_EXIT_USAGE;
    }

    int rc = TOOL_EXIT_FAIL;
    cJSON *roots[2] = {NULL, NULL};
    float *boxes[2] = {NULL, NULL}, *host_out = NULL;
    int64_t n[2] = {0, 0};
    void *dev[3] = {NULL, NULL, NULL};
    detpost_ctx *ctx = NULL;
    dpj_error err;
    detpost_status st;
    for (int k = 0; k < 2; ++k) {
        if ((st = dpj_load(paths[k], &roots[k], &err)) != DETPOST_OK ||
            (st = dpj_float_rows(roots[k], paths[k], 4, &boxes[k], &n[k], &err)) != DETPOST_OK) {
            rc = tool_fail(st, err.text);
            goto done;
        }
    }
    const int64_t cols = p.aligned ? 1 : n[1];
    const size_t out_bytes = (size_t)(n[0] * cols) * sizeof(float);
    if ((ctx = tool_open(backend)) == NULL) goto done;
    if ((n[0] && !(dev[0] = tool_upload(ctx, boxes[0], (size_t)n[0] * 16))) ||
        (n[1] && !(dev[1] = tool_upload(ctx, boxes[1], (size_t)n[1] * 16))))
        goto done;
    if ((st = detpost_alloc(ctx, &dev[2], out_bytes)) != DETPOST_OK ||
        (st = detpost_box_overlaps(ctx, &p, (const float *)dev[0], n[0], (const float *)dev[1], n[1], 1,
                                   (float *)dev[2])) != DETPOST_OK) {
        rc = tool_fail_ctx(st, ctx);
        goto done;
    }
    if ((host_out = (float *)malloc(out_bytes ? out_bytes : 1)) == NULL) {
        rc = tool_fail(DETPOST_ERR_OUT_OF_MEMORY, "out of host memory for the overlap matrix");
        goto done;
    }
    if ((st = detpost_to_host(ctx, host_out, dev[2], out_bytes)) != DETPOST_OK) {
        rc = tool_fail_ctx(st, ctx);
        goto done;
    }
    dpj_print_matrix(stdout, host_out, n[0], cols);
    rc = tool_finish_output(stdout, NULL);
done:
    for (int k = 0; k < 3; ++k)
        if (ctx) detpost_free(ctx, dev[k]);
    detpost_destroy(ctx);
    for (int k = 0; k < 2; ++k) {
        cJSON_Delete(roots[k]);
        free(boxes[k]);
    }
    free(host_out);
    return rc;
}
