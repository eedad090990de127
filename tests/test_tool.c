/* The readers of the tool's JSON inputs: what they take exactly, and that
 * everything else is refused with a message naming the value, the outputs
 * untouched. */
#include <limits.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "../host/tool/tool.h"
#include "common.h"

static cJSON *parsed(const char *text)
{
    cJSON *root = NULL;
    dpj_error err;
    cr_assert_eq(dpj_parse(text, strlen(text), "t.json", &root, &err), DETPOST_OK, "%s: %s", text, err.text);
    return root;
}

Test(json, integers_are_whole_exact_and_in_range)
{
    static const struct {
        const char *text;
        int64_t want;
    } good[] = {{"7", 7}, {"-7", -7}, {"-0.0", 0}, {"1e3", 1000}, {"9007199254740991", 9007199254740991LL},
                {"-9007199254740991", -9007199254740991LL}};
    for (size_t i = 0; i < sizeof good / sizeof good[0]; ++i) {
        cJSON *v = parsed(good[i].text);
        int64_t got = -1;
        cr_assert(dpj_integer(v, -DPJ_MAX_EXACT_INTEGER, DPJ_MAX_EXACT_INTEGER, &got), "%s refused", good[i].text);
        cr_assert_eq(got, good[i].want, "%s read as %lld", good[i].text, (long long)got);
        cJSON_Delete(v);
    }
    /* 2^53 itself is refused: 2^53 + 1 in the file would read as it */
    static const char *const bad[] = {"2.25",  "1e999", "-1e999", "1234567890123456789", "9007199254740992",
                                      "\"7\"", "true",  "null",   "[7]",                 "\"nan\""};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; ++i) {
        cJSON *v = parsed(bad[i]);
        int64_t got = -1;
        cr_assert(!dpj_integer(v, -DPJ_MAX_EXACT_INTEGER, DPJ_MAX_EXACT_INTEGER, &got), "%s taken", bad[i]);
        cr_assert_eq(got, -1);
        cJSON_Delete(v);
    }
    cJSON *nan = cJSON_CreateNumber(NAN), *five = parsed("5");
    int64_t got = -1;
    cr_assert(!dpj_integer(nan, INT_MIN, INT_MAX, &got) && got == -1, "NaN taken");
    cr_assert(!dpj_integer(five, 0, 4, &got) && !dpj_integer(five, 6, 9, &got) && got == -1, "5 outside the range");
    cr_assert(dpj_integer(five, 5, 5, &got) && got == 5);
    cJSON_Delete(nan), cJSON_Delete(five);
}

Test(tool, detection_ids_are_read_exactly)
{
    cJSON *root = parsed("[{\"image_id\": 1234567890123456, \"category_id\": -9007199254740991, "
                         "\"bbox\": [1, 2, 3, 4], \"score\": 0.5}, "
                         "{\"image_id\": 0, \"category_id\": 7, \"bbox\": [0, 0, 1, 1], \"score\": \"-inf\"}]");
    tool_detection *d = NULL;
    int64_t n = 0;
    dpj_error err;
    cr_assert_eq(tool_read_detections(root, "t.json", &d, &n, &err), DETPOST_OK, "%s", err.text);
    cr_assert_eq(n, 2);
    cr_assert_eq(d[0].image_id, 1234567890123456LL);
    cr_assert_eq(d[0].category_id, -9007199254740991LL);
    cr_assert(d[0].bbox[0] == 1 && d[0].bbox[3] == 4 && d[0].score == 0.5f);
    cr_assert(d[1].image_id == 0 && d[1].category_id == 7 && isinf(d[1].score) && d[1].score < 0);
    free(d);
    cJSON_Delete(root);
}

Test(tool, detections_with_bad_fields_are_refused)
{
    static const struct {
        const char *second; /* the second detection; the first is valid */
        const char *names;
    } bad[] = {
        {"{\"image_id\": 1e999, \"category_id\": 1, \"bbox\": [0, 0, 1, 1], \"score\": 1}", "image_id"},
        {"{\"image_id\": 1, \"category_id\": -1e999, \"bbox\": [0, 0, 1, 1], \"score\": 1}", "category_id"},
        {"{\"image_id\": 2.25, \"category_id\": 1, \"bbox\": [0, 0, 1, 1], \"score\": 1}", "image_id"},
        {"{\"image_id\": 1, \"category_id\": 2.25, \"bbox\": [0, 0, 1, 1], \"score\": 1}", "category_id"},
        {"{\"image_id\": 1234567890123456789, \"category_id\": 1, \"bbox\": [0, 0, 1, 1], \"score\": 1}", "image_id"},
        {"{\"image_id\": 1, \"category_id\": 1234567890123456789, \"bbox\": [0, 0, 1, 1], \"score\": 1}",
         "category_id"},
        {"{\"image_id\": \"1\", \"category_id\": 1, \"bbox\": [0, 0, 1, 1], \"score\": 1}", "image_id"},
        {"{\"category_id\": 1, \"bbox\": [0, 0, 1, 1], \"score\": 1}", "image_id"},
        {"[1, 1, [0, 0, 1, 1], 1]", "must be an object"},
        {"{\"image_id\": 1, \"category_id\": 1, \"bbox\": [0, 0, 1, 1], \"score\": null}", "score"},
        {"{\"image_id\": 1, \"category_id\": 1, \"bbox\": [0, 0, 1], \"score\": 1}", "bbox"},
        {"{\"image_id\": 1, \"category_id\": 1, \"bbox\": [0, 0, \"x\", 1], \"score\": 1}", "bbox[2]"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; ++i) {
        char text[512];
        snprintf(text, sizeof text, "[{\"image_id\": 1, \"category_id\": 1, \"bbox\": [0, 0, 1, 1], \"score\": 1}, %s]",
                 bad[i].second);
        cJSON *root = parsed(text);
        tool_detection *d = NULL;
        int64_t n = -1;
        dpj_error err;
        cr_assert_eq(tool_read_detections(root, "t.json", &d, &n, &err), DETPOST_ERR_PARSE, "%s taken", bad[i].second);
        cr_assert(d == NULL && n == 0);
        cr_assert(strstr(err.text, "detection 1") && strstr(err.text, bad[i].names), "%s: %s", bad[i].second,
                  err.text);
        cJSON_Delete(root);
    }
}

Test(tool, shapes_are_small_whole_feature_maps)
{
    static const struct {
        const char *text;
        int64_t want[4];
    } good[] = {{"[2, 3, 4, 5]", {2, 3, 4, 5}}, {"[0, 100000000, 1, 1]", {0, 100000000, 1, 1}},
                {"[1, 1, 10000, 10000]", {1, 1, 10000, 10000}}, {"[-0.0, 1, 1, 1]", {0, 1, 1, 1}}};
    for (size_t i = 0; i < sizeof good / sizeof good[0]; ++i) {
        cJSON *node = parsed(good[i].text);
        int64_t dims[4] = {-1, -1, -1, -1};
        dpj_error err;
        cr_assert_eq(tool_read_shape(node, "t.json", dims, &err), DETPOST_OK, "%s: %s", good[i].text, err.text);
        cr_assert_arr_eq(dims, good[i].want, sizeof dims, "%s", good[i].text);
        cJSON_Delete(node);
    }
    static const struct {
        const char *text;
        const char *names;
    } bad[] = {{"[1, 2, 3]", "shape must be"},           {"[1, 2, 3, 4, 5]", "shape must be"},
               {"{\"n\": 1}", "shape must be"},          {"[-1, 1, 1, 1]", "shape[0]"},
               {"[1, 1.5, 1, 1]", "shape[1]"},           {"[1, 1, 1e999, 1]", "shape[2]"},
               {"[1, 1, 1, \"nan\"]", "shape[3]"},       {"[1, 100000001, 1, 1]", "shape[1]"},
               {"[0, 1, 1e18, 1e18]", "shape[2]"},       {"[1, 1, 1, \"1\"]", "shape[3]"},
               {"[2, 10000, 10000, 1]", "more than"},    {"[1, 1, 100000, 1001]", "more than"}};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; ++i) {
        cJSON *node = parsed(bad[i].text);
        int64_t dims[4] = {-1, -1, -1, -1};
        dpj_error err;
        cr_assert_eq(tool_read_shape(node, "t.json", dims, &err), DETPOST_ERR_PARSE, "%s taken", bad[i].text);
        cr_assert(dims[0] == -1 && dims[1] == -1 && dims[2] == -1 && dims[3] == -1, "%s written", bad[i].text);
        cr_assert(strstr(err.text, bad[i].names), "%s: %s", bad[i].text, err.text);
        cJSON_Delete(node);
    }
}

Test(tool, roi_params_are_read_in_full)
{
    cJSON *node = parsed("{\"op\": \"pool\", \"mode\": \"max\", \"pooled\": [3, 4], \"spatial_scale\": 0.25, "
                         "\"sampling_ratio\": 64, \"aligned\": false}");
    detpost_roi_params p = detpost_roi_params_default();
    int pool = 0;
    dpj_error err;
    cr_assert_eq(tool_read_roi_params(node, "t.json", &p, &pool, &err), DETPOST_OK, "%s", err.text);
    cr_assert(pool == 1 && p.mode == DETPOST_ROI_MAX && p.pooled_h == 3 && p.pooled_w == 4);
    cr_assert(p.spatial_scale == 0.25f && p.sampling_ratio == 64 && p.aligned == 0);
    cJSON_Delete(node);

    node = parsed("{\"op\": \"align\", \"mode\": \"avg\", \"sampling_ratio\": -1, \"aligned\": true}");
    cr_assert_eq(tool_read_roi_params(node, "t.json", &p, &pool, &err), DETPOST_OK, "%s", err.text);
    cr_assert(pool == 0 && p.mode == DETPOST_ROI_AVG && p.sampling_ratio == -1 && p.aligned == 1);
    cr_assert(p.pooled_h == 3 && p.spatial_scale == 0.25f, "keys not given are kept");
    cJSON_Delete(node);

    node = parsed("{\"aligned\": 0}");
    cr_assert_eq(tool_read_roi_params(node, "t.json", &p, &pool, &err), DETPOST_OK, "%s", err.text);
    cr_assert_eq(p.aligned, 0);
    cJSON_Delete(node);

    const detpost_roi_params before = p;
    cr_assert_eq(tool_read_roi_params(NULL, "t.json", &p, &pool, &err), DETPOST_OK, "no params keep the defaults");
    cr_assert(memcmp(&p, &before, sizeof p) == 0 && pool == 0);
}

Test(tool, roi_params_of_wrong_types_or_values_are_refused)
{
    static const struct {
        const char *text;
        const char *names;
    } bad[] = {
        {"[1, 2]", "params must be an object"},
        {"{\"pooled_h\": 2}", "params.pooled_h is not a parameter"},
        {"{\"op\": \"pool\", \"op\": \"pool\"}", "params.op is given twice"},
        {"{\"op\": \"roi\"}", "params.op"},
        {"{\"op\": 1}", "params.op"},
        {"{\"mode\": \"min\"}", "params.mode"},
        {"{\"mode\": null}", "params.mode"},
        {"{\"pooled\": [2]}", "params.pooled"},
        {"{\"pooled\": [2, 3, 4]}", "params.pooled"},
        {"{\"pooled\": 2}", "params.pooled"},
        {"{\"pooled\": [2, 2.5]}", "params.pooled"},
        {"{\"pooled\": [2, \"3\"]}", "params.pooled"},
        {"{\"pooled\": [[2], [2]]}", "params.pooled"},
        {"{\"pooled\": [2147483648, 2]}", "params.pooled"},
        {"{\"pooled\": [2, -2147483649]}", "params.pooled"},
        {"{\"spatial_scale\": \"1\"}", "params.spatial_scale"},
        {"{\"spatial_scale\": [1]}", "params.spatial_scale"},
        {"{\"sampling_ratio\": 1.5}", "params.sampling_ratio"},
        {"{\"sampling_ratio\": 65}", "params.sampling_ratio"},
        {"{\"sampling_ratio\": -2}", "params.sampling_ratio"},
        {"{\"sampling_ratio\": 1e999}", "params.sampling_ratio"},
        {"{\"sampling_ratio\": \"nan\"}", "params.sampling_ratio"},
        {"{\"aligned\": 5}", "params.aligned"},
        {"{\"aligned\": 0.5}", "params.aligned"},
        {"{\"aligned\": \"1\"}", "params.aligned"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; ++i) {
        /* a valid key first: it may not land either */
        char text[256];
        if (bad[i].text[0] == '{')
            snprintf(text, sizeof text, "{%s, %s",
                     strstr(bad[i].text, "spatial_scale") ? "\"mode\": \"max\"" : "\"spatial_scale\": 2",
                     bad[i].text + 1);
        else snprintf(text, sizeof text, "%s", bad[i].text);
        cJSON *node = parsed(text);
        detpost_roi_params p = detpost_roi_params_default();
        const detpost_roi_params before = p;
        int pool = 7;
        dpj_error err;
        cr_assert_eq(tool_read_roi_params(node, "t.json", &p, &pool, &err), DETPOST_ERR_PARSE, "%s taken",
                     bad[i].text);
        cr_assert(memcmp(&p, &before, sizeof p) == 0 && pool == 7, "%s written", bad[i].text);
        cr_assert(strstr(err.text, bad[i].names), "%s: %s", bad[i].text, err.text);
        cJSON_Delete(node);
    }
}
