#!/usr/bin/env bash
# The GPU check, for a machine with an NVIDIA GPU and a CUDA 13 driver but no Rust toolchain
# and no network, after scripts/gpu-build.sh has filled target/gpu-bundle/ on a build machine.
# It runs in two calls, each at most 3 minutes (the sum of its steps' time limits, checked
# below), so that after a fix one call can be rerun within a short device lease:
#
#   scripts/gpu-check.sh 1   the device, nvcc, the CUDA libraries found and loaded (paths and
#                            versions), whether the bundled binaries run on this system's
#                            libraries (glibc, ldd), then every GPU test: the device layer,
#                            GPU-vs-CPU parity of every op and VJP, the solvers.      <= 180 s
#   scripts/gpu-check.sh 2   W1-W3 on the GPU (deq bench --device cuda) and two minutes of
#                            gpu_train (DEQ-Transformer on PTB): tokens/s, memory, ppl. <= 180 s
#
# DEQ_REQUIRE_GPU=1 is set, so no GPU test skips: a device that does not open fails them with
# the reason. Libraries are searched beside nvcc (../lib64, ../targets/*/lib),
# in /usr/local/nvidia/lib64, $CUDA_HOME and /usr/local/cuda, then the system's.
# Results go to ${OUT:-target/gpu-check}/: gpu-check-N.tar.gz (every log, and the bench
# JSON) and summary-N.txt, the summary that also ends this script's output. The exit status
# is 0 only when every step passed.
set -uo pipefail # not -e: a failing step is recorded and the next one still runs
self=$(readlink -f "$0")
cd "$(dirname "$self")/.." || exit 2
bundle=target/gpu-bundle
budget=180 # seconds per call: the sum of the step limits below, grace included
grace=2    # seconds `timeout` waits after SIGTERM before SIGKILL

lib_dirs=()
add_dirs() {
    local d
    for d in "$@"; do
        [ -d "$d" ] && lib_dirs+=("$d")
    done
    return 0
}
find_cuda_libraries() {
    local nvcc_path root
    if nvcc_path=$(command -v nvcc) || nvcc_path=$(ls /usr/local/cuda/bin/nvcc 2>/dev/null); then
        root=$(dirname "$(dirname "$(readlink -f "$nvcc_path")")")
        add_dirs "$root/lib64" "$root"/targets/*/lib
    fi
    add_dirs /usr/local/nvidia/lib64 /usr/local/nvidia/lib
    if [ -n "${CUDA_HOME:-}" ]; then
        add_dirs "$CUDA_HOME/lib64" "$CUDA_HOME"/targets/*/lib
    fi
    add_dirs /usr/local/cuda/lib64 /usr/local/cuda/targets/*/lib
    local joined
    joined=$(printf '%s\n' "${lib_dirs[@]}" | awk '!seen[$0]++' | paste -sd: -)
    case ":${LD_LIBRARY_PATH:-}:" in
        *":$joined:"*) ;; # already there (the facts step inherits it)
        *) [ -n "$joined" ] && export LD_LIBRARY_PATH="$joined${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}" ;;
    esac
}

# The facts of the machine, printed by `gpu-check.sh facts 1|2` under a time limit.
facts() {
    echo "date: $(date -u '+%Y-%m-%d %H:%M:%S UTC'); host $(uname -n), kernel $(uname -r)"
    if command -v nvidia-smi >/dev/null; then
        echo "gpu: $(nvidia-smi --query-gpu=name,driver_version,memory.total,compute_cap \
            --format=csv,noheader 2>&1)"
    else
        echo "gpu: nvidia-smi not found"
    fi
    if command -v nvcc >/dev/null; then
        echo "nvcc: $(nvcc --version | tail -n 2 | paste -sd' ' -)"
    else
        echo "nvcc: not on PATH"
    fi
    [ "$1" = 2 ] && return 0
    echo "LD_LIBRARY_PATH=${LD_LIBRARY_PATH:-}"
    local lib d f
    for lib in libcuda.so libnvrtc.so libcublas.so; do
        for d in "${lib_dirs[@]}"; do
            for f in "$d/$lib"*; do
                [ -e "$f" ] && echo "found: $f$( [ -L "$f" ] && echo " -> $(readlink "$f")")"
            done
        done
        ldconfig -p 2>/dev/null | grep -F "$lib" | sed 's/^\s*/ldconfig: /'
    done
    local need have
    need=$(cat "$bundle/glibc.txt" 2>/dev/null)
    have=$(ldd --version 2>/dev/null | head -n 1 | grep -o '[0-9]\+\.[0-9]\+$')
    if [ -n "$need" ] && [ -n "$have" ] &&
        [ "$(printf '%s\n%s\n' "$need" "$have" | sort -V | tail -n 1)" = "$have" ]; then
        echo "glibc: $have here, the bundle needs >= $need: OK"
    else
        echo "glibc: ${have:-unknown} here, the bundle needs >= ${need:-unknown}: the binaries" \
            "built there do not run here; rebuild the bundle on a machine (or a container of" \
            "this image with Rust) whose glibc is not newer than ${have:-the one here}"
    fi
    local b
    for b in "$bundle/deq" "$bundle/gpu_train" "$bundle"/tests/*; do
        echo "ldd $b:"
        ldd "$b" 2>&1 | sed 's/^/    /'
        if ldd "$b" 2>&1 | grep -q 'not found'; then
            echo "NOT RUNNABLE: $b needs libraries this system lacks (above): rebuild the" \
                "bundle on a machine whose system libraries are not newer than this one's"
        fi
    done
    echo "device report (tests/device, which opens cuda:0 and compiles the kernels):"
    "$bundle/tests/device" opening_reports_the_device_or_why_there_is_none --exact \
        --nocapture --test-threads=1 2>&1
}

if [ "${1:-}" = facts ]; then
    find_cuda_libraries
    facts "${2:-1}"
    exit 0
fi

part=${1:-}
if [ "$part" != 1 ] && [ "$part" != 2 ]; then
    echo "usage: scripts/gpu-check.sh 1|2   (1: device facts and GPU tests; 2: W1-W3 and gpu_train)" >&2
    exit 2
fi
for f in deq gpu_train glibc.txt tests/device; do
    if [ ! -e "$bundle/$f" ]; then
        echo "error: $bundle/$f is missing: run scripts/gpu-build.sh on a machine with Rust first" >&2
        exit 2
    fi
done
out=${OUT:-target/gpu-check}
mkdir -p "$out"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
find_cuda_libraries
export DEQ_REQUIRE_GPU=1 RUST_BACKTRACE=1

# name | time limit (s) | log file | command...
if [ "$part" = 1 ]; then
    steps=(
        "facts|20|facts.log|$self facts 1"
        "test device|20|test-device.log|$bundle/tests/device --test-threads=1 --nocapture"
        "test gpu_parity_elementwise|20|test-gpu_parity_elementwise.log|$bundle/tests/gpu_parity_elementwise --test-threads=1 --nocapture"
        "test gpu_parity_shape|25|test-gpu_parity_shape.log|$bundle/tests/gpu_parity_shape --test-threads=1 --nocapture"
        "test gpu_parity_nn|30|test-gpu_parity_nn.log|$bundle/tests/gpu_parity_nn --test-threads=1 --nocapture"
        "test gpu_parity_matmul|20|test-gpu_parity_matmul.log|$bundle/tests/gpu_parity_matmul --test-threads=1 --nocapture"
        "test gpu_solvers|30|test-gpu_solvers.log|$bundle/tests/gpu_solvers --test-threads=1 --nocapture"
    )
else
    steps=(
        "facts|8|facts.log|$self facts 2"
        "deq bench --device cuda (W1-W3)|22|bench.log|$bundle/deq bench --device cuda --reps 1 --json $work/bench-gpu.json"
        "gpu_train, ${GPU_TRAIN_MINUTES:-2} minutes|144|gpu_train.log|$bundle/gpu_train --device cuda --minutes ${GPU_TRAIN_MINUTES:-2}"
    )
fi
total=0
for s in "${steps[@]}"; do
    IFS='|' read -r _ limit _ _ <<<"$s"
    total=$((total + limit + grace))
done
if [ "$total" -gt "$budget" ]; then
    echo "error: the steps of call $part may take $total s, more than $budget s" >&2
    exit 2
fi
echo "gpu-check call $part: ${#steps[@]} steps, at most $total s"

summary="$work/summary-$part.txt"
failed=0
declare -A status # log file -> exit status
: >"$work/verdicts"
: >"$work/excerpts"
for s in "${steps[@]}"; do
    IFS='|' read -r name limit log cmd <<<"$s"
    start=$SECONDS
    # shellcheck disable=SC2086 # the command is split into words on purpose
    timeout -k "$grace" "$limit" $cmd >"$work/$log" 2>&1
    rc=$?
    status[$log]=$rc
    case $rc in
        0) verdict=PASS ;;
        124 | 137) verdict="TIMEOUT (${limit}s)" ;;
        *) verdict="FAIL (exit $rc)" ;;
    esac
    [ $rc -ne 0 ] && failed=1
    line=$(printf '%-36s %-14s %4ss  %s' "$name" "$verdict" $((SECONDS - start)) "$log")
    echo "$line" | tee -a "$work/verdicts"
    if [ $rc -ne 0 ]; then
        # What failed: each panic's message (up to its backtrace), or the log's last lines.
        {
            echo "---- $name: $verdict"
            awk '/panicked at/ { on = 1 } /^stack backtrace:|^note: run with/ { on = 0 } on' \
                "$work/$log" | head -n 20
            grep -q 'panicked at' "$work/$log" || tail -n 10 "$work/$log"
        } >>"$work/excerpts"
    fi
done

{
    echo "==================== gpu-check call $part: summary ===================="
    cat "$work/verdicts"
    if [ "$part" = 1 ]; then
        grep -E '^(gpu|nvcc|found|ldconfig|glibc|NOT RUNNABLE):' "$work/facts.log"
        # The device test's lines (the first may follow the test's name on the same line).
        grep -oE '(cuda:0 is|cuda:0 did not open:|kernels:|CUDA driver:|NVRTC:|cuBLAS:|loaded( CUDA libraries)?:) .*' \
            "$work/facts.log"
        grep -h 'cases match the CPU' "$work"/test-*.log
    else
        grep -E '^(gpu|nvcc):' "$work/facts.log"
        # The bench's table (on failure its last lines are among the excerpts below).
        [ "${status[bench.log]}" = 0 ] && grep -vE '^\s*$' "$work/bench.log" | tail -n 30
        grep -E '^(gpu_train|stopping|trained|peak GPU|evaluated)' "$work/gpu_train.log"
    fi
    cat "$work/excerpts"
    if [ $failed -eq 0 ]; then echo "call $part: every step passed"; else echo "call $part: FAILED"; fi
} >"$summary"
tar -czf "$out/gpu-check-$part.tar.gz" -C "$work" .
cp "$summary" "$out/summary-$part.txt"
echo
cat "$summary"
echo "results: $out/gpu-check-$part.tar.gz, $out/summary-$part.txt"
exit $failed
