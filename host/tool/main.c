/*
 * detpost: command-line front end of the library; `detpost --help` lists the
 * commands (version, devices, iou, nms, roi-align, cascade).
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tool.h"

struct command {
    const char *name;
    int (*run)(int argc, char **argv);
    const char *usage;
};

static const struct command commands[] = {
    {"version", cmd_version, "version                       library version"},
    {"devices", cmd_devices, "devices [--count]             CUDA devices this build can use"},
    {"iou", cmd_iou, "iou A.json B.json [--mode iou|iof|giou|diou|ciou] [--aligned] [--offset 0|1]\n"
                     "        [--backend cpu|cuda]      overlap matrix of two box lists"},
    {"nms", cmd_nms, "nms IN.json [-o OUT.json] [--method hard|linear|gaussian|diou] [--iou T] [--score T]\n"
                     "        [--max-per-image K] [--class-agnostic] [--backend cpu|cuda] [--print]\n"
                     "                                  NMS of COCO-format detections per image and category"},
    {"roi-align", cmd_roi_align, "roi-align FILE.json [--op align|pool] [--mode avg|max] [...]\n"
                                 "                                RoI Align / RoI Pool of a small feature map"},
    {"cascade", cmd_cascade, "cascade [--backend cpu|cuda] [--seed N] [...]  Cascade R-CNN stages, synthetic images"},
};

static void usage(FILE *f)
{
    fprintf(f, "usage: detpost COMMAND [ARGS]\n\ncommands:\n");
    for (size_t i = 0; i < sizeof commands / sizeof commands[0]; ++i) fprintf(f, "  %s\n", commands[i].usage);
}

int main(int argc, char **argv)
{
    if (argc < 2 || strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0) {
        usage(argc < 2 ? stderr : stdout);
        return argc < 2 ? TOOL_EXIT_USAGE : 0;
    }
    for (size_t i = 0; i < sizeof commands / sizeof commands[0]; ++i)
        if (strcmp(argv[1], commands[i].name) == 0) return commands[i].run(argc - 1, argv + 1);
    fprintf(stderr, "detpost: unknown command '%s'\n", argv[1]);
    usage(stderr);
    return TOOL_EXIT_USAGE;
}

int tool_fail(detpost_status st, const char *message)
{
    fprintf(stderr, "detpost: %s: %s\n", detpost_status_name(st), message);
    return TOOL_EXIT_FAIL;
}

int tool_fail_ctx(detpost_status st, const detpost_ctx *ctx) { return tool_fail(st, detpost_last_error(ctx)); }

int tool_finish_output(FILE *f, const char *path)
{
    errno = 0;
    /* a buffered write fails only when flushed; an earlier failure left the error flag */
    int failed = fflush(f) != 0 || ferror(f);
    int why = errno;
    if (f != stdout && fclose(f) != 0 && !failed) failed = 1, why = errno;
    if (!failed) return 0;
    char message[512];
    snprintf(message, sizeof message, "%s: cannot write: %s", path ? path : "standard output",
             why ? strerror(why) : "write error");
    return tool_fail(DETPOST_ERR_IO, message);
}

int tool_backend(const char *name, detpost_backend *backend)
{
    if (strcmp(name, "cpu") == 0) *backend = DETPOST_CPU;
    else if (strcmp(name, "cuda") == 0) *backend = DETPOST_CUDA;
    else return 0;
    return 1;
}

detpost_ctx *tool_open(detpost_backend backend)
{
    detpost_ctx *ctx = NULL;
    detpost_status st = detpost_create(&ctx, backend, 0);
    if (st != DETPOST_OK) {
        tool_fail(st, ctx ? detpost_last_error(ctx) : "cannot allocate a context");
        detpost_destroy(ctx);
        return NULL;
    }
    return ctx;
}

void *tool_upload(detpost_ctx *ctx, const void *host, size_t bytes)
{
    void *dev = NULL;
    detpost_status st = detpost_alloc(ctx, &dev, bytes);
    if (st == DETPOST_OK) st = detpost_to_ctx(ctx, dev, host, bytes);
    if (st != DETPOST_OK) {
        tool_fail_ctx(st, ctx);
        detpost_free(ctx, dev);
        return NULL;
    }
    return dev;
}

int cmd_version(int argc, char **argv)
{
    (void)argv;
    if (argc > 1) {
        fprintf(stderr, "usage: detpost version\n");
        return TOOL_EXIT_USAGE;
    }
    printf("detpost %s (header %d.%d.%d)\n", detpost_version_string(), DETPOST_VERSION_MAJOR, DETPOST_VERSION_MINOR,
           DETPOST_VERSION_PATCH);
    return 0;
}
