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

int cmd_version(int argc, char **argv);
int cmd_devices(int argc, char **argv);
int cmd_iou(int argc, char **argv);
int cmd_nms(int argc, char **argv);
int cmd_roi_align(int argc, char **argv);
int cmd_cascade(int argc, char **argv);

#endif
