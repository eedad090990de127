/* The JSON reader of the tool and the suites: errors carry a status and,
 * for syntax errors, the byte offset where parsing stopped. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "common.h"

Test(json, syntax_error_reports_byte_offset)
{
    const char *text = "[[0, 0, 1, 1], [2, 2, oops]]";
    cJSON *root = NULL;
    dpj_error err;
    cr_assert_eq(dpj_parse(text, strlen(text), "boxes.json", &root, &err), DETPOST_ERR_PARSE);
    cr_assert_null(root);
    cr_assert(strstr(err.text, "boxes.json") != NULL, "%s", err.text);
    cr_assert(strstr(err.text, "byte 22") != NULL, "%s", err.text);
}

Test(json, missing_file_is_an_io_error)
{
    cJSON *root = NULL;
    dpj_error err;
    cr_assert_eq(dpj_load("/nonexistent/detpost.json", &root, &err), DETPOST_ERR_IO);
    cr_assert(strstr(err.text, "/nonexistent/detpost.json") != NULL, "%s", err.text);
}

Test(json, rows_of_numbers_and_non_finite_names)
{
    const char *text = "[[0, 1.5, \"nan\", 3], [\"inf\", \"-inf\", -2, 1e3]]";
    cJSON *root = NULL;
    dpj_error err;
    cr_assert_eq(dpj_parse(text, strlen(text), "t", &root, &err), DETPOST_OK);
    float *v = NULL;
    int64_t rows = 0;
    cr_assert_eq(dpj_float_rows(root, "t", 4, &v, &rows, &err), DETPOST_OK, "%s", err.text);
    cr_assert_eq(rows, 2);
    cr_assert_eq(v[1], 1.5f);
    cr_assert(isnan(v[2]));
    cr_assert(isinf(v[4]) && v[4] > 0);
    cr_assert(isinf(v[5]) && v[5] < 0);
    cr_assert_eq(v[7], 1000.0f);
    free(v);
    cJSON_Delete(root);
}

Test(json, wrong_shapes_name_the_element)
{
    static const char *const bad[][2] = {
        {"{\"a\": 1}", "expected a JSON array"},
        {"[[0, 0, 1]]", "[0]: expected an array of 4 numbers"},
        {"[[0, 0, 1, 1], [0, 0, true, 1]]", "[1][2]: expected a number"},
        {"[[0, 0, 1, 1], 7]", "[1]: expected an array of 4 numbers"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; ++i) {
        cJSON *root = NULL;
        dpj_error err;
        cr_assert_eq(dpj_parse(bad[i][0], strlen(bad[i][0]), "t", &root, &err), DETPOST_OK);
        float *v = (float *)1;
        int64_t rows = -1;
        cr_assert_eq(dpj_float_rows(root, "boxes", 4, &v, &rows, &err), DETPOST_ERR_PARSE, "case %zu", i);
        cr_assert(strstr(err.text, bad[i][1]) != NULL, "case %zu: '%s' lacks '%s'", i, err.text, bad[i][1]);
        cr_assert_null(v);
        cJSON_Delete(root);
    }
}
