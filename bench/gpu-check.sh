#!/usr/bin/env bash
# The whole GPU check in one run, on a machine with an NVIDIA GPU, the CUDA
# driver and toolkit, and build/gpu copied from `make gpu-bundle`:
#   1. the cuda test suite,
#   2. the benchmark (CUDA events, medians), and again with each call
#      captured into a CUDA graph and the graph launched,
#   3. bench/vs_torchvision.py beside torchvision's CUDA ops (where it imports),
#   4. compute-sanitizer memcheck and racecheck over the suite (where the tool works).
# Everything is written under $RESULTS_DIR (default build/gpu-results); a short
# table comes last. Meant to finish in under 6 minutes: the sanitizer passes
# are skipped once BUDGET seconds (default 420) have gone, so that a slow run
# still ends within a 10-minute limit with everything before them written.
set -u
source "$(dirname "$0")/gpu-env.sh"
R=${RESULTS_DIR:-build/gpu-results}
mkdir -p "$R"
summary=()
add() { summary+=("$(printf '%-34s %s' "$1" "$2")"); }
t0=$(date +%s)
elapsed() { echo $(($(date +%s) - t0)); }
export PYTHONUNBUFFERED=1 # rows reach the log as they are measured, even if a timeout stops the script


{
    date -u +"date: %Y-%m-%dT%H:%M:%SZ"
    nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv,noheader 2>&1
    "$G/detpost" version
    "$G/detpost" devices
} | tee "$R/machine.txt"
card=$(nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null | head -1)
add "card" "${card:-unknown}"

echo "== cuda test suite"
timeout -k 10 180 "$G/detpost_tests" --jobs 12 >"$R/tests.log" 2>&1
rc=$?
synth=$(grep -a "Synthesis" "$R/tests.log" | tail -1 | sed 's/.*Synthesis: //')
tail -5 "$R/tests.log"
add "cuda suite (rc $rc)" "${synth:-no synthesis line}"

echo "== benchmark"
timeout -k 10 90 "$G/detpost_bench" --backend cuda --out "$R/bench.json" | tee "$R/bench.txt"
add "benchmark (rc ${PIPESTATUS[0]})" "$(($(wc -l <"$R/bench.txt") - 1)) cases, bench.json"
echo "== benchmark, each call launched as a captured CUDA graph"
timeout -k 10 90 "$G/detpost_bench" --backend cuda --graph --out "$R/bench-graph.json" | tee "$R/bench-graph.txt"
add "benchmark as graphs (rc ${PIPESTATUS[0]})" "$(($(wc -l <"$R/bench-graph.txt") - 1)) cases, bench-graph.json"

if python3 -c "import torch, torchvision" >/dev/null 2>&1; then
    echo "== beside torchvision"
    timeout -k 10 160 python3 bench/vs_torchvision.py --lib "$G/lib/libdetpost.so" --out "$R/vs_torchvision.json" \
        >"$R/vs_torchvision.txt" 2>&1
    rc=$?
    sed '/^| op/,$d' "$R/vs_torchvision.txt" # the table itself comes last
    add "vs torchvision (rc $rc)" "vs_torchvision.json"
else
    add "vs torchvision" "skipped: python3 cannot import torchvision"
fi

if command -v compute-sanitizer >/dev/null 2>&1; then
    for tool in memcheck racecheck; do
        if [ "$(elapsed)" -gt "${BUDGET:-420}" ]; then
            add "compute-sanitizer $tool" "skipped: $(elapsed) s gone of a ${BUDGET:-420} s budget"
            continue
        fi
        echo "== compute-sanitizer --tool $tool"
        timeout -k 10 "${SANITIZER_TIMEOUT:-150}" compute-sanitizer --tool "$tool" --target-processes all --error-exitcode 99 \
            "$G/detpost_tests" --jobs 8 --filter "${SANITIZER_FILTER:-*/*}" >"$R/sanitizer-$tool.log" 2>&1
        rc=$?
        errors=$(grep -aE "ERROR SUMMARY: [0-9]+" "$R/sanitizer-$tool.log" | grep -v "ERROR SUMMARY: 0 " | head -3 | tr '\n' ' ')
        tail -3 "$R/sanitizer-$tool.log"
        case $rc in
        0) add "compute-sanitizer $tool" "clean" ;;
        124) add "compute-sanitizer $tool" "timed out (see sanitizer-$tool.log)" ;;
        *) add "compute-sanitizer $tool" "rc $rc ${errors:-see sanitizer-$tool.log}" ;;
        esac
    done
else
    add "compute-sanitizer" "not installed"
fi

echo
echo "== summary ($(elapsed) s)"
printf '%s\n' "${summary[@]}"
if [ -f "$R/vs_torchvision.txt" ]; then
    echo
    sed -n '/^| op/,$p' "$R/vs_torchvision.txt"
fi
