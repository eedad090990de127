/* Readers of the tools' JSON inputs (see tool.h). They live apart from the
 * commands so that the suites can hold every refusal to account. */
#include <limits.h>
#include <stdlib.h>
#include <string.h>

#include "tool.h"

/* ---- COCO results ---------------------------------------------------------- */

static detpost_status read_detection(const cJSON *item, const char *path, int64_t i, tool_detection *d,
                                     dpj_error *err)
{
    if (!cJSON_IsObject(item))
        return dpj_fail(err, DETPOST_ERR_PARSE, "%s: detection %lld must be an object", path, (long long)i);
    static const char *const id_names[2] = {"image_id", "category_id"};
    int64_t *const ids[2] = {&d->image_id, &d->category_id};
    for (int k = 0; k < 2; ++k)
        if (!dpj_integer(cJSON_GetObjectItemCaseSensitive(item, id_names[k]), -DPJ_MAX_EXACT_INTEGER,
                         DPJ_MAX_EXACT_INTEGER, ids[k]))
            return dpj_fail(err, DETPOST_ERR_PARSE, "%s: detection %lld: %s must be an integer of magnitude below 2^53",
                        path, (long long)i, id_names[k]);
    double v;
    if (!dpj_number(cJSON_GetObjectItemCaseSensitive(item, "score"), &v))
        return dpj_fail(err, DETPOST_ERR_PARSE, "%s: detection %lld: score must be a number", path, (long long)i);
    d->score = (float)v;
    const cJSON *bbox = cJSON_GetObjectItemCaseSensitive(item, "bbox");
    if (!cJSON_IsArray(bbox) || cJSON_GetArraySize(bbox) != 4)
        return dpj_fail(err, DETPOST_ERR_PARSE, "%s: detection %lld: bbox must be [x, y, w, h]", path, (long long)i);
    int k = 0;
    const cJSON *cell;
    cJSON_ArrayForEach(cell, bbox)
    {
        if (!dpj_number(cell, &v))
            return dpj_fail(err, DETPOST_ERR_PARSE, "%s: detection %lld: bbox[%d] is not a number", path, (long long)i,
                        k);
        d->bbox[k++] = (float)v;
    }
    return DETPOST_OK;
}

detpost_status tool_read_detections(const cJSON *root, const char *path, tool_detection **out, int64_t *count,
                                    dpj_error *err)
{
    *out = NULL, *count = 0;
    if (!cJSON_IsArray(root)) return dpj_fail(err, DETPOST_ERR_PARSE, "%s: expected an array of detections", path);
    const int64_t n = cJSON_GetArraySize(root);
    tool_detection *d = calloc((size_t)(n > 0 ? n : 1), sizeof *d);
    if (d == NULL)
        return dpj_fail(err, DETPOST_ERR_OUT_OF_MEMORY, "%s: out of memory for %lld detections", path, (long long)n);
    int64_t i = 0;
    const cJSON *item;
    cJSON_ArrayForEach(item, root)
    {
        const detpost_status st = read_detection(item, path, i, &d[i], err);
        if (st != DETPOST_OK) {
            free(d);
            return st;
        }
        ++i;
    }
    *out = d, *count = n;
    return DETPOST_OK;
}

/* ---- RoI inputs -------------------------------------------------------------- */

detpost_status tool_read_shape(const cJSON *node, const char *path, int64_t dims[4], dpj_error *err)
{
    if (!cJSON_IsArray(node) || cJSON_GetArraySize(node) != 4)
        return dpj_fail(err, DETPOST_ERR_PARSE, "%s: shape must be [n, c, h, w]", path);
    int64_t read[4], product = 1;
    for (int k = 0; k < 4; ++k) {
        if (!dpj_integer(cJSON_GetArrayItem(node, k), 0, TOOL_MAX_FEATURES, &read[k]))
            return dpj_fail(err, DETPOST_ERR_PARSE, "%s: shape[%d] must be an integer from 0 to %d", path, k,
                        TOOL_MAX_FEATURES);
        product *= read[k]; /* each factor is at most 1e8 and the product is checked before the next one */
        if (product > TOOL_MAX_FEATURES)
            return dpj_fail(err, DETPOST_ERR_PARSE, "%s: shape holds more than %d features", path, TOOL_MAX_FEATURES);
    }
    memcpy(dims, read, sizeof read);
    return DETPOST_OK;
}

/* name must be one of the two choices; *second tells which. */
static int read_choice(const cJSON *node, const char *first, const char *other, int *second)
{
    if (!cJSON_IsString(node)) return 0;
    if (strcmp(node->valuestring, first) == 0) *second = 0;
    else if (strcmp(node->valuestring, other) == 0) *second = 1;
    else return 0;
    return 1;
}

detpost_status tool_read_roi_params(const cJSON *node, const char *path, detpost_roi_params *p, int *pool,
                                    dpj_error *err)
{
    static const char *const keys[] = {"op", "mode", "pooled", "spatial_scale", "sampling_ratio", "aligned"};
    enum { OP, MODE, POOLED, SCALE, RATIO, ALIGNED, KEYS };
    if (node == NULL) return DETPOST_OK;
    if (!cJSON_IsObject(node)) return dpj_fail(err, DETPOST_ERR_PARSE, "%s: params must be an object", path);
    detpost_roi_params q = *p;
    int op = *pool, seen[KEYS] = {0};
    const cJSON *item;
    cJSON_ArrayForEach(item, node)
    {
        int key = 0;
        while (key < KEYS && strcmp(item->string, keys[key]) != 0) ++key;
        if (key == KEYS)
            return dpj_fail(err, DETPOST_ERR_PARSE,
                        "%s: params.%s is not a parameter (op, mode, pooled, spatial_scale, sampling_ratio, aligned)",
                        path, item->string);
        if (seen[key]++) return dpj_fail(err, DETPOST_ERR_PARSE, "%s: params.%s is given twice", path, keys[key]);
        int64_t a, b;
        double v;
        int choice;
        switch (key) {
        case OP:
            if (!read_choice(item, "align", "pool", &op))
                return dpj_fail(err, DETPOST_ERR_PARSE, "%s: params.op must be \"align\" or \"pool\"", path);
            break;
        case MODE:
            if (!read_choice(item, "avg", "max", &choice))
                return dpj_fail(err, DETPOST_ERR_PARSE, "%s: params.mode must be \"avg\" or \"max\"", path);
            q.mode = choice ? DETPOST_ROI_MAX : DETPOST_ROI_AVG;
            break;
        case POOLED:
            if (!cJSON_IsArray(item) || cJSON_GetArraySize(item) != 2 ||
                !dpj_integer(cJSON_GetArrayItem(item, 0), INT_MIN, INT_MAX, &a) ||
                !dpj_integer(cJSON_GetArrayItem(item, 1), INT_MIN, INT_MAX, &b))
                return dpj_fail(err, DETPOST_ERR_PARSE, "%s: params.pooled must be [pooled_h, pooled_w], two integers",
                            path);
            q.pooled_h = (int)a, q.pooled_w = (int)b;
            break;
        case SCALE:
            if (!dpj_number(item, &v))
                return dpj_fail(err, DETPOST_ERR_PARSE, "%s: params.spatial_scale must be a number", path);
            q.spatial_scale = (float)v;
            break;
        case RATIO:
            if (!dpj_integer(item, -1, TOOL_MAX_SAMPLING_RATIO, &a))
                return dpj_fail(err, DETPOST_ERR_PARSE,
                            "%s: params.sampling_ratio must be an integer from -1 to %d (0 or -1: adaptive)", path,
                            TOOL_MAX_SAMPLING_RATIO);
            q.sampling_ratio = (int)a;
            break;
        case ALIGNED:
            if (cJSON_IsBool(item)) a = cJSON_IsTrue(item);
            else if (!dpj_integer(item, 0, 1, &a))
                return dpj_fail(err, DETPOST_ERR_PARSE, "%s: params.aligned must be 0, 1, false or true", path);
            q.aligned = (int)a;
            break;
        }
    }
    *p = q, *pool = op;
    return DETPOST_OK;
}
