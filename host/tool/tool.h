/* Shared pieces of the detpost command-line tool's subcommands. */
#ifndef DETPOST_TOOL_H
#define DETPOST_TOOL_H

#include "detpost.h"
#include "json_io.h"

/* Exit codes: 0 success, 1 the operation failed, 2 bad command line. */
#define TOOL_EXIT_FAIL 1
#define TOOL_EXIT_USAGE 2

/* Prints "detpost: STATUS: message" on stderr and returns TOOL_EXIT_FAIL. */
int tool_fail(detpost_status st, const char *message);
/* Same, with the context's last error as the message. */
int tool_fail_ctx(detpost_status st, const detpost_ctx *ctx);

/* "cpu" or "cuda" -> backend; returns 0 when the name is neither. */
int tool_backend(const char *name, detpost_backend *backend);
/* Creates a context for the backend; on failure prints why and returns NULL. */
detpost_ctx *tool_open(detpost_backend backend);

/* Allocates context memory and copies `bytes` of host data into it; prints
 * and returns NULL on failure. */
void *tool_upload(detpost_ctx *ctx, const void *host, size_t bytes);

/* A number in strtod's syntax ("inf" and "nan" included: the library judges
 * the value) that is the whole of text and does not overflow; returns 0 (out
 * untouched) otherwise. */
int tool_parse_double(const char *text, double *out);
/* A decimal integer in [lo, hi] that is the whole of text; returns 0 (out untouched) otherwise. */
int tool_parse_int(const char *text, long long lo, long long hi, long long *out);

/* Flushes an output the command has written and closes it unless it is
 * stdout (path NULL names it "standard output"); a failed write or close
 * answers DETPOST_ERR_IO naming the output, so a full disk is not a success.
 * Returns 0 or TOOL_EXIT_FAIL. */
int tool_finish_output(FILE *f, const char *path);

/* ---- readers of the tools' JSON inputs (inputs.c): each refuses what it
 * cannot take exactly with DETPOST_ERR_PARSE and a sentence naming the value,
 * or answers DETPOST_ERR_OUT_OF_MEMORY; nothing is returned on failure. */

/* One detection of the COCO results format. */
typedef struct tool_detection {
    int64_t image_id, category_id; /* integers within +-DPJ_MAX_EXACT_INTEGER, printed back exactly */
    float bbox[4];                 /* x, y, w, h as read */
    float score;
} tool_detection;

/* [{"image_id": I, "category_id": C, "bbox": [x, y, w, h], "score": S}, ...]
 * into a malloc'd array. */
detpost_status tool_read_detections(const cJSON *root, const char *path, tool_detection **out, int64_t *count,
                                    dpj_error *err);

/* The roi-align tool reads small feature maps: at most this many elements. */
#define TOOL_MAX_FEATURES 100000000
/* RoI Align's work grows with the square of the sampling ratio: beyond this a
 * run would only seem to hang. */
#define TOOL_MAX_SAMPLING_RATIO 64

/* "shape": [n, c, h, w], each an integer from 0 to TOOL_MAX_FEATURES and
 * their product at most TOOL_MAX_FEATURES. */
detpost_status tool_read_shape(const cJSON *node, const char *path, int64_t dims[4], dpj_error *err);

/* "params": an object of op ("align" | "pool"), mode ("avg" | "max"), pooled
 * ([ph, pw], integers), spatial_scale (a number), sampling_ratio (an integer
 * from -1 to TOOL_MAX_SAMPLING_RATIO) and aligned (0, 1, false, true), each
 * optional and at most once; NULL leaves p and *pool as they are. Values that
 * the type can hold but the library refuses (pooled 0) are the library's to
 * judge. */
detpost_status tool_read_roi_params(const cJSON *node, const char *path, detpost_roi_params *p, int *pool,
                                    dpj_error *err);

int cmd_version(int argc, char **argv);
int cmd_devices(int argc, char **argv);
int cmd_iou(int argc, char **argv);
int cmd_nms(int argc, char **argv);
int cmd_roi_align(int argc, char **argv);
int cmd_cascade(int argc, char **argv);

#endif
