#!/usr/bin/env bash
# NMS on a GPU in about a minute, after `make gpu-bundle`: the cuda NMS tests,
# the NMS benchmark cases, bench/vs_torchvision.py's NMS rows, and an ncu
# breakdown (time per kernel, summed over one call) of hard and gaussian
# soft-NMS of 10,000 boxes. Writes under $RESULTS_DIR (default
# build/nms-profile); the per-kernel tables come last.
set -u
source "$(dirname "$0")/gpu-env.sh"
R=${RESULTS_DIR:-build/nms-profile}
mkdir -p "$R"
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader 2>&1 | tee "$R/machine.txt"

echo "== cuda NMS tests"
timeout 150 "$G/detpost_tests" --filter 'nms/*' --jobs 12 >"$R/tests.log" 2>&1
tail -2 "$R/tests.log"

echo "== benchmark"
timeout 60 "$G/detpost_bench" --backend cuda --filter nms --reps 30 | tee "$R/bench.txt"
timeout 60 "$G/detpost_bench" --backend cuda --filter nms --reps 30 --graph | tail -n +2 | tee -a "$R/bench.txt"

if python3 -c "import torch, torchvision" >/dev/null 2>&1; then
    echo "== beside torchvision"
    PYTHONUNBUFFERED=1 timeout 120 python3 bench/vs_torchvision.py --lib "$G/lib/libdetpost.so" --filter nms --reps 100 \
        >"$R/vs_torchvision.txt" 2>&1
    sed -n '/^| op/,$p' "$R/vs_torchvision.txt"
fi

if command -v ncu >/dev/null 2>&1; then
    for method in hard gaussian; do
        echo "== ncu: $method NMS of 10000 boxes"
        timeout 90 ncu --clock-control none --metrics gpu__time_duration.sum --csv \
            "$G/detpost_bench" --backend cuda --filter "nms_$method 10000\$" --reps 2 >"$R/ncu-$method.csv" 2>"$R/ncu-$method.err"
        python3 bench/ncu_calls.py "$R/ncu-$method.csv" nms_keys
    done
fi
