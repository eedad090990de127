/*
 * detpost nms: NMS of detections in the COCO results format
 *   [{"image_id": I, "category_id": C, "bbox": [x, y, w, h], "score": S}, ...]
 * per image and category (or per image with --class-agnostic), through
 * detpost_batched_nms one image at a time. Writes the kept detections in the
 * same format (soft methods: with their decayed scores), image by image in
 * order of first appearance, best first within an image.
 */
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tool.h"

static const char *const method_names[] = {"hard", "linear", "gaussian", "diou"};

typedef struct detection {
    double image_id, category_id;
    float bbox[4]; /* x, y, w, h as read */
    float score;
} detection;

typedef struct image_group {
    double image_id;
    int64_t *members; /* indices into the detections */
    int64_t count;
} image_group;

static void usage(void)
{
    fprintf(stderr, "usage: detpost nms IN.json [-o OUT.json] [--method hard|linear|gaussian|diou] [--iou T]\n"
                    "         [--score T] [--max-per-image K] [--sigma S] [--min-score M] [--class-agnostic]\n"
                    "         [--backend cpu|cuda] [--print]\n"
                    "  JSON goes to OUT.json, or to stdout unless --print shows a table of every image instead\n");
}

/* Reads the COCO results array; on failure fills err and returns a status. */
static detpost_status read_detections(const cJSON *root, const char *path, detection **out, int64_t *count,
                                      dpj_error *err)
{
    *out = NULL, *count = 0;
    if (!cJSON_IsArray(root)) {
        snprintf(err->text, sizeof err->text, "%s: expected an array of detections", path);
        return DETPOST_ERR_PARSE;
    }
    const int64_t n = cJSON_GetArraySize(root);
    detection *d = calloc((size_t)(n > 0 ? n : 1), sizeof *d);
    if (d == NULL) {
        snprintf(err->text, sizeof err->text, "%s: out of memory", path);
        return DETPOST_ERR_OUT_OF_MEMORY;
    }
    int64_t i = 0;
    const cJSON *item;
    cJSON_ArrayForEach(item, root)
    {
        const cJSON *img = cJSON_GetObjectItemCaseSensitive(item, "image_id");
        const cJSON *cat = cJSON_GetObjectItemCaseSensitive(item, "category_id");
        const cJSON *bbox = cJSON_GetObjectItemCaseSensitive(item, "bbox");
        const cJSON *score = cJSON_GetObjectItemCaseSensitive(item, "score");
        double v;
        if (!cJSON_IsNumber(img) || !cJSON_IsNumber(cat) || !dpj_number(score, &v) || !cJSON_IsArray(bbox) ||
            cJSON_GetArraySize(bbox) != 4) {
            snprintf(err->text, sizeof err->text,
                     "%s: detection %lld needs numeric image_id and category_id, a score and a bbox [x, y, w, h]",
                     path, (long long)i);
            free(d);
            return DETPOST_ERR_PARSE;
        }
        d[i].image_id = img->valuedouble, d[i].category_id = cat->valuedouble, d[i].score = (float)v;
        int k = 0;
        const cJSON *cell;
        cJSON_ArrayForEach(cell, bbox)
        {
            if (!dpj_number(cell, &v)) {
                snprintf(err->text, sizeof err->text, "%s: detection %lld: bbox[%d] is not a number", path,
                         (long long)i, k);
                free(d);
                return DETPOST_ERR_PARSE;
            }
            d[i].bbox[k++] = (float)v;
        }
        ++i;
    }
    *out = d, *count = n;
    return DETPOST_OK;
}

static int compare_doubles(const void *a, const void *b)
{
    const double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* Distinct category ids, ascending: class k of the batched call is cats[k]. */
static double *categories(const detection *d, int64_t n, int64_t *count)
{
    double *cats = malloc((size_t)(n > 0 ? n : 1) * sizeof(double));
    for (int64_t i = 0; i < n; ++i) cats[i] = d[i].category_id;
    qsort(cats, (size_t)n, sizeof(double), compare_doubles);
    int64_t m = 0;
    for (int64_t i = 0; i < n; ++i)
        if (m == 0 || cats[i] != cats[m - 1]) cats[m++] = cats[i];
    *count = m;
    return cats;
}

static int64_t class_of(const double *cats, int64_t count, double id)
{
    const double *hit = bsearch(&id, cats, (size_t)count, sizeof(double), compare_doubles);
    return hit - cats;
}

/* Images in order of first appearance, each with its detections. */
static image_group *group_images(const detection *d, int64_t n, int64_t *count)
{
    image_group *g = calloc((size_t)(n > 0 ? n : 1), sizeof *g);
    int64_t m = 0;
    for (int64_t i = 0; i < n; ++i) {
        int64_t k = 0;
        while (k < m && g[k].image_id != d[i].image_id) ++k;
        if (k == m) g[m++].image_id = d[i].image_id;
        g[k].count++;
    }
    for (int64_t k = 0; k < m; ++k) {
        g[k].members = malloc((size_t)g[k].count * sizeof(int64_t));
        g[k].count = 0;
    }
    for (int64_t i = 0; i < n; ++i) {
        int64_t k = 0;
        while (g[k].image_id != d[i].image_id) ++k;
        g[k].members[g[k].count++] = i;
    }
    *count = m;
    return g;
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

static void print_detection(FILE *f, const detection *d, float score, const char *lead)
{
    fprintf(f, "%s{\"image_id\": %.15g, \"category_id\": %.15g, \"bbox\": [", lead, d->image_id, d->category_id);
    for (int k = 0; k < 4; ++k) {
        if (k) fputs(", ", f);
        print_float(f, d->bbox[k]);
    }
    fputs("], \"score\": ", f);
    print_float(f, score);
    fputc('}', f);
}

static void print_row(const detection *d, float score)
{
    printf("    category %-4.15g score %-10.6g box [%g, %g, %g, %g]\n", d->category_id, (double)score,
           (double)d->bbox[0], (double)d->bbox[1], (double)(d->bbox[0] + d->bbox[2]),
           (double)(d->bbox[1] + d->bbox[3]));
}

/* One image through detpost_batched_nms: fills kept[] (detection indices)
 * and kept_scores[], returns how many, or -1 after printing why. */
static int64_t nms_image(detpost_ctx *ctx, const detpost_batched_nms_params *p, const detection *d,
                         const image_group *g, const double *cats, int64_t num_classes, int64_t *kept,
                         float *kept_scores)
{
    const int64_t N = g->count, C = num_classes, K = p->max_per_image;
    float *boxes = malloc((size_t)N * 4 * sizeof(float)), *scores = malloc((size_t)(N * C) * sizeof(float));
    float *out_boxes = malloc((size_t)K * 4 * sizeof(float)), *out_scores = malloc((size_t)K * sizeof(float));
    int32_t *out_classes = malloc((size_t)K * sizeof(int32_t)), *out_indices = malloc((size_t)K * sizeof(int32_t));
    int32_t num = 0;
    void *dev[8] = {NULL};
    int64_t result = -1;
    for (int64_t i = 0; i < N; ++i) {
        const detection *x = &d[g->members[i]];
        boxes[i * 4 + 0] = x->bbox[0], boxes[i * 4 + 1] = x->bbox[1];
        boxes[i * 4 + 2] = x->bbox[0] + x->bbox[2], boxes[i * 4 + 3] = x->bbox[1] + x->bbox[3];
        for (int64_t c = 0; c < C; ++c) scores[i * C + c] = -INFINITY;
        scores[i * C + class_of(cats, C, x->category_id)] = x->score;
    }
    detpost_status st;
    const size_t sizes[7] = {(size_t)N * 16, (size_t)(N * C) * 4, 4, (size_t)K * 16, (size_t)K * 4, (size_t)K * 4,
                             (size_t)K * 4};
    if (detpost_get_backend(ctx) == DETPOST_CPU) {
        st = detpost_batched_nms(ctx, p, boxes, scores, 1, N, C, &num, out_boxes, out_scores, out_classes, out_indices);
    } else {
        if (!(dev[0] = tool_upload(ctx, boxes, sizes[0])) || !(dev[1] = tool_upload(ctx, scores, sizes[1]))) goto done;
        for (int k = 2; k < 7; ++k)
            if ((st = detpost_alloc(ctx, &dev[k], sizes[k])) != DETPOST_OK) {
                tool_fail_ctx(st, ctx);
                goto done;
            }
        st = detpost_batched_nms(ctx, p, dev[0], dev[1], 1, N, C, dev[2], dev[3], dev[4], dev[5], dev[6]);
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
    free(boxes), free(scores), free(out_boxes), free(out_scores), free(out_classes), free(out_indices);
    return result;
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
    detection *dets = NULL;
    double *cats = NULL;
    image_group *images = NULL;
    int64_t num_dets = 0, num_classes = 0, num_images = 0;
    int64_t *kept = NULL;
    float *kept_scores = NULL;
    detpost_ctx *ctx = NULL;
    FILE *out = NULL;
    dpj_error err;
    detpost_status st;
    if ((st = dpj_load(in_path, &root, &err)) != DETPOST_OK ||
        (st = read_detections(root, in_path, &dets, &num_dets, &err)) != DETPOST_OK) {
        rc = tool_fail(st, err.text);
        goto done;
    }
    cats = categories(dets, num_dets, &num_classes);
    images = group_images(dets, num_dets, &num_images);
    if ((ctx = tool_open(backend)) == NULL) goto done;
    /* the parameters are checked once, before any image */
    size_t unused;
    if ((st = detpost_batched_nms_workspace_size(ctx, &p, 1, 1, num_classes > 0 ? num_classes : 1, &unused)) !=
        DETPOST_OK) {
        rc = tool_fail_ctx(st, ctx);
        goto done;
    }
    kept = malloc((size_t)(p.max_per_image > 0 ? p.max_per_image : 1) * sizeof(int64_t));
    kept_scores = malloc((size_t)(p.max_per_image > 0 ? p.max_per_image : 1) * sizeof(float));
    if (out_path) {
        if ((out = fopen(out_path, "w")) == NULL) {
            rc = tool_fail(DETPOST_ERR_IO, out_path);
            goto done;
        }
    } else if (!print_table) {
        out = stdout;
    }
    if (out) fputc('[', out);
    int first = 1;
    for (int64_t k = 0; k < num_images; ++k) {
        const int64_t n = nms_image(ctx, &p, dets, &images[k], cats, num_classes, kept, kept_scores);
        if (n < 0) goto done;
        if (print_table) {
            printf("image %.15g: %lld detections, %lld kept (%s NMS)\n", images[k].image_id,
                   (long long)images[k].count, (long long)n, method_names[p.nms.method]);
            printf("  before:\n");
            for (int64_t i = 0; i < images[k].count; ++i) {
                const detection *x = &dets[images[k].members[i]];
                print_row(x, x->score);
            }
            printf("  after:\n");
            for (int64_t i = 0; i < n; ++i) print_row(&dets[kept[i]], kept_scores[i]);
        }
        if (out)
            for (int64_t i = 0; i < n; ++i) {
                print_detection(out, &dets[kept[i]], kept_scores[i], first ? "\n " : ",\n ");
                first = 0;
            }
    }
    if (out) fputs(first ? "]\n" : "\n]\n", out);
    rc = 0;
done:
    if (out && out != stdout) fclose(out);
    detpost_destroy(ctx);
    for (int64_t k = 0; k < num_images; ++k) free(images[k].members);
    free(images), free(cats), free(dets), free(kept), free(kept_scores);
    cJSON_Delete(root);
    return rc;
}
