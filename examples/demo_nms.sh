#!/usr/bin/env bash
# NMS of COCO-format detections (examples/detections.json, three images), per
# image and category, on the CPU and (emulated) CUDA backends.
set -euo pipefail
tool=$1
sim=${2:-}
here=$(cd "$(dirname "$0")" && pwd)
tmp=${TMPDIR:-/tmp}
echo "== detpost nms examples/detections.json --method hard --iou 0.5 (boxes as [x1, y1, x2, y2])"
"$tool" nms "$here/detections.json" --method hard --iou 0.5 --print -o "$tmp/detpost_nms_hard.json"
echo "-- written to $tmp/detpost_nms_hard.json:"
cat "$tmp/detpost_nms_hard.json"
echo
echo "== class-agnostic: the person box that is also labelled dog (image 1) now suppresses it"
"$tool" nms "$here/detections.json" --class-agnostic --print | sed -n '/^image 1/,/^image 2/p' | sed '$d'
echo
echo "== gaussian soft-NMS (sigma 0.5): overlapping boxes stay, with decayed scores"
"$tool" nms "$here/detections.json" --method gaussian --sigma 0.5 --print | sed -n '/^image 2/,/^image 3/p' | sed '$d'
echo
echo "== score threshold 0.5 and at most 2 detections per image"
"$tool" nms "$here/detections.json" --score 0.5 --max-per-image 2
if [ -n "$sim" ]; then
    echo
    echo "== the same hard NMS on the cuda backend (emulated kernels): must equal the cpu result"
    "$sim" nms "$here/detections.json" --method hard --iou 0.5 --backend cuda -o "$tmp/detpost_nms_cuda.json"
    if cmp -s "$tmp/detpost_nms_hard.json" "$tmp/detpost_nms_cuda.json"; then
        echo "identical to the cpu output"
    else
        echo "DIFFERENT from the cpu output:"; diff "$tmp/detpost_nms_hard.json" "$tmp/detpost_nms_cuda.json" || true
        exit 1
    fi
    "$sim" nms "$here/detections.json" --method gaussian --backend cuda -o "$tmp/detpost_nms_cuda_soft.json"
    "$tool" nms "$here/detections.json" --method gaussian -o "$tmp/detpost_nms_cpu_soft.json"
    cmp -s "$tmp/detpost_nms_cpu_soft.json" "$tmp/detpost_nms_cuda_soft.json" && echo "gaussian soft-NMS: identical too"
fi
echo
echo "-- a bad parameter is reported with its name:"
"$tool" nms "$here/detections.json" --iou 1.5 2>&1 || echo "(exit status $?)"
