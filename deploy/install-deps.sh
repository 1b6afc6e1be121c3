#!/usr/bin/env bash
# Installs what Wharf needs to build, test and run, from Debian bookworm packages.
# Idempotent: packages already installed are left alone; apt runs only when something is missing.
# Usage: deploy/install-deps.sh [--bench]   (--bench adds what bench/run.sh uses)
set -euo pipefail

PACKAGES=(
  build-essential cmake pkg-config git
  libgrpc++-dev protobuf-compiler-grpc libprotobuf-dev protobuf-compiler libabsl-dev
  librocksdb-dev libboost-dev libspdlog-dev libfmt-dev prometheus-cpp-dev
  libyaml-cpp-dev rapidjson-dev libcli11-dev
  libgtest-dev libgmock-dev libbenchmark-dev
  clang-format curl ca-certificates procps
)
if [[ "${1:-}" == "--bench" ]]; then
  PACKAGES+=(gnuplot-nox postgresql)
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
