#pragma once

#include <chrono>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "pipeline/destination.h"
#include "pipeline/destinations/file_util.h"
#include "wharf/v1/record.pb.h"

namespace wharf::pipeline {

struct RollingFileDestinationOptions {
  // Destination name: a valid Wharf name (1-64 of [A-Za-z0-9_.-], starting with a letter or
  // digit). Names the state file `<directory>/.wharf-<name>.state` and its lock file
  // `<directory>/.wharf-<name>.lock`, so it must be unique among the instances sharing
  // `directory` (for one instance per (dataset, destination), e.g. "<destination>.<dataset>").
  // Required; no default.
  std::string name;
  // Root directory. Created (with parents) by Create() if missing; a relative path is resolved
  // against the working directory at Create() time. Required; no default.
  std::string directory;
  // Path of the published files relative to `directory`. Placeholders:
  //   {dataset}       the dataset name
  //   {partition}     the partition, at least 4 digits
  //   {date}          UTC date (YYYY-MM-DD) of the first batch's create_time
  //   {hour}          UTC hour (00-23) of the first batch's create_time
  //   {first_offset}  first offset of the file, 20 digits
  //   {last_offset}   last offset covered by the file, 20 digits (only in the last component)
  // Must contain {partition} and {first_offset} (names must be unique per file, and files are per
  // partition since partitions are delivered independently). Refused: an absolute path, empty,
  // "." or ".." components, a last component starting with '.', unknown placeholders, unmatched
  // braces, control characters. With `gzip`, ".gz" is appended unless the template already ends
  // in ".gz". Empty means the default
  // "{dataset}/{date}/{dataset}-p{partition}-{first_offset}.jsonl".
  std::string path_template;
  // Default 64 MiB: a file is rolled once the uncompressed bytes written to it reach this size
  // (checked after each batch, so a file exceeds it by at most one batch). 0: no size limit.
  uint64_t max_bytes = 64 << 20;
  // Default 5 minutes: a file is rolled this long after it was opened, by the next Deliver() for
  // its partition or by RollExpired(). 0: no age limit.
  std::chrono::seconds max_age{300};
  // Default false. true: every batch is appended as its own complete gzip member (a file of
  // concatenated members is a valid .gz file that gzip/zcat/zlib read as one stream).
  bool gzip = false;
  // Default true: data, state file and directories are fsynced before a delivery or a roll is
  // reported, so delivered batches survive power loss. false only for tests and benchmarks that
  // accept losing delivered data on power failure (kill -9 stays exactly-once either way, since
  // the page cache survives it).
  bool fsync = true;
};

// Appends the batches of each (dataset, partition) to one JSON Lines file until the file rolls
// by size or age, then publishes it under its final name. Exactly once across kill -9 and power
// loss (with `fsync`).
//
// Content: one line per record, the payload bytes exactly except that '\n' and '\r' bytes are
// replaced by spaces, then '\n' (as FileDestination). With gzip, each batch's lines form one gzip
// member.
//
// Files. Per (dataset, partition) there is at most one in-progress file, named
// `.<final name>.inprogress` in the final file's directory (dot-prefixed: hidden, never matching
// `*.jsonl`), where a {last_offset} in the final name reads "open" since it is not known yet.
// The final name is rendered at open time from the manifest of the file's first batch (dataset,
// partition, create_time for {date}/{hour}; {first_offset} is the first offset not delivered
// before, i.e. the manifest's first_offset unless the batch overlaps delivered offsets) and, at
// roll, {last_offset} = the last_offset of the file's last batch. Everything is derived from
// manifests and the state, never from the clock, so a replay after a crash produces the same
// names. The partially rendered name is stored in the state, so an open file keeps its name
// pattern (and its gzip-ness) across a restart with a changed configuration; new files use the
// new one.
//
// State file `<directory>/.wharf-<name>.state` (text, versioned, CRC-protected), replaced
// atomically (write temp + fsync + rename + directory fsync). Per (dataset, partition) it holds:
// the last delivered offset (last_offset of the last batch known durable), and for the open file
// its name pattern, committed length (bytes of complete, fsynced batches), uncompressed bytes,
// batch count, last offset and open time. The state is the commit point of every operation:
//
// Deliver(batch):
//  1. batch.last_offset <= last delivered offset: already delivered, OK with
//     report->already_delivered. Records at offsets <= the last delivered offset are skipped
//     in any batch, so a sub-batch, or a whole batch redelivered after some of its sub-batches,
//     is appended exactly once as well.
//  2. The file rolls first if it is due by age (or by size, if an earlier roll failed).
//  3. No open file: the state records the new file (an "open intent", no batches yet) before
//     the file is created. Every in-progress file is therefore known to the state: none is ever
//     orphaned by a crash.
//  4. The in-progress file is opened (created if missing) and truncated to the committed length:
//     this drops whatever a crash or a failed attempt left beyond it (never referenced by any
//     state). The lines are written at the committed length and fsynced (for a file created by
//     this process, its directory chain up to `directory` is fsynced too).
//  5. The state is written with the new committed length and last offset. Only then OK.
//     kill -9 before 5 completes: the state's committed length excludes the batch; the
//     pipeline redelivers it, step 4 truncates the partial or complete copy away and appends it
//     again: exactly once. kill -9 after 5: the pipeline redelivers, step 1 skips it.
//  6. If the file reached max_bytes it is rolled (a failure is logged and retried at the next
//     Deliver(), step 2, or RollExpired(); the batch is delivered either way).
//
// Roll: the file is truncated to its committed length (fsynced), renamed to its final name
// without ever replacing an existing file (renameat2 RENAME_NOREPLACE, or link()+unlink()),
// the directory is fsynced, and the state drops the open file. kill -9 after the rename but
// before the state write: Create() (or the retried roll) finds the in-progress file gone and the
// final file present with the committed length, and records the file as rolled. If the final
// name exists with the committed length while the in-progress file still exists (link+unlink
// interrupted), it was published: the in-progress name is removed. Any other file under the final
// name is never overwritten (DATA_LOSS).
//
// Create() recovers: reads the state (missing: fresh start; unreadable or corrupt: DATA_LOSS
// naming the file, never a silent reset), reconciles every open file as above (an in-progress
// file shorter than its committed length, or gone without a matching final file, is DATA_LOSS),
// and removes a leftover temporary state file. An exclusive flock on the lock file makes a second
// live instance with the same name and directory fail (FAILED_PRECONDITION) instead of
// corrupting the state.
//
// report->commit_id: the path, relative to `directory`, of the final file the batch went into
// when known: always when the template has no {last_offset} or the file rolled within this
// Deliver(); otherwise the in-progress file's relative path (the final name is only known at
// roll). Empty for an already delivered batch and for a batch without records to append when no
// file is open (the state records it as delivered; there is no file).
//
// Errors: FAILED_PRECONDITION for a dataset name that is not a valid Wharf name (never
// INVALID_ARGUMENT, which would quarantine records for a configuration error); DATA_LOSS when
// files or state are inconsistent (a foreign or changed file under a final name, an in-progress
// file shorter than committed or missing); UNAVAILABLE for transient I/O conditions (ENOSPC,
// EIO, ...); INTERNAL for other system call failures. Create(): INVALID_ARGUMENT for invalid
// options.
//
// Destroying the object without Close() leaves open files in progress, exactly like a crash;
// the next Create() continues them.
//
// Thread safety: thread-safe. Deliver() may be called concurrently for different partitions
// (serialised per partition by the partition's mutex; calls for the same partition are
// serialised too, although the contract excludes them). State file writes are serialised by one
// mutex. RollExpired() and Close() may run concurrently with Deliver().
class RollingFileDestination final : public Destination {
 public:
  // Validates the options and template, creates the directory, locks the name, reads and
  // recovers the state after a crash (see above).
  static absl::StatusOr<std::unique_ptr<RollingFileDestination>> Create(
      RollingFileDestinationOptions options);

  ~RollingFileDestination() override;

  std::string_view type() const override { return "file"; }

  absl::Status Deliver(const wharf::v1::StoredBatch& batch, DeliveryReport* report) override;

  // Rolls the files opened max_age or longer ago even when no batch arrives. Call periodically
  // (the pipeline calls it about once a second from its delivery thread). Also retries the roll
  // of a file that reached max_bytes but whose roll failed. Tries every partition; returns the
  // first error.
  absl::Status RollExpired();
  absl::Status RollExpired(std::chrono::system_clock::time_point now);

  // The pipeline's periodic call (about once a second, from the delivery thread): rolls expired
  // files.
  absl::Status Tick() override { return RollExpired(); }

  // Rolls (closes and publishes) every open file. For shutdown and tests. Deliver() may still be
  // called afterwards and opens new files. Tries every partition; returns the first error.
  absl::Status Close();

  // Absolute path of the state file (for tests and operators).
  const std::string& state_path() const { return state_path_; }

 private:
  // Persisted per (dataset, partition); see the class comment.
  struct PartitionRecord {
    bool delivered = false;  // false: nothing delivered yet (last_delivered meaningless)
    uint64_t last_delivered = 0;
    bool open = false;              // an in-progress file exists (or is about to be created)
    bool gzip = false;              // format of the open file
    uint64_t batches = 0;           // batches committed in the open file (0: open intent only)
    uint64_t committed = 0;         // bytes of complete batches in the open file
    uint64_t uncompressed = 0;      // uncompressed bytes of those batches
    uint64_t file_last_offset = 0;  // last_offset of the open file's last batch
    int64_t open_time_ms = 0;       // when the file was opened (Unix time, milliseconds)
    std::string pattern;            // final path relative to `directory`, {last_offset} unrendered
  };
  using Key = std::pair<std::string, uint32_t>;  // (dataset, partition)

  // In-memory state of one partition. `record` mirrors the latest persisted record.
  struct Partition {
    std::mutex mu;
    Key key ABSL_GUARDED_BY(mu);
    PartitionRecord record ABSL_GUARDED_BY(mu);
    file_util::ScopedFd fd ABSL_GUARDED_BY(mu);   // the open in-progress file, if opened
    bool dir_synced ABSL_GUARDED_BY(mu) = false;  // its directory chain fsynced since opening
    // When the open file was opened, on the steady clock (for a file opened before a restart:
    // now minus its wall-clock age, clamped to [0, max_age]). The file's age by this clock
    // bounds how long it stays open whatever the wall clock does (see Expired()).
    std::chrono::steady_clock::time_point opened_steady ABSL_GUARDED_BY(mu);
  };

  RollingFileDestination(RollingFileDestinationOptions options, std::string path_template,
                         file_util::ScopedFd lock_fd);

  // State file (de)serialization. Parse fails with DATA_LOSS naming `path`.
  static std::string SerializeState(const std::map<Key, PartitionRecord>& records);
  static absl::Status ParseState(const std::string& path, std::string_view content,
                                 std::map<Key, PartitionRecord>* records);
  // Reads the state file (missing: empty) and reconciles the open files with it.
  absl::Status Recover();

  Partition* GetPartition(const Key& key);
  // Persists `record` for `key` (with all other partitions' records). On success, or when the
  // new state file was renamed into place but its directory fsync failed (memory must then
  // follow the file), `*applied` is set and the caller adopts `record`.
  absl::Status Persist(const Key& key, const PartitionRecord& record, bool* applied);
  // Persists the current records again if an earlier write's durability is unknown.
  absl::Status EnsureStateDurable();
  // Writes `records_` to the state file. `*renamed`: the new file replaced the old one (its
  // content is then what a crash leaves, even if the directory fsync failed).
  absl::Status WriteStateLocked(bool* renamed) ABSL_EXCLUSIVE_LOCKS_REQUIRED(state_mu_);

  absl::Status DeliverLocked(Partition& p, const wharf::v1::StoredBatch& batch,
                             DeliveryReport* report) ABSL_EXCLUSIVE_LOCKS_REQUIRED(p.mu);
  // Opens the in-progress file and truncates it to the committed length.
  absl::Status OpenInProgress(Partition& p) ABSL_EXCLUSIVE_LOCKS_REQUIRED(p.mu);
  absl::Status SyncDirectoryChain(const std::string& relative_dir) const;
  // Rolls the open file of `p` (publishes it, or discards an empty open intent).
  absl::Status Roll(Partition& p) ABSL_EXCLUSIVE_LOCKS_REQUIRED(p.mu);
  // Rolls `p` if `force` or its file is due by age at `now`.
  absl::Status RollIfDue(Partition& p, bool force, std::chrono::system_clock::time_point now);
  bool Expired(const Partition& p, std::chrono::system_clock::time_point now) const
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(p.mu);
  bool SizeReached(const PartitionRecord& r) const;
  std::vector<Partition*> AllPartitions();

  std::string InProgressPath(const PartitionRecord& r) const;
  static std::string InProgressRelative(const PartitionRecord& r);
  static std::string FinalRelative(const PartitionRecord& r);
  // What report->commit_id says for a batch in the open file of `r`.
  static std::string CommitIdFor(const PartitionRecord& r);

  const RollingFileDestinationOptions options_;  // `directory` normalized
  const std::string template_;                   // validated, ".gz" appended with gzip
  const std::string state_path_;
  const std::string state_temp_path_;
  const file_util::ScopedFd lock_fd_;  // holds the flock for the object's lifetime

  std::mutex partitions_mu_;
  // Never erased: Partition pointers stay valid for the object's lifetime.
  std::map<Key, std::unique_ptr<Partition>> partitions_ ABSL_GUARDED_BY(partitions_mu_);

  std::mutex state_mu_;  // acquired after a Partition::mu, never before
  std::map<Key, PartitionRecord> records_ ABSL_GUARDED_BY(state_mu_);  // what the file holds
  bool state_durable_ ABSL_GUARDED_BY(state_mu_) = true;
};

}  // namespace wharf::pipeline
