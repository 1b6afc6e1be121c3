#include "storage/fault_injection_fs.h"

#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <random>
#include <utility>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"

namespace wharf::storage {
namespace {

using rocksdb::IODebugContext;
using rocksdb::IOOptions;
using rocksdb::IOStatus;

// The directory holding `path` ("a/b/c" -> "a/b"), without trailing slashes.
std::string ParentDir(const std::string& path) {
  const size_t slash = path.find_last_of('/');
  if (slash == std::string::npos) return ".";
  std::string dir = path.substr(0, slash);
  while (dir.size() > 1 && dir.back() == '/') dir.pop_back();
  return dir.empty() ? "/" : dir;
}

std::string NormalizeDir(std::string dir) {
  while (dir.size() > 1 && dir.back() == '/') dir.pop_back();
  return dir;
}

bool IsWal(const std::string& fname) {
  return fname.size() > 4 && fname.compare(fname.size() - 4, 4, ".log") == 0;
}

// A writable file whose appends and syncs are reported to (and may be failed by) the wrapper.
// Thread safety: as FSWritableFile (one writer; Sync may run concurrently when the target says
// IsSyncThreadSafe, hence the atomic size).
class FaultWritableFile final : public rocksdb::FSWritableFileOwnerWrapper {
 public:
  FaultWritableFile(std::unique_ptr<rocksdb::FSWritableFile> target, FaultInjectionFs* fs,
                    std::string fname, uint64_t size)
      : FSWritableFileOwnerWrapper(std::move(target)),
        fs_(fs),
        fname_(std::move(fname)),
        size_(size) {}

  IOStatus Append(const rocksdb::Slice& data, const IOOptions& options,
                  IODebugContext* dbg) override {
    if (IOStatus s = fs_->BeforeAppend(fname_); !s.ok()) return s;
    IOStatus s = target()->Append(data, options, dbg);
    if (s.ok()) fs_->SetSize(fname_, size_ += data.size());
    return s;
  }
  IOStatus Append(const rocksdb::Slice& data, const IOOptions& options,
                  const rocksdb::DataVerificationInfo& info, IODebugContext* dbg) override {
    if (IOStatus s = fs_->BeforeAppend(fname_); !s.ok()) return s;
    IOStatus s = target()->Append(data, options, info, dbg);
    if (s.ok()) fs_->SetSize(fname_, size_ += data.size());
    return s;
  }
  IOStatus PositionedAppend(const rocksdb::Slice& data, uint64_t offset, const IOOptions& options,
                            IODebugContext* dbg) override {
    if (IOStatus s = fs_->BeforeAppend(fname_); !s.ok()) return s;
    IOStatus s = target()->PositionedAppend(data, offset, options, dbg);
    if (s.ok()) Grow(offset + data.size());
    return s;
  }
  IOStatus PositionedAppend(const rocksdb::Slice& data, uint64_t offset, const IOOptions& options,
                            const rocksdb::DataVerificationInfo& info,
                            IODebugContext* dbg) override {
    if (IOStatus s = fs_->BeforeAppend(fname_); !s.ok()) return s;
    IOStatus s = target()->PositionedAppend(data, offset, options, info, dbg);
    if (s.ok()) Grow(offset + data.size());
    return s;
  }
  IOStatus Truncate(uint64_t size, const IOOptions& options, IODebugContext* dbg) override {
    if (IOStatus s = fs_->CheckPower("truncate"); !s.ok()) return s;
    IOStatus s = target()->Truncate(size, options, dbg);
    if (s.ok()) fs_->SetSize(fname_, size_ = size);
    return s;
  }
  IOStatus Flush(const IOOptions& options, IODebugContext* dbg) override {
    if (IOStatus s = fs_->CheckPower("flush"); !s.ok()) return s;
    return target()->Flush(options, dbg);
  }
  IOStatus Sync(const IOOptions& options, IODebugContext* dbg) override {
    return DoSync([&] { return target()->Sync(options, dbg); });
  }
  IOStatus Fsync(const IOOptions& options, IODebugContext* dbg) override {
    return DoSync([&] { return target()->Fsync(options, dbg); });
  }
  IOStatus RangeSync(uint64_t offset, uint64_t nbytes, const IOOptions& options,
                     IODebugContext* dbg) override {
    // sync_file_range starts write-back only: it may fail like a sync, but makes nothing durable.
    if (IOStatus s = fs_->BeforeSync(fname_, /*directory=*/false); !s.ok()) return s;
    return target()->RangeSync(offset, nbytes, options, dbg);
  }
  // Close always reaches the target (it releases the descriptor); what it may still write
  // (nothing for POSIX files) is not durable unless synced, like everything else.

 private:
  template <typename F>
  IOStatus DoSync(F sync) {
    if (IOStatus s = fs_->BeforeSync(fname_, /*directory=*/false); !s.ok()) return s;
    // Only bytes appended before the sync started are covered by it.
    const uint64_t covered = size_.load();
    IOStatus s = sync();
    if (s.ok()) fs_->AfterFileSync(fname_, covered);
    return s;
  }
  void Grow(uint64_t end) {
    uint64_t cur = size_.load();
    while (end > cur && !size_.compare_exchange_weak(cur, end)) {
    }
    fs_->SetSize(fname_, std::max(cur, end));
  }

  FaultInjectionFs* const fs_;
  const std::string fname_;
  std::atomic<uint64_t> size_;
};

// A directory whose fsyncs make the entries of the files in it durable.
class FaultDirectory final : public rocksdb::FSDirectoryWrapper {
 public:
  FaultDirectory(std::unique_ptr<rocksdb::FSDirectory> target, FaultInjectionFs* fs,
                 std::string name)
      : FSDirectoryWrapper(std::move(target)), fs_(fs), name_(std::move(name)) {}

  IOStatus Fsync(const IOOptions& options, IODebugContext* dbg) override {
    if (IOStatus s = fs_->BeforeSync(name_, /*directory=*/true); !s.ok()) return s;
    IOStatus s = FSDirectoryWrapper::Fsync(options, dbg);
    if (s.ok()) fs_->AfterDirSync(name_);
    return s;
  }
  IOStatus FsyncWithDirOptions(const IOOptions& options, IODebugContext* dbg,
                               const rocksdb::DirFsyncOptions& dir_options) override {
    if (IOStatus s = fs_->BeforeSync(name_, /*directory=*/true); !s.ok()) return s;
    IOStatus s = FSDirectoryWrapper::FsyncWithDirOptions(options, dbg, dir_options);
    if (s.ok()) fs_->AfterDirSync(name_);
    return s;
  }

 private:
  FaultInjectionFs* const fs_;
  const std::string name_;
};

}  // namespace

FaultInjectionFs::FaultInjectionFs(std::shared_ptr<rocksdb::FileSystem> target)
    : FileSystemWrapper(target) {}

void FaultInjectionFs::SimulatePowerLoss() {
  std::lock_guard<std::mutex> lock(mu_);
  power_lost_ = true;
}

bool FaultInjectionFs::power_lost() const {
  std::lock_guard<std::mutex> lock(mu_);
  return power_lost_;
}

void FaultInjectionFs::InjectSyncError(uint64_t after_n, Scope scope) {
  std::lock_guard<std::mutex> lock(mu_);
  sync_error_ = {after_n, scope};
}

void FaultInjectionFs::InjectWriteError(uint64_t after_n, Scope scope) {
  std::lock_guard<std::mutex> lock(mu_);
  write_error_ = {after_n, scope};
}

void FaultInjectionFs::ClearErrors() {
  std::lock_guard<std::mutex> lock(mu_);
  sync_error_ = {};
  write_error_ = {};
}

uint64_t FaultInjectionFs::injected_errors() const {
  std::lock_guard<std::mutex> lock(mu_);
  return injected_errors_;
}

bool FaultInjectionFs::InScope(const Injection& injection, const std::string& fname,
                               bool directory) const {
  if (!injection.remaining.has_value()) return false;
  if (injection.scope == Scope::kAllFiles) return true;
  return !directory && IsWal(fname);
}

IOStatus FaultInjectionFs::CheckPower(std::string_view what) const {
  std::lock_guard<std::mutex> lock(mu_);
  if (power_lost_) {
    return IOStatus::IOError(absl::StrCat("simulated power loss: ", std::string(what), " refused"));
  }
  return IOStatus::OK();
}

IOStatus FaultInjectionFs::BeforeAppend(const std::string& fname) {
  std::lock_guard<std::mutex> lock(mu_);
  if (power_lost_) return IOStatus::IOError("simulated power loss: append refused", fname);
  if (InScope(write_error_, fname, false)) {
    if (*write_error_.remaining == 0) {
      ++injected_errors_;
      return IOStatus::NoSpace("injected write error (ENOSPC)", fname);
    }
    --*write_error_.remaining;
  }
  return IOStatus::OK();
}

void FaultInjectionFs::SetSize(const std::string& fname, uint64_t size) {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = files_.find(fname);
  if (it == files_.end()) return;  // not created through this wrapper: durable as it is
  it->second.size = size;
  it->second.synced_size = std::min(it->second.synced_size, size);
}

IOStatus FaultInjectionFs::BeforeSync(const std::string& fname, bool directory) {
  std::lock_guard<std::mutex> lock(mu_);
  if (power_lost_) return IOStatus::IOError("simulated power loss: sync refused", fname);
  if (InScope(sync_error_, fname, directory)) {
    if (*sync_error_.remaining == 0) {
      ++injected_errors_;
      return IOStatus::IOError("injected sync error (EIO)", fname);
    }
    --*sync_error_.remaining;
  }
  return IOStatus::OK();
}

void FaultInjectionFs::AfterFileSync(const std::string& fname, uint64_t synced_size) {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = files_.find(fname);
  if (it == files_.end()) return;
  it->second.synced_size = std::max(it->second.synced_size, synced_size);
}

void FaultInjectionFs::AfterDirSync(const std::string& dirname) {
  const std::string dir = NormalizeDir(dirname);
  std::lock_guard<std::mutex> lock(mu_);
  for (auto& [name, state] : files_) {
    if (ParentDir(name) == dir) state.entry_durable = true;
  }
  std::erase_if(renames_, [&](const PendingRename& r) { return ParentDir(r.target) == dir; });
}

void FaultInjectionFs::TrackNewFile(const std::string& fname, bool existed_durably) {
  FileState& st = files_[fname];
  st = FileState{};
  st.entry_durable = existed_durably;
}

IOStatus FaultInjectionFs::NewWritableFile(const std::string& fname,
                                           const rocksdb::FileOptions& opts,
                                           std::unique_ptr<rocksdb::FSWritableFile>* result,
                                           IODebugContext* dbg) {
  if (IOStatus s = CheckPower("create"); !s.ok()) return s;
  const bool existed = target()->FileExists(fname, opts.io_options, dbg).ok();
  std::unique_ptr<rocksdb::FSWritableFile> file;
  IOStatus s = target()->NewWritableFile(fname, opts, &file, dbg);
  if (!s.ok()) return s;
  {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = files_.find(fname);
    // An existing name keeps its durable entry (the file is truncated, its inode stays).
    TrackNewFile(fname, existed && (it == files_.end() || it->second.entry_durable));
  }
  *result = std::make_unique<FaultWritableFile>(std::move(file), this, fname, 0);
  return s;
}

IOStatus FaultInjectionFs::ReopenWritableFile(const std::string& fname,
                                              const rocksdb::FileOptions& opts,
                                              std::unique_ptr<rocksdb::FSWritableFile>* result,
                                              IODebugContext* dbg) {
  if (IOStatus s = CheckPower("reopen"); !s.ok()) return s;
  const bool existed = target()->FileExists(fname, opts.io_options, dbg).ok();
  std::unique_ptr<rocksdb::FSWritableFile> file;
  IOStatus s = target()->ReopenWritableFile(fname, opts, &file, dbg);
  if (!s.ok()) return s;
  uint64_t size = 0;
  if (!target()->GetFileSize(fname, opts.io_options, &size, dbg).ok()) size = 0;
  {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = files_.find(fname);
    if (it == files_.end()) {
      // Untracked: what it holds now is durable; appends from here on are not until synced.
      FileState st;
      st.size = size;
      st.synced_size = size;
      st.entry_durable = existed;
      files_[fname] = st;
    }
  }
  *result = std::make_unique<FaultWritableFile>(std::move(file), this, fname, size);
  return s;
}

IOStatus FaultInjectionFs::ReuseWritableFile(const std::string& fname, const std::string& old_fname,
                                             const rocksdb::FileOptions& opts,
                                             std::unique_ptr<rocksdb::FSWritableFile>* result,
                                             IODebugContext* dbg) {
  // The base implementation (rename, then open for writing) goes through the overrides here.
  return FileSystem::ReuseWritableFile(fname, old_fname, opts, result, dbg);
}

IOStatus FaultInjectionFs::NewRandomRWFile(const std::string& fname,
                                           const rocksdb::FileOptions& opts,
                                           std::unique_ptr<rocksdb::FSRandomRWFile>* result,
                                           IODebugContext* dbg) {
  // Not tracked: Wharf's RocksDB configuration does not use random read-write files (external
  // file ingestion does). Refused once the power is lost, like every other write.
  if (IOStatus s = CheckPower("open for random writes"); !s.ok()) return s;
  return target()->NewRandomRWFile(fname, opts, result, dbg);
}

IOStatus FaultInjectionFs::NewDirectory(const std::string& name, const IOOptions& io_opts,
                                        std::unique_ptr<rocksdb::FSDirectory>* result,
                                        IODebugContext* dbg) {
  std::unique_ptr<rocksdb::FSDirectory> dir;
  IOStatus s = target()->NewDirectory(name, io_opts, &dir, dbg);
  if (!s.ok()) return s;
  *result = std::make_unique<FaultDirectory>(std::move(dir), this, NormalizeDir(name));
  return s;
}

IOStatus FaultInjectionFs::DeleteFile(const std::string& fname, const IOOptions& options,
                                      IODebugContext* dbg) {
  if (IOStatus s = CheckPower("delete"); !s.ok()) return s;
  IOStatus s = target()->DeleteFile(fname, options, dbg);
  if (s.ok()) {
    std::lock_guard<std::mutex> lock(mu_);
    files_.erase(fname);
    std::erase_if(renames_, [&](const PendingRename& r) { return r.target == fname; });
  }
  return s;
}

IOStatus FaultInjectionFs::Truncate(const std::string& fname, size_t size, const IOOptions& options,
                                    IODebugContext* dbg) {
  if (IOStatus s = CheckPower("truncate"); !s.ok()) return s;
  IOStatus s = target()->Truncate(fname, size, options, dbg);
  if (s.ok()) SetSize(fname, size);
  return s;
}

IOStatus FaultInjectionFs::CreateDir(const std::string& dirname, const IOOptions& options,
                                     IODebugContext* dbg) {
  if (IOStatus s = CheckPower("mkdir"); !s.ok()) return s;
  return target()->CreateDir(dirname, options, dbg);
}

IOStatus FaultInjectionFs::CreateDirIfMissing(const std::string& dirname, const IOOptions& options,
                                              IODebugContext* dbg) {
  if (IOStatus s = CheckPower("mkdir"); !s.ok()) return s;
  return target()->CreateDirIfMissing(dirname, options, dbg);
}

IOStatus FaultInjectionFs::DeleteDir(const std::string& dirname, const IOOptions& options,
                                     IODebugContext* dbg) {
  if (IOStatus s = CheckPower("rmdir"); !s.ok()) return s;
  return target()->DeleteDir(dirname, options, dbg);
}

IOStatus FaultInjectionFs::RenameFile(const std::string& src, const std::string& target_name,
                                      const IOOptions& options, IODebugContext* dbg) {
  if (IOStatus s = CheckPower("rename"); !s.ok()) return s;
  PendingRename pending;
  pending.src = src;
  pending.target = target_name;
  {
    // What the target durably holds now comes back if the rename is lost (e.g. the previous
    // CURRENT file). Read before taking the lock: the read goes to the target file system.
    std::string contents;
    if (rocksdb::ReadFileToString(target(), target_name, &contents).ok()) {
      std::lock_guard<std::mutex> lock(mu_);
      auto it = files_.find(target_name);
      if (it == files_.end()) {
        pending.old_contents = std::move(contents);
      } else if (it->second.entry_durable) {
        contents.resize(std::min<uint64_t>(contents.size(), it->second.synced_size));
        pending.old_contents = std::move(contents);
      }
    }
  }
  IOStatus s = target()->RenameFile(src, target_name, options, dbg);
  if (!s.ok()) return s;
  std::lock_guard<std::mutex> lock(mu_);
  FileState moved;
  auto it = files_.find(src);
  if (it != files_.end()) {
    pending.src_state = it->second;
    moved = it->second;
    files_.erase(it);
  } else {
    // Untracked source: its bytes are durable; only the new name is not yet.
    uint64_t size = 0;
    if (!target()->GetFileSize(target_name, options, &size, dbg).ok()) size = 0;
    moved.size = size;
    moved.synced_size = size;
  }
  moved.entry_durable = false;
  files_[target_name] = moved;
  renames_.push_back(std::move(pending));
  return s;
}

IOStatus FaultInjectionFs::LinkFile(const std::string& src, const std::string& target_name,
                                    const IOOptions& options, IODebugContext* dbg) {
  // Not tracked (Wharf's RocksDB configuration links files only for checkpoints and ingestion,
  // which it does not use); refused once the power is lost.
  if (IOStatus s = CheckPower("link"); !s.ok()) return s;
  return target()->LinkFile(src, target_name, options, dbg);
}

absl::Status FaultInjectionFs::DropUnsyncedData(uint64_t keep_random_unsynced_seed) {
  std::lock_guard<std::mutex> lock(mu_);
  const IOOptions io;
  std::mt19937_64 rng(keep_random_unsynced_seed);
  auto fail = [](const IOStatus& s, const std::string& what) {
    return absl::InternalError(absl::StrCat("dropping unsynced data: ", what, ": ", s.ToString()));
  };
  // 1. Undo renames whose directory was not fsynced afterwards, newest first.
  for (auto r = renames_.rbegin(); r != renames_.rend(); ++r) {
    std::optional<FileState> state;
    if (auto it = files_.find(r->target); it != files_.end()) {
      state = it->second;
      files_.erase(it);
    }
    if (target()->FileExists(r->target, io, nullptr).ok()) {
      if (IOStatus s = target()->RenameFile(r->target, r->src, io, nullptr); !s.ok()) {
        return fail(s, "undoing rename of " + r->src);
      }
      // The data stays as synced through either name; the old name's entry is as it was.
      FileState back = state.value_or(FileState{});
      if (!state.has_value()) {
        uint64_t size = 0;
        if (!target()->GetFileSize(r->src, io, &size, nullptr).ok()) size = 0;
        back.size = back.synced_size = size;
      }
      back.entry_durable = !r->src_state.has_value() || r->src_state->entry_durable;
      files_[r->src] = back;
    }
    if (r->old_contents.has_value()) {
      if (IOStatus s = rocksdb::WriteStringToFile(target(), *r->old_contents, r->target,
                                                  /*should_sync=*/true);
          !s.ok()) {
        return fail(s, "restoring " + r->target);
      }
      files_.erase(r->target);
    }
  }
  renames_.clear();
  // 2. Files: lose what was never synced.
  for (const auto& [name, state] : files_) {
    if (!target()->FileExists(name, io, nullptr).ok()) continue;
    if (!state.entry_durable) {
      if (IOStatus s = target()->DeleteFile(name, io, nullptr); !s.ok()) {
        return fail(s, "deleting " + name);
      }
      continue;
    }
    uint64_t size = 0;
    if (IOStatus s = target()->GetFileSize(name, io, &size, nullptr); !s.ok()) {
      return fail(s, "sizing " + name);
    }
    if (size <= state.synced_size) continue;
    uint64_t keep = state.synced_size;
    if (keep_random_unsynced_seed != 0) {
      // Write-back often completes whole: a third each of none, all, a random prefix.
      const uint64_t unsynced = size - state.synced_size;
      switch (rng() % 3) {
        case 0:
          break;
        case 1:
          keep += unsynced;
          break;
        default:
          keep += rng() % (unsynced + 1);
      }
    }
    if (keep == size) continue;
    IOStatus s = target()->Truncate(name, keep, io, nullptr);
    if (s.IsNotSupported() && ::truncate(name.c_str(), static_cast<off_t>(keep)) == 0) {
      s = IOStatus::OK();  // RocksDB's POSIX file system has no Truncate; the file is local
    }
    if (!s.ok()) return fail(s, "truncating " + name);
  }
  files_.clear();
  power_lost_ = false;
  return absl::OkStatus();
}

absl::StatusOr<std::shared_ptr<FaultInjectionFs>> FaultInjectionFsFromSpec(std::string_view spec) {
  std::optional<uint64_t> sync_after, write_after;
  bool wal_only = false;
  const std::string text(spec);
  for (absl::string_view entry : absl::StrSplit(text, ',', absl::SkipWhitespace())) {
    entry = absl::StripAsciiWhitespace(entry);
    std::pair<std::string, std::string> kv = absl::StrSplit(entry, absl::MaxSplits('=', 1));
    uint64_t n = 0;
    if (kv.first == "wal_only" && kv.second.empty() && entry.find('=') == entry.npos) {
      wal_only = true;
    } else if ((kv.first == "sync_error_after" || kv.first == "write_error_after") &&
               absl::SimpleAtoi(kv.second, &n)) {
      (kv.first == "sync_error_after" ? sync_after : write_after) = n;
    } else {
      return absl::InvalidArgumentError(absl::StrCat(
          "fault file system spec \"", text, "\": unknown or malformed entry \"",
          std::string(entry),
          "\" (expected sync_error_after=N, write_error_after=N, wal_only, comma-separated)"));
    }
  }
  if (!sync_after && !write_after) {
    return absl::InvalidArgumentError(absl::StrCat("fault file system spec \"", text,
                                                   "\" injects nothing (need sync_error_after=N or "
                                                   "write_error_after=N)"));
  }
  auto fs = std::make_shared<FaultInjectionFs>();
  const auto scope =
      wal_only ? FaultInjectionFs::Scope::kWalFiles : FaultInjectionFs::Scope::kAllFiles;
  if (sync_after) fs->InjectSyncError(*sync_after, scope);
  if (write_after) fs->InjectWriteError(*write_after, scope);
  return fs;
}

}  // namespace wharf::storage
