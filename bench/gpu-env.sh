# Sourced by the GPU scripts in bench/: the repository root, the bundle
# (GPU_DIR, default build/gpu) and the library paths and test data its
# binaries need. Stops with a message when the bundle is missing, or when
# detpost sees no CUDA device (every GPU test would skip and every timing be
# absent while each step still answered 0).
here=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$here"
G=${GPU_DIR:-build/gpu}
if [ ! -x "$G/detpost_tests" ]; then
    echo "$(basename "$0"): $G/detpost_tests is missing; run 'make gpu-bundle' first" >&2
    exit 2
fi
# The binaries find the bundle's libraries through their RPATH ($ORIGIN/lib);
# only CUDA's own go on the search path, for libdetpost.so loaded by python
# (the bundle's libffi or libz must not replace the python's own).
cuda_libs=""
for d in /usr/local/cuda/lib64 /usr/local/cuda/lib /usr/local/cuda/targets/x86_64-linux/lib; do
    [ -d "$d" ] && cuda_libs="${cuda_libs:+$cuda_libs:}$d"
done
export LD_LIBRARY_PATH="$cuda_libs${LD_LIBRARY_PATH:+${cuda_libs:+:}$LD_LIBRARY_PATH}"
export DETPOST_TEST_DATA="$here/tests/data"
devices=$("$G/detpost" devices --count 2>/dev/null || echo 0)
if [ "${devices:-0}" -lt 1 ]; then
    echo "$(basename "$0"): detpost sees no CUDA device (driver, runtime or permissions); nothing to measure" >&2
    "$G/detpost" devices >&2
    exit 3
fi
