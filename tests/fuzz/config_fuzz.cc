// Fuzz target: the daemon's configuration parser (server/config.h ParseConfig), which reads an
// operator-written YAML file with yaml-cpp and checks every key.
//
// Input: the YAML text.
// Checks: ParseConfig never crashes, hangs or throws; it returns a config or INVALID_ARGUMENT
// whose message starts with the file name. An accepted config satisfies the documented ranges
// the rest of the daemon relies on.
//
// The name is in a directory that does not exist, so that relative `spec_file` references in
// the input can never read a real file. (An absolute one can: run the fuzzer with stdin from
// /dev/null, as tests/fuzz/run.sh does, so that "/dev/stdin" cannot block it.)

#include <cstddef>
#include <cstdint>
#include <set>
#include <string>

#include "server/config.h"
#include "tests/fuzz/fuzz_check.h"

namespace {

constexpr char kName[] = "/nonexistent-wharf-fuzz-dir/fuzz.yaml";

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string text(reinterpret_cast<const char*>(data), size);
  const absl::StatusOr<wharf::server::Config> config = wharf::server::ParseConfig(text, kName);
  if (!config.ok()) {
    WHARF_FUZZ_CHECK(config.status().code() == absl::StatusCode::kInvalidArgument);
    // Errors name the file they are in: this one, or a spec file given by an absolute path.
    const std::string message(config.status().message());
    WHARF_FUZZ_CHECK(message.starts_with(kName) || message.starts_with("/"));
    return 0;
  }
  WHARF_FUZZ_CHECK(!config->datasets.empty());
  std::set<std::string> names;
  for (const auto& dataset : config->datasets) {
    WHARF_FUZZ_CHECK(names.insert(dataset.name).second);
    WHARF_FUZZ_CHECK(dataset.partitions >= 1 && dataset.partitions <= 1024);
    WHARF_FUZZ_CHECK(!dataset.destinations.empty());
  }
  WHARF_FUZZ_CHECK(config->pipeline_threads >= 1 && config->pipeline_threads <= 64);
  WHARF_FUZZ_CHECK(config->batching.max_records >= 1);
  WHARF_FUZZ_CHECK(config->limits.max_record_bytes <= config->limits.max_message_bytes);
  return 0;
}
