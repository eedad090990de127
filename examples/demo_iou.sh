#!/usr/bin/env bash
# Overlap matrices of two small box lists, on the CPU and (emulated) CUDA backends.
set -euo pipefail
tool=$1
sim=${2:-}
here=$(cd "$(dirname "$0")" && pwd)
echo "== detpost version / devices"
"$tool" version
"$tool" devices
[ -n "$sim" ] && "$sim" devices
echo
echo "== detpost iou examples/boxes_a.json examples/boxes_b.json (rows: a, columns: b)"
echo "-- a:"; cat "$here/boxes_a.json"
echo "-- b:"; cat "$here/boxes_b.json"
for mode in iou giou diou; do
    echo "-- mode $mode, cpu backend:"
    "$tool" iou "$here/boxes_a.json" "$here/boxes_b.json" --mode "$mode"
done
if [ -n "$sim" ]; then
    echo "-- mode iou, cuda backend (emulated kernels), must equal the cpu result above:"
    "$sim" iou "$here/boxes_a.json" "$here/boxes_b.json" --backend cuda
fi
echo "-- a malformed file is reported with the byte offset:"
printf '[[0, 0, 1, 1], [2, 2, oops]]' > "${TMPDIR:-/tmp}/detpost_bad.json"
"$tool" iou "${TMPDIR:-/tmp}/detpost_bad.json" "$here/boxes_b.json" || echo "(exit status $?)"
