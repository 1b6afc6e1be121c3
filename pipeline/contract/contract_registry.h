#pragma once

// The contract registry: every applied version of every dataset's contract, persisted in the
// staging store, and the compiled current contract of each dataset for the pipeline.
//
// Versions are stored as serialized wharf.v1.ContractVersion under the meta keys
//   contract/<dataset>/<schema_version, 10 digits>/<transform_version, 10 digits>
// Both numbers only grow and every change grows at least one, so key order is apply order and
// the last key of a dataset is its current version.
//
// Version numbering (Apply):
//   - the first version of a dataset is schema_version 1, transform_version 1 when it has
//     transforms and 0 otherwise;
//   - schema_version grows by one when json_schema, compatibility, format_assertions, rules or
//     pii differ from the current version (an absent format_assertions equals true and an
//     unspecified compatibility equals BACKWARD, as they mean the same);
//   - transform_version grows by one when the transform chain differs;
//   - a spec equal to the current one changes nothing and stores nothing (ApplyResult.changed is
//     false), even when its source YAML differs.

#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "pipeline/contract/contract.h"
#include "storage/staging_store.h"
#include "wharf/v1/contract.pb.h"

namespace wharf::pipeline::contract {

// Thread safety: all methods may be called from any thread; one mutex (mu_) serialises them, so
// Apply() calls for one dataset cannot race each other's version numbers. Contracts returned by
// Current() are immutable and stay valid after a later Apply() replaces them.
class ContractRegistry {
 public:
  // Meta key prefix of all stored contract versions.
  static constexpr char kKeyPrefix[] = "contract/";

  // `store` must outlive the registry. `hash_key` is the HMAC key compiled into contracts (PII
  // "hash" actions, hash transforms).
  ContractRegistry(storage::StagingStore* store, std::string hash_key);

  ContractRegistry(const ContractRegistry&) = delete;
  ContractRegistry& operator=(const ContractRegistry&) = delete;

  // Loads every stored version (at startup; replaces what the registry held). The latest
  // version of each dataset is its current one and is compiled. All or nothing: on error the
  // registry is left as it was. Errors: DATA_LOSS for a stored value that does not parse or
  // whose key does not match its content; FAILED_PRECONDITION naming the dataset when a current
  // contract no longer compiles (for example a hash key that was removed from the config) -
  // running that dataset without its contract would deliver unchecked records.
  absl::Status Load();

  struct ApplyResult {
    // The version that is current after the call (the existing one when nothing changed; with
    // dry_run, the one that would have been stored).
    wharf::v1::ContractVersion version;
    bool changed = false;
    // Human-readable remarks for the operator: what was bumped and why, what was checked.
    std::vector<std::string> notes;
  };

  // Validates and compiles `spec`, checks schema compatibility, numbers the version and stores
  // it (unless dry_run or nothing changed), then makes it the dataset's current contract.
  // Compatibility is checked per spec.compatibility against the distinct schema texts of the
  // earlier versions (oldest first, each text at its latest position, so the last one is the
  // current schema): transitive modes compare with all of them, the others with the current one.
  // Errors: INVALID_ARGUMENT for a bad dataset name (empty or containing '/') or listing every
  // compile error of the spec; FAILED_PRECONDITION listing every incompatibility (one per line,
  // FormatIncompatibilities); store errors as returned by PutMeta.
  absl::StatusOr<ApplyResult> Apply(const std::string& dataset, const wharf::v1::ContractSpec& spec,
                                    const std::string& source_yaml, bool dry_run);

  // With a schema_version: the latest version carrying it; without: the current version.
  // NOT_FOUND when the dataset has no contract or no such version.
  absl::StatusOr<wharf::v1::ContractVersion> Get(const std::string& dataset,
                                                 std::optional<uint32_t> schema_version) const;

  // Every version of the dataset, oldest first (empty when it has none).
  std::vector<wharf::v1::ContractVersion> History(const std::string& dataset) const;

  // The compiled current contract (nullptr when the dataset has none).
  std::shared_ptr<const Contract> Current(const std::string& dataset) const;

  // Meta key of a version, e.g. "contract/orders/0000000002/0000000001".
  static std::string Key(const std::string& dataset, uint32_t schema_version,
                         uint32_t transform_version);

 private:
  struct DatasetContracts {
    std::vector<wharf::v1::ContractVersion> history;  // oldest first; never empty
    std::shared_ptr<const Contract> current;          // compiled history.back()
  };

  storage::StagingStore* const store_;
  const std::string hash_key_;
  mutable std::mutex mu_;
  std::map<std::string, DatasetContracts> datasets_ ABSL_GUARDED_BY(mu_);
};

}  // namespace wharf::pipeline::contract
