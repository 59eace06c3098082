#!/usr/bin/env bash
# The test command: installs what the tests need (idempotently) and runs every check and test.
# Usage: bash tests/run.sh
set -euo pipefail
cd "$(dirname "$0")/.."

# System packages the tests use. Each later test that needs a tool (kcat, Prometheus, ...) adds it
# here; a test whose tool is missing fails loudly rather than skipping.
apt_packages=()
missing=()
for pkg in "${apt_packages[@]}"; do
  dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg")
done
if ((${#missing[@]})); then
  echo "installing: ${missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}"
fi

echo "== cargo fmt --check"
cargo fmt --all --check
echo "== cargo clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings
echo "== cargo test"
cargo test --workspace --locked
