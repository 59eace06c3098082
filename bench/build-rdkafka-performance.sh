#!/usr/bin/env bash
# Builds librdkafka's own benchmark client, `rdkafka_performance`, from the librdkafka sources the
# `rdkafka-sys` crate bundles, linked against the static libraries its release build produced
# (run `cargo build --release -p joiner` first). For measurement only; not part of recjoin.
#
# Usage: bench/build-rdkafka-performance.sh [OUTPUT]   (default: target/rdkafka_performance)
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-${CARGO_TARGET_DIR:-target}/rdkafka_performance}
target=${CARGO_TARGET_DIR:-target}
src=$(ls -d "${CARGO_HOME:-$HOME/.cargo}"/registry/src/*/rdkafka-sys-*/librdkafka | tail -n 1)
find_lib() { find "$target/release/build" -name "$1" | head -n 1; }
lib=$(find_lib librdkafka.a)
[[ -n $lib ]] || { echo "no librdkafka.a under $target/release: cargo build --release -p joiner" >&2; exit 1; }
# -I the build's src/ directory: the example includes "../config.h", which the build generated.
gcc -O2 -w -o "$out" "$src/examples/rdkafka_performance.c" -I"$(dirname "$lib")" \
  "$lib" "$(find_lib libzstd.a)" "$(find_lib liblz4.a)" -lz -lpthread -lm -ldl -lrt
echo "$out"
