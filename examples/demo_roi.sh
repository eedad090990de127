#!/usr/bin/env bash
# RoI Align and RoI Pool of a small feature map, on the CPU and (emulated) CUDA backends.
set -euo pipefail
tool=$1
sim=${2:-}
here=$(cd "$(dirname "$0")" && pwd)
map="$here/roi_map.json"
echo "== detpost roi-align examples/roi_map.json (output: [roi][channel][bin row][bin column])"
cat "$map"
echo "-- RoI Align, mean of 2 x 2 bilinear samples per bin, pixel-centre aligned (cpu backend)."
echo "   Channel 0 is linear, so an inside bin is the map at its centre; samples off the map count 0:"
"$tool" roi-align "$map"
echo "-- max mode (the largest sample of each bin):"
"$tool" roi-align "$map" --mode max
echo "-- legacy alignment (RoIs at least 1 pixel) and adaptive sampling (ceil(roi size / bins) per axis):"
"$tool" roi-align "$map" --aligned 0 --sampling-ratio 0
echo "-- RoI Pool (rounded corners, legacy +1 size; argmax = y * 6 + x, -1 for an empty bin):"
"$tool" roi-align "$map" --op pool
if [ -n "$sim" ]; then
    echo "-- cuda backend (emulated kernels) with NHWC float16 storage, which holds these values exactly:"
    cpu_out=$("$tool" roi-align "$map")
    gpu_out=$("$sim" roi-align "$map" --backend cuda --layout nhwc --dtype f16)
    echo "$gpu_out"
    if [ "$cpu_out" = "$gpu_out" ]; then
        echo "   identical to the cpu result above"
    else
        echo "   DIFFERS from the cpu result"
        exit 1
    fi
fi
echo "-- a RoI of image 3 in a batch of one is refused, naming the row:"
bad="${TMPDIR:-/tmp}/detpost_roi_bad.json"
sed 's/\[0, 2, 2, 2, 2\]/[3, 2, 2, 2, 2]/' "$map" > "$bad"
"$tool" roi-align "$bad" || echo "(exit status $?)"
