/* Values on the tool's command line: a value is the whole argument or it is
 * refused, so "--offset abc" or "--images 5x" is a usage error, not 0 or 5. */
#include <errno.h>
#include <stdlib.h>

#include "tool.h"

int tool_parse_double(const char *text, double *out)
{
    char *end = NULL;
    errno = 0;
    const double v = strtod(text, &end);
    if (end == text || *end != '\0' || errno == ERANGE) return 0;
    *out = v;
    return 1;
}

int tool_parse_int(const char *text, long long lo, long long hi, long long *out)
{
    char *end = NULL;
    errno = 0;
    const long long v = strtoll(text, &end, 10);
    if (end == text || *end != '\0' || errno == ERANGE || v < lo || v > hi) return 0;
    *out = v;
    return 1;
}
