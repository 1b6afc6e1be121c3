#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "rocksdb/file_system.h"

namespace wharf::storage {

// TEST SEAM. A rocksdb::FileSystem that forwards to another one (by default the real file
// system) and can simulate a power loss and inject I/O errors. Production never installs it
// (StoreOptions::file_system is null there); tests install it directly, and wharfd installs it
// only when the test-only environment variable WHARF_FAULT_FS is set (see
// FaultInjectionFsFromSpec).
//
// Power loss model. A kill -9 keeps everything written to the page cache; a power loss keeps
// only what was made durable:
//   - the bytes of a file up to its size at its last successful Sync/Fsync (RangeSync, i.e.
//     sync_file_range, starts write-back but guarantees nothing, so it does not count);
//   - a file created (or renamed into place) through this file system survives only once its
//     directory was fsynced afterwards (FSDirectory::Fsync, which RocksDB calls after creating a
//     WAL, a table file or the MANIFEST, and after renaming CURRENT). An un-fsynced rename is
//     undone: the file goes back to its old name and the old target is restored.
// Files that existed before this wrapper saw them are durable as they are. Deletions are taken
// as durable at once (simplification: a deleted file coming back is an obsolete file, which
// RocksDB ignores; it is never needed for correctness).
//
// Usage: SimulatePowerLoss() "cuts the power": from then on every mutating call (append, sync,
// create, rename, delete, ...) fails with IOError, so the database cannot make anything more
// durable while it is being closed or abandoned. Once the database is closed, DropUnsyncedData()
// rewrites the files on disk to what would be left after the power loss. Reopen with a fresh
// wrapper (or the default file system).
//
// Error injection: InjectSyncError / InjectWriteError make the N+1-th following sync (append)
// and every one after it fail, the way a failing disk keeps failing, until ClearErrors().
//
// Thread safety: thread-safe; the wrapped files may be used from RocksDB's threads concurrently.
class FaultInjectionFs final : public rocksdb::FileSystemWrapper {
 public:
  // Which files injected errors apply to.
  enum class Scope {
    kAllFiles,  // every writable file and directory fsync
    kWalFiles,  // write-ahead logs only (*.log): hits the ack path and nothing else
  };

  explicit FaultInjectionFs(
      std::shared_ptr<rocksdb::FileSystem> target = rocksdb::FileSystem::Default());

  static const char* kClassName() { return "WharfFaultInjectionFs"; }
  const char* Name() const override { return kClassName(); }

  // Power loss ----------------------------------------------------------------------------------

  // Stops the world: every later write, sync, create, rename or delete fails with IOError.
  void SimulatePowerLoss();
  bool power_lost() const;

  // Call after the database using this file system is closed (or abandoned, with no thread
  // writing any more). Truncates every tracked file to its last synced size and deletes files
  // whose directory entry was never made durable; undoes un-fsynced renames. With
  // `keep_random_unsynced_seed` != 0, each file instead keeps none, all or a pseudo-random
  // prefix of its unsynced bytes (a third each: the disk may have written some or all of the
  // page cache before the power went), which produces torn records at the end of logs and
  // unacknowledged writes that survive. Afterwards every remaining byte counts as
  // durable and the power is back on (power_lost() is false).
  absl::Status DropUnsyncedData(uint64_t keep_random_unsynced_seed = 0);

  // Error injection -----------------------------------------------------------------------------

  // Sync, Fsync and RangeSync of files in `scope` (and, for kAllFiles, directory fsyncs) fail
  // with IOError (EIO) after `after_n` more successful ones.
  void InjectSyncError(uint64_t after_n, Scope scope = Scope::kAllFiles);
  // Appends to files in `scope` fail with IOStatus::NoSpace (ENOSPC) after `after_n` more
  // successful ones. Nothing of a failed append is written.
  void InjectWriteError(uint64_t after_n, Scope scope = Scope::kAllFiles);
  // Stops injecting errors (the power stays as it is).
  void ClearErrors();
  // Errors returned so far because of InjectSyncError / InjectWriteError.
  uint64_t injected_errors() const;

  // rocksdb::FileSystem -------------------------------------------------------------------------

  rocksdb::IOStatus NewWritableFile(const std::string& fname, const rocksdb::FileOptions& opts,
                                    std::unique_ptr<rocksdb::FSWritableFile>* result,
                                    rocksdb::IODebugContext* dbg) override;
  rocksdb::IOStatus ReopenWritableFile(const std::string& fname, const rocksdb::FileOptions& opts,
                                       std::unique_ptr<rocksdb::FSWritableFile>* result,
                                       rocksdb::IODebugContext* dbg) override;
  rocksdb::IOStatus ReuseWritableFile(const std::string& fname, const std::string& old_fname,
                                      const rocksdb::FileOptions& opts,
                                      std::unique_ptr<rocksdb::FSWritableFile>* result,
                                      rocksdb::IODebugContext* dbg) override;
  rocksdb::IOStatus NewRandomRWFile(const std::string& fname, const rocksdb::FileOptions& opts,
                                    std::unique_ptr<rocksdb::FSRandomRWFile>* result,
                                    rocksdb::IODebugContext* dbg) override;
  rocksdb::IOStatus NewDirectory(const std::string& name, const rocksdb::IOOptions& io_opts,
                                 std::unique_ptr<rocksdb::FSDirectory>* result,
                                 rocksdb::IODebugContext* dbg) override;
  rocksdb::IOStatus DeleteFile(const std::string& fname, const rocksdb::IOOptions& options,
                               rocksdb::IODebugContext* dbg) override;
  rocksdb::IOStatus Truncate(const std::string& fname, size_t size,
                             const rocksdb::IOOptions& options,
                             rocksdb::IODebugContext* dbg) override;
  rocksdb::IOStatus CreateDir(const std::string& dirname, const rocksdb::IOOptions& options,
                              rocksdb::IODebugContext* dbg) override;
  rocksdb::IOStatus CreateDirIfMissing(const std::string& dirname,
                                       const rocksdb::IOOptions& options,
                                       rocksdb::IODebugContext* dbg) override;
  rocksdb::IOStatus DeleteDir(const std::string& dirname, const rocksdb::IOOptions& options,
                              rocksdb::IODebugContext* dbg) override;
  rocksdb::IOStatus RenameFile(const std::string& src, const std::string& target,
                               const rocksdb::IOOptions& options,
                               rocksdb::IODebugContext* dbg) override;
  rocksdb::IOStatus LinkFile(const std::string& src, const std::string& target,
                             const rocksdb::IOOptions& options,
                             rocksdb::IODebugContext* dbg) override;

  // Called by the wrapped files and directories --------------------------------------------------

  // Before an append to `fname`: the error to return instead, or OK.
  rocksdb::IOStatus BeforeAppend(const std::string& fname);
  // After an append or a truncation: the file's size is now `size`.
  void SetSize(const std::string& fname, uint64_t size);
  // Before a sync of `fname` (a file, or a directory when `directory`): the error, or OK.
  rocksdb::IOStatus BeforeSync(const std::string& fname, bool directory);
  void AfterFileSync(const std::string& fname, uint64_t synced_size);
  void AfterDirSync(const std::string& dirname);
  // Any other mutating call (flush, truncate, ...): IOError once the power is lost.
  rocksdb::IOStatus CheckPower(std::string_view what) const;

 private:
  struct FileState {
    uint64_t size = 0;           // bytes written so far
    uint64_t synced_size = 0;    // bytes made durable by the last successful sync
    bool entry_durable = false;  // the directory entry survives a power loss
  };
  // An un-fsynced rename, undone by DropUnsyncedData.
  struct PendingRename {
    std::string src;
    std::string target;
    std::optional<FileState> src_state;       // what `src` was before (nullopt: untracked)
    std::optional<std::string> old_contents;  // durable contents `target` had, if any
  };
  struct Injection {
    std::optional<uint64_t> remaining;  // successes left before failing; nullopt: off
    Scope scope = Scope::kAllFiles;
  };

  bool InScope(const Injection& injection, const std::string& fname, bool directory) const;
  // Tracks `fname` as a file just created by this wrapper (entry not durable yet).
  void TrackNewFile(const std::string& fname, bool existed_durably)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  mutable std::mutex mu_;
  bool power_lost_ ABSL_GUARDED_BY(mu_) = false;
  std::map<std::string, FileState> files_ ABSL_GUARDED_BY(mu_);
  std::vector<PendingRename> renames_ ABSL_GUARDED_BY(mu_);
  Injection sync_error_ ABSL_GUARDED_BY(mu_);
  Injection write_error_ ABSL_GUARDED_BY(mu_);
  uint64_t injected_errors_ ABSL_GUARDED_BY(mu_) = 0;
};

// Builds a FaultInjectionFs from a spec, the value of WHARF_FAULT_FS: comma-separated entries
//   sync_error_after=N    InjectSyncError(N)
//   write_error_after=N   InjectWriteError(N)
//   wal_only              the errors above hit write-ahead logs only
// INVALID_ARGUMENT for anything else (an empty spec, an unknown entry, a bad number).
absl::StatusOr<std::shared_ptr<FaultInjectionFs>> FaultInjectionFsFromSpec(std::string_view spec);

}  // namespace wharf::storage
