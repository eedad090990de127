#!/usr/bin/env bash
# Cascade R-CNN stage resampling: three stages on synthetic images, on the CPU
# backend and (with the sim tool) the emulated CUDA kernels, which must print
# the same table.
set -euo pipefail
tool=$1
sim=${2:-}
out=${TMPDIR:-/tmp}/detpost_cascade
echo "== detpost cascade: the IoU of the proposals rises stage after stage"
echo "   (regression error shrinking as Cascade R-CNN measured it; each stage resamples at 0.5, 0.6, 0.7)"
"$tool" cascade --seed 1 | tee "$out.cpu"
if [ -n "$sim" ]; then
    echo
    echo "-- the same on the cuda backend (emulated kernels):"
    "$sim" cascade --seed 1 --backend cuda > "$out.cuda"
    head -n 1 "$out.cuda"
    if diff <(tail -n +2 "$out.cpu") <(tail -n +2 "$out.cuda") > /dev/null; then
        echo "   every line after the first equals the cpu backend's output above"
    else
        echo "   the cuda backend printed something else:"
        diff <(tail -n +2 "$out.cpu") <(tail -n +2 "$out.cuda") || true
        exit 1
    fi
fi
rm -f "$out.cpu" "$out.cuda"
