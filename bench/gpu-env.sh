# Sourced by the GPU scripts in bench/: the repository root, the bundle
# (GPU_DIR, default build/gpu) and the library paths and test data its
# binaries need. Stops with a message when the bundle is missing.
here=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$here"
G=${GPU_DIR:-build/gpu}
if [ ! -x "$G/detpost_tests" ]; then
    echo "$(basename "$0"): $G/detpost_tests is missing; run 'make gpu-bundle' first" >&2
    exit 2
fi
cuda_libs=""
for d in /usr/local/cuda/lib64 /usr/local/cuda/lib /usr/local/cuda/targets/x86_64-linux/lib; do
    [ -d "$d" ] && cuda_libs="$cuda_libs:$d"
done
export LD_LIBRARY_PATH="$G/lib$cuda_libs${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
export DETPOST_TEST_DATA="$here/tests/data"
