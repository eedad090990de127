/*
 * JSON input and output for the detpost tool and the test suites (cJSON).
 * Kept out of the library so that linking detpost never needs cJSON.
 * Errors come back as a status and a sentence in the caller's buffer.
 */
#ifndef DETPOST_JSON_IO_H
#define DETPOST_JSON_IO_H

#include <stdint.h>
#include <stdio.h>

#include <cjson/cJSON.h>

#include "detpost.h"

typedef struct dpj_error {
    char text[512];
} dpj_error;

/* Writes the message into err and returns st: the readers' one way to fail. */
detpost_status dpj_fail(dpj_error *err, detpost_status st, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 3, 4)))
#endif
    ;

/* Reads and parses a file holding one JSON value (white space may follow
 * it). A syntax error, or anything else after the value, answers
 * DETPOST_ERR_PARSE with the byte offset where parsing stopped; an
 * unreadable file DETPOST_ERR_IO. */
detpost_status dpj_load(const char *path, cJSON **root, dpj_error *err);
detpost_status dpj_parse(const char *text, size_t len, const char *source, cJSON **root, dpj_error *err);

/* A number, or one of the strings "nan", "inf", "-inf" (JSON has no
 * non-finite numbers). */
int dpj_number(const cJSON *node, double *value);

/* The largest integer below which every integer is a double: ids and sizes
 * read from JSON stay within +-this so that each reads back exactly. */
#define DPJ_MAX_EXACT_INTEGER 9007199254740991LL /* 2^53 - 1 */

/* A JSON number that is an integer in [lo, hi] (both within
 * +-DPJ_MAX_EXACT_INTEGER); returns 0 (value untouched) for anything else:
 * another type, a fraction, an out-of-range or non-finite number. */
int dpj_integer(const cJSON *node, int64_t lo, int64_t hi, int64_t *value);

/* An array of `cols`-number rows ([[x1, y1, x2, y2], ...] for cols 4) into a
 * malloc'd row-major array; cols 0 reads a flat array of numbers. */
detpost_status dpj_float_rows(const cJSON *node, const char *what, int cols, float **out, int64_t *rows,
                              dpj_error *err);

/* Writes rows x cols floats as a JSON array of arrays (non-finite as null). */
void dpj_print_matrix(FILE *f, const float *values, int64_t rows, int64_t cols);

#endif
