/* detpost devices: what the CUDA backend of this build can use. */
#include <stdio.h>
#include <string.h>

#include "../internal.h"
#include "tool.h"

int cmd_devices(int argc, char **argv)
{
    const int count_only = argc == 2 && strcmp(argv[1], "--count") == 0;
    if (argc > 1 && !count_only) {
        fprintf(stderr, "usage: detpost devices [--count]\n");
        return TOOL_EXIT_USAGE;
    }
    const int count = detpost_cuda_device_count();
    if (count_only) {
        printf("%d\n", count);
        return 0;
    }
#if DETPOST_WITH_CUDA
#ifdef DETPOST_SIM
    printf("sim build: 1 emulated CUDA device (SIMT emulator running kernels on the CPU; not a GPU)\n");
#else
    printf("cuda build: %d CUDA device%s\n", count, count == 1 ? "" : "s");
#endif
    for (int i = 0; i < count; ++i) {
        char name[256];
        if (dp_cuda_device_name(i, name, sizeof name) == DETPOST_OK) printf("  %d: %s\n", i, name);
        else printf("  %d: (cannot query its properties)\n", i);
    }
#else
    printf("cpu build: no CUDA backend compiled in; 0 CUDA devices\n");
#endif
    return 0;
}
