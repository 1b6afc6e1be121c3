#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace wharf::storage {

// What VerifyStore() found.
struct VerifyReport {
  // Damage, each naming the file (RocksDB corruption) or the key (a value that does not decode,
  // a broken invariant). Empty: the store is healthy.
  std::vector<std::string> problems;
  // Summary lines: column families, datasets, counts per partition.
  std::vector<std::string> notes;
  bool healthy() const { return problems.empty(); }
};

// Checks the staging store at `path` offline, without changing it:
//   1. takes RocksDB's LOCK file (fcntl write lock, as RocksDB does) so that wharfd cannot open
//      the store while it is being read; a held lock means the store is in use;
//   2. opens it read-only with every column family (the WAL is replayed in memory only, with
//      wharfd's recovery mode: a damaged WAL record is damage, not a silently shorter store);
//   3. verifies every SST block checksum (DB::VerifyChecksum);
//   4. walks every column family, decodes every key and value with the store's codecs and
//      checks the invariants that are cheap to check: raw offsets of a partition contiguous from
//      the retention mark to the ingest cursor, batches ordered, non-overlapping, below the
//      validation cursor and referencing raw offsets that exist or were deleted by retention,
//      quarantine entries below the validation cursor, delivery cursors not past the
//      validation cursor, every key belonging to a registered dataset and partition.
// Damage goes into the report. Errors: NOT_FOUND when there is no store at `path`,
// FAILED_PRECONDITION when the store is in use, UNAVAILABLE for I/O errors that are not damage.
//
// Thread safety: a free function; do not run two on the same store at once (the second one finds
// the store in use).
absl::StatusOr<VerifyReport> VerifyStore(const std::string& path);

}  // namespace wharf::storage
