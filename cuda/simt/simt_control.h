/*
 * Control and observation of the SIMT emulator, for tests and tools of the
 * sim flavor. Plain C so that C test files can call it.
 */
#ifndef DETPOST_SIMT_CONTROL_H
#define DETPOST_SIMT_CONTROL_H

#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Sets the thread order between barriers for launches from this host thread:
 * "forward", "reverse" or "random:SEED". Returns 0, or -1 (unchanged) when the
 * text is not one of those. The initial value comes from the environment
 * variable DETPOST_SIMT_SCHEDULE (default forward). */
int simt_set_schedule(const char *spec);
/* The schedule in force, in the form simt_set_schedule accepts. */
const char *simt_schedule(void);

/* Calls so far (all host threads) that make the host wait for the device:
 * stream / device synchronisation, blocking copies, copies to or from host
 * memory, cudaMalloc and cudaFree. */
unsigned long long simt_sync_count(void);
/* Kernel launches so far (all host threads), successful or not. */
unsigned long long simt_launch_count(void);
/* Device allocations currently live. */
size_t simt_live_allocations(void);

/* The message of the last failed launch or runtime call on this host thread. */
const char *simt_last_message(void);

/* Stack bytes of each emulated GPU thread, rounded up to whole pages; applies
 * to stacks created afterwards. Default 256 KiB, or DETPOST_SIMT_STACK_KB. */
void simt_set_stack_size(size_t bytes);

#ifdef __cplusplus
}
#endif

#endif
