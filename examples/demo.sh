#!/usr/bin/env bash
# make demo: runs every examples/demo_*.sh in name order.
#   $1: the cpu build's detpost tool; $2 (optional): the sim build's tool,
#   whose CUDA backend runs the kernels on the CPU through the emulator.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
for script in "$here"/demo_*.sh; do
    bash "$script" "$@"
    echo
done
