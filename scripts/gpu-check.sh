#!/usr/bin/env bash
# The GPU check: run on a machine with an NVIDIA GPU and a CUDA 13 driver, no Rust toolchain
# and no network, after scripts/gpu-build.sh has filled target/gpu-bundle/ on a build machine.
# Takes under 8 minutes and ends with a summary:
#   1. the device (nvidia-smi),
#   2. GPU-vs-CPU parity of every op and VJP, the solvers and the device layer
#      (target/gpu-bundle/tests/*: gpu_parity_elementwise, gpu_parity_shape, gpu_parity_nn,
#      gpu_parity_matmul, gpu_solvers, device, kernels_compile),
#   3. the benchmark workloads W1-W3 on the GPU (target/gpu-bundle/deq bench --device cuda),
#   4. two minutes of the GPU training example (target/gpu-bundle/gpu_train --minutes 2).
# Logs and bench JSON go to ${OUT:-target/gpu-check}/.
set -u
cd "$(dirname "$0")/.."
bundle=target/gpu-bundle
out=${OUT:-target/gpu-check}
mkdir -p "$out"
if [ ! -x "$bundle/deq" ]; then
    echo "error: $bundle/deq is missing: run scripts/gpu-build.sh on a machine with Rust first" >&2
    exit 2
fi

# NVRTC and cuBLAS come from the CUDA toolkit; the driver library from the system.
for d in /usr/local/cuda/lib64 /usr/local/cuda/targets/x86_64-linux/lib ${CUDA_HOME:-/nonexistent}/lib64; do
    [ -d "$d" ] && export LD_LIBRARY_PATH="$d:${LD_LIBRARY_PATH:-}"
done

summary=()
step() { # name, timeout seconds, log file, command...
    local name=$1 limit=$2 log=$3
    shift 3
    local start=$SECONDS
    timeout "$limit" "$@" >"$log" 2>&1
    local rc=$?
    local verdict=PASS
    [ $rc -ne 0 ] && verdict="FAIL (exit $rc)"
    [ $rc -eq 124 ] && verdict="TIMEOUT (${limit}s)"
    [ $rc -eq 0 ] && grep -q "skipped" "$log" && verdict="SKIPPED (no GPU)"
    summary+=("$(printf '%-34s %-16s %4ss  %s' "$name" "$verdict" $((SECONDS - start)) "$log")")
    echo "== $name: $verdict"
    tail -n 25 "$log"
}

echo "== device"
nvidia-smi --query-gpu=name,driver_version,memory.total,compute_cap --format=csv,noheader \
    | tee "$out/device.txt"

for t in "$bundle"/tests/*; do
    name=$(basename "$t")
    step "test $name" 180 "$out/test-$name.log" "$t" --test-threads=1 --nocapture
done

step "deq bench --device cuda (W1-W3)" 200 "$out/bench.log" \
    "$bundle/deq" bench --device cuda --reps 5 --json "$out/bench-gpu.json"

step "gpu_train, 2 minutes" 230 "$out/gpu_train.log" \
    "$bundle/gpu_train" --device cuda --minutes 2

echo
echo "==================== summary ===================="
echo "device: $(cat "$out/device.txt" 2>/dev/null)"
printf '%s\n' "${summary[@]}"
echo "parity cases:"
grep -h "cases match the CPU\|cases differ from the CPU" "$out"/test-*.log || true
grep -h "^W[123]\|^naive\|^anderson\|^broyden\|^DEQ\|^unrolled\|^step\|peak memory" "$out/bench.log" || true
grep -h "^trained\|^peak GPU" "$out/gpu_train.log" || true
