/*
 * CUDA graph capture for the suites of the sim and cuda flavors: plain C over
 * the CUDA runtime (the emulator's in the sim flavor). Streams and graphs are
 * opaque pointers; calls return the runtime's error code (0 = success).
 */
#ifndef DETPOST_TEST_GRAPH_H
#define DETPOST_TEST_GRAPH_H

#ifdef __cplusplus
extern "C" {
#endif

/* A new stream (cudaStreamCreate), or NULL when the runtime refuses one. */
void *t_stream_create(void);
void t_stream_destroy(void *stream);
/* cudaStreamBeginCapture in global mode, the strictest. */
int t_capture_begin(void *stream);
/* Ends the capture and instantiates its graph into *exec (NULL on failure). */
int t_capture_end(void *stream, void **exec);
/* 0 not capturing, 1 capturing, 2 capturing but invalidated; -1 when the query fails. */
int t_capture_status(void *stream);
int t_graph_launch(void *exec, void *stream);
void t_graph_destroy(void *exec);
/* The runtime's name for an error code, and its last message where it keeps one. */
const char *t_cuda_error(int err);

#ifdef __cplusplus
}
#endif

#endif
