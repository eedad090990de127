/*
 * The C face of CUDA graph capture for the tests (see graph.h): compiled by
 * nvcc against the CUDA runtime in the cuda flavor and by g++ against the
 * emulator's runtime in the sim flavor, so one test exercises both.
 */
#include "graph.h"

#include <stdio.h>

#ifdef DETPOST_SIM
#include "../cuda/simt/simt.h"
#else
#include <cuda_runtime.h>
#endif

extern "C" void *t_stream_create(void)
{
    cudaStream_t s = nullptr;
    if (cudaStreamCreate(&s) != cudaSuccess) return nullptr;
    return static_cast<void *>(s);
}

extern "C" void t_stream_destroy(void *stream)
{
    if (stream) (void)cudaStreamDestroy(static_cast<cudaStream_t>(stream));
}

extern "C" int t_capture_begin(void *stream)
{
    return (int)cudaStreamBeginCapture(static_cast<cudaStream_t>(stream), cudaStreamCaptureModeGlobal);
}

extern "C" int t_capture_end(void *stream, void **exec)
{
    *exec = nullptr;
    cudaGraph_t graph = nullptr;
    cudaError_t err = cudaStreamEndCapture(static_cast<cudaStream_t>(stream), &graph);
    if (err != cudaSuccess) return (int)err;
    cudaGraphExec_t instance = nullptr;
    err = cudaGraphInstantiate(&instance, graph, 0);
    (void)cudaGraphDestroy(graph);
    if (err == cudaSuccess) *exec = static_cast<void *>(instance);
    return (int)err;
}

extern "C" int t_capture_status(void *stream)
{
    cudaStreamCaptureStatus status = cudaStreamCaptureStatusNone;
    if (cudaStreamIsCapturing(static_cast<cudaStream_t>(stream), &status) != cudaSuccess) return -1;
    return status == cudaStreamCaptureStatusNone ? 0 : status == cudaStreamCaptureStatusActive ? 1 : 2;
}

extern "C" int t_graph_launch(void *exec, void *stream)
{
    return (int)cudaGraphLaunch(static_cast<cudaGraphExec_t>(exec), static_cast<cudaStream_t>(stream));
}

extern "C" void t_graph_destroy(void *exec)
{
    if (exec) (void)cudaGraphExecDestroy(static_cast<cudaGraphExec_t>(exec));
}

extern "C" const char *t_cuda_error(int err)
{
#ifdef DETPOST_SIM
    static char text[1024];
    snprintf(text, sizeof text, "%s: %s", cudaGetErrorName(static_cast<cudaError_t>(err)),
             err == 0 ? "" : simt_last_message());
    return text;
#else
    return cudaGetErrorName(static_cast<cudaError_t>(err));
#endif
}
