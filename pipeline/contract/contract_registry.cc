#include "pipeline/contract/contract_registry.h"

#include <chrono>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "google/protobuf/util/message_differencer.h"
#include "google/protobuf/util/time_util.h"
#include "pipeline/contract/schema_compat.h"

namespace wharf::pipeline::contract {
namespace {

using google::protobuf::util::MessageDifferencer;
using google::protobuf::util::TimeUtil;
using wharf::v1::CompatibilityMode;
using wharf::v1::ContractSpec;
using wharf::v1::ContractVersion;

// The parts of a spec that schema_version covers, with defaults made explicit so that spelling
// out a default is not a change.
ContractSpec SchemaPart(const ContractSpec& spec) {
  ContractSpec part = spec;
  part.clear_transforms();
  if (part.compatibility() == wharf::v1::COMPATIBILITY_MODE_UNSPECIFIED) {
    part.set_compatibility(wharf::v1::BACKWARD);
  }
  if (!part.has_format_assertions()) part.set_format_assertions(true);
  return part;
}

bool TransformsEqual(const ContractSpec& a, const ContractSpec& b) {
  ContractSpec ta;
  *ta.mutable_transforms() = a.transforms();
  ContractSpec tb;
  *tb.mutable_transforms() = b.transforms();
  return MessageDifferencer::Equals(ta, tb);
}

// Names the schema-part fields that differ, for the notes.
std::vector<std::string> SchemaChanges(const ContractSpec& before, const ContractSpec& after) {
  const ContractSpec a = SchemaPart(before);
  const ContractSpec b = SchemaPart(after);
  std::vector<std::string> changes;
  if (a.json_schema() != b.json_schema()) changes.push_back("json_schema");
  if (a.compatibility() != b.compatibility()) changes.push_back("compatibility");
  if (a.format_assertions() != b.format_assertions()) changes.push_back("format_assertions");
  ContractSpec ra;
  *ra.mutable_rules() = a.rules();
  ContractSpec rb;
  *rb.mutable_rules() = b.rules();
  if (!MessageDifferencer::Equals(ra, rb)) changes.push_back("rules");
  ContractSpec pa;
  *pa.mutable_pii() = a.pii();
  ContractSpec pb;
  *pb.mutable_pii() = b.pii();
  if (!MessageDifferencer::Equals(pa, pb)) changes.push_back("pii");
  return changes;
}

bool IsTransitive(CompatibilityMode mode) {
  return mode == wharf::v1::BACKWARD_TRANSITIVE || mode == wharf::v1::FORWARD_TRANSITIVE ||
         mode == wharf::v1::FULL_TRANSITIVE;
}

std::string VersionLabel(const ContractVersion& v) {
  return absl::StrCat("schema_version ", v.schema_version(), ", transform_version ",
                      v.transform_version());
}

}  // namespace

ContractRegistry::ContractRegistry(storage::StagingStore* store, std::string hash_key)
    : store_(store), hash_key_(std::move(hash_key)) {}

std::string ContractRegistry::Key(const std::string& dataset, uint32_t schema_version,
                                  uint32_t transform_version) {
  return absl::StrFormat("%s%s/%010u/%010u", kKeyPrefix, dataset, schema_version,
                         transform_version);
}

absl::Status ContractRegistry::Load() {
  absl::StatusOr<std::vector<std::pair<std::string, std::string>>> stored =
      store_->ListMeta(kKeyPrefix);
  if (!stored.ok()) return stored.status();
  std::map<std::string, DatasetContracts> loaded;
  for (const auto& [key, value] : *stored) {
    ContractVersion version;
    if (!version.ParseFromString(value)) {
      return absl::DataLossError(absl::StrCat("stored contract ", key, " does not parse"));
    }
    // The key is derived from the content; a mismatch means the value is not what was written
    // under this key, and ordering by key would no longer be apply order.
    if (Key(version.dataset(), version.schema_version(), version.transform_version()) != key) {
      return absl::DataLossError(absl::StrCat("stored contract ", key, " holds dataset \"",
                                              version.dataset(), "\" ", VersionLabel(version)));
    }
    // ListMeta returns keys in order, so each dataset's history comes out oldest first.
    loaded[version.dataset()].history.push_back(std::move(version));
  }
  for (auto& [dataset, contracts] : loaded) {
    auto compiled = Contract::Compile(contracts.history.back(), hash_key_);
    if (!compiled.ok()) {
      return absl::FailedPreconditionError(absl::StrCat(
          "the current contract of dataset ", dataset, " (", VersionLabel(contracts.history.back()),
          ") does not compile: ", compiled.status().message()));
    }
    contracts.current = *std::move(compiled);
  }
  std::lock_guard<std::mutex> lock(mu_);
  datasets_ = std::move(loaded);
  return absl::OkStatus();
}

absl::StatusOr<ContractRegistry::ApplyResult> ContractRegistry::Apply(
    const std::string& dataset, const ContractSpec& spec, const std::string& source_yaml,
    bool dry_run) {
  // '/' would make one dataset's key range contain another's ("a" and "a/b").
  if (dataset.empty() || dataset.find('/') != std::string::npos) {
    return absl::InvalidArgumentError(
        absl::StrCat("invalid dataset name \"", dataset, "\": must be non-empty without '/'"));
  }
  std::lock_guard<std::mutex> lock(mu_);
  auto it = datasets_.find(dataset);
  const ContractVersion* current = it == datasets_.end() ? nullptr : &it->second.history.back();

  ApplyResult result;
  ContractVersion& candidate = result.version;
  candidate.set_dataset(dataset);
  *candidate.mutable_spec() = spec;
  candidate.set_source_yaml(source_yaml);
  // Not TimeUtil::GetCurrentTime(): protobuf 3.21 truncates it to whole seconds.
  *candidate.mutable_applied_time() =
      TimeUtil::MicrosecondsToTimestamp(std::chrono::duration_cast<std::chrono::microseconds>(
                                            std::chrono::system_clock::now().time_since_epoch())
                                            .count());

  bool schema_changed = true;
  bool transforms_changed = spec.transforms_size() > 0;
  std::vector<std::string> schema_changes;
  if (current == nullptr) {
    candidate.set_schema_version(1);
    candidate.set_transform_version(transforms_changed ? 1 : 0);
  } else {
    schema_changes = SchemaChanges(current->spec(), spec);
    schema_changed = !schema_changes.empty();
    transforms_changed = !TransformsEqual(current->spec(), spec);
    candidate.set_schema_version(current->schema_version() + (schema_changed ? 1 : 0));
    candidate.set_transform_version(current->transform_version() + (transforms_changed ? 1 : 0));
  }

  // Compile errors come first: an incompatibility report about a schema that does not even
  // compile would be noise.
  absl::StatusOr<std::shared_ptr<const Contract>> compiled =
      Contract::Compile(candidate, hash_key_);
  if (!compiled.ok()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "contract of dataset ", dataset, " does not compile: ", compiled.status().message()));
  }

  if (current != nullptr && !schema_changed && !transforms_changed) {
    result.version = *current;
    result.changed = false;
    result.notes.push_back(absl::StrCat("spec is identical to the current version (",
                                        VersionLabel(*current), "): nothing changed"));
    return result;
  }

  if (current != nullptr && schema_changed) {
    // Distinct schema texts, each at the position of its latest use, so that the last entry is
    // always the current schema (what non-transitive modes compare against) even after a revert.
    std::vector<std::string> previous;
    std::vector<uint32_t> previous_versions;  // schema_version of each entry's latest use
    for (const ContractVersion& v : it->second.history) {
      for (size_t i = 0; i < previous.size(); ++i) {
        if (previous[i] == v.spec().json_schema()) {
          previous.erase(previous.begin() + static_cast<std::ptrdiff_t>(i));
          previous_versions.erase(previous_versions.begin() + static_cast<std::ptrdiff_t>(i));
          break;
        }
      }
      previous.push_back(v.spec().json_schema());
      previous_versions.push_back(v.schema_version());
    }
    const CompatibilityMode mode = spec.compatibility();
    absl::StatusOr<std::vector<Incompatibility>> incompatible =
        CheckCompatibility(mode, previous, spec.json_schema());
    if (!incompatible.ok()) {
      return absl::InvalidArgumentError(
          absl::StrCat("contract of dataset ", dataset,
                       ": compatibility check failed: ", incompatible.status().message()));
    }
    const std::string mode_name = wharf::v1::CompatibilityMode_Name(
        mode == wharf::v1::COMPATIBILITY_MODE_UNSPECIFIED ? wharf::v1::BACKWARD : mode);
    if (!incompatible->empty()) {
      std::string message = absl::StrCat("schema of dataset ", dataset, " is not ", mode_name,
                                         " compatible with its previous versions:\n",
                                         FormatIncompatibilities(*incompatible));
      if (IsTransitive(mode) && previous.size() > 1) {
        // "[previous version i of n]" counts distinct schemas; say which versions they are.
        std::vector<std::string> legend;
        for (size_t i = 0; i < previous.size(); ++i) {
          legend.push_back(absl::StrCat(i + 1, " = schema_version ", previous_versions[i]));
        }
        absl::StrAppend(&message, "\nprevious versions: ", absl::StrJoin(legend, ", "));
      }
      return absl::FailedPreconditionError(message);
    }
    if (mode == wharf::v1::NONE) {
      result.notes.push_back("compatibility NONE: schema not compared with earlier versions");
    } else {
      const size_t compared = IsTransitive(mode) ? previous.size() : 1;
      result.notes.push_back(absl::StrCat("schema is ", mode_name, " compatible with ", compared,
                                          " previous schema", compared == 1 ? "" : "s"));
    }
  }

  if (current == nullptr) {
    result.notes.push_back(
        absl::StrCat("first contract of dataset ", dataset, ": ", VersionLabel(candidate)));
  } else {
    if (schema_changed) {
      result.notes.push_back(absl::StrCat("schema_version ", current->schema_version(), " -> ",
                                          candidate.schema_version(), " (",
                                          absl::StrJoin(schema_changes, ", "), " changed)"));
    }
    if (transforms_changed) {
      result.notes.push_back(absl::StrCat("transform_version ", current->transform_version(),
                                          " -> ", candidate.transform_version(),
                                          " (transforms changed)"));
    }
  }
  result.changed = true;
  if (dry_run) {
    result.notes.push_back("dry run: nothing stored");
    return result;
  }

  std::string value;
  if (!candidate.SerializeToString(&value)) {
    return absl::InternalError("cannot serialize the contract version");
  }
  // PutMeta is a synced write: once it returns, the version survives kill -9 and power loss,
  // and Load() will make it current again. The in-memory state changes only after it
  // succeeded, so a failed write leaves the previous contract in force on both sides.
  absl::Status put = store_->PutMeta(
      Key(dataset, candidate.schema_version(), candidate.transform_version()), value);
  if (!put.ok()) return put;
  DatasetContracts& entry = datasets_[dataset];
  entry.history.push_back(candidate);
  entry.current = *std::move(compiled);
  return result;
}

absl::StatusOr<ContractVersion> ContractRegistry::Get(
    const std::string& dataset, std::optional<uint32_t> schema_version) const {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = datasets_.find(dataset);
  if (it == datasets_.end()) {
    return absl::NotFoundError(absl::StrCat("dataset ", dataset, " has no contract"));
  }
  const std::vector<ContractVersion>& history = it->second.history;
  if (!schema_version.has_value()) return history.back();
  for (auto v = history.rbegin(); v != history.rend(); ++v) {
    if (v->schema_version() == *schema_version) return *v;
  }
  return absl::NotFoundError(
      absl::StrCat("dataset ", dataset, " has no contract with schema_version ", *schema_version));
}

std::vector<ContractVersion> ContractRegistry::History(const std::string& dataset) const {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = datasets_.find(dataset);
  if (it == datasets_.end()) return {};
  return it->second.history;
}

std::shared_ptr<const Contract> ContractRegistry::Current(const std::string& dataset) const {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = datasets_.find(dataset);
  return it == datasets_.end() ? nullptr : it->second.current;
}

}  // namespace wharf::pipeline::contract
