#include "pipeline/destinations/file_util.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "absl/strings/str_cat.h"

namespace wharf::pipeline::file_util {
namespace {

// Upper bound of one write(2) call; Linux transfers at most ~2 GiB per call anyway.
constexpr size_t kMaxWriteChunk = size_t{1} << 30;

}  // namespace

std::string ErrnoText(int err) {
  char buf[256];
  // GNU strerror_r: returns a pointer to the message (static or in `buf`); thread-safe.
  return strerror_r(err, buf, sizeof(buf));
}

bool IsTransientErrno(int err) {
  switch (err) {
    case ENOSPC:
    case EDQUOT:
    case EIO:
    case EAGAIN:
    case EINTR:
    case ENOMEM:
    case EBUSY:
    case ETIMEDOUT:
    case ESTALE:
      return true;
    default:
      return false;
  }
}

absl::Status ErrnoError(std::string_view who, int err, std::string_view op, std::string_view path) {
  const std::string message = absl::StrCat(Absl(who), ": ", Absl(op), " ", Absl(path), ": ",
                                           ErrnoText(err), " (errno ", err, ")");
  if (IsTransientErrno(err)) return absl::UnavailableError(message);
  return absl::InternalError(message);
}

ScopedFd& ScopedFd::operator=(ScopedFd&& other) noexcept {
  if (this != &other) {
    if (fd_ >= 0) ::close(fd_);
    fd_ = std::exchange(other.fd_, -1);
  }
  return *this;
}

ScopedFd::~ScopedFd() {
  if (fd_ >= 0) ::close(fd_);
}

int ScopedFd::Close() {
  const int fd = std::exchange(fd_, -1);
  if (fd < 0 || ::close(fd) == 0 || errno == EINTR) return 0;
  return errno;
}

int OpenRetrying(const char* path, int flags, mode_t mode) {
  int fd;
  do {
    fd = ::open(path, flags, mode);
  } while (fd < 0 && errno == EINTR);
  return fd;
}

int FsyncRetrying(int fd) {
  int rc;
  do {
    rc = ::fsync(fd);
  } while (rc != 0 && errno == EINTR);
  return rc;
}

int WriteAll(int fd, std::string_view data) {
  size_t done = 0;
  while (done < data.size()) {
    const size_t chunk = std::min(data.size() - done, kMaxWriteChunk);
    const ssize_t n = ::write(fd, data.data() + done, chunk);
    if (n < 0) {
      if (errno == EINTR) continue;
      return errno;
    }
    if (n == 0) return EIO;  // No progress on a regular file: treat as an I/O error.
    done += static_cast<size_t>(n);
  }
  return 0;
}

int PwriteAll(int fd, std::string_view data, uint64_t offset) {
  size_t done = 0;
  while (done < data.size()) {
    const size_t chunk = std::min(data.size() - done, kMaxWriteChunk);
    const ssize_t n = ::pwrite(fd, data.data() + done, chunk, static_cast<off_t>(offset + done));
    if (n < 0) {
      if (errno == EINTR) continue;
      return errno;
    }
    if (n == 0) return EIO;
    done += static_cast<size_t>(n);
  }
  return 0;
}

std::string JoinPath(std::string_view directory, std::string_view name) {
  if (directory == "/") return absl::StrCat("/", Absl(name));
  return absl::StrCat(Absl(directory), "/", Absl(name));
}

std::string ParentOf(std::string_view path) {
  const size_t slash = path.rfind('/');
  if (slash == std::string_view::npos) return ".";
  if (slash == 0) return "/";
  return std::string(path.substr(0, slash));
}

absl::Status SyncDirectoryAt(std::string_view who, const std::string& directory) {
  ScopedFd fd(OpenRetrying(directory.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (fd.get() < 0) return ErrnoError(who, errno, "open directory", directory);
  if (FsyncRetrying(fd.get()) != 0) return ErrnoError(who, errno, "fsync directory", directory);
  if (const int err = fd.Close(); err != 0) {
    return ErrnoError(who, err, "close directory", directory);
  }
  return absl::OkStatus();
}

absl::StatusOr<std::string> NormalizeDirectory(std::string_view who, const std::string& directory) {
  if (directory.empty()) {
    return absl::InvalidArgumentError(absl::StrCat(Absl(who), ": directory must not be empty"));
  }
  std::string path;
  if (directory[0] != '/') {
    char cwd[4096];
    if (::getcwd(cwd, sizeof(cwd)) == nullptr) {
      return ErrnoError(who, errno, "getcwd for", directory);
    }
    path = cwd;
  }
  size_t pos = 0;
  while (pos < directory.size()) {
    size_t end = directory.find('/', pos);
    if (end == std::string::npos) end = directory.size();
    const std::string_view component(directory.data() + pos, end - pos);
    if (!component.empty() && component != ".") {
      if (path != "/") path.push_back('/');
      path.append(component);
    }
    pos = end + 1;
  }
  if (path.empty()) return std::string(1, '/');
  return path;
}

// Crash safety: mkdir is atomic, and an interrupted run leaves only some of the (empty)
// directories, which the next run finds and completes. With `sync`, the parent of every
// directory created is fsynced, so the new entries survive power loss together with the files
// later written (and fsynced) inside them.
absl::Status MakeDirectories(std::string_view who, const std::string& directory, bool sync) {
  // `directory` is normalized: absolute, no empty components. Walk it prefix by prefix.
  size_t pos = 1;
  while (true) {
    const size_t slash = directory.find('/', pos);
    const std::string prefix = directory.substr(0, slash);
    struct stat st {};
    if (::stat(prefix.c_str(), &st) == 0) {
      if (!S_ISDIR(st.st_mode)) {
        return absl::FailedPreconditionError(absl::StrCat(Absl(who), ": cannot use directory ",
                                                          directory, ": ", prefix,
                                                          " exists and is not a directory"));
      }
    } else if (errno != ENOENT) {
      return ErrnoError(who, errno, "stat", prefix);
    } else if (::mkdir(prefix.c_str(), 0755) == 0) {
      if (sync) {
        if (absl::Status s = SyncDirectoryAt(who, ParentOf(prefix)); !s.ok()) return s;
      }
    } else if (errno != EEXIST) {  // EEXIST: created concurrently; checked on the next pass.
      return ErrnoError(who, errno, "mkdir", prefix);
    } else {
      continue;  // Re-examine the same prefix.
    }
    if (slash == std::string::npos) return absl::OkStatus();
    pos = slash + 1;
  }
}

}  // namespace wharf::pipeline::file_util
