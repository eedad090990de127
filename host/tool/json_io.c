/* JSON input and output for the tool and tests: see json_io.h. */
#include "json_io.h"

#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

detpost_status dpj_fail(dpj_error *err, detpost_status st, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err->text, sizeof err->text, fmt, ap);
    va_end(ap);
    return st;
}

detpost_status dpj_parse(const char *text, size_t len, const char *source, cJSON **root, dpj_error *err)
{
    const char *end = NULL;
    *root = cJSON_ParseWithLengthOpts(text, len, &end, 0);
    if (*root == NULL) {
        size_t offset = end && end >= text ? (size_t)(end - text) : 0;
        return dpj_fail(err, DETPOST_ERR_PARSE, "%s: invalid JSON at byte %zu", source, offset);
    }
    /* one value, then only white space: "[[0, 0, 1, 1]]]" is not a box list */
    size_t offset = (size_t)(end - text);
    while (offset < len && (text[offset] == ' ' || text[offset] == '\t' || text[offset] == '\n' ||
                            text[offset] == '\r'))
        ++offset;
    if (offset < len) {
        cJSON_Delete(*root);
        *root = NULL;
        return dpj_fail(err, DETPOST_ERR_PARSE, "%s: invalid JSON at byte %zu: text after the value", source, offset);
    }
    return DETPOST_OK;
}

detpost_status dpj_load(const char *path, cJSON **root, dpj_error *err)
{
    *root = NULL;
    FILE *f = fopen(path, "rb");
    if (f == NULL) return dpj_fail(err, DETPOST_ERR_IO, "%s: cannot open: %s", path, strerror(errno));
    char *text = NULL;
    size_t len = 0, cap = 0;
    detpost_status st = DETPOST_OK;
    for (;;) {
        if (len == cap) {
            cap = cap ? cap * 2 : 65536;
            char *grown = (char *)realloc(text, cap);
            if (grown == NULL) {
                st = dpj_fail(err, DETPOST_ERR_OUT_OF_MEMORY, "%s: out of memory reading the file", path);
                goto done;
            }
            text = grown;
        }
        size_t got = fread(text + len, 1, cap - len, f);
        len += got;
        if (got == 0) break;
    }
    if (ferror(f)) {
        st = dpj_fail(err, DETPOST_ERR_IO, "%s: read error", path);
        goto done;
    }
    st = dpj_parse(text ? text : "", len, path, root, err);
done:
    free(text);
    fclose(f);
    return st;
}

int dpj_number(const cJSON *node, double *value)
{
    if (cJSON_IsNumber(node)) {
        *value = node->valuedouble;
        return 1;
    }
    if (cJSON_IsString(node)) {
        const char *s = node->valuestring;
        if (strcmp(s, "nan") == 0) *value = NAN;
        else if (strcmp(s, "inf") == 0) *value = INFINITY;
        else if (strcmp(s, "-inf") == 0) *value = -INFINITY;
        else return 0;
        return 1;
    }
    return 0;
}

int dpj_integer(const cJSON *node, int64_t lo, int64_t hi, int64_t *value)
{
    if (!cJSON_IsNumber(node)) return 0;
    const double v = node->valuedouble;
    /* written so that NaN fails the range test; only then is the cast defined */
    if (!(v >= (double)lo && v <= (double)hi) || v != floor(v)) return 0;
    *value = (int64_t)v;
    return 1;
}

detpost_status dpj_float_rows(const cJSON *node, const char *what, int cols, float **out, int64_t *rows,
                              dpj_error *err)
{
    *out = NULL;
    *rows = 0;
    if (!cJSON_IsArray(node)) return dpj_fail(err, DETPOST_ERR_PARSE, "%s: expected a JSON array", what);
    const int64_t n = cJSON_GetArraySize(node);
    const int64_t width = cols > 0 ? cols : 1;
    float *values = (float *)malloc((size_t)(n > 0 ? n * width : 1) * sizeof(float));
    if (values == NULL) return dpj_fail(err, DETPOST_ERR_OUT_OF_MEMORY, "%s: out of memory", what);
    int64_t i = 0;
    const cJSON *row;
    cJSON_ArrayForEach(row, node)
    {
        double v;
        if (cols == 0) {
            if (!dpj_number(row, &v)) {
                free(values);
                return dpj_fail(err, DETPOST_ERR_PARSE, "%s[%lld]: expected a number", what, (long long)i);
            }
            values[i++] = (float)v;
            continue;
        }
        if (!cJSON_IsArray(row) || cJSON_GetArraySize(row) != cols) {
            free(values);
            return dpj_fail(err, DETPOST_ERR_PARSE, "%s[%lld]: expected an array of %d numbers", what, (long long)i,
                            cols);
        }
        int k = 0;
        const cJSON *cell;
        cJSON_ArrayForEach(cell, row)
        {
            if (!dpj_number(cell, &v)) {
                free(values);
                return dpj_fail(err, DETPOST_ERR_PARSE, "%s[%lld][%d]: expected a number", what, (long long)i, k);
            }
            values[i * cols + k++] = (float)v;
        }
        ++i;
    }
    *out = values;
    *rows = n;
    return DETPOST_OK;
}

void dpj_print_matrix(FILE *f, const float *values, int64_t rows, int64_t cols)
{
    fputc('[', f);
    for (int64_t i = 0; i < rows; ++i) {
        fputs(i ? ",\n [" : "[", f);
        for (int64_t j = 0; j < cols; ++j) {
            const float v = values[i * cols + j];
            if (j) fputs(", ", f);
            if (isfinite(v)) fprintf(f, "%.9g", (double)v);
            else fputs("null", f);
        }
        fputc(']', f);
    }
    fputs("]\n", f);
}
