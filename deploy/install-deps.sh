#!/usr/bin/env bash
# Installs what Wharf needs to build, test and run, from Debian bookworm packages.
# Idempotent: packages already installed are left alone; apt runs only when something is missing.
# Usage: deploy/install-deps.sh [--tests|--bench|--fuzz]   (--tests adds what tests/run.sh uses,
# --bench what bench/run.sh uses, --fuzz what tests/fuzz/run.sh uses)
set -euo pipefail

PACKAGES=(
  build-essential cmake pkg-config git
  libgrpc++-dev protobuf-compiler-grpc libprotobuf-dev protobuf-compiler libabsl-dev
  librocksdb-dev libboost-dev libspdlog-dev libfmt-dev prometheus-cpp-dev
  libyaml-cpp-dev rapidjson-dev libsimdjson-dev libcli11-dev libre2-dev libssl-dev libpq-dev
  libcurl4-openssl-dev zlib1g-dev libjemalloc-dev
  libgtest-dev libgmock-dev libbenchmark-dev
  clang-format curl ca-certificates procps
  openssl
)
# Tests: a throwaway PostgreSQL cluster (started by the tests on loopback) and the official
# JSON-Schema-Test-Suite (draft7) for the validator's conformance test.
if [[ "${1:-}" == "--tests" || "${1:-}" == "--bench" ]]; then
  PACKAGES+=(postgresql json-schema-test-suite ccache)
  # The disk-full test mounts a small ext4 image through a loop device.
  PACKAGES+=(e2fsprogs util-linux mount)
  # The clock-step tests run wharfd under libfaketime (LD_PRELOAD libfaketime.so.1).
  PACKAGES+=(faketime libfaketime)
fi
if [[ "${1:-}" == "--bench" ]]; then
  PACKAGES+=(gnuplot-nox libvalijson-dev)
fi
# Fuzzing: clang with libFuzzer and the sanitizer runtimes.
if [[ "${1:-}" == "--fuzz" ]]; then
  PACKAGES+=(clang-14 libclang-rt-14-dev ccache)
fi

missing=()
for p in "${PACKAGES[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done

if (( ${#missing[@]} > 0 )); then
  if [[ $(id -u) -ne 0 ]]; then
    echo "install-deps: missing packages: ${missing[*]}; run as root or install them" >&2
    exit 1
  fi
  echo "install-deps: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi
