/* The JSON reader of the tool and the suites: errors carry a status and,
 * for syntax errors, the byte offset where parsing stopped. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "../host/tool/tool.h"
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

Test(json, text_after_the_value_is_a_syntax_error)
{
    static const struct {
        const char *text;
        const char *where;
    } bad[] = {{"[[0, 0, 1, 1]]]", "byte 14"}, {"[[0, 0, 1, 1]] trailing", "byte 15"}, {"{} {}", "byte 3"}};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; ++i) {
        cJSON *root = NULL;
        dpj_error err;
        cr_assert_eq(dpj_parse(bad[i].text, strlen(bad[i].text), "t.json", &root, &err), DETPOST_ERR_PARSE,
                     "'%s' parsed", bad[i].text);
        cr_assert_null(root);
        cr_assert(strstr(err.text, bad[i].where) != NULL, "'%s': %s", bad[i].text, err.text);
    }
    const char *spaced = "  [[0, 0, 1, 1]] \n\t\r\n";
    cJSON *root = NULL;
    dpj_error err;
    cr_assert_eq(dpj_parse(spaced, strlen(spaced), "t.json", &root, &err), DETPOST_OK, "%s", err.text);
    cJSON_Delete(root);
}

/* The tool's command-line values: the whole argument or nothing. */
Test(tool, values_are_whole_arguments)
{
    double v = -7;
    cr_assert(tool_parse_double("0.5", &v) && v == 0.5);
    cr_assert(tool_parse_double("-inf", &v) && isinf(v) && v < 0, "the library judges -inf");
    v = -7;
    static const char *const not_numbers[] = {"", "abc", "0.5x", "1e999", " "};
    for (size_t i = 0; i < sizeof not_numbers / sizeof not_numbers[0]; ++i) {
        cr_assert(!tool_parse_double(not_numbers[i], &v), "'%s' taken as a number", not_numbers[i]);
        cr_assert_eq(v, -7);
    }
    long long k = -7;
    cr_assert(tool_parse_int("42", 1, 100, &k) && k == 42);
    k = -7;
    static const char *const not_ints[] = {"", "5x", "4.0", "0", "101", "99999999999999999999"};
    for (size_t i = 0; i < sizeof not_ints / sizeof not_ints[0]; ++i) {
        cr_assert(!tool_parse_int(not_ints[i], 1, 100, &k), "'%s' taken as an integer in [1, 100]", not_ints[i]);
        cr_assert_eq(k, -7);
    }
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
