/*
 * detpost nms: NMS of detections in the COCO results format
 *   [{"image_id": I, "category_id": C, "bbox": [x, y, w, h], "score": S}, ...]
 * per image and category (or per image with --class-agnostic), through
 * detpost_batched_nms one image at a time. Writes the kept detections in the
 * same format (soft methods: with their decayed scores), image by image in
 * order of first appearance, best first within an image.
 */
#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tool.h"

static const char *const method_names[] = {"hard", "linear", "gaussian", "diou"};

typedef struct image_group {
    int64_t image_id;
    const int64_t *members; /* indices into the detections, in input order */
    int64_t count;
} image_group;

static void usage(void)
{
    fprintf(stderr, "usage: detpost nms IN.json [-o OUT.json] [--method hard|linear|gaussian|diou] [--iou T]\n"
                    "         [--score T] [--max-per-image K] [--sigma S] [--min-score M] [--class-agnostic]\n"
                    "         [--backend cpu|cuda] [--print]\n"
                    "  JSON goes to OUT.json, or to stdout unless --print shows a table of every image instead\n");
}

static int out_of_memory(const char *what)
{
    char message[256];
    snprintf(message, sizeof message, "out of host memory for %s", what);
    return tool_fail(DETPOST_ERR_OUT_OF_MEMORY, message);
}

typedef struct keyed {
    int64_t key, index;
} keyed;

/* By key, then by index: qsort is not stable, the index makes it so. */
static int compare_keyed(const void *a, const void *b)
{
    const keyed *x = a, *y = b;
    if (x->key != y->key) return x->key < y->key ? -1 : 1;
    return (x->index > y->index) - (x->index < y->index);
}

static int compare_first_members(const void *a, const void *b)
{
    const int64_t x = ((const image_group *)a)->members[0], y = ((const image_group *)b)->members[0];
    return (x > y) - (x < y);
}

/* Images in order of first appearance, each with its detections in input
 * order (slices of *members). Sorting keeps this O(n log n) however many
 * images there are. Returns 0 when memory runs out. */
static int group_images(const tool_detection *d, int64_t n, image_group **groups, int64_t *count, int64_t **members)
{
    *groups = NULL, *count = 0, *members = NULL;
    keyed *order = malloc((size_t)(n > 0 ? n : 1) * sizeof *order);
    int64_t *m = malloc((size_t)(n > 0 ? n : 1) * sizeof *m);
    image_group *g = malloc((size_t)(n > 0 ? n : 1) * sizeof *g);
    if (order == NULL || m == NULL || g == NULL) {
        free(order), free(m), free(g);
        return 0;
    }
    for (int64_t i = 0; i < n; ++i) order[i] = (keyed){d[i].image_id, i};
    qsort(order, (size_t)n, sizeof *order, compare_keyed);
    int64_t images = 0;
    for (int64_t i = 0; i < n; ++i) {
        m[i] = order[i].index;
        if (i == 0 || order[i].key != order[i - 1].key) g[images++] = (image_group){order[i].key, m + i, 0};
        g[images - 1].count++;
    }
    qsort(g, (size_t)images, sizeof *g, compare_first_members);
    free(order);
    *groups = g, *count = images, *members = m;
    return 1;
}

static int compare_ids(const void *a, const void *b)
{
    const int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return (x > y) - (x < y);
}

/* The shortest decimal that reads back as the same float (0.93, not
 * 0.930000007); non-finite values as the strings dpj_number accepts. */
static void print_float(FILE *f, float v)
{
    if (!isfinite(v)) {
        fprintf(f, "\"%s\"", isnan(v) ? "nan" : v > 0 ? "inf" : "-inf");
        return;
    }
    char text[32];
    for (int digits = 6; digits <= 9; ++digits) {
        snprintf(text, sizeof text, "%.*g", digits, (double)v);
        if (strtof(text, NULL) == v) break;
    }
    fputs(text, f);
}

static void print_detection(FILE *f, const tool_detection *d, float score, const char *lead)
{
    fprintf(f, "%s{\"image_id\": %lld, \"category_id\": %lld, \"bbox\": [", lead, (long long)d->image_id,
            (long long)d->category_id);
    for (int k = 0; k < 4; ++k) {
        if (k) fputs(", ", f);
        print_float(f, d->bbox[k]);
    }
    fputs("], \"score\": ", f);
    print_float(f, score);
    fputc('}', f);
}

static void print_row(const tool_detection *d, float score)
{
    printf("    category %-4lld score %-10.6g box [%g, %g, %g, %g]\n", (long long)d->category_id, (double)score,
           (double)d->bbox[0], (double)d->bbox[1], (double)(d->bbox[0] + d->bbox[2]),
           (double)(d->bbox[1] + d->bbox[3]));
}

/* One image through detpost_batched_nms, its score matrix spanning only its
 * own categories: fills kept[] (detection indices) and kept_scores[], at most
 * g->count of each, and returns how many, or -1 after printing why. */
static int64_t nms_image(detpost_ctx *ctx, const detpost_batched_nms_params *p, const tool_detection *d,
                         const image_group *g, int64_t *kept, float *kept_scores)
{
    const int64_t N = g->count;
    int64_t *cats = malloc((size_t)N * sizeof *cats);
    if (cats == NULL) {
        out_of_memory("the categories of an image");
        return -1;
    }
    for (int64_t i = 0; i < N; ++i) cats[i] = d[g->members[i]].category_id;
    qsort(cats, (size_t)N, sizeof *cats, compare_ids);
    int64_t C = 0; /* class k of the call is cats[k] */
    for (int64_t i = 0; i < N; ++i)
        if (C == 0 || cats[i] != cats[C - 1]) cats[C++] = cats[i];
    if (N * C > INT32_MAX) {
        char message[256];
        snprintf(message, sizeof message,
                 "image %lld: %lld detections in %lld categories make %lld scores; detpost_batched_nms takes "
                 "below 2^31",
                 (long long)g->image_id, (long long)N, (long long)C, (long long)(N * C));
        free(cats);
        tool_fail(DETPOST_ERR_UNSUPPORTED, message);
        return -1;
    }
    /* Rows past the candidates are padding, and an image has no more candidates than detections: a smaller K
     * keeps every answer and bounds the buffers by the input however large --max-per-image is. */
    detpost_batched_nms_params q = *p;
    const int64_t K = q.max_per_image < N ? q.max_per_image : N;
    q.max_per_image = K;
    float *boxes = malloc((size_t)N * 4 * sizeof(float)), *scores = malloc((size_t)(N * C) * sizeof(float));
    float *out_boxes = malloc((size_t)K * 4 * sizeof(float)), *out_scores = malloc((size_t)K * sizeof(float));
    int32_t *out_classes = malloc((size_t)K * sizeof(int32_t)), *out_indices = malloc((size_t)K * sizeof(int32_t));
    int32_t num = 0;
    void *dev[7] = {NULL};
    int64_t result = -1;
    detpost_status st;
    if (!boxes || !scores || !out_boxes || !out_scores || !out_classes || !out_indices) {
        out_of_memory("the score matrix of an image");
        goto done;
    }
    for (int64_t i = 0; i < N; ++i) {
        const tool_detection *x = &d[g->members[i]];
        boxes[i * 4 + 0] = x->bbox[0], boxes[i * 4 + 1] = x->bbox[1];
        boxes[i * 4 + 2] = x->bbox[0] + x->bbox[2], boxes[i * 4 + 3] = x->bbox[1] + x->bbox[3];
        for (int64_t c = 0; c < C; ++c) scores[i * C + c] = -INFINITY;
        const int64_t *cls = bsearch(&x->category_id, cats, (size_t)C, sizeof *cats, compare_ids);
        scores[i * C + (cls - cats)] = x->score;
    }
    const size_t sizes[7] = {(size_t)N * 16, (size_t)(N * C) * 4, 4, (size_t)K * 16, (size_t)K * 4, (size_t)K * 4,
                             (size_t)K * 4};
    if (detpost_get_backend(ctx) == DETPOST_CPU) {
        st = detpost_batched_nms(ctx, &q, boxes, scores, 1, N, C, &num, out_boxes, out_scores, out_classes,
                                 out_indices);
    } else {
        if (!(dev[0] = tool_upload(ctx, boxes, sizes[0])) || !(dev[1] = tool_upload(ctx, scores, sizes[1]))) goto done;
        for (int k = 2; k < 7; ++k)
            if ((st = detpost_alloc(ctx, &dev[k], sizes[k])) != DETPOST_OK) {
                tool_fail_ctx(st, ctx);
                goto done;
            }
        st = detpost_batched_nms(ctx, &q, dev[0], dev[1], 1, N, C, dev[2], dev[3], dev[4], dev[5], dev[6]);
        if (st == DETPOST_OK &&
            ((st = detpost_to_host(ctx, &num, dev[2], sizes[2])) != DETPOST_OK ||
             (st = detpost_to_host(ctx, out_scores, dev[4], sizes[4])) != DETPOST_OK ||
             (st = detpost_to_host(ctx, out_indices, dev[6], sizes[6])) != DETPOST_OK)) {
            tool_fail_ctx(st, ctx);
            goto done;
        }
    }
    if (st != DETPOST_OK) {
        tool_fail_ctx(st, ctx);
        goto done;
    }
    for (int32_t k = 0; k < num; ++k) {
        kept[k] = g->members[out_indices[k]];
        kept_scores[k] = out_scores[k];
    }
    result = num;
done:
    for (int k = 0; k < 7; ++k) detpost_free(ctx, dev[k]);
    free(cats), free(boxes), free(scores), free(out_boxes), free(out_scores), free(out_classes), free(out_indices);
    return result;
}

/* The table of --print: every image before and after. */
static void print_tables(const tool_detection *dets, const image_group *images, int64_t num_images,
                         const int64_t *kept, const float *kept_scores, const int64_t *first_kept, const char *method)
{
    for (int64_t k = 0; k < num_images; ++k) {
        const int64_t n = first_kept[k + 1] - first_kept[k];
        printf("image %lld: %lld detections, %lld kept (%s NMS)\n", (long long)images[k].image_id,
               (long long)images[k].count, (long long)n, method);
        printf("  before:\n");
        for (int64_t i = 0; i < images[k].count; ++i) {
            const tool_detection *x = &dets[images[k].members[i]];
            print_row(x, x->score);
        }
        printf("  after:\n");
        for (int64_t i = first_kept[k]; i < first_kept[k + 1]; ++i) print_row(&dets[kept[i]], kept_scores[i]);
    }
}

static void write_json(FILE *out, const tool_detection *dets, const int64_t *kept, const float *kept_scores,
                       int64_t num_kept)
{
    fputc('[', out);
    for (int64_t i = 0; i < num_kept; ++i) print_detection(out, &dets[kept[i]], kept_scores[i], i ? ",\n " : "\n ");
    fputs(num_kept ? "\n]\n" : "]\n", out);
}

int cmd_nms(int argc, char **argv)
{
    const char *in_path = NULL, *out_path = NULL;
    int print_table = 0;
    detpost_backend backend = DETPOST_CPU;
    detpost_batched_nms_params p = detpost_batched_nms_params_default();
    p.pre_nms_top_k = 0;
    for (int i = 1; i < argc; ++i) {
        const char *arg = argv[i];
        const int has_value = i + 1 < argc;
        double v;
        if (strcmp(arg, "--method") == 0 && has_value) {
            const char *m = argv[++i];
            int found = 0;
            for (int k = 0; k < 4; ++k)
                if (strcmp(m, method_names[k]) == 0) p.nms.method = (detpost_nms_method)k, found = 1;
            if (!found) {
                fprintf(stderr, "detpost nms: unknown method '%s' (hard, linear, gaussian, diou)\n", m);
                return TOOL_EXIT_USAGE;
            }
        } else if (strcmp(arg, "--max-per-image") == 0 && has_value) {
            long long k;
            if (!tool_parse_int(argv[++i], LLONG_MIN, LLONG_MAX, &k)) {
                fprintf(stderr, "detpost nms: %s needs an integer, not '%s'\n", arg, argv[i]);
                return TOOL_EXIT_USAGE;
            }
            p.max_per_image = (int64_t)k;
        } else if ((strcmp(arg, "--iou") == 0 || strcmp(arg, "--score") == 0 || strcmp(arg, "--sigma") == 0 ||
                    strcmp(arg, "--min-score") == 0) &&
                   has_value) {
            if (!tool_parse_double(argv[++i], &v)) {
                fprintf(stderr, "detpost nms: %s needs a number, not '%s'\n", arg, argv[i]);
                return TOOL_EXIT_USAGE;
            }
            if (strcmp(arg, "--iou") == 0) p.nms.iou_threshold = (float)v;
            else if (strcmp(arg, "--score") == 0) p.nms.score_threshold = (float)v;
            else if (strcmp(arg, "--sigma") == 0) p.nms.sigma = (float)v;
            else p.nms.min_score = (float)v;
        } else if (strcmp(arg, "--class-agnostic") == 0) {
            p.class_agnostic = 1;
        } else if (strcmp(arg, "--print") == 0) {
            print_table = 1;
        } else if (strcmp(arg, "--backend") == 0 && has_value) {
            if (!tool_backend(argv[++i], &backend)) {
                fprintf(stderr, "detpost nms: unknown backend '%s' (cpu, cuda)\n", argv[i]);
                return TOOL_EXIT_USAGE;
            }
        } else if (strcmp(arg, "-o") == 0 && has_value) {
            out_path = argv[++i];
        } else if (arg[0] != '-' && in_path == NULL) {
            in_path = arg;
        } else {
            fprintf(stderr, "detpost nms: unexpected argument '%s'\n", arg);
            usage();
            return TOOL_EXIT_USAGE;
        }
    }
    if (in_path == NULL) {
        usage();
        return TOOL_EXIT_USAGE;
    }

    int rc = TOOL_EXIT_FAIL;
    cJSON *root = NULL;
    tool_detection *dets = NULL;
    image_group *images = NULL;
    int64_t num_dets = 0, num_images = 0;
    int64_t *members = NULL, *kept = NULL, *first_kept = NULL;
    float *kept_scores = NULL;
    detpost_ctx *ctx = NULL;
    dpj_error err;
    detpost_status st;
    if ((st = dpj_load(in_path, &root, &err)) != DETPOST_OK ||
        (st = tool_read_detections(root, in_path, &dets, &num_dets, &err)) != DETPOST_OK) {
        rc = tool_fail(st, err.text);
        goto done;
    }
    if (!group_images(dets, num_dets, &images, &num_images, &members)) {
        rc = out_of_memory("grouping the detections by image");
        goto done;
    }
    /* an image keeps at most its own detections, so the results of all fit in num_dets rows */
    kept = malloc((size_t)(num_dets > 0 ? num_dets : 1) * sizeof *kept);
    kept_scores = malloc((size_t)(num_dets > 0 ? num_dets : 1) * sizeof *kept_scores);
    first_kept = malloc((size_t)(num_images + 1) * sizeof *first_kept);
    if (kept == NULL || kept_scores == NULL || first_kept == NULL) {
        rc = out_of_memory("the kept detections");
        goto done;
    }
    if ((ctx = tool_open(backend)) == NULL) goto done;
    /* The parameters are checked once, before any image, with the K of an image of one detection: each image
     * runs with K clamped to its detections, so a huge --max-per-image sizes nothing. */
    detpost_batched_nms_params checked = p;
    if (checked.max_per_image > 1) checked.max_per_image = 1;
    size_t unused;
    if ((st = detpost_batched_nms_workspace_size(ctx, &checked, 1, 1, 1, &unused)) != DETPOST_OK) {
        rc = tool_fail_ctx(st, ctx);
        goto done;
    }
    /* Everything is computed before anything is written, so a failure leaves no partial output. */
    first_kept[0] = 0;
    for (int64_t k = 0; k < num_images; ++k) {
        const int64_t n = nms_image(ctx, &p, dets, &images[k], kept + first_kept[k], kept_scores + first_kept[k]);
        if (n < 0) goto done;
        first_kept[k + 1] = first_kept[k] + n;
    }
    if (print_table) print_tables(dets, images, num_images, kept, kept_scores, first_kept, method_names[p.nms.method]);
    if (out_path || !print_table) {
        FILE *out = out_path ? fopen(out_path, "w") : stdout;
        if (out == NULL) {
            char message[512];
            snprintf(message, sizeof message, "%s: cannot open for writing: %s", out_path, strerror(errno));
            rc = tool_fail(DETPOST_ERR_IO, message);
            goto done;
        }
        write_json(out, dets, kept, kept_scores, first_kept[num_images]);
        if ((rc = tool_finish_output(out, out_path)) != 0) goto done;
    }
    rc = print_table ? tool_finish_output(stdout, NULL) : 0;
done:
    detpost_destroy(ctx);
    free(images), free(members), free(dets), free(kept), free(kept_scores), free(first_kept);
    cJSON_Delete(root);
    return rc;
}
