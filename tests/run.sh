#!/usr/bin/env bash
# Installs dependencies (Debian packages), builds Wharf and runs every test.
#
#   tests/run.sh             format check, build, all tests, then the ASan+UBSan build's tests
#                            and the TSan build's concurrency tests
#   tests/run.sh --quick     skip the sanitizer builds
#   tests/run.sh --extended  long variants of the reliability tests (WHARF_EXTENDED=1)
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)

QUICK=0
for arg in "$@"; do
  case "$arg" in
    --quick) QUICK=1 ;;
    --extended) export WHARF_EXTENDED=1 ;;
    *) echo "usage: tests/run.sh [--quick] [--extended]" >&2; exit 2 ;;
  esac
done

deploy/install-deps.sh --bench  # the tests also run the benchmark smoke

JOBS=$(nproc)
# ccache (when installed) makes repeated runs on one machine fast; paths are made relative to
# the checkout so that clones in different directories share the cache.
CMAKE_LAUNCHER=()
if command -v ccache > /dev/null; then
  export CCACHE_BASEDIR=$PWD
  CMAKE_LAUNCHER=(-DCMAKE_CXX_COMPILER_LAUNCHER=ccache)
fi
step() { echo; echo "=== $* ($(date +%H:%M:%S))"; }

step "clang-format check"
mapfile -t SOURCES < <(git ls-files -- '*.cc' '*.h' 2>/dev/null || find proto server storage pipeline client tests bench -name '*.cc' -o -name '*.h')
clang-format --dry-run --Werror "${SOURCES[@]}"

step "build (RelWithDebInfo, -Werror)"
cmake -S . -B build -DCMAKE_BUILD_TYPE=RelWithDebInfo -DWHARF_WERROR=ON "${CMAKE_LAUNCHER[@]}" \
  > build-configure.log
cmake --build build -j"$JOBS"

step "JSON Schema conformance (JSON-Schema-Test-Suite)"
# The current suite (draft2020-12 and draft7) is expected beside the project (CI puts it there);
# WHARF_JSON_SCHEMA_TEST_SUITE overrides the path. Debian's json-schema-test-suite package adds
# an older draft7 copy. One summary line per draft.
build/tests/pipeline_test --gtest_filter='JsonSchemaConformance*' | grep -E '^draft'

step "tests"
# The reliability checker (tests/support/checker.h) of the crash and kill tests appends one
# "checker: acked=... lost=0 duplicated=0 unexpected=0 recovered=..." line per run here.
export WHARF_CHECKER_LOG=$ROOT/build/checker.log
rm -f "$WHARF_CHECKER_LOG"
ctest --test-dir build --output-on-failure --timeout 1200 -j2

step "reliability checker figures"
if [[ ! -s "$WHARF_CHECKER_LOG" ]]; then
  echo "no checker line was written: did the crash tests run?" >&2
  exit 1
fi
cat "$WHARF_CHECKER_LOG"
unset WHARF_CHECKER_LOG

if [[ $QUICK -eq 0 ]]; then
  step "build with AddressSanitizer + UndefinedBehaviorSanitizer"
  cmake -S . -B build-asan -DCMAKE_BUILD_TYPE=Debug -DWHARF_SANITIZE=ON -DWHARF_BUILD_BENCH=OFF \
    "${CMAKE_LAUNCHER[@]}" > build-asan-configure.log
  cmake --build build-asan -j"$JOBS"
  step "tests under ASan+UBSan"
  ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
    ctest --test-dir build-asan --output-on-failure --timeout 1800 -j2

  step "build with ThreadSanitizer (the concurrency tests' binaries only)"
  # docs/reliability/sanitizers.md: which tests run here and why; the suppressions name only
  # Debian's (uninstrumented) libraries.
  cmake -S . -B build-tsan -DCMAKE_BUILD_TYPE=Debug -DWHARF_SANITIZE=thread -DWHARF_BUILD_BENCH=OFF \
    "${CMAKE_LAUNCHER[@]}" > build-tsan-configure.log
  # pipeline_test depends on wharfd, so the TSan wharfd is built too (the forward destination's
  # tests, which start it, are not in the selection below).
  cmake --build build-tsan -j"$JOBS" --target storage_test pipeline_test server_test
  step "concurrency tests under ThreadSanitizer"
  # The concurrency tests: whole suites that run the store's writer thread, the pipeline's pool
  # and delivery workers or the in-process control service, plus every test named Concurrent*
  # (several threads on one destination / contract / processor object).
  TSAN_TESTS='^(StagingStoreTest|Durability/StagingStoreDurabilityTest|QuarantineStoreTest'
  TSAN_TESTS+='|StoreIoErrorTest|PipelineTest|DeliveryTest|PipelinePowerLossTest'
  TSAN_TESTS+='|ControlServiceTest|WharfServerTest)\.'
  TSAN_TESTS+='|\.Concurrent|^JsonParseProcessorTest\.IsUsableFromSeveralThreadsAtOnce$'
  # Not here: a test of the writer's producer-window cache, which pushes 100,001 requests through
  # one group and outgrows its 10 s bound at TSan's speed (no second thread involved beyond the
  # writer, which the other StagingStoreTest tests exercise); the forward destination's tests,
  # whose central is a TSan wharfd child that missed their connect / RPC timeouts on a loaded
  # machine (no TSan report: time, not a race).
  TSAN_EXCLUDE='^StagingStoreTest\.ProducerWindowsSurviveCacheEvictionWithinAGroup$'
  TSAN_EXCLUDE+='|^WharfForwardDestinationTest\.'
  TSAN_OPTIONS="suppressions=$ROOT/tests/tsan_suppressions.txt halt_on_error=1 second_deadlock_stack=1 history_size=4" \
    ctest --test-dir build-tsan --output-on-failure --timeout 900 -j2 -R "$TSAN_TESTS" \
      -E "$TSAN_EXCLUDE"
fi

step "bench smoke run"
# The smoke run reuses the test build: it checks the harness, not figures.
WHARF_BUILD_DIR=build bench/run.sh --smoke

step "done"
