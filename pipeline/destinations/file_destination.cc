#include "pipeline/destinations/file_destination.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cinttypes>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <ctime>
#include <string>
#include <string_view>
#include <utility>

#include "absl/strings/str_cat.h"
#include "pipeline/destinations/file_util.h"
#include "storage/keys.h"

namespace wharf::pipeline {
namespace {

constexpr std::string_view kFinalSuffix = ".jsonl";
constexpr std::string_view kTempSuffix = ".tmp";

constexpr std::string_view kWho = "file destination";

using file_util::Absl;
using file_util::FsyncRetrying;
using file_util::JoinPath;
using file_util::OpenRetrying;
using file_util::ScopedFd;
using file_util::WriteAll;

absl::Status ErrnoError(int err, std::string_view op, std::string_view path) {
  return file_util::ErrnoError(kWho, err, op, path);
}

// Best effort; a temporary file that cannot be removed is harmless (its name is unique and the
// next Create() removes it).
void RemoveQuietly(const std::string& path) { ::unlink(path.c_str()); }

// A random token per process, part of every temporary file name: it makes temporary names unique
// across processes (also when a restarted wharfd gets the same pid, e.g. pid 1 in a container)
// and lets Create() tell temporary files of this process (in-flight deliveries of sibling
// instances) from leftovers of a crashed one.
const std::string& ProcessToken() {
  static const std::string* const token = [] {
    uint64_t value = 0;
    if (::getrandom(&value, sizeof(value), 0) != static_cast<ssize_t>(sizeof(value))) {
      timespec ts{};
      ::clock_gettime(CLOCK_REALTIME, &ts);
      value = (uint64_t{static_cast<uint32_t>(::getpid())} << 32) ^
              static_cast<uint64_t>(ts.tv_nsec) ^ (static_cast<uint64_t>(ts.tv_sec) << 20);
    }
    char buf[17];
    std::snprintf(buf, sizeof(buf), "%016" PRIx64, value);
    return new std::string(buf);
  }();
  return *token;
}

// `.<base>.<process token>-<n>.tmp`; unique within the process thanks to the counter.
std::string TempNameFor(std::string_view base) {
  static std::atomic<uint64_t> counter{0};
  return absl::StrCat(".", Absl(base), ".", ProcessToken(), "-",
                      counter.fetch_add(1, std::memory_order_relaxed), Absl(kTempSuffix));
}

// The temporary file pattern Create() cleans: dot-prefixed, a ".jsonl." inside, ".tmp" at the
// end. Neither final files (which start with a dataset name, i.e. a letter or digit, and end in
// ".jsonl") nor typical foreign files match.
bool IsTempName(std::string_view name) {
  return name.size() > 1 && name[0] == '.' && name.ends_with(kTempSuffix) &&
         name.find(".jsonl.") != std::string_view::npos;
}

std::string FileNameFor(const wharf::v1::BatchManifest& m) {
  char suffix[80];
  std::snprintf(suffix, sizeof(suffix), "-p%04" PRIu32 "-%020" PRIu64 "-%020" PRIu64, m.partition(),
                m.first_offset(), m.last_offset());
  return absl::StrCat(m.dataset(), suffix, Absl(kFinalSuffix));
}

absl::Status SyncDirectoryAt(const std::string& directory) {
  return file_util::SyncDirectoryAt(kWho, directory);
}

// Creates and removes a file, to fail at startup rather than at the first delivery when the
// directory is not writable (permissions, read-only or immutable file system, ...). The probe is
// named like a temporary file, so a crash before its removal leaves nothing Create() would not
// clean up; its creation is not fsynced since nothing depends on it (if power loss brings a
// removed probe back, it is a leftover temporary file of a dead process and removed then).
absl::Status ProbeWritable(const std::string& directory) {
  const std::string probe = JoinPath(directory, TempNameFor("wharf-write-probe.jsonl"));
  ScopedFd fd(OpenRetrying(probe.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644));
  if (fd.get() < 0) {
    const int err = errno;  // before anything else can change it
    return ErrnoError(err, absl::StrCat("directory ", directory, " is not writable: create"),
                      probe);
  }
  const int close_err = fd.Close();
  if (::unlink(probe.c_str()) != 0) return ErrnoError(errno, "unlink", probe);
  if (close_err != 0) return ErrnoError(close_err, "close", probe);
  return absl::OkStatus();
}

// Removes temporary files of other (crashed) processes. Files of this process are left alone:
// they may belong to a concurrent delivery of another instance sharing the directory. (Should a
// second live process share the directory, its in-flight temporary file may be removed; its
// rename then fails, nothing becomes visible, and the delivery is retried.)
absl::Status RemoveLeftoverTempFiles(const std::string& directory) {
  DIR* dir = ::opendir(directory.c_str());
  if (dir == nullptr) return ErrnoError(errno, "opendir", directory);
  const std::string own_marker = absl::StrCat(".", ProcessToken(), "-");
  absl::Status status = absl::OkStatus();
  while (true) {
    errno = 0;
    const dirent* entry = ::readdir(dir);
    if (entry == nullptr) {
      if (errno != 0) status = ErrnoError(errno, "readdir", directory);
      break;
    }
    const std::string_view name = entry->d_name;
    if (!IsTempName(name) || name.find(own_marker) != std::string_view::npos) continue;
    bool regular = entry->d_type == DT_REG;
    if (entry->d_type == DT_UNKNOWN) {
      struct stat st {};
      regular = ::fstatat(::dirfd(dir), entry->d_name, &st, AT_SYMLINK_NOFOLLOW) == 0 &&
                S_ISREG(st.st_mode);
    }
    if (!regular) continue;
    // Safe across crashes: a temporary file is never renamed by anyone but the delivery that
    // created it, which belonged to a dead process; losing it only means that batch is written
    // again. Not fsynced: should the removal be lost, the next Create() removes it again.
    if (::unlinkat(::dirfd(dir), entry->d_name, 0) != 0 && errno != ENOENT) {
      status = ErrnoError(errno, "unlink leftover temporary file", JoinPath(directory, name));
      break;
    }
  }
  ::closedir(dir);
  return status;
}

}  // namespace

absl::StatusOr<std::unique_ptr<FileDestination>> FileDestination::Create(
    FileDestinationOptions options) {
  absl::StatusOr<std::string> directory = file_util::NormalizeDirectory(kWho, options.directory);
  if (!directory.ok()) return directory.status();
  options.directory = *std::move(directory);
  if (absl::Status s = file_util::MakeDirectories(kWho, options.directory, options.fsync); !s.ok())
    return s;
  if (absl::Status s = ProbeWritable(options.directory); !s.ok()) return s;
  if (absl::Status s = RemoveLeftoverTempFiles(options.directory); !s.ok()) return s;
  std::unique_ptr<FileDestination> destination(new FileDestination(std::move(options)));
  // With fsync, fail now if the file system cannot fsync a directory (some network and FUSE file
  // systems cannot) rather than on every delivery.
  if (absl::Status s = destination->SyncDirectory(); !s.ok()) return s;
  return destination;
}

std::string FileDestination::PathFor(const wharf::v1::BatchManifest& m) const {
  return JoinPath(options_.directory, FileNameFor(m));
}

absl::Status FileDestination::SyncDirectory() const {
  if (!options_.fsync) return absl::OkStatus();
  return SyncDirectoryAt(options_.directory);
}

absl::StatusOr<bool> FileDestination::CheckDelivered(const std::string& final_path,
                                                     uint64_t expected_size,
                                                     const std::string& batch_id) const {
  // O_NONBLOCK: never block opening a FIFO someone put there; no effect on regular files.
  // O_NOFOLLOW: a symbolic link is not something this destination wrote.
  ScopedFd fd(OpenRetrying(final_path.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK | O_NOFOLLOW));
  if (fd.get() < 0) {
    if (errno == ENOENT) return false;
    if (errno == ELOOP) {
      return absl::DataLossError(absl::StrCat("file destination: ", final_path, " (batch ",
                                              batch_id,
                                              ") exists as a symbolic link; refusing "
                                              "to deliver over it"));
    }
    return ErrnoError(errno, "open", final_path);
  }
  struct stat st {};
  if (::fstat(fd.get(), &st) != 0) return ErrnoError(errno, "fstat", final_path);
  if (!S_ISREG(st.st_mode)) {
    return absl::DataLossError(absl::StrCat("file destination: ", final_path, " (batch ", batch_id,
                                            ") exists and is not a regular file; refusing to "
                                            "deliver over it"));
  }
  if (static_cast<uint64_t>(st.st_size) != expected_size) {
    return absl::DataLossError(
        absl::StrCat("file destination: ", final_path, " (batch ", batch_id, ") exists with ",
                     st.st_size, " bytes but the batch renders to ", expected_size,
                     " bytes; the destination file is corrupt or was changed; not overwriting it"));
  }
  // The file exists, so it was complete and (if the writer had fsync on) fsynced before its
  // rename. But the writer may have been killed between the rename and the directory fsync, so
  // the rename itself may not be durable yet: sync file and directory again before reporting
  // "delivered", since the caller advances its cursor on OK.
  if (options_.fsync) {
    if (FsyncRetrying(fd.get()) != 0) return ErrnoError(errno, "fsync", final_path);
  }
  if (const int err = fd.Close(); err != 0) return ErrnoError(err, "close", final_path);
  if (absl::Status s = SyncDirectory(); !s.ok()) return s;
  return true;
}

absl::Status FileDestination::Publish(const std::string& temp_path, const std::string& final_path,
                                      uint64_t expected_size, const std::string& batch_id) const {
  // renameat2(RENAME_NOREPLACE) is atomic and fails with EEXIST instead of replacing a final file
  // that appeared since CheckDelivered() (a concurrent delivery of the same batch, or a foreign
  // file): the existing file is never overwritten. Crash safety: after kill -9 or power loss the
  // directory holds either the temporary name or the final name for this inode, never both nor
  // a partial file, since the data was complete (and, with fsync, on disk) before the rename. The
  // caller fsyncs the directory before reporting success.
  if (::renameat2(AT_FDCWD, temp_path.c_str(), AT_FDCWD, final_path.c_str(), RENAME_NOREPLACE) ==
      0) {
    return absl::OkStatus();
  }
  const int err = errno;
  if (err == EEXIST) {
    RemoveQuietly(temp_path);
    absl::StatusOr<bool> delivered = CheckDelivered(final_path, expected_size, batch_id);
    if (!delivered.ok()) return delivered.status();
    if (*delivered) return absl::OkStatus();
    return absl::UnavailableError(
        absl::StrCat("file destination: ", final_path, " appeared and vanished during delivery"));
  }
  if (err != EINVAL && err != ENOSYS && err != EOPNOTSUPP) {
    RemoveQuietly(temp_path);
    return ErrnoError(err, "rename to", final_path);
  }
  // The file system does not support RENAME_NOREPLACE. Check, then rename(2). The window between
  // the two can only be hit by a concurrent delivery of the same batch (excluded by the
  // Destination contract), which would replace the file with identical content.
  absl::StatusOr<bool> delivered = CheckDelivered(final_path, expected_size, batch_id);
  if (!delivered.ok() || *delivered) {
    RemoveQuietly(temp_path);
    return delivered.ok() ? absl::OkStatus() : delivered.status();
  }
  if (::rename(temp_path.c_str(), final_path.c_str()) != 0) {
    const int rename_err = errno;
    RemoveQuietly(temp_path);
    return ErrnoError(rename_err, "rename to", final_path);
  }
  return absl::OkStatus();
}

absl::Status FileDestination::Deliver(const wharf::v1::StoredBatch& batch, DeliveryReport* report) {
  const wharf::v1::BatchManifest& m = batch.manifest();
  // The dataset name becomes part of a path: only valid Wharf names (no '/', no leading '.')
  // are accepted, so the file can only land in the directory and never looks temporary.
  if (absl::Status s = storage::ValidateName("dataset", m.dataset()); !s.ok()) {
    // Not INVALID_ARGUMENT: that would quarantine the records; this is a configuration error.
    return absl::FailedPreconditionError(
        absl::StrCat("file destination: batch ", m.batch_id(), ": ", s.message()));
  }
  const std::string name = FileNameFor(m);
  report->commit_id = name;
  const std::string final_path = JoinPath(options_.directory, name);
  uint64_t expected_size = 0;
  for (const wharf::v1::BatchRecord& record : batch.records()) {
    expected_size += record.payload().size() + 1;
  }

  absl::StatusOr<bool> delivered = CheckDelivered(final_path, expected_size, m.batch_id());
  if (!delivered.ok()) return delivered.status();
  if (*delivered) {  // Delivered before: idempotent.
    report->already_delivered = true;
    return absl::OkStatus();
  }

  // Render the whole file first, then write it in large chunks.
  std::string content;
  content.reserve(expected_size);
  for (const wharf::v1::BatchRecord& record : batch.records()) {
    const size_t start = content.size();
    content.append(record.payload());
    // A line break inside a payload would split its line: CR and LF become spaces. Payloads
    // rarely hold any (compact JSON never does), so they are searched for with memchr
    // (vectorised) rather than by testing every byte.
    char* const end = content.data() + content.size();
    for (const char c : {'\n', '\r'}) {
      char* p = content.data() + start;
      while ((p = static_cast<char*>(std::memchr(p, c, static_cast<size_t>(end - p)))) != nullptr) {
        *p++ = ' ';
      }
    }
    content.push_back('\n');
  }

  // Crash safety: the data goes to a uniquely named temporary file that is fsynced before the
  // atomic rename to the final name, and the directory is fsynced after it. A kill -9 or power
  // loss at any point leaves either no final file (plus maybe a temporary file, removed by the
  // next Create(); the batch is then delivered again) or a complete final file: the rename is
  // ordered after the file's data reached the disk. If fsync fails, the page cache state of the
  // file is unknown, so the temporary file is discarded and the next attempt starts over.
  const std::string temp_path = JoinPath(options_.directory, TempNameFor(name));
  {
    ScopedFd fd(OpenRetrying(temp_path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644));
    if (fd.get() < 0) return ErrnoError(errno, "create", temp_path);
    if (const int err = WriteAll(fd.get(), content); err != 0) {
      RemoveQuietly(temp_path);
      return ErrnoError(err, "write", temp_path);
    }
    if (options_.fsync && FsyncRetrying(fd.get()) != 0) {
      const int err = errno;
      RemoveQuietly(temp_path);
      return ErrnoError(err, "fsync", temp_path);
    }
    if (const int err = fd.Close(); err != 0) {
      RemoveQuietly(temp_path);
      return ErrnoError(err, "close", temp_path);
    }
  }
  if (absl::Status s = Publish(temp_path, final_path, expected_size, m.batch_id()); !s.ok()) {
    return s;
  }
  // Makes the rename durable. If this fails the file is already visible under its final name;
  // the retry then finds it and syncs again (CheckDelivered) before reporting success.
  return SyncDirectory();
}

}  // namespace wharf::pipeline
