// Fuzz target: dataset spec files (server/config.h ParseDatasetSpec, what `wharfctl apply -f`
// and `spec_file` entries read), followed, as ContractRegistry::Apply does, by compiling the
// contract the spec declares (pipeline/contract/contract.h).
//
// Input: the YAML text.
// Checks: ParseDatasetSpec never crashes, hangs or throws; it returns a dataset or
// INVALID_ARGUMENT whose message starts with the file name. An accepted spec has a valid name,
// partitions in range, at least one destination and its own text as source_yaml; compiling its
// contract succeeds or fails with INVALID_ARGUMENT, never crashes.

#include <cstddef>
#include <cstdint>
#include <string>

#include "pipeline/contract/contract.h"
#include "server/config.h"
#include "storage/keys.h"
#include "tests/fuzz/fuzz_check.h"
#include "wharf/v1/contract.pb.h"

namespace {

// In a directory that does not exist: nothing relative to it can be read.
constexpr char kName[] = "/nonexistent-wharf-fuzz-dir/orders.yaml";

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string text(reinterpret_cast<const char*>(data), size);
  const absl::StatusOr<wharf::server::DatasetConfig> spec =
      wharf::server::ParseDatasetSpec(text, kName);
  if (!spec.ok()) {
    WHARF_FUZZ_CHECK(spec.status().code() == absl::StatusCode::kInvalidArgument);
    WHARF_FUZZ_CHECK(std::string(spec.status().message()).starts_with(kName));
    return 0;
  }
  WHARF_FUZZ_CHECK(wharf::storage::ValidateName("dataset", spec->name).ok());
  WHARF_FUZZ_CHECK(spec->partitions >= 1 && spec->partitions <= 1024);
  WHARF_FUZZ_CHECK(!spec->destinations.empty());
  WHARF_FUZZ_CHECK(spec->source_yaml == text);
  WHARF_FUZZ_CHECK(spec->spec_file.empty());
  if (!spec->contract.has_value()) return 0;
  WHARF_FUZZ_CHECK(spec->format == "json");

  wharf::v1::ContractVersion version;
  version.set_dataset(spec->name);
  version.set_schema_version(1);
  version.set_transform_version(1);
  *version.mutable_spec() = *spec->contract;
  version.set_source_yaml(spec->source_yaml);
  const auto contract =
      wharf::pipeline::contract::Contract::Compile(version, "fuzz-hash-key-0123456789abcdef");
  WHARF_FUZZ_CHECK(contract.ok() || contract.status().code() == absl::StatusCode::kInvalidArgument);
  return 0;
}
