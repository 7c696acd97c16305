#!/usr/bin/env bash
# Builds, on a development machine with Rust (no GPU needed), everything scripts/gpu-check.sh
# runs on a GPU machine that has no Rust toolchain and no network, and puts it in
# target/gpu-bundle/ with stable names:
#   deq            the CLI (for `deq bench --device cuda`)
#   gpu_train      examples/gpu_train.rs
#   tests/<name>   the test binaries that exercise the GPU (parity of every op, solvers,
#                  the device layer, NVRTC compilation of the kernels)
# Binaries are stripped of debug info so the bundle stays small enough to copy.
set -euo pipefail
cd "$(dirname "$0")/.."
out=target/gpu-bundle
rm -rf "$out"
mkdir -p "$out/tests"

cargo build --release --bin deq --example gpu_train
strip -o "$out/deq" target/release/deq
strip -o "$out/gpu_train" target/release/examples/gpu_train

# `cargo test --no-run` prints one JSON line per built test binary; keep the GPU ones.
cargo test --release --no-run --message-format=json \
    -p deq-cuda -p deq-autograd -p deq-solvers 2>/dev/null |
    python3 -c '
import json, sys
wanted = ("gpu_parity_", "gpu_solvers", "device", "kernels_compile")
for line in sys.stdin:
    msg = json.loads(line)
    exe = msg.get("executable")
    name = msg.get("target", {}).get("name", "")
    if exe and "test" in msg.get("target", {}).get("kind", []) and name.startswith(wanted):
        print(name, exe)
' | while read -r name exe; do
    strip -o "$out/tests/$name" "$exe"
    echo "bundled test $name"
done
du -sh "$out"
echo "bundle ready: copy the repository (or just $out and scripts/) to the GPU machine and run scripts/gpu-check.sh"
