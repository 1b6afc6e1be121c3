#pragma once

#include <sys/types.h>

#include <cstdint>
#include <string>
#include <string_view>
#include <utility>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

// Low-level file helpers shared by the file destinations (FileDestination,
// RollingFileDestination): descriptor ownership, EINTR-safe system calls, directory fsync and
// error classification.
//
// Error classification (ErrnoError): errnos that can go away by themselves (ENOSPC, EIO,
// EAGAIN, ...) become UNAVAILABLE, so the pipeline retries; everything else INTERNAL. `who`
// prefixes every message ("file destination", ...), so an operator sees which component failed.
//
// Thread safety: all functions are thread-safe (no shared state); a ScopedFd has one owner.
namespace wharf::pipeline::file_util {

// Debian's Abseil is built with its own absl::string_view (not an alias of std::string_view), so
// std::string_view arguments of absl::StrCat and friends go through this.
inline absl::string_view Absl(std::string_view s) { return absl::string_view(s.data(), s.size()); }

// strerror_r text of `err`.
std::string ErrnoText(int err);

// True for errnos that may clear without intervention (full disk, I/O hiccup, ...).
bool IsTransientErrno(int err);

// An error for a failed system call `op` on `path`, naming both and the errno text:
// "<who>: <op> <path>: <text> (errno N)". UNAVAILABLE if IsTransientErrno(err), else INTERNAL.
absl::Status ErrnoError(std::string_view who, int err, std::string_view op, std::string_view path);

// Closes the descriptor on destruction unless Close() was called.
// Thread safety: not thread-safe; one owner.
class ScopedFd {
 public:
  ScopedFd() : fd_(-1) {}
  explicit ScopedFd(int fd) : fd_(fd) {}
  ScopedFd(const ScopedFd&) = delete;
  ScopedFd& operator=(const ScopedFd&) = delete;
  ScopedFd(ScopedFd&& other) noexcept : fd_(std::exchange(other.fd_, -1)) {}
  ScopedFd& operator=(ScopedFd&& other) noexcept;
  ~ScopedFd();

  int get() const { return fd_; }
  bool valid() const { return fd_ >= 0; }

  // Returns 0 or the errno of close(2). EINTR counts as closed: on Linux the descriptor is
  // released anyway, and retrying could close a descriptor another thread just opened.
  int Close();

 private:
  int fd_;
};

// open(2), retried on EINTR. Returns the descriptor or -1 with errno set.
int OpenRetrying(const char* path, int flags, mode_t mode = 0);

// fsync(2), retried on EINTR. Returns 0 or -1 with errno set.
int FsyncRetrying(int fd);

// Writes all of `data`, continuing after short writes and EINTR. Returns 0 or an errno.
int WriteAll(int fd, std::string_view data);

// pwrite(2)s all of `data` at `offset`, continuing after short writes and EINTR. Returns 0 or an
// errno.
int PwriteAll(int fd, std::string_view data, uint64_t offset);

// `directory` + "/" + `name` (no doubled slash for the root directory).
std::string JoinPath(std::string_view directory, std::string_view name);

// The directory part of `path` ("." if none, "/" for top-level entries).
std::string ParentOf(std::string_view path);

// Opens `directory` and fsyncs it, making entries created, renamed or removed in it durable.
absl::Status SyncDirectoryAt(std::string_view who, const std::string& directory);

// Absolute, without trailing slashes (except for "/" itself), without empty or "." components.
// A relative path is resolved against the working directory. INVALID_ARGUMENT when empty.
absl::StatusOr<std::string> NormalizeDirectory(std::string_view who, const std::string& directory);

// mkdir -p of a normalized directory. With `sync`, the parent of every directory created is
// fsynced. FAILED_PRECONDITION when a component exists and is not a directory.
absl::Status MakeDirectories(std::string_view who, const std::string& directory, bool sync);

}  // namespace wharf::pipeline::file_util
