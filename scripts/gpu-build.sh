#!/usr/bin/env bash
# Builds, on a development machine with Rust (no GPU needed), everything scripts/gpu-check.sh
# runs on a GPU machine that has no Rust toolchain and no network, and puts it in
# target/gpu-bundle/ (inside the repository, whatever CARGO_TARGET_DIR says) with stable names:
#   deq              the CLI (for `deq bench --device cuda`)
#   gpu_train        examples/gpu_train.rs
#   tests/<name>     the test binaries that exercise the GPU: gpu_parity_elementwise,
#                    gpu_parity_shape, gpu_parity_nn, gpu_parity_matmul (every op and VJP),
#                    gpu_solvers (solvers and implicit gradients), device (the device layer,
#                    and the report of the device, its kernels and the CUDA libraries loaded)
#   glibc.txt        the newest glibc symbol version the binaries need (the check compares it
#                    with the GPU machine's glibc)
# Binaries are stripped of debug info so that the bundle and the working tree stay under the
# 64 MiB a device run can carry. Cargo's output and errors are shown as they come; any failing
# step stops the script with a non-zero status.
set -euo pipefail
cd "$(dirname "$0")/.."
target=${CARGO_TARGET_DIR:-target}
out=target/gpu-bundle
rm -rf "$out"
mkdir -p "$out/tests"

cargo build --release --bin deq --example gpu_train
strip -o "$out/deq" "$target/release/deq"
strip -o "$out/gpu_train" "$target/release/examples/gpu_train"

# `cargo test --no-run --message-format=json` prints one JSON line per artifact on stdout
# (its progress and any compile error go to stderr, shown as usual); keep the GPU tests.
wanted="gpu_parity_elementwise gpu_parity_shape gpu_parity_nn gpu_parity_matmul gpu_solvers device"
list=$(mktemp)
trap 'rm -f "$list"' EXIT
cargo test --release --no-run --message-format=json -p deq-cuda -p deq-autograd -p deq-solvers |
    python3 -c '
import json, sys
wanted = set(sys.argv[1].split())
for line in sys.stdin:
    if not line.startswith("{"):
        continue
    msg = json.loads(line)
    target = msg.get("target", {})
    exe = msg.get("executable")
    if exe and "test" in target.get("kind", []) and target.get("name") in wanted:
        print(target["name"], exe)
' "$wanted" >"$list"
for name in $wanted; do
    exe=$(awk -v n="$name" '$1 == n { print $2 }' "$list")
    if [ -z "$exe" ]; then
        echo "error: cargo built no test binary named $name" >&2
        exit 1
    fi
    strip -o "$out/tests/$name" "$exe"
    echo "bundled test $name"
done

# The newest GLIBC_x.y symbol version any bundled binary needs (grep's "no match", status 1,
# is not an error here; any other failure is).
for b in "$out/deq" "$out/gpu_train" "$out"/tests/*; do
    objdump -T "$b" | { grep -o 'GLIBC_[0-9.]*' || [ $? -eq 1 ]; }
done | sort -uV | tail -n 1 | sed 's/GLIBC_//' >"$out/glibc.txt"
echo "the bundle needs glibc >= $(cat "$out/glibc.txt") (this machine: $(ldd --version | head -n 1))"

du -sh "$out"
echo "bundle ready: run scripts/gpu-check.sh 1, then scripts/gpu-check.sh 2, on the GPU machine" \
    "(with the device tool: carry target/gpu-bundle)"
