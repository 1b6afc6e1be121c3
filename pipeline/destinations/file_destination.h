#pragma once

#include <memory>
#include <string>
#include <string_view>
#include <utility>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "pipeline/destination.h"
#include "wharf/v1/record.pb.h"

namespace wharf::pipeline {

struct FileDestinationOptions {
  // Directory the batch files are written to. Created (with parents) by Create() if missing.
  // A relative path is resolved against the working directory at Create() time.
  std::string directory;
  // Default true: a batch file is fsynced before it is renamed into place and the directory is
  // fsynced after, so a delivered batch survives power loss. false only for tests and benchmarks
  // that accept losing (never corrupting) delivered files on power failure.
  bool fsync = true;
};

// Delivers each committed batch as one JSON Lines file in a local directory.
//
// File name: `<dataset>-p<partition, 4 digits>-<first_offset, 20 digits>-<last_offset, 20
// digits>.jsonl`, derived only from the manifest, so `ls` sorts by dataset, partition, then
// offset. (A partition number above 9999 is written with more digits: names stay unique, only
// the sort order between such partitions is lost.)
//
// Content: one line per record, the payload bytes exactly except that '\n' and '\r' bytes are
// replaced by spaces (in valid JSON they can only be insignificant whitespace), then '\n'.
//
// Crash safety: a file only ever appears under its final name by an atomic rename of a complete
// (and, with `fsync`, fsynced) temporary file; a final name that already exists therefore means
// "delivered", which makes Deliver() idempotent. Temporary files are named
// `.<final name>.<process token>-<n>.tmp` (dot-prefixed, so hidden and never matching `*.jsonl`)
// and are removed by Create() after a crash.
//
// Thread safety: thread-safe. The object is immutable after Create(); Deliver() may be called
// concurrently from any number of threads, also for the same batch (one file results). Several
// instances may share a directory (e.g. one per dataset).
class FileDestination final : public Destination {
 public:
  // Creates the directory if needed, removes leftover temporary files of a previous crash (only
  // files matching the temporary name pattern, never final files or foreign files), and checks
  // that files can be created in the directory (and, with `fsync`, that it can be fsynced).
  static absl::StatusOr<std::unique_ptr<FileDestination>> Create(FileDestinationOptions options);

  std::string_view type() const override { return "file"; }

  // Writes the batch's file unless it already exists. Returns OK if the file exists with the
  // expected size (delivered before), DATA_LOSS if a file of that name exists with a different
  // size or is not a regular file (it is never overwritten), FAILED_PRECONDITION for a dataset
  // name that is not a valid Wharf name (not INVALID_ARGUMENT: that would quarantine records for
  // a configuration error), UNAVAILABLE for transient I/O conditions (ENOSPC, EIO, ...) and
  // INTERNAL for other system call failures. On error nothing is left under the final name that
  // was not there before. report->commit_id is the file name.
  absl::Status Deliver(const wharf::v1::StoredBatch& batch, DeliveryReport* report) override;

  // The final path of a batch's file (for tests and lineage). Absolute.
  std::string PathFor(const wharf::v1::BatchManifest& m) const;

 private:
  explicit FileDestination(FileDestinationOptions options) : options_(std::move(options)) {}

  // OK(true) if the final file exists with `expected_size` bytes and is (with fsync) durable;
  // OK(false) if it does not exist; DATA_LOSS if something else is there.
  absl::StatusOr<bool> CheckDelivered(const std::string& final_path, uint64_t expected_size,
                                      const std::string& batch_id) const;
  // Renames the complete temporary file to the final name without ever replacing an existing
  // final file; removes the temporary file when it is not renamed.
  absl::Status Publish(const std::string& temp_path, const std::string& final_path,
                       uint64_t expected_size, const std::string& batch_id) const;
  absl::Status SyncDirectory() const;

  const FileDestinationOptions options_;  // `directory` absolute, without trailing '/'
};

}  // namespace wharf::pipeline
